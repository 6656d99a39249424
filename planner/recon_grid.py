"""The RECON authors' grid files, read as worlds of our three domains.

Their repository (RECON-NSE-Mitigation, MIT) keeps one grid per file, `grids/<domain>/test_grid<k>.txt`:
one character per cell, one row per line, nothing else. The grid does not hold the tasks: their
experiment scripts give robot `i` (0-based, of `n`) its task from a `goal_deposit` table and
its index, start every robot in the same cell, and have no obstacles. `maps/README.md`
("RECON grids") tabulates their symbols, their task semantics and where ours differ.

Two semantics:

* ``"recon"`` (needs the fleet size `robots`): their robots, their starts, their NSE zones
  (salp: every coral cell on its own, as they count robots per cell; Overcooked: every
  wastebin cell together; warehouse: every narrow-corridor cell together, "the whole corridor
  at once") and their weights, in our penalty (docs/FORMULATION.md section 3);
* ``"ours"``: the same grid with our conventions: no robots in the file (`generate_scenario`
  draws starts and tasks), one zone per 4-connected patch of coral, wastebin or corridor
  cells, the same weights.

Dynamics are always ours (a move slips sideways with probability `slip`, 0.2 here as their
0.8 success), and so is the penalty's form: robots count per zone and value,
`w log(1 + k (n - 1))` for n >= 2, where theirs is `w log(n + 1)` for n >= 1 (sensitivity
k = 2 makes two robots cost what they cost there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .world import Cell, MapError, NSERule, Task, World

FORMAT = "recon-grid"
SEMANTICS = ("recon", "ours")
DOMAINS = ("salp", "overcooked", "warehouse")
#: fleet size -> their goal_deposit (robots of the first task type, robots of the second), from
#: effect_of_generalization.py (10, 20, 50, 75, 100) and varying_corrected_agent.py (25)
GOAL_DEPOSIT = {10: (5, 5), 20: (10, 10), 25: (10, 15), 50: (25, 25), 75: (35, 40), 100: (50, 50)}
#: their symbols per domain, and what each is
SYMBOLS = {
    "salp": {"S": "sea", "C": "coral (walkable; NSE when a robot carries a sample on it)",
             "A": "sample site, type A", "B": "sample site, type B", "G": "the lab (the first G)"},
    "overcooked": {"X": "counter", " ": "floor", "W": "wastebin cell (walkable; the NSE zone)",
                   "O": "onion dispenser", "T": "tomato dispenser", "D": "dish dispenser", "P": "pot",
                   "S": "serving counter", **{str(d): "floor (marks the start)" for d in range(1, 10)}},
    "warehouse": {".": "floor", "x": "floor (drawn as racks, walkable)", " ": "floor",
                  "s": "narrow corridor cell (the NSE zone)", "t": "shelf", "g": "processing counter"},
}
#: their weights (salp_mdp.py, overcooked_mdp.py, warehouse_mdp.py) as our NSE rules' weights
WEIGHTS = {
    "salp": {"A": 2.0, "B": 5.0},
    "overcooked": {"onion": 5.0, "tomato": 2.0, "dish": 5.0, "soup": 5.0},
    "warehouse": {"small": 2.0, "big": 5.0},
}
SENSITIVITY = 2.0  # k: w log(1 + k) = w log 3 for two robots, their w log(2 + 1)
SLIP = 0.2  # their moves succeed with probability 0.8
START = {"salp": (0, 0), "overcooked": (1, 1), "warehouse": (0, 0)}  # their start_location, as (x, y)


def goal_deposit(robots: int) -> tuple[int, int]:
    """How many of `robots` get the first task type (salp A, onion soup, left-half shelf) and how
    many the second: their table where it has the fleet size, else an even split."""
    if robots < 1:
        raise ValueError(f"the number of robots must be at least 1, got {robots}")
    return GOAL_DEPOSIT.get(robots, (robots // 2, robots - robots // 2))


def looks_like_recon_grid(text: str) -> bool:
    """A bare grid of their symbols (no [sections], no dict): what `load_map` detects."""
    rows = _rows(text)
    alphabet = set().union(*SYMBOLS.values())
    return len(rows) >= 2 and all(rows) and all(set(r) <= alphabet for r in rows) and \
        len({len(r) for r in rows}) == 1


def detect_domain(rows: list[str], path: str | Path | None = None) -> str:
    """The domain of a grid: the folder it is in (their layout, grids/<domain>/), else its symbols.
    A grid no domain fits is a MapError at the first cell that rules out the last domain left."""
    if path is not None and Path(path).parent.name in DOMAINS:
        return Path(path).parent.name
    candidates = list(DOMAINS)
    for number, row in enumerate(rows, start=1):
        for column, ch in enumerate(row, start=1):
            fits = [d for d in candidates if ch in SYMBOLS[d]]
            if not fits:
                where = ("no RECON grid has it" if not any(ch in SYMBOLS[d] for d in DOMAINS) else
                         f"the cells before it fit only {' or '.join(candidates)}, which has no {ch!r}")
                raise MapError(path, f"unknown symbol {ch!r} in a RECON grid: {where}; symbols: "
                               + "; ".join(f"{d} {''.join(sorted(SYMBOLS[d]))!r}" for d in DOMAINS),
                               number, column)
            candidates = fits
    if len(candidates) == 1:
        return candidates[0]
    raise MapError(path, f"cannot tell the domain of this RECON grid from its symbols (it fits {', '.join(candidates)}); "
                         "pass domain= (on the command line --domain)", field="domain")


def read_recon_grid(path: str | Path, domain: str | None = None, semantics: str = "recon",
                    robots: int | None = None, goal_deposit: tuple[int, int] | None = None) -> World:
    """A RECON grid file as a World (see the module doc). `semantics="recon"` needs `robots`;
    `goal_deposit` overrides their table."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MapError(path, "no such grid file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MapError(path, f"cannot read the grid file: {exc}") from None
    return parse_recon_grid(text, str(path), domain, semantics, robots, goal_deposit)


