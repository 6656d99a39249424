"""Scenarios: create (from a shipped or an inline map; its fleet is then planned in the
background), list, read, delete; the planning status; the map for drawing; robot tokens."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import delete, func, select
from starlette.concurrency import run_in_threadpool

from planner.domains import get_domain
from planner.scenario import generate_scenario

from .. import repository
from ..cache import (PLAN_CHANGED, SCENARIO_CHANGED, SCENARIO_CREATED, SCENARIO_DELETED, TOKEN_REVOKED, NotFound,
                     ScenarioCache, lock_scenario, publish)
from ..db import Database
from ..deps import get_cache, get_db, get_operator, get_runs, get_settings
from ..errors import COMMON, CONFLICT, NOT_FOUND, NOT_READY
from ..fleets import most_likely_path, rules_to_json, tasks_to_json, world_of
from ..jobs import JobManager
from ..models import FleetPlanRow, MonitorRow, RobotTokenRow, RuleVersionRow, ScenarioRow
from ..schemas import (MapOut, PlanOut, RobotPath, ScenarioCreate, ScenarioId, ScenarioOut, ScenarioPatch, ShippedMap,
                       TaskOut,
                       TokenCreate, TokenId, TokenInfoOut, TokenOut, ZoneOut)
from ..security import Principal, hash_token, new_token
from ..settings import Settings
from .robots import _fleet, scenario_info

router = APIRouter(prefix="/api/v1", tags=["scenarios"])


def shipped_maps(maps_dir: Path) -> dict[str, Path]:
    found = sorted(list(maps_dir.glob("*/*.map")) + list(maps_dir.glob("*/*.layout")))
    return {p.stem: p for p in found}


def plan_out(plan: FleetPlanRow | None) -> PlanOut:
    if plan is None:  # only between a scenario's insert and its plan's, never seen by a reader
        return PlanOut(status="queued", phase="queued", progress=0.0, attempts=0, error=None, started_at=None,
                       finished_at=None)
    return PlanOut(status=plan.status, phase=plan.phase, progress=plan.progress, attempts=plan.attempts,
                   error=plan.error, started_at=plan.started_at, finished_at=plan.finished_at)


def scenario_out(session, row: ScenarioRow) -> ScenarioOut:
    active = repository.active_run(session, row.id)
    return ScenarioOut(
        id=row.id, name=row.name, map_name=row.map_name, domain=row.domain, n_robots=row.n_robots, seed=row.seed,
        slack=row.slack, rule_version=session.scalar(select(func.max(RuleVersionRow.version))
                                                     .where(RuleVersionRow.scenario_id == row.id)),
        current_run_id=row.deployed_run_id, deployed_run_id=row.deployed_run_id, auto_deploy=bool(row.auto_deploy),
        tolerance=float(row.tolerance or 0.0), active_run_id=active.id if active else None,
        created_at=row.created_at, robots=[TaskOut(**t) for t in row.tasks],
        planning=plan_out(session.get(FleetPlanRow, row.id)))


def _body_error(field: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "type": "value_error", "msg": message}])


def new_scenario(settings: Settings, body: ScenarioCreate) -> ScenarioRow:
    """Validate everything and build the rows of a scenario (rule set version 1, monitor,
    queued plan); nothing is written."""
    if body.map is not None:
        path = shipped_maps(settings.maps_dir).get(body.map)
        if path is None:
            raise _body_error("map", f"no shipped map {body.map!r}; see GET /api/v1/maps")
        text, source = path.read_text(encoding="utf-8"), path.name
    else:
        text, source = body.map_text, "inline.map"
    world = world_of(text, source)  # MapError -> 422 with the reader's message
    if body.robots > settings.max_robots:
        raise _body_error("robots", f"at most {settings.max_robots} robots per scenario, got {body.robots}")
    cells = world.width * world.height
    if cells * body.robots > settings.max_fleet_cells:
        raise _body_error("robots", f"{body.robots} robots on a {world.width}x{world.height} grid make "
                                    f"{cells * body.robots} cells x robots; at most {settings.max_fleet_cells} "
                                    f"(MASE_MAX_FLEET_CELLS): at most {settings.max_fleet_cells // cells} robots here")
    try:
        scenario = generate_scenario(world, body.robots, seed=body.seed, slack=body.slack)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["body"], "type": "value_error", "msg": str(error)}]) from None
    row = ScenarioRow(name=body.name or world.name, map_name=source, map_text=text, domain=world.domain,
                      n_robots=body.robots, seed=body.seed, slack=str(scenario.budget), tasks=tasks_to_json(scenario),
                      tolerance=body.tolerance, auto_deploy=body.auto_deploy)
    row.rule_versions.append(RuleVersionRow(version=1, rules=rules_to_json(world.rules),
                                            min_count=world.min_count, note="rules of the map"))
    return row


def insert_scenario(session, row: ScenarioRow, actor: str = "service") -> int:
    session.add(row)
    session.flush()
    session.add(MonitorRow(scenario_id=row.id, observations=0, nse_observations=0, counts=[]))
    session.add(FleetPlanRow(scenario_id=row.id))
    publish(session, SCENARIO_CREATED, row.id)
    repository.record(session, row.id, "scenario_created", actor, map=row.map_name, robots=row.n_robots,
                      seed=row.seed, slack=row.slack, tolerance=row.tolerance, auto_deploy=bool(row.auto_deploy))
    return row.id


def create_scenario(db: Database, settings: Settings, body: ScenarioCreate, actor: str = "service") -> int:
    """Validate everything first, then write the scenario and its rule set version 1 at once;
    its fleet is planned by a background job (queued here)."""
    row = new_scenario(settings, body)
    with db.transaction() as session:
        return insert_scenario(session, row, actor)


@router.get("/maps", response_model=list[ShippedMap], responses=COMMON, summary="Shipped maps")
async def list_maps(settings: Settings = Depends(get_settings), _: Principal = Depends(get_operator)):
    return [ShippedMap(name=name, domain=path.parent.name, path=str(path.relative_to(settings.maps_dir)))
            for name, path in shipped_maps(settings.maps_dir).items()]


@router.post("/scenarios", response_model=ScenarioOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, 422: {"description": "Bad body, or a map with errors (the reader's messages)"}},
             summary="Create a scenario (its fleet is planned in the background: see `planning`)")
def post_scenario(body: ScenarioCreate, db: Database = Depends(get_db), settings: Settings = Depends(get_settings),
                  runs: JobManager = Depends(get_runs), principal: Principal = Depends(get_operator)):
    scenario_id = create_scenario(db, settings, body, principal.actor)
    runs.submit()
    with db.transaction() as session:
        return scenario_out(session, repository.scenario(session, scenario_id))


@router.get("/scenarios", response_model=list[ScenarioOut], responses=COMMON, summary="List scenarios")
def list_scenarios(db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        return [scenario_out(session, row) for row in session.scalars(select(ScenarioRow).order_by(ScenarioRow.id))]


@router.get("/scenarios/{scenario_id}", response_model=ScenarioOut, responses={**COMMON, **NOT_FOUND},
            summary="Read a scenario")
def get_scenario(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        return scenario_out(session, repository.scenario(session, scenario_id))


@router.patch("/scenarios/{scenario_id}", response_model=ScenarioOut, responses={**COMMON, **NOT_FOUND},
              summary="Change a scenario's name, alert tolerance or auto-deploy")
def patch_scenario(scenario_id: ScenarioId, body: ScenarioPatch, db: Database = Depends(get_db),
                   principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        row = repository.scenario(session, scenario_id)
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items()
                   if v is not None and getattr(row, k) != v}
        if changes:
            previous = {k: getattr(row, k) for k in changes}
            for key, value in changes.items():
                setattr(row, key, value)
            session.flush()
            publish(session, SCENARIO_CHANGED, scenario_id)
            repository.record(session, scenario_id, "settings_changed", principal.actor, changes=changes,
                              previous=previous)
        return scenario_out(session, row)


@router.post("/scenarios/{scenario_id}/undeploy", response_model=ScenarioOut, responses={**COMMON, **NOT_FOUND},
             summary="Return the fleet to its naive policies (no run deployed)")
def undeploy(scenario_id: ScenarioId, db: Database = Depends(get_db), principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        row = repository.scenario(session, scenario_id)
        if row.deployed_run_id is not None:
            repository.deploy(session, scenario_id, None, principal.actor)
        return scenario_out(session, row)


@router.get("/scenarios/{scenario_id}/plan", response_model=PlanOut, responses={**COMMON, **NOT_FOUND},
            summary="Planning of the scenario's fleet: status and progress")
def get_plan(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        return plan_out(session.get(FleetPlanRow, scenario_id))


@router.post("/scenarios/{scenario_id}/plan/restart", response_model=PlanOut, status_code=status.HTTP_202_ACCEPTED,
             responses={**COMMON, **NOT_FOUND, **CONFLICT}, summary="Plan a fleet whose planning failed again")
def restart_plan(scenario_id: ScenarioId, db: Database = Depends(get_db), runs: JobManager = Depends(get_runs),
                 _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        plan = session.get(FleetPlanRow, scenario_id)
        if plan.status != "failed":
            raise HTTPException(409, f"the fleet's planning is {plan.status}; only a failed one restarts")
        plan.status, plan.phase, plan.progress, plan.error, plan.owner_id = "queued", "queued", 0.0, None, None
        session.flush()
        publish(session, PLAN_CHANGED, scenario_id)
        out = plan_out(plan)
    runs.submit()
    return out


@router.delete("/scenarios/{scenario_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**COMMON, **NOT_FOUND, **CONFLICT}, summary="Delete a scenario with its runs")
def delete_scenario(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        # the scenario's lock first: a run being started now either commits before (and
        # this answers 409) or finds no scenario (404); never a 202 for a run that vanishes
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        active = repository.active_run(session, scenario_id)
        if active is not None:
            raise HTTPException(409, f"run {active.id} of this scenario is {active.status}; wait for it to finish",
                                headers={"Retry-After": "5"})
        session.delete(repository.scenario(session, scenario_id))
        publish(session, SCENARIO_DELETED, scenario_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/scenarios/{scenario_id}/map", response_model=MapOut, responses={**COMMON, **NOT_FOUND, **NOT_READY},
            summary="The map, zones and robots' planned paths, for drawing")
async def get_map(scenario_id: ScenarioId, db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                  _: Principal = Depends(get_operator)):
    info = await scenario_info(cache, scenario_id)
    fleet = await _fleet(cache, info)

    def draw() -> MapOut:
        world = cache.world(info)
        zones = [ZoneOut(name=name, cells=[[int(x), int(y)] for y, x in zip(*(world.zone_layer == k + 1).nonzero())])
                 for k, name in enumerate(world.zone_names)]
        robots = []
        for robot, task in zip(fleet.robots, info.tasks):
            arrays = cache.arrays(info, robot.robot_id)
            policy = arrays.policy if arrays is not None else robot.policy
            robots.append(RobotPath(id=robot.robot_id, start=list(task["start"]),
                                    path=most_likely_path(robot.mdp, policy, world.horizon)))
        return MapOut(width=world.width, height=world.height, grid=["".join(r) for r in world.grid.tolist()],
                      passable=world.passable.tolist(), zones=zones, legend=dict(get_domain(world.domain).legend),
                      robots=robots, run_id=info.current_run_id)

    return await run_in_threadpool(draw)


# -- robot tokens ----------------------------------------------------------------------------
def token_info(row: RobotTokenRow) -> dict:
    return dict(id=row.id, scenario_id=row.scenario_id, robot_id=row.robot_id, created_at=row.created_at,
                expires_at=row.expires_at)


@router.post("/scenarios/{scenario_id}/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, **NOT_FOUND}, summary="Make a robot token (shown once, stored hashed)")
def post_token(scenario_id: ScenarioId, body: TokenCreate, db: Database = Depends(get_db),
               settings: Settings = Depends(get_settings), principal: Principal = Depends(get_operator)):
    token = new_token()
    lifetime = body.expires_in if body.expires_in is not None else (settings.token_ttl or None)
    now = datetime.now(timezone.utc)
    with db.transaction() as session:
        row = repository.scenario(session, scenario_id)
        if body.robot_id not in {t["id"] for t in row.tasks}:
            raise HTTPException(404, f"no robot {body.robot_id!r} in scenario {scenario_id}")
        stored = RobotTokenRow(scenario_id=scenario_id, robot_id=body.robot_id, token_hash=hash_token(token),
                               created_at=now, expires_at=now + timedelta(seconds=lifetime) if lifetime else None)
        session.add(stored)
        session.flush()
        repository.record(session, scenario_id, "token_created", principal.actor, robot_id=body.robot_id,
                          token_id=stored.id)
        return TokenOut(**token_info(stored), token=token)


@router.get("/scenarios/{scenario_id}/tokens", response_model=list[TokenInfoOut], responses={**COMMON, **NOT_FOUND},
            summary="The scenario's robot tokens (without the secrets)")
def list_tokens(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        rows = session.scalars(select(RobotTokenRow).where(RobotTokenRow.scenario_id == scenario_id)
                               .order_by(RobotTokenRow.id))
        return [TokenInfoOut(**token_info(r)) for r in rows]


@router.delete("/scenarios/{scenario_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**COMMON, **NOT_FOUND}, summary="Revoke a robot token (every service process refuses it within a second)")
def delete_token(scenario_id: ScenarioId, token_id: TokenId, db: Database = Depends(get_db),
                 principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        repository.scenario(session, scenario_id)
        robot_id = session.scalar(select(RobotTokenRow.robot_id).where(RobotTokenRow.id == token_id,
                                                                       RobotTokenRow.scenario_id == scenario_id))
        gone = session.execute(delete(RobotTokenRow).where(RobotTokenRow.id == token_id,
                                                           RobotTokenRow.scenario_id == scenario_id)).rowcount
        if not gone:
            raise NotFound(f"no token {token_id} in scenario {scenario_id}")
        publish(session, TOKEN_REVOKED, scenario_id, token_id)
        repository.record(session, scenario_id, "token_revoked", principal.actor, robot_id=robot_id, token_id=token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
