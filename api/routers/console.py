"""What the operator's console needs beyond runs and rules: the scenario's history and its
export, alerts, what a run changed and why, and the methods a run accepts."""
from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from metareasoner.mitigation import METHODS

from .. import repository
from ..cache import ALERT_CHANGED, NotFound, ScenarioCache, publish
from ..db import Database
from ..deps import get_cache, get_db, get_operator
from ..errors import COMMON, CONFLICT, NOT_FOUND, NOT_READY
from ..fleets import load_run_policies, most_likely_path
from ..models import AlertRow, HistoryRow, RunRow
from ..schemas import (AlertOut, CellHeat, Digits, HistoryOut, MethodOut, RobotExplained, RoundExplained,
                       RunExplained, RunId, ScenarioId)
from ..security import Principal
from .robots import _fleet, scenario_info

router = APIRouter(prefix="/api/v1", tags=["console"])

METHOD_NOTES = {
    "naive": "No mitigation: every robot keeps its task-optimal policy",
    "recon": "RECON: counterfactual blame over Monte Carlo episodes; the most blamed robots replan (LVI)",
    "gen-recon": "Generalised RECON: blame learnt by a regressor, extended to unvisited states",
    "gen-recon-cf": "Generalised RECON with counterfactual features (the default)",
    "difference-reward": "Difference reward: the NSE penalty with and without the robot",
    "wlu": "Wonderful life utility: the robot's removal as its counterfactual",
    "dpp": "D++: difference rewards with added copies of the robot",
    "considerate": "Considerate reward: each robot weighs the others' NSE costs (alpha1 selfish, alpha2 care)",
    "shapley": "Shapley values of the robots' coalitions (sampled)",
    "exchange": "Exchange values from the NSE model (needs two robots)",
    "exchange-logs": "Exchange values estimated from logs alone: robots sharing a zone at a step form a group "
                     "(needs two robots)",
    "best-response": "Exact best response: each selected robot minimises the fleet's exact J_N within its budget",
}
MIN_ROBOTS = {"exchange": 2, "exchange-logs": 2}
UNITS = {"penalty": "penalty units: expected NSE penalty per episode (the rules' weights)",
         "blame": "penalty units per episode", "task": "steps (every action costs 1)",
         "rate": "fraction of steps in an NSE state", "time": "seconds"}


def history_out(row: HistoryRow) -> HistoryOut:
    return HistoryOut(id=row.id, scenario_id=row.scenario_id, kind=row.kind, actor=row.actor, at=row.at,
                      run_id=row.run_id, rule_version=row.rule_version, detail=row.detail or {})


def alert_out(row: AlertRow) -> AlertOut:
    return AlertOut(id=row.id, scenario_id=row.scenario_id, zone=row.zone, robots=list(row.robots),
                    penalty=row.penalty, peak=row.peak, tolerance=row.tolerance, rule_version=row.rule_version,
                    raised_at=row.raised_at, cleared_at=row.cleared_at, acknowledged_at=row.acknowledged_at,
                    acknowledged_by=row.acknowledged_by)


@router.get("/methods", response_model=list[MethodOut], responses=COMMON, summary="Every mitigation method a run accepts")
async def list_methods(_: Principal = Depends(get_operator)):
    return [MethodOut(name=m, description=METHOD_NOTES.get(m, ""), min_robots=MIN_ROBOTS.get(m, 1)) for m in METHODS]


# -- history and export -------------------------------------------------------------------------
@router.get("/scenarios/{scenario_id}/history", response_model=list[HistoryOut], responses={**COMMON, **NOT_FOUND},
            summary="Who did what to the scenario and when (run starts, deployments, rule edits...), oldest first")
