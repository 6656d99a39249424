"""A robot's task budget, and planning within it (docs/FORMULATION.md section 2, "the task budget").

An operator grants each robot a budget on its *own* task, measured from its start:
`V1*(s0) - V1^pi(s0) <= b`. By default `b` is 10 % of the robot's optimal expected task cost
`|V1*(s0)|`; an absolute value in task-value units is possible too. Two planners keep it:

* `budgeted_lvi`: lexicographic value iteration whose per-state slack is chosen per robot, the
  largest tried LVI slack whose policy finishes and meets the budget at the start (Wray et al.'s
  per-state slack `(1 - gamma) * delta` is conservative: `delta = b` always meets the budget, a
  larger one often does too). The LVI action sets are nested in `delta`, so the largest feasible
  `delta` found is also the one with the best secondary objective.
* `budgeted_scalarisation`: one objective `task - weight * cost`, the weight bisected down until
  the budget holds (the considerate-reward baseline).

`constrained_optimum` is the exact reference: the occupancy-measure linear programme (HiGHS)
that minimises the robot's expected discounted cost subject to the budget. Every policy of the two
planners is feasible for it, so neither is ever below it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from .mdp import TabularMDP
from .solvers import (
    DEFAULT_TOLERANCE,
    ValueResult,
    evaluate_from_start,
    lexicographic_value_iteration,
    policy_evaluation,
    value_iteration,
)

#: regret measured by policy evaluation may exceed the budget by this much (task-value units):
#: with slack 0, LVI keeps actions tied within 1e-9 per state, about 1e-7 from the start
REGRET_TOLERANCE = 1e-6
DEFAULT_BUDGET = "10%"
#: the precision (ratio of the smallest infeasible to the largest feasible setting) a search
#: seeded with another robot's bracket aims at, at least (`_search`)
SEARCH_RATIO = 1.05


@dataclass(frozen=True)
class TaskBudget:
    """`fraction` of the robot's optimal task cost |V1*(s0)|, or `absolute` task-value units."""

    fraction: float | None = 0.10
    absolute: float | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.absolute is None):
            raise ValueError("a task budget is either a fraction of the task cost or an absolute value, not both")
        x = self.fraction if self.fraction is not None else self.absolute
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ValueError(f"a task budget must be a finite number >= 0, got {x!r}")

    @classmethod
    def parse(cls, spec: "str | float | int | TaskBudget") -> "TaskBudget":
        """'10%' -> 10 % of the task cost; '3' or 3 -> 3 task-value units."""
        if isinstance(spec, TaskBudget):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"a task budget is a number or a percentage such as '10%', got {spec!r}")
        if isinstance(spec, (int, float)):
            return cls(fraction=None, absolute=float(spec))
        if not isinstance(spec, str):
            raise ValueError(f"a task budget is a number or a percentage such as '10%', got {spec!r}")
        text = spec.strip()
        match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*%", text)
        if match:
            return cls(fraction=float(match.group(1)) / 100.0)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"a task budget is a number or a percentage such as '10%', got {spec!r}") from None
        return cls(fraction=None, absolute=value)

    def amount(self, task_value: float) -> float:
        """The budget in task-value units for a robot whose optimal task value is `task_value`."""
        if self.fraction is not None:
            return self.fraction * abs(float(task_value))
        return float(self.absolute)

    def __str__(self) -> str:
        if self.fraction is not None:
            return f"{100 * self.fraction:g}%"
        return f"{self.absolute:g}"


@dataclass
class BudgetedPolicy:
    policy: np.ndarray  # (S,)
    regret: float  # V1*(s0) - V1^pi(s0), >= 0 up to rounding
    budget: float  # the budget it meets, task-value units
    setting: float  # LVI slack delta (budgeted_lvi) or cost weight (budgeted_scalarisation) used
    solves: int  # how many policies were computed to find it
    #: (the setting used, the smallest setting tried above it that was infeasible, inf if none):
    #: a first guess for another robot of the same MDP (`bracket` of the planners)
    bracket: tuple[float, float] = (0.0, math.inf)
    #: `regret` is start_regret's (exact evaluation from the start): a report may reuse it
    evaluated: bool = True


def start_regret(mdp: TabularMDP, task: ValueResult, policy: np.ndarray) -> float:
    """V1*(s0) - V1^pi(s0) by exact policy evaluation (clipped at 0: rounding)."""
    value = evaluate_from_start(mdp, policy)
    if value is None:  # not sure to finish: evaluated on every state
        value = policy_evaluation(mdp, policy)[mdp.start]
    return max(0.0, float(task.values[mdp.start] - value))


