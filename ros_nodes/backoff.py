"""Retry policy for an unreachable service: exponential backoff with a cap and optional jitter."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5  # s: delay after the first failure
    maximum: float = 30.0  # s: cap
    factor: float = 2.0
    jitter: float = 0.0  # fraction: the delay is scaled by a uniform factor in [1 - jitter, 1]
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial > 0):
            raise ValueError(f"initial backoff must be positive, got {self.initial}")
        if not (math.isfinite(self.maximum) and self.maximum >= self.initial):
            raise ValueError(f"maximum backoff must be >= initial ({self.initial}), got {self.maximum}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")

    def nominal(self, failures: int) -> float:
        """The delay after `failures` consecutive failures, without jitter (0 for none)."""
        if failures <= 0:
            return 0.0
        exponent = min(failures - 1, 64)  # no overflow for long outages
        return min(self.maximum, self.initial * self.factor ** exponent)

    def failure(self) -> float:
        """Record a failure; return how long to wait before the next attempt."""
        self.failures += 1
        delay = self.nominal(self.failures)
        if self.jitter:
            delay *= 1.0 - self.jitter * self.rng.random()
        return delay

    def success(self) -> int:
        """Record a success; return how many failures it ended."""
        ended, self.failures = self.failures, 0
        return ended
