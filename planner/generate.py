"""Seeded random maps (`mase generate`): the generic driver and the sketch domains draw on.

Each domain draws its own layout in `Domain.random_map(rng, width, height, starts, name)`
(a map text in the format of maps/README.md), usually on a `MapSketch`. `generate_map`
validates the arguments, calls the domain with a generator seeded from `(seed, attempt)`,
and accepts the map only if it passes every check; otherwise it retries with the next
derived seed, a bounded number of times, and raises rather than return a bad map.

The checks: the map loads (`load_map_text`, which also proves that every start reaches every
place any task may need, so every robot `generate_scenario` makes can finish), it has an NSE
zone, and some rule penalises a (zone, value) pair that at least `min_count` of the robots
generated with seed 0 can reach (several robots can meet in a zone carrying what the rule
counts).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .world import MapError, World

#: the largest side of a generated map (state spaces grow with the area)
MAX_SIDE = 40
#: start cells are digits
MAX_STARTS = 10
DEFAULT_STARTS = 3
#: derived seeds tried before giving up
MAX_ATTEMPTS = 25
#: robots whose MDPs the NSE check builds
CHECK_ROBOTS = 10


class GenerationError(ValueError):
    """No acceptable map came out of the allowed attempts (or the arguments cannot give one)."""


class MapSketch:
    """A map being drawn: symbols, zone layer, zones and rules; `text()` writes the map format."""

    def __init__(self, domain: str, width: int, height: int, floor: str, border: str, walkable: str) -> None:
        self.domain, self.floor, self.walkable = domain, floor, walkable
        self.grid = np.full((height, width), floor)
        self.grid[[0, -1], :] = border
        self.grid[:, [0, -1]] = border
        self.zone_layer = np.full((height, width), ".")
        self.zones: list[tuple[str, str]] = []  # (key, name)
        self.rules: list[tuple[str, str, str, float, float]] = []  # zone feature value weight sensitivity
        self.params: dict[str, object] = {}

    @property
    def height(self) -> int:
        return self.grid.shape[0]

    @property
    def width(self) -> int:
        return self.grid.shape[1]

    def cells(self, mask: np.ndarray) -> list[tuple[int, int]]:
        """The (x, y) cells of a boolean mask, in reading order."""
        ys, xs = np.nonzero(mask)
        return [(int(x), int(y)) for y, x in zip(ys, xs)]

    def free(self) -> np.ndarray:
        """(H, W) bool: plain floor, nothing placed yet."""
        return self.grid == self.floor

    def connected(self) -> bool:
        """Every walkable cell is 4-connected to every other."""
        _, n = ndimage.label(np.isin(self.grid, list(self.walkable)))
        return n == 1

    def block(self, cells: Sequence[tuple[int, int]], symbols: str | Sequence[str]) -> bool:
        """Put non-walkable symbols on free cells (`symbols`: one symbol for all, or one per
        cell), keeping the floor connected; undo and return False if they would cut it or a
        cell is taken."""
        if not cells or not all(self.grid[y, x] == self.floor for x, y in cells):
            return False
        if len(symbols) not in (1, len(cells)):
            raise ValueError(f"{len(symbols)} symbols for {len(cells)} cells")
        xs, ys = np.array([c[0] for c in cells]), np.array([c[1] for c in cells])
        self.grid[ys, xs] = list(symbols)
        if self.connected():
            return True
        self.grid[ys, xs] = self.floor
        return False

    def place(self, rng: np.random.Generator, symbol: str, count: int, mask: np.ndarray | None = None) -> list:
        """Put a walkable `symbol` on `count` random free cells (within `mask`); raise if there is no room."""
        room = self.free() if mask is None else self.free() & mask
        cells = self.cells(room)
        if len(cells) < count:
            raise GenerationError(f"no room for {count} {symbol!r} on a {self.width}x{self.height} map")
        chosen = [cells[i] for i in rng.choice(len(cells), size=count, replace=False)]
        for x, y in chosen:
            self.grid[y, x] = symbol
        return chosen

    def place_starts(self, rng: np.random.Generator, count: int) -> None:
        """Start cells as digits 1, 2, ..., 9, 0 on free floor."""
        cells = self.place(rng, "?", count)
        for k, (x, y) in enumerate(cells):
            self.grid[y, x] = str((k + 1) % 10)

    def add_zone(self, key: str, name: str, mask: np.ndarray) -> None:
        self.zones.append((key, name))
        self.zone_layer[mask] = key

    def text(self, name: str) -> str:
        lines = ["[map]", f"domain = {self.domain}", f"name = {name}"]
        lines += [f"{k} = {v}" for k, v in self.params.items()]
        lines += ["", "[grid]", *("".join(row) for row in self.grid)]
        if self.zones:
            lines += ["", "[zones]", *(f"{key} = {zone}" for key, zone in self.zones)]
            lines += ["", "[zone-layer]", *("".join(row) for row in self.zone_layer)]
        lines += ["", "[rules]", "min_count = 2", "# zone  feature  value  weight  sensitivity"]
        lines += [f"{z}  {f}  {v}  {w}  {s}" for z, f, v, w, s in self.rules]
        return "\n".join(lines) + "\n"


def _check_int(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be from {low} to {high}, got {value}")
    return int(value)


def generate_map(domain: str, seed: int, width: int | None = None, height: int | None = None,
                 starts: int = DEFAULT_STARTS, attempts: int = MAX_ATTEMPTS) -> str:
    """A random map of `domain` (map text), the same for the same arguments.

    Raises ValueError for bad arguments and GenerationError when no attempt passes the checks.
    """
    from .domains import domain_names, get_domain
    from .maps import load_map_text

    if domain not in domain_names():
        raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(domain_names())}")
    dom = get_domain(domain)
    if dom.map_size is None:
        raise ValueError(f"domain {domain!r} has no map generator")
    (min_w, min_h), (default_w, default_h) = dom.min_map_size, dom.map_size
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    width = _check_int(default_w if width is None else width, f"{domain} map width", min_w, MAX_SIDE)
    height = _check_int(default_h if height is None else height, f"{domain} map height", min_h, MAX_SIDE)
    starts = _check_int(starts, "the number of start cells (digits on the grid)", 1, MAX_STARTS)
    name = f"{domain}-random-{seed}"
    command = (f"mase generate --domain {domain} --seed {seed} --width {width} --height {height} "
               f"--robots-starts {starts}")
    problems = []
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, attempt])
        try:
            text = dom.random_map(rng, width, height, starts, name)
            world = load_map_text(text, f"<generated {name}>")
            check_generated(world)
        except (MapError, GenerationError) as exc:
            problems.append(str(exc))
            continue
        return f"# generated by: {command}" + (f" (attempt {attempt + 1})" if attempt else "") + "\n" + text
    raise GenerationError(f"no valid {width}x{height} {domain} map with {starts} start cells from seed {seed} "
                          f"in {attempts} attempts; last problem: {problems[-1]}")


def check_generated(world: World, n_robots: int = CHECK_ROBOTS) -> None:
    """Raise GenerationError unless some rule penalises a (zone, value) pair that at least
    `min_count` robots of `generate_scenario(world, n_robots, 0)` can reach (a state of its MDP),
    each of which can finish its task (its MDP has a terminal state). Robots are built one by
    one until a rule is met, so that a good map costs about `min_count` MDP builds."""
    from .domains import get_domain
    from .mdp import build_mdp
    from .scenario import generate_scenario, task_key

    if not np.any(world.zone_layer > 0):
        raise GenerationError(f"{world.name}: no NSE zone")
    domain = get_domain(world.domain)
    feature = domain.dynamic_feature
    # (zone, value) cells some rule penalises
    penalised = np.zeros((len(world.zone_names) + 1, len(feature.values)), bool)
    for rule in world.rules:
        zones = slice(1, None) if rule.zone is None else world.zone_index(rule.zone)
        penalised[zones, feature.index(rule.value)] = True
    reached = np.zeros_like(penalised, dtype=np.int64)  # robots that can be in each cell
    built: dict[tuple, np.ndarray] = {}
    for task in generate_scenario(world, n_robots, seed=0).tasks:
        key = task_key(task)
        if key not in built:
            mdp = build_mdp(domain.make_problem(world, task))
            if not mdp.terminal.any():
                raise GenerationError(f"{world.name}: robot {task.robot_id} cannot finish its task")
            cells = np.zeros_like(penalised)
            cells[mdp.states[:, mdp.feature_index(domain.static_feature)],
                  mdp.states[:, mdp.feature_index(feature.name)]] = True
            built[key] = cells
        reached += built[key]
        if np.any(penalised & (reached >= world.min_count)):
            return
    raise GenerationError(f"{world.name}: no rule penalises a zone and value that {world.min_count} robots can reach")
