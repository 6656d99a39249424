"""Overcooked: kitchen robots cook soups or carry garbage to bins.

State of a cook (x, y, orientation, held, pot, in_pot, served, bin):
  x, y         local      position
  orientation  local      the direction the robot faces (north, south, east, west)
  held         dynamic    none, onion, tomato, dish, soup, garbage (none is the null value)
  pot          local      the pot the robot cooks in (its first ingredient picks it), or none
  in_pot       local      ingredients the robot has put in that pot, 0..soup_size
  served       local      soups served so far, 0..count
  bin          static     NSE zone at (x, y): a garbage bin's neighbourhood, or none
A cleaner has `cleaned` (bit k set once assigned garbage pile k is picked up) instead of
in_pot and served.

Robots start facing north. Moving turns the robot to face the move's direction (even
when it slips sideways or is blocked), as in Overcooked-AI; `interact` acts on the faced
cell. A cook takes an ingredient of its soup type while its pot needs more and puts it
into a pot; once the pot is full it takes a dish, scoops the soup from that pot and
serves it at S. Simplifications, for transition independence: a robot's pot holds only
its own ingredients (robots sharing a `P` cell do not see each other's), cooking is
instant, and interactions that serve no purpose (a second dish, an onion for a full
pot) do nothing. A cleaner picks up a pile and drops it into a bin. The task is done
when every soup is served (or every pile cleaned) and nothing is held.
[map] parameters: `soup_size` (ingredients per soup, default 2) and `cook_fraction`
(the share of generated robots that cook, default 0.6).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Sequence

import numpy as np

from ..problem import Feature, RobotProblem
from ..world import Cell, Item, MapError, Task, Token, World
from .base import MOVE_NAMES, Domain, facing_cell, mask_feature, move_outcomes, parse_item_cells

HELD = ("none", "onion", "tomato", "dish", "soup", "garbage")
NONE, ONION, TOMATO, DISH, SOUP, GARBAGE = range(len(HELD))
SOUPS = ("onion", "tomato")
MAX_SOUPS = 99

# fixture codes of the faced cell
_FLOOR, _ONION_D, _TOMATO_D, _DISH_D, _POT, _SERVING, _BIN, _PILE = range(8)
_FIXTURE_SYMBOLS = {"O": _ONION_D, "T": _TOMATO_D, "D": _DISH_D, "P": _POT, "S": _SERVING, "B": _BIN, "G": _PILE}
# extras key, symbol, description (for targets and errors)
_FIXTURES = (("onion", "O", "onion dispenser"), ("tomato", "T", "tomato dispenser"),
             ("dish", "D", "dish dispenser"), ("pots", "P", "pot"), ("serving", "S", "serving counter"),
             ("bins", "B", "garbage bin"))
_DESCRIPTION = {key: what for key, _, what in _FIXTURES}

#: default NSE rules derived for a .layout: held value -> (weight, sensitivity)
LAYOUT_RULES = {"soup": (3.0, 1.0), "onion": (1.0, 1.0), "tomato": (1.0, 1.0), "dish": (1.0, 1.0)}
#: a .layout bin's zone covers the walkable cells within this Chebyshev distance
LAYOUT_ZONE_RADIUS = 2
_ZONE_KEYS = "123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# generic and domain parameters a .layout dict may also set
_LAYOUT_PARAMS = ("slip", "discount", "horizon", "items_per_robot", "soup_size", "cook_fraction")


class OvercookedProblem(RobotProblem):
    actions = MOVE_NAMES + ("interact", "wait")

    def __init__(self, world: World, task: Task) -> None:
        if task.kind not in OvercookedDomain.task_kinds:
            raise ValueError(f"unknown overcooked task kind {task.kind!r}")
        self.world, self.task = world, task
        self.discount = world.discount
        self.slip = world.slip
        self.cook = task.kind == "cook"
        # fixture code of every cell, padded by one so the faced cell never falls off the grid
        h, w = world.grid.shape
        self.code = np.zeros((h + 2, w + 2), dtype=np.int64)
        for symbol, code in _FIXTURE_SYMBOLS.items():
            self.code[1:-1, 1:-1][world.grid == symbol] = code
        place = [
            Feature("x", "local", tuple(str(i) for i in range(world.width))),
            Feature("y", "local", tuple(str(i) for i in range(world.height))),
            Feature("orientation", "local", MOVE_NAMES),
            OvercookedDomain.dynamic_feature,
        ]
        zone = Feature("bin", "static_global", ("none",) + world.zone_names)
        if self.cook:
            self.soup_size = int(world.params["soup_size"])
            self.ingredient = HELD.index(task.option)
            pots = world.extras["pots"]
            self.pot_id = np.zeros_like(self.code)
            for k, (px, py) in enumerate(pots, start=1):
                self.pot_id[py + 1, px + 1] = k
            self.features = tuple(place) + (
                Feature("pot", "local", ("none",) + tuple(f"{px},{py}" for px, py in pots)),
                Feature("in_pot", "local", tuple(str(i) for i in range(self.soup_size + 1))),
                Feature("served", "local", tuple(str(i) for i in range(task.count + 1))),
                zone,
            )
        else:
            piles = [world.items[i] for i in task.items]
            self.pile_x = np.array([it.cell[0] for it in piles])
            self.pile_y = np.array([it.cell[1] for it in piles])
            self.full = (1 << len(piles)) - 1
            self.features = tuple(place) + (mask_feature("cleaned", len(piles)), zone)
        self.zone_col = len(self.features) - 1

    def start_state(self) -> np.ndarray:
        x, y = self.task.start
        progress = [0, 0, 0] if self.cook else [0]
        return np.array([x, y, 0, NONE, *progress, self.world.zone_layer[y, x]])

    def transition_outcomes(self, states: np.ndarray, action: int):
        x, y, held = states[:, 0], states[:, 1], states[:, 3]
        name = self.actions[action]
        if name in MOVE_NAMES:
            out = []
            for nx, ny, p in move_outcomes(x, y, action, self.slip, self.world.passable):
                nxt = states.copy()
                nxt[:, 0], nxt[:, 1], nxt[:, 2] = nx, ny, action
                nxt[:, self.zone_col] = self.world.zone_layer[ny, nx]
                out.append((nxt, np.full(len(states), p)))
            return out
        nxt = states.copy()
        if name == "interact":
            fx, fy = facing_cell(x, y, states[:, 2])
            h, w = self.world.grid.shape
            fx, fy = np.clip(fx, -1, w) + 1, np.clip(fy, -1, h) + 1  # padded indices
            at = self.code[fy, fx]
            if self.cook:
                self._cook(nxt, at, self.pot_id[fy, fx], held, states[:, 4], states[:, 5], states[:, 6])
            else:
                self._clean(nxt, at, held, states[:, 4], fx - 1, fy - 1)
        return [(nxt, np.ones(len(states)))]

    def _cook(self, nxt, at, at_pot, held, pot, in_pot, served) -> None:
        empty, full = held == NONE, in_pot == self.soup_size
        dispenser = _ONION_D if self.ingredient == ONION else _TOMATO_D
        mine = (at_pot > 0) & ((pot == 0) | (at_pot == pot))  # the robot's pot, or any while it has none
        take = (at == dispenser) & empty & ~full
        put = mine & (held == self.ingredient) & ~full
        dish = (at == _DISH_D) & empty & full
        scoop = mine & (held == DISH) & full
        serve = (at == _SERVING) & (held == SOUP)
        nxt[take, 3] = self.ingredient
        nxt[put, 3] = NONE
        nxt[put, 4] = at_pot[put]
        nxt[put, 5] = in_pot[put] + 1
        nxt[dish, 3] = DISH
        nxt[scoop, 3] = SOUP
        nxt[scoop, 4] = 0
        nxt[scoop, 5] = 0
        nxt[serve, 3] = NONE
        nxt[serve, 6] = served[serve] + 1

    def _clean(self, nxt, at, held, cleaned, fx, fy) -> None:
        bits = 1 << np.arange(len(self.pile_x))
        here = (fx[:, None] == self.pile_x) & (fy[:, None] == self.pile_y) & ((cleaned[:, None] & bits) == 0)
        pick = here.any(axis=1) & (held == NONE)
        k = np.argmax(here, axis=1)
        nxt[pick, 3] = GARBAGE
        nxt[pick, 4] = cleaned[pick] | bits[k[pick]]
        drop = (at == _BIN) & (held == GARBAGE)
        nxt[drop, 3] = NONE

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return np.full(len(states), -1.0)  # every step costs time

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        done = states[:, 6] == self.task.count if self.cook else states[:, 4] == self.full
        return done & (states[:, 3] == NONE)


class OvercookedDomain(Domain):
    name = "overcooked"
    legend = {
        ".": "floor", "X": "counter (blocked)", "P": "pot", "O": "onion dispenser", "T": "tomato dispenser",
        "D": "dish dispenser", "S": "serving counter", "B": "garbage bin", "G": "garbage pile (to clean)",
        **{str(d): "start cell" for d in range(10)},
    }
    walkable = ".0123456789"
    dynamic_feature = Feature("held", "dynamic_global", HELD)
    static_feature = "bin"
    task_kinds = ("cook", "clean")
    #: soup_size: ingredients per soup; cook_fraction: share of generated robots that cook
    extra_params = {"soup_size": 2, "cook_fraction": 0.6}

    def read_fixtures(self, world: World) -> None:
        def missing(message: str) -> MapError:
            # point at the first row of [grid], so the error has a line
            lines = world.extras.get("_grid_lines") or [None]
            return MapError(world.source, message, lines[0], 1 if lines[0] else None, field="grid")

        if int(world.params["soup_size"]) < 1:
            raise MapError(world.source, f"soup_size must be at least 1, got {world.params['soup_size']}",
                           field="soup_size")
        if not 0.0 <= float(world.params["cook_fraction"]) <= 1.0:
            raise MapError(world.source, f"cook_fraction must be in [0, 1], got {world.params['cook_fraction']}",
                           field="cook_fraction")
        world.items = tuple(Item("garbage", "garbage", cell) for cell in world.cells_of("G"))
        for key, symbol, _ in _FIXTURES:
            world.extras[key] = world.cells_of(symbol)
        for key, symbol, what in _FIXTURES[2:5]:
            if not world.extras[key]:
                raise missing(f"an overcooked map needs a {what} {symbol!r}")
        if not world.extras["onion"] and not world.extras["tomato"]:
            raise missing("an overcooked map needs an onion 'O' or tomato 'T' dispenser")
        if world.items and not world.extras["bins"]:
            raise missing("garbage piles 'G' need a garbage bin 'B' to go to")

    # ---------- regions: each robot works alone in the room of its start ----------

    def region_tasks(self, world: World, start: Cell) -> tuple[list[str], list[int]]:
        """What a robot starting at `start` can do alone: the soups it can cook and the garbage
        piles (indices into `world.items`) it can clean, from the fixtures next to its region
        (the walkable cells 4-connected to `start`)."""
        region = world.region_of(start)
        memo = world.region_memo()
        if ("overcooked", region) not in memo:
            reach = world.region_reach(region)
            near = self._near(world, start)
            kitchen = near["pots"] and near["dish"] and near["serving"]
            soups = [s for s in SOUPS if kitchen and near[s]]
            piles = [i for i, it in enumerate(world.items) if near["bins"] and reach[it.cell[1], it.cell[0]]]
            memo["overcooked", region] = (soups, piles)
        soups, piles = memo["overcooked", region]
        return list(soups), list(piles)

    @staticmethod
    def _near(world: World, start: Cell) -> dict[str, bool]:
        """Fixture kind -> whether one of them is next to the region of `start`."""
        reach = world.region_reach(world.region_of(start))
        return {key: any(reach[y, x] for x, y in world.extras[key]) for key, _, _ in _FIXTURES}

    def _lacks(self, world: World, start: Cell, soup: str | None = None) -> list[str]:
        """What the region of `start` lacks for cooking (`soup`, or either soup when None)."""
        near = self._near(world, start)
        lacks = []
        if soup is not None and not near[soup]:
            lacks.append(f"{_DESCRIPTION[soup]} {soup[0].upper()!r}")
        elif soup is None and not (near["onion"] or near["tomato"]):
            lacks.append("onion 'O' or tomato 'T' dispenser")
        lacks += [f"{what} {symbol!r}" for key, symbol, what in _FIXTURES[2:5] if not near[key]]
        return lacks

    def check_regions(self, world: World, explicit_starts: bool) -> tuple[Cell, ...]:
        """The usable start cells; a MapError when robots would be forced to coordinate.

        Every region holding a start cell must let a robot complete some task alone. When the
        map marks no start cells, every walkable cell of a region that does is a start."""
        from ..maps import grid_error

        regions = world.regions()
        first: dict[int, Cell] = {}
        for cell in world.starts:
            first.setdefault(int(regions[cell[1], cell[0]]), cell)
        hopeless = {r: c for r, c in first.items() if self.region_tasks(world, c) == ([], [])}
        if not explicit_starts and len(hopeless) < len(first):
            return tuple(c for c in world.starts if int(regions[c[1], c[0]]) not in hopeless)
        if not hopeless:
            return world.starts
        parts = []
        for region, cell in hopeless.items():
            starts = [c for c in world.starts if int(regions[c[1], c[0]]) == region] if explicit_starts else []
            name = (f"the region of start {', '.join(f'{x},{y}' for x, y in starts[:3])}" if starts
                    else f"the region of {cell[0]},{cell[1]}")
            lacks = self._lacks(world, cell)
            what = f"no {' and no '.join(lacks)} next to it" if lacks else "nothing to cook with"
            if world.items:
                what += " and no garbage pile it can carry to a bin"
            parts.append(f"{name} ({int(np.sum(regions == region))} cells) has {what}")
        cell = next(iter(hopeless.values()))
        raise grid_error(world, cell, "forced coordination: " + "; ".join(parts) + ", so no robot starting there "
                         "can complete a task alone. Each robot plans and acts alone (transition independence: its "
                         "moves and its task depend on no other robot), so items cannot be handed over a counter: a "
                         "cook needs a dispenser of its soup, a pot, a dish dispenser and a serving counter next to "
                         "its own region, a cleaner a garbage pile and a bin")

    def parse_task(self, world: World, robot_id: Token, start: Cell, words: Sequence[Token]) -> Task:
        kind = words[0]
        if kind.text == "cook":
            if len(words) != 3:
                raise MapError(world.source, "a cook task is: cook onion|tomato number-of-soups",
                               kind.line, kind.column)
            soup, count = words[1], words[2]
            if soup.text not in SOUPS:
                raise MapError(world.source, f"unknown soup {soup.text!r}; soups: {', '.join(SOUPS)}",
                               soup.line, soup.column)
            if not world.extras[soup.text]:
                raise MapError(world.source, f"{soup.text} soup needs a {_DESCRIPTION[soup.text]} "
                                             f"{soup.text[0].upper()!r} on the map", soup.line, soup.column)
            if not count.text.isdigit() or not 1 <= int(count.text) <= MAX_SOUPS:
                raise MapError(world.source, f"the number of soups must be an integer from 1 to {MAX_SOUPS}, "
                                             f"got {count.text!r}", count.line, count.column)
            lacks = self._lacks(world, start, soup.text)
            if lacks:
                raise MapError(world.source, f"robot {robot_id.text!r} cannot cook {soup.text} soup alone from "
                                             f"{start[0]},{start[1]}: its region has no {' and no '.join(lacks)} "
                                             "next to it (each robot does its task alone)", kind.line, kind.column)
            return Task(robot_id.text, start, "cook", option=soup.text, count=int(count.text))
        items = parse_item_cells(world, kind, words[1:], "garbage pile", "'G'", walkable=False)
        _, piles = self.region_tasks(world, start)
        for index, token in zip(items, words[1:]):
            if index not in piles:
                pile = world.items[index].cell
                why = ("no garbage bin 'B' is next to its region" if world.region_reach(world.region_of(start))[
                    pile[1], pile[0]] else f"the pile at {pile[0]},{pile[1]} is not next to its region")
                raise MapError(world.source, f"robot {robot_id.text!r} cannot clean from {start[0]},{start[1]} "
                                             f"alone: {why} (each robot does its task alone)", token.line, token.column)
        return Task(robot_id.text, start, "clean", items)

    def random_task(self, world: World, robot_id: str, start: Cell, rng: np.random.Generator) -> Task:
        """A task the robot can do alone from the region of `start`: a cook with probability
        cook_fraction (always, when its region has no garbage to clean), else a cleaner."""
        per_robot = int(world.params["items_per_robot"])
        soups, piles = self.region_tasks(world, start)
        if not soups and not piles:
            raise MapError(world.source, f"no task can be done alone from {start[0]},{start[1]}")
        cook = rng.random() < float(world.params["cook_fraction"]) or not piles
        if cook and soups:
            soup = soups[int(rng.integers(len(soups)))]
            return Task(robot_id, start, "cook", option=soup, count=int(rng.integers(1, per_robot + 1)))
        k = min(per_robot, len(piles))
        chosen = rng.choice(len(piles), size=k, replace=False)
        return Task(robot_id, start, "clean", tuple(sorted(piles[int(i)] for i in chosen)))

    def targets(self, world: World, task: Task | None) -> list[tuple[Cell, str]]:
        """Every fixture a task may use (regions decide which of them a robot reaches)."""
        if task is None:
            keys = [key for key, _, _ in _FIXTURES]
            piles = range(len(world.items))
        elif task.kind == "cook":
            keys, piles = [task.option, "pots", "dish", "serving"], ()
        else:
            keys, piles = ["bins"], task.items
        return [(world.items[i].cell, "garbage pile") for i in piles] + \
               [(cell, _DESCRIPTION[key]) for key in keys for cell in world.extras[key]]

    def make_problem(self, world: World, task: Task) -> OvercookedProblem:
        return OvercookedProblem(world, task)

    map_size = (11, 7)
    min_map_size = (6, 5)

    def random_map(self, rng: np.random.Generator, width: int, height: int, starts: int, name: str) -> str:
        """A kitchen walled by counters: onion and tomato dispensers, dishes, a serving counter,
        garbage piles and bins on the walls, pots on an island counter (on a wall when the kitchen
        is too small for one). Bins stand near the dispensers; each bin's neighbourhood is an NSE
        zone (as for .layout files), so cooks fetching ingredients cross it."""
        from ..generate import MapSketch

        sketch = MapSketch(self.name, width, height, floor=".", border="X", walkable=self.walkable)
        n_pots = 1 + int(width * height >= 80)
        pots_placed = False
        if width >= 7 and height >= 5:  # an island row with the pots, floor all around it
            for _ in range(10):
                length = int(rng.integers(n_pots + 1, min(n_pots + 3, width - 4) + 1))
                x0, y = int(rng.integers(2, width - 2 - length + 1)), int(rng.integers(2, height - 2))
                island = ["X"] * length
                for k in rng.choice(length, size=n_pots, replace=False):
                    island[k] = "P"
                if sketch.block([(x0 + i, y) for i in range(length)], island):
                    pots_placed = True
                    break
        # wall cells (not corners) in front of a floor cell, where fixtures go
        walls = [(x, y) for x in range(1, width - 1) for y in (0, height - 1)] + \
                [(x, y) for y in range(1, height - 1) for x in (0, width - 1)]
        walls = [walls[i] for i in rng.permutation(len(walls))]
        wall_fixtures = "OTDS" + ("" if pots_placed else "P" * n_pots)
        for symbol, (x, y) in zip(wall_fixtures, walls):
            sketch.grid[y, x] = symbol
        walls = walls[len(wall_fixtures):]
        dispensers = np.array(sketch.cells(np.isin(sketch.grid, ["O", "T"])))
        n_bins = 1 + int(width + height >= 24)
        for _ in range(n_bins):  # near a dispenser: one of the three closest free wall cells
            distance = [np.abs(dispensers - cell).sum(axis=1).min() for cell in walls]
            x, y = walls.pop(int(np.argsort(distance, kind="stable")[int(rng.integers(min(3, len(walls))))]))
            sketch.grid[y, x] = "B"
        for x, y in walls[:int(rng.integers(2, 4))]:
            sketch.grid[y, x] = "G"
        sketch.place_starts(rng, starts)
        layer, zoned = self.bin_zone_layer(sketch.grid)
        for k, key in zoned:
            sketch.add_zone(key, f"bin-{k + 1}", layer == key)
        sketch.rules = [("*", self.dynamic_feature.name, value, w, k) for value, (w, k) in LAYOUT_RULES.items()]
        sketch.params = {"slip": 0.1, "discount": 0.99, "items_per_robot": 2, "soup_size": 2, "cook_fraction": 0.6}
        return sketch.text(name)

    # ---------- Overcooked-AI .layout files ----------

    def parse_layout(self, text: str, source: str):
        """An Overcooked-AI `.layout` (a Python dict with a "grid") as a ParsedMap.

        The file is parsed with `ast` and never executed: literals and simple expressions
        (string concatenation and repetition, `"".join([...])`, `float('inf')`...) are evaluated
        by `safe_literal`; keys this reader does not use may hold anything. Grid rows are
        stripped as Overcooked-AI does; a space inside a row is floor. Each bin `B` gets a zone
        `bin-<k>` (its walkable cells within Chebyshev distance LAYOUT_ZONE_RADIUS; a cell near two
        bins goes to the nearer, then the first), and every zone gets LAYOUT_RULES.
        `num_items_for_soup` sets soup_size; the keys in _LAYOUT_PARAMS set those parameters.
        """
        from ..maps import ParsedMap

        try:
            tree = ast.parse(text, filename=source, mode="eval")
        except SyntaxError as exc:
            raise MapError(source, f"not a Python dict: {exc.msg}", exc.lineno, exc.offset) from None
        node = tree.body
        if not isinstance(node, ast.Dict):
            raise MapError(source, f"a .layout file is a Python dict {{...}}, got {type(node).__name__.lower()}",
                           node.lineno, node.col_offset + 1)
        where: dict[str, ast.AST] = {}
        for key, value in zip(node.keys, node.values):
            if key is None or not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                at = value if key is None else key
                raise MapError(source, "a .layout dict's keys are strings", at.lineno, at.col_offset + 1)
            where[key.value] = value

        def value_of(key: str):
            return safe_literal(where[key], source)

        if "grid" not in where:
            raise MapError(source, 'a .layout dict needs a "grid" string', node.lineno, node.col_offset + 1)
        grid_node = where["grid"]
        grid = value_of("grid")
        if not isinstance(grid, str):
            raise MapError(source, f'"grid" must be a string, got {type(grid).__name__}', grid_node.lineno,
                           grid_node.col_offset + 1)
        rows = _layout_rows(grid, grid_node, text.splitlines())
        for row in rows:
            for j, ch in enumerate(row.text):
                if ch != " " and ch not in self.legend:
                    raise MapError(source, f"unknown layout symbol {ch!r}; symbols: space floor, "
                                   + ", ".join(f"{k!r} {v}" for k, v in self.legend.items()),
                                   row.line, row.column + j)
        rows = [Token(row.text.replace(" ", "."), row.line, row.column) for row in rows]
        if not rows:
            raise MapError(source, '"grid" is empty', grid_node.lineno, grid_node.col_offset + 1)
        for row in rows[1:]:
            if len(row.text) != len(rows[0].text):
                raise MapError(source, f"ragged grid: this row has {len(row.text)} cells, the first row "
                                       f"(line {rows[0].line}) has {len(rows[0].text)}", row.line, row.column)

        parsed = ParsedMap(source)
        top = Token("", node.lineno, node.col_offset + 1)

        def param(key: str, value, at: ast.AST | None = None) -> None:
            pos = top if at is None else Token("", at.lineno, at.col_offset + 1)
            parsed.params[key] = Token(str(value), pos.line, pos.column)
            parsed.param_keys[key] = Token(key, pos.line, pos.column)

        param("domain", self.name)
        param("name", Path(source).stem)
        if "num_items_for_soup" in where:
            soup_size = value_of("num_items_for_soup")
            if isinstance(soup_size, int) and not isinstance(soup_size, bool):
                param("soup_size", soup_size, where["num_items_for_soup"])
        for key in _LAYOUT_PARAMS:
            if key in where:
                value = value_of(key)
                if value is not None:
                    param(key, value, where[key])
        parsed.grid = rows
        self._layout_zones(parsed, top)
        return parsed

    def _layout_zones(self, parsed, top: Token) -> None:
        grid = np.array([list(r.text) for r in parsed.grid])
        bins = [(int(x), int(y)) for y, x in zip(*np.nonzero(grid == "B"))]
        if not bins:
            return
        if len(bins) > len(_ZONE_KEYS):
            x, y = bins[len(_ZONE_KEYS)]
            raise MapError(parsed.source, f"at most {len(_ZONE_KEYS)} bins get zones", parsed.grid[y].line,
                           parsed.grid[y].column + x)
        layer, zoned = self.bin_zone_layer(grid)
        for k, key in zoned:
            bx, by = bins[k]
            row = parsed.grid[by]
            at = (row.line, row.column + bx)
            parsed.zones.append((Token(key, *at), Token(f"bin-{k + 1}", *at)))
        parsed.zone_layer = [Token("".join(r), t.line, t.column) for r, t in zip(layer, parsed.grid)]
        if not parsed.zones:
            parsed.zone_layer = []
            return
        for value, (weight, sensitivity) in LAYOUT_RULES.items():
            parsed.rules.append([Token(text, top.line, top.column) for text in
                                 ("*", self.dynamic_feature.name, value, str(weight), str(sensitivity))])

    def bin_zone_layer(self, grid: np.ndarray) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Each bin's zone: its walkable cells within Chebyshev distance LAYOUT_ZONE_RADIUS (a cell
        near two bins goes to the nearer, then the first). Returns the zone layer (zone keys, '.'
        elsewhere) and (bin index in reading order, key) of the bins whose zone has a cell."""
        walkable = np.isin(grid, list(self.walkable))
        bins = [(int(x), int(y)) for y, x in zip(*np.nonzero(grid == "B"))][:len(_ZONE_KEYS)]
        layer = np.full(grid.shape, ".")
        if not bins:
            return layer, []
        ys, xs = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
        dist = np.stack([np.maximum(abs(xs - bx), abs(ys - by)) for bx, by in bins])  # (bins, H, W)
        nearest = np.argmin(dist, axis=0)
        covered = walkable & (dist.min(axis=0) <= LAYOUT_ZONE_RADIUS)
        zoned = []
        for k in range(len(bins)):
            cells = covered & (nearest == k)
            if cells.any():
                layer[cells] = _ZONE_KEYS[k]
                zoned.append((k, _ZONE_KEYS[k]))
        return layer, zoned