def _search(solve, fallback, low: float, high: float, steps: int, bracket: tuple[float, float] | None = None):
    """The largest setting in [0, high] whose policy `solve` accepts, by bisection.

    `solve(x) -> (policy, ok)`. Tries `high`, then `low` (a setting expected to be feasible),
    then bisects between the largest feasible and the smallest infeasible setting above it
    tried: geometrically when the interval spans orders of magnitude, and by quarters down
    from an infeasible setting while nothing above 0 is known to be feasible. Setting 0 (the
    policy `fallback()`, called only if no other setting is feasible) is the fallback.

    `bracket` (feasible, infeasible), another robot's result on the same MDP, is tried first:
    if its feasible setting is feasible here and its infeasible one is not, that is the answer
    in two solves. It is the bisection's own answer whenever feasibility is monotone (every
    setting below a feasible one feasible): each setting the bisection would try is then
    judged as it was for that robot, so it takes the same path. Otherwise the answer is
    usually near (robots of one MDP take similar settings): the search gallops away from the
    bracket on the side those two solves point to, by ratios q, q^2, q^4, ... with q the
    bracket's own infeasible / feasible but at least SEARCH_RATIO (down to `low` at most, up
    to `high`), then bisects what it found down to ratio q. That takes a few solves where a
    bisection from `high` takes `steps` more; where feasibility is not monotone it may end at
    another feasible setting than that bisection would.
    Returns ((setting, policy), solves, (setting, smallest infeasible setting tried above it,
    or inf)).
    """
    solved: dict[float, tuple] = {}  # setting -> (policy, ok)

    def judge(x: float) -> bool:
        if x not in solved:
            solved[x] = solve(x)
        return solved[x][1]

    def known() -> tuple[float, float]:
        feasible = max((x for x, (_, ok) in solved.items() if ok), default=0.0)
        return feasible, min((x for x, (_, ok) in solved.items() if not ok and x > feasible), default=math.inf)

    narrow = 1.0  # the ratio of the bracket at which the bisection may stop early
    if bracket is not None:
        feasible, infeasible = bracket
        if 0 < feasible < infeasible <= high:
            if judge(feasible) and not judge(infeasible):
                return (feasible, solved[feasible][0]), len(solved), (feasible, infeasible)
            # not narrower than SEARCH_RATIO: a bisection's halvings would make each robot's
            # bracket narrower than the one before, and its search longer
            narrow = max(infeasible / feasible, SEARCH_RATIO)
            _gallop(judge, judge(feasible), feasible, infeasible, narrow, low, high, steps)
    for x in dict.fromkeys((high, low)):  # high first; low once, if it differs
        lo, hi = known()
        if 0 < x and lo < x < hi and judge(x):
            break
    lo, hi = known()
    for _ in range(steps if hi < math.inf else 0):
        if lo > 0 and hi / lo <= narrow:
            break
        if lo == 0:
            mid = hi / 4
        elif hi / lo > 4:
            mid = math.sqrt(lo * hi)
        else:
            mid = (lo + hi) / 2
        judge(mid)
        lo, hi = known()
    return (lo, solved[lo][0] if lo > 0 else fallback()), len(solved), (lo, hi)


def _gallop(judge, up: bool, feasible: float, infeasible: float, ratio: float, low: float, high: float,
            steps: int) -> None:
    """From a seed bracket (`feasible`, `infeasible`) judged otherwise here (`up`: both its
    settings feasible; else its feasible one is not), `judge` settings ever farther from it on
    that side, by ratios ratio, ratio^2, ratio^4, ..., until one is judged the other way,
    `high` (up) or `low` (down) is reached, or `steps` settings are tried (`_search`)."""
    x = infeasible if up else feasible
    if not up and x <= low:  # nothing between low and the seed: the bisection below takes over
        return
    for _ in range(steps):
        x = min(x * ratio, high) if up else max(x / ratio, low)
        if judge(x) != up or x == (high if up else low):
            return
        ratio *= ratio


