"""Shared pieces of the performance benchmarks (docs/PERFORMANCE.md): the machine, timing,
and a big synthetic grid MDP built through the planner's own domain interface."""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from typing import Callable

import numpy as np

from planner.domains.base import move_outcomes
from planner.mdp import TabularMDP, build_mdp
from planner.problem import Feature, RobotProblem


def machine() -> str:
    """CPU model, cores, memory, load and library versions, as one block of text."""
    import scipy

    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: {model}, {os.cpu_count()} logical CPUs, {mem_kib / 2**20:.1f} GiB RAM; "
            f"load average (1, 5, 15 min) at start: {load}\n"
            f"software: Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """The fastest of `repeat` wall-clock timings (the machine is shared: the minimum is the
    least disturbed run), and the last result."""
    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_rss_mib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (MiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


class GridProblem(RobotProblem):
    """A robot crossing a big open grid with random rocks to the far corner: the four moves
    (slipping sideways with probability `slip`) and wait, every step costing 1."""

    actions = ("north", "south", "east", "west", "wait")

    def __init__(self, width: int, height: int, slip: float = 0.1, rocks: float = 0.1, seed: int = 0,
                 discount: float = 0.99) -> None:
        rng = np.random.default_rng(seed)
        self.walkable = rng.random((height, width)) >= rocks
        self.walkable[0, 0] = self.walkable[height - 1, width - 1] = True
        self.slip, self.discount, self.goal = slip, discount, (width - 1, height - 1)
        self.features = (Feature("x", "local", tuple(map(str, range(width)))),
                         Feature("y", "local", tuple(map(str, range(height)))))

    def start_state(self) -> np.ndarray:
        return np.array([0, 0])

    def transition_outcomes(self, states: np.ndarray, action: int):
        if self.actions[action] == "wait":
            return [(states.copy(), np.ones(len(states)))]
        return [(np.stack([nx, ny], axis=1), np.full(len(states), p))
                for nx, ny, p in move_outcomes(states[:, 0], states[:, 1], action, self.slip, self.walkable)]

    def task_reward(self, states: np.ndarray, action: int) -> np.ndarray:
        return -np.ones(len(states))

    def is_terminal(self, states: np.ndarray) -> np.ndarray:
        return (states[:, 0] == self.goal[0]) & (states[:, 1] == self.goal[1])


def big_grid_mdp(side: int = 340, seed: int = 0) -> TabularMDP:
    """340 x 340 with 10% rocks: 103,842 reachable states, 5 actions, 1.34 M transitions."""
    return build_mdp(GridProblem(side, side, seed=seed))


def hazard_penalty(mdp: TabularMDP, fraction: float = 0.1, seed: int = 1) -> np.ndarray:
    """A secondary objective for LVI: a penalty of 1 on a random `fraction` of the states."""
    rng = np.random.default_rng(seed)
    return np.where((rng.random(mdp.n_states) < fraction) & ~mdp.terminal, 1.0, 0.0)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"
