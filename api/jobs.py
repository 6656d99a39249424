"""Background jobs: mitigation runs and fleet planning, each in a process of its own.

A job executes in a child process (a crash or a long computation there cannot stall the
service's queries), forked from a server process that has the library imported already,
and streams progress back over a pipe; a thread here writes the progress and, at the end,
the whole result in one transaction.

Jobs are claimed through the database, so several service processes (uvicorn workers)
share them correctly:
* a fleet plan is queued when its scenario is created and claimed by whichever process has a
  free planning slot (`plan_workers`);
* a run belongs to the process that accepted it (`owner_id`), which claims it when it has a
  free slot (`run_workers`) and when it is the oldest queued run of its scenario and no run
  of that scenario is running, in any process: runs of one scenario execute one after
  another, in order. The claim holds the scenario's lock (api.cache.lock_scenario).

Every process writes a heartbeat. The jobs of a process that is gone (no heartbeat, or a
dead pid on this host) are taken over: its runs are marked `interrupted` (an operator
restarts them), its plans queued again. Stopping the service (SIGINT, SIGTERM) stops its
job processes with their children and marks its runs interrupted.
"""
from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select, update

from .cache import (PLAN_CHANGED, RUN_CHANGED, RUN_PROGRESS, SCENARIO_CREATED, SCENARIO_DELETED, Change, ChangeFeed,
                    lock_scenario, publish)
from .db import Database
from .models import FleetPartRow, FleetPlanRow, RunRobotRow, RunRow, ScenarioRow, ServiceProcessRow

log = logging.getLogger("mase.runs")
ACTIVE = ("queued", "running")
PLAN_SHARE = 0.3  # share of the progress bar given to planning the fleet
PHASE_OFFSET = {"monitor": 0.0, "blame": 0.2, "generalise": 0.5, "replan": 0.7, "accept": 0.9, "done": 1.0}
RESTARTED = "the service restarted while the run was queued or running"
STOPPED = "the service stopped while the run was queued or running"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def execute_run(job: dict, send) -> dict:
    """The run itself, pure library work: plan, mitigate from the policies deployed when it
    started (job["base_policies"]; None: the naive ones), explain, and return plain data.
    An imported run (job["import_document"]) is `execute_import`."""
    if job.get("import_document") is not None:
        return execute_import(job, send)
    import numpy as np

    from metareasoner.mitigation import Fleet, Mitigation
    from planner.backends import get_backend
    from planner.scenario import generate_scenario
    from planner.world import NSERule

    from .explain import explain_run, recording
    from .fleets import decode_array, encode_array, world_of

    world = world_of(job["map_text"], job["map_name"], check_size=False)
    world = world.with_rules(tuple(NSERule(**r) for r in job["rules"]), job["min_count"])
    scenario = generate_scenario(world, job["n_robots"], seed=job["seed"], slack=job["slack"])
    send(("progress", "plan", 0.0))
    params = job["params"]
    rounds = params["rounds"]

    def on_progress(phase: str, fraction: float) -> None:
        overall = min(1.0, fraction + PHASE_OFFSET.get(phase, 0.0) / rounds)
        send(("progress", phase, PLAN_SHARE + (1 - PLAN_SHARE) * overall))

    with get_backend(job.get("backend", "local"), address=job.get("ray_address")) as backend:
        fleet = Fleet.plan(scenario, backend=backend,
                           progress=lambda done, total: send(("progress", "plan", PLAN_SHARE * done / total)))
        base = job.get("base_policies")
        start = None if base is None else [decode_array(b).astype(np.int64) for b in base]
        mitigation = recording(Mitigation)(method=job["method"], update_fraction=params["update_fraction"],
                                           rounds=rounds, episodes=params["episodes"], seed=params["seed"],
                                           backend=backend)
        result = mitigation.run(fleet, progress=on_progress, policies=start)
    strategy = mitigation.strategy()
    k = math.ceil(params["update_fraction"] * len(fleet.plans))
    explain = explain_run(fleet, result, start if start is not None else [p.policy for p in fleet.plans],
                          getattr(mitigation, "scores", []), k, int(getattr(strategy, "screening", 1) or 1))
    summary = result.as_dict()
    robots = summary.pop("robots")
    summary.pop("method")
    for i, robot in enumerate(robots):
        robot["policy"] = encode_array(result.policies[i].astype("int16"))
        local = result.local_penalties.get(i)
        robot["local_penalty"] = None if local is None else encode_array(local.astype("float64"))
    return {"summary": summary, "robots": robots, "explain": explain}


