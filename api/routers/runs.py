"""Mitigation runs: start one (it works in the background), follow its progress, restart an
interrupted one, compare runs."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import Field
from sqlalchemy import select

from .. import repository
from ..db import Database
from ..deps import get_db, get_operator, get_runs
from ..errors import COMMON, CONFLICT, NOT_FOUND
from ..jobs import RunManager
from ..models import RunRow
from ..schemas import MAX_ID, ScenarioId, RunId, RobotResult, RunComparison, RunCreate, RunDetail, RunOut
from ..security import Principal

router = APIRouter(prefix="/api/v1", tags=["runs"])


def run_out(row: RunRow, detail: bool = False) -> RunOut | RunDetail:
    fields = dict(id=row.id, scenario_id=row.scenario_id, method=row.method, params=row.params,
                  rule_version=row.rule_version, status=row.status, phase=row.phase, progress=row.progress,
                  attempts=row.attempts, error=row.error, summary=row.summary, created_at=row.created_at,
                  started_at=row.started_at, finished_at=row.finished_at)
    if not detail:
        return RunOut(**fields)
    robots = [RobotResult(id=r.robot_id, blame=r.blame, updated=r.updated, task_regret=r.task_regret, slack=r.slack)
              for r in row.robots]
    return RunDetail(**fields, robots=robots)


@router.post("/scenarios/{scenario_id}/runs", response_model=RunOut, status_code=status.HTTP_202_ACCEPTED,
             responses={**COMMON, **NOT_FOUND}, summary="Start a mitigation run (replanning) in the background")
def post_run(scenario_id: ScenarioId, body: RunCreate, db: Database = Depends(get_db), runs: RunManager = Depends(get_runs),
             _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        repository.scenario(session, scenario_id)
        version = repository.rule_version(session, scenario_id, body.rule_version)
        row = RunRow(scenario_id=scenario_id, rule_version=version.version, method=body.method,
                     params={"update_fraction": body.update_fraction, "rounds": body.rounds,
                             "episodes": body.episodes, "seed": body.seed})
        session.add(row)
        session.flush()
        out = run_out(row)
    runs.submit(out.id)
    return out


@router.get("/scenarios/{scenario_id}/runs", response_model=list[RunOut], responses={**COMMON, **NOT_FOUND},
            summary="Runs of a scenario, oldest first")
def list_runs(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        return [run_out(r) for r in repository.scenario(session, scenario_id).runs]


@router.get("/runs/compare", response_model=RunComparison,
            responses={**COMMON, **NOT_FOUND, 422: {"description": "Fewer than two or more than 20 run ids"}},
            summary="Compare runs side by side")
def compare_runs(ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]],
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
def restart_run(run_id: RunId, db: Database = Depends(get_db), runs: RunManager = Depends(get_runs),
                _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        row = session.scalar(select(RunRow).where(RunRow.id == run_id).with_for_update())
        if row is None:
            raise HTTPException(404, f"no run {run_id}")
        if row.status not in ("interrupted", "failed"):
            raise HTTPException(409, f"run {run_id} is {row.status}; only interrupted or failed runs restart")
        row.status, row.phase, row.progress, row.error = "queued", "queued", 0.0, None
        row.attempts += 1
        row.started_at = row.finished_at = None
        session.flush()
        out = run_out(row)
    runs.submit(run_id)
    return out
