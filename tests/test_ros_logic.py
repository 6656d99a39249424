"""ROS 2 bridge, pure logic (no ROS): pose <-> cell mapping, the drive controller, the
simulated differential drive, policy tables and successor-state tracking, the executor's state
machine, retry backoff, message validation, and the service links against a fake service."""
from __future__ import annotations

import copy
import json
import math
import random
import threading
import time

import numpy as np
import pytest

from ros_nodes.backoff import Backoff
from ros_nodes.client import ServiceClient, ServiceRejected, ServiceUnavailable
from ros_nodes.controller import DriveController
from ros_nodes.execution import ExecutionConfig, ExecutionCore
from ros_nodes.geometry import GridFrame, quaternion_from_yaw, wrap_angle, yaw_from_quaternion
from ros_nodes.kinematics import DiffDrive
from ros_nodes.links import BridgeLink, RobotLink
from ros_nodes.messages import (Pose, check_velocity, parse_policy_update, parse_status, policy_update,
                                pose_from_odometry)
from ros_nodes.policy import PolicyTable, PolicyTracker

from conftest import MAPS

pytestmark = pytest.mark.ros


# -- fixtures: the salp demo's real policies, as the service would send them -------------------
@pytest.fixture(scope="module")
def demo_fleet():
    from metareasoner.mitigation import Fleet, Mitigation
    from planner.maps import load_map
    from planner.scenario import generate_scenario

    world = load_map(MAPS / "salp" / "salp-demo.map")
    from api.app import SHIPPED_SCENARIOS

    slack = SHIPPED_SCENARIOS[0][3]  # the service's demo scenario
    fleet = Fleet.plan(generate_scenario(world, 2, seed=0, slack=slack))
    # best response takes the demo's detour round the reef (its most likely path changes a lot)
    replanned = Mitigation(method="best-response", update_fraction=0.25, episodes=20, seed=0).run(fleet)
    return world, fleet, replanned


def table_json(plan, policy, run_id=None) -> dict:
    from api.fleets import policy_table

    return json.loads(json.dumps({"run_id": run_id, **policy_table(plan.mdp, policy)}))


@pytest.fixture(scope="module")
def tables(demo_fleet):
    _, fleet, replanned = demo_fleet
    naive = {p.task.robot_id: PolicyTable.from_json(table_json(p, p.policy)) for p in fleet.plans}
    after = {p.task.robot_id: PolicyTable.from_json(table_json(p, replanned.policies[i], 7))
             for i, p in enumerate(fleet.plans)}
    return naive, after


# -- geometry --------------------------------------------------------------------------------
@pytest.mark.parametrize("flip_y", [True, False])
@pytest.mark.parametrize("yaw", [0.0, 0.7, -2.5])
def test_cell_centres_map_back_to_their_cells(flip_y, yaw):
    frame = GridFrame(cell_size=0.37, origin_x=1.5, origin_y=-2.0, origin_yaw=yaw, flip_y=flip_y)
    rng = random.Random(1)
    for _ in range(200):
        cell = (rng.randint(-3, 30), rng.randint(-3, 30))
        x, y = frame.cell_center(cell)
        assert frame.cell_of(x, y) == cell
        # anywhere inside the square (not on its border) is the same cell
        gx, gy = rng.uniform(-0.49, 0.49), rng.uniform(-0.49, 0.49)
        c, s = math.cos(yaw), math.sin(yaw)
        ox, oy = gx * 0.37, (-gy if flip_y else gy) * 0.37
        assert frame.cell_of(x + c * ox - s * oy, y + s * ox + c * oy) == cell
        assert frame.distance_to_cell(x, y, cell) == pytest.approx(0.0, abs=1e-9)


