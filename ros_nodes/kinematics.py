"""The simulated Turtlebot: a kinematic differential drive with optional noise."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .geometry import wrap_angle


@dataclass
class DiffDrive:
    """Pose (x, y, yaw) integrated from commanded (linear, angular) velocities.

    Noise: each step the executed velocities are the commanded ones (clipped to the limits)
    times (1 + N(0, linear_noise)) and (1 + N(0, angular_noise)), plus an angular drift
    N(0, drift_noise) rad/s; all zero gives an exact robot.
    """

    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    max_linear: float = 0.22
    max_angular: float = 2.84
    linear_noise: float = 0.0
    angular_noise: float = 0.0
    drift_noise: float = 0.0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    linear: float = 0.0  # executed velocities of the last step
    angular: float = 0.0

    def step(self, linear: float, angular: float, dt: float) -> None:
        if not (math.isfinite(linear) and math.isfinite(angular)):
            raise ValueError(f"velocity ({linear}, {angular}) is not finite")
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"time step {dt} must be finite and >= 0")
        v = max(-self.max_linear, min(self.max_linear, linear))
        w = max(-self.max_angular, min(self.max_angular, angular))
        if self.linear_noise > 0 and v != 0.0:
            v *= 1.0 + self.rng.normal(0.0, self.linear_noise)
        if self.angular_noise > 0 and w != 0.0:
            w *= 1.0 + self.rng.normal(0.0, self.angular_noise)
        if self.drift_noise > 0 and (v != 0.0 or w != 0.0):
            w += self.rng.normal(0.0, self.drift_noise)
        if abs(w) < 1e-9:  # straight
            self.x += v * dt * math.cos(self.yaw)
            self.y += v * dt * math.sin(self.yaw)
        else:  # exact arc
            yaw2 = self.yaw + w * dt
            self.x += v / w * (math.sin(yaw2) - math.sin(self.yaw))
            self.y -= v / w * (math.cos(yaw2) - math.cos(self.yaw))
            self.yaw = yaw2
        self.yaw = wrap_angle(self.yaw)
        self.linear, self.angular = v, w
