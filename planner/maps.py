"""Reading map files.

The format is sectioned plain text (see maps/README.md)::

    [map]                  key = value parameters (domain, name, slip, discount, horizon...)
    [grid]                 the grid, one character per cell, every row the same width
    [zones]                key = zone-name   (a key is one character used in [zone-layer])
    [zone-layer]           the grid again: a zone key, or '.' for no zone
    [rules]                min_count = 2, then rows: zone feature value weight sensitivity
    [robots]               rows: robot-id x,y task-kind words...

Outside [grid] and [zone-layer], '#' starts a comment. Every error names the file,
the line and the column (or the field).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .world import MapError, NSERule, Task, Token, World

GRID_SECTIONS = ("grid", "zone-layer")
SECTIONS = ("map", "grid", "zones", "zone-layer", "rules", "robots")

#: generic [map] parameters: name -> (default, type)
GENERIC_PARAMS: dict[str, tuple[Any, type]] = {
    "domain": (None, str),
    "name": (None, str),
    "slip": (0.1, float),
    "discount": (0.99, float),
    "horizon": (None, int),
    "items_per_robot": (2, int),
}


def _words(text: str, line: int, col0: int = 1) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        tokens.append(Token(text[i:j], line, col0 + i))
        i = j
    return tokens


class ParsedMap:
    """The sections of a map file, with positions, before any domain reads them."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.params: dict[str, Token] = {}
        self.param_keys: dict[str, Token] = {}
        self.grid: list[Token] = []  # one token per row (text = the row)
        self.zones: list[tuple[Token, Token]] = []  # (key, name)
        self.zone_layer: list[Token] = []
        self.rules: list[list[Token]] = []
        self.rule_params: dict[str, Token] = {}
        self.robots: list[list[Token]] = []
        self.section_lines: dict[str, int] = {}


def parse_map_text(text: str, source: str = "<map>") -> ParsedMap:
    parsed = ParsedMap(source)
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n").rstrip()
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]") and " " not in stripped:
            name = stripped[1:-1].strip().lower()
            if name not in SECTIONS:
                raise MapError(source, f"unknown section [{name}]; sections are {', '.join(SECTIONS)}",
                               number, line.index("[") + 1)
            if name in parsed.section_lines:
                raise MapError(source, f"section [{name}] appears twice (first at line "
                                       f"{parsed.section_lines[name]})", number, 1)
            parsed.section_lines[name] = number
            section = name
            continue
        if section in GRID_SECTIONS:
            if not stripped:
                continue
            row = Token(line, number, 1)
            (parsed.grid if section == "grid" else parsed.zone_layer).append(row)
            continue
        content = line.split("#", 1)[0].rstrip()
        if not content.strip():
            continue
        if section is None:
            raise MapError(source, "text before the first [section]", number, 1)
        if "=" in content and section in ("map", "zones", "rules"):
            key_text, value_text = content.split("=", 1)
            key_tokens = _words(key_text, number)
            value_start = len(key_text) + 2
            value_tokens = _words(value_text, number, value_start)
            if len(key_tokens) != 1 or len(value_tokens) != 1:
                raise MapError(source, "expected 'key = value'", number, 1)
            key, value = key_tokens[0], value_tokens[0]
            if section == "map":
                if key.text in parsed.params:
                    raise MapError(source, f"parameter {key.text!r} is set twice", key.line, key.column)
                parsed.params[key.text] = value
                parsed.param_keys[key.text] = key
            elif section == "zones":
                parsed.zones.append((key, value))
            else:
                parsed.rule_params[key.text] = value
            continue
        tokens = _words(content, number)
        if section == "rules":
            parsed.rules.append(tokens)
        elif section == "robots":
            parsed.robots.append(tokens)
        else:
            raise MapError(source, f"expected 'key = value' in [{section}]", number, tokens[0].column)
    return parsed


def _number(token: Token, kind: type, source: str, what: str) -> Any:
    try:
        value = kind(token.text)
    except ValueError:
        raise MapError(source, f"{what} must be {'an integer' if kind is int else 'a number'}, "
                               f"got {token.text!r}", token.line, token.column) from None
    if kind is float and not math.isfinite(value):
        raise MapError(source, f"{what} must be finite, got {token.text!r}", token.line, token.column)
    return value


def _grid_array(rows: list[Token], source: str, section: str) -> np.ndarray:
    if not rows:
        raise MapError(source, f"section [{section}] is missing or empty", field=section)
    width = len(rows[0].text)
    for row in rows[1:]:
        if len(row.text) != width:
            raise MapError(source, f"ragged [{section}]: this row has {len(row.text)} cells, the first row "
                                   f"(line {rows[0].line}) has {width}", row.line, min(len(row.text), width) + 1)
    return np.array([list(r.text) for r in rows])