def parse_recon_grid(text: str, source: str = "<recon grid>", domain: str | None = None, semantics: str = "recon",
                     robots: int | None = None, deposit: tuple[int, int] | None = None) -> World:
    from .domains import get_domain

    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; semantics: {', '.join(SEMANTICS)}")
    if semantics == "recon" and robots is None:
        raise ValueError("their task assignment depends on the fleet size (a goal_deposit table): give robots=N, "
                         "or semantics='ours' to generate robots as for our maps")
    if semantics == "ours" and (robots is not None or deposit is not None):
        raise ValueError("robots= and goal_deposit= give their task assignment: they need semantics='recon'")
    rows = _rows(text)
    if not rows:
        raise MapError(source, "the grid file is empty", 1, 1)
    domain = domain or detect_domain(rows, source)
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(DOMAINS)}")
    for number, row in enumerate(rows, start=1):
        if len(row) != len(rows[0]):
            raise MapError(source, f"ragged grid: this row has {len(row)} cells, the first row has {len(rows[0])}",
                           number, min(len(row), len(rows[0])) + 1)
        for column, ch in enumerate(row, start=1):
            if ch not in SYMBOLS[domain]:
                raise MapError(source, f"unknown symbol {ch!r} in a RECON {domain} grid; symbols: "
                               + ", ".join(f"{k!r} {v}" for k, v in SYMBOLS[domain].items()), number, column)
    theirs = np.array([list(r) for r in rows])
    if semantics == "recon":
        if isinstance(robots, bool) or not isinstance(robots, (int, np.integer)) or robots < 1:
            raise ValueError(f"robots must be an integer >= 1, got {robots!r}")
        n = int(robots)
        first, second = goal_deposit(n) if deposit is None else tuple(int(k) for k in deposit)
        if first < 0 or second < 0 or first + second != n:
            raise ValueError(f"goal_deposit {deposit} must be two counts >= 0 adding up to robots={n}")
    grid, zone_of = _BUILD[domain](theirs, source)
    zone_names, zone_layer = _zones(zone_of, domain, per_cell=semantics == "recon" and domain == "salp",
                                    together=semantics == "recon" and domain != "salp")
    dom = get_domain(domain)
    feature = dom.dynamic_feature
    rules = tuple(NSERule(None, feature.name, value, weight, SENSITIVITY) for value, weight in WEIGHTS[domain].items())
    h, w = grid.shape
    params = {"domain": domain, "name": Path(source).stem, "slip": SLIP, "discount": 0.99,
              "items_per_robot": 1 if semantics == "recon" else 2, "horizon": None}
    params.update(dom.extra_params)
    if domain == "overcooked":
        params.update(soup_size=1, cook_fraction=1.0)  # one ingredient per soup; their cleaners never run
    params["horizon"] = 4 * (w + h) * params["items_per_robot"]  # the default of our maps
    world = World(name=f"{params['name']}" if semantics == "ours" else f"{params['name']} (recon)", domain=domain,
                  source=source, grid=grid, params=params, zone_names=zone_names, zone_layer=zone_layer,
                  rules=rules, min_count=2, passable=np.isin(grid, list(dom.walkable)),
                  extras={"_grid_lines": list(range(1, h + 1)), "_grid_columns": [1] * h,
                          "recon_semantics": semantics})
    dom.read_fixtures(world)
    if semantics == "ours":
        world.starts = tuple((int(x), int(y)) for y, x in zip(*np.nonzero(world.passable)))
        return world
    start = START[domain]
    if not world.passable[start[1], start[0]]:
        raise MapError(source, f"their start cell {start[0]},{start[1]} is not walkable here", start[1] + 1,
                       start[0] + 1)
    world.starts = (start,)
    world.robots = tuple(_TASKS[domain](world, theirs, first, second, start))
    return world


