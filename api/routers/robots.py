"""What robots ask and tell: their policy, their local penalties, their current state; and
the live NSE monitor built from the states they report."""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import delete

from .. import repository
from ..db import Database
from ..deps import get_db, get_fleets, get_operator, get_principal
from ..errors import COMMON, NOT_FOUND
from ..fleets import (FleetStore, NotFound, policy_table, robot_position, state_index,
                      zone_and_value)
from ..models import ObservationRow
from ..schemas import ScenarioId, RobotId, RobotStatusOut, ObservationsCleared, TaskOut, MonitorOut, ObservationOut, PenaltyOut, PenaltyTableOut, PolicyOut, StateIn
from ..security import Principal, require_robot

router = APIRouter(prefix="/api/v1/scenarios/{scenario_id}", tags=["robots"])
BAD_STATE = {422: {"description": "The state is malformed or not in the robot's state space"}}


def _robot_context(db: Database, fleets: FleetStore, scenario_id: int, robot_id: str):
    """(fleet, robot position, current run id, the robot's RobotArrays of that run or None).

    One query per call (the current run id); the scenario and the run's arrays never
    change once written, so they come from memory after the first time."""
    row = fleets.scenario_row(db, scenario_id)
    if robot_id not in {t["id"] for t in row.tasks}:
        raise NotFound(f"no robot {robot_id!r} in scenario {scenario_id}")
    with db.sessions() as session:
        run_id = repository.current_run_id(session, scenario_id)
    fleet = fleets.get(row)
    arrays = fleets.run_arrays(db, run_id, robot_id) if run_id is not None else None
    return fleet, robot_position(fleet, robot_id), run_id, arrays


def _local_penalty(fleet, position: int, arrays) -> np.ndarray:
    if arrays is None or arrays.local_penalty is None:
        return np.zeros(fleet.plans[position].mdp.n_states)
    return arrays.local_penalty


@router.get("/robots/{robot_id}", response_model=RobotStatusOut, responses={**COMMON, **NOT_FOUND},
            summary="The robot's task and which run's policy it should follow (cheap to poll)")
