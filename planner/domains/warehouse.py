"""Warehouse: robots bring shelves to a processing counter through narrow corridors.

State (x, y, shelf, trip, done_0 .. done_{n-1}, corridor):
  x, y        local      position
  shelf       dynamic    size of the shelf carried: none, small, big (none is the null value)
  trip        local      empty, to_counter, returning (empty exactly when shelf is none)
  done_k      local      assigned shelf k has been processed and put back home (0 or 1)
  corridor    static     NSE zone at (x, y): the narrow corridor the robot is in, or none
For each assigned shelf the robot goes to its home, picks it up (only when carrying
nothing), brings it to a counter 'K', processes it there (it stays on the robot), brings
it back home and drops it. One shelf is carried at a time.

No feature says *which* shelf is carried: the assigned shelves of one size are taken in
the order the task lists them, so the carried shelf is the first assigned shelf of the
carried size that is not done. Between sizes the robot chooses freely: with a small and a
big shelf it may take either first. Hence "the same robot, at the same place and stage of
its trip, carrying the other size" is a state it could have been in (a valid RECON
counterfactual, docs/FORMULATION.md section 5) whenever it still has a shelf of each size to do.
  pick_up  at the home of shelf k, carrying nothing, k not done and k the first not-done
           assigned shelf of its size: shelf = its size, trip = to_counter
  process  at a counter while to_counter: trip = returning
  drop     at the home of the carried shelf while returning: done_k = 1, shelf none, trip empty
Actions that do not apply change nothing. The task is done (terminal) when every done bit
is set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..problem import Feature, RobotProblem, job_feature
from ..world import Cell, Item, MapError, Task, Token, World
from .base import MOVE_NAMES, Domain, move_outcomes, parse_item_cells

SHELF_SIZES = ("small", "big")
TRIPS = ("empty", "to_counter", "returning")
EMPTY, TO_COUNTER, RETURNING = range(len(TRIPS))
SHELF, TRIP = 2, 3  # columns; x, y come first
#: first done column
DONE0 = 4


class WarehouseProblem(RobotProblem):
    actions = MOVE_NAMES + ("pick_up", "process", "drop", "wait")

    def __init__(self, world: World, task: Task) -> None:
        self.world, self.task = world, task
        self.discount = world.discount
        self.slip = world.slip
        items = [world.items[i] for i in task.items]
        self.n_items = len(items)
        self.item_x = np.array([it.cell[0] for it in items], dtype=np.int64)
        self.item_y = np.array([it.cell[1] for it in items], dtype=np.int64)
        self.item_size = np.array([1 + SHELF_SIZES.index(it.label) for it in items], dtype=np.int64)
        self.counter = np.zeros(world.grid.shape, bool)
        for x, y in world.extras["counters"]:
            self.counter[y, x] = True
        self.done_cols = slice(DONE0, DONE0 + self.n_items)
        self.corridor_col = DONE0 + self.n_items
        self.features = (
            Feature("x", "local", tuple(str(i) for i in range(world.width))),
            Feature("y", "local", tuple(str(i) for i in range(world.height))),
            WarehouseDomain.dynamic_feature,
            Feature("trip", "local", TRIPS),
            *(Feature(f"done_{k}", "local", ("0", "1")) for k in range(self.n_items)),
            Feature("corridor", "static_global", ("none",) + world.zone_names),
        )

    def start_state(self) -> np.ndarray:
        x, y = self.task.start
        return np.array([x, y, 0, EMPTY] + [0] * self.n_items + [self.world.zone_layer[y, x]])

    def next_of_size(self, done: np.ndarray) -> np.ndarray:
        """(B, n) bool: shelf k is the first not-done assigned shelf of its size (the one that
        size's next pick-up takes, and the one carried while that size is carried)."""
        return _next_of_size(done, self.item_size)

    def carried(self, states: np.ndarray) -> np.ndarray:
        """(B, n) bool: which assigned shelf each state carries (none when shelf is none)."""
        return _carried(states, self.done_cols, self.item_size)

    def transition_outcomes(self, states: np.ndarray, action: int):
        return _step(self, states, action, self.item_x, self.item_y, self.item_size)

    def stack_key(self):
        # the same map and the same number of shelves: the problems differ only in arrays
        return (id(self.world), self.n_items)

    @classmethod
    def stack(cls, problems: Sequence["WarehouseProblem"]) -> "StackedWarehouseProblem":
        return StackedWarehouseProblem(problems)

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return np.full(len(states), -1.0)  # every step costs time

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return np.all(states[:, self.done_cols] == 1, axis=1)


def _next_of_size(done: np.ndarray, item_size: np.ndarray) -> np.ndarray:
    # item_size: (n,) for one problem, (B, n) row by row for a stacked one
    first = np.zeros(done.shape, bool)
    rows = np.arange(len(done))
    for size in range(1, len(SHELF_SIZES) + 1):
        open_ = (done == 0) & (item_size == size)
        has = open_.any(axis=1)
        first[rows[has], np.argmax(open_, axis=1)[has]] = True
    return first


def _carried(states: np.ndarray, done_cols: slice, item_size: np.ndarray, first: int = 0) -> np.ndarray:
    return _next_of_size(states[:, done_cols], item_size) & (item_size == states[:, first + SHELF, None])


def _step(problem: WarehouseProblem, states: np.ndarray, action: int, item_x: np.ndarray,
          item_y: np.ndarray, item_size: np.ndarray, first: int = 0):
    """The outcomes of `action` in `states` with the shelves `item_*` ((n,), or (B, n) row by
    row): `problem` gives the map and the columns, which start at column `first` of `states`
    (a stacked problem's job comes before them and is copied along)."""
    x, y = states[:, first], states[:, first + 1]
    shelf, trip = states[:, first + SHELF], states[:, first + TRIP]
    done_cols = slice(first + problem.done_cols.start, first + problem.done_cols.stop)
    done = states[:, done_cols]  # (B, n)
    name = problem.actions[action]
    if name in MOVE_NAMES:
        out = []
        for nx, ny, p in move_outcomes(x, y, action, problem.slip, problem.world.passable):
            nxt = states.copy()
            nxt[:, first], nxt[:, first + 1] = nx, ny
            nxt[:, first + problem.corridor_col] = problem.world.zone_layer[ny, nx]
            out.append((nxt, np.full(len(states), p)))
        return out
    nxt = states.copy()
    at_home = (x[:, None] == item_x) & (y[:, None] == item_y)  # (B, n)
    if name == "pick_up":
        # homes are distinct cells, so at most one shelf qualifies
        here = at_home & _next_of_size(done, item_size) & (shelf == 0)[:, None]
        rows = np.flatnonzero(here.any(axis=1))
        nxt[rows, first + SHELF] = np.broadcast_to(item_size, here.shape)[rows, np.argmax(here[rows], axis=1)]
        nxt[rows, first + TRIP] = TO_COUNTER
    elif name == "process":
        nxt[(trip == TO_COUNTER) & problem.counter[y, x], first + TRIP] = RETURNING
    elif name == "drop":
        put_back = at_home & _carried(states, done_cols, item_size, first) & (trip == RETURNING)[:, None]
        rows = put_back.any(axis=1)
        nxt[:, done_cols] = done | put_back
        nxt[rows, first + SHELF] = 0
        nxt[rows, first + TRIP] = EMPTY
    return [(nxt, np.ones(len(states)))]


class StackedWarehouseProblem(RobotProblem):
    """Several robots' warehouse problems on one map with as many shelves each, as one
    (`RobotProblem.stack`): state (job, *the job's state*), the job's shelves looked up per row."""

    actions = WarehouseProblem.actions

    def __init__(self, problems: Sequence[WarehouseProblem]) -> None:
        first = problems[0]
        if any(p.stack_key() != first.stack_key() for p in problems):
            raise ValueError("stacked warehouse problems need the same map and the same number of shelves")
        self.base, self.jobs = first, len(problems)
        self.discount = first.discount
        self.item_x = np.stack([p.item_x for p in problems])  # (J, n)
        self.item_y = np.stack([p.item_y for p in problems])
        self.item_size = np.stack([p.item_size for p in problems])
        self.features = (job_feature(self.jobs),) + tuple(first.features)
        self._starts = np.array([[j, *p.start_state()] for j, p in enumerate(problems)], dtype=np.int64)

    def start_state(self) -> np.ndarray:
        return self._starts[0]

    def start_states(self) -> np.ndarray:
        return self._starts

    def transition_outcomes(self, states: np.ndarray, action: int):
        job = states[:, 0]
        return _step(self.base, states, action, self.item_x[job], self.item_y[job], self.item_size[job], first=1)

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return self.base.task_reward(states[:, 1:], action)

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return self.base.is_terminal(states[:, 1:])


class WarehouseDomain(Domain):
    name = "warehouse"
    legend = {
        "#": "wall or rack (blocked)", ".": "aisle floor", "=": "narrow corridor floor (human workers)",
        "s": "small shelf home", "S": "big shelf home", "K": "processing counter",
        **{str(d): "start cell" for d in range(10)},
    }
    walkable = ".=sSK0123456789"
    dynamic_feature = Feature("shelf", "dynamic_global", ("none",) + SHELF_SIZES)
    static_feature = "corridor"
    task_kinds = ("process",)

    def read_fixtures(self, world: World) -> None:
        homes = world.cells_of("sS")
        world.items = tuple(Item("shelf", "small" if world.grid[y, x] == "s" else "big", (x, y)) for x, y in homes)
        world.extras["counters"] = world.cells_of("K")
        if not world.extras["counters"]:
            raise MapError(world.source, "a warehouse map needs at least one processing counter 'K'", field="grid")
        if not world.items:
            raise MapError(world.source, "a warehouse map needs at least one shelf home 's' or 'S'", field="grid")

    def parse_task(self, world: World, robot_id: Token, start: Cell, words: Sequence[Token]) -> Task:
        items = parse_item_cells(world, words[0], words[1:], "shelf home", "'s' or 'S'", walkable=False)
        return Task(robot_id.text, start, "process", items)

    def random_task(self, world: World, robot_id: str, start: Cell, rng: np.random.Generator) -> Task:
        """`items_per_robot` shelves; with two or more and both sizes on the map, at least one
        of each size, so that the robot has the choice of which size to carry first."""
        k = min(int(world.params["items_per_robot"]), len(world.items))
        sizes = np.array([it.label for it in world.items])
        small, big = np.flatnonzero(sizes == "small"), np.flatnonzero(sizes == "big")
        if k < 2 or not len(small) or not len(big):
            items = rng.choice(len(world.items), size=k, replace=False)
        else:
            pair = [int(rng.choice(small)), int(rng.choice(big))]
            rest = np.setdiff1d(np.arange(len(world.items)), pair)
            items = np.concatenate([pair, rng.choice(rest, size=k - 2, replace=False)])
        return Task(robot_id, start, "process", tuple(sorted(int(i) for i in items)))

    def targets(self, world: World, task: Task | None) -> list[tuple[Cell, str]]:
        indices = range(len(world.items)) if task is None else task.items
        return [(world.items[i].cell, f"{world.items[i].label} shelf home") for i in indices] + \
               [(cell, "processing counter") for cell in world.extras["counters"]]

    def make_problem(self, world: World, task: Task) -> WarehouseProblem:
        return WarehouseProblem(world, task)

    map_size = (14, 10)
    min_map_size = (9, 6)

    def random_map(self, rng: np.random.Generator, width: int, height: int, starts: int, name: str) -> str:
        """Shelf homes of both sizes on one side, processing counters on the other, a block of
        racks between them crossed by narrow corridors (zone corridor-a, -b...: the short way)
        and, below it (and sometimes above), an aisle without corridor (the detour)."""
        from ..generate import MapSketch

        sketch = MapSketch(self.name, width, height, floor=".", border="#", walkable=self.walkable)
        # interior columns 1..width-2: homes (>= 3 wide), racks, counters (>= 2 wide)
        rack_w = int(rng.integers(2, max(2, (width - 7) // 2) + 1))
        left = int(rng.integers(3, width - 4 - rack_w + 1))
        racks = slice(left + 1, left + 1 + rack_w)
        top = 2 if height >= 8 and rng.random() < 0.5 else 1  # row 1 left open: a second detour
        sketch.grid[top:height - 2, racks] = "#"
        rows = [int(y) for y in rng.permutation(np.arange(top + 1, height - 3))]
        corridors: list[int] = []
        for y in rows:
            if len(corridors) < int(rng.integers(1, 4)) and all(abs(y - c) >= 2 for c in corridors):
                corridors.append(y)
        for k, y in enumerate(sorted(corridors)):
            sketch.grid[y, racks] = "="
            zone = np.zeros(sketch.grid.shape, bool)
            zone[y, racks] = True
            sketch.add_zone("abcdefghijklmnopqrstuvwxyz"[k], f"corridor-{'abcdefghijklmnopqrstuvwxyz'[k]}", zone)
        # homes on every other cell of every other column, so that aisles run between them
        homes = [(x, y) for x in range(2, left + 1, 2) for y in range(2, height - 1, 2)]
        n_homes = min(len(homes), int(rng.integers(4, 9)))
        chosen = [homes[i] for i in rng.choice(len(homes), size=n_homes, replace=False)]
        sizes = ["s", "S"] + [("s", "S")[int(b)] for b in rng.integers(0, 2, size=n_homes - 2)]
        for (x, y), symbol in zip(chosen, sizes):
            sketch.grid[y, x] = symbol
        counter_side = np.zeros(sketch.grid.shape, bool)
        counter_side[1:height - 1, left + 1 + rack_w:width - 1] = True
        sketch.place(rng, "K", int(rng.integers(1, 3)), counter_side)
        if rng.random() < 0.5:  # homes on the east side instead
            sketch.grid, sketch.zone_layer = sketch.grid[:, ::-1].copy(), sketch.zone_layer[:, ::-1].copy()
        sketch.place_starts(rng, starts)
        sketch.rules = [("*", "shelf", "big", 3.0, 1.0), ("*", "shelf", "small", 1.0, 1.0)]
        sketch.params = {"slip": 0.1, "discount": 0.99, "items_per_robot": 2}
        return sketch.text(name)
