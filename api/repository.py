"""Queries shared by the routers (no HTTP here beyond NotFound, which becomes 404)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .cache import ALERT_CHANGED, DEPLOYED, HISTORY_ADDED, NotFound, publish
from .models import AlertRow, HistoryRow, MonitorRow, ObservationRow, RobotStateRow, RuleVersionRow, RunRow, ScenarioRow
from .settings import Retention


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
    """The deployed run: its policies are the ones robots follow (None: the naive ones)."""
    return session.scalar(select(ScenarioRow.deployed_run_id).where(ScenarioRow.id == scenario_id))


# -- history and deployments -------------------------------------------------------------------
def record(session: Session, scenario_id: int, kind: str, actor: str, run_id: int | None = None,
           rule_version: int | None = None, **detail) -> HistoryRow:
    """Add an entry to the scenario's history (in the caller's transaction)."""
    row = HistoryRow(scenario_id=scenario_id, kind=kind, actor=actor[:100], at=datetime.now(timezone.utc),
                     run_id=run_id, rule_version=rule_version, detail=detail)
    session.add(row)
    session.flush()
    publish(session, HISTORY_ADDED, scenario_id, row.id)
    return row


def deploy(session: Session, scenario_id: int, run_id: int | None, actor: str, automatic: bool = False) -> int | None:
    """Make robots follow `run_id` (None: their naive policies); the caller holds the scenario's
    lock and has checked the run. Returns the run deployed before."""
    row = scenario(session, scenario_id)
    previous = row.deployed_run_id
    row.deployed_run_id = run_id
    session.flush()
    if run_id is None:
        kind = "undeployed"
    elif previous is not None and run_id < previous:
        kind = "rolled_back"
    else:
        kind = "deployed"
    record(session, scenario_id, kind, actor, run_id=run_id, previous_run_id=previous, automatic=automatic)
    publish(session, DEPLOYED, scenario_id, run_id)
    return previous


def active_run(session: Session, scenario_id: int) -> RunRow | None:
    return session.scalar(select(RunRow).where(RunRow.scenario_id == scenario_id,
                                               RunRow.status.in_(("queued", "running")))
                          .order_by(RunRow.id).limit(1))


# -- the live monitor: kept incrementally, never recounted from the history ----------------
def count_table(monitor: MonitorRow, shape: tuple[int, int]) -> np.ndarray:
    counts = np.asarray(monitor.counts, dtype=np.int64) if monitor.counts else np.zeros(shape, dtype=np.int64)
    if counts.shape != shape:  # a map can not change; this is a damaged row: start afresh
        counts = np.zeros(shape, dtype=np.int64)
    return counts


def record_state(session: Session, scenario_id: int, robot_id: str, state: list[int], index: int, zone: int,
                 value: int, penalty, shape: tuple[int, int], tolerance: float = 0.0, rule_version: int = 1,
                 policy_run_id: int | None = None) -> float:
    """Store a robot's report: its latest state, the monitor's counters, the history row, and
    alerts for zones whose penalty went above `tolerance` (or came back within it).
    Returns the joint penalty of the fleet's latest states. O(zones x values), whatever the
    history's length; the monitor row's lock serialises reports of one scenario."""
    locked = session.execute(update(MonitorRow).where(MonitorRow.scenario_id == scenario_id)
                             .values(observations=MonitorRow.observations + 1)
                             .execution_options(synchronize_session=False))
    if not locked.rowcount:
        raise NotFound(f"no scenario {scenario_id}")
    monitor = session.get(MonitorRow, scenario_id)
    counts = count_table(monitor, shape)
    latest = session.get(RobotStateRow, (scenario_id, robot_id))
    now = datetime.now(timezone.utc)
    if latest is None:
        session.add(RobotStateRow(scenario_id=scenario_id, robot_id=robot_id, state=state, state_index=index,
                                  zone=zone, value=value, received_at=now, policy_run_id=policy_run_id))
    else:
        if 0 <= latest.zone < shape[0] and 0 <= latest.value < shape[1]:
            counts[latest.zone, latest.value] -= 1
        latest.state, latest.state_index, latest.zone, latest.value, latest.received_at = state, index, zone, value, now
        latest.policy_run_id = policy_run_id
    counts[zone, value] += 1
    joint = float(penalty.from_counts(counts[None])[0])
    zones = zone_penalties(penalty, counts)[1]
    monitor.counts = counts.tolist()
    if joint > 0:
        monitor.nse_observations = monitor.nse_observations + 1
    session.add(ObservationRow(scenario_id=scenario_id, robot_id=robot_id, state=state, state_index=index,
                               joint_penalty=joint, received_at=now))
    _update_alerts(session, scenario_id, monitor, penalty.zone_names, zones, tolerance, rule_version, now)
    return joint


def _update_alerts(session: Session, scenario_id: int, monitor: MonitorRow, zone_names, zones: np.ndarray,
                   tolerance: float, rule_version: int, now: datetime) -> None:
    """Raise an alert for each zone above the tolerance that has none open; clear those back
    within it. Only a change writes (the open alerts are kept on the monitor row)."""
    open_alerts = {name: list(v) for name, v in (monitor.open_alerts or {}).items()}  # zone -> [alert id, peak]
    changed = False
    for k, name in enumerate(zone_names):
        level = float(zones[k + 1])
        if level > tolerance:
            if name not in open_alerts:
                session.flush()  # this report's state is among the robots in the zone
                robots = sorted(session.scalars(select(RobotStateRow.robot_id).where(
                    RobotStateRow.scenario_id == scenario_id, RobotStateRow.zone == k + 1)))
                alert = AlertRow(scenario_id=scenario_id, zone=name, robots=robots, penalty=level, peak=level,
                                 tolerance=tolerance, rule_version=rule_version, raised_at=now)
                session.add(alert)
                session.flush()
                open_alerts[name] = [alert.id, level]
                publish(session, ALERT_CHANGED, scenario_id, alert.id)
                changed = True
            elif level > open_alerts[name][1]:
                session.execute(update(AlertRow).where(AlertRow.id == open_alerts[name][0]).values(peak=level))
                open_alerts[name][1] = level
                publish(session, ALERT_CHANGED, scenario_id, open_alerts[name][0])
                changed = True
        elif name in open_alerts:
            alert_id = open_alerts.pop(name)[0]
            session.execute(update(AlertRow).where(AlertRow.id == alert_id).values(cleared_at=now))
            publish(session, ALERT_CHANGED, scenario_id, alert_id)
            changed = True
    if changed:
        monitor.open_alerts = open_alerts


def zone_penalties(penalty, counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Joint penalty and penalty per zone (index 0: no zone) of a count table."""
    per_term = penalty.term_values(counts[None][:, penalty.term_zone, penalty.term_value])
    return float(per_term.sum()), (per_term @ penalty._zone_of_term)[0]  # noqa: SLF001 - the library's own map