def test_the_map_reads_as_seen_from_above():
    frame = GridFrame(cell_size=0.5)
    assert frame.cell_center((1, 1)) == pytest.approx((0.5, -0.5))  # row 1 is south of row 0
    assert frame.cell_of(0.74, -0.26) == (1, 1)
    assert frame.cell_of(0.76, -0.26) == (2, 1)
    assert frame.heading_of("east") == pytest.approx(0.0)
    assert frame.heading_of("north") == pytest.approx(math.pi / 2)
    # a real robot's odometry starts where it stands: its start cell is the origin
    real = GridFrame(cell_size=0.5, origin_x=-3.5, origin_y=0.5)
    assert real.cell_of(0.0, 0.0) == (7, 1)


def test_bad_frames_and_points_are_refused():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="cell_size"):
            GridFrame(cell_size=bad)
    with pytest.raises(ValueError, match="origin_x"):
        GridFrame(origin_x=math.nan)
    with pytest.raises(ValueError, match="not finite"):
        GridFrame().cell_of(math.nan, 0.0)


def test_quaternions():
    for yaw in np.linspace(-3.1, 3.1, 25):
        assert yaw_from_quaternion(*quaternion_from_yaw(yaw)) == pytest.approx(yaw)
    assert yaw_from_quaternion(0, 0, 2 * math.sin(0.3), 2 * math.cos(0.3)) == pytest.approx(0.6)  # not unit
    for bad in ((0, 0, 0, 0), (0, 0, math.nan, 1), (math.inf, 0, 0, 1)):
        with pytest.raises(ValueError):
            yaw_from_quaternion(*bad)
    assert wrap_angle(3 * math.pi) == pytest.approx(-math.pi)


# -- controller and simulated robot ----------------------------------------------------------
def drive(robot: DiffDrive, controller: DriveController, target, tolerance=0.05, dt=0.02, limit=30.0):
    t = 0.0
    while math.hypot(target[0] - robot.x, target[1] - robot.y) >= tolerance:
        v, w = controller.command(robot.x, robot.y, robot.yaw, *target)
        assert abs(v) <= controller.max_linear + 1e-12 and abs(w) <= controller.max_angular + 1e-12
        robot.step(v, w, dt)
        t += dt
        if t > limit:
            return None
    return t


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_the_controller_reaches_any_target(noise):
    rng = np.random.default_rng(3)
    controller = DriveController(max_linear=0.22, max_angular=2.84)
    for _ in range(40):
        robot = DiffDrive(*rng.uniform(-1, 1, 2), rng.uniform(-math.pi, math.pi), linear_noise=noise,
                          angular_noise=noise, drift_noise=noise / 2, rng=np.random.default_rng(int(rng.integers(1e6))))
        target = tuple(rng.uniform(-2, 2, 2))
        distance = math.hypot(target[0] - robot.x, target[1] - robot.y)
        t = drive(robot, controller, target)
        assert t is not None, "did not converge"
        # no worse than turning round once and driving there at a third of full speed
        assert t <= math.pi / 2.84 + 0.5 + 3 * distance / 0.22


