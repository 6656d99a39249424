"""What every service process keeps in memory, how it stays right, and the per-scenario lock.

**Key.** Everything is keyed by scenario id, and ids are never reused (api.models), so a
cached entry can only ever describe the scenario it was loaded for. Within an entry, run
arrays are keyed by run id and penalties by rule set version: both never change once written.

**Lifetime.** An entry is loaded from the database on first use and lives until its scenario
is deleted. Its light part (the scenario row, current run, newest rule version, planning
status) is dropped at every change of the scenario and reloaded by the next request (one
query); its heavy part (the planned fleet, run arrays, encoded responses) is dropped only
when the scenario goes, which releases its memory.

**Invalidation.** Every write that changes what an entry holds publishes a change in its own
transaction (`publish`, a row of the `changes` table). The writing process applies it when
the transaction commits; every other process within `poll_interval`, by polling the table
(`ChangeFeed`). `ChangeFeed.subscribe(callback)` hands each change to a callback (the caches
here, the job dispatcher; a push channel can subscribe the same way): callbacks run on the
committing or polling thread, must be quick, and may see a change twice.

**The run lock.** `lock_scenario(session, id)` serialises writes on one scenario (run start
and claim, delete, rule edits) across threads and processes, through the database.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import delete, event, func, or_, select, update
from sqlalchemy.orm import Session

from .db import Database
from .models import ChangeRow, FleetPlanRow, RobotTokenRow, RuleVersionRow, RunRow, ScenarioRow

log = logging.getLogger("mase.cache")

# change kinds; `ref` is the run id, rule set version or token id they are about
SCENARIO_CREATED = "scenario_created"
SCENARIO_DELETED = "scenario_deleted"
RULES_CHANGED = "rules_changed"
RUN_CHANGED = "run_changed"  # a run was created or changed status (not at every progress step)
PLAN_CHANGED = "plan_changed"  # the fleet's planning job changed status
TOKEN_REVOKED = "token_revoked"
OBSERVATIONS_CLEARED = "observations_cleared"
DEPLOYED = "deployed"  # the scenario's deployed run changed (ref: the run, None: naive policies)
SCENARIO_CHANGED = "scenario_changed"  # its settings (tolerance, auto-deploy, name)
RUN_PROGRESS = "run_progress"  # a running run's phase or progress (for the push channel only)
ALERT_CHANGED = "alert_changed"  # an alert raised, cleared or acknowledged (ref: the alert)
HISTORY_ADDED = "history_added"  # a history entry (ref: its id)
#: kinds that change nothing a cache holds (the push channel's alone)
PUSH_ONLY = frozenset({RUN_PROGRESS, ALERT_CHANGED, HISTORY_ADDED})


class NotFound(LookupError):
    """An id that names nothing; the routers turn it into 404."""


class NotReady(Exception):
    """The scenario's fleet is not planned yet: 503 with Retry-After."""

    def __init__(self, scenario_id: int, status: str, progress: float, error: str | None = None) -> None:
        self.scenario_id, self.status, self.progress, self.error = scenario_id, status, progress, error
        what = f"failed: {error}" if status == "failed" else f"{status}, {100 * progress:.0f} % done"
        super().__init__(f"the fleet of scenario {scenario_id} is being planned ({what}); retry later")


def release_memory() -> None:
    """Give freed memory back to the system: a deleted fleet's arrays and encoded responses
    are many blocks of the C heap, which glibc keeps for reuse unless asked to trim it."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to ask
        pass


def lock_scenario(session: Session, scenario_id: int) -> bool:
    """Take scenario `scenario_id`'s lock until the end of the transaction: an UPDATE of its
    row (the row's lock on PostgreSQL; on SQLite the database's write lock, which a deferred
    transaction only takes at its first write, so call this first). False if it does not exist."""
    result = session.execute(update(ScenarioRow).where(ScenarioRow.id == scenario_id)
                             .values(revision=ScenarioRow.revision + 1)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


@dataclass(frozen=True)
class Change:
    id: int
    kind: str
    scenario_id: int | None
    ref: int | None


def publish(session: Session, kind: str, scenario_id: int | None = None, ref: int | None = None) -> None:
    """Record a change in the caller's transaction; it reaches the subscribers once committed."""
    row = ChangeRow(kind=kind, scenario_id=scenario_id, ref=ref)
    session.add(row)
    session.info.setdefault("mase_changes", []).append(row)


