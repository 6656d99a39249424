"""The push channel: Server-Sent Events per scenario (GET /api/v1/scenarios/{id}/events).

**Where events come from.** Every process has one `Broker`. It subscribes to the change feed
(api.cache: runs, plans, deployments, rules, alerts, history, deletions, from whichever
process made them) and, for scenarios somebody is watching, looks at the monitor's counter
every `interval` seconds: when robots reported, it reads their latest states (one query) and
pushes those that changed, and the monitor. So events reach every client of every worker,
whichever worker the change happened in. Each event is built once (one database read), by
the broker's thread, and handed to each client's queue.

**Order.** Events of a scenario get increasing ids (`id:` lines) in the order the broker
built them; a client first gets a `snapshot` (the current state, read by the broker thread
when it joins), then every event built after it, in order.

**Bounds.** Each client has a queue of `queue_size` events. A client whose queue is full
(it reads slower than events come), or whose socket has not taken an event within
`send_timeout` seconds, is dropped: its connection is closed, nobody else waits for it. A
stream's socket gets a fixed kernel send buffer of `send_buffer` bytes, so a client that stops
reading pins that much (not the several MB autotuning allows) and is found out after the same
number of events on every machine. At
most `per_token` streams per token and process (429 beyond).

**Who sees what.** Operators: everything. Robot tokens: only their own scenario (403
otherwise), and of it the snapshot's scenario state, deployments, rule versions, planning
and their own robot's reports.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from starlette.responses import StreamingResponse

from .cache import (ALERT_CHANGED, DEPLOYED, HISTORY_ADDED, OBSERVATIONS_CLEARED, PLAN_CHANGED, RULES_CHANGED,
                    RUN_CHANGED, RUN_PROGRESS, SCENARIO_CHANGED, SCENARIO_DELETED, TOKEN_REVOKED, Change, NotFound)
from .models import AlertRow, HistoryRow, MonitorRow, RobotStateRow, RunRow

log = logging.getLogger("mase.events")
#: what a robot token's stream carries
ROBOT_KINDS = frozenset({"snapshot", "scenario", "deployment", "rules", "plan", "robots", "deleted"})
HISTORY_IN_SNAPSHOT = 50


def _encode(value) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_default)


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot encode {type(value).__name__}")


def sse(event_id: int, kind: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n".encode()


@dataclass
class Event:
    id: int
    kind: str
    data: dict
    text: str  # the JSON of data, encoded once for every client


class Subscriber:
    """One client's stream: a bounded queue filled on the event loop's thread."""

    def __init__(self, scenario_id: int, principal, queue_size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.scenario_id, self.principal, self.loop = scenario_id, principal, loop
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.closed = asyncio.Event()
        self.reason: str | None = None  # why the stream ends
        self.dropped = False  # ended because the client was too slow
        self.ready = False  # its snapshot was queued

    @property
    def robot_id(self) -> str | None:
        return self.principal.robot_id if self.principal.role == "robot" else None

    def view(self, event: Event) -> bytes | None:
        """The event as this client may see it (None: not for it)."""
        if self.robot_id is None:
            return sse(event.id, event.kind, event.text)
        if event.kind not in ROBOT_KINDS:
            return None
        if event.kind == "robots":
            own = [r for r in event.data.get("robots", []) if r.get("robot_id") == self.robot_id]
            if not own and not event.data.get("reset"):
                return None
            return sse(event.id, event.kind, _encode({**event.data, "robots": own}))
        return sse(event.id, event.kind, event.text)

    def offer(self, event: Event) -> None:
        """On the loop's thread: queue the event, or drop the client whose queue is full."""
        if self.closed.is_set():
            return
        chunk = self.view(event)
        if chunk is None:
            return
        try:
            self.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            self.close(f"its queue of {self.queue.maxsize} events was full", dropped=True)

    def close(self, reason: str, dropped: bool = False) -> None:
        if not self.closed.is_set():
            self.reason, self.dropped = reason, dropped
            self.closed.set()