def execute_import(job: dict, send) -> dict:
    """An imported policy file as a run: plan the fleet, deploy the file's policies on it
    (`PolicyFile.policies_for`, strict: the import request checked the same on the stored
    plan), and evaluate them exactly against the policies deployed when the run started: J_N
    and NSE-state rate before and after, each robot's task regret (policy evaluation) against
    its budget, whether its policy changed. Nothing is replanned; the result has a run's shape."""
    import time

    import numpy as np

    from metareasoner.gaps import REGRET_ROUNDING
    from metareasoner.mitigation import Fleet, MitigationResult, RobotOutcome
    from metareasoner.policies import read_policy_file
    from planner.backends import get_backend
    from planner.scenario import generate_scenario
    from planner.solvers import policy_evaluation
    from planner.world import NSERule

    from .explain import explain_run
    from .fleets import decode_array, encode_array, world_of

    world = world_of(job["map_text"], job["map_name"], check_size=False)
    world = world.with_rules(tuple(NSERule(**r) for r in job["rules"]), job["min_count"])
    scenario = generate_scenario(world, job["n_robots"], seed=job["seed"], slack=job["slack"])
    send(("progress", "plan", 0.0))
    with get_backend(job.get("backend", "local"), address=job.get("ray_address")) as backend:
        fleet = Fleet.plan(scenario, backend=backend,
                           progress=lambda done, total: send(("progress", "plan", PLAN_SHARE * done / total)))
    seconds = {"plan": fleet.plan_seconds, "monitor": 0.0}
    send(("progress", "monitor", PLAN_SHARE))
    base = job.get("base_policies")
    start = [p.policy for p in fleet.plans] if base is None else [decode_array(b).astype(np.int64) for b in base]
    policies, origin = read_policy_file("import", job["import_document"]).policies_for(fleet, strict=True)
    clock = time.perf_counter()
    before = fleet.exact(start)
    send(("progress", "monitor", PLAN_SHARE + (1 - PLAN_SHARE) * 0.4))
    after = fleet.exact(policies)
    seconds["monitor"] = time.perf_counter() - clock
    send(("progress", "monitor", PLAN_SHARE + (1 - PLAN_SHARE) * 0.8))
    values: dict[tuple, float] = {}
    robots, over = [], []
    budgets = fleet.budgets
    for i, (plan, policy) in enumerate(zip(fleet.plans, policies)):
        key = (id(plan.mdp), policy.tobytes())
        if key not in values:
            values[key] = float(policy_evaluation(plan.mdp, policy)[plan.mdp.start])
        regret = plan.task_value - values[key]
        if regret <= REGRET_ROUNDING * max(1.0, abs(plan.task_value)):  # evaluation and VI differ by rounding
            regret = 0.0
        if regret > float(budgets[i]) + REGRET_ROUNDING * max(1.0, abs(plan.task_value)):
            over.append(plan.task.robot_id)
        robots.append(RobotOutcome(plan.task.robot_id, 0.0, not np.array_equal(policy, start[i]), float(regret),
                                   float(budgets[i]), abs(plan.task_value), 0.0, None, 0, 0))
    result = MitigationResult("import", before, after, robots, [], seconds, policies, {}, None, None,
                              str(fleet.scenario.budget))
    explain = explain_run(fleet, result, start, [], 0, 1)
    summary = result.as_dict()
    out = summary.pop("robots")
    summary.pop("method")
    summary["over_budget"] = over
    for i, robot in enumerate(out):
        robot["policy"] = encode_array(policies[i].astype("int16"))
        robot["local_penalty"] = None
        robot["imported_from"] = origin[i]
    return {"summary": summary, "robots": out, "explain": explain}


