"""Salp: underwater robots collect chemical samples and deposit them at the lab.

State (x, y, sample, collected, coral):
  x, y       local      position
  collected  local      bit k set once assigned sample k has been picked up
  sample     dynamic    type carried: none, A, B (none is the null value)
  coral      static     NSE zone at (x, y): a coral patch's neighbourhood, or none
A robot carries one sample at a time; the task is done when every assigned sample is
collected and nothing is carried (so the last one has been deposited). Knowing only
*which* samples were collected, not which one is in hand, keeps counterfactuals
meaningful: "here, but carrying nothing" is a state the robot could have been in.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..problem import Feature, RobotProblem
from ..world import Cell, Item, MapError, Task, Token, World
from .base import MOVE_NAMES, Domain, mask_feature, move_outcomes, parse_item_cells

SAMPLE_TYPES = ("A", "B")


class SalpProblem(RobotProblem):
    actions = MOVE_NAMES + ("pick_up", "deposit", "wait")

    def __init__(self, world: World, task: Task) -> None:
        self.world, self.task = world, task
        self.discount = world.discount
        self.slip = world.slip
        items = [world.items[i] for i in task.items]
        self.item_x = np.array([it.cell[0] for it in items])
        self.item_y = np.array([it.cell[1] for it in items])
        self.item_type = np.array([1 + SAMPLE_TYPES.index(it.label) for it in items])
        self.full = (1 << len(items)) - 1
        self.lab = np.zeros(world.grid.shape, bool)
        for x, y in world.extras["labs"]:
            self.lab[y, x] = True
        self.features = (
            Feature("x", "local", tuple(str(i) for i in range(world.width))),
            Feature("y", "local", tuple(str(i) for i in range(world.height))),
            SalpDomain.dynamic_feature,
            mask_feature("collected", len(items)),
            Feature("coral", "static_global", ("none",) + world.zone_names),
        )

    def start_state(self) -> np.ndarray:
        x, y = self.task.start
        return np.array([x, y, 0, 0, self.world.zone_layer[y, x]])

    def transition_outcomes(self, states: np.ndarray, action: int):
        x, y, sample, collected = states[:, 0], states[:, 1], states[:, 2], states[:, 3]
        name = self.actions[action]
        if name in MOVE_NAMES:
            out = []
            for nx, ny, p in move_outcomes(x, y, action, self.slip, self.world.passable):
                nxt = states.copy()
                nxt[:, 0], nxt[:, 1], nxt[:, 4] = nx, ny, self.world.zone_layer[ny, nx]
                out.append((nxt, np.full(len(states), p)))
            return out
        nxt = states.copy()
        if name == "pick_up":
            bits = 1 << np.arange(len(self.item_x))
            here = (x[:, None] == self.item_x) & (y[:, None] == self.item_y) & ((collected[:, None] & bits) == 0)
            can = here.any(axis=1) & (sample == 0)
            k = np.argmax(here, axis=1)
            nxt[can, 3] = collected[can] | bits[k[can]]
            nxt[can, 2] = self.item_type[k[can]]
        elif name == "deposit":
            nxt[self.lab[y, x] & (sample > 0), 2] = 0
        return [(nxt, np.ones(len(states)))]

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return np.full(len(states), -1.0)  # every step costs time

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return (states[:, 3] == self.full) & (states[:, 2] == 0)


class SalpDomain(Domain):
    name = "salp"
    legend = {
        "#": "rock (blocked)", ".": "water", "C": "coral (blocked)", "L": "lab (deposit samples)",
        "a": "sample site, type A", "b": "sample site, type B",
        **{str(d): "start cell" for d in range(10)},
    }
    walkable = ".Lab0123456789"
    dynamic_feature = Feature("sample", "dynamic_global", ("none",) + SAMPLE_TYPES)
    static_feature = "coral"
    task_kinds = ("collect",)

    def read_fixtures(self, world: World) -> None:
        sites = world.cells_of("ab")
        world.items = tuple(Item("sample", "A" if world.grid[y, x] == "a" else "B", (x, y)) for x, y in sites)
        world.extras["labs"] = world.cells_of("L")
        if not world.extras["labs"]:
            raise MapError(world.source, "a salp map needs at least one lab 'L'", field="grid")
        if not world.items:
            raise MapError(world.source, "a salp map needs at least one sample site 'a' or 'b'", field="grid")

    def parse_task(self, world: World, robot_id: Token, start: Cell, words: Sequence[Token]) -> Task:
        items = parse_item_cells(world, words[0], words[1:], "sample site", "'a' or 'b'")
        return Task(robot_id.text, start, "collect", items)

    def random_task(self, world: World, robot_id: str, start: Cell, rng: np.random.Generator) -> Task:
        k = min(int(world.params["items_per_robot"]), len(world.items))
        items = rng.choice(len(world.items), size=k, replace=False)
        return Task(robot_id, start, "collect", tuple(sorted(int(i) for i in items)))

    def targets(self, world: World, task: Task | None) -> list[tuple[Cell, str]]:
        indices = range(len(world.items)) if task is None else task.items
        return [(world.items[i].cell, "sample site") for i in indices] + \
               [(cell, "lab") for cell in world.extras["labs"]]

    def make_problem(self, world: World, task: Task) -> SalpProblem:
        return SalpProblem(world, task)

    map_size = (12, 8)
    min_map_size = (8, 6)

    def random_map(self, rng: np.random.Generator, width: int, height: int, starts: int, name: str) -> str:
        """Coral patches (blocked; the water within one cell of patch k is NSE zone reef-k), a few
        rocks, a lab, sample sites of both types and start cells, the water all connected."""
        from ..generate import MapSketch

        sketch = MapSketch(self.name, width, height, floor=".", border="#", walkable=self.walkable)
        inner = (width - 2) * (height - 2)
        coral = np.zeros((height, width), bool)
        patches: list[np.ndarray] = []
        for _ in range(60):
            if len(patches) >= min(6, 1 + inner // 40):
                break
            pw, ph = int(rng.integers(1, 4)), int(rng.integers(1, 3))
            if pw * ph < 2:
                continue
            x0, y0 = int(rng.integers(2, max(3, width - 1 - pw))), int(rng.integers(2, max(3, height - 1 - ph)))
            patch = np.zeros_like(coral)
            patch[y0:y0 + ph, x0:x0 + pw] = True
            # patches keep a ring of water between them, so that each has its own zone
            if (patch & ~sketch.free()).any() or (ndimage.binary_dilation(patch, np.ones((3, 3))) & coral).any():
                continue
            if sketch.block(sketch.cells(patch), "C"):
                coral |= patch
                patches.append(patch)
        for _ in range(inner // 20):
            free = sketch.cells(sketch.free() & ~ndimage.binary_dilation(coral, np.ones((3, 3))))
            if free:
                sketch.block([free[int(rng.integers(len(free)))]], "#")
        sketch.place(rng, "L", 1)
        n_sites = int(np.clip(inner // 10, 3, 10))
        sketch.place(rng, "a", (n_sites + 1) // 2)
        sketch.place(rng, "b", n_sites // 2)
        sketch.place_starts(rng, starts)
        water = np.isin(sketch.grid, list(self.walkable))
        for k, patch in enumerate(patches, start=1):
            ring = ndimage.binary_dilation(patch, np.ones((3, 3))) & water & (sketch.zone_layer == ".")
            sketch.add_zone(str(k), f"reef-{k}", ring)
        sketch.rules = [("*", "sample", "A", 2.0, 1.0), ("*", "sample", "B", 1.0, 0.5)]
        sketch.params = {"slip": 0.1, "discount": 0.99, "items_per_robot": 2}
        return sketch.text(name)

