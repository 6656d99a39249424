"""Robot executor node (one per robot, in the robot's namespace, e.g. /tb1).

Subscribes `odom` (nav_msgs/Odometry), the policy announcements (`policy_topic`) and the go
signal (`go_topic`, std_msgs/Empty); publishes `cmd_vel` (geometry_msgs/Twist) at
`control_rate` and `status` (std_msgs/String, JSON). Decisions: `execution.ExecutionCore`;
talking to the service: `links.RobotLink` (a background thread). Parameters: `params.EXECUTOR`.
"""
from __future__ import annotations

import json
import time

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Empty, String

from . import params as P
from .backoff import Backoff
from .client import ServiceClient
from .controller import DriveController
from .execution import ExecutionConfig, ExecutionCore
from .geometry import GridFrame
from .links import RobotLink
from .messages import parse_policy_update, pose_from_odometry
from .runtime import CMD_VEL, EVENTS, LATCHED, ODOM_IN, declare, logger_function, main as run_main


class ExecutorNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("executor", **node_options)
        p = self.p = declare(self, P.EXECUTOR)
        if not p["robot_id"]:
            raise ValueError("robot_id must not be empty")
        if not p["control_rate"] > 0 or not p["status_rate"] > 0:
            raise ValueError("control_rate and status_rate must be > 0")
        self.log = logger_function(self)
        frame = GridFrame(p["cell_size"], p["origin_x"], p["origin_y"], p["origin_yaw"], p["flip_y"])
        controller = DriveController(p["max_linear_speed"], p["max_angular_speed"], p["linear_gain"],
                                     p["angular_gain"], p["heading_tolerance"])
        config = ExecutionConfig(p["odom_timeout"], p["action_duration"], p["arrive_tolerance"], p["wait_for_go"])
        self.core = ExecutionCore(frame, controller, config, self.log)
        client = ServiceClient(p["service_url"], p["token"], p["request_timeout"])
        self.link = RobotLink(client, p["scenario_id"], p["robot_id"],
                              Backoff(p["backoff_initial"], p["backoff_max"], jitter=0.2), self.log,
                              poll_period=p["policy_poll_period"])
        self.cmd_pub = self.create_publisher(Twist, "cmd_vel", CMD_VEL)
        self.status_pub = self.create_publisher(String, "status", EVENTS)
        self.create_subscription(Odometry, "odom", self._on_odom, ODOM_IN)
        self.create_subscription(String, p["policy_topic"], self._on_policy_update, LATCHED)
        self.create_subscription(Empty, p["go_topic"], self._on_go, LATCHED)
        self._last_status: tuple | None = None
        self._last_status_time = 0.0
        self._dropped = 0
        self.create_timer(1.0 / p["control_rate"], self._tick)
        self.link.start()
        self.log("info", f"executor of robot {p['robot_id']} in scenario {p['scenario_id']} at {client.base_url}; "
                         f"cell {frame.cell_size} m, origin ({frame.origin_x}, {frame.origin_y})")

    # -- callbacks: validate, hand over ------------------------------------------------------
    def _on_odom(self, msg: Odometry) -> None:
        position, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            pose = pose_from_odometry((position.x, position.y, position.z), (q.x, q.y, q.z, q.w))
        except ValueError as error:
            self._dropped += 1
            self.get_logger().warning(f"dropped odometry: {error}", throttle_duration_sec=2.0)
            return
        try:
            self.core.on_pose(pose, time.monotonic())
        except ValueError as error:  # off the map
            self._dropped += 1
            self.get_logger().warning(f"dropped odometry: {error}", throttle_duration_sec=2.0)

    def _on_policy_update(self, msg: String) -> None:
        try:
            update = parse_policy_update(msg.data)
        except ValueError as error:
            self.get_logger().warning(f"dropped policy update: {error}")
            return
        if update.scenario_id != self.p["scenario_id"]:
            return
        self.log("info", f"the bridge announced run {update.run_id if update.run_id is not None else 'naive'} "
                         f"({update.method})")
        self.link.want_policy(update.run_id)

    def _on_go(self, _msg: Empty) -> None:
        if not self.core.go_received:
            self.log("info", "go")
        self.core.go()

    def _tick(self) -> None:
        table = self.link.take_policy()
        if table is not None:
            self.core.set_policy(table)
        now = time.monotonic()
        command = self.core.step(now)
        self._publish_twist(command.linear, command.angular)
        for state in command.reports:
            self.link.report(state)
        status = self.core.status()
        status.update(robot_id=self.p["robot_id"], dropped_messages=self._dropped,
                      service_error=self.link.last_error, reports_sent=self.link.reports_sent,
                      reports_replaced=self.link.reports_replaced)
        key = (status["mode"], status["state_index"], status["run_id"])
        if key != self._last_status or now - self._last_status_time >= 1.0 / self.p["status_rate"]:
            self.status_pub.publish(String(data=json.dumps(status)))
            self._last_status, self._last_status_time = key, now

    def _publish_twist(self, linear: float, angular: float) -> None:
        twist = Twist()
        twist.linear.x, twist.angular.z = float(linear), float(angular)
        self.cmd_pub.publish(twist)

    def on_exit(self) -> None:
        """Stop the robot before the process ends (Ctrl-C, SIGTERM)."""
        self.link.stop(timeout=0.5)
        for _ in range(3):
            self._publish_twist(0.0, 0.0)
        if hasattr(self.cmd_pub, "wait_for_all_acked"):
            self.cmd_pub.wait_for_all_acked(timeout=_duration(0.5))
        self.log("info", "stopped the robot (zero velocity) on exit")


def _duration(seconds: float):
    from rclpy.duration import Duration

    return Duration(seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    return run_main(ExecutorNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