PRELOAD = ["numpy", "scipy.sparse", "sklearn.ensemble", "metareasoner.mitigation", "api.jobs", "api.fleets",
           "api.explain"]


def _noop() -> None:
    pass


def _child(connection, kind: str, job: dict) -> None:
    # its own process group: stopping the job stops the workers it started too
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the service, which stops us
    try:
        if kind == "run":
            result = execute_run(job, connection.send)
        else:
            from .fleets import plan_fleet_job

            result = plan_fleet_job(job, connection.send)
        connection.send(("result", result))
    except (ValueError, LookupError) as error:  # the job's input cannot be used
        connection.send(("error", str(error)))
    except Exception as error:  # noqa: BLE001 - reported to the operator, with the trace in the log
        connection.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}"))
    finally:
        connection.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobManager:
    """Claims and executes this process's share of the jobs; see the module's docstring."""

    def __init__(self, database: Database, feed: ChangeFeed, *, run_workers: int = 1, plan_workers: int = 1,
                 progress_interval: float = 0.25, backend: str = "local", ray_address: str | None = None,
                 poll_interval: float = 0.5, heartbeat_interval: float = 2.0, stale_after: float = 15.0,
                 maintenance=None) -> None:
        self.database, self.feed = database, feed
        self.backend, self.ray_address = backend, ray_address
        self.progress_interval, self.poll_interval = progress_interval, poll_interval
        self.heartbeat_interval, self.stale_after = heartbeat_interval, stale_after
        self.maintenance = maintenance  # called from the maintenance thread every heartbeat
        self.run_workers, self.plan_workers = max(1, run_workers), max(1, plan_workers)
        self._runs = ThreadPoolExecutor(max_workers=self.run_workers, thread_name_prefix="run")
        self._plans = ThreadPoolExecutor(max_workers=self.plan_workers, thread_name_prefix="plan")
        self._busy = {"run": 0, "plan": 0}
        self._guard = threading.Lock()
        self._children: dict[tuple[str, int], multiprocessing.Process] = {}
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._closing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.host = socket.gethostname()[:255]
        with database.transaction() as session:
            row = ServiceProcessRow(host=self.host, pid=os.getpid())
            session.add(row)
            session.flush()
            self.process_id = row.id
        self.reap(startup=True)
        feed.subscribe(self._on_change)
        atexit.register(self._kill_children)  # a forced exit skips shutdown(): no orphans all the same
        self._threads = [threading.Thread(target=self._dispatch_loop, name="job-dispatch", daemon=True),
                         threading.Thread(target=self._maintenance_loop, name="job-maintenance", daemon=True),
                         threading.Thread(target=self._warm_up, name="job-warm-up", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _warm_up(self) -> None:
        # start the fork server now, so that the first job does not wait for its imports
        process = self._context.Process(target=_noop, daemon=True)
        process.start()
        process.join(timeout=120)

    # -- life cycle ------------------------------------------------------------------------
    def submit(self, run_id: int | None = None) -> None:
        """A job was queued (the dispatcher claims it at once instead of at its next poll)."""
        self._wake.set()

    def _on_change(self, change: Change) -> None:
        if change.kind in (RUN_CHANGED, PLAN_CHANGED, SCENARIO_CREATED, SCENARIO_DELETED):
            self._wake.set()

    def shutdown(self) -> None:
        """Stop every job process of ours (and their children), mark our runs interrupted and
        hand our plans back to the queue."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        self._kill_children()
        self._runs.shutdown(wait=True, cancel_futures=True)
        self._plans.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads[:2]:
            thread.join(timeout=10)
        try:
            self._release(self.process_id, STOPPED)
            with self.database.transaction() as session:
                session.execute(delete(ServiceProcessRow).where(ServiceProcessRow.id == self.process_id))
        finally:
            self._stop_forkserver()

    def _kill_children(self) -> None:
        with self._guard:
            children = list(self._children.values())
        for process in children:
            if process.pid is not None and process.is_alive():
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    process.terminate()
        deadline = time.monotonic() + 5
        for process in children:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.pid is not None:
                try:  # whatever of its group is left (a worker that ignored SIGTERM)
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    @staticmethod
    def _stop_forkserver() -> None:
        from multiprocessing import forkserver, util

        stop = getattr(forkserver._forkserver, "_stop", None)  # noqa: SLF001 - no public way to stop it
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001 - it exits with this process anyway
                pass
        # The fork server's socket lived in this process's multiprocessing folder (TMPDIR/pymp-*),
        # which multiprocessing removes at exit only; uvicorn ends a SIGTERM-stopped service by
        # raising the signal again, which skips exit handlers: remove the folder now (its finalizer
        # runs once: at exit there is nothing left to do).
        remove = getattr(util, "_remove_temp_dir", None)  # noqa: SLF001 - no public way either
        for finalizer in list(getattr(util, "_finalizer_registry", {}).values()):
            if remove is not None and getattr(finalizer, "_callback", None) is remove:
                try:
                    finalizer()
                except OSError:
                    pass

    def _release(self, owner_id: int, reason: str) -> list[int]:
        """Mark the runs of `owner_id` interrupted and queue its plans again."""
        with self.database.transaction() as session:
            runs = list(session.scalars(select(RunRow.id).where(RunRow.owner_id == owner_id,
                                                                RunRow.status.in_(ACTIVE))))
            if runs:
                session.execute(update(RunRow).where(RunRow.id.in_(runs), RunRow.status.in_(ACTIVE))
                                .values(status="interrupted", phase="interrupted", error=reason, finished_at=_now()))
            plans = list(session.scalars(select(FleetPlanRow.scenario_id).where(FleetPlanRow.owner_id == owner_id,
                                                                                FleetPlanRow.status == "running")))
            if plans:
                session.execute(update(FleetPlanRow).where(FleetPlanRow.scenario_id.in_(plans),
                                                           FleetPlanRow.status == "running")
                                .values(status="queued", phase="queued", progress=0.0, owner_id=None))
            scenarios = {i: s for i, s in session.execute(select(RunRow.id, RunRow.scenario_id)
                                                          .where(RunRow.id.in_(runs)))} if runs else {}
            for run_id in runs:
                publish(session, RUN_CHANGED, scenarios.get(run_id), run_id)
            for scenario_id in plans:
                publish(session, PLAN_CHANGED, scenario_id)
        return runs

    def reap(self, startup: bool = False) -> int:
        """Take over the jobs of service processes that are gone; returns how many runs stopped."""
        cutoff = _now() - timedelta(seconds=self.stale_after)
        with self.database.sessions() as session:
            processes = session.execute(select(ServiceProcessRow.id, ServiceProcessRow.host, ServiceProcessRow.pid,
                                               ServiceProcessRow.heartbeat_at)).all()
            live = {p.id for p in processes}
            orphan_runs = session.scalar(select(func.count()).select_from(RunRow).where(
                RunRow.status.in_(ACTIVE), (RunRow.owner_id.is_(None)) | (RunRow.owner_id.not_in(live))))
        dead = [p.id for p in processes if p.id != self.process_id and (
            p.heartbeat_at < cutoff or (p.host == self.host and (p.pid == os.getpid() or not _pid_alive(p.pid))))]
        stopped = 0
        reason = RESTARTED if startup else "the service process running it stopped"
        for owner in dead:
            stopped += len(self._release(owner, reason))
            with self.database.transaction() as session:
                session.execute(delete(ServiceProcessRow).where(ServiceProcessRow.id == owner))
        if orphan_runs:  # runs of no known process (made before owners were recorded)
            with self.database.transaction() as session:
                live_now = select(ServiceProcessRow.id)
                ids = list(session.scalars(select(RunRow.id).where(
                    RunRow.status.in_(ACTIVE), RunRow.owner_id.is_(None) | RunRow.owner_id.not_in(live_now))))
                session.execute(update(RunRow).where(RunRow.id.in_(ids))
                                .values(status="interrupted", phase="interrupted", error=reason, finished_at=_now()))
                for run_id in ids:
                    publish(session, RUN_CHANGED, None, run_id)
                stopped += len(ids)
        with self.database.transaction() as session:  # plans of no known process: queued again
            session.execute(update(FleetPlanRow).where(
                FleetPlanRow.status == "running",
                FleetPlanRow.owner_id.is_(None) | FleetPlanRow.owner_id.not_in(select(ServiceProcessRow.id)))
                .values(status="queued", phase="queued", progress=0.0, owner_id=None))
        if stopped:
            log.warning("marked %d unfinished runs of stopped service processes as interrupted", stopped)
        return stopped

    def _maintenance_loop(self) -> None:
        last_reap = time.monotonic()
        while not self._stop.wait(self.heartbeat_interval):
            try:
                with self.database.transaction() as session:
                    beat = session.execute(update(ServiceProcessRow).where(ServiceProcessRow.id == self.process_id)
                                           .values(heartbeat_at=_now()))
                    if not beat.rowcount:  # taken for dead (a long pause): register again
                        session.add(ServiceProcessRow(id=self.process_id, host=self.host, pid=os.getpid()))
                if time.monotonic() - last_reap >= self.stale_after / 3:
                    last_reap = time.monotonic()
                    self.reap()
                if self.maintenance is not None:
                    self.maintenance()
            except Exception:  # noqa: BLE001 - the database may be away for a while
                log.warning("job maintenance failed; retrying", exc_info=True)

    # -- claiming ----------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._closing:
                return
            try:
                self._dispatch()
            except Exception:  # noqa: BLE001 - retried at the next poll
                log.warning("claiming jobs failed; retrying", exc_info=True)

    def _free(self, kind: str) -> bool:
        with self._guard:
            return self._busy[kind] < (self.plan_workers if kind == "plan" else self.run_workers)

    def _start(self, kind: str, key: int, job: dict) -> None:
        with self._guard:
            self._busy[kind] += 1
        pool = self._plans if kind == "plan" else self._runs
        try:
            pool.submit(self._execute, kind, key, job)
        except RuntimeError:  # shutting down: shutdown() hands the claimed job back
            with self._guard:
                self._busy[kind] -= 1

    def _dispatch(self) -> None:
        while self._free("plan") and not self._closing:
            claimed = self._claim_plan()
            if claimed is None:
                break
            self._start("plan", *claimed)
        if not self._free("run"):
            return
        with self.database.sessions() as session:
            mine = list(session.scalars(select(RunRow.id).where(RunRow.owner_id == self.process_id,
                                                                RunRow.status == "queued").order_by(RunRow.id)))
        for run_id in mine:
            if not self._free("run") or self._closing:
                break
            job = self._claim_run(run_id)
            if job is not None:
                self._start("run", run_id, job)

    def _claim_plan(self) -> tuple[int, dict] | None:
        with self.database.sessions() as session:
            candidates = list(session.scalars(select(FleetPlanRow.scenario_id).where(FleetPlanRow.status == "queued")
                                              .order_by(FleetPlanRow.scenario_id).limit(20)))
        for scenario_id in candidates:
            with self.database.transaction() as session:
                taken = session.execute(update(FleetPlanRow).where(FleetPlanRow.scenario_id == scenario_id,
                                                                   FleetPlanRow.status == "queued")
                                        .values(status="running", phase="plan", progress=0.0, error=None,
                                                owner_id=self.process_id, attempts=FleetPlanRow.attempts + 1,
                                                started_at=_now(), finished_at=None))
                if not taken.rowcount:
                    continue  # another process took it
                scenario = session.get(ScenarioRow, scenario_id)
                job = {"map_text": scenario.map_text, "map_name": scenario.map_name, "n_robots": scenario.n_robots,
                       "seed": scenario.seed, "slack": scenario.slack, "backend": self.backend,
                       "ray_address": self.ray_address}
                publish(session, PLAN_CHANGED, scenario_id)
            return scenario_id, job
        return None

    def _claim_run(self, run_id: int) -> dict | None:
        with self.database.sessions() as session:
            scenario_id = session.scalar(select(RunRow.scenario_id).where(RunRow.id == run_id))
        if scenario_id is None:
            return None
        with self.database.transaction() as session:
            if not lock_scenario(session, scenario_id):  # first: on SQLite this takes the write lock
                return None
            oldest = session.scalar(select(func.min(RunRow.id)).where(RunRow.scenario_id == scenario_id,
                                                                      RunRow.status == "queued"))
            running = session.scalar(select(RunRow.id).where(RunRow.scenario_id == scenario_id,
                                                             RunRow.status == "running").limit(1))
            if oldest != run_id or running is not None:
                return None
            scenario = session.get(ScenarioRow, scenario_id)
            base = scenario.deployed_run_id  # the run's "before": what robots follow as it starts
            claimed = session.execute(update(RunRow).where(RunRow.id == run_id, RunRow.status == "queued")
                                      .values(status="running", phase="plan", progress=0.0, started_at=_now(),
                                              error=None, base_run_id=base))
            if not claimed.rowcount:
                return None
            run = session.get(RunRow, run_id)
            version = next(v for v in scenario.rule_versions if v.version == run.rule_version)
            base_policies = None
            if base is not None:
                base_policies = list(session.scalars(select(RunRobotRow.policy).where(RunRobotRow.run_id == base)
                                                     .order_by(RunRobotRow.position)))
                if len(base_policies) != scenario.n_robots:  # cannot happen: runs keep every robot
                    base_policies = None
            publish(session, RUN_CHANGED, scenario_id, run_id)
            return {"map_text": scenario.map_text, "map_name": scenario.map_name, "n_robots": scenario.n_robots,
                    "seed": scenario.seed, "slack": scenario.slack, "rules": version.rules,
                    "min_count": version.min_count, "method": run.method, "params": dict(run.params),
                    "backend": self.backend, "ray_address": self.ray_address, "base_policies": base_policies,
                    "import_document": run.import_document if run.imported is not None else None}

    # -- one job -----------------------------------------------------------------------------
    def _execute(self, kind: str, key: int, job: dict) -> None:
        try:
            outcome = self._run_child(kind, key, job)
            if self._closing:
                return
            if outcome is None:
                self._finish(kind, key, "failed", error="the job's process exited unexpectedly")
            elif outcome[0] == "error":
                self._finish(kind, key, "failed", error=outcome[1])
            elif kind == "run":
                self._store_run(key, outcome[1])
            else:
                self._store_plan(key, outcome[1])
        except Exception:  # noqa: BLE001 - a job's failure must not kill the worker thread
            log.exception("%s %s failed outside its process", kind, key)
            if not self._closing:
                self._finish(kind, key, "failed", error="internal error while running; see the service log")
        finally:
            with self._guard:
                self._busy[kind] -= 1
            self._wake.set()

    def _run_child(self, kind: str, key: int, job: dict):
        if self._closing:
            return None
        receiver, sender = self._context.Pipe(duplex=False)
        # not daemonic, so that the job may start workers of its own (the local backend);
        # shutdown() stops its whole process group
        process = self._context.Process(target=_child, args=(sender, kind, job), name=f"mase-{kind}-{key}")
        with self._guard:
            if self._closing:
                return None
            process.start()
            self._children[(kind, key)] = process
        sender.close()
        last_write, last_phase = 0.0, None
        outcome = None
        try:
            while outcome is None:
                if receiver.poll(0.2):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        break
                    if message[0] == "progress":
                        # at most one write per interval, but every change of phase is written: a
                        # busy service reads the pipe in bursts, and would otherwise skip phases
                        now = time.monotonic()
                        if message[1] != last_phase or now - last_write >= self.progress_interval:
                            self._progress(kind, key, message[1], message[2])
                            last_write, last_phase = now, message[1]
                    else:
                        outcome = message
                elif not process.is_alive() and not receiver.poll(0):
                    break
        finally:
            process.join(timeout=5)
            with self._guard:
                self._children.pop((kind, key), None)
            receiver.close()
        return outcome

    def _table(self, kind: str):
        return (RunRow, RunRow.id) if kind == "run" else (FleetPlanRow, FleetPlanRow.scenario_id)

    def _progress(self, kind: str, key: int, phase: str, progress: float) -> None:
        table, column = self._table(kind)
        with self.database.transaction() as session:
            moved = session.execute(update(table).where(column == key, table.status == "running")
                                    .values(phase=phase, progress=float(progress)))
            if moved.rowcount:  # for the push channel (the caches ignore it)
                if kind == "run":
                    publish(session, RUN_PROGRESS, session.scalar(select(RunRow.scenario_id).where(RunRow.id == key)),
                            key)
                else:
                    publish(session, PLAN_CHANGED, key)

    def _finish(self, kind: str, key: int, status: str, error: str | None = None) -> None:
        table, column = self._table(kind)
        with self.database.transaction() as session:
            done = session.execute(update(table).where(column == key, table.status == "running")
                                   .values(status=status, phase=status, error=error, finished_at=_now()))
            if done.rowcount:
                if kind == "run":
                    publish(session, RUN_CHANGED, session.scalar(select(RunRow.scenario_id).where(RunRow.id == key)),
                            key)
                else:
                    publish(session, PLAN_CHANGED, key)

    def _store_run(self, run_id: int, result: dict) -> None:
        from .repository import deploy

        with self.database.sessions() as session:
            scenario_id = session.scalar(select(RunRow.scenario_id).where(RunRow.id == run_id))
        with self.database.transaction() as session:
            # the scenario's lock first: a deployment on success is serialised with operators' ones
            if scenario_id is None or not lock_scenario(session, scenario_id):
                return
            run = session.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.status == "running"))
            if run is None:  # deleted or interrupted meanwhile
                return
            run.robots.clear()
            session.flush()
            for position, robot in enumerate(result["robots"]):
                run.robots.append(RunRobotRow(
                    position=position, robot_id=robot["id"], blame=robot["blame"], updated=robot["updated"],
                    task_regret=robot["task_regret"], slack=robot["slack"], policy=robot["policy"],
                    local_penalty=robot["local_penalty"],
                    detail={k: robot[k] for k in ("task_cost", "rank", "selected", "rejected", "imported_from")
                            if k in robot}))
            run.summary = result["summary"]
            run.explain = result.get("explain")
            run.status, run.phase, run.progress, run.finished_at = "succeeded", "done", 1.0, _now()
            session.flush()
            publish(session, RUN_CHANGED, run.scenario_id, run_id)
            if run.deploy_on_success:
                deploy(session, run.scenario_id, run_id, run.created_by or "service", automatic=True)

    def _store_plan(self, scenario_id: int, result: dict) -> None:
        with self.database.transaction() as session:
            plan = session.scalar(select(FleetPlanRow).where(FleetPlanRow.scenario_id == scenario_id,
                                                             FleetPlanRow.status == "running",
                                                             FleetPlanRow.owner_id == self.process_id))
            if plan is None:  # the scenario was deleted meanwhile
                return
            session.execute(delete(FleetPartRow).where(FleetPartRow.scenario_id == scenario_id))
            for position, data in enumerate(result["parts"]):
                session.add(FleetPartRow(scenario_id=scenario_id, position=position, data=data))
            plan.robots = list(result["robots"])
            plan.nbytes = sum(len(d) for d in result["parts"])
            plan.status, plan.phase, plan.progress, plan.finished_at = "succeeded", "done", 1.0, _now()
            publish(session, PLAN_CHANGED, scenario_id)