class ChangeFeed:
    """The `changes` table, polled every `poll_interval` seconds by a thread of this process.

    Ids are taken in one order and may commit in another (PostgreSQL): an id skipped by a
    poll is asked for again for `gap_timeout` seconds (after that its transaction is taken as
    rolled back)."""

    def __init__(self, database: Database, poll_interval: float = 0.1, gap_timeout: float = 30.0) -> None:
        self.database, self.poll_interval, self.gap_timeout = database, poll_interval, gap_timeout
        self._subscribers: list[Callable[[Change], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gaps: dict[int, float] = {}
        self._local: set[int] = set()  # delivered at commit in this process: skipped by the poll
        with database.sessions() as session:
            self._last = session.scalar(select(func.max(ChangeRow.id))) or 0
        event.listen(database.sessions, "after_commit", self._after_commit)
        event.listen(database.sessions, "after_rollback", self._after_rollback)
        self._thread: threading.Thread | None = None

    def start(self) -> "ChangeFeed":
        self._thread = threading.Thread(target=self._poll_loop, name="change-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        event.remove(self.database.sessions, "after_commit", self._after_commit)
        event.remove(self.database.sessions, "after_rollback", self._after_rollback)

    def subscribe(self, callback: Callable[[Change], None]) -> None:
        self._subscribers.append(callback)

    # -- delivery ---------------------------------------------------------------------------
    def _deliver(self, changes: list[Change]) -> None:
        for change in changes:
            for callback in self._subscribers:
                try:
                    callback(change)
                except Exception:  # noqa: BLE001 - one subscriber must not starve the others
                    log.exception("change subscriber %r failed on %s", callback, change)

    def _after_commit(self, session: Session) -> None:
        rows = session.info.pop("mase_changes", None)
        if not rows:
            return
        changes = [Change(r.id, r.kind, r.scenario_id, r.ref) for r in rows]
        with self._lock:
            self._local.update(c.id for c in changes)
        self._deliver(changes)

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop("mase_changes", None)

    def poll(self) -> int:
        """Deliver the changes committed since the last poll; returns how many."""
        now = time.monotonic()
        with self._lock:
            last, gaps = self._last, [g for g, seen in self._gaps.items() if now - seen < self.gap_timeout]
            self._gaps = {g: self._gaps[g] for g in gaps}
        query = select(ChangeRow.id, ChangeRow.kind, ChangeRow.scenario_id, ChangeRow.ref)
        condition = ChangeRow.id > last if not gaps else or_(ChangeRow.id > last, ChangeRow.id.in_(gaps))
        with self.database.sessions() as session:
            rows = session.execute(query.where(condition).order_by(ChangeRow.id).limit(10_000)).all()
        fresh = []
        with self._lock:
            for change_id, kind, scenario_id, ref in rows:
                self._gaps.pop(change_id, None)
                if change_id > self._last:
                    for missing in range(self._last + 1, change_id):
                        self._gaps.setdefault(missing, now)
                    self._last = change_id
                if change_id in self._local:
                    self._local.discard(change_id)
                else:
                    fresh.append(Change(change_id, kind, scenario_id, ref))
            if len(self._local) > 100_000:  # ids committed here and not yet polled: keep it bounded
                self._local = {i for i in self._local if i > self._last - 10_000}
        self._deliver(fresh)
        return len(fresh)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the database may be away for a while
                log.warning("polling the change feed failed; retrying", exc_info=True)
                self._stop.wait(1.0)

    def prune(self, keep_seconds: float = 600.0) -> int:
        """Forget changes older than `keep_seconds` (every process has long polled them)."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=keep_seconds)
        with self.database.transaction() as session:
            return session.execute(delete(ChangeRow).where(ChangeRow.created_at < cutoff)).rowcount or 0


# -- the per-scenario cache ---------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioInfo:
    """The light part of an entry: one consistent read of the scenario and what hangs off it."""

    id: int
    name: str
    map_name: str
    map_text: str
    domain: str
    n_robots: int
    seed: int
    slack: str  # the task budget spec
    tasks: tuple[dict, ...]
    task_by_id: dict[str, dict]
    current_run_id: int | None  # the deployed run, whose policies robots follow (None: naive)
    rule_version: int
    plan_status: str
    plan_progress: float
    plan_error: str | None
    tolerance: float = 0.0  # a zone above this live penalty raises an alert


@dataclass
class _Heavy:
    """The heavy part of an entry: immutable once built, dropped with the scenario."""

    world: Any = None
    fleet: Any = None  # api.fleets.FleetView
    penalties: dict[int, Any] = field(default_factory=dict)  # rule version -> NSEPenalty
    arrays: dict[tuple[int, str], Any] = field(default_factory=dict)  # (run id, robot) -> RobotArrays
    load_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    scenario_id: int
    robot_id: str
    expires_at: float | None  # epoch seconds


class ScenarioCache:
    """Per-process cache of scenarios, planned fleets, run arrays, encoded responses and robot
    tokens (see the module's docstring). Thread-safe; the `peek_*` methods never touch the
    database (the hot path calls them first, and the loading ones off the event loop on a miss)."""

    MAX_RESPONSE_BYTES = 256 * 2**20
    MAX_ARRAYS_PER_SCENARIO = 4096

    def __init__(self, database: Database) -> None:
        self.database = database
        self._guard = threading.Lock()
        self._info: dict[int, ScenarioInfo] = {}
        self._generation: dict[int, int] = {}
        self._heavy: dict[int, _Heavy] = {}
        self._responses: OrderedDict[tuple, bytes] = OrderedDict()
        self._response_bytes = 0
        self._tokens: dict[str, TokenInfo] = {}
        self._deleted: set[int] = set()

    # -- invalidation (a ChangeFeed subscriber) -----------------------------------------------
    def on_change(self, change: Change) -> None:
        if change.kind in PUSH_ONLY:
            return
        sid = change.scenario_id
        with self._guard:
            if change.kind == TOKEN_REVOKED:
                self._tokens = {h: t for h, t in self._tokens.items() if t.id != change.ref}
            if sid is None:
                return
            self._generation[sid] = self._generation.get(sid, 0) + 1
            self._info.pop(sid, None)
            if change.kind != SCENARIO_DELETED:
                return
            self._deleted.add(sid)  # ids are never reused: a permanent tombstone
            heavy = self._heavy.pop(sid, None)
            for key in [k for k in self._responses if k[0] == sid]:
                self._response_bytes -= len(self._responses.pop(key))
            self._tokens = {h: t for h, t in self._tokens.items() if t.scenario_id != sid}
        if heavy is not None:
            del heavy
            release_memory()

    def clear(self) -> None:
        with self._guard:
            for sid in list(self._generation):
                self._generation[sid] += 1
            self._info.clear(), self._heavy.clear(), self._responses.clear(), self._tokens.clear()
            self._response_bytes = 0

    # -- light part ---------------------------------------------------------------------------
    def peek_info(self, scenario_id: int) -> ScenarioInfo | None:
        return self._info.get(scenario_id)

    def info(self, scenario_id: int) -> ScenarioInfo:
        cached = self._info.get(scenario_id)
        if cached is not None:
            return cached
        with self._guard:
            generation = self._generation.get(scenario_id, 0)
        with self.database.sessions() as session:
            row = session.get(ScenarioRow, scenario_id)
            if row is None:
                raise NotFound(f"no scenario {scenario_id}")
            current = row.deployed_run_id
            version = session.scalar(select(func.max(RuleVersionRow.version))
                                     .where(RuleVersionRow.scenario_id == scenario_id))
            plan = session.get(FleetPlanRow, scenario_id)
            tasks = tuple(dict(t) for t in row.tasks)
            info = ScenarioInfo(
                id=row.id, name=row.name, map_name=row.map_name, map_text=row.map_text, domain=row.domain,
                n_robots=row.n_robots, seed=row.seed, slack=row.slack, tasks=tasks,
                task_by_id={t["id"]: t for t in tasks}, current_run_id=current, rule_version=int(version or 1),
                plan_status=plan.status if plan else "queued", plan_progress=plan.progress if plan else 0.0,
                plan_error=plan.error if plan else None, tolerance=float(row.tolerance or 0.0))
        with self._guard:
            if self._generation.get(scenario_id, 0) == generation:  # no change meanwhile
                self._info[scenario_id] = info
        return info

    # -- heavy part ---------------------------------------------------------------------------
    def _heavy_of(self, scenario_id: int) -> _Heavy:
        with self._guard:
            heavy = self._heavy.get(scenario_id)
            if heavy is None:
                heavy = _Heavy()
                if scenario_id not in self._deleted:  # a request still holding a deleted scenario's info
                    self._heavy[scenario_id] = heavy
            return heavy

    def world(self, info: ScenarioInfo):
        from .fleets import world_of

        heavy = self._heavy_of(info.id)
        if heavy.world is None:
            heavy.world = world_of(info.map_text, info.map_name, check_size=False)
        return heavy.world

    def peek_fleet(self, info: ScenarioInfo):
        heavy = self._heavy.get(info.id)
        return heavy.fleet if heavy is not None else None

    def fleet(self, info: ScenarioInfo):
        """The planned fleet (loaded from the database once); NotReady while it is planned."""
        heavy = self._heavy_of(info.id)
        if heavy.fleet is not None:
            return heavy.fleet
        if info.plan_status != "succeeded":
            raise NotReady(info.id, info.plan_status, info.plan_progress, info.plan_error)
        from .fleets import load_fleet

        with heavy.load_lock:  # one load per process, however many requests wait for it
            if heavy.fleet is None:
                fleet = load_fleet(self.database, info, self.world(info))
                if fleet is None:  # planned again meanwhile
                    raise NotReady(info.id, "queued", 0.0)
                heavy.fleet = fleet
        return heavy.fleet

    def penalty(self, info: ScenarioInfo, version: int | None = None):
        """The NSE penalty of a rule set version (default: the newest)."""
        from .fleets import penalty_of

        version = info.rule_version if version is None else version
        heavy = self._heavy_of(info.id)
        cached = heavy.penalties.get(version)
        if cached is None:
            with self.database.sessions() as session:
                row = session.scalar(select(RuleVersionRow).where(RuleVersionRow.scenario_id == info.id,
                                                                  RuleVersionRow.version == version))
                if row is None:
                    raise NotFound(f"no rule set version {version} of scenario {info.id}")
                cached = penalty_of(self.world(info), row)
            heavy.penalties[version] = cached
        return cached

    def peek_penalty(self, info: ScenarioInfo):
        heavy = self._heavy.get(info.id)
        return heavy.penalties.get(info.rule_version) if heavy is not None else None

    def peek_arrays(self, info: ScenarioInfo, robot_id: str):
        """(found, arrays): the robot's arrays of the current run, if they are in memory."""
        if info.current_run_id is None:
            return True, None
        heavy = self._heavy.get(info.id)
        if heavy is None:
            return False, None
        key = (info.current_run_id, robot_id)
        if key in heavy.arrays:
            return True, heavy.arrays[key]
        return False, None

    def arrays(self, info: ScenarioInfo, robot_id: str):
        """The robot's policy and local penalty of the current run (None: no run yet)."""
        if info.current_run_id is None:
            return None
        from .fleets import load_run_arrays

        heavy = self._heavy_of(info.id)
        key = (info.current_run_id, robot_id)
        if key not in heavy.arrays:
            arrays = load_run_arrays(self.database, info.current_run_id, robot_id)
            if len(heavy.arrays) >= self.MAX_ARRAYS_PER_SCENARIO:
                heavy.arrays.clear()
            # arrays of older runs are not asked for again
            for old in [k for k in heavy.arrays if k[0] != info.current_run_id]:
                del heavy.arrays[old]
            heavy.arrays[key] = arrays
        return heavy.arrays[key]

    # -- encoded responses ----------------------------------------------------------------------
    def response(self, key: tuple) -> bytes | None:
        """A cached response body; key[0] is the scenario id (dropped with it)."""
        with self._guard:
            body = self._responses.get(key)
            if body is not None:
                self._responses.move_to_end(key)
            return body

    def keep_response(self, key: tuple, body: bytes) -> None:
        if len(body) > self.MAX_RESPONSE_BYTES // 4:
            return
        with self._guard:
            if key[0] not in self._heavy:  # deleted meanwhile (or never loaded): do not resurrect
                return
            old = self._responses.pop(key, None)
            self._response_bytes += len(body) - (len(old) if old else 0)
            self._responses[key] = body
            while self._response_bytes > self.MAX_RESPONSE_BYTES:
                _, dropped = self._responses.popitem(last=False)
                self._response_bytes -= len(dropped)

    # -- robot tokens ---------------------------------------------------------------------------
    def peek_token(self, digest: str) -> TokenInfo | None:
        return self._tokens.get(digest)

    def token(self, digest: str) -> TokenInfo | None:
        cached = self._tokens.get(digest)
        if cached is not None:
            return cached
        with self.database.sessions() as session:
            row = session.scalar(select(RobotTokenRow).where(RobotTokenRow.token_hash == digest))
            if row is None:
                return None
            info = TokenInfo(row.id, row.scenario_id, row.robot_id,
                             row.expires_at.timestamp() if row.expires_at is not None else None)
        with self._guard:
            self._tokens[digest] = info
        return info

    def memory(self) -> dict[str, int]:
        """Bytes held by planned fleets and cached responses (for the memory measurement)."""
        fleets = sum(h.fleet.nbytes for h in list(self._heavy.values()) if h.fleet is not None)
        return {"fleets": int(fleets), "responses": int(self._response_bytes), "scenarios": len(self._heavy)}


__all__ = ["Change", "ChangeFeed", "NotFound", "NotReady", "ScenarioCache", "ScenarioInfo", "TokenInfo",
           "lock_scenario", "publish"]
