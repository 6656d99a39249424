"""What every domain module provides, and grid helpers they share.

A domain is one module in this folder with one `Domain` subclass; registering it in
`planner/domains/__init__.py` is the only other change a new domain needs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any, Sequence

import numpy as np

from ..problem import Feature, RobotProblem
from ..world import Cell, MapError, Task, Token, World

#: direction name -> (dx, dy); y grows downwards (row index)
DIRECTIONS: dict[str, tuple[int, int]] = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0)}
MOVE_NAMES: tuple[str, ...] = tuple(DIRECTIONS)
_DX = np.array([d[0] for d in DIRECTIONS.values()])
_DY = np.array([d[1] for d in DIRECTIONS.values()])
# the two directions perpendicular to each move (slips go sideways)
_PERPENDICULAR = {0: (2, 3), 1: (2, 3), 2: (0, 1), 3: (0, 1)}


class Domain(ABC):
    """A family of maps and tasks (salp, Overcooked, warehouse...)."""

    #: registry name, also the `domain = ...` value in map files
    name: str
    #: grid symbol -> what it is (documentation, and unknown-symbol errors)
    legend: dict[str, str]
    #: symbols a robot may stand on
    walkable: str
    #: the dynamic global feature the NSE rules refer to (value 0 is null)
    dynamic_feature: Feature
    #: name of the static global feature (the NSE zone a robot stands in)
    static_feature: str
    #: task kinds this domain accepts in [robots]
    task_kinds: tuple[str, ...]
    #: domain-specific [map] parameters and their defaults
    extra_params: dict[str, Any] = {}
    #: default and smallest (width, height) of generated maps; None: the domain has no generator
    map_size: tuple[int, int] | None = None
    min_map_size: tuple[int, int] = (3, 3)

    @abstractmethod
    def read_fixtures(self, world: World) -> None:
        """Find items and fixtures in the grid (set `world.items`, `world.extras`); raise MapError."""

    @abstractmethod
    def parse_task(self, world: World, robot_id: Token, start: Cell, words: Sequence[Token]) -> Task:
        """A task from a [robots] row (`words` follow the start cell); raise MapError."""

    @abstractmethod
    def random_task(self, world: World, robot_id: str, start: Cell, rng: np.random.Generator) -> Task:
        """A feasible random task for a generated scenario."""

    @abstractmethod
    def make_problem(self, world: World, task: Task) -> RobotProblem:
        """The robot's own factored MDP."""

    @abstractmethod
    def targets(self, world: World, task: Task) -> list[tuple[Cell, str]]:
        """Cells the task must reach (with what they are), for the reachability check."""

    def random_map(self, rng: np.random.Generator, width: int, height: int, starts: int, name: str) -> str:
        """A random map text of this domain (`planner.generate` checks and retries it)."""
        raise NotImplementedError(f"domain {self.name!r} has no map generator")

    def generalisation_features(self, states: np.ndarray, problem: RobotProblem) -> np.ndarray:
        """phi(s_i) of docs/FORMULATION.md section 6: (dynamic value, in an NSE zone) per state."""
        dyn = states[:, problem.feature_index(self.dynamic_feature.name)]
        zone = states[:, problem.feature_index(self.static_feature)]
        return np.stack([dyn, (zone > 0).astype(np.int64)], axis=1)


# ---------- grid helpers shared by the domains ----------