def test_the_controller_turns_in_place_first_and_stops_at_the_target():
    controller = DriveController()
    v, w = controller.command(0, 0, 0, -1, 0)  # target behind
    assert v == 0 and abs(w) == pytest.approx(controller.max_angular)
    v, w = controller.command(0, 0, 0, 1, 0)
    assert v == pytest.approx(controller.max_linear) and w == pytest.approx(0)
    assert controller.command(0, 0, 0, 0.001, 0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        DriveController(max_linear=0)


def test_diff_drive_kinematics():
    robot = DiffDrive(0, 0, 0, max_linear=1, max_angular=1)
    for _ in range(100):
        robot.step(0.5, 0.0, 0.01)
    assert (robot.x, robot.y, robot.yaw) == pytest.approx((0.5, 0.0, 0.0))
    circle = DiffDrive(0, 0, 0, max_linear=1, max_angular=1)
    steps = 1000
    for _ in range(steps):
        circle.step(0.5, 1.0, 2 * math.pi / steps)  # a full circle of radius 0.5
    assert (circle.x, circle.y) == pytest.approx((0.0, 0.0), abs=1e-9)
    clipped = DiffDrive(max_linear=0.22, max_angular=2.84)
    clipped.step(5.0, -9.0, 0.1)
    assert (clipped.linear, clipped.angular) == (0.22, -2.84)
    with pytest.raises(ValueError):
        clipped.step(math.nan, 0, 0.1)
    noisy = [DiffDrive(linear_noise=0.1, angular_noise=0.1, rng=np.random.default_rng(5)) for _ in range(2)]
    for robot in noisy:
        for _ in range(50):
            robot.step(0.2, 0.5, 0.02)
    assert (noisy[0].x, noisy[0].y) == (noisy[1].x, noisy[1].y)  # seeded
    exact = DiffDrive()
    for _ in range(50):
        exact.step(0.2, 0.5, 0.02)
    assert (noisy[0].x, noisy[0].y) != pytest.approx((exact.x, exact.y))  # and noisy


# -- policy tables ---------------------------------------------------------------------------
def test_policy_tables_match_the_service(demo_fleet, tables):
    from api.fleets import most_likely_path

    world, fleet, replanned = demo_fleet
    naive, after = tables
    for i, plan in enumerate(fleet.plans):
        rid = plan.task.robot_id
        assert naive[rid].most_likely_path(world.horizon) == [tuple(c) for c in
                                                              most_likely_path(plan.mdp, plan.policy, world.horizon)]
        assert after[rid].most_likely_path(world.horizon) == [
            tuple(c) for c in most_likely_path(plan.mdp, replanned.policies[i], world.horizon)]
        assert naive[rid].cell_features() == frozenset({0, 1, 4})  # x, y and the coral zone


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.pop("successors"), "lacks successors"),
    (lambda d: d.__setitem__("cells", d["cells"][:-1]), "one entry per state"),
    (lambda d: d.__setitem__("start", len(d["states"])), "start must be"),
    (lambda d: d.__setitem__("start", True), "start must be"),
    (lambda d: d["actions"].__setitem__(0, 99), "actions must index"),
    (lambda d: d["successors"].__setitem__(0, [[10**6, 1.0]]), "not a state index"),
    (lambda d: d["successors"].__setitem__(0, [[0, 0.5]]), "sum to"),
    (lambda d: d["successors"].__setitem__(0, [[0, math.nan]]), "not in \\[0, 1\\]"),
    (lambda d: d["states"].__setitem__(0, [1, 2]), "has 2 values"),
    (lambda d: d["cells"].__setitem__(0, [1, "a"]), "list of integers"),
    (lambda d: d["terminal"].__setitem__(0, 1), "booleans"),
    (lambda d: d.__setitem__("features", []), "features"),
    (lambda d: d.__setitem__("run_id", "7"), "run_id"),
])
def test_malformed_policies_are_refused(demo_fleet, breakage, message):
    _, fleet, _ = demo_fleet
    data = table_json(fleet.plans[0], fleet.plans[0].policy)
    PolicyTable.from_json(copy.deepcopy(data))  # the intact one is fine
    breakage(data)
    with pytest.raises(ValueError, match=message):
        PolicyTable.from_json(data)
    with pytest.raises(ValueError):
        PolicyTable.from_json([1, 2])


def test_tracking_follows_the_most_likely_path(tables):
    naive, _ = tables
    table = naive["tb1"]
    tracker = PolicyTracker(table)
    path, steps = [tracker.cell], 0
    while not tracker.terminal:
        target = tracker.target_cell()
        if target == tracker.cell:
            assert tracker.action_name in ("pick_up", "deposit", "wait") and tracker.complete_in_place()
        else:
            assert target in tracker.successor_cells()
            assert tracker.arrive(target) == "successor"
            path.append(tracker.cell)
        steps += 1
        assert steps < 100
    assert path == table.most_likely_path(100)
    assert tracker.state_vector[2] == 0  # nothing carried at the end


