"""Background threads that talk to the service, so that a slow or absent service never
stalls a control loop or a ROS callback. Nodes hand them work and poll their results.

`RobotLink` (executor): fetches the robot's policy (at start, when told a new one exists,
and every `poll_period` s as a fallback, adopting it if its run changed), and posts the robot's state reports. While the
service cannot be reached it retries with exponential backoff, says so in the log, and the
executor keeps the last good policy. Only the newest state report is kept while waiting:
the service's monitor wants the robot's current state, not a backlog.

`BridgeLink` (metareasoner bridge): polls the scenario, announces its current run's policies
and penalties when they change, relays the live NSE monitor and the progress of runs.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from typing import Callable

from .backoff import Backoff
from .client import ServiceClient, ServiceRejected, ServiceUnavailable
from .messages import policy_update
from .policy import PolicyTable

Log = Callable[[str, str], None]
_UNSET = object()


class _Worker:
    def __init__(self, backoff: Backoff, log: Log, name: str) -> None:
        self.backoff, self.log = backoff, log
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # a wake() during work() makes the wait below return at once
            try:
                busy = self.work()
            except ServiceUnavailable as error:
                delay = self.backoff.failure()
                self.last_error = str(error)
                self._log("warn", f"service unreachable ({error}); {self.fallback()}; retry {self.backoff.failures} "
                                  f"in {delay:.1f} s")
                self._stop.wait(delay)
                continue
            except Exception as error:  # noqa: BLE001 - a worker must survive anything the service sends
                delay = self.backoff.failure()
                self.last_error = str(error)
                self._log("error", f"{type(error).__name__}: {error}; {self.fallback()}; retry in {delay:.1f} s")
                self._stop.wait(delay)
                continue
            if self.last_error is not None:
                self._log("info", f"service reachable again after {self.backoff.failures} failed attempts")
                self.last_error = None
            self.backoff.success()
            if not busy:
                self._wake.wait(self.idle_wait())

    def _log(self, level: str, message: str) -> None:
        try:
            self.log(level, message)
        except Exception:  # noqa: BLE001 - logging must never end the worker
            pass

    # overridden
    def work(self) -> bool:  # pragma: no cover
        raise NotImplementedError

    def fallback(self) -> str:
        return "retrying"

    def idle_wait(self) -> float:
        return 0.5


class RobotLink(_Worker):
    def __init__(self, client: ServiceClient, scenario_id: int, robot_id: str, backoff: Backoff, log: Log,
                 poll_period: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(backoff, log, f"mase-link-{robot_id}")
        self.client, self.scenario_id, self.robot_id = client, scenario_id, robot_id
        self.poll_period, self.clock = poll_period, clock
        self._lock = threading.Lock()
        self._want_policy = True
        self._pending_report: list[int] | None = None
        self._new_policy: PolicyTable | None = None
        self._good: PolicyTable | None = None
        self._next_poll = 0.0
        self.reports_sent = 0
        self.reports_replaced = 0
        self.reports_refused = 0

    # -- called by the node ------------------------------------------------------------------
    def want_policy(self, run_id: object = _UNSET) -> None:
        """Fetch the policy again (the bridge announced run `run_id`)."""
        with self._lock:
            if run_id is not _UNSET and self._good is not None and self._good.run_id == run_id:
                return
            self._want_policy = True
        self.wake()

    def report(self, state: list[int]) -> None:
        with self._lock:
            if self._pending_report is not None:
                self.reports_replaced += 1
            self._pending_report = list(state)
        self.wake()

    def take_policy(self) -> PolicyTable | None:
        with self._lock:
            table, self._new_policy = self._new_policy, None
        return table

    def fallback(self) -> str:
        good = self._good
        if good is None:
            return "no policy yet: holding still"
        return f"keeping the last good policy (run {good.run_id if good.run_id is not None else 'naive'})"

    def idle_wait(self) -> float:
        if self.poll_period <= 0:
            return 1.0
        return max(0.05, min(1.0, self._next_poll - self.clock()))

    # -- the worker --------------------------------------------------------------------------
    def work(self) -> bool:
        busy = False
        with self._lock:
            state = self._pending_report
        if state is not None:
            try:
                self.client.report_state(self.scenario_id, self.robot_id, state)
                self.reports_sent += 1
            except ServiceRejected as error:
                self.reports_refused += 1
                self._log("error", f"the service refused state {state}: {error}; dropped")
            with self._lock:
                if self._pending_report is state:
                    self._pending_report = None
            busy = True
        now = self.clock()
        with self._lock:
            want = self._want_policy
        poll = self.poll_period > 0 and self._good is not None and now >= self._next_poll
        if want or poll:
            self._next_poll = now + self.poll_period
            data = self.client.policy(self.scenario_id, self.robot_id)  # ServiceRejected: logged, retried
            try:
                table = PolicyTable.from_json(data)
            except ValueError as error:
                raise ValueError(f"malformed policy from the service: {error}") from None
            with self._lock:
                self._want_policy = False
                if self._good is None or table.run_id != self._good.run_id:
                    self._new_policy = self._good = table
            busy = True
        return busy


class BridgeLink(_Worker):
    def __init__(self, client: ServiceClient, scenario_id: int, backoff: Backoff, log: Log,
                 poll_period: float = 1.0, monitor_period: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(backoff, log, "mase-bridge-link")
        self.client, self.scenario_id = client, scenario_id
        self.poll_period, self.monitor_period, self.clock = poll_period, monitor_period, clock
        self.outbox: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._announced: object = _UNSET
        self._watching: dict[int, tuple] = {}
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._next_monitor = 0.0
        self.robot_ids: list[str] = []

    def watch(self, run_id: int) -> None:
        with self._lock:
            self._watching.setdefault(run_id, ())
        self.wake()

    def idle_wait(self) -> float:
        return max(0.05, min(self._next_poll, self._next_monitor) - self.clock())

    def fallback(self) -> str:
        return "the robots keep their last policies"

    def work(self) -> bool:
        now = self.clock()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_period
            scenario = self.client.scenario(self.scenario_id)
            self.robot_ids = [r["id"] for r in scenario.get("robots", [])]
            current = scenario.get("current_run_id")
            if current != self._announced:
                run = self.client.run(current) if current is not None else None
                penalties = {rid: self.client.penalties(self.scenario_id, rid)["penalties"] for rid in self.robot_ids}
                self.outbox.put(("policy", policy_update(self.scenario_id, run, penalties)))
                self._announced = current
                self._log("info", f"announced the policies of run {current if current is not None else 'naive'}")
            with self._lock:
                watching = dict(self._watching)
            for run_id, last in watching.items():
                run = self.client.run(run_id)
                key = (run["status"], run["phase"], round(float(run.get("progress") or 0), 2))
                if key != last:
                    self.outbox.put(("run", json.dumps({"type": "run", **{k: run.get(k) for k in (
                        "id", "scenario_id", "method", "status", "phase", "progress", "error", "summary")}})))
                with self._lock:
                    if run["status"] in ("succeeded", "failed", "interrupted"):
                        self._watching.pop(run_id, None)
                        if run["status"] == "succeeded":
                            self._next_poll = now  # announce it at once
                    else:
                        self._watching[run_id] = key
        if now >= self._next_monitor:
            self._next_monitor = now + self.monitor_period
            monitor = self.client.monitor(self.scenario_id)
            self.outbox.put(("monitor", json.dumps({"type": "monitor", **monitor})))
        return False
