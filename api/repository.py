"""Queries shared by the routers (no HTTP here beyond NotFound, which becomes 404)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .fleets import NotFound
from .models import ObservationRow, RuleVersionRow, RunRow, ScenarioRow


def scenario(session: Session, scenario_id: int) -> ScenarioRow:
    row = session.get(ScenarioRow, scenario_id)
    if row is None:
        raise NotFound(f"no scenario {scenario_id}")
    return row


def run(session: Session, run_id: int) -> RunRow:
    row = session.get(RunRow, run_id)
    if row is None:
        raise NotFound(f"no run {run_id}")
    return row


def rule_version(session: Session, scenario_id: int, version: int | None = None) -> RuleVersionRow:
    query = select(RuleVersionRow).where(RuleVersionRow.scenario_id == scenario_id)
    if version is None:
        row = session.scalar(query.order_by(RuleVersionRow.version.desc()).limit(1))
    else:
        row = session.scalar(query.where(RuleVersionRow.version == version))
    if row is None:
        raise NotFound(f"no rule set version {version} of scenario {scenario_id}")
    return row


def current_run_id(session: Session, scenario_id: int) -> int | None:
    """The newest succeeded run: its policies are the ones robots follow."""
    return session.scalar(select(func.max(RunRow.id)).where(RunRow.scenario_id == scenario_id,
                                                            RunRow.status == "succeeded"))


def active_run(session: Session, scenario_id: int) -> RunRow | None:
    return session.scalar(select(RunRow).where(RunRow.scenario_id == scenario_id,
                                               RunRow.status.in_(("queued", "running")))
                          .order_by(RunRow.id).limit(1))


def latest_observations(session: Session, scenario_id: int) -> list[ObservationRow]:
    newest = (select(func.max(ObservationRow.id)).where(ObservationRow.scenario_id == scenario_id)
              .group_by(ObservationRow.robot_id))
    return list(session.scalars(select(ObservationRow).where(ObservationRow.id.in_(newest))
                                .order_by(ObservationRow.robot_id)))


def observation_counts(session: Session, scenario_id: int) -> tuple[int, int]:
    """(all reports, reports at which the joint state was an NSE state)."""
    total = session.scalar(select(func.count()).where(ObservationRow.scenario_id == scenario_id)) or 0
    nse = session.scalar(select(func.count()).where(ObservationRow.scenario_id == scenario_id,
                                                    ObservationRow.joint_penalty > 0)) or 0
    return int(total), int(nse)
