"""What robots ask and tell: their policy, their local penalties, their current state; and
the live NSE monitor built from the states they report.

The robots' queries are the hot path: `async` handlers that answer from this process's
cache (api.cache) without a database round trip, and write their JSON themselves (a
response model would validate every answer again). Only a cache miss goes to the database,
on a worker thread. Before the fleet is planned they answer 503 with Retry-After.
"""
from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from .. import repository
from ..cache import NotFound, NotReady, ScenarioCache, ScenarioInfo, publish, OBSERVATIONS_CLEARED
from ..db import Database
from ..deps import get_cache, get_db, get_operator, get_principal
from ..errors import COMMON, NOT_FOUND, NOT_READY
from ..fleets import count_shape, policy_table, state_index, zone_and_value
from ..models import MonitorRow, ObservationRow, RobotStateRow
from ..schemas import (Digits, MonitorOut, ObservationOut, ObservationPage, ObservationsCleared, PenaltyOut, PenaltyTableOut,
                       PolicyOut, RobotId, RobotReportOut, RobotStatusOut, ScenarioId, StateIn)
from ..security import Principal, require_robot

router = APIRouter(prefix="/api/v1/scenarios/{scenario_id}", tags=["robots"])
BAD_STATE = {422: {"description": "The state is malformed or not in the robot's state space"}}


JSON = "application/json"
STATE_PATTERN = r"^[0-9]{1,9}(,[0-9]{1,9}){0,63}$"  # the penalty query's `state`


def json_body(content) -> bytes:
    return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def json_response(content) -> Response:
    return Response(json_body(content), media_type=JSON)


async def scenario_info(cache: ScenarioCache, scenario_id: int) -> ScenarioInfo:
    info = cache.peek_info(scenario_id)
    return info if info is not None else await run_in_threadpool(cache.info, scenario_id)


def _check_robot(info: ScenarioInfo, robot_id: str) -> dict:
    task = info.task_by_id.get(robot_id)
    if task is None:
        raise NotFound(f"no robot {robot_id!r} in scenario {info.id}")
    return task


async def _fleet(cache: ScenarioCache, info: ScenarioInfo):
    fleet = cache.peek_fleet(info)
    if fleet is not None:
        return fleet
    if info.plan_status != "succeeded":
        raise NotReady(info.id, info.plan_status, info.plan_progress, info.plan_error)
    return await run_in_threadpool(cache.fleet, info)


async def _arrays(cache: ScenarioCache, info: ScenarioInfo, robot_id: str):
    found, arrays = cache.peek_arrays(info, robot_id)
    return arrays if found else await run_in_threadpool(cache.arrays, info, robot_id)


async def robot_context(cache: ScenarioCache, scenario_id: int, robot_id: str):
    """(scenario info, planned fleet, the robot's plan, its arrays of the current run or None)."""
    info = await scenario_info(cache, scenario_id)
    _check_robot(info, robot_id)
    fleet = await _fleet(cache, info)
    return info, fleet, fleet.robot(robot_id), await _arrays(cache, info, robot_id)


# -- the robots' polled queries: one function each, answered by the routes below and by the
# fast lane in front of FastAPI (api.fastlane); both render their errors with api.errors
async def robot_status(cache: ScenarioCache, principal: Principal, scenario_id: int, robot_id: str) -> bytes:
    require_robot(principal, scenario_id, robot_id)
    info = await scenario_info(cache, scenario_id)
    task = _check_robot(info, robot_id)
    return json_body({"scenario_id": scenario_id, "robot_id": robot_id, "run_id": info.current_run_id,
                      "task": task, "policy_ready": info.plan_status == "succeeded"})


async def robot_policy(cache: ScenarioCache, principal: Principal, scenario_id: int, robot_id: str) -> bytes:
    require_robot(principal, scenario_id, robot_id)
    info, fleet, robot, stored = await robot_context(cache, scenario_id, robot_id)
    key = (scenario_id, info.current_run_id or 0, robot_id, "policy")
    body = cache.response(key)
    if body is None:
        policy = stored.policy if stored is not None else robot.policy

        def encode() -> bytes:
            return json_body({"scenario_id": scenario_id, "robot_id": robot_id, "run_id": info.current_run_id,
                              **policy_table(robot.mdp, policy)})

        body = await run_in_threadpool(encode)
        cache.keep_response(key, body)
    return body


