"""Between stored rows and the library: worlds, scenarios, planned fleets, policies, penalties.

A scenario's fleet is planned once, by a background job (`plan_fleet_job`, in a process of
its own: api.jobs), and stored as one row per distinct task (its MDP and naive policy, npz
bytes, `fleet_parts`). Service processes load it from there (`load_fleet`) into a
`FleetView`: plain arrays, released as a whole when the scenario is deleted.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map_text, world_from_parsed
from planner.mdp import TabularMDP, _encode, _radix_of
from planner.problem import Feature
from planner.scenario import Scenario, generate_scenario
from planner.world import MapError, NSERule, World

from .cache import NotFound
from .models import FleetPartRow, FleetPlanRow, RuleVersionRow, RunRobotRow, ScenarioRow

MAX_INLINE_CELLS = 10_000  # an inline map larger than this would take too long to plan


def world_of(map_text: str, source: str, check_size: bool = True) -> World:
    """The world of a stored map; a source named *.layout is an Overcooked-AI layout."""
    if source.endswith(".layout"):
        world = world_from_parsed(get_domain("overcooked").parse_layout(map_text, source))
    else:
        world = load_map_text(map_text, source=source)
    if check_size and world.width * world.height > MAX_INLINE_CELLS:
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
    world = world_of(row.map_text, row.map_name, check_size=False)
    if version is not None:
        world = world.with_rules(rules_from_json(version.rules), version.min_count)
    return generate_scenario(world, row.n_robots, seed=row.seed, slack=row.slack)


def penalty_of(world: World, version: RuleVersionRow) -> NSEPenalty:
    feature = get_domain(world.domain).dynamic_feature
    return NSEPenalty(rules_from_json(version.rules), world.zone_names, feature, version.min_count)


def count_shape(world: World) -> tuple[int, int]:
    """Shape of the monitor's count table n_{z,v}: (zones + 1, dynamic values)."""
    return len(world.zone_names) + 1, len(get_domain(world.domain).dynamic_feature.values)


def encode_array(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(a), allow_pickle=False)
    return buffer.getvalue()


def decode_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


# -- planned fleets ------------------------------------------------------------------------
def encode_mdp(mdp: TabularMDP, policy: np.ndarray) -> bytes:
    """An MDP (transitions, states, terminal, features, actions) and a policy as npz bytes."""
    t = mdp.transitions.tocsr()
    buffer = io.BytesIO()
    np.savez(buffer, indptr=t.indptr.astype(np.int64), indices=t.indices.astype(np.int32), data=t.data,
             shape=np.array(t.shape, dtype=np.int64), states=mdp.states.astype(np.int32), terminal=mdp.terminal,
             rewards=mdp.rewards, start=np.array(mdp.start), discount=np.array(mdp.discount),
             policy=policy.astype(np.int32),
             feature_names=np.array([f.name for f in mdp.features]),
             feature_kinds=np.array([f.kind for f in mdp.features]),
             feature_values=np.array(["\x1f".join(f.values) for f in mdp.features]),
             actions=np.array(list(mdp.actions)))
    return buffer.getvalue()


