"""Plain data for a loaded map: the grid, its NSE zones and rules, task items and tasks.

Nothing here knows a particular domain; the domain module fills in the meaning of
grid symbols and items.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Cell = tuple[int, int]  # (x, y): column, row from the top-left, 0-based
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)  # 4-connectivity


class LocatedError(ValueError):
    """A file or input that cannot be used, with where the problem is: `source:line:column: field`."""

    unnamed = "<input>"  # what `source` reads as when there is none

    def __init__(self, source: str | Path | None, message: str, line: int | None = None,
                 column: int | None = None, field: str | None = None) -> None:
        self.source = str(source) if source is not None else self.unnamed
        self.line, self.column, self.field, self.message = line, column, field, message
        where = self.source
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")


class MapError(LocatedError):
    """A map or scenario that cannot be used, with where the problem is."""

    unnamed = "<map>"


@dataclass(frozen=True)
class Token:
    """A word of the map file with its position (1-based line and column)."""

    text: str
    line: int
    column: int


@dataclass(frozen=True)
class NSERule:
    """One term family of the NSE penalty (docs/FORMULATION.md section 3).

    Robots in `zone` (None: every zone) whose dynamic feature `feature` has value
    `value` count together; `weight` is w_v and `sensitivity` is k_f.
    """

    zone: str | None
    feature: str
    value: str
    weight: float
    sensitivity: float


@dataclass(frozen=True)
class Item:
    """A task item the map offers: a sample site, a shelf, a garbage pile..."""

    kind: str
    label: str
    cell: Cell


@dataclass(frozen=True)
class Task:
    """One robot's task. `items` index `World.items`; `option`/`count` serve domains
    whose tasks are not item lists (an Overcooked cook makes `count` soups of `option`)."""

    robot_id: str
    start: Cell
    kind: str
    items: tuple[int, ...] = ()
    option: str = ""
    count: int = 0


@dataclass
class World:
    """A loaded map: everything a domain needs to build each robot's problem."""

    name: str
    domain: str
    source: str
    grid: np.ndarray  # (H, W) array of one-character symbols
    params: dict[str, Any]
    zone_names: tuple[str, ...]  # zone k+1 is zone_names[k]; 0 means no zone
    zone_layer: np.ndarray  # (H, W) int
    rules: tuple[NSERule, ...]
    min_count: int
    passable: np.ndarray  # (H, W) bool
    items: tuple[Item, ...] = ()
    starts: tuple[Cell, ...] = ()
    robots: tuple[Task, ...] = ()  # tasks fixed by the map file
    extras: dict[str, Any] = field(default_factory=dict)  # domain-specific fixtures

    @property
    def height(self) -> int:
        return self.grid.shape[0]

    @property
    def width(self) -> int:
        return self.grid.shape[1]

    @property
    def slip(self) -> float:
        return float(self.params["slip"])

    @property
    def discount(self) -> float:
        return float(self.params["discount"])

    @property
    def horizon(self) -> int:
        return int(self.params["horizon"])

    def symbol(self, cell: Cell) -> str:
        """The grid symbol at (x, y), as a plain str."""
        return str(self.grid[cell[1], cell[0]])

    def cells_of(self, symbols: str) -> list[Cell]:
        """Cells holding any of `symbols`, in reading order."""
        ys, xs = np.nonzero(np.isin(self.grid, list(symbols)))
        return [(int(x), int(y)) for y, x in zip(ys, xs)]

    def zone_index(self, name: str) -> int:
        return self.zone_names.index(name) + 1

    # ---------- regions: what a robot can reach from its start ----------

    def regions(self) -> np.ndarray:
        """(H, W) int: the 4-connected walkable component of each cell, numbered 1, 2, ...
        in reading order of their first cell; 0 for cells a robot cannot stand on."""
        return self._region_cache()[1]

    def region_of(self, cell: Cell) -> int:
        return int(self.regions()[cell[1], cell[0]])

    def region_reach(self, region: int) -> np.ndarray:
        """(H, W) bool: the cells of `region` and the blocked cells next to one of them (a
        fixture such as a pot or a dispenser is used from a neighbouring cell)."""
        cache = self._region_cache()[2]
        if region not in cache:
            from scipy.ndimage import binary_dilation

            inside = self.regions() == region
            cache[region] = inside | (binary_dilation(inside, structure=_CROSS) & ~self.passable)
        return cache[region]

    def region_memo(self) -> dict:
        """A dict for domains to memoise what each region holds (generated tasks ask per robot);
        it is emptied whenever the regions change."""
        return self._region_cache()[3]

    def _region_cache(self):
        # cached per passable array: `dataclasses.replace` copies share `extras`, so the key is
        # the array itself, and a copy with another grid computes its own regions
        hit = self.extras.get("_regions")
        if hit is None or hit[0] is not self.passable:
            from scipy.ndimage import label

            labels, _ = label(self.passable, structure=_CROSS)
            hit = (self.passable, labels.astype(np.int64), {}, {})
            self.extras["_regions"] = hit
        return hit

    def with_rules(self, rules: tuple[NSERule, ...], min_count: int | None = None) -> "World":
        """A copy with another NSE rule set (operators change rules at run time)."""
        from dataclasses import replace

        return replace(self, rules=tuple(rules), min_count=self.min_count if min_count is None else min_count)