def get_history(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        return [history_out(r) for r in session.scalars(select(HistoryRow).where(HistoryRow.scenario_id == scenario_id)
                                                        .order_by(HistoryRow.id))]


RUN_COLUMNS = ("id", "method", "learner", "status", "created_by", "created_at", "started_at", "finished_at",
               "rule_version", "base_run_id", "deployed", "deploy_on_success", "update_fraction", "rounds", "episodes",
               "seed", "nse_before", "nse_after", "nse_state_rate_before", "nse_state_rate_after", "updated", "error")
HISTORY_COLUMNS = ("id", "at", "kind", "actor", "run_id", "rule_version", "detail")


def _run_record(run, deployed_run_id) -> dict:
    summary = run.summary or {}
    params = run.params or {}
    return {"id": run.id, "method": run.method, "learner": (run.imported or {}).get("learner"), "status": run.status,
            "created_by": run.created_by or "",
            "created_at": run.created_at.isoformat(), "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            "rule_version": run.rule_version, "base_run_id": run.base_run_id, "deployed": run.id == deployed_run_id,
            "deploy_on_success": bool(run.deploy_on_success), **{k: params.get(k) for k in
                                                                  ("update_fraction", "rounds", "episodes", "seed")},
            **{k: summary.get(k) for k in ("nse_before", "nse_after", "nse_state_rate_before", "nse_state_rate_after")},
            "updated": " ".join(summary.get("updated", [])), "error": run.error}


@router.get("/scenarios/{scenario_id}/export/{name}", responses={
    **COMMON, **NOT_FOUND, 200: {"content": {"text/csv": {}, "application/json": {}},
                                 "description": "The runs or the history, as a file"}},
    summary="Export the scenario's runs or history as CSV or JSON (runs.csv, runs.json, history.csv, history.json)")
def export(scenario_id: ScenarioId, name: Literal["runs.csv", "runs.json", "history.csv", "history.json"],
           db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    what, kind = name.split(".")
    with db.sessions() as session:
        scenario = repository.scenario(session, scenario_id)
        if what == "runs":
            records = [_run_record(r, scenario.deployed_run_id) for r in scenario.runs]
            columns = RUN_COLUMNS
        else:
            records = [history_out(r).model_dump(mode="json") for r in session.scalars(
                select(HistoryRow).where(HistoryRow.scenario_id == scenario_id).order_by(HistoryRow.id))]
            columns = HISTORY_COLUMNS
    headers = {"Content-Disposition": f'attachment; filename="scenario-{scenario_id}-{name}"'}
    if kind == "json":
        return Response(json.dumps(records, allow_nan=False, indent=1).encode(), media_type="application/json",
                        headers=headers)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else
                         ("" if v is None else v) for k, v in record.items()})
    return Response(buffer.getvalue().encode(), media_type="text/csv; charset=utf-8", headers=headers)


# -- alerts ----------------------------------------------------------------------------------
@router.get("/scenarios/{scenario_id}/alerts", response_model=list[AlertOut], responses={**COMMON, **NOT_FOUND},
            summary="Alerts of the scenario, newest first: open ones (not acknowledged) or all")
def list_alerts(scenario_id: ScenarioId, state: Literal["open", "all"] = Query("open",
                description="open: not yet acknowledged; all: the history too"),
                limit: Annotated[int, Digits, Query(ge=1, le=10_000, description="Alerts per answer, newest first")] = 200,
                db: Database = Depends(get_db),
                _: Principal = Depends(get_operator)):
    with db.sessions() as session:
        repository.scenario(session, scenario_id)
        query = select(AlertRow).where(AlertRow.scenario_id == scenario_id)
        if state == "open":
            query = query.where(AlertRow.acknowledged_at.is_(None))
        return [alert_out(r) for r in session.scalars(query.order_by(AlertRow.id.desc()).limit(limit))]


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut, responses={**COMMON, **NOT_FOUND},
             summary="Acknowledge an alert (it leaves the open list; the history keeps it)")
def acknowledge(alert_id: RunId, db: Database = Depends(get_db), principal: Principal = Depends(get_operator)):
    from datetime import datetime, timezone

    with db.transaction() as session:
        row = session.get(AlertRow, alert_id)
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        if row.acknowledged_at is None:
            row.acknowledged_at, row.acknowledged_by = datetime.now(timezone.utc), principal.actor
            session.flush()
            publish(session, ALERT_CHANGED, row.scenario_id, row.id)
            repository.record(session, row.scenario_id, "alert_acknowledged", principal.actor, alert_id=row.id,
                              zone=row.zone, penalty=row.penalty, peak=row.peak)
        return alert_out(row)


# -- what a run changed and why ------------------------------------------------------------------
def reason(robot, explained_rounds: list[dict], k: int, position: int) -> tuple[str, list[int]]:
    """Why a robot was or was not replanned, from its rounds (words), and the rounds in which
    it tied with the cut-off but was left out."""
    tied = [r["round"] for r in explained_rounds if robot.robot_id in r["tied_out"]]
    accepted = [r["round"] for r in explained_rounds if robot.robot_id in r["accepted"]]
    refused = [r["round"] for r in explained_rounds if robot.robot_id in r["rejected"]]
    selected = [r for r in explained_rounds if robot.robot_id in r["selected"]]
    rank = (robot.detail or {}).get("rank")
    if robot.updated:
        first = next((r for r in explained_rounds if robot.robot_id in r["accepted"]), None)
        where = f" in round {first['round']}" if first else ""
        score = f" (score {first['scores'][position]:.4g} >= cut-off {first['cutoff']:.4g})" if first else ""
        text = f"replanned{where}: rank {rank}{score}; the acceptance step kept it because the exact J_N fell"
    elif refused:
        text = (f"selected in round{'s' if len(refused) > 1 else ''} {', '.join(map(str, refused))} and replanned, "
                "but the acceptance step refused the new policy: the exact J_N would not fall")
    elif selected:
        text = "selected, but its replan was not among the best improvements kept this round"
    elif tied:
        text = (f"tied with the cut-off in round {tied[0]} but left out: the {k} selected robots came first in "
                "robot order (a stable sort of equal scores)")
    elif robot.blame > 0:
        cut = next((r["cutoff"] for r in explained_rounds if r["cutoff"] is not None), None)
        text = (f"rank {rank}: below the cut-off{f' {cut:.4g}' if cut is not None else ''}; only the {k} most "
                "blamed robots replan each round")
    elif not explained_rounds:
        text = "no round was run (nothing to mitigate, or the method replans nobody)"
    else:
        text = "not blamed (score 0 in every round): it caused no NSE the method could see"
    return text, tied


