"""The two-Turtlebot salp demo, end to end in simulation: the service, the bridge, two
executors and two simulators as separate processes talking over DDS, started from
`launch/turtlebots_sim.launch.py` with the same parameters `ros2 launch` would give them.

One episode: start everything; wait until both executors hold a policy; ask the bridge's
`replan` service for a mitigation run (`method`, `seed`, ...), wait until the bridge announces
its policies and both executors follow them; publish go; wait until both robots are done;
read the service's NSE monitor: the share of state reports at which the robots' joint state
was an NSE state. Each robot reports once per executed step, so that is the percentage of
NSE states over the steps of the episode.

`fast=True` runs the same nodes with faster robots (1 m/s, 6 rad/s, 0.25 s per in-place
action, 30 Hz control) so that many seeds fit in minutes; the cells visited are the same.

The service is either started for one episode (`run_episode(..., service=None)`), or shared
by several (`start_demo_service`, or `connect_demo_service` for one already running): each
episode then forgets the monitor's state reports first. A temporary folder made for the
logs is removed when the episode (or the shared service) stops.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .geometry import GridFrame
from .launching import LAUNCH_DIR, load_launch_file, resolve
from .client import ServiceClient, ServiceError, ServiceRejected
from .messages import parse_monitor, parse_policy_update, parse_status, pose_from_odometry
from .processes import DEMO_SCENARIO, NodeGroup, ServiceProcess, pick_domain_id, ros_environment

ROBOTS = ("tb1", "tb2")
FAST = {"max_linear_speed": "1.0", "max_angular_speed": "6.0", "action_duration": "0.25", "control_rate": "30.0"}


class DemoFailure(RuntimeError):
    pass


@dataclass
class Watcher:
    """An rclpy node in the demo's own process: reads every robot's status, odometry (cells
    visited), the bridge's announcements; calls `replan`; publishes go."""

    robots: tuple[str, ...]
    context: object = None  # an rclpy Context (None: the default one)
    frame: GridFrame = field(default_factory=GridFrame)
    visit_radius: float = 0.3  # fraction of a cell: closer than this to a centre counts as a visit

    def __post_init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile
        from std_msgs.msg import Empty, String
        from std_srvs.srv import Trigger
        from nav_msgs.msg import Odometry

        from .runtime import EVENTS, LATCHED, ODOM_IN

        # unlike a controller, the watcher needs every cell's poses (a cell is passed in a few
        # tenths of a second): one second of them queued, so that a busy moment on a loaded
        # machine delays poses instead of dropping them
        odom_all = QoSProfile(reliability=ODOM_IN.reliability, durability=ODOM_IN.durability,
                              history=ODOM_IN.history, depth=50)

        self.node = Node("mase_demo_watcher", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.status: dict[str, dict] = {}
        self.visited: dict[str, list[tuple[int, int]]] = {r: [] for r in self.robots}
        self.commands: dict[str, list[tuple[float, float, float]]] = {r: [] for r in self.robots}
        self.updates: list = []
        self.runs: list[dict] = []
        self.monitors: list[dict] = []
        for robot in self.robots:
            self.node.create_subscription(String, f"/{robot}/status", lambda m, r=robot: self._on_status(r, m), EVENTS)
            self.node.create_subscription(Odometry, f"/{robot}/odom", lambda m, r=robot: self._on_odom(r, m), odom_all)
        self.node.create_subscription(String, "/mase/policy_updates", self._on_update, LATCHED)
        self.node.create_subscription(String, "/mase/runs", lambda m: self.runs.append(json.loads(m.data)), EVENTS)
        self.node.create_subscription(String, "/mase/nse_monitor",
                                      lambda m: self.monitors.append(parse_monitor(m.data)), EVENTS)
        self.go_pub = self.node.create_publisher(Empty, "/mase/go", LATCHED)
        self.replan_client = self.node.create_client(Trigger, "/mase/replan")
        self._Empty, self._Trigger = Empty, Trigger

    def _on_status(self, robot: str, msg) -> None:
        try:
            self.status[robot] = parse_status(msg.data)
        except ValueError:
            pass

    def _on_update(self, msg) -> None:
        try:
            self.updates.append(parse_policy_update(msg.data))
        except ValueError:
            pass

    def _on_odom(self, robot: str, msg) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            pose = pose_from_odometry((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except ValueError:
            return
        cell = self.frame.cell_of(pose.x, pose.y)
        if self.frame.distance_to_cell(pose.x, pose.y, cell) < self.visit_radius * self.frame.cell_size:
            if not self.visited[robot] or self.visited[robot][-1] != cell:
                self.visited[robot].append(cell)

    def at_reported_cell(self, robot: str) -> bool:
        """The last cell seen in the robot's odometry is the one its executor last reported."""
        cell = self.status.get(robot, {}).get("cell")
        return bool(self.visited[robot]) and cell is not None and self.visited[robot][-1] == tuple(cell)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise DemoFailure(f"timed out after {timeout:.0f} s waiting for {what}")
            self.executor.spin_once(timeout_sec=0.05)

    def replan(self, timeout: float = 30.0) -> int:
        """Call the bridge's replan service; return the id of the run it started."""
        self.spin_until(self.replan_client.service_is_ready, timeout, "the bridge's /mase/replan service")
        future = self.replan_client.call_async(self._Trigger.Request())
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        response = future.result()
        if response is None or not response.success:
            raise DemoFailure(f"replan failed: {response.message if response else 'no answer'}")
        match = re.search(r"run (\d+)", response.message)
        if not match:
            raise DemoFailure(f"replan answered {response.message!r}")
        return int(match.group(1))

    def go(self) -> None:
        self.go_pub.publish(self._Empty())

    def destroy(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


@dataclass
class EpisodeResult:
    method: str
    seed: int
    run_id: int | None
    nse_state_rate: float | None  # from the service's monitor
    observations: int
    nse_observations: int
    model: dict | None  # the run's summary (expected rates from the model)
    steps: dict[str, int]
    visited: dict[str, list[list[int]]]
    planned: dict[str, list[list[int]]]  # the service's most likely paths for the run's policies
    planned_before: dict[str, list[list[int]]]  # ... for the policies before the run
    seconds: float
    exit_codes: dict[str, int | None] = field(default_factory=dict)  # of the nodes, stopped with SIGINT

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DemoService:
    """The service an episode talks to: where, as whom, and the demo scenario's id."""

    url: str
    operator_token: str
    scenario_id: int
    process: ServiceProcess | None = None  # when the demo started it
    tempdir: Path | None = None  # a temporary folder to remove when it stops

    @property
    def dashboard(self) -> str:
        return f"{self.url.rstrip('/')}/dashboard"

    def client(self, token: str | None = None) -> ServiceClient:
        return ServiceClient(self.url, self.operator_token if token is None else token, 10.0)

    def stop(self) -> None:
        """Stop the service if the demo started it, and remove its temporary folder."""
        if self.process is not None:
            self.process.stop()
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)


def start_demo_service(workdir: Path | None = None) -> DemoService:
    """`mase serve` on a free port with a fresh database holding the demo scenario. Without
    `workdir`, its files go to a temporary folder that `DemoService.stop` removes."""
    tempdir = None if workdir is not None else Path(tempfile.mkdtemp(prefix="mase-ros-demo-"))
    process = ServiceProcess(Path(workdir or tempdir) / "service")
    try:
        process.start()
        return DemoService(process.url, process.operator_token, process.demo_scenario(), process, tempdir)
    except BaseException:
        process.stop()
        if tempdir is not None:
            shutil.rmtree(tempdir, ignore_errors=True)
        raise


def connect_demo_service(url: str, token: str, timeout: float = 5.0) -> DemoService:
    """A service already running at `url`: it must answer, take `token` as an operator's, and
    hold the demo scenario (it does unless started with MASE_LOAD_SHIPPED=0)."""
    try:
        client = ServiceClient(url, token, timeout)
    except ValueError as error:
        raise DemoFailure(str(error)) from None
    try:
        client.health()
    except ServiceError as error:
        raise DemoFailure(f"no service answers at {url}: {error}") from None
    try:
        me = client.request("GET", "/me")
    except ServiceRejected as error:
        raise DemoFailure(f"the service at {url} refuses the token ({error.detail}); pass an operator token "
                          "(the service's tokens file, var/tokens for `make run`)") from None
    except ServiceError as error:
        raise DemoFailure(f"the service at {url} did not answer GET /api/v1/me: {error}") from None
    if not isinstance(me, dict) or me.get("role") != "operator":
        raise DemoFailure(f"the token is a robot's token ({me}); the demo needs an operator token")
    for scenario in client.scenarios():
        if scenario["name"] == DEMO_SCENARIO:
            return DemoService(client.base_url[: -len("/api/v1")], token, int(scenario["id"]))
    raise DemoFailure(f"the service at {url} has no scenario {DEMO_SCENARIO!r} (start it with MASE_LOAD_SHIPPED=1 "
                      "and an empty database, or without --service)")


def run_episode(method: str | None, seed: int, rollouts: int = 100, update_fraction: float = 0.25, fast: bool = False,
                workdir: Path | None = None, domain_id: int | None = None, timeout: float | None = None,
                log: Callable[[str], None] = lambda text: None, service: DemoService | None = None) -> EpisodeResult:
    """One demo episode (see the module doc). `method=None` keeps the current policies without a
    run (the naive ones on a fresh service); `rollouts` are the run's Monte Carlo episodes blamed.

    Without `service`, one is started for this episode alone and stopped at its end; without
    `workdir`, the logs go to a temporary folder that is removed at the end."""
    import rclpy

    start = time.monotonic()
    timeout = timeout or (120.0 if fast else 400.0)
    tempdir = None if workdir is not None else Path(tempfile.mkdtemp(prefix="mase-ros-demo-"))
    workdir = Path(workdir or tempdir)
    domain_id = domain_id if domain_id is not None else pick_domain_id()
    own = None
    nodes = None
    watcher = None
    context = None
    try:
        if service is None:
            own = service = start_demo_service(workdir)
        log(f"service {service.url} (ROS_DOMAIN_ID={domain_id}, logs in {workdir})")
        operator = service.client()
        scenario_id = service.scenario_id
        operator.request("DELETE", f"/scenarios/{scenario_id}/observations")  # this episode's reports only
        arguments = {"service_url": service.url, "scenario_id": str(scenario_id),
                     "operator_token": service.operator_token, "seed": str(seed), "episodes": str(rollouts),
                     "update_fraction": str(update_fraction), "wait_for_go": "true",
                     **{f"token_{r}": operator.create_token(scenario_id, r) for r in ROBOTS}}
        if method is not None:
            arguments["method"] = method
        if fast:
            arguments.update(FAST)
        specs = resolve(load_launch_file(LAUNCH_DIR / "turtlebots_sim.launch.py"), arguments)
        nodes = NodeGroup(specs, workdir / "nodes", ros_environment(domain_id))  # before start: stopped if it fails
        nodes.start()
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id)
        watcher = _make_watcher(context, specs)
        watcher.spin_until(lambda: all(watcher.status.get(r, {}).get("has_policy") for r in ROBOTS), 90.0,
                           "both executors to fetch their policies")
        planned_before = {r["id"]: r["path"] for r in operator.scenario_map(scenario_id)["robots"]}
        run_id = None
        if method is not None:
            run_id = watcher.replan()
            log(f"run {run_id} ({method}) started")
            watcher.spin_until(lambda: any(u.run_id == run_id for u in watcher.updates)
                               or any(r.get("id") == run_id and r.get("status") in ("failed", "interrupted")
                                      for r in watcher.runs), 180.0, f"run {run_id} to finish")
            failed = [r for r in watcher.runs if r.get("id") == run_id and r.get("status") != "succeeded"
                      and r.get("status") in ("failed", "interrupted")]
            if failed:
                raise DemoFailure(f"run {run_id} {failed[-1]['status']}: {failed[-1].get('error')}")
            watcher.spin_until(lambda: all(watcher.status.get(r, {}).get("run_id") == run_id for r in ROBOTS), 60.0,
                               f"both executors to follow run {run_id}")
        planned = {r["id"]: r["path"] for r in operator.scenario_map(scenario_id)["robots"]}
        # The robots wait for go in their start cells; without a pose from each of them first, a
        # slow DDS discovery of an odom topic (seen on a loaded 2-core CI machine) loses the start
        # cell from `visited`.
        watcher.spin_until(lambda: all(watcher.visited[r] for r in ROBOTS), 60.0,
                           "odometry from both robots in their start cells")
        watcher.go()
        log("go")
        watcher.spin_until(lambda: all(watcher.status.get(r, {}).get("mode") == "done" for r in ROBOTS), timeout,
                           "both robots to finish their tasks")
        watcher.spin_until(lambda: all(_reported(watcher.status[r]) for r in ROBOTS), 10.0,
                           "the robots' last state reports")
        # queued poses read up to each robot's final cell
        watcher.spin_until(lambda: all(watcher.at_reported_cell(r) for r in ROBOTS), 10.0,
                           "odometry of both robots in their final cells")
        monitor = operator.monitor(scenario_id)
        run = operator.run(run_id) if run_id is not None else None
        observations = int(monitor["observations"])
        rate = monitor["nse_state_rate"]
        result = EpisodeResult(
            method=method or "naive (no run)", seed=seed, run_id=run_id, nse_state_rate=rate,
            observations=observations, nse_observations=round((rate or 0.0) * observations),
            model=run["summary"] if run else None,
            steps={r: int(watcher.status[r]["steps"]) for r in ROBOTS},
            visited={r: [list(c) for c in watcher.visited[r]] for r in ROBOTS}, planned=planned,
            planned_before=planned_before, seconds=time.monotonic() - start)
    except DemoFailure as error:
        tail = nodes.logs() if nodes else ""
        raise DemoFailure(f"{error}\n{tail}") from None
    except ServiceError as error:
        tail = nodes.logs() if nodes else ""
        raise DemoFailure(f"the service failed: {error}\n{tail}") from None
    finally:
        # Each step runs even if one before it fails, and a failing step never replaces the
        # exception on its way (a SIGTERM's SystemExit arriving half-way through a ROS call can
        # leave the watcher or the context half-made).
        codes = nodes.stop() if nodes is not None else {}
        failed = {fqn for fqn, code in codes.items() if code != 0}
        if failed:  # their logs go with the temporary directory: what they said, before it does
            print(f"nodes that did not exit cleanly: {sorted(failed)}\n{nodes.logs(failed)}", file=sys.stderr, flush=True)
        if watcher is not None:
            _clean_up(watcher.destroy, "destroying the watcher")
        if context is not None:
            _clean_up(lambda: context.ok() and rclpy.shutdown(context=context), "shutting down ROS")
        if own is not None:
            own.stop()
        if tempdir is not None:
            shutil.rmtree(tempdir, ignore_errors=True)
    result.exit_codes = codes
    return result


def _clean_up(step: Callable[[], object], what: str) -> None:
    try:
        step()
    except Exception as error:  # reported, not raised: see run_episode
        print(f"mase ros demo: clean-up: {what} failed: {error!r}", file=sys.stderr, flush=True)


def _reported(status: dict) -> bool:
    """Every state of the episode (start + one per step) was posted or superseded."""
    return status.get("reports_sent", 0) + status.get("reports_replaced", 0) >= status.get("steps", 0) + 1


def _make_watcher(context, specs) -> Watcher:
    """A watcher in `context` whose grid frame is the executors' (from the launch file)."""
    executor = next(s for s in specs if s.executable == "mase-executor")
    return Watcher(ROBOTS, context, GridFrame(executor.parameters.get("cell_size", 0.5), 0.0, 0.0))


def summarise(results: list[EpisodeResult]) -> list[dict]:
    """Mean and standard deviation of the percentage of NSE states, per method."""
    rows = []
    for method in dict.fromkeys(r.method for r in results):
        rates = [100 * r.nse_state_rate for r in results if r.method == method and r.nse_state_rate is not None]
        model = [100 * r.model["nse_state_rate_after"] for r in results
                 if r.method == method and r.model and r.model.get("nse_state_rate_after") is not None]
        mean = sum(rates) / len(rates) if rates else math.nan
        std = math.sqrt(sum((x - mean) ** 2 for x in rates) / (len(rates) - 1)) if len(rates) > 1 else 0.0
        rows.append({"method": method, "episodes": len(rates), "mean": mean, "std": std,
                     "model": sum(model) / len(model) if model else None,
                     "observations": sum(r.observations for r in results if r.method == method) / max(1, len(rates))})
    return rows