def tiny_table(run_id=None) -> PolicyTable:
    """A 1-D corridor with slip: from cell 0 the move reaches cell 1 (0.8) or stays (0.2);
    state = (x, y, carrying)."""
    states = [[0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 0, 1], [2, 0, 1]]
    return PolicyTable.from_json({
        "run_id": run_id, "features": ["x", "y", "carrying"], "action_names": ["east", "pick_up", "wait"],
        "start": 0, "states": states, "cells": [s[:2] for s in states], "actions": [0, 1, 0, 0, 2],
        "terminal": [False, False, False, False, True],
        "successors": [[[1, 0.8], [0, 0.2]], [[3, 1.0]], [[2, 1.0]], [[4, 0.9], [3, 0.1]], [[4, 1.0]]]})


def test_arrival_picks_the_matching_successor_or_relocalises():
    table = tiny_table()
    tracker = PolicyTracker(table)
    assert tracker.target_cell() == (1, 0) and tracker.successor_cells() == {(1, 0)}
    assert tracker.arrive((1, 0)) == "successor" and tracker.state == 1
    assert tracker.in_place() and tracker.complete_in_place() and tracker.state_vector == [1, 0, 1]
    # pushed two cells on: no successor there, but a state with that cell and the same load
    tracker = PolicyTracker(table, state=3)
    assert tracker.arrive((2, 0)) == "successor" and tracker.state == 4
    tracker = PolicyTracker(table, state=0)
    assert tracker.arrive((2, 0)) == "relocalised" and tracker.state_vector == [2, 0, 0]
    assert tracker.arrive((5, 5)) is None and tracker.state_vector == [2, 0, 0]  # unknown cell: unchanged


def test_switching_policies_keeps_the_state(tables):
    naive, after = tables
    tracker = PolicyTracker(naive["tb1"])
    for _ in range(6):  # a few steps in
        target = tracker.target_cell()
        tracker.complete_in_place() if target == tracker.cell else tracker.arrive(target)
    vector = tracker.state_vector
    assert tracker.switch(after["tb1"]) and tracker.state_vector == vector and tracker.table is after["tb1"]
    assert not tracker.switch(tiny_table())  # other features: refused, unchanged
    assert tracker.table is after["tb1"]


# -- the executor's state machine, driving a simulated robot -----------------------------------
def run_core(table, *, frame=GridFrame(0.5), config=None, noise=0.0, seed=0, until=120.0, dt=0.02,
             events=None, log=None):
    """Drive a DiffDrive with an ExecutionCore; return (core, visited cells, reports, commands)."""
    config = config or ExecutionConfig(odom_timeout=0.3, action_duration=0.1)
    core = ExecutionCore(frame, DriveController(max_linear=1.0, max_angular=6.0), config, log)
    x, y = frame.cell_center(table.cells[table.start])
    robot = DiffDrive(x, y, 0.0, 1.0, 6.0, noise, noise, noise / 2, np.random.default_rng(seed))
    core.set_policy(table)
    visited, reports, commands, now = [], [], [], 0.0
    while now < until:
        if events and events[0][0] <= now:
            events.pop(0)[1](core, now)
            continue
        core.on_pose(Pose(robot.x, robot.y, robot.yaw), now)
        command = core.step(now)
        commands.append((now, command.mode, command.linear, command.angular))
        reports += command.reports
        cell = frame.cell_of(robot.x, robot.y)
        if frame.distance_to_cell(robot.x, robot.y, cell) < 0.15 and (not visited or visited[-1] != cell):
            visited.append(cell)
        if command.mode == "done":
            break
        robot.step(command.linear, command.angular, dt)
        now += dt
    return core, visited, reports, commands


@pytest.mark.parametrize("noise", [0.0, 0.15])
def test_the_executor_drives_the_policy_to_the_end(tables, noise):
    naive, _ = tables
    for rid, table in naive.items():
        core, visited, reports, _ = run_core(table, noise=noise, seed=4)
        assert core.mode == "done"
        assert visited == table.most_likely_path(100), rid
        assert len(reports) == core.steps + 1  # the start and one per step
        assert reports[0] == list(table.states[table.start]) and table.terminal[table.index_of(reports[-1])]


