"""Fleet logs and policy files: the robots' reported states out as a fleet log (JSON Lines,
docs/LOGS.md), a run's policies out as a policy file (what `mase simulate --policies` and
`mase mitigate --policies` read), and a policy file in as a run (a learned policy, or any
run's policies), which is deployed like any run."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from metareasoner.fleetlog import LogError, log_from_reports, log_lines, task_from_record
from metareasoner.policies import PolicyDocument, PolicyFile, learner_label, run_document

from .. import repository
from ..cache import RUN_CHANGED, NotFound, ScenarioCache, lock_scenario, publish
from ..db import Database
from ..deps import get_cache, get_db, get_operator, get_runs
from ..errors import COMMON, NOT_FOUND, NOT_READY, policy_error_detail
from ..fleets import decode_array
from ..jobs import JobManager
from ..models import ObservationRow, RunRobotRow, RunRow
from ..schemas import MAX_ID, Digits, ErrorDetail, RunId, RunOut, ScenarioId
from ..security import Principal
from .runs import run_out

router = APIRouter(prefix="/api/v1", tags=["logs"])
READ_BATCH = 50_000
NDJSON = {200: {"content": {"application/x-ndjson": {}}, "description": "The fleet log, one JSON record a line"}}


def library_fleet(cache: ScenarioCache, info):
    """The scenario's planned fleet as the library's `Fleet` (MDPs and naive policies; the
    metareasoner's log functions read nothing else)."""
    from metareasoner.mitigation import Fleet
    from planner.domains import get_domain
    from planner.scenario import RobotPlan, Scenario

    view, world = cache.fleet(info), cache.world(info)
    tasks = [task_from_record(t["id"], {k: t[k] for k in ("kind", "start", "items", "option", "count")})
             for t in info.tasks]
    plans = [RobotPlan(task, None, robot.mdp, None, robot.policy) for task, robot in zip(tasks, view.robots)]
    domain = get_domain(world.domain)
    return Fleet(Scenario(world, tuple(tasks)), plans, cache.penalty(info), domain.static_feature,
                 domain.dynamic_feature.name, len(domain.dynamic_feature.values))


@router.get("/scenarios/{scenario_id}/observations/export", responses={**COMMON, **NOT_FOUND, **NOT_READY, **NDJSON},
            response_class=StreamingResponse,
            summary="The kept history of state reports as a fleet log (JSON Lines, docs/LOGS.md)")
def export_observations(scenario_id: ScenarioId,
                        join_window: Annotated[int, Digits, Query(ge=0, le=100_000, description=(
                            "a robot starting an episode joins the fleet's newest episode while no robot in it has "
                            "reported beyond this step"))] = 0,
                        db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                        _: Principal = Depends(get_operator)):
    """Reports are read in arrival order and cut into episodes: a robot's report starts a new
    episode of its own when it is its first, when its episode already has H + 1 steps, or when it
    reports its start state after a terminal one; a robot's new episode joins the fleet's newest
    episode unless a robot in it has reported beyond step `join_window`. Steps count a robot's
    reports in its episode; a robot that stopped reporting is held at its last state. Episode
    scores use the scenario's newest NSE rules. Actions are not known to the service (null)."""
    info = cache.info(scenario_id)
    fleet = library_fleet(cache, info)
    index = {p.task.robot_id: i for i, p in enumerate(fleet.plans)}
    robots, states, after = [], [], 0
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        while True:
            rows = session.execute(select(ObservationRow.id, ObservationRow.robot_id, ObservationRow.state_index)
                                   .where(ObservationRow.scenario_id == scenario_id, ObservationRow.id > after)
                                   .order_by(ObservationRow.id).limit(READ_BATCH)).all()
            for _id, robot_id, state_index in rows:
                i = index.get(robot_id)
                if i is not None and 0 <= state_index < fleet.plans[i].mdp.n_states:
                    robots.append(i)
                    states.append(state_index)
            if len(rows) < READ_BATCH:
                break
            after = rows[-1][0]
    log = log_from_reports(fleet, np.array(robots, dtype=np.int64), np.array(states, dtype=np.int64),
                           join_window=join_window,
                           source={"service": "observations/export", "scenario_id": scenario_id,
                                   "rule_version": info.rule_version, "join_window": join_window,
                                   "reports": len(robots)})
    lines = (line + "\n" for line in log_lines(log))
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": f'attachment; filename="scenario-{scenario_id}.jsonl"'})


@router.get("/runs/{run_id}/policies", responses={**COMMON, **NOT_FOUND, **NOT_READY},
            summary="A succeeded run's policies as a policy file (RUN.json for `mase ... --policies`)")
def run_policies(run_id: RunId, db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                 _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        run = repository.run(session, run_id)
        if run.status != "succeeded":
            raise NotFound(f"run {run_id} has no policies: it is {run.status}")
        scenario_id = run.scenario_id
        stored = {r.robot_id: decode_array(r.policy).astype(np.int64)
                  for r in session.scalars(select(RunRobotRow).where(RunRobotRow.run_id == run_id))}
        method, imported = run.method, run.imported
    info = cache.info(scenario_id)
    fleet = library_fleet(cache, info)
    policies = [stored.get(p.task.robot_id, p.policy) for p in fleet.plans]
    source = {"service": "runs/policies", "run_id": run_id, "scenario_id": scenario_id, "method": method}
    if imported is not None:
        source["imported"] = imported
    return run_document(fleet, policies, source=source)


BAD_POLICIES = {422: {"model": ErrorDetail, "description": (
    "Not JSON, not a policy document, or one that does not fit the scenario (another map; a robot or task it does "
    "not have; a state, an action or a length that does not fit the robot's MDP): `loc` is the field's path")}}


@router.post("/scenarios/{scenario_id}/runs/import", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED,
             responses={**COMMON, **NOT_FOUND, **NOT_READY, **BAD_POLICIES},
             summary="Import a policy file (a learned policy, or a run's policies) as a run, evaluated in the "
                     "background and deployed like any run")
def import_policies(scenario_id: ScenarioId, body: PolicyDocument,
                    deploy: Annotated[bool | None, Query(description=(
                        "Deploy the run when it succeeds (default: the scenario's auto_deploy; false: it is a "
                        "proposal that an operator deploys)"))] = None,
                    rule_version: Annotated[int | None, Digits, Query(ge=1, le=MAX_ID, description=(
                        "Rule set version J_N is measured with (default: the newest)"))] = None,
                    db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                    runs: JobManager = Depends(get_runs), principal: Principal = Depends(get_operator)):
    """The body is a policy file (docs/LOGS.md: what `mase learn --out` writes and `GET
    /api/v1/runs/{id}/policies` answers). It is checked here against the scenario's planned
    fleet (503 while it is planned): its map, and every entry strictly (`PolicyFile.check`):
    robots and tasks the scenario has, states each robot can reach, listed once, action names
    of its MDP, as many actions as states. A rejected file stores nothing. An accepted one is a
    queued run (method `import`) that the run worker evaluates like any run, exactly: J_N before
    (the policies deployed when it starts) and after, per-robot task regret against its budget;
    robots follow it once it is deployed (`POST /api/v1/runs/{id}/deploy`). A robot without an
    entry (by id or task) follows its task-optimal policy, as `mase mitigate --policies` does."""
    info = cache.info(scenario_id)
    fleet = library_fleet(cache, info)  # NotReady (503) while the fleet is planned: never planned here
    try:
        origin = PolicyFile(body, "body").check(fleet)
    except LogError as error:
        raise HTTPException(422, policy_error_detail(error)) from None
    wrote = body.source.get("command", body.source.get("service"))
    imported = {"learner": learner_label(body.source), "entries": len(body.policies),
                "robots": {how: origin.count(how) for how in ("robot", "task", "own")},
                "source": wrote[:200] if isinstance(wrote, str) else None}
    with db.transaction() as session:
        # the scenario's lock first, as a run start: serialised with its deletion
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        scenario = repository.scenario(session, scenario_id)
        version = repository.rule_version(session, scenario_id, rule_version)
        deploy_on_success = scenario.auto_deploy if deploy is None else deploy
        row = RunRow(scenario_id=scenario_id, rule_version=version.version, method="import", params={},
                     owner_id=runs.process_id, base_run_id=scenario.deployed_run_id, created_by=principal.actor,
                     deploy_on_success=deploy_on_success, imported=imported,
                     import_document=body.model_dump_json())
        session.add(row)
        session.flush()
        publish(session, RUN_CHANGED, scenario_id, row.id)
        repository.record(session, scenario_id, "run_imported", principal.actor, run_id=row.id,
                          rule_version=version.version, method="import", deploy_on_success=deploy_on_success,
                          **imported)
        out = run_out(row, deployed_run_id=scenario.deployed_run_id)
    runs.submit(out.id)
    return out