def move_outcomes(x: np.ndarray, y: np.ndarray, direction: int, slip: float,
                  walkable: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Where a move in `direction` ends: intended with 1 - slip, each sideways with slip/2.

    A move into a non-walkable cell or off the grid leaves the robot where it was.
    """
    outcomes = []
    branches = [(direction, 1.0 - slip)]
    if slip > 0:
        branches += [(d, slip / 2.0) for d in _PERPENDICULAR[direction]]
    dest_x, dest_y = _move_table(walkable)
    for d, p in branches:
        outcomes.append((dest_x[d][y, x], dest_y[d][y, x], p))
    return outcomes


_MOVE_TABLES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _move_table(walkable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, H, W) x and y where a move in each direction from each cell ends (cached per grid):
    model building looks moves up instead of recomputing them for every batch of states."""
    hit = _MOVE_TABLES.get(id(walkable))
    if hit is not None and hit[0].shape == walkable.shape and np.array_equal(hit[0], walkable):
        return hit[1], hit[2]
    h, w = walkable.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    dest_x, dest_y = np.empty((4, h, w), np.int64), np.empty((4, h, w), np.int64)
    for d in range(4):
        nx, ny = x + _DX[d], y + _DY[d]
        inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
        ok = inside & walkable[np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)]
        dest_x[d], dest_y[d] = np.where(ok, nx, x), np.where(ok, ny, y)
    if len(_MOVE_TABLES) >= 64:
        _MOVE_TABLES.clear()
    _MOVE_TABLES[id(walkable)] = (walkable.copy(), dest_x, dest_y)
    return dest_x, dest_y


def facing_cell(x: np.ndarray, y: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x + _DX[direction], y + _DY[direction]


def reachable_cells(walkable: np.ndarray, start: Cell) -> np.ndarray:
    """(H, W) bool: walkable cells 4-connected to `start` (a one-off check per map)."""
    h, w = walkable.shape
    seen = np.zeros_like(walkable, dtype=bool)
    x0, y0 = start
    if not walkable[y0, x0]:
        return seen
    seen[y0, x0] = True
    queue = deque([start])
    while queue:
        x, y = queue.popleft()
        for dx, dy in DIRECTIONS.values():
            nx, ny = x + dx, y + dy
            if 0 <= nx < w and 0 <= ny < h and walkable[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                queue.append((nx, ny))
    return seen


def adjacent_walkable(walkable: np.ndarray, cell: Cell) -> list[Cell]:
    h, w = walkable.shape
    x, y = cell
    out = []
    for dx, dy in DIRECTIONS.values():
        nx, ny = x + dx, y + dy
        if 0 <= nx < w and 0 <= ny < h and walkable[ny, nx]:
            out.append((nx, ny))
    return out


def parse_cell(token: Token, source: str) -> Cell:
    """'x,y' -> (x, y)."""
    parts = token.text.split(",")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise MapError(source, f"expected a cell as x,y, got {token.text!r}", token.line, token.column)
    return int(parts[0]), int(parts[1])


def check_cell(world: World, cell: Cell, token: Token, what: str, walkable: bool = True) -> None:
    x, y = cell
    if not (0 <= x < world.width and 0 <= y < world.height):
        raise MapError(world.source, f"{what} {x},{y} is off the grid ({world.width} wide, {world.height} high)",
                       token.line, token.column)
    if walkable and not world.passable[y, x]:
        raise MapError(world.source, f"{what} {x},{y} is on {world.symbol(cell)!r}, which a robot cannot stand on",
                       token.line, token.column)


def parse_item_cells(world: World, kind: Token, cells: Sequence[Token], what: str, symbols: str,
                     walkable: bool = True) -> tuple[int, ...]:
    """Indices into `world.items` of a task's `x,y` words (`what`: "sample site"...).

    `symbols` describes the grid symbols such an item has, for the error message.
    """
    if not cells:
        raise MapError(world.source, f"{kind.text} needs at least one {what} x,y", kind.line, kind.column)
    items: list[int] = []
    for token in cells:
        cell = parse_cell(token, world.source)
        check_cell(world, cell, token, what, walkable=walkable)
        matches = [i for i, it in enumerate(world.items) if it.cell == cell]
        if not matches:
            raise MapError(world.source, f"{cell[0]},{cell[1]} is {world.symbol(cell)!r}, not a {what} ({symbols})",
                           token.line, token.column)
        if matches[0] in items:
            raise MapError(world.source, f"{what} {token.text} is listed twice", token.line, token.column)
        items.append(matches[0])
    return tuple(items)


def mask_feature(name: str, n_bits: int) -> Feature:
    """A local progress feature holding one bit per task item."""
    return Feature(name, "local", tuple(format(v, f"0{max(n_bits, 1)}b") for v in range(2 ** n_bits)))


def bit_count(values: np.ndarray) -> np.ndarray:
    return np.bitwise_count(values.astype(np.uint64)).astype(np.int64)