def test_the_executor_holds_without_odometry_policy_or_go(tables):
    naive, _ = tables
    table = naive["tb1"]
    core = ExecutionCore(GridFrame(0.5), DriveController(), ExecutionConfig(odom_timeout=0.5, wait_for_go=True))
    assert core.step(0.0).mode == "no_odom"
    core.on_pose(Pose(0.5, -0.5, 0.0), 0.0)
    assert (core.step(0.1).mode, core.step(0.1).linear) == ("no_policy", 0.0)
    core.set_policy(table)
    assert core.step(0.2).mode == "waiting"
    core.go()
    command = core.step(0.3)
    assert command.mode in ("driving", "acting") and command.reports == [list(table.states[table.start])]
    moving = core.step(0.4)
    assert moving.mode == "driving" and (moving.linear, moving.angular) != (0.0, 0.0)
    stale = core.step(0.91)  # the last pose is older than odom_timeout
    assert (stale.mode, stale.linear, stale.angular) == ("no_odom", 0.0, 0.0)
    core.on_pose(Pose(0.5, -0.5, -math.pi / 2), 1.0)
    assert core.step(1.0).mode == "driving"


def test_poses_off_the_map_are_dropped(tables):
    naive, _ = tables
    core = ExecutionCore(GridFrame(0.5), DriveController(), ExecutionConfig())
    core.set_policy(naive["tb1"])  # cells 1..7 x 1..5: with a margin of one cell 0..8 x 0..6
    core.on_pose(Pose(0.0, 0.0, 0.0), 1.0)  # cell (0, 0): the wall around the map, accepted
    with pytest.raises(ValueError, match="off the map"):
        core.on_pose(Pose(20.0, -1.0, 0.0), 2.0)
    with pytest.raises(ValueError, match="off the map"):
        core.on_pose(Pose(1.0, 3.0, 0.0), 2.0)
    assert core.pose_time == 1.0  # the bad ones were not taken


def test_a_new_policy_is_adopted_at_the_next_decision(tables):
    naive, after = tables
    logs = []
    switch = [(3.0, lambda core, now: core.set_policy(after["tb1"]))]
    core, visited, reports, _ = run_core(naive["tb1"], events=switch, log=lambda lv, m: logs.append(m))
    assert core.mode == "done" and core.run_id == 7
    assert any("switched to the policy of run 7" in m for m in logs)
    # it went on from where it was, under the new policy: its path is neither policy's whole path
    assert after["tb1"].terminal[after["tb1"].index_of(reports[-1])]
    assert visited != naive["tb1"].most_likely_path(100)
    assert visited[:3] == naive["tb1"].most_likely_path(100)[:3]


def test_a_robot_in_an_unknown_cell_holds(tables):
    naive, _ = tables
    logs = []
    core = ExecutionCore(GridFrame(0.5), DriveController(), ExecutionConfig(), lambda lv, m: logs.append((lv, m)))
    core.set_policy(naive["tb1"])
    core.on_pose(Pose(*GridFrame(0.5).cell_center((4, 3)), 0.0), 0.0)  # coral: no state there
    command = core.step(0.0)
    assert (command.mode, command.linear, command.angular, command.reports) == ("lost", 0.0, 0.0, [])
    assert logs[-1][0] == "error"


# -- backoff ---------------------------------------------------------------------------------
def test_backoff_grows_exponentially_to_its_cap_and_resets():
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.failure() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.success() == 6 and backoff.failures == 0 and backoff.failure() == 0.5
    jittery = Backoff(initial=1.0, maximum=8.0, jitter=0.5, rng=random.Random(2))
    delays = [jittery.failure() for _ in range(5)]
    for k, delay in enumerate(delays):
        assert 0.5 * min(8.0, 2.0 ** k) <= delay <= min(8.0, 2.0 ** k)
    assert Backoff(initial=1, maximum=1e9).nominal(10_000) == 1e9  # no overflow
    for bad in (dict(initial=0), dict(initial=2, maximum=1), dict(factor=0.5), dict(jitter=1.0)):
        with pytest.raises(ValueError):
            Backoff(**bad)