def get_robot(scenario_id: ScenarioId, robot_id: RobotId, db: Database = Depends(get_db),
              fleets: FleetStore = Depends(get_fleets), principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    row = fleets.scenario_row(db, scenario_id)
    task = next((t for t in row.tasks if t["id"] == robot_id), None)
    if task is None:
        raise NotFound(f"no robot {robot_id!r} in scenario {scenario_id}")
    with db.sessions() as session:
        run_id = repository.current_run_id(session, scenario_id)
    return RobotStatusOut(scenario_id=scenario_id, robot_id=robot_id, run_id=run_id, task=TaskOut(**task))


@router.get("/robots/{robot_id}/policy", response_model=PolicyOut, responses={**COMMON, **NOT_FOUND},
            summary="The robot's current policy as a table")
def get_policy(scenario_id: ScenarioId, robot_id: RobotId, db: Database = Depends(get_db),
               fleets: FleetStore = Depends(get_fleets), principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    fleet, position, run_id, stored = _robot_context(db, fleets, scenario_id, robot_id)
    plan = fleet.plans[position]
    policy = stored.policy if stored is not None else plan.policy
    return PolicyOut(scenario_id=scenario_id, robot_id=robot_id, run_id=run_id, **policy_table(plan, policy))


@router.get("/robots/{robot_id}/penalties", response_model=PenaltyTableOut, responses={**COMMON, **NOT_FOUND},
            summary="The robot's local NSE penalty in every state")
def get_penalties(scenario_id: ScenarioId, robot_id: RobotId, db: Database = Depends(get_db),
                  fleets: FleetStore = Depends(get_fleets), principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    fleet, position, run_id, stored = _robot_context(db, fleets, scenario_id, robot_id)
    mdp = fleet.plans[position].mdp
    return PenaltyTableOut(scenario_id=scenario_id, robot_id=robot_id, run_id=run_id,
                           features=[f.name for f in mdp.features], states=mdp.states.tolist(),
                           penalties=_local_penalty(fleet, position, stored).tolist())


@router.get("/robots/{robot_id}/penalty", response_model=PenaltyOut, responses={**COMMON, **NOT_FOUND, **BAD_STATE},
            summary="The robot's local NSE penalty in one state")
def get_penalty(scenario_id: ScenarioId, robot_id: RobotId,
                state: str = Query(pattern=r"^[0-9]{1,9}(,[0-9]{1,9}){0,63}$",
                                   description="The state: comma-separated value indices, e.g. 1,1,0,0,0"),
                db: Database = Depends(get_db), fleets: FleetStore = Depends(get_fleets),
                principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    values = [int(part) for part in state.split(",")]  # the pattern admits only digits and commas
    fleet, position, run_id, stored = _robot_context(db, fleets, scenario_id, robot_id)
    try:
        index = state_index(fleet.plans[position], values)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["query", "state"], "type": "value_error", "msg": str(error)}]) from None
    return PenaltyOut(scenario_id=scenario_id, robot_id=robot_id, run_id=run_id, state=values, state_index=index,
                      penalty=float(_local_penalty(fleet, position, stored)[index]))


def _joint(fleet, penalty, latest: dict[str, int]) -> tuple[float, np.ndarray]:
    """Joint penalty and per-zone penalties of the robots' latest reported states."""
    positions = {p.task.robot_id: i for i, p in enumerate(fleet.plans)}
    pairs = [zone_and_value(fleet, positions[r], s) for r, s in latest.items() if r in positions]
    if not pairs:
        return 0.0, np.zeros(len(penalty.zone_names) + 1)
    zone = np.array([[z for z, _ in pairs]])
    value = np.array([[v for _, v in pairs]])
    return float(penalty(zone, value)[0]), penalty.zone_breakdown(zone, value)[0]


@router.post("/robots/{robot_id}/state", response_model=ObservationOut,
             responses={**COMMON, **NOT_FOUND, **BAD_STATE}, summary="Report the robot's current state")
def post_state(scenario_id: ScenarioId, robot_id: RobotId, body: StateIn, db: Database = Depends(get_db),
               fleets: FleetStore = Depends(get_fleets), principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    fleet, position, _, _ = _robot_context(db, fleets, scenario_id, robot_id)
    try:
        index = state_index(fleet.plans[position], body.state)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["body", "state"], "type": "value_error", "msg": str(error)}]) from None
    with db.transaction() as session:
        row = repository.scenario(session, scenario_id)
        penalty = fleets.penalty(row, repository.rule_version(session, scenario_id))
        latest = {o.robot_id: o.state_index for o in repository.latest_observations(session, scenario_id)}
        latest[robot_id] = index
        joint, _ = _joint(fleet, penalty, latest)
        session.add(ObservationRow(scenario_id=scenario_id, robot_id=robot_id, state=body.state, state_index=index,
                                   joint_penalty=joint))
    return ObservationOut(scenario_id=scenario_id, robot_id=robot_id, state_index=index, joint_penalty=joint)


@router.delete("/observations", response_model=ObservationsCleared, responses={**COMMON, **NOT_FOUND},
               summary="Forget the robots' state reports (the live monitor starts afresh)")
def delete_observations(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        repository.scenario(session, scenario_id)
        deleted = session.execute(delete(ObservationRow).where(ObservationRow.scenario_id == scenario_id)).rowcount
    return ObservationsCleared(scenario_id=scenario_id, deleted=deleted or 0)


@router.get("/monitor", response_model=MonitorOut, responses={**COMMON, **NOT_FOUND},
            summary="Live NSE monitor from the robots' reported states")
def get_monitor(scenario_id: ScenarioId, db: Database = Depends(get_db), fleets: FleetStore = Depends(get_fleets),
                _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        row = repository.scenario(session, scenario_id)
        version = repository.rule_version(session, scenario_id)
        observations = repository.latest_observations(session, scenario_id)
        latest = {o.robot_id: o.state_index for o in observations}
        positions = {o.robot_id: list(o.state[:2]) for o in observations}  # x, y lead every state
        total, nse = repository.observation_counts(session, scenario_id)
    penalty = fleets.penalty(row, version)
    joint, zones = _joint(fleets.get(row), penalty, latest) if latest else (0.0, np.zeros(len(penalty.zone_names) + 1))
    per_zone = {name: float(zones[k + 1]) for k, name in enumerate(penalty.zone_names)}
    return MonitorOut(scenario_id=scenario_id, rule_version=version.version, reporting_robots=sorted(latest),
                      current_penalty=joint, nse_state_rate=(nse / total) if total else None, observations=total,
                      zones_in_violation=[z for z, p in per_zone.items() if p > 0], zone_penalties=per_zone,
                      positions=positions)
