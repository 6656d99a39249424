"""The executor's state machine, free of ROS: poses and policies in, velocity commands and
state reports out. `ExecutorNode` calls `step()` at its control rate.

Modes (published on the robot's status topic):
  no_odom     no pose yet, or the newest is older than `odom_timeout`: zero velocity
  no_policy   no policy fetched yet: zero velocity (the link keeps retrying)
  waiting     `wait_for_go` is set and no go signal came yet: zero velocity
  acting      carrying out an in-place action (pick up, deposit, wait) for `action_duration`
  driving     driving to the target cell
  lost        the robot is in a cell its policy cannot place it in: zero velocity, logged
  done        the task is finished (terminal state): zero velocity
A new policy is adopted at the next decision point (after the current action completes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .controller import DriveController
from .geometry import Cell, GridFrame
from .messages import Pose
from .policy import PolicyTable, PolicyTracker


@dataclass
class Command:
    linear: float
    angular: float
    mode: str
    reports: list[list[int]] = field(default_factory=list)


@dataclass
class ExecutionConfig:
    odom_timeout: float = 0.5  # s
    action_duration: float = 1.0  # s spent on an in-place action
    arrive_tolerance: float = 0.05  # m: within this of a cell's centre the robot is in that cell
    wait_for_go: bool = False
    map_margin: int = 1  # cells around the policy's cells still accepted as on the map

    def __post_init__(self) -> None:
        if not self.odom_timeout > 0 or not self.action_duration >= 0 or not self.arrive_tolerance > 0:
            raise ValueError("odom_timeout and arrive_tolerance must be > 0, action_duration >= 0")


Log = Callable[[str, str], None]  # (level, message)


class ExecutionCore:
    def __init__(self, frame: GridFrame, controller: DriveController, config: ExecutionConfig,
                 log: Log | None = None) -> None:
        self.frame, self.controller, self.config = frame, controller, config
        self.log = log or (lambda level, message: None)
        self.pose: Pose | None = None
        self.pose_time: float | None = None
        self.tracker: PolicyTracker | None = None
        self.pending: PolicyTable | None = None
        self.started = False
        self.go_received = False
        self.phase = "decide"  # decide | acting | driving
        self.act_until = 0.0
        self.target: Cell | None = None
        self.mode = "no_odom"
        self.steps = 0
        self._odom_lost_logged = False

    # -- inputs ------------------------------------------------------------------------------
    @property
    def run_id(self) -> int | None:
        table = self.pending or (self.tracker.table if self.tracker else None)
        return table.run_id if table else None

    @property
    def has_policy(self) -> bool:
        return self.tracker is not None

    def on_pose(self, pose: Pose, now: float) -> None:
        """Accept a pose, or raise ValueError if it lies off the map (then it is dropped)."""
        cell = self.frame.cell_of(pose.x, pose.y)
        table = self.tracker.table if self.tracker else None
        if table is not None:
            x0, y0, x1, y1 = table.bounds()
            m = self.config.map_margin
            if not (x0 - m <= cell[0] <= x1 + m and y0 - m <= cell[1] <= y1 + m):
                raise ValueError(f"pose ({pose.x:.2f}, {pose.y:.2f}) is in cell {cell}, off the map "
                                 f"(cells {x0 - m}..{x1 + m} x {y0 - m}..{y1 + m})")
        self.pose, self.pose_time = pose, now

    def set_policy(self, table: PolicyTable) -> None:
        if self.tracker is None or not self.started:
            self.tracker = PolicyTracker(table)
            self.log("info", f"following policy of run {table.run_id if table.run_id is not None else 'naive'}")
        else:
            self.pending = table

    def go(self) -> None:
        self.go_received = True

    # -- one control tick --------------------------------------------------------------------
    def step(self, now: float) -> Command:
        if self.pose is None or self.pose_time is None or now - self.pose_time > self.config.odom_timeout:
            if self.pose is not None and not self._odom_lost_logged:
                self.log("warn", f"odometry is older than {self.config.odom_timeout} s: stopping until it returns")
                self._odom_lost_logged = True
            return self._hold("no_odom")
        if self._odom_lost_logged:
            self.log("info", "odometry is back")
            self._odom_lost_logged = False
        if self.tracker is None:
            return self._hold("no_policy")
        if self.config.wait_for_go and not self.go_received:
            return self._hold("waiting")
        reports: list[list[int]] = []
        if not self.started:
            self.started = True
            here = self.frame.cell_of(self.pose.x, self.pose.y)
            if here != self.tracker.cell:
                if self.tracker.relocalise(here):
                    start = self.tracker.table.cells[self.tracker.table.start]
                    self.log("warn", f"robot starts in cell {here}, not at its task's start {start}: relocalised")
                else:
                    self.log("error", f"robot is in cell {here}, which its policy does not know: holding")
                    self.phase = "lost"
            if self.phase != "lost":
                reports.append(self.tracker.state_vector)
        command = self._advance(now, reports)
        command.reports = reports
        return command

    def _hold(self, mode: str, reports: list[list[int]] | None = None) -> Command:
        self.mode = mode
        return Command(0.0, 0.0, mode, reports or [])

    def _advance(self, now: float, reports: list[list[int]]) -> Command:
        assert self.tracker is not None and self.pose is not None
        for _ in range(3):  # at most: finish an action, decide, start the next one
            if self.phase == "lost":
                here = self.frame.cell_of(self.pose.x, self.pose.y)
                if self.frame.distance_to_cell(self.pose.x, self.pose.y, here) < self.config.arrive_tolerance \
                        and self.tracker.relocalise(here):
                    self.log("info", f"relocalised in cell {here}")
                    reports.append(self.tracker.state_vector)
                    self.phase = "decide"
                    continue
                return self._hold("lost")
            if self.phase == "acting":
                if now < self.act_until:
                    return self._hold("acting")
                if not self.tracker.complete_in_place():
                    self.log("error", f"action {self.tracker.action_name} has no outcome in cell "
                                      f"{self.tracker.cell}: holding")
                    self.phase = "lost"
                    return self._hold("lost")
                self.steps += 1
                reports.append(self.tracker.state_vector)
                self.phase = "decide"
                continue
            if self.phase == "decide":
                if self.pending is not None:
                    table, self.pending = self.pending, None
                    if self.tracker.switch(table):
                        run = table.run_id if table.run_id is not None else "naive"
                        self.log("info", f"switched to the policy of run {run}")
                    else:
                        self.log("error", f"state {self.tracker.state_vector} is not in the new policy of run "
                                          f"{table.run_id}: keeping the old one")
                if self.tracker.terminal:
                    return self._hold("done")
                target = self.tracker.target_cell()
                if target is None:
                    self.log("error", f"state {self.tracker.state_vector} has no successor under its policy: holding")
                    self.phase = "lost"
                    return self._hold("lost")
                self.target = target
                if target == self.tracker.cell:
                    self.phase, self.act_until = "acting", now + self.config.action_duration
                    continue
                self.phase = "driving"
            # driving
            arrived = self._arrival()
            if arrived is not None:
                outcome = self.tracker.arrive(arrived)
                if outcome is None:  # cannot happen for a successor cell; kept for safety
                    self.phase = "lost"
                    continue
                if outcome == "relocalised":
                    self.log("warn", f"robot reached cell {arrived}, not an outcome of "
                                     f"{self.tracker.action_name}: relocalised")
                self.steps += 1
                reports.append(self.tracker.state_vector)
                self.phase = "decide"
                continue
            tx, ty = self.frame.cell_center(self.target)
            linear, angular = self.controller.command(self.pose.x, self.pose.y, self.pose.yaw, tx, ty)
            self.mode = "driving"
            return Command(linear, angular, "driving")
        return self._hold(self.mode)

    def _arrival(self) -> Cell | None:
        """A cell other than the current one whose centre the robot has reached."""
        assert self.tracker is not None and self.pose is not None
        x, y, tol = self.pose.x, self.pose.y, self.config.arrive_tolerance
        for cell in sorted(self.tracker.successor_cells(), key=lambda c: c != self.target):
            if self.frame.distance_to_cell(x, y, cell) < tol:
                return cell
        here = self.frame.cell_of(x, y)
        if here != self.tracker.cell and self.frame.distance_to_cell(x, y, here) < tol \
                and self.tracker.table.states_in(here):
            return here
        return None

    def status(self) -> dict:
        tracker = self.tracker
        return {
            "type": "status", "mode": self.mode, "run_id": self.run_id if tracker else None,
            "has_policy": tracker is not None, "steps": self.steps,
            "state_index": tracker.state if tracker else None,
            "state": tracker.state_vector if tracker else None,
            "cell": list(tracker.cell) if tracker else None,
            "target": list(self.target) if self.target and self.mode in ("driving", "acting") else None,
            "pose": [round(self.pose.x, 3), round(self.pose.y, 3), round(self.pose.yaw, 3)] if self.pose else None,
        }
