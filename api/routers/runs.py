"""Mitigation runs: start one (it works in the background), follow its progress, restart an
interrupted one, compare runs."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import Field
from sqlalchemy import select

from .. import repository
from ..cache import RUN_CHANGED, NotFound, lock_scenario, publish
from ..db import Database
from ..deps import get_db, get_operator, get_runs
from ..errors import COMMON, CONFLICT, NOT_FOUND
from ..jobs import JobManager
from ..models import RunRow
from ..schemas import (MAX_ID, Digits, ImportedOut, ScenarioId, RunId, RobotResult, RunComparison, RunCreate, RunDetail,
                       RunOut)
from ..security import Principal

router = APIRouter(prefix="/api/v1", tags=["runs"])


def run_out(row: RunRow, detail: bool = False, deployed_run_id: int | None = None) -> RunOut | RunDetail:
    """A run as the API shows it; `deployed_run_id` is its scenario's (default: read from its row)."""
    if deployed_run_id is None and row.scenario is not None:
        deployed_run_id = row.scenario.deployed_run_id
    fields = dict(id=row.id, scenario_id=row.scenario_id, method=row.method, params=row.params,
                  rule_version=row.rule_version, status=row.status, phase=row.phase, progress=row.progress,
                  attempts=row.attempts, error=row.error, summary=row.summary, created_at=row.created_at,
                  started_at=row.started_at, finished_at=row.finished_at, base_run_id=row.base_run_id,
                  created_by=row.created_by or "", deploy_on_success=bool(row.deploy_on_success),
                  deployed=row.id == deployed_run_id,
                  imported=ImportedOut(**row.imported) if row.imported is not None else None)
    if not detail:
        return RunOut(**fields)
    robots = [RobotResult(id=r.robot_id, blame=r.blame, updated=r.updated, task_regret=r.task_regret, slack=r.slack,
                          **(r.detail or {})) for r in row.robots]
    return RunDetail(**fields, robots=robots)


@router.post("/scenarios/{scenario_id}/runs", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED,
             responses={**COMMON, **NOT_FOUND}, summary="Start a mitigation run (replanning) in the background")
def post_run(scenario_id: ScenarioId, body: RunCreate, db: Database = Depends(get_db), runs: JobManager = Depends(get_runs),
             principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        # the scenario's lock first: serialised with its deletion (no 202 for a run that vanishes)
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        scenario = repository.scenario(session, scenario_id)
        version = repository.rule_version(session, scenario_id, body.rule_version)
        deploy = scenario.auto_deploy if body.deploy is None else body.deploy
        row = RunRow(scenario_id=scenario_id, rule_version=version.version, method=body.method,
                     params={"update_fraction": body.update_fraction, "rounds": body.rounds,
                             "episodes": body.episodes, "seed": body.seed}, owner_id=runs.process_id,
                     base_run_id=scenario.deployed_run_id, created_by=principal.actor, deploy_on_success=deploy)
        session.add(row)
        session.flush()
        publish(session, RUN_CHANGED, scenario_id, row.id)
        repository.record(session, scenario_id, "run_started", principal.actor, run_id=row.id,
                          rule_version=version.version, method=body.method, deploy_on_success=deploy,
                          params=dict(row.params))
        out = run_out(row, deployed_run_id=scenario.deployed_run_id)
    runs.submit(out.id)
    return out


@router.get("/scenarios/{scenario_id}/runs", response_model=list[RunOut], responses={**COMMON, **NOT_FOUND},
            summary="Runs of a scenario, oldest first")
def list_runs(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        scenario = repository.scenario(session, scenario_id)
        return [run_out(r, deployed_run_id=scenario.deployed_run_id) for r in scenario.runs]


@router.get("/runs/compare", response_model=RunComparison,
            responses={**COMMON, **NOT_FOUND, 422: {"description": "Fewer than two or more than 20 run ids"}},
            summary="Compare runs side by side")
def compare_runs(ids: Annotated[list[Annotated[int, Digits, Field(ge=1, le=MAX_ID)]],
                                 Query(min_length=2, max_length=20, description="Run ids to compare (2 to 20)")],
                 db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        rows = [repository.run(session, i) for i in ids]
        out = [run_out(r, detail=True) for r in rows]
    done = [r for r in out if r.status == "succeeded" and r.summary is not None]
    best = min(done, key=lambda r: r.summary.nse_after).id if done else None
    return RunComparison(runs=out, best_run_id=best)


@router.get("/runs/{run_id}", response_model=RunDetail, responses={**COMMON, **NOT_FOUND},
            summary="A run: status, phase, progress and results")
def get_run(run_id: RunId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        return run_out(repository.run(session, run_id), detail=True)


@router.post("/runs/{run_id}/restart", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED,
             responses={**COMMON, **NOT_FOUND, **CONFLICT}, summary="Start an interrupted or failed run again")
def restart_run(run_id: RunId, db: Database = Depends(get_db), runs: JobManager = Depends(get_runs),
                principal: Principal = Depends(get_operator)):
    with db.sessions() as session:
        scenario_id = session.scalar(select(RunRow.scenario_id).where(RunRow.id == run_id))
    with db.transaction() as session:
        if scenario_id is None or not lock_scenario(session, scenario_id):
            raise HTTPException(404, f"no run {run_id}")
        row = session.scalar(select(RunRow).where(RunRow.id == run_id))
        if row is None:
            raise HTTPException(404, f"no run {run_id}")
        if row.status not in ("interrupted", "failed"):
            raise HTTPException(409, f"run {run_id} is {row.status}; only interrupted or failed runs restart")
        row.status, row.phase, row.progress, row.error = "queued", "queued", 0.0, None
        row.attempts += 1
        row.started_at = row.finished_at = None
        row.owner_id = runs.process_id  # this process runs it now
        session.flush()
        publish(session, RUN_CHANGED, scenario_id, run_id)
        repository.record(session, scenario_id, "run_restarted", principal.actor, run_id=run_id,
                          attempt=row.attempts)
        out = run_out(row)
    runs.submit(run_id)
    return out


@router.post("/runs/{run_id}/deploy", response_model=RunOut, responses={**COMMON, **NOT_FOUND, **CONFLICT},
             summary="Deploy a succeeded run: its robots follow its policies (an earlier run: a rollback)")
def deploy_run(run_id: RunId, db: Database = Depends(get_db), principal: Principal = Depends(get_operator)):
    with db.sessions() as session:
        scenario_id = session.scalar(select(RunRow.scenario_id).where(RunRow.id == run_id))
    with db.transaction() as session:
        if scenario_id is None or not lock_scenario(session, scenario_id):
            raise NotFound(f"no run {run_id}")
        row = repository.run(session, run_id)
        if row.status != "succeeded":
            raise HTTPException(409, f"run {run_id} is {row.status}; only a succeeded run can be deployed")
        if row.scenario.deployed_run_id != run_id:
            repository.deploy(session, scenario_id, run_id, principal.actor)
        return run_out(row, deployed_run_id=run_id)
