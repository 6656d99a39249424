"""Between stored rows and the library: worlds, scenarios, planned fleets, policies, penalties.

Planning a fleet takes seconds, so planned fleets are kept in memory per scenario and
built once, on first use (naive policies and MDPs do not depend on the NSE rules).
"""
from __future__ import annotations

import io
import threading
from dataclasses import asdict, dataclass

import numpy as np

from metareasoner.mitigation import Fleet
from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map_text, world_from_parsed
from planner.scenario import RobotPlan, Scenario, generate_scenario
from planner.world import NSERule, World

from .models import RuleVersionRow, ScenarioRow

MAX_INLINE_CELLS = 10_000  # an inline map larger than this would take too long to plan


class NotFound(LookupError):
    """An id that names nothing; the routers turn it into 404."""


def world_of(map_text: str, source: str) -> World:
    """The world of a stored map; a source named *.layout is an Overcooked-AI layout."""
    if source.endswith(".layout"):
        world = world_from_parsed(get_domain("overcooked").parse_layout(map_text, source))
    else:
        world = load_map_text(map_text, source=source)
    if world.width * world.height > MAX_INLINE_CELLS:
        from planner.world import MapError

        raise MapError(source, f"the grid has {world.width * world.height} cells; at most {MAX_INLINE_CELLS}",
                       field="grid")
    return world


def rules_to_json(rules) -> list[dict]:
    return [asdict(r) for r in rules]


def rules_from_json(rules: list[dict]) -> tuple[NSERule, ...]:
    return tuple(NSERule(**r) for r in rules)


def tasks_to_json(scenario: Scenario) -> list[dict]:
    return [{"id": t.robot_id, "start": list(t.start), "kind": t.kind, "items": list(t.items),
             "option": t.option, "count": t.count} for t in scenario.tasks]


def scenario_of(row: ScenarioRow, version: RuleVersionRow | None = None) -> Scenario:
    world = world_of(row.map_text, row.map_name)
    if version is not None:
        world = world.with_rules(rules_from_json(version.rules), version.min_count)
    return generate_scenario(world, row.n_robots, seed=row.seed, slack=row.slack)


def penalty_of(world: World, version: RuleVersionRow) -> NSEPenalty:
    feature = get_domain(world.domain).dynamic_feature
    return NSEPenalty(rules_from_json(version.rules), world.zone_names, feature, version.min_count)


