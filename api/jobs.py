"""Mitigation runs as background jobs.

Each run executes in its own process (a crash or a long computation there cannot stall
the service's queries), forked from a server process that has the library imported
already (a run starts in milliseconds, not seconds), and streams progress back over a pipe; a thread here writes the
progress and, at the end, the whole result in one transaction. Runs of one scenario
execute one after another (a per-scenario lock), so two replans never race. Runs that
were queued or running when the service stopped are marked `interrupted` at start-up and
can be started again.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from sqlalchemy import select, update

from .db import Database
from .models import RunRobotRow, RunRow, ScenarioRow

log = logging.getLogger("mase.runs")
ACTIVE = ("queued", "running")
PLAN_SHARE = 0.3  # share of the progress bar given to planning the fleet
PHASE_OFFSET = {"monitor": 0.0, "blame": 0.2, "generalise": 0.5, "replan": 0.7, "done": 1.0}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def execute_run(job: dict, send) -> dict:
    """The run itself, pure library work: plan, mitigate, and return plain data."""
    from metareasoner.mitigation import Fleet, Mitigation
    from planner.backends import get_backend
    from planner.scenario import generate_scenario
    from planner.world import NSERule

    from .fleets import encode_array, world_of

    world = world_of(job["map_text"], job["map_name"])
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
        result = Mitigation(method=job["method"], update_fraction=params["update_fraction"], rounds=rounds,
                            episodes=params["episodes"], seed=params["seed"], backend=backend
                            ).run(fleet, progress=on_progress)
    summary = result.as_dict()
    robots = summary.pop("robots")
    summary.pop("method")
    for i, robot in enumerate(robots):
        robot["policy"] = encode_array(result.policies[i].astype("int16"))
        local = result.local_penalties.get(i)
        robot["local_penalty"] = None if local is None else encode_array(local.astype("float64"))
    return {"summary": summary, "robots": robots}


PRELOAD = ["numpy", "scipy.sparse", "sklearn.ensemble", "metareasoner.mitigation", "api.jobs", "api.fleets"]


def _noop() -> None:
    pass


def _child(connection, job: dict) -> None:
    try:
        connection.send(("result", execute_run(job, connection.send)))
    except (ValueError, LookupError) as error:  # the run's input cannot be used
        connection.send(("error", str(error)))
    except Exception as error:  # noqa: BLE001 - reported to the operator, with the trace in the log
        connection.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}"))
    finally:
        connection.close()


class RunManager:
    def __init__(self, database: Database, workers: int = 1, progress_interval: float = 0.25,
                 backend: str = "local", ray_address: str | None = None) -> None:
        self.database = database
        self.backend, self.ray_address = backend, ray_address
        self.progress_interval = progress_interval
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="run")
        self._scenario_locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self._children: dict[int, multiprocessing.Process] = {}
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._closing = False
        # start the fork server now, so that the first run does not wait for its imports
        threading.Thread(target=self._warm_up, name="run-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        process = self._context.Process(target=_noop, daemon=True)
        process.start()
        process.join(timeout=120)

    # -- life cycle ------------------------------------------------------------------------
    def mark_interrupted(self, reason: str) -> int:
        with self.database.transaction() as session:
            result = session.execute(
                update(RunRow).where(RunRow.status.in_(ACTIVE))
                .values(status="interrupted", phase="interrupted", error=reason, finished_at=_now()))
            return result.rowcount or 0

    def shutdown(self) -> None:
        self._closing = True
        for process in list(self._children.values()):
            if process.is_alive():
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.mark_interrupted("the service stopped while the run was queued or running")

    def submit(self, run_id: int) -> None:
        self._pool.submit(self._execute, run_id)

    def _lock(self, scenario_id: int) -> threading.Lock:
        with self._guard:
            return self._scenario_locks.setdefault(scenario_id, threading.Lock())

    # -- one run ---------------------------------------------------------------------------
    def _execute(self, run_id: int) -> None:
        with self.database.transaction() as session:
            run = session.get(RunRow, run_id)
            if run is None or run.status != "queued":
                return
            scenario_id = run.scenario_id
        with self._lock(scenario_id):
            try:
                self._run_claimed(run_id)
            except Exception:  # noqa: BLE001 - a run's failure must not kill the worker thread
                log.exception("run %s failed outside its process", run_id)
                self._finish(run_id, "failed", error="internal error while running; see the service log")

    def _run_claimed(self, run_id: int) -> None:
        with self.database.transaction() as session:
            claimed = session.execute(
                update(RunRow).where(RunRow.id == run_id, RunRow.status == "queued")
                .values(status="running", phase="plan", progress=0.0, started_at=_now(), error=None))
            if not claimed.rowcount:
                return
            run = session.get(RunRow, run_id)
            scenario = session.get(ScenarioRow, run.scenario_id)
            version = next(v for v in scenario.rule_versions if v.version == run.rule_version)
            job = {"map_text": scenario.map_text, "map_name": scenario.map_name, "n_robots": scenario.n_robots,
                   "seed": scenario.seed, "slack": scenario.slack, "rules": version.rules,
                   "min_count": version.min_count, "method": run.method, "params": dict(run.params),
                   "backend": self.backend, "ray_address": self.ray_address}
        if self._closing:
            return
        receiver, sender = self._context.Pipe(duplex=False)
        # not daemonic, so that the run may start workers of its own (the local backend);
        # shutdown() terminates it
        process = self._context.Process(target=_child, args=(sender, job), name=f"mase-run-{run_id}")
        process.start()
        sender.close()
        self._children[run_id] = process
        last_write = 0.0
        outcome = None
        try:
            while outcome is None:
                if receiver.poll(0.2):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        break
                    if message[0] == "progress":
                        now = time.monotonic()
                        if now - last_write >= self.progress_interval:
                            self._progress(run_id, message[1], message[2])
                            last_write = now
                    else:
                        outcome = message
                elif not process.is_alive() and not receiver.poll(0):
                    break
        finally:
            process.join(timeout=5)
            self._children.pop(run_id, None)
            receiver.close()
        if self._closing:
            return
        if outcome is None:
            self._finish(run_id, "failed", error=f"the run's process exited with code {process.exitcode}")
        elif outcome[0] == "error":
            self._finish(run_id, "failed", error=outcome[1])
        else:
            self._store_result(run_id, outcome[1])

    def _progress(self, run_id: int, phase: str, progress: float) -> None:
        with self.database.transaction() as session:
            session.execute(update(RunRow).where(RunRow.id == run_id, RunRow.status == "running")
                            .values(phase=phase, progress=float(progress)))

    def _finish(self, run_id: int, status: str, error: str | None = None) -> None:
        with self.database.transaction() as session:
            session.execute(update(RunRow).where(RunRow.id == run_id, RunRow.status == "running")
                            .values(status=status, phase=status, error=error, finished_at=_now()))

    def _store_result(self, run_id: int, result: dict) -> None:
        with self.database.transaction() as session:
            run = session.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.status == "running"))
            if run is None:  # deleted or interrupted meanwhile
                return
            run.robots.clear()
            session.flush()
            for position, robot in enumerate(result["robots"]):
                run.robots.append(RunRobotRow(
                    position=position, robot_id=robot["id"], blame=robot["blame"], updated=robot["updated"],
                    task_regret=robot["task_regret"], slack=robot["slack"], policy=robot["policy"],
                    local_penalty=robot["local_penalty"]))
            run.summary = result["summary"]
            run.status, run.phase, run.progress, run.finished_at = "succeeded", "done", 1.0, _now()