async def robot_penalty(cache: ScenarioCache, principal: Principal, scenario_id: int, robot_id: str,
                        state: str) -> bytes:
    """`state`: what matched STATE_PATTERN."""
    require_robot(principal, scenario_id, robot_id)
    values = [int(part) for part in state.split(",")]  # the pattern admits only digits and commas
    info, fleet, robot, stored = await robot_context(cache, scenario_id, robot_id)
    try:
        index = state_index(robot, values)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["query", "state"], "type": "value_error", "msg": str(error)}]) from None
    local = stored.local_penalty if stored is not None else None
    return json_body({"scenario_id": scenario_id, "robot_id": robot_id, "run_id": info.current_run_id,
                      "state": values, "state_index": index,
                      "penalty": float(local[index]) if local is not None else 0.0})


@router.get("/robots/{robot_id}", response_model=RobotStatusOut, responses={**COMMON, **NOT_FOUND},
            summary="The robot's task and which run's policy it should follow (cheap to poll)")
async def get_robot(scenario_id: ScenarioId, robot_id: RobotId, cache: ScenarioCache = Depends(get_cache),
                    principal: Principal = Depends(get_principal)):
    return Response(await robot_status(cache, principal, scenario_id, robot_id), media_type=JSON)


@router.get("/robots/{robot_id}/policy", response_model=PolicyOut, responses={**COMMON, **NOT_FOUND, **NOT_READY},
            summary="The robot's current policy as a table")
async def get_policy(scenario_id: ScenarioId, robot_id: RobotId, cache: ScenarioCache = Depends(get_cache),
                     principal: Principal = Depends(get_principal)):
    return Response(await robot_policy(cache, principal, scenario_id, robot_id), media_type=JSON)


@router.get("/robots/{robot_id}/penalties", response_model=PenaltyTableOut,
            responses={**COMMON, **NOT_FOUND, **NOT_READY}, summary="The robot's local NSE penalty in every state")
async def get_penalties(scenario_id: ScenarioId, robot_id: RobotId, cache: ScenarioCache = Depends(get_cache),
                        principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    info, fleet, robot, stored = await robot_context(cache, scenario_id, robot_id)
    key = (scenario_id, info.current_run_id or 0, robot_id, "penalties")
    body = cache.response(key)
    if body is None:
        def encode() -> bytes:
            mdp = robot.mdp
            local = stored.local_penalty if stored is not None and stored.local_penalty is not None else None
            return json_body({"scenario_id": scenario_id, "robot_id": robot_id, "run_id": info.current_run_id,
                              "features": [f.name for f in mdp.features], "states": mdp.states.tolist(),
                              "penalties": local.tolist() if local is not None else [0.0] * mdp.n_states})

        body = await run_in_threadpool(encode)
        cache.keep_response(key, body)
    return Response(body, media_type=JSON)


@router.get("/robots/{robot_id}/penalty", response_model=PenaltyOut,
            responses={**COMMON, **NOT_FOUND, **BAD_STATE, **NOT_READY},
            summary="The robot's local NSE penalty in one state")
async def get_penalty(scenario_id: ScenarioId, robot_id: RobotId,
                      state: str = Query(pattern=STATE_PATTERN,
                                         description="The state: comma-separated value indices, e.g. 1,1,0,0,0"),
                      cache: ScenarioCache = Depends(get_cache), principal: Principal = Depends(get_principal)):
    return Response(await robot_penalty(cache, principal, scenario_id, robot_id, state), media_type=JSON)


@router.post("/robots/{robot_id}/state", response_model=ObservationOut,
             responses={**COMMON, **NOT_FOUND, **BAD_STATE, **NOT_READY}, summary="Report the robot's current state")
async def post_state(scenario_id: ScenarioId, robot_id: RobotId, body: StateIn, db: Database = Depends(get_db),
                     cache: ScenarioCache = Depends(get_cache), principal: Principal = Depends(get_principal)):
    require_robot(principal, scenario_id, robot_id)
    info, fleet, robot, _ = await robot_context(cache, scenario_id, robot_id)
    try:
        index = state_index(robot, body.state)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["body", "state"], "type": "value_error", "msg": str(error)}]) from None
    zone, value = zone_and_value(fleet, robot, index)

    def record() -> float:
        penalty = cache.penalty(info)
        shape = count_shape(cache.world(info))
        with db.transaction() as session:
            return repository.record_state(session, scenario_id, robot_id, body.state, index, zone, value, penalty,
                                           shape, tolerance=info.tolerance, rule_version=info.rule_version,
                                           policy_run_id=body.run_id)

    joint = await run_in_threadpool(record)
    return json_response({"scenario_id": scenario_id, "robot_id": robot_id, "state_index": index,
                          "joint_penalty": joint})