# ---------- reading .layout dicts without executing them ----------

#: str methods a layout expression may call (pure, on strings only)
_STR_METHODS = ("join", "strip", "lstrip", "rstrip", "replace", "upper", "lower")
_MAX_TEXT = 1_000_000  # longest string or list an expression may build


def safe_literal(node: ast.AST, source: str):
    """The value of a layout expression, computed from its syntax tree, never executed.

    Literals (str, numbers, True/False/None, dicts, lists, tuples, sets), unary minus,
    + - * / on numbers, + and * on strings and lists, the str methods in _STR_METHODS (so
    `"\\n".join([...])` works) and `float`, `int`, `str` of a literal. Anything else, a name or
    another call for instance, is a MapError naming its line and column.
    """
    def fail(at: ast.AST, what: str) -> MapError:
        return MapError(source, f"cannot read this expression safely ({what}); a .layout value may use "
                                "literals, + and * on strings and numbers, and \"...\".join([...])",
                        getattr(at, "lineno", None), getattr(at, "col_offset", -1) + 1 or None)

    def bounded(value, at):
        if isinstance(value, (str, list, tuple)) and len(value) > _MAX_TEXT:
            raise fail(at, f"it builds more than {_MAX_TEXT} items")
        return value

    def ev(n: ast.AST):
        if isinstance(n, ast.Constant):
            if isinstance(n.value, (str, int, float, complex, bool)) or n.value is None:
                return n.value
            raise fail(n, f"a {type(n.value).__name__} constant")
        if isinstance(n, ast.Name):
            if n.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[n.id]
            raise fail(n, f"the name {n.id!r}")
        if isinstance(n, (ast.List, ast.Tuple, ast.Set)):
            items = [ev(e) for e in n.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: lambda xs: set(xs)}[type(n)](items)
        if isinstance(n, ast.Dict):
            if any(k is None for k in n.keys):
                raise fail(n, "** unpacking")
            return {ev(k): ev(v) for k, v in zip(n.keys, n.values)}
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
            value = ev(n.operand)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(n, "a sign on something other than a number")
            return -value if isinstance(n.op, ast.USub) else value
        if isinstance(n, ast.BinOp):
            left, right = ev(n.left), ev(n.right)
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
            if isinstance(n.op, ast.Add) and (numbers or type(left) is type(right) and isinstance(left, (str, list, tuple))):
                return bounded(left + right, n)
            if isinstance(n.op, ast.Mult):
                if numbers:
                    return left * right
                seq, count = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and not isinstance(count, bool):
                    if count * len(seq) > _MAX_TEXT:
                        raise fail(n, f"it builds more than {_MAX_TEXT} items")
                    return seq * count
            if numbers and isinstance(n.op, (ast.Sub, ast.Div)):
                if isinstance(n.op, ast.Div) and right == 0:
                    raise fail(n, "a division by zero")
                return left - right if isinstance(n.op, ast.Sub) else left / right
            raise fail(n, f"the operator {type(n.op).__name__} on {type(left).__name__} and {type(right).__name__}")
        if isinstance(n, ast.Call) and not n.keywords:
            args = [ev(a) for a in n.args]
            if isinstance(n.func, ast.Attribute) and n.func.attr in _STR_METHODS:
                target = ev(n.func.value)
                if not isinstance(target, str):
                    raise fail(n, f".{n.func.attr}() of a {type(target).__name__}")
                if n.func.attr == "join":
                    if len(args) != 1 or not isinstance(args[0], (list, tuple)) or \
                            not all(isinstance(a, str) for a in args[0]):
                        raise fail(n, "join() of something other than a list of strings")
                    return bounded(target.join(args[0]), n)
                if not all(isinstance(a, str) for a in args):
                    raise fail(n, f".{n.func.attr}() with arguments that are not strings")
                try:
                    return bounded(getattr(target, n.func.attr)(*args), n)
                except TypeError as exc:
                    raise fail(n, str(exc)) from None
            if isinstance(n.func, ast.Name) and n.func.id in ("float", "int", "str") and len(args) == 1 \
                    and isinstance(args[0], (str, int, float)):
                try:
                    return {"float": float, "int": int, "str": str}[n.func.id](args[0])
                except ValueError as exc:
                    raise fail(n, str(exc)) from None
            name = ast.unparse(n.func) if hasattr(ast, "unparse") else "a function"
            raise fail(n, f"a call of {name}")
        raise fail(n, f"a {type(n).__name__} expression")

    return ev(node)


def _layout_rows(grid: str, grid_node: ast.AST, lines: list[str]) -> list[Token]:
    """The stripped, non-empty rows of a layout grid with where each one is written: each row
    is looked for in the file from the grid's value onwards (rows of a triple-quoted string,
    or string pieces joined together); a row built in another way gets the value's position."""
    rows = []
    line, col = grid_node.lineno, grid_node.col_offset  # search cursor (1-based line, 0-based column)
    for raw in grid.split("\n"):
        row = raw.strip()
        if not row:
            continue
        found = None
        for number in range(line, len(lines) + 1):
            at = lines[number - 1].find(row, col if number == line else 0)
            if at >= 0:
                found = (number, at)
                break
        if found is None:
            rows.append(Token(row, grid_node.lineno, grid_node.col_offset + 1))
            continue
        line, col = found[0], found[1] + len(row)
        rows.append(Token(row, found[0], found[1] + 1))
    return rows