# -- messages --------------------------------------------------------------------------------
def test_policy_updates_round_trip_and_bad_ones_are_refused():
    text = policy_update(3, {"id": 9, "method": "recon", "summary": {"nse_after": 1.0}, "robots": []},
                         {"tb1": [0.0, 2.5, 0.0], "tb2": [0.0]})
    update = parse_policy_update(text)
    assert (update.scenario_id, update.run_id, update.method) == (3, 9, "recon")
    assert update.penalties == {"tb1": [(1, 2.5)], "tb2": []}
    assert parse_policy_update(policy_update(3, None, {})).run_id is None
    for bad, reason in [("not json", "not JSON"), ("[1]", "JSON object"), ('{"type": "monitor"}', "type"),
                        ('{"type": "policy"}', "scenario_id"), ('{"type": "policy", "scenario_id": "1"}', "integer"),
                        ('{"type": "policy", "scenario_id": 1, "run_id": 1.5}', "run_id"),
                        ('{"type": "policy", "scenario_id": 1, "penalties": {"tb1": [[0, -1]]}}', "bad penalty"),
                        ('{"type": "policy", "scenario_id": 1, "penalties": []}', "penalties")]:
        with pytest.raises(ValueError, match=reason):
            parse_policy_update(bad)
    with pytest.raises(ValueError):
        parse_status('{"type": "status"}')


def test_odometry_and_velocity_validation():
    pose = pose_from_odometry((1.0, 2.0, 0.0), quaternion_from_yaw(0.5))
    assert (pose.x, pose.y, pose.yaw) == pytest.approx((1.0, 2.0, 0.5))
    for position, orientation in [((math.nan, 0, 0), (0, 0, 0, 1)), ((0, math.inf, 0), (0, 0, 0, 1)),
                                  ((0, 0, 0), (0, 0, 0, 0)), ((0, 0, 0), (0, 0, math.nan, 1))]:
        with pytest.raises(ValueError):
            pose_from_odometry(position, orientation)
    check_velocity(0.2, -1.0, 0.22, 2.84)
    for v, w in [(math.nan, 0), (0, math.inf), (5.0, 0)]:
        with pytest.raises(ValueError):
            check_velocity(v, w, 0.22, 2.84)


# -- the links, against a fake service --------------------------------------------------------
class FakeService:
    def __init__(self, policy: dict) -> None:
        self.policy_json, self.up, self.states, self.lock = policy, True, [], threading.Lock()
        self.base_url = "fake"

    def _check(self):
        if not self.up:
            raise ServiceUnavailable("connection refused")

    def policy(self, scenario_id, robot_id):
        self._check()
        return copy.deepcopy(self.policy_json)

    def report_state(self, scenario_id, robot_id, state):
        self._check()
        if state == [-1]:
            raise ServiceRejected(422, "not a state")
        with self.lock:
            self.states.append(state)
        return {"state_index": 0, "joint_penalty": 0.0}


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_robot_link_keeps_the_last_good_policy_and_backs_off(demo_fleet):
    _, fleet, _ = demo_fleet
    service = FakeService(table_json(fleet.plans[0], fleet.plans[0].policy, run_id=None))
    logs = []
    link = RobotLink(service, 1, "tb1", Backoff(initial=0.05, maximum=0.2), lambda lv, m: logs.append((lv, m)),
                     poll_period=0.05)
    link.start()
    try:
        wait_for(lambda: link._good is not None)
        assert link.take_policy().run_id is None and link.take_policy() is None
        service.up = False
        link.want_policy(3)
        wait_for(lambda: link.backoff.failures >= 3)
        warnings = [m for lv, m in logs if lv == "warn"]
        assert all("keeping the last good policy (run naive)" in m for m in warnings)
        assert "retry 1 in 0.1 s" in warnings[0] or "retry 1 in 0.0 s" in warnings[0]
        assert link.take_policy() is None  # nothing new, the old one stays
        service.policy_json = dict(service.policy_json, run_id=3)
        service.up = True
        wait_for(lambda: link._good.run_id == 3)
        assert link.take_policy().run_id == 3 and link.backoff.failures == 0
        assert any("reachable again" in m for _, m in logs)
        # reports: refused ones are dropped, later ones still go
        link.report([-1])
        wait_for(lambda: link.reports_refused == 1)
        link.report([1, 1, 0, 0, 0])
        wait_for(lambda: service.states == [[1, 1, 0, 0, 0]])
    finally:
        link.stop()


