"""Scenarios (N robots with tasks on a map) and planning a whole fleet.

Robots whose map and task are the same (start, items, kind) share one solved MDP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .budget import DEFAULT_BUDGET, TaskBudget
from .mdp import MAX_STACKED, TabularMDP, build_mdps
from .problem import RobotProblem
from .solvers import DEFAULT_TOLERANCE, ValueResult, expected_steps, value_iteration
from .world import Task, World

if TYPE_CHECKING:
    from .backends import Backend

MAX_ROBOTS = 100_000


@dataclass(frozen=True)
class Scenario:
    """Robots with tasks on a map, and the task budget every robot has when it replans."""

    world: World
    tasks: tuple[Task, ...]
    budget: TaskBudget = TaskBudget()

    @property
    def n_robots(self) -> int:
        return len(self.tasks)


def generate_scenario(world: World, n_robots: int, seed: int = 0,
                      slack: "str | float | TaskBudget" = DEFAULT_BUDGET) -> Scenario:
    """The map's own robots first, then seeded random robots up to `n_robots`.

    `slack` is each robot's task budget (`planner.budget.TaskBudget.parse`): "10%" of its
    optimal task cost (the default) or an absolute number of task-value units.
    """
    from .domains import get_domain

    if isinstance(n_robots, bool) or not isinstance(n_robots, (int, np.integer)):
        raise ValueError(f"the number of robots must be an integer, got {n_robots!r}")
    if n_robots < 1:
        raise ValueError(f"the number of robots must be at least 1, got {n_robots}")
    if n_robots > MAX_ROBOTS:
        raise ValueError(f"at most {MAX_ROBOTS} robots, got {n_robots}")
    budget = TaskBudget.parse(slack)
    domain = get_domain(world.domain)
    rng = np.random.default_rng(seed)
    tasks = list(world.robots[:n_robots])
    used = {t.robot_id for t in tasks}
    number = 0
    while len(tasks) < n_robots:
        robot_id = f"r{number}"
        number += 1
        if robot_id in used:
            continue
        start = world.starts[int(rng.integers(len(world.starts)))]
        tasks.append(domain.random_task(world, robot_id, start, rng))
    return Scenario(world, tuple(tasks), budget)


def task_key(task: Task) -> tuple:
    """Robots with equal keys (on one map) have identical MDPs."""
    return (task.start, task.kind, task.items, task.option, task.count)


@dataclass
class RobotPlan:
    """A robot's solved task: its MDP (shared with identical robots) and optimal policy."""

    task: Task
    problem: RobotProblem
    mdp: TabularMDP
    task_solution: ValueResult
    policy: np.ndarray

    @property
    def task_value(self) -> float:
        return float(self.task_solution.values[self.mdp.start])


def _solve_tasks(job: tuple[World, Sequence[Task], float]) -> list[tuple[RobotProblem, TabularMDP, ValueResult]]:
    """Distinct tasks on one map: build their MDPs (`build_mdps`: a domain that stacks
    explores them together) and solve each (a job for a backend)."""
    from .domains import get_domain

    world, tasks, tolerance = job
    domain = get_domain(world.domain)
    problems = [domain.make_problem(world, task) for task in tasks]
    return [(problem, mdp, value_iteration(mdp, tolerance=tolerance))
            for problem, mdp in zip(problems, build_mdps(problems))]


def plan_fleet(
    scenario: Scenario,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: Callable[[int, int], None] | None = None,
    backend: "str | Backend" = "local",
) -> list[RobotPlan]:
    """Build and solve every robot's MDP for its task alone (the naive policies).

    Each distinct task (`task_key`) is solved once; the distinct tasks go in chunks (up to
    `MAX_STACKED`, about as many chunks as workers) to `backend` (`planner.backends`: "local"
    uses this machine's cores, "serial" this process, "ray" a cluster); the plans are the same
    whichever runs them and however they are chunked. `progress(robots_done, total)`.
    """
    from .backends import get_backend

    keys = [task_key(task) for task in scenario.tasks]
    first: dict[tuple, int] = {}  # task key -> its first robot
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    job_index = {key: j for j, key in enumerate(first)}
    job_of = [job_index[key] for key in keys]
    distinct = [scenario.tasks[i] for i in first.values()]
    runner = get_backend(backend)
    size = max(1, min(MAX_STACKED, -(-len(distinct) // max(1, int(getattr(runner, "n_workers", 1))))))
    chunks = [distinct[k:k + size] for k in range(0, len(distinct), size)]
    robots_of_task = np.bincount(job_of, minlength=len(distinct))
    total = len(scenario.tasks)

    def report(done: int, n_chunks: int) -> None:
        if progress is not None:
            progress(int(robots_of_task[:done * size].sum()), total)

    solved = [one for chunk in runner.map(_solve_tasks, [(scenario.world, c, tolerance) for c in chunks],
                                          progress=report) for one in chunk]
    plans = []
    for task, j in zip(scenario.tasks, job_of):
        problem, mdp, result = solved[j]
        plans.append(RobotPlan(task, problem, mdp, result, result.policy))
    return plans


def plan_summary(plans: Iterable[RobotPlan]) -> list[dict]:
    """Per robot: task value from its start and expected steps to finish."""
    cache: dict[int, np.ndarray] = {}
    rows = []
    for plan in plans:
        key = id(plan.mdp)
        if key not in cache:
            cache[key] = expected_steps(plan.mdp, plan.policy)
        steps = float(cache[key][plan.mdp.start])
        rows.append({
            "id": plan.task.robot_id,
            "task_value": plan.task_value,
            "expected_steps": steps,
            "states": plan.mdp.n_states,
        })
    return rows