# ---------- per domain: their symbols -> ours, and their tasks ----------

def _salp_grid(theirs: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    grid = np.full(theirs.shape, ".")
    grid[theirs == "A"], grid[theirs == "B"] = "a", "b"
    labs = np.argwhere(theirs == "G")
    if not len(labs):
        raise MapError(source, "a RECON salp grid needs a lab 'G'", field="grid")
    grid[tuple(labs[0])] = "L"  # they deposit at the first G only
    return grid, theirs == "C"


def _overcooked_grid(theirs: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    grid = theirs.copy()
    grid[(theirs == " ") | (theirs == "W")] = "."
    return grid, theirs == "W"


def _warehouse_grid(theirs: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    grid = np.full(theirs.shape, ".")
    grid[theirs == "s"] = "="
    grid[theirs == "t"] = "s"  # a shelf is small (weight 2) while carried to the counter
    grid[theirs == "g"] = "K"
    return grid, theirs == "s"


_BUILD = {"salp": _salp_grid, "overcooked": _overcooked_grid, "warehouse": _warehouse_grid}
_ZONE_WORD = {"salp": "coral", "overcooked": "wastebin", "warehouse": "corridor"}


def _zones(cells: np.ndarray, domain: str, per_cell: bool, together: bool) -> tuple[tuple[str, ...], np.ndarray]:
    """Zone names and the (H, W) zone layer (0: no zone) from the NSE cells."""
    from scipy.ndimage import label

    word = _ZONE_WORD[domain]
    layer = np.zeros(cells.shape, dtype=np.int64)
    if not cells.any():
        return (), layer
    if together:
        layer[cells] = 1
        return (word,), layer
    if per_cell:
        ys, xs = np.nonzero(cells)
        layer[ys, xs] = np.arange(1, len(ys) + 1)
        return tuple(f"{word}-{x},{y}" for x, y in zip(xs, ys)), layer
    layer, count = label(cells, structure=np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]]))
    return tuple(f"{word}-{k}" for k in range(1, count + 1)), layer.astype(np.int64)


def _salp_tasks(world: World, theirs, first: int, second: int, start: Cell):
    """Robot i collects a sample of type A if i < first, else B (their task_list), from the
    site of that type on the shortest way from the start to the lab (theirs picks at any)."""
    lab = world.extras["labs"][0]
    for i in range(first + second):
        kind = "A" if i < first else "B"
        sites = [k for k, it in enumerate(world.items) if it.label == kind]
        if not sites:
            raise MapError(world.source, f"robot {i + 1} needs a sample site of type {kind}, and the grid has none")
        best = min(sites, key=lambda k: _manhattan(start, world.items[k].cell) + _manhattan(world.items[k].cell, lab))
        yield Task(f"agent{i + 1}", start, "collect", (best,))


def _overcooked_tasks(world: World, theirs, first: int, second: int, start: Cell):
    """Robot i cooks one onion soup if i < first, else one tomato soup (their task_list; one
    ingredient per soup)."""
    for i in range(first + second):
        soup = "onion" if i < first else "tomato"
        if not world.extras[soup]:
            raise MapError(world.source, f"robot {i + 1} cooks {soup} soup, and the grid has no {soup} dispenser")
        yield Task(f"agent{i + 1}", start, "cook", option=soup, count=1)


def _warehouse_tasks(world: World, theirs, first: int, second: int, start: Cell):
    """Robot i of type 1 (i < first) or 2 processes shelf `i % len(shelves)` of its half of the
    grid (their shelf_assigner: shelves left of the middle column for type 1, the others for 2,
    in reading order)."""
    half = theirs.shape[1] // 2
    shelves = {1: [], 2: []}
    for row, col in np.argwhere(theirs == "t"):  # reading order, as theirs
        shelves[1 if col < half else 2].append((int(col), int(row)))
    index = {it.cell: k for k, it in enumerate(world.items)}
    for i in range(first + second):
        kind = 1 if i < first else 2
        if not shelves[kind]:
            raise MapError(world.source, f"robot {i + 1} processes a shelf of the {'left' if kind == 1 else 'right'} "
                                         "half, and that half has none")
        cell = shelves[kind][i % len(shelves[kind])]
        yield Task(f"agent{i + 1}", start, "process", (index[cell],))


_TASKS = {"salp": _salp_tasks, "overcooked": _overcooked_tasks, "warehouse": _warehouse_tasks}


def _manhattan(a: Cell, b: Cell) -> int:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def _rows(text: str) -> list[str]:
    # their reader strips trailing newlines only: spaces at the ends of rows are cells
    return [r.rstrip("\r") for r in text.rstrip("\n").split("\n")] if text.strip("\n") else []


__all__ = ["DOMAINS", "FORMAT", "GOAL_DEPOSIT", "SEMANTICS", "detect_domain", "goal_deposit",
           "looks_like_recon_grid", "parse_recon_grid", "read_recon_grid"]