def test_the_robot_link_keeps_only_the_newest_report_while_the_service_is_down(demo_fleet):
    _, fleet, _ = demo_fleet
    service = FakeService(table_json(fleet.plans[0], fleet.plans[0].policy))
    service.up = False
    link = RobotLink(service, 1, "tb1", Backoff(initial=0.05, maximum=0.05), lambda lv, m: None, poll_period=0)
    link.start()
    try:
        for k in range(5):
            link.report([k])
        service.up = True
        wait_for(lambda: service.states)
        time.sleep(0.1)
        assert service.states == [[4]] and link.reports_replaced == 4
    finally:
        link.stop()


class FakeOperatorService:
    def __init__(self):
        self.current, self.runs, self.up = None, {}, True

    def scenario(self, sid):
        if not self.up:
            raise ServiceUnavailable("down")
        return {"id": sid, "current_run_id": self.current, "robots": [{"id": "tb1"}, {"id": "tb2"}]}

    def run(self, run_id):
        return self.runs[run_id]

    def penalties(self, sid, rid):
        return {"penalties": [0.0, 1.0] if self.current else [0.0, 0.0]}

    def monitor(self, sid):
        if not self.up:
            raise ServiceUnavailable("down")
        return {"scenario_id": sid, "current_penalty": 0.0, "nse_state_rate": 0.5, "observations": 4}


def test_the_bridge_link_announces_runs_and_relays_the_monitor():
    service = FakeOperatorService()
    link = BridgeLink(service, 1, Backoff(initial=0.02, maximum=0.05), lambda lv, m: None, poll_period=0.02,
                      monitor_period=0.02)
    out = []

    def drain():
        while not link.outbox.empty():
            out.append(link.outbox.get())

    link.start()
    try:
        wait_for(lambda: drain() or any(t == "policy" for t, _ in out))
        first = parse_policy_update(next(text for t, text in out if t == "policy"))
        assert first.run_id is None and first.penalties == {"tb1": [], "tb2": []}
        service.runs[5] = {"id": 5, "method": "recon", "status": "running", "phase": "blame", "progress": 0.5,
                           "summary": None, "robots": []}
        link.watch(5)
        wait_for(lambda: drain() or any(t == "run" and json.loads(x)["status"] == "running" for t, x in out))
        service.runs[5] = dict(service.runs[5], status="succeeded", phase="done", progress=1.0)
        service.current = 5
        wait_for(lambda: drain() or any(t == "policy" and parse_policy_update(x).run_id == 5 for t, x in out))
        update = [parse_policy_update(x) for t, x in out if t == "policy"][-1]
        assert update.method == "recon" and update.penalties["tb1"] == [(1, 1.0)]
        assert any(t == "monitor" and json.loads(x)["nse_state_rate"] == 0.5 for t, x in out)
        assert len([1 for t, _ in out if t == "policy"]) == 2  # one announcement per change
    finally:
        link.stop()


def test_the_client_reports_an_unreachable_service_quickly():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServiceClient(f"http://127.0.0.1:{port}", "t", timeout=1.0)
    assert client.base_url.endswith("/api/v1")
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        client.health()
    assert time.monotonic() - start < 2.0
    with pytest.raises(ValueError):
        ServiceClient("ftp://x")