def budgeted_lvi(mdp: TabularMDP, secondary_reward: np.ndarray, budget: float, task: ValueResult | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, bisection_steps: int = 6,
                 relative_step_cost: float = 0.01, bracket: tuple[float, float] | None = None,
                 trust_bound: bool = True) -> BudgetedPolicy:
    """LVI with the per-robot slack chosen so that the start-state regret meets `budget`.

    The secondary objective (`secondary_reward`, minus the local penalty) is solved as a
    stochastic shortest path with a step cost of `relative_step_cost` times the largest penalty,
    so that a robot avoids NSEs by detours, never by stalling forever; a policy is feasible when
    it finishes surely from the start and its regret is within the budget. `bracket`: another
    robot's `BudgetedPolicy.bracket` on this MDP, tried first (see `_search`).

    A slack `delta <= budget` is feasible by Wray et al.'s bound (a per-state slack of
    (1 - gamma) delta loses at most delta from the start), so with `trust_bound` its policy is
    judged feasible without an evaluation, which it gets only if it is the answer (and should
    rounding ever break the bound there, the search is run again judging every setting by
    evaluation, as `trust_bound=False` does from the start). The answer is the same either way.
    """
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"budget must be a finite number >= 0, got {budget}")
    task = task if task is not None else value_iteration(mdp, tolerance=tolerance)
    scale = float(np.max(np.abs(secondary_reward), initial=0.0))
    if scale == 0.0:  # nothing to avoid: the task-optimal policy
        return BudgetedPolicy(task.policy.copy(), 0.0, budget, 0.0, 0, evaluated=False)
    step_cost = relative_step_cost * scale
    regrets: dict[int, float] = {}
    secondary_values: dict[float, np.ndarray] = {}  # slack -> the secondary values solved with it

    def solve(delta: float, trust_bound: bool = trust_bound):
        # the values of the largest smaller slack tried are below V* for this one (fewer
        # actions allowed there): a start close to it
        smaller = [d for d in secondary_values if d < delta]
        start = secondary_values[max(smaller)] if smaller else None
        result = lexicographic_value_iteration(mdp, secondary_reward, delta, task_result=task, tolerance=tolerance,
                                               step_cost=step_cost, initial_values=start)
        secondary_values[delta] = result.secondary.values
        policy = result.policy
        if trust_bound and delta <= budget:  # feasible by the bound; evaluated if it is the answer
            return policy, True
        value = evaluate_from_start(mdp, policy)
        if value is None:  # does not finish surely from the start
            return policy, False
        regret = max(0.0, float(task.values[mdp.start] - value))
        regrets[id(policy)] = regret
        return policy, regret <= budget + REGRET_TOLERANCE

    def fallback():
        zero, _ = solve(0.0)
        regrets.setdefault(id(zero), start_regret(mdp, task, zero))
        return zero

    # every action allowed once the per-state slack exceeds the largest Q gap
    finite = np.isfinite(task.q_values)
    gap = float(np.max((task.values[:, None] - task.q_values)[finite], initial=0.0))
    high = (gap + 1.0) / (1.0 - mdp.discount)
    (delta, policy), solves, found = _search(solve, fallback, min(budget, high), high, bisection_steps, bracket)
    regret = regrets.get(id(policy))
    if regret is None and delta > 0:  # the answer was judged by the bound alone: check it
        value = evaluate_from_start(mdp, policy)
        regret = None if value is None else max(0.0, float(task.values[mdp.start] - value))
        if regret is None or regret > budget + REGRET_TOLERANCE:  # the bound failed (rounding): judge every setting
            (delta, policy), more, found = _search(lambda x: solve(x, trust_bound=False), fallback,
                                                   min(budget, high), high, bisection_steps, bracket)
            solves += more
            regret = regrets.get(id(policy))
    if regret is None:
        regret = start_regret(mdp, task, policy)
    return BudgetedPolicy(policy, regret, budget, delta, solves + (0.0 in secondary_values), found)


