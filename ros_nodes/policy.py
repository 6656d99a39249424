"""A robot's policy as the service sends it, and the executor's tracking of its state in it.

The table (GET /scenarios/{sid}/robots/{rid}/policy) lists every reachable state, its cell,
the policy's action and that action's successors with their probabilities. From state s the
executor executes actions[s]; its target is the cell of the most likely successor. When the
robot arrives in a cell it moves to the successor of s with that cell; when the action does
not change the cell (pick up, deposit, wait, a blocked move) the action is carried out in
place and the most likely successor with the same cell is taken. A cell that is no successor
re-localises the robot to the state with that cell which agrees with the current one on
every feature a cell does not determine (what is carried, what is done); if there is none,
the tracker reports failure and the executor holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from .geometry import Cell

MAX_STATES = 1_000_000


def _int_list(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{what} must be a list of integers")
    return value


@dataclass(frozen=True)
class PolicyTable:
    run_id: int | None
    features: tuple[str, ...]
    action_names: tuple[str, ...]
    start: int
    states: tuple[tuple[int, ...], ...]
    cells: tuple[Cell, ...]
    actions: tuple[int, ...]
    terminal: tuple[bool, ...]
    successors: tuple[tuple[tuple[int, float], ...], ...]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any) -> "PolicyTable":
        """Validate a policy table from the service; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a policy must be a JSON object")
        missing = [k for k in ("features", "action_names", "start", "states", "cells", "actions", "terminal",
                               "successors") if k not in data]
        if missing:
            raise ValueError(f"policy lacks {', '.join(missing)}")
        run_id = data.get("run_id")
        if run_id is not None and (not isinstance(run_id, int) or isinstance(run_id, bool)):
            raise ValueError("run_id must be an integer or null")
        features, names = data["features"], data["action_names"]
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise ValueError("features must be a non-empty list of names")
        if not isinstance(names, list) or not names or not all(isinstance(a, str) for a in names):
            raise ValueError("action_names must be a non-empty list of names")
        states, cells = data["states"], data["cells"]
        if not isinstance(states, list) or not 1 <= len(states) <= MAX_STATES:
            raise ValueError(f"states must be a list of 1 to {MAX_STATES} states")
        n = len(states)
        for key in ("cells", "actions", "terminal", "successors"):
            if not isinstance(data[key], list) or len(data[key]) != n:
                raise ValueError(f"{key} must have one entry per state ({n})")
        out_states = []
        for i, s in enumerate(states):
            _int_list(s, f"state {i}")
            if len(s) != len(features):
                raise ValueError(f"state {i} has {len(s)} values, expected {len(features)}")
            out_states.append(tuple(s))
        out_cells = []
        for i, c in enumerate(cells):
            _int_list(c, f"cell of state {i}")
            if len(c) != 2:
                raise ValueError(f"cell of state {i} must be [x, y]")
            out_cells.append((c[0], c[1]))
        actions = _int_list(data["actions"], "actions")
        if any(not 0 <= a < len(names) for a in actions):
            raise ValueError(f"actions must index action_names (0..{len(names) - 1})")
        terminal = data["terminal"]
        if not all(isinstance(t, bool) for t in terminal):
            raise ValueError("terminal must be a list of booleans")
        start = data["start"]
        if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < n:
            raise ValueError(f"start must be a state index in 0..{n - 1}")
        successors = []
        for i, row in enumerate(data["successors"]):
            if not isinstance(row, list):
                raise ValueError(f"successors of state {i} must be a list")
            pairs = []
            for pair in row:
                if not (isinstance(pair, list) and len(pair) == 2):
                    raise ValueError(f"successors of state {i} must be [index, probability] pairs")
                j, p = pair
                if not isinstance(j, (int, float)) or isinstance(j, bool) or j != int(j) or not 0 <= j < n:
                    raise ValueError(f"successor {j!r} of state {i} is not a state index")
                if not isinstance(p, (int, float)) or isinstance(p, bool) or not (math.isfinite(p) and 0 <= p <= 1):
                    raise ValueError(f"probability {p!r} of state {i}'s successor is not in [0, 1]")
                pairs.append((int(j), float(p)))
            if pairs and abs(sum(p for _, p in pairs) - 1.0) > 1e-6:
                raise ValueError(f"successor probabilities of state {i} sum to {sum(p for _, p in pairs)}, not 1")
            successors.append(tuple(pairs))
        return cls(run_id, tuple(features), tuple(names), start, tuple(out_states), tuple(out_cells), tuple(actions),
                   tuple(terminal), tuple(successors))

    # -- queries -----------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return len(self.states)

    def index_of(self, state: Sequence[int]) -> int | None:
        key = tuple(state)
        index = self._index().get(key)
        return index

    def _index(self) -> dict[tuple[int, ...], int]:
        cached = self.__dict__.get("_state_index")
        if cached is None:
            cached = {s: i for i, s in enumerate(self.states)}
            object.__setattr__(self, "_state_index", cached)
        return cached

    def states_in(self, cell: Cell) -> list[int]:
        cached = self.__dict__.get("_by_cell")
        if cached is None:
            cached = {}
            for i, c in enumerate(self.cells):
                cached.setdefault(c, []).append(i)
            object.__setattr__(self, "_by_cell", cached)
        return cached.get(tuple(cell), [])

    def cell_features(self) -> frozenset[int]:
        """Features whose value the cell determines (position, and static map features)."""
        cached = self.__dict__.get("_cell_features")
        if cached is None:
            determined = set(range(len(self.features)))
            seen: dict[Cell, tuple[int, ...]] = {}
            for state, cell in zip(self.states, self.cells):
                first = seen.setdefault(cell, state)
                determined -= {k for k in determined if first[k] != state[k]}
            cached = frozenset(determined)
            object.__setattr__(self, "_cell_features", cached)
        return cached

    def bounds(self) -> tuple[int, int, int, int]:
        xs = [c[0] for c in self.cells]
        ys = [c[1] for c in self.cells]
        return min(xs), min(ys), max(xs), max(ys)

    def most_likely_successor(self, state: int, cell: Cell | None = None) -> int | None:
        """The most probable successor of `state` (among those in `cell`, if given)."""
        pairs = [(j, p) for j, p in self.successors[state] if cell is None or self.cells[j] == tuple(cell)]
        if not pairs:
            return None
        return max(pairs, key=lambda jp: jp[1])[0]  # first of equals: the service's argmax

    def most_likely_path(self, horizon: int) -> list[Cell]:
        """Cells visited when every step takes its most probable outcome (consecutive repeats
        collapsed): the path the service draws on its map."""
        state, path = self.start, [self.cells[self.start]]
        for _ in range(horizon):
            if self.terminal[state]:
                break
            nxt = self.most_likely_successor(state)
            if nxt is None:
                break
            state = nxt
            if self.cells[state] != path[-1]:
                path.append(self.cells[state])
        return path


