"""Drive a differential-drive robot to a point: turn in place towards it when the heading
error is large, otherwise drive with a proportional speed that slows down near the point."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import wrap_angle


@dataclass(frozen=True)
class DriveController:
    max_linear: float = 0.22  # m/s (Turtlebot3 burger)
    max_angular: float = 2.84  # rad/s
    linear_gain: float = 3.0  # 1/s: speed per metre of distance left
    angular_gain: float = 4.0  # 1/s: turn rate per radian of heading error
    heading_tolerance: float = 0.35  # rad: above this, turn in place
    stop_distance: float = 0.01  # m: closer than this the command is zero

    def __post_init__(self) -> None:
        for name in ("max_linear", "max_angular", "linear_gain", "angular_gain", "heading_tolerance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")

    def command(self, x: float, y: float, yaw: float, target_x: float, target_y: float) -> tuple[float, float]:
        """(linear, angular) velocity towards the target from pose (x, y, yaw)."""
        dx, dy = target_x - x, target_y - y
        distance = math.hypot(dx, dy)
        if distance < self.stop_distance:
            return 0.0, 0.0
        error = wrap_angle(math.atan2(dy, dx) - yaw)
        angular = max(-self.max_angular, min(self.max_angular, self.angular_gain * error))
        if abs(error) > self.heading_tolerance:
            return 0.0, angular
        linear = min(self.max_linear, self.linear_gain * distance) * math.cos(error)
        return linear, angular