def encode_array(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(a), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@dataclass(frozen=True)
class RobotArrays:
    """A robot's policy and local penalty from a finished run (both never change)."""

    policy: np.ndarray
    local_penalty: np.ndarray | None


class FleetStore:
    """Planned fleets by scenario; each is planned once, under a per-scenario lock. Also keeps
    what never changes once written: scenario rows and the arrays of finished runs."""

    MAX_CACHED_ARRAYS = 4096

    def __init__(self) -> None:
        self._rows: dict[int, ScenarioRow] = {}
        self._arrays: dict[tuple[int, str], RobotArrays | None] = {}
        self._fleets: dict[tuple, Fleet] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._penalties: dict[tuple, NSEPenalty] = {}
        self._guard = threading.Lock()

    @staticmethod
    def _key(row: ScenarioRow) -> tuple:
        return (row.id, row.created_at.isoformat() if row.created_at else "")

    def get(self, row: ScenarioRow) -> Fleet:
        key = self._key(row)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._fleets:
                self._fleets[key] = Fleet.plan(scenario_of(row))
            return self._fleets[key]

    def penalty(self, row: ScenarioRow, version: RuleVersionRow) -> NSEPenalty:
        """The NSE penalty of a rule set version (cached: versions never change)."""
        key = self._key(row) + (version.version,)
        with self._guard:
            cached = self._penalties.get(key)
        if cached is None:
            cached = penalty_of(world_of(row.map_text, row.map_name), version)
            with self._guard:
                self._penalties[key] = cached
        return cached

    def scenario_row(self, db, scenario_id: int) -> ScenarioRow:
        row = self._rows.get(scenario_id)
        if row is None:
            with db.sessions() as session:
                row = session.get(ScenarioRow, scenario_id)
                if row is None:
                    raise NotFound(f"no scenario {scenario_id}")
                session.expunge(row)
            with self._guard:
                self._rows[scenario_id] = row
        return row

    def run_arrays(self, db, run_id: int, robot_id: str) -> RobotArrays | None:
        key = (run_id, robot_id)
        if key not in self._arrays:
            from .models import RunRobotRow

            with db.sessions() as session:
                stored = session.query(RunRobotRow).filter_by(run_id=run_id, robot_id=robot_id).one_or_none()
                arrays = None if stored is None else RobotArrays(
                    decode_array(stored.policy).astype(np.int64),
                    None if stored.local_penalty is None else decode_array(stored.local_penalty))
            with self._guard:
                if len(self._arrays) >= self.MAX_CACHED_ARRAYS:
                    self._arrays.clear()
                self._arrays[key] = arrays
        return self._arrays[key]

    def forget(self, scenario_id: int) -> None:
        with self._guard:
            self._rows.pop(scenario_id, None)
            for key in [k for k in self._fleets if k[0] == scenario_id]:
                del self._fleets[key]
            for key in [k for k in self._penalties if k[0] == scenario_id]:
                del self._penalties[key]


def robot_position(fleet: Fleet, robot_id: str) -> int:
    for i, plan in enumerate(fleet.plans):
        if plan.task.robot_id == robot_id:
            return i
    raise NotFound(f"no robot {robot_id!r} in this scenario")


def policy_table(plan: RobotPlan, policy: np.ndarray) -> dict:
    """Everything an executor needs to follow `policy` without the MDP: states, cells,
    actions, and for each state the successors of its action with their probabilities."""
    mdp = plan.mdp
    rows = np.arange(mdp.n_states) * mdp.n_actions + policy
    chosen = mdp.transitions[rows]
    successors = [
        [[int(j), float(p)] for j, p in zip(chosen.indices[a:b], chosen.data[a:b])]
        for a, b in zip(chosen.indptr[:-1], chosen.indptr[1:])
    ]
    return {
        "features": [f.name for f in mdp.features],
        "feature_values": [list(f.values) for f in mdp.features],
        "action_names": list(mdp.actions),
        "start": int(mdp.start),
        "states": mdp.states.tolist(),
        "cells": mdp.states[:, :2].tolist(),  # every domain's first two features are x, y
        "actions": policy.astype(int).tolist(),
        "terminal": mdp.terminal.astype(bool).tolist(),
        "successors": successors,
    }


def most_likely_path(plan: RobotPlan, policy: np.ndarray, horizon: int) -> list[list[int]]:
    """Cells visited when every step takes its most probable outcome (for drawing)."""
    mdp = plan.mdp
    chosen = mdp.transitions[np.arange(mdp.n_states) * mdp.n_actions + policy]
    state, path = int(mdp.start), [mdp.states[mdp.start, :2].tolist()]
    for _ in range(horizon):
        if mdp.terminal[state]:
            break
        a, b = chosen.indptr[state], chosen.indptr[state + 1]
        if a == b:
            break
        state = int(chosen.indices[a + int(np.argmax(chosen.data[a:b]))])
        cell = mdp.states[state, :2].tolist()
        if cell != path[-1]:
            path.append(cell)
    return path


def state_index(plan: RobotPlan, state: list[int]) -> int:
    """Index of a reported state, or ValueError saying why it is not one of the robot's."""
    mdp = plan.mdp
    names = [f.name for f in mdp.features]
    if len(state) != len(names):
        raise ValueError(f"a state has {len(names)} values ({', '.join(names)}), got {len(state)}")
    for value, feature in zip(state, mdp.features):
        if not 0 <= value < len(feature.values):
            raise ValueError(f"{feature.name}={value} is out of range 0..{len(feature.values) - 1}")
    index = int(mdp.index_of(np.asarray([state], dtype=np.int64))[0])
    if index < 0:
        raise ValueError(f"state {state} ({', '.join(names)}) is not reachable by robot {plan.task.robot_id!r}")
    return index


def zone_and_value(fleet: Fleet, position: int, index: int) -> tuple[int, int]:
    plan = fleet.plans[position]
    mdp = plan.mdp
    zone = int(mdp.states[index, mdp.feature_index(fleet.static_feature)])
    value = 0 if mdp.terminal[index] else int(mdp.states[index, mdp.feature_index(fleet.dynamic_feature)])
    return zone, value
