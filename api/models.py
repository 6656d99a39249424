"""Database tables (SQLAlchemy 2.0). The schema is owned by the Alembic migrations in
api/migrations; a change here needs a new migration there."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text,
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


class ScenarioRow(Base):
    __tablename__ = "scenarios"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    map_name: Mapped[str] = mapped_column(String(200))
    map_text: Mapped[str] = mapped_column(Text)
    domain: Mapped[str] = mapped_column(String(50))
    n_robots: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    slack: Mapped[float] = mapped_column(Float)
    tasks: Mapped[list] = mapped_column(JSON)  # [{id, start, kind, items, option, count}]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    rule_versions: Mapped[list["RuleVersionRow"]] = relationship(
        back_populates="scenario", cascade="all, delete-orphan", order_by="RuleVersionRow.version")
    runs: Mapped[list["RunRow"]] = relationship(back_populates="scenario", cascade="all, delete-orphan",
                                                order_by="RunRow.id")


class RuleVersionRow(Base):
    __tablename__ = "rule_versions"
    __table_args__ = (UniqueConstraint("scenario_id", "version"),)

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

    scenario: Mapped[ScenarioRow] = relationship(back_populates="runs")
    robots: Mapped[list["RunRobotRow"]] = relationship(back_populates="run", cascade="all, delete-orphan",
                                                       order_by="RunRobotRow.position")


class RunRobotRow(Base):
    """One robot's outcome of a finished run, with its policy and local penalty (npy bytes)."""

    __tablename__ = "run_robots"
    __table_args__ = (UniqueConstraint("run_id", "robot_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    robot_id: Mapped[str] = mapped_column(String(100))
    blame: Mapped[float] = mapped_column(Float)
    updated: Mapped[bool] = mapped_column(Boolean)
    task_regret: Mapped[float] = mapped_column(Float)
    slack: Mapped[float] = mapped_column(Float)
    policy: Mapped[bytes] = mapped_column(LargeBinary)
    local_penalty: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    run: Mapped[RunRow] = relationship(back_populates="robots")


class ObservationRow(Base):
    """A state a robot reported, with the joint penalty of the fleet's latest states then."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    robot_id: Mapped[str] = mapped_column(String(100), index=True)
    state: Mapped[list] = mapped_column(JSON)
    state_index: Mapped[int] = mapped_column(Integer)
    joint_penalty: Mapped[float] = mapped_column(Float)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RobotTokenRow(Base):
    """A robot's bearer token, bound to one robot of one scenario; only its SHA-256 is kept."""

    __tablename__ = "robot_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scenario_id: Mapped[int] = mapped_column(ForeignKey("scenarios.id", ondelete="CASCADE"), index=True)
    robot_id: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