def build_world(parsed: ParsedMap, domain) -> World:
    """Turn parsed sections into a validated `World` for `domain`."""
    src = parsed.source
    params: dict[str, Any] = {}
    known = dict(GENERIC_PARAMS)
    known.update({k: (v, type(v)) for k, v in domain.extra_params.items()})
    for key, value in parsed.params.items():
        if key not in known:
            kt = parsed.param_keys[key]
            raise MapError(src, f"unknown parameter {key!r}; known: {', '.join(sorted(known))}", kt.line, kt.column)
        default, kind = known[key]
        params[key] = value.text if kind is str else _number(value, kind, src, key)
    for key, (default, _) in known.items():
        params.setdefault(key, default)
    if not 0.0 <= params["slip"] < 1.0:
        raise _param_error(parsed, "slip", f"slip must be in [0, 1), got {params['slip']}")
    if not 0.0 < params["discount"] < 1.0:
        raise _param_error(parsed, "discount", f"discount must be in (0, 1), got {params['discount']}")
    if params["items_per_robot"] < 1:
        raise _param_error(parsed, "items_per_robot", "items_per_robot must be at least 1")
    for key, default in domain.extra_params.items():
        if isinstance(default, (int, float)) and not isinstance(default, bool) and params[key] < 0:
            raise _param_error(parsed, key, f"{key} must be >= 0, got {params[key]}")

    grid = _grid_array(parsed.grid, src, "grid")
    for row in parsed.grid:
        for i, ch in enumerate(row.text):
            if ch not in domain.legend:
                raise MapError(src, f"unknown symbol {ch!r} in [grid] for domain {domain.name}; symbols: "
                                    + ", ".join(f"{k!r} {v}" for k, v in domain.legend.items()), row.line, i + 1)
    height, width = grid.shape
    if params["horizon"] is None:
        params["horizon"] = 4 * (width + height) * params["items_per_robot"]
    elif params["horizon"] < 1:
        raise _param_error(parsed, "horizon", "horizon must be at least 1")

    zone_names, zone_layer = _zones(parsed, grid.shape)
    rules, min_count = _rules(parsed, domain, zone_names)

    world = World(
        name=params["name"] or Path(src).stem,
        domain=domain.name,
        source=src,
        grid=grid,
        params=params,
        zone_names=zone_names,
        zone_layer=zone_layer,
        rules=rules,
        min_count=min_count,
        passable=np.isin(grid, list(domain.walkable)),
        # grid row -> file line and column of its first cell, for errors
        extras={"_grid_lines": [row.line for row in parsed.grid], "_grid_columns": [row.column for row in parsed.grid]},
    )
    domain.read_fixtures(world)
    explicit_starts = tuple(world.cells_of("0123456789"))
    world.starts = explicit_starts or tuple((int(x), int(y)) for y, x in zip(*np.nonzero(world.passable)))
    robots = [_robot_task(world, domain, row) for row in parsed.robots]
    seen: dict[str, Token] = {}
    for row, task in zip(parsed.robots, robots):
        if task.robot_id in seen:
            raise MapError(src, f"robot id {task.robot_id!r} is used twice (first at line "
                                f"{seen[task.robot_id].line})", row[0].line, row[0].column)
        seen[task.robot_id] = row[0]
    world.robots = tuple(robots)
    # A domain whose robots may work in separate regions (Overcooked rooms) checks what each
    # region of a start holds; the others need every start connected to every target.
    check_regions = getattr(domain, "check_regions", None)
    if check_regions is not None:
        world.starts = check_regions(world, bool(explicit_starts))
    else:
        _check_targets_reachable(world, domain)
    return world


def _param_error(parsed: ParsedMap, key: str, message: str) -> MapError:
    token = parsed.params.get(key)
    if token is None:
        return MapError(parsed.source, message, field=key)
    return MapError(parsed.source, message, token.line, token.column)


