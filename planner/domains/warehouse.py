"""Warehouse: robots bring shelves to a processing counter through narrow corridors.

State (x, y, shelf, status_0 .. status_{n-1}, corridor):
  x, y        local      position
  shelf       dynamic    size of the shelf carried: none, small, big (none is the null value)
  status_k    local      assigned shelf k: waiting, picked, processed, returned
  corridor    static     NSE zone at (x, y): the narrow corridor the robot is in, or none
For each assigned shelf the robot goes to its home, picks it up (only when carrying
nothing), brings it to a counter 'K', processes it there (it stays on the robot), brings
it back home and drops it. One shelf is carried at a time and the robot chooses the order
of its shelves. The task is done when every assigned shelf is returned (the implied "done"
flag: terminal states). The shelf feature is always the size of the one shelf whose status
is picked or processed, or none.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..problem import Feature, RobotProblem
from ..world import Cell, Item, MapError, Task, Token, World
from .base import MOVE_NAMES, Domain, move_outcomes, parse_item_cells

SHELF_SIZES = ("small", "big")
STATUSES = ("waiting", "picked", "processed", "returned")
WAITING, PICKED, PROCESSED, RETURNED = range(len(STATUSES))
#: first status column; x, y, shelf come before it
STATUS0 = 3


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
        self.status_cols = slice(STATUS0, STATUS0 + self.n_items)
        self.corridor_col = STATUS0 + self.n_items
        self.features = (
            Feature("x", "local", tuple(str(i) for i in range(world.width))),
            Feature("y", "local", tuple(str(i) for i in range(world.height))),
            WarehouseDomain.dynamic_feature,
            *(Feature(f"status_{k}", "local", STATUSES) for k in range(self.n_items)),
            Feature("corridor", "static_global", ("none",) + world.zone_names),
        )

    def start_state(self) -> np.ndarray:
        x, y = self.task.start
        return np.array([x, y, 0] + [WAITING] * self.n_items + [self.world.zone_layer[y, x]])

    def transition_outcomes(self, states: np.ndarray, action: int):
        x, y, shelf = states[:, 0], states[:, 1], states[:, 2]
        status = states[:, self.status_cols]  # (B, n)
        name = self.actions[action]
        if name in MOVE_NAMES:
            out = []
            for nx, ny, p in move_outcomes(x, y, action, self.slip, self.world.passable):
                nxt = states.copy()
                nxt[:, 0], nxt[:, 1] = nx, ny
                nxt[:, self.corridor_col] = self.world.zone_layer[ny, nx]
                out.append((nxt, np.full(len(states), p)))
            return out
        nxt = states.copy()
        new_status = status.copy()
        at_home = (x[:, None] == self.item_x) & (y[:, None] == self.item_y)  # (B, n)
        if name == "pick_up":
            here = at_home & (status == WAITING)
            can = here.any(axis=1) & (shelf == 0)
            k = np.argmax(here, axis=1)
            rows = np.flatnonzero(can)
            new_status[rows, k[rows]] = PICKED
            nxt[rows, 2] = self.item_size[k[rows]]
        elif name == "process":
            new_status[(status == PICKED) & self.counter[y, x][:, None]] = PROCESSED
        elif name == "drop":
            done = at_home & (status == PROCESSED)
            new_status[done] = RETURNED
            nxt[done.any(axis=1), 2] = 0
        nxt[:, self.status_cols] = new_status
        return [(nxt, np.ones(len(states)))]

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return np.full(len(states), -1.0)  # every step costs time

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return np.all(states[:, self.status_cols] == RETURNED, axis=1)


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
        k = min(int(world.params["items_per_robot"]), len(world.items))
        items = rng.choice(len(world.items), size=k, replace=False)
        return Task(robot_id, start, "process", tuple(sorted(int(i) for i in items)))

    def targets(self, world: World, task: Task | None) -> list[tuple[Cell, str]]:
        indices = range(len(world.items)) if task is None else task.items
        return [(world.items[i].cell, f"{world.items[i].label} shelf home") for i in indices] + \
               [(cell, "processing counter") for cell in world.extras["counters"]]

    def make_problem(self, world: World, task: Task) -> WarehouseProblem:
        return WarehouseProblem(world, task)
