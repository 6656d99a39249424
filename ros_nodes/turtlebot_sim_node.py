"""Kinematic Turtlebot simulator node: integrates `cmd_vel` (geometry_msgs/Twist) with a
differential-drive model (`kinematics.DiffDrive`, optional noise) and publishes `odom`
(nav_msgs/Odometry) at `rate`. Without a command for `cmd_timeout` s it stops, as a
Turtlebot base does. Parameters: `params.TURTLEBOT_SIM`."""
from __future__ import annotations

import time
import zlib

import numpy as np
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node

from . import params as P
from .geometry import quaternion_from_yaw
from .kinematics import DiffDrive
from .messages import check_velocity
from .runtime import CMD_VEL, ODOM_OUT, declare, main as run_main


class TurtlebotSimNode(Node):
    def __init__(self, **node_options) -> None:
        super().__init__("turtlebot_sim", **node_options)
        p = self.p = declare(self, P.TURTLEBOT_SIM)
        if not p["rate"] > 0 or not p["cmd_timeout"] > 0:
            raise ValueError("rate and cmd_timeout must be > 0")
        for name in ("linear_noise", "angular_noise", "drift_noise"):
            if not p[name] >= 0:
                raise ValueError(f"{name} must be >= 0")
        # the same seed gives different noise to robots in different namespaces
        seed = np.random.SeedSequence([int(p["seed"]) & 0xFFFFFFFF, zlib.crc32(self.get_namespace().encode())])
        self.robot = DiffDrive(p["start_x"], p["start_y"], p["start_yaw"], p["max_linear_speed"],
                               p["max_angular_speed"], p["linear_noise"], p["angular_noise"], p["drift_noise"],
                               np.random.default_rng(seed))
        self.command = (0.0, 0.0)
        self.command_time = -1e9
        self.last_step = time.monotonic()
        self.odom_pub = self.create_publisher(Odometry, "odom", ODOM_OUT)
        self.create_subscription(Twist, "cmd_vel", self._on_cmd_vel, CMD_VEL)
        self.create_timer(1.0 / p["rate"], self._tick)
        self.get_logger().info(f"simulated Turtlebot at ({p['start_x']}, {p['start_y']}, {p['start_yaw']})")

    def _on_cmd_vel(self, msg: Twist) -> None:
        try:
            check_velocity(msg.linear.x, msg.angular.z, self.p["max_linear_speed"], self.p["max_angular_speed"])
        except ValueError as error:
            self.get_logger().warning(f"dropped cmd_vel: {error}", throttle_duration_sec=2.0)
            return
        self.command, self.command_time = (msg.linear.x, msg.angular.z), time.monotonic()

    def _tick(self) -> None:
        now = time.monotonic()
        dt, self.last_step = min(now - self.last_step, 0.2), now  # a stalled process does not teleport
        linear, angular = self.command if now - self.command_time <= self.p["cmd_timeout"] else (0.0, 0.0)
        self.robot.step(linear, angular, dt)
        msg = Odometry()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id, msg.child_frame_id = self.p["frame_id"], self.p["child_frame_id"]
        msg.pose.pose.position.x, msg.pose.pose.position.y = self.robot.x, self.robot.y
        q = quaternion_from_yaw(self.robot.yaw)
        o = msg.pose.pose.orientation
        o.x, o.y, o.z, o.w = q
        msg.twist.twist.linear.x, msg.twist.twist.angular.z = self.robot.linear, self.robot.angular
        self.odom_pub.publish(msg)


def main(argv: list[str] | None = None) -> int:
    return run_main(TurtlebotSimNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