def _zones(parsed: ParsedMap, shape: tuple[int, int]) -> tuple[tuple[str, ...], np.ndarray]:
    src = parsed.source
    keys: dict[str, int] = {}
    names: list[str] = []
    positions: list[Token] = []
    for key, name in parsed.zones:
        if len(key.text) != 1 or key.text == ".":
            raise MapError(src, f"a zone key is one character other than '.', got {key.text!r}", key.line, key.column)
        if key.text in keys:
            raise MapError(src, f"zone key {key.text!r} is declared twice", key.line, key.column)
        if name.text in names:
            raise MapError(src, f"zone name {name.text!r} is declared twice", name.line, name.column)
        keys[key.text] = len(names) + 1
        names.append(name.text)
        positions.append(key)
    layer = np.zeros(shape, dtype=np.int64)
    if parsed.zone_layer:
        symbols = _grid_array(parsed.zone_layer, src, "zone-layer")
        if symbols.shape != shape:
            first = parsed.zone_layer[0]
            raise MapError(src, f"[zone-layer] is {symbols.shape[1]}x{symbols.shape[0]} but [grid] is "
                                f"{shape[1]}x{shape[0]}", first.line, 1)
        for row_index, row in enumerate(parsed.zone_layer):
            for col, ch in enumerate(row.text):
                if ch == ".":
                    continue
                if ch not in keys:
                    raise MapError(src, f"zone key {ch!r} is not declared in [zones]", row.line, col + 1)
                layer[row_index, col] = keys[ch]
    elif names:
        raise MapError(src, "[zones] declares zones but there is no [zone-layer] to place them", field="zone-layer")
    for index, (name, key) in enumerate(zip(names, positions), start=1):
        if not np.any(layer == index):
            raise MapError(src, f"zone {name!r} has no cells in [zone-layer]", key.line, key.column)
    return tuple(names), layer


def _rules(parsed: ParsedMap, domain, zone_names: tuple[str, ...]) -> tuple[tuple[NSERule, ...], int]:
    src = parsed.source
    min_count = 2
    for key, value in parsed.rule_params.items():
        if key != "min_count":
            raise MapError(src, f"unknown rule parameter {key!r}; only min_count", value.line, value.column)
        min_count = _number(value, int, src, "min_count")
        if min_count < 2:
            raise MapError(src, f"min_count must be at least 2 (a robot alone causes no NSE), got {min_count}",
                           value.line, value.column)
    rules = []
    feature = domain.dynamic_feature
    for row in parsed.rules:
        if len(row) != 5:
            raise MapError(src, f"a rule row has 5 fields (zone feature value weight sensitivity), got {len(row)}",
                           row[0].line, row[0].column)
        zone, feat, value, weight, sens = row
        rules.append(parse_rule(zone.text, feat.text, value.text, _number(weight, float, src, "weight"),
                                _number(sens, float, src, "sensitivity"), feature, zone_names,
                                lambda msg, tok: MapError(src, msg, tok.line, tok.column),
                                {"zone": zone, "feature": feat, "value": value, "weight": weight,
                                 "sensitivity": sens}))
    return tuple(rules), min_count


def parse_rule(zone: str, feature_name: str, value: str, weight: float, sensitivity: float, feature,
               zone_names: tuple[str, ...], error, where: dict) -> NSERule:
    """Validate one NSE rule; `error(message, where[field])` builds the exception to raise."""
    if zone != "*" and zone not in zone_names:
        raise error(f"rule names unknown zone {zone!r}; zones: {', '.join(zone_names) or 'none'} (or * for all)",
                    where["zone"])
    if feature_name != feature.name:
        raise error(f"rule names unknown feature {feature_name!r}; this domain's dynamic feature is "
                    f"{feature.name!r}", where["feature"])
    if value not in feature.values[1:]:
        raise error(f"rule names unknown value {value!r} of {feature.name!r}; values: "
                    f"{', '.join(feature.values[1:])}", where["value"])
    if not weight > 0:
        raise error(f"weight must be positive, got {weight}", where["weight"])
    if not sensitivity > 0:
        raise error(f"sensitivity must be positive, got {sensitivity}", where["sensitivity"])
    return NSERule(None if zone == "*" else zone, feature_name, value, float(weight), float(sensitivity))


def _robot_task(world: World, domain, row: list[Token]) -> Task:
    from .domains.base import check_cell, parse_cell

    if len(row) < 3:
        raise MapError(world.source, "a robot row is: id x,y task-kind [arguments...]", row[0].line, row[0].column)
    start = parse_cell(row[1], world.source)
    check_cell(world, start, row[1], f"robot {row[0].text!r} start")
    if row[2].text not in domain.task_kinds:
        raise MapError(world.source, f"unknown task kind {row[2].text!r} for domain {domain.name}; "
                                     f"kinds: {', '.join(domain.task_kinds)}", row[2].line, row[2].column)
    return domain.parse_task(world, row[0], start, row[2:])


