"""Database tables (SQLAlchemy 2.0). The schema is owned by the Alembic migrations in
api/migrations; a change here needs a new migration there.

Ids are never reused: SQLite tables are AUTOINCREMENT (without it SQLite hands a deleted
row's id to the next row, and caches keyed by id would serve the deleted row's content);
PostgreSQL sequences never go back."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite stores it without the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(timezone.utc) if value is not None and value.tzinfo else value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


NEVER_REUSED = {"sqlite_autoincrement": True}


class ScenarioRow(Base):
    __tablename__ = "scenarios"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    map_name: Mapped[str] = mapped_column(String(200))
    map_text: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(50))
    n_robots: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    slack: Mapped[str] = mapped_column(String(32))  # every robot's task budget: "10%" or a number
    tasks: Mapped[list] = mapped_column(JSON)  # [{id, start, kind, items, option, count}]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # bumped by every write that must be serialised with others on this scenario (run start,
    # delete, rule edit, run claim, deployment): the UPDATE takes the row's lock (api.cache.lock_scenario)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the run whose policies robots follow (null: the naive ones); no foreign key: runs go only
    # with their scenario, and a key each way would make the two tables depend on each other
    deployed_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # deploy every run that succeeds (for automation such as the ROS bridge's replan service)
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # a zone whose live penalty exceeds this raises an alert
    tolerance: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")

    rule_versions: Mapped[list["RuleVersionRow"]] = relationship(
        back_populates="scenario", cascade="all, delete-orphan", order_by="RuleVersionRow.version")
    runs: Mapped[list["RunRow"]] = relationship(back_populates="scenario", cascade="all, delete-orphan",
                                                order_by="RunRow.id")


class RuleVersionRow(Base):
    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("scenario_id", "version"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    rules: Mapped[list] = mapped_column(JSON)  # [{zone, feature, value, weight, sensitivity}]
    min_count: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    scenario: Mapped[ScenarioRow] = relationship(back_populates="rule_versions")


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict] = mapped_column(JSON)  # update_fraction, rounds, episodes, seed
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    phase: Mapped[str] = mapped_column(String(20), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # MitigationResult.as_dict() minus robots
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    owner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the service process that runs it
    # the run deployed when this one started (null: naive policies): its "before"
    base_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(100), default="", server_default="")
    deploy_on_success: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # what changed and why: exact NSE per step, zone and grid cell before and after, scores per round
    explain: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # an imported run (method "import"): what it imported (learner label, entries, robots per
    # kind of entry), and the policy file itself, which the run worker deploys on the fleet
    # (deferred: loaded only when asked for, not with every listing of runs)
    imported: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    import_document: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)

    scenario: Mapped[ScenarioRow] = relationship(back_populates="runs")
    robots: Mapped[list["RunRobotRow"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                       order_by="RunRobotRow.position")


class RunRobotRow(Base):
    """One robot's outcome of a finished run, with its policy and local penalty (npy bytes)."""

    __tablename__ = "run_robots"
    __table_args__ = (UniqueConstraint("run_id", "robot_id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    robot_id: Mapped[str] = mapped_column(String(100))
    blame: Mapped[float] = mapped_column(Float)
    updated: Mapped[bool] = mapped_column(Boolean)
    task_regret: Mapped[float] = mapped_column(Float)
    slack: Mapped[float] = mapped_column(Float)  # its task budget, task-value units
    policy: Mapped[bytes] = mapped_column(LargeBinary)
    # task_cost, lvi_slack, rank, selected, rejected: why it was (not) replanned
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    local_penalty: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    run: Mapped[RunRow] = relationship(back_populates="robots")


class ObservationRow(Base):
    """A state a robot reported, with the joint penalty of the fleet's latest states then: the
    history (kept as MASE_OBSERVATIONS_KEEP says; the monitor never scans it)."""

    __tablename__ = "observations"
    __table_args__ = (Index("ix_observations_scenario_id_id", "scenario_id", "id"),
                      Index("ix_observations_scenario_id_received_at", "scenario_id", "received_at"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    robot_id: Mapped[str] = mapped_column(String(100))
    state: Mapped[list] = mapped_column(JSON)
    state_index: Mapped[int] = mapped_column(Integer)
    joint_penalty: Mapped[float] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RobotTokenRow(Base):
    """A robot's bearer token, bound to one robot of one scenario; only its SHA-256 is kept."""

    __tablename__ = "robot_tokens"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    robot_id: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # null: never


class RobotStateRow(Base):
    """Each robot's latest reported state, with its NSE zone and dynamic value (the monitor's input)."""

    __tablename__ = "robot_states"

    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), primary_key=True)
    robot_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[list] = mapped_column(JSON)
    state_index: Mapped[int] = mapped_column(Integer)
    zone: Mapped[int] = mapped_column(Integer)
    value: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    policy_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # as the robot reported it


class MonitorRow(Base):
    """The live monitor's counters of a scenario, kept as reports arrive (never recounted):
    reports and NSE reports since the last clear, and the count table n_{z,v} of the latest
    states (metareasoner.penalty), from which the joint penalty follows in O(zones x values)."""

    __tablename__ = "monitors"

    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), primary_key=True)
    observations: Mapped[int] = mapped_column(Integer, default=0)
    nse_observations: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[list] = mapped_column(JSON)  # (zones + 1) x values
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # zone name -> id of its alert while the zone's penalty stays above the tolerance
    open_alerts: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class FleetPlanRow(Base):
    """The background job that plans a scenario's fleet (naive policies), like a run."""

    __tablename__ = "fleet_plans"

    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    phase: Mapped[str] = mapped_column(String(20), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    owner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    robots: Mapped[list | None] = mapped_column(JSON, nullable=True)  # per robot: index of its MDP part
    nbytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class FleetPartRow(Base):
    """One distinct task's solved MDP and naive policy (npz bytes) of a planned fleet."""

    __tablename__ = "fleet_parts"
    __table_args__ = (UniqueConstraint("scenario_id", "position"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ChangeRow(Base):
    """What changed, for every service process's caches (and a push channel): polled by id."""

    __tablename__ = "changes"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # no FK: outlives its scenario
    kind: Mapped[str] = mapped_column(String(40))
    ref: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ServiceProcessRow(Base):
    """A live service process (uvicorn worker); jobs it owns are interrupted when it is gone."""

    __tablename__ = "service_processes"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServiceLockRow(Base):
    """Named locks for work done once per database (loading the shipped scenarios)."""

    __tablename__ = "service_locks"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HistoryRow(Base):
    """Who did what to a scenario, and when: run starts, deployments, rule edits, alerts acknowledged."""

    __tablename__ = "history"
    __table_args__ = (Index("ix_history_scenario_id_id", "scenario_id", "id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rule_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


class AlertRow(Base):
    """A zone whose live penalty went above the scenario's tolerance."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_scenario_id_id", "scenario_id", "id"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"))
    zone: Mapped[str] = mapped_column(String(200))
    robots: Mapped[list] = mapped_column(JSON)  # robots standing in the zone when it was raised
    penalty: Mapped[float] = mapped_column(Float)  # the zone's penalty then
    peak: Mapped[float] = mapped_column(Float)  # the highest while it lasted
    tolerance: Mapped[float] = mapped_column(Float)
    rule_version: Mapped[int] = mapped_column(Integer)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # back within tolerance
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)


class EventTicketRow(Base):
    """A short-lived, single-use ticket for the event stream (browsers' EventSource cannot send
    an Authorization header): only its SHA-256 is kept, with who asked for it."""

    __tablename__ = "event_tickets"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    robot_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    token_key: Mapped[str] = mapped_column(String(64))  # the token it stands for (hash): connection limits
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a robot token's id (revocation)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