@dataclass
class Channel:
    """A watched scenario, in the broker's thread."""

    scenario_id: int
    subscribers: set = field(default_factory=set)
    seq: int = 0
    observations: int | None = None  # the monitor's counter when the robots were last read
    robots: dict = field(default_factory=dict)  # robot -> what was last sent of it
    snapshot: tuple[int, dict] | None = None  # (seq, data) reusable until the next event


class Broker:
    """This process's events (see the module's docstring). Thread-safe entry points:
    `on_change` (a change feed subscriber), `join` and `leave` (from the event loop)."""

    def __init__(self, database, cache, *, interval: float = 0.25, queue_size: int = 256, per_token: int = 20,
                 send_timeout: float = 10.0, ping_interval: float = 15.0, send_buffer: int | None = 262144) -> None:
        self.database, self.cache = database, cache
        self.interval, self.queue_size, self.per_token = interval, queue_size, per_token
        self.send_timeout, self.ping_interval = send_timeout, ping_interval
        self.send_buffer = send_buffer  # None: the kernel's autotuned buffer (up to tcp_wmem's maximum)
        self._inbox: queue.Queue = queue.Queue()
        self._channels: dict[int, Channel] = {}  # broker thread only
        self._guard = threading.Lock()
        self._per_token: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # clients dropped for being slow (for tests and logs)
        self.sent = 0

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> "Broker":
        self._thread = threading.Thread(target=self._loop, name="event-broker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- entry points ----------------------------------------------------------------------------
    def on_change(self, change: Change) -> None:
        if change.scenario_id is not None or change.kind == TOKEN_REVOKED:
            self._inbox.put(("change", change))

    def join(self, scenario_id: int, principal, loop) -> Subscriber:
        """A new stream (on the loop's thread); LookupError past the per-token limit."""
        with self._guard:
            count = self._per_token.get(principal.token_key, 0)
            if count >= self.per_token:
                raise LookupError(f"this token has {count} event streams open here, the limit "
                                  f"(MASE_EVENTS_PER_TOKEN={self.per_token}); close one")
            self._per_token[principal.token_key] = count + 1
        subscriber = Subscriber(scenario_id, principal, self.queue_size, loop)
        self._inbox.put(("join", subscriber))
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        subscriber.close(subscriber.reason or "the client left")
        with self._guard:
            key = subscriber.principal.token_key
            self._per_token[key] = self._per_token.get(key, 1) - 1
            if self._per_token[key] <= 0:
                self._per_token.pop(key, None)
        self._inbox.put(("leave", subscriber))

    # -- the broker's thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        next_tick = time.monotonic() + self.interval
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = ()
            try:
                if item is None:
                    return
                if item:
                    self._handle(*item)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.interval
                    for channel in list(self._channels.values()):
                        self._poll_robots(channel)
            except Exception:  # noqa: BLE001 - the database may be away; clients keep their streams
                log.warning("building events failed; retrying", exc_info=True)
                self._stop.wait(0.5)

    def _handle(self, what: str, payload) -> None:
        if what == "join":
            self._join(payload)
        elif what == "leave":
            channel = self._channels.get(payload.scenario_id)
            if channel is not None:
                channel.subscribers.discard(payload)
                if not channel.subscribers:
                    del self._channels[payload.scenario_id]
        else:
            self._change(payload)

    def _join(self, subscriber: Subscriber) -> None:
        if subscriber.closed.is_set():
            return
        channel = self._channels.get(subscriber.scenario_id)
        fresh = channel is None
        if fresh:
            channel = self._channels[subscriber.scenario_id] = Channel(subscriber.scenario_id)
        try:
            if fresh:
                self._read_robots(channel)  # what the snapshot holds is the robots' baseline
            if channel.snapshot is None or channel.snapshot[0] != channel.seq:
                channel.snapshot = (channel.seq, self._snapshot(subscriber.scenario_id))
            data = channel.snapshot[1]
        except NotFound:
            self._deliver(subscriber, Event(channel.seq, "deleted", {"scenario_id": subscriber.scenario_id},
                                            _encode({"scenario_id": subscriber.scenario_id})), final=True)
            if not channel.subscribers:
                self._channels.pop(subscriber.scenario_id, None)
            return
        if subscriber.robot_id is not None:
            data = self._robot_snapshot(data, subscriber.robot_id)
        channel.subscribers.add(subscriber)
        self._deliver(subscriber, Event(channel.seq, "snapshot", data, _encode(data)))

    def _deliver(self, subscriber: Subscriber, event: Event, final: bool = False) -> None:
        def put() -> None:
            subscriber.offer(event)
            subscriber.ready = True
            if final:
                subscriber.close("the scenario was deleted")

        subscriber.loop.call_soon_threadsafe(put)

    def _emit(self, channel: Channel, kind: str, data: dict, final: bool = False) -> None:
        channel.seq += 1
        event = Event(channel.seq, kind, data, _encode(data))
        by_loop: dict = {}
        for subscriber in channel.subscribers:
            by_loop.setdefault(subscriber.loop, []).append(subscriber)
        for loop, subscribers in by_loop.items():
            def fan_out(subscribers=subscribers) -> None:
                for subscriber in subscribers:
                    subscriber.offer(event)
                    if final:
                        subscriber.close("the scenario was deleted")
            loop.call_soon_threadsafe(fan_out)
        self.sent += 1

    # -- building events ---------------------------------------------------------------------------
    def _change(self, change: Change) -> None:
        if change.kind == TOKEN_REVOKED:
            for channel in self._channels.values():
                for subscriber in list(channel.subscribers):
                    if subscriber.principal.token_id == change.ref:
                        subscriber.loop.call_soon_threadsafe(subscriber.close, "its token was revoked")
            return
        channel = self._channels.get(change.scenario_id)
        if channel is None:
            return
        from .routers.runs import run_out
        from .routers.scenarios import plan_out

        sid = change.scenario_id
        if change.kind == SCENARIO_DELETED:
            self._emit(channel, "deleted", {"scenario_id": sid}, final=True)
            self._channels.pop(sid, None)
            return
        with self.database.sessions() as session:
            if change.kind in (RUN_CHANGED, RUN_PROGRESS) and change.ref is not None:
                row = session.get(RunRow, change.ref)
                if row is not None:
                    self._emit(channel, "run", run_out(row).model_dump(mode="json"))
            elif change.kind == PLAN_CHANGED:
                from .models import FleetPlanRow

                self._emit(channel, "plan", {"scenario_id": sid, **plan_out(session.get(FleetPlanRow, sid))
                                             .model_dump(mode="json")})
            elif change.kind == DEPLOYED:
                self._emit(channel, "deployment", {"scenario_id": sid, "run_id": change.ref})
            elif change.kind == RULES_CHANGED:
                from .routers.rules import version_out
                from . import repository

                self._emit(channel, "rules", version_out(repository.rule_version(session, sid, change.ref))
                           .model_dump(mode="json"))
            elif change.kind == ALERT_CHANGED:
                from .routers.console import alert_out

                row = session.get(AlertRow, change.ref)
                if row is not None:
                    self._emit(channel, "alert", alert_out(row).model_dump(mode="json"))
            elif change.kind == HISTORY_ADDED:
                from .routers.console import history_out

                row = session.get(HistoryRow, change.ref)
                if row is not None:
                    self._emit(channel, "history", history_out(row).model_dump(mode="json"))
            elif change.kind == OBSERVATIONS_CLEARED:
                channel.robots.clear()
                channel.observations = None
                self._emit(channel, "robots", {"scenario_id": sid, "robots": [], "reset": True})
        if change.kind in (RUN_CHANGED, PLAN_CHANGED, DEPLOYED, RULES_CHANGED, SCENARIO_CHANGED):
            self._emit_scenario(channel)
        if change.kind in (RULES_CHANGED, SCENARIO_CHANGED, OBSERVATIONS_CLEARED):
            self._poll_robots(channel, force=True)  # the monitor's penalty or tolerance changed

    def _emit_scenario(self, channel: Channel) -> None:
        from .routers.scenarios import scenario_out
        from . import repository

        with self.database.sessions() as session:
            try:
                out = scenario_out(session, repository.scenario(session, channel.scenario_id))
            except NotFound:
                return
        self._emit(channel, "scenario", out.model_dump(mode="json"))

    def _read_robots(self, channel: Channel) -> tuple[dict, list] | None:
        """The monitor (without its robot list) and the robots whose report changed, or None
        if nobody reported since the last look."""
        from .routers.robots import monitor_out

        with self.database.sessions() as session:
            observations = session.scalar(select(MonitorRow.observations)
                                          .where(MonitorRow.scenario_id == channel.scenario_id))
        if observations is None:
            raise NotFound(f"no scenario {channel.scenario_id}")
        if observations == channel.observations:
            return None
        try:
            monitor = monitor_out(self.database, self.cache, channel.scenario_id)
        except NotFound:
            raise
        channel.observations = monitor.observations
        changed = []
        for report in monitor.robots:
            key = (report.received_at, report.in_violation, report.zone)
            if channel.robots.get(report.robot_id) != key:
                channel.robots[report.robot_id] = key
                changed.append(report.model_dump(mode="json"))
        summary = monitor.model_dump(mode="json")
        summary["robots"], summary["positions"] = [], {}
        return summary, changed

    def _poll_robots(self, channel: Channel, force: bool = False) -> None:
        if not channel.subscribers:
            return
        if force:
            channel.observations = None
        try:
            read = self._read_robots(channel)
        except NotFound:
            return  # deleted: the change feed says so
        if read is None:
            return
        summary, changed = read
        if changed:
            self._emit(channel, "robots", {"scenario_id": channel.scenario_id, "robots": changed})
        self._emit(channel, "monitor", summary)

    def _snapshot(self, scenario_id: int) -> dict:
        """The current state of a scenario, as the API answers it."""
        from .routers.console import alert_out, history_out
        from .routers.robots import monitor_out
        from .routers.runs import run_out
        from .routers.scenarios import scenario_out
        from . import repository

        with self.database.sessions() as session:
            row = repository.scenario(session, scenario_id)
            scenario = scenario_out(session, row)
            runs = [run_out(r, deployed_run_id=row.deployed_run_id) for r in row.runs]
            alerts = [alert_out(a) for a in session.scalars(
                select(AlertRow).where(AlertRow.scenario_id == scenario_id, AlertRow.acknowledged_at.is_(None))
                .order_by(AlertRow.id))]
            history = [history_out(h) for h in session.scalars(
                select(HistoryRow).where(HistoryRow.scenario_id == scenario_id)
                .order_by(HistoryRow.id.desc()).limit(HISTORY_IN_SNAPSHOT))][::-1]
        try:
            monitor = monitor_out(self.database, self.cache, scenario_id).model_dump(mode="json")
        except NotFound:
            raise
        return {"scenario": scenario.model_dump(mode="json"), "runs": [r.model_dump(mode="json") for r in runs],
                "monitor": monitor, "alerts": [a.model_dump(mode="json") for a in alerts],
                "history": [h.model_dump(mode="json") for h in history]}

    @staticmethod
    def _robot_snapshot(data: dict, robot_id: str) -> dict:
        scenario = data["scenario"]
        own = [r for r in data["monitor"]["robots"] if r["robot_id"] == robot_id]
        return {"scenario": {k: scenario[k] for k in ("id", "deployed_run_id", "rule_version", "planning")},
                "robots": own}


class EventStream(StreamingResponse):
    """The ASGI response of one stream: headers, the queued events, a comment line every
    `ping_interval` seconds; dropped when a write has not gone out within `send_timeout`."""

    def __init__(self, broker: Broker, subscriber: Subscriber, expires_at: float | None = None) -> None:
        super().__init__(iter(()), media_type="text/event-stream")
        self.broker, self.subscriber, self.expires_at = broker, subscriber, expires_at

    async def __call__(self, scope, receive, send) -> None:
        subscriber, broker = self.subscriber, self.broker
        self._bound_send_buffer(scope.get("mase.socket"))
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        finished = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})
            await self._send(send, b"retry: 3000\n\n")
            while True:
                chunk = await self._next()
                if chunk is None:
                    break
                if not await self._send(send, chunk):
                    break
            if not subscriber.dropped:
                await asyncio.wait_for(send({"type": "http.response.body", "body": b"", "more_body": False}),
                                       broker.send_timeout)
                finished = True
        except (asyncio.TimeoutError, OSError):
            subscriber.close("its connection did not take the last event", dropped=True)
        finally:
            watcher.cancel()
            broker.leave(subscriber)
            if subscriber.dropped:
                broker.dropped += 1
                log.warning("dropped an event stream of scenario %s (%s): %s", subscriber.scenario_id,
                            subscriber.principal.actor, subscriber.reason)
                abort = scope.get("mase.abort")  # api.http's protocol: reset the connection now
                if abort is not None:
                    abort()
                    for _ in range(3):  # let uvicorn see the connection lost before this returns
                        await asyncio.sleep(0)
                elif not finished:
                    INCOMPLETE.expect()  # uvicorn closes the connection and logs it: expected here

    def _bound_send_buffer(self, sock) -> None:
        if sock is None or self.broker.send_buffer is None:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.broker.send_buffer)
        except OSError:  # pragma: no cover - a socket that refuses: keep the kernel's default
            log.debug("could not set the send buffer of an event stream", exc_info=True)

    async def _watch_disconnect(self, receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.subscriber.close("the client left")
                return

    async def _next(self) -> bytes | None:
        """The next chunk to write (a ping when idle), or None when the stream ends."""
        subscriber = self.subscriber
        while True:
            if not subscriber.queue.empty():
                return subscriber.queue.get_nowait()
            if subscriber.closed.is_set():
                return None
            if self.expires_at is not None and time.time() >= self.expires_at:
                subscriber.close("its token expired")
                return None
            getter = asyncio.ensure_future(subscriber.queue.get())
            closer = asyncio.ensure_future(subscriber.closed.wait())
            done, _ = await asyncio.wait({getter, closer}, timeout=self.broker.ping_interval,
                                         return_when=asyncio.FIRST_COMPLETED)
            closer.cancel()
            if getter in done:
                return getter.result()
            getter.cancel()
            if not done:
                return b": ping\n\n"

    async def _send(self, send, chunk: bytes) -> bool:
        try:
            await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": True}),
                                   self.broker.send_timeout)
        except asyncio.TimeoutError:
            self.subscriber.close(f"its connection took no event for {self.broker.send_timeout:g} s", dropped=True)
            return False
        return not self.subscriber.dropped


class _IncompleteFilter(logging.Filter):
    """uvicorn logs an error when a response ends unfinished; a dropped event stream ends so
    on purpose (its connection is closed): those lines are expected, and filtered out."""

    MESSAGE = "ASGI callable returned without completing response."

    def __init__(self) -> None:
        super().__init__()
        self._expected = 0
        self._lock = threading.Lock()

    def expect(self) -> None:
        with self._lock:
            self._expected += 1

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != self.MESSAGE:
            return True
        with self._lock:
            if self._expected:
                self._expected -= 1
                return False
        return True


INCOMPLETE = _IncompleteFilter()
logging.getLogger("uvicorn.error").addFilter(INCOMPLETE)


def ticket_expiry(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


__all__ = ["Broker", "EventStream", "ROBOT_KINDS", "Subscriber", "sse", "ticket_expiry"]