def _check_targets_reachable(world: World, domain) -> None:
    """Every start must reach every place its task may need (maps are validated once)."""
    from .domains.base import adjacent_walkable, reachable_cells

    def reachable(reach: np.ndarray, cell) -> bool:
        x, y = cell
        if world.passable[y, x]:
            return bool(reach[y, x])
        return any(reach[ny, nx] for nx, ny in adjacent_walkable(world.passable, cell))

    checks = [(t.start, t) for t in world.robots]
    if world.starts:
        first = world.starts[0]
        reach = reachable_cells(world.passable, first)
        for x, y in world.starts[1:]:
            if not reach[y, x]:
                raise MapError(world.source, f"start cell {x},{y} is cut off from start cell {first[0]},{first[1]}",
                               grid_line(world, y), grid_column(world, (x, y)))
        checks.append((first, None))
    for start, task in checks:
        reach = reachable_cells(world.passable, start)
        for cell, what in domain.targets(world, task):
            if not reachable(reach, cell):
                who = f"robot {task.robot_id!r}" if task else "start"
                raise MapError(world.source, f"{what} at {cell[0]},{cell[1]} cannot be reached from {who} at "
                                             f"{start[0]},{start[1]}", grid_line(world, cell[1]), grid_column(world, cell))


def grid_line(world: World, row: int) -> int | None:
    """The file line of grid row `row`, for error messages."""
    lines = world.extras.get("_grid_lines")
    return lines[row] if lines and 0 <= row < len(lines) else None


def grid_error(world: World, cell, message: str) -> MapError:
    return MapError(world.source, message, grid_line(world, cell[1]), grid_column(world, cell))


def grid_column(world: World, cell) -> int:
    """The file column of `cell` (its row may be indented, as in a .layout)."""
    columns = world.extras.get("_grid_columns")
    row = cell[1]
    return (columns[row] if columns and 0 <= row < len(columns) else 1) + cell[0]


#: what `load_map` reads: our sectioned maps, Overcooked-AI layouts, the RECON authors' grids
MAP_FORMATS = ("map", "layout", "recon-grid")


def detect_format(path: str | Path, text: str | None = None) -> str:
    """The format `load_map` reads `path` as when none is given: `.layout` an Overcooked-AI
    layout, `.map` ours, another file holding a bare grid of the RECON authors' symbols a
    RECON grid, anything else ours. `text` is the file's (read here when None; a file that
    cannot be read is told by its name, and `load_map` reports why it cannot be read)."""
    from .recon_grid import looks_like_recon_grid

    path = Path(path)
    if path.suffix in (".layout", ".map"):
        return "layout" if path.suffix == ".layout" else "map"
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return "map"
    return "recon-grid" if looks_like_recon_grid(text) else "map"


def load_map(path: str | Path, format: str | None = None, *, semantics: str | None = None,
             robots: int | None = None, goal_deposit: tuple[int, int] | None = None,
             domain: str | None = None) -> World:
    """Read a map file and validate it.

    `format` is one of MAP_FORMATS, or None to tell it from the file: `.layout` is an
    Overcooked-AI layout, `.map` our format, and another file holding a bare grid of the RECON
    authors' symbols (no sections) a RECON grid (`planner.recon_grid`), anything else ours. The other options are for RECON grids:
    `semantics` "recon" (their robots: `robots` of them, assigned by their `goal_deposit`
    table or the one given) or "ours" (robots generated as for our maps); default "recon"
    when `robots` is given, else "ours". `domain` overrides the one told by the grid's folder
    or symbols.
    """
    from .domains import get_domain

    if format is not None and format not in MAP_FORMATS:
        raise ValueError(f"unknown map format {format!r}; formats: {', '.join(MAP_FORMATS)}")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MapError(path, "no such map file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(path, f"cannot read the map file: {exc}") from None
    if format is None:
        format = detect_format(path, text)
    recon_options = {"semantics": semantics, "robots": robots, "goal_deposit": goal_deposit, "domain": domain}
    if format == "recon-grid":
        from .recon_grid import parse_recon_grid

        return parse_recon_grid(text, str(path), domain, semantics or ("recon" if robots is not None else "ours"),
                                robots, goal_deposit)
    given = [k for k, v in recon_options.items() if v is not None]
    if given:
        raise ValueError(f"{', '.join(given)} apply to RECON grids (format 'recon-grid'), not to a {format} file")
    if format == "layout":
        parsed = get_domain("overcooked").parse_layout(text, str(path))
    else:
        parsed = parse_map_text(text, str(path))
    return world_from_parsed(parsed)


def load_map_text(text: str, source: str = "<inline map>") -> World:
    return world_from_parsed(parse_map_text(text, source))


def world_from_parsed(parsed: ParsedMap) -> World:
    from .domains import get_domain

    token = parsed.params.get("domain")
    if token is None:
        raise MapError(parsed.source, "[map] must set domain = salp | overcooked | warehouse", field="domain")
    try:
        domain = get_domain(token.text)
    except KeyError as exc:
        raise MapError(parsed.source, str(exc.args[0]), token.line, token.column) from None
    return build_world(parsed, domain)
