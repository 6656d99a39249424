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
            return Task(robot_id.text, start, "cook", option=soup.text, count=int(count.text))
        items = parse_item_cells(world, kind, words[1:], "garbage pile", "'G'", walkable=False)
        return Task(robot_id.text, start, "clean", items)

    def random_task(self, world: World, robot_id: str, start: Cell, rng: np.random.Generator) -> Task:
        per_robot = int(world.params["items_per_robot"])
        if rng.random() < float(world.params["cook_fraction"]) or not world.items:
            soups = [s for s in SOUPS if world.extras[s]]
            soup = soups[int(rng.integers(len(soups)))]
            return Task(robot_id, start, "cook", option=soup, count=int(rng.integers(1, per_robot + 1)))
        k = min(per_robot, len(world.items))
        items = rng.choice(len(world.items), size=k, replace=False)
        return Task(robot_id, start, "clean", tuple(sorted(int(i) for i in items)))

    def targets(self, world: World, task: Task | None) -> list[tuple[Cell, str]]:
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

    # ---------- Overcooked-AI .layout files ----------

    def parse_layout(self, text: str, source: str):
        """An Overcooked-AI `.layout` (a Python dict literal with a "grid") as a ParsedMap.

        Grid rows are stripped as Overcooked-AI does; a space inside a row is floor. Each
        bin `B` gets a zone `bin-<k>` (its walkable cells within Chebyshev distance
        LAYOUT_ZONE_RADIUS; a cell near two bins goes to the nearer, then the first), and
        every zone gets LAYOUT_RULES. `num_items_for_soup` sets soup_size; the keys in
        _LAYOUT_PARAMS set those parameters; other keys are ignored.
        """
        from ..maps import ParsedMap

        try:
            tree = ast.parse(text, filename=source, mode="eval")
            layout = ast.literal_eval(tree)
        except SyntaxError as exc:
            raise MapError(source, f"not a Python dict literal: {exc.msg}", exc.lineno, exc.offset) from None
        except ValueError as exc:
            raise MapError(source, f"not a Python dict literal: {exc}", 1, 1) from None
        if not isinstance(layout, dict):
            raise MapError(source, f"a .layout file is a dict literal, got a {type(layout).__name__}", 1, 1)
        node = tree.body
        where = {k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
        if "grid" not in layout:
            raise MapError(source, 'a .layout dict needs a "grid" string', node.lineno, node.col_offset + 1)
        grid_node = where["grid"]
        if not isinstance(layout["grid"], str):
            raise MapError(source, '"grid" must be a string', grid_node.lineno, grid_node.col_offset + 1)
        lines = text.splitlines()
        rows: list[Token] = []
        for i, raw in enumerate(layout["grid"].split("\n")):
            row = raw.strip()
            if not row:
                continue
            line = grid_node.lineno + i
            file_line = lines[line - 1] if line <= len(lines) else ""
            col0 = max(file_line.find(row), 0) + 1
            for j, ch in enumerate(row):
                if ch != " " and ch not in self.legend:
                    raise MapError(source, f"unknown layout symbol {ch!r}; symbols: space floor, "
                                   + ", ".join(f"{k!r} {v}" for k, v in self.legend.items()),
                                   line, col0 + j)
            rows.append(Token(row.replace(" ", "."), line, col0))
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
        if isinstance(layout.get("num_items_for_soup"), int):
            param("soup_size", layout["num_items_for_soup"], where["num_items_for_soup"])
        for key in _LAYOUT_PARAMS:
            if layout.get(key) is not None:
                param(key, layout[key], where[key])
        parsed.grid = rows
        self._layout_zones(parsed, top)
        return parsed

    def _layout_zones(self, parsed, top: Token) -> None:
        grid = np.array([list(r.text) for r in parsed.grid])
        walkable = np.isin(grid, list(self.walkable))
        bins = [(int(x), int(y)) for y, x in zip(*np.nonzero(grid == "B"))]
        if not bins:
            return
        if len(bins) > len(_ZONE_KEYS):
            x, y = bins[len(_ZONE_KEYS)]
            raise MapError(parsed.source, f"at most {len(_ZONE_KEYS)} bins get zones", parsed.grid[y].line,
                           parsed.grid[y].column + x)
        ys, xs = np.mgrid[0:grid.shape[0], 0:grid.shape[1]]
        dist = np.stack([np.maximum(abs(xs - bx), abs(ys - by)) for bx, by in bins])  # (bins, H, W)
        nearest = np.argmin(dist, axis=0)
        covered = walkable & (dist.min(axis=0) <= LAYOUT_ZONE_RADIUS)
        layer = np.full(grid.shape, ".")
        for k, (bx, by) in enumerate(bins):
            cells = covered & (nearest == k)
            if not cells.any():
                continue
            row = parsed.grid[by]
            key = Token(_ZONE_KEYS[k], row.line, row.column + bx)
            parsed.zones.append((key, Token(f"bin-{k + 1}", row.line, row.column + bx)))
            layer[cells] = _ZONE_KEYS[k]
        parsed.zone_layer = [Token("".join(r), t.line, t.column) for r, t in zip(layer, parsed.grid)]
        if not parsed.zones:
            parsed.zone_layer = []
            return
        for value, (weight, sensitivity) in LAYOUT_RULES.items():
            parsed.rules.append([Token(text, top.line, top.column) for text in
                                 ("*", self.dynamic_feature.name, value, str(weight), str(sensitivity))])