def decode_mdp(data: bytes) -> tuple[TabularMDP, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        transitions = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        features = tuple(Feature(str(n), str(k), tuple(str(v).split("\x1f")))
                         for n, k, v in zip(z["feature_names"], z["feature_kinds"], z["feature_values"]))
        states = z["states"].astype(np.int64)
        radix = _radix_of(features)
        keys = _encode(states, radix)
        order = np.argsort(keys)
        mdp = TabularMDP(transitions, z["rewards"], float(z["discount"]), z["terminal"].astype(bool), int(z["start"]),
                         states, features, tuple(str(a) for a in z["actions"]), _keys=keys[order], _key_order=order,
                         _radix=radix)
        return mdp, z["policy"].astype(np.int64)


def plan_fleet_job(job: dict, send) -> dict:
    """The planning job (in its own process): plan every robot's task alone, return one part
    per distinct MDP and, per robot, the index of its part."""
    from metareasoner.mitigation import Fleet
    from planner.backends import get_backend

    world = world_of(job["map_text"], job["map_name"], check_size=False)
    scenario = generate_scenario(world, job["n_robots"], seed=job["seed"], slack=job["slack"])
    send(("progress", "plan", 0.0))
    with get_backend(job.get("backend", "local"), address=job.get("ray_address")) as backend:
        fleet = Fleet.plan(scenario, backend=backend,
                           progress=lambda done, total: send(("progress", "plan", 0.9 * done / total)))
    parts, index_of, robots = [], {}, []
    for plan in fleet.plans:
        key = id(plan.mdp)  # identical tasks share one solved MDP, and so one part
        if key not in index_of:
            index_of[key] = len(parts)
            parts.append(encode_mdp(plan.mdp, plan.policy))
        robots.append(index_of[key])
    send(("progress", "store", 0.95))
    return {"parts": parts, "robots": robots}


@dataclass(frozen=True)
class PlannedRobot:
    robot_id: str
    position: int
    mdp: TabularMDP
    policy: np.ndarray  # naive (task-optimal)


@dataclass(frozen=True)
class FleetView:
    """What the service needs of a planned fleet to answer robots: their MDPs and naive policies."""

    robots: tuple[PlannedRobot, ...]
    by_id: dict[str, PlannedRobot]
    static_feature: str
    dynamic_feature: str
    nbytes: int

    def robot(self, robot_id: str) -> PlannedRobot:
        found = self.by_id.get(robot_id)
        if found is None:
            raise NotFound(f"no robot {robot_id!r} in this scenario")
        return found


def _mdp_nbytes(mdp: TabularMDP) -> int:
    t = mdp.transitions
    return int(t.data.nbytes + t.indices.nbytes + t.indptr.nbytes + mdp.states.nbytes + mdp.rewards.nbytes
               + mdp.terminal.nbytes + mdp._keys.nbytes + mdp._key_order.nbytes)


def load_fleet(database, info, world: World) -> FleetView | None:
    """The stored plan of scenario `info`, or None if it is not (or no longer) there."""
    with database.sessions() as session:
        plan = session.get(FleetPlanRow, info.id)
        if plan is None or plan.status != "succeeded" or plan.robots is None:
            return None
        parts = {p.position: p.data for p in session.query(FleetPartRow).filter_by(scenario_id=info.id)}
        robot_parts = list(plan.robots)
    decoded = {position: decode_mdp(data) for position, data in parts.items()}
    del parts
    robots = tuple(PlannedRobot(task["id"], i, *decoded[robot_parts[i]]) for i, task in enumerate(info.tasks))
    domain = get_domain(world.domain)
    nbytes = sum(_mdp_nbytes(mdp) + policy.nbytes for mdp, policy in decoded.values())
    return FleetView(robots, {r.robot_id: r for r in robots}, domain.static_feature, domain.dynamic_feature.name,
                     nbytes)


@dataclass(frozen=True)
class RobotArrays:
    """A robot's policy and local penalty from a finished run (both never change)."""

    policy: np.ndarray
    local_penalty: np.ndarray | None


def load_run_arrays(database, run_id: int, robot_id: str) -> RobotArrays | None:
    with database.sessions() as session:
        stored = session.query(RunRobotRow).filter_by(run_id=run_id, robot_id=robot_id).one_or_none()
        if stored is None:
            return None
        return RobotArrays(decode_array(stored.policy).astype(np.int64),
                           None if stored.local_penalty is None else decode_array(stored.local_penalty))


def load_run_policies(database, run_id: int) -> dict[str, np.ndarray]:
    """Every robot's policy of a finished run (one query)."""
    with database.sessions() as session:
        rows = session.execute(select(RunRobotRow.robot_id, RunRobotRow.policy).where(RunRobotRow.run_id == run_id)).all()
    return {robot_id: decode_array(policy).astype(np.int64) for robot_id, policy in rows}


# -- what robots are sent ------------------------------------------------------------------
def policy_table(mdp: TabularMDP, policy: np.ndarray) -> dict:
    """Everything an executor needs to follow `policy` without the MDP: states, cells,
    actions, and for each state the successors of its action with their probabilities."""
    chosen = mdp.transitions[np.arange(mdp.n_states) * mdp.n_actions + policy]
    pairs = np.column_stack([chosen.indices.astype(float), chosen.data]).tolist()
    for pair in pairs:
        pair[0] = int(pair[0])
    bounds = chosen.indptr.tolist()
    successors = [pairs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
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


def most_likely_path(mdp: TabularMDP, policy: np.ndarray, horizon: int) -> list[list[int]]:
    """Cells visited when every step takes its most probable outcome (for drawing)."""
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


def state_index(robot: PlannedRobot, state: list[int]) -> int:
    """Index of a reported state, or ValueError saying why it is not one of the robot's."""
    mdp = robot.mdp
    if len(state) != len(mdp.features):
        names = [f.name for f in mdp.features]
        raise ValueError(f"a state has {len(names)} values ({', '.join(names)}), got {len(state)}")
    for value, feature in zip(state, mdp.features):
        if not 0 <= value < len(feature.values):
            raise ValueError(f"{feature.name}={value} is out of range 0..{len(feature.values) - 1}")
    index = mdp.index_of_state(state)
    if index < 0:
        names = [f.name for f in mdp.features]
        raise ValueError(f"state {state} ({', '.join(names)}) is not reachable by robot {robot.robot_id!r}")
    return index


def zone_and_value(fleet: FleetView, robot: PlannedRobot, index: int) -> tuple[int, int]:
    mdp = robot.mdp
    zone = int(mdp.states[index, mdp.feature_index(fleet.static_feature)])
    value = 0 if mdp.terminal[index] else int(mdp.states[index, mdp.feature_index(fleet.dynamic_feature)])
    return zone, value