class PolicyTracker:
    """Where the robot is in its policy: a state index, advanced as actions complete."""

    def __init__(self, table: PolicyTable, state: int | None = None) -> None:
        self.table = table
        self.state = table.start if state is None else state

    @property
    def cell(self) -> Cell:
        return self.table.cells[self.state]

    @property
    def state_vector(self) -> list[int]:
        return list(self.table.states[self.state])

    @property
    def terminal(self) -> bool:
        return self.table.terminal[self.state]

    @property
    def action_name(self) -> str:
        return self.table.action_names[self.table.actions[self.state]]

    def target_cell(self) -> Cell | None:
        """Cell of the most likely successor (None when the action has no successor)."""
        nxt = self.table.most_likely_successor(self.state)
        return None if nxt is None else self.table.cells[nxt]

    def in_place(self) -> bool:
        return self.target_cell() == self.cell

    def successor_cells(self) -> set[Cell]:
        """Cells other than the current one that the current action may lead to."""
        return {self.table.cells[j] for j, _ in self.table.successors[self.state]} - {self.cell}

    def complete_in_place(self) -> bool:
        """The in-place action is done: take its most likely successor in this cell."""
        nxt = self.table.most_likely_successor(self.state, self.cell)
        if nxt is None:
            return False
        self.state = nxt
        return True

    def arrive(self, cell: Cell) -> str | None:
        """The robot is now in `cell`: 'successor' if the action leads there, 'relocalised' if
        another state of that cell matches, None (state unchanged) if none does."""
        nxt = self.table.most_likely_successor(self.state, cell)
        if nxt is not None:
            self.state = nxt
            return "successor"
        return "relocalised" if self.relocalise(cell) else None

    def relocalise(self, cell: Cell, table: PolicyTable | None = None) -> bool:
        """Move to the state of `table` (default: ours) in `cell` that agrees with the current
        state on every feature a cell does not determine."""
        table = table or self.table
        current = self.table.states[self.state]
        fixed = table.cell_features() | self.table.cell_features()
        keep = [k for k in range(len(current)) if k not in fixed]
        for j in table.states_in(tuple(cell)):
            if all(table.states[j][k] == current[k] for k in keep):
                self.table, self.state = table, j
                return True
        return False

    def switch(self, table: PolicyTable) -> bool:
        """Follow a new policy from the same state (or, failing that, the same cell)."""
        if table.features != self.table.features:
            return False
        index = table.index_of(self.table.states[self.state])
        if index is not None:
            self.table, self.state = table, index
            return True
        return self.relocalise(self.cell, table)
