"""Scenarios: create (from a shipped or an inline map), list, read, delete; the map for
drawing; robot tokens."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy import select

from planner.scenario import generate_scenario

from .. import repository
from ..db import Database
from ..deps import get_db, get_fleets, get_operator, get_settings
from ..errors import COMMON, CONFLICT, NOT_FOUND
from ..fleets import FleetStore, most_likely_path, rules_to_json, tasks_to_json, world_of
from ..models import RobotTokenRow, RuleVersionRow, ScenarioRow
from ..schemas import ScenarioId, MapOut, RobotPath, ScenarioCreate, ScenarioOut, ShippedMap, TaskOut, TokenCreate, TokenOut, ZoneOut
from ..security import Principal, hash_token, new_token
from ..settings import Settings

router = APIRouter(prefix="/api/v1", tags=["scenarios"])


def shipped_maps(maps_dir: Path) -> dict[str, Path]:
    found = sorted(list(maps_dir.glob("*/*.map")) + list(maps_dir.glob("*/*.layout")))
    return {p.stem: p for p in found}


def scenario_out(session, row: ScenarioRow) -> ScenarioOut:
    current = repository.current_run_id(session, row.id)
    active = repository.active_run(session, row.id)
    return ScenarioOut(
        id=row.id, name=row.name, map_name=row.map_name, domain=row.domain, n_robots=row.n_robots, seed=row.seed,
        slack=row.slack, rule_version=max(v.version for v in row.rule_versions),
        current_run_id=current, active_run_id=active.id if active else None,
        created_at=row.created_at, robots=[TaskOut(**t) for t in row.tasks])


def create_scenario(db: Database, settings: Settings, body: ScenarioCreate) -> int:
    """Validate everything first, then write the scenario and its rule set version 1 at once."""
    if body.map is not None:
        path = shipped_maps(settings.maps_dir).get(body.map)
        if path is None:
            raise HTTPException(422, [{"loc": ["body", "map"], "type": "value_error",
                                       "msg": f"no shipped map {body.map!r}; see GET /api/v1/maps"}])
        text, source = path.read_text(encoding="utf-8"), path.name
    else:
        text, source = body.map_text, "inline.map"
    world = world_of(text, source)  # MapError -> 422 with the reader's message
    if body.robots > settings.max_robots:
        raise HTTPException(422, [{"loc": ["body", "robots"], "type": "value_error",
                                   "msg": f"at most {settings.max_robots} robots per scenario, got {body.robots}"}])
    try:
        scenario = generate_scenario(world, body.robots, seed=body.seed, slack=body.slack)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["body"], "type": "value_error", "msg": str(error)}]) from None
    with db.transaction() as session:
        row = ScenarioRow(name=body.name or world.name, map_name=source, map_text=text, domain=world.domain,
                          n_robots=body.robots, seed=body.seed, slack=body.slack, tasks=tasks_to_json(scenario))
        row.rule_versions.append(RuleVersionRow(version=1, rules=rules_to_json(world.rules),
                                                min_count=world.min_count, note="rules of the map"))
        session.add(row)
        session.flush()
        return row.id


@router.get("/maps", response_model=list[ShippedMap], responses=COMMON, summary="Shipped maps")
def list_maps(settings: Settings = Depends(get_settings), _: Principal = Depends(get_operator)):
    return [ShippedMap(name=name, domain=path.parent.name, path=str(path.relative_to(settings.maps_dir)))
            for name, path in shipped_maps(settings.maps_dir).items()]


@router.post("/scenarios", response_model=ScenarioOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, 422: {"description": "Bad body, or a map with errors (the reader's messages)"}},
             summary="Create a scenario")
def post_scenario(body: ScenarioCreate, db: Database = Depends(get_db), settings: Settings = Depends(get_settings),
                  _: Principal = Depends(get_operator)):
    scenario_id = create_scenario(db, settings, body)
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


@router.delete("/scenarios/{scenario_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={**COMMON, **NOT_FOUND, **CONFLICT}, summary="Delete a scenario with its runs")
def delete_scenario(scenario_id: ScenarioId, db: Database = Depends(get_db), fleets: FleetStore = Depends(get_fleets),
                    _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        row = repository.scenario(session, scenario_id)
        active = repository.active_run(session, scenario_id)
        if active is not None:
            raise HTTPException(409, f"run {active.id} of this scenario is {active.status}; wait for it to finish")
        session.delete(row)
    fleets.forget(scenario_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/scenarios/{scenario_id}/map", response_model=MapOut, responses={**COMMON, **NOT_FOUND},
            summary="The map, zones and robots' planned paths, for drawing")
def get_map(scenario_id: ScenarioId, db: Database = Depends(get_db), fleets: FleetStore = Depends(get_fleets),
            _: Principal = Depends(get_operator)):
    row = fleets.scenario_row(db, scenario_id)
    with db.sessions() as session:
        run_id = repository.current_run_id(session, scenario_id)
    fleet = fleets.get(row)
    world = fleet.scenario.world
    zones = [ZoneOut(name=name, cells=[[int(x), int(y)] for y, x in zip(*(world.zone_layer == k + 1).nonzero())])
             for k, name in enumerate(world.zone_names)]
    robots = []
    for plan in fleet.plans:
        arrays = fleets.run_arrays(db, run_id, plan.task.robot_id) if run_id is not None else None
        policy = arrays.policy if arrays is not None else plan.policy
        robots.append(RobotPath(id=plan.task.robot_id, start=list(plan.task.start),
                                path=most_likely_path(plan, policy, world.horizon)))
    return MapOut(width=world.width, height=world.height, grid=["".join(r) for r in world.grid.tolist()],
                  passable=world.passable.tolist(), zones=zones, robots=robots,
                  run_id=run_id)


@router.post("/scenarios/{scenario_id}/tokens", response_model=TokenOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, **NOT_FOUND}, summary="Make a robot token (shown once, stored hashed)")
def post_token(scenario_id: ScenarioId, body: TokenCreate, db: Database = Depends(get_db),
               _: Principal = Depends(get_operator)):
    token = new_token()
    with db.transaction() as session:
        row = repository.scenario(session, scenario_id)
        if body.robot_id not in {t["id"] for t in row.tasks}:
            raise HTTPException(404, f"no robot {body.robot_id!r} in scenario {scenario_id}")
        session.add(RobotTokenRow(scenario_id=scenario_id, robot_id=body.robot_id, token_hash=hash_token(token)))
    return TokenOut(scenario_id=scenario_id, robot_id=body.robot_id, token=token)