def budgeted_scalarisation(mdp: TabularMDP, cost: np.ndarray, budget: float, weight: float,
                           task: ValueResult | None = None, tolerance: float = DEFAULT_TOLERANCE,
                           bisection_steps: int = 8, bracket: tuple[float, float] | None = None) -> BudgetedPolicy:
    """argmax of `task reward / max|task reward| - w * cost` by value iteration, with the
    largest `w <= weight` (bisected) whose policy finishes and meets `budget` at the start.

    With a large `weight` this is the Lagrangian relaxation of the constrained optimum: the
    regret of the scalarised optimum grows with w, and the largest feasible w gives the least
    cost among the scalarised policies that keep the budget. `bracket`: another robot's
    `BudgetedPolicy.bracket` on this MDP, tried first (see `_search`)."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    task = task if task is not None else value_iteration(mdp, tolerance=tolerance)
    cost = np.asarray(cost, dtype=float)
    if weight == 0 or not np.any(cost > 0):
        return BudgetedPolicy(task.policy.copy(), 0.0, budget, 0.0, 0, evaluated=False)
    task_reward = mdp.rewards / max(float(np.abs(mdp.rewards).max()), 1e-12)
    cost_sa = cost[:, None] if cost.ndim == 1 else cost

    def solve(w: float):
        policy = value_iteration(mdp, task_reward - w * cost_sa, tolerance=tolerance).policy
        value = evaluate_from_start(mdp, policy)
        ok = value is not None and max(0.0, float(task.values[mdp.start] - value)) <= budget + REGRET_TOLERANCE
        return policy, ok

    (w, policy), solves, found = _search(solve, task.policy.copy, weight, weight, bisection_steps, bracket)
    return BudgetedPolicy(policy, start_regret(mdp, task, policy), budget, w, solves, found)


@dataclass
class ConstrainedOptimum:
    cost: float  # the least expected discounted cost from the start within the budget
    occupancy: np.ndarray  # (S, A) discounted state-action occupancy x(s, a)
    policy: np.ndarray  # (S, A) the stochastic policy x(s, a) / sum_a x(s, a) (uniform where unvisited)
    task_value: float  # V1 of that policy from the start


def discounted_cost(mdp: TabularMDP, policy: np.ndarray, cost: np.ndarray) -> float:
    """E[sum_t gamma^t cost(s_t, a_t)] from the start under a deterministic policy."""
    cost = np.asarray(cost, dtype=float)
    return float(-policy_evaluation(mdp, policy, reward=-cost)[mdp.start])


def constrained_optimum(mdp: TabularMDP, cost: np.ndarray, budget: float,
                        task: ValueResult | None = None) -> ConstrainedOptimum:
    """min_x sum x(s,a) cost(s,a)  s.t.  sum_a x(s',a) - gamma sum T(s'|s,a) x(s,a) = 1[s' = s0],
    sum x(s,a) R1(s,a) >= V1*(s0) - budget,  x >= 0   (HiGHS; docs/FORMULATION.md section 2).

    Terminal states keep their zero reward and zero cost (absorbing, as everywhere)."""
    task = task if task is not None else value_iteration(mdp)
    S, A = mdp.n_states, mdp.n_actions
    cost = np.asarray(cost, dtype=float)
    cost_sa = np.repeat(cost[:, None], A, axis=1) if cost.ndim == 1 else cost.copy()
    reward = mdp.rewards.copy()
    cost_sa[mdp.terminal] = 0.0
    reward[mdp.terminal] = 0.0
    # flow: for each s', sum_a x(s',a) - gamma * sum_{s,a} T(s'|s,a) x(s,a)
    out_flow = sp.kron(sp.identity(S, format="csr"), np.ones((1, A)), format="csr")  # (S, S*A)
    flow = (out_flow - mdp.discount * mdp.transitions.T).tocsr()
    rhs = np.zeros(S)
    rhs[mdp.start] = 1.0
    floor = float(task.values[mdp.start]) - float(budget)
    # HiGHS meets constraints to its feasibility tolerance: tighter than the default, so that the
    # optimum's regret stays within REGRET_TOLERANCE of the budget, as every planner's does
    result = linprog(cost_sa.ravel(), A_ub=-reward.reshape(1, -1), b_ub=[-floor], A_eq=flow, b_eq=rhs,
                     bounds=(0, None), method="highs",
                     options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    if result.status != 0:
        raise RuntimeError(f"the constrained optimum's linear programme failed: {result.message}")
    x = np.maximum(result.x.reshape(S, A), 0.0)
    mass = x.sum(axis=1, keepdims=True)
    policy = np.divide(x, mass, out=np.full_like(x, 1.0 / A), where=mass > 1e-15)
    return ConstrainedOptimum(float(result.fun), x, policy, float((x * reward).sum()))


__all__ = ["DEFAULT_BUDGET", "REGRET_TOLERANCE", "BudgetedPolicy", "ConstrainedOptimum", "TaskBudget",
           "budgeted_lvi", "budgeted_scalarisation", "constrained_optimum", "discounted_cost", "start_regret"]