def clear_observations(session: Session, scenario_id: int) -> int:
    now = datetime.now(timezone.utc)
    locked = session.execute(update(MonitorRow).where(MonitorRow.scenario_id == scenario_id)
                             .values(observations=0, nse_observations=0, counts=[], since=now, open_alerts=None)
                             .execution_options(synchronize_session=False))
    if not locked.rowcount:
        raise NotFound(f"no scenario {scenario_id}")
    cleared = list(session.scalars(select(AlertRow.id).where(AlertRow.scenario_id == scenario_id,
                                                            AlertRow.cleared_at.is_(None))))
    if cleared:  # no state is left in any zone
        session.execute(update(AlertRow).where(AlertRow.id.in_(cleared)).values(cleared_at=now))
        for alert_id in cleared:
            publish(session, ALERT_CHANGED, scenario_id, alert_id)
    session.execute(delete(RobotStateRow).where(RobotStateRow.scenario_id == scenario_id))
    return session.execute(delete(ObservationRow).where(ObservationRow.scenario_id == scenario_id)).rowcount or 0


def prune_observations(database, keep: Retention, batch: int = 20_000) -> int:
    """Delete history rows beyond the retention (the monitor's counters are not affected)."""
    if keep.count is None and keep.seconds is None:
        return 0
    deleted = 0
    with database.sessions() as session:
        scenario_ids = list(session.scalars(select(ScenarioRow.id)))
    for scenario_id in scenario_ids:
        while True:
            with database.transaction() as session:
                if keep.count is not None:
                    cutoff = session.scalar(select(ObservationRow.id).where(ObservationRow.scenario_id == scenario_id)
                                            .order_by(ObservationRow.id.desc()).offset(keep.count).limit(1))
                    if cutoff is None:
                        break
                    doomed = select(ObservationRow.id).where(ObservationRow.scenario_id == scenario_id,
                                                             ObservationRow.id <= cutoff)
                else:
                    oldest = datetime.now(timezone.utc) - timedelta(seconds=keep.seconds)
                    doomed = select(ObservationRow.id).where(ObservationRow.scenario_id == scenario_id,
                                                             ObservationRow.received_at < oldest)
                ids = list(session.scalars(doomed.order_by(ObservationRow.id).limit(batch)))
                if not ids:
                    break
                deleted += session.execute(delete(ObservationRow).where(ObservationRow.id.in_(ids))).rowcount or 0
            if len(ids) < batch:
                break
    return deleted