@router.delete("/observations", response_model=ObservationsCleared, responses={**COMMON, **NOT_FOUND},
               summary="Forget the robots' state reports (the live monitor starts afresh)")
def delete_observations(scenario_id: ScenarioId, db: Database = Depends(get_db),
                        principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        deleted = repository.clear_observations(session, scenario_id)
        publish(session, OBSERVATIONS_CLEARED, scenario_id)
        repository.record(session, scenario_id, "observations_cleared", principal.actor, deleted=deleted)
    return ObservationsCleared(scenario_id=scenario_id, deleted=deleted)


@router.get("/observations", response_model=ObservationPage, responses={**COMMON, **NOT_FOUND},
            summary="Export the kept history of state reports, a page at a time")
def get_observations(scenario_id: ScenarioId,
                     after: Annotated[int, Digits, Query(ge=0, le=2**63 - 1, description="Only reports with a larger id")] = 0,
                     limit: Annotated[int, Digits, Query(ge=1, le=10_000, description="Reports per page")] = 1000,
                     db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        rows = list(session.scalars(select(ObservationRow).where(ObservationRow.scenario_id == scenario_id,
                                                                 ObservationRow.id > after)
                                    .order_by(ObservationRow.id).limit(limit)))
    records = [{"id": r.id, "robot_id": r.robot_id, "state": r.state, "state_index": r.state_index,
                "joint_penalty": r.joint_penalty, "received_at": r.received_at} for r in rows]
    return ObservationPage(scenario_id=scenario_id, observations=records,
                           next_after=rows[-1].id if len(rows) == limit else None)


def monitor_out(db: Database, cache: ScenarioCache, scenario_id: int) -> MonitorOut:
    """The live monitor (what GET .../monitor answers and the push channel sends)."""
    info = cache.info(scenario_id)
    penalty = cache.penalty(info)
    shape = count_shape(cache.world(info))
    with db.sessions() as session:
        monitor = session.get(MonitorRow, scenario_id)
        if monitor is None:
            raise NotFound(f"no scenario {scenario_id}")
        latest = list(session.scalars(select(RobotStateRow).where(RobotStateRow.scenario_id == scenario_id)
                                      .order_by(RobotStateRow.robot_id)))
        counts = repository.count_table(monitor, shape)
        total, nse = monitor.observations, monitor.nse_observations
    joint, zones = repository.zone_penalties(penalty, counts)
    per_zone = {name: float(zones[k + 1]) for k, name in enumerate(penalty.zone_names)}
    violating = {k + 1 for k, name in enumerate(penalty.zone_names) if per_zone[name] > 0}
    reports = [RobotReportOut(robot_id=r.robot_id, state=r.state, cell=list(r.state[:2]),
                              zone=penalty.zone_names[r.zone - 1] if 1 <= r.zone <= len(penalty.zone_names) else None,
                              in_violation=r.zone in violating, run_id=r.policy_run_id, received_at=r.received_at)
               for r in latest]
    return MonitorOut(scenario_id=scenario_id, rule_version=info.rule_version,
                      reporting_robots=[r.robot_id for r in latest], current_penalty=joint,
                      nse_state_rate=(nse / total) if total else None, observations=total,
                      zones_in_violation=[z for z, p in per_zone.items() if p > 0], zone_penalties=per_zone,
                      positions={r.robot_id: list(r.state[:2]) for r in latest},  # x, y lead every state
                      tolerance=info.tolerance, robots=reports)


@router.get("/monitor", response_model=MonitorOut, responses={**COMMON, **NOT_FOUND},
            summary="Live NSE monitor from the robots' reported states")
def get_monitor(scenario_id: ScenarioId, db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                _: Principal = Depends(get_operator)):
    return monitor_out(db, cache, scenario_id)