IMPORTED_FROM = {"robot": "the file's entry for its robot id", "task": "the file's entry for its task",
                 "own": "no entry of the file (neither its id nor its task): its task-optimal policy"}


def import_reason(robot) -> str:
    """Why an imported run's robot follows what it follows (nothing is replanned by an import)."""
    where = IMPORTED_FROM.get((robot.detail or {}).get("imported_from"), "the imported file")
    change = "a policy other than" if robot.updated else "the same policy as"
    budget = " (above its budget)" if robot.task_regret > robot.slack * (1 + 1e-9) + 1e-9 else ""
    return (f"imported: follows {where}, {change} the one deployed when the run started; "
            f"task regret {robot.task_regret:.4g}{budget}")


def explain(db: Database, cache: ScenarioCache, info, fleet, run: RunRow) -> RunExplained:
    data = run.explain
    world = cache.world(info)
    after = load_run_policies(db, run.id)
    before = load_run_policies(db, run.base_run_id) if run.base_run_id is not None else {}
    explained_rounds = data["rounds"]
    robots = []
    for position, robot in enumerate(run.robots):
        planned = fleet.robot(robot.robot_id)
        old = before.get(robot.robot_id, planned.policy)
        new = after.get(robot.robot_id, planned.policy)
        text, tied = reason(robot, explained_rounds, data["k"], position) if run.imported is None else \
            (import_reason(robot), [])
        detail = robot.detail or {}
        robots.append(RobotExplained(
            id=robot.robot_id, updated=robot.updated, blame=robot.blame, rank=detail.get("rank"),
            selected=detail.get("selected"), rejected=detail.get("rejected"), tied_out=tied,
            task_regret=robot.task_regret, slack=robot.slack, reason=text,
            path_before=most_likely_path(planned.mdp, old, world.horizon),
            path_after=most_likely_path(planned.mdp, new, world.horizon)))
    cells = [CellHeat(x=x, y=y, zone=z, before=b, after=a) for (x, y), z, b, a in
             zip(data["cells"], data["cell_zone"], data["heat_before"], data["heat_after"])]
    return RunExplained(run_id=run.id, scenario_id=run.scenario_id, base_run_id=run.base_run_id, k=data["k"],
                        units=UNITS, per_step_before=data["per_step_before"], per_step_after=data["per_step_after"],
                        per_zone_before=data["per_zone_before"], per_zone_after=data["per_zone_after"], cells=cells,
                        rounds=[RoundExplained(**r) for r in explained_rounds], robots=robots)


@router.get("/runs/{run_id}/explain", response_model=RunExplained, responses={**COMMON, **NOT_FOUND, **CONFLICT,
                                                                            **NOT_READY},
            summary="What a succeeded run changed and why: exact NSE per step, zone and cell before and after, "
                    "paths before and after, why each robot was or was not replanned")
async def get_explain(run_id: RunId, db: Database = Depends(get_db), cache: ScenarioCache = Depends(get_cache),
                      _: Principal = Depends(get_operator)):
    def load():
        with db.sessions() as session:
            run = repository.run(session, run_id)
            run.robots  # noqa: B018 - loaded now, used after the session
            return run

    run = await run_in_threadpool(load)
    if run.status != "succeeded":
        raise HTTPException(409, f"run {run_id} is {run.status}; only a succeeded run is explained")
    if run.explain is None:
        raise HTTPException(409, f"run {run_id} finished before runs recorded their explanation; run it again")
    info = await scenario_info(cache, run.scenario_id)
    fleet = await _fleet(cache, info)
    return await run_in_threadpool(explain, db, cache, info, fleet, run)


__all__ = ["METHOD_NOTES", "alert_out", "history_out", "router"]
