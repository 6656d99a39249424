"""Solvers over `TabularMDP`: value iteration, lexicographic value iteration (LVI),
policy evaluation, expected steps to finish, forward state distributions and
seeded simulation. Every step is a sparse matrix product over all states at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .mdp import TabularMDP

#: Default bound on |V - V*| at which value iteration stops.
DEFAULT_TOLERANCE = 1e-8
#: Two Q-values closer than this are treated as tied.
DEFAULT_TIE_TOLERANCE = 1e-9


@dataclass
class ValueResult:
    """Outcome of value iteration over (possibly restricted) actions."""

    values: np.ndarray  # (S,)
    q_values: np.ndarray  # (S, A); -inf for actions that were not allowed
    policy: np.ndarray  # (S,) greedy action
    iterations: int
    residual: float


@dataclass
class LexicographicResult:
    """Outcome of LVI: the task objective, the restricted action sets, and the secondary objective."""

    task: ValueResult  # o1 (task reward)
    allowed: np.ndarray  # (S, A) bool: A1(s), the actions within slack
    secondary: ValueResult  # o2 over A1 only
    policy: np.ndarray  # (S,) the lexicographic policy
    slack: float


def _as_state_action_reward(mdp: TabularMDP, reward: np.ndarray | None) -> np.ndarray:
    if reward is None:
        reward = mdp.rewards
    reward = np.asarray(reward, dtype=float)
    if reward.ndim == 1:
        if reward.shape != (mdp.n_states,):
            raise ValueError(f"a state reward needs shape ({mdp.n_states},), got {reward.shape}")
        reward = np.repeat(reward[:, None], mdp.n_actions, axis=1)
    if reward.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(f"reward needs shape {(mdp.n_states, mdp.n_actions)}, got {reward.shape}")
    reward = reward.copy()
    reward[mdp.terminal] = 0.0  # terminal states are absorbing with zero reward
    return reward


def bellman_q(mdp: TabularMDP, reward: np.ndarray, values: np.ndarray, discount: float | None = None) -> np.ndarray:
    """Q(s, a) = R(s, a) + gamma * sum_s' T(s' | s, a) V(s'), for all s, a at once."""
    gamma = mdp.discount if discount is None else discount
    return reward + gamma * (mdp.transitions @ values).reshape(mdp.n_states, mdp.n_actions)


def value_iteration(
    mdp: TabularMDP,
    reward: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = 200_000,
    initial_values: np.ndarray | None = None,
    discount: float | None = None,
) -> ValueResult:
    """Value iteration, maximising `reward` (default: the task reward) over `allowed` actions.

    Stops when the Bellman residual guarantees |V - V*| <= tolerance, i.e. when
    ||V_{k+1} - V_k|| <= tolerance * (1 - gamma) / gamma. `discount` overrides the MDP's;
    with discount 1 (a stochastic shortest path: every reward must be negative outside
    terminal states) it stops when the residual itself is below `tolerance`.
    """
    r = _as_state_action_reward(mdp, reward)
    if allowed is not None:
        allowed = np.asarray(allowed, bool)
        if allowed.shape != r.shape:
            raise ValueError(f"allowed needs shape {r.shape}, got {allowed.shape}")
        if not allowed.any(axis=1).all():
            raise ValueError("every state needs at least one allowed action")
        r = np.where(allowed, r, -np.inf)
    gamma = mdp.discount if discount is None else float(discount)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"discount must be in (0, 1], got {gamma}")
    threshold = tolerance * (1.0 - gamma) / gamma if gamma < 1.0 else tolerance
    v = np.zeros(mdp.n_states) if initial_values is None else np.asarray(initial_values, float).copy()
    residual = np.inf
    iterations = 0
    # The loop works on the action-major copy of the transitions (row a * S + s): one SpMV
    # gives Q as (A, S), whose max over actions is a contiguous elementwise maximum, and
    # every other step is in place. The numbers are bit-identical to `bellman_q`'s.
    n_states, n_actions = mdp.n_states, mdp.n_actions
    t_am = mdp.action_major()
    r_am = np.ascontiguousarray(r.T).reshape(-1)
    v_new, diff = np.empty(n_states), np.empty(n_states)
    while iterations < max_iterations:
        x = t_am @ v
        if gamma != 1.0:
            x *= gamma
        x += r_am
        np.maximum.reduce(x.reshape(n_actions, n_states), axis=0, out=v_new)
        np.subtract(v_new, v, out=diff)
        np.abs(diff, out=diff)
        residual = float(np.maximum.reduce(diff)) if n_states else 0.0
        v, v_new = v_new, v
        iterations += 1
        if residual <= threshold:
            break
    q = bellman_q(mdp, r, v, gamma)
    v = q.max(axis=1)
    return ValueResult(v, q, np.argmax(q, axis=1), iterations, residual)


def lexicographic_value_iteration(
    mdp: TabularMDP,
    secondary_reward: np.ndarray,
    slack: float = 0.0,
    task_reward: np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    task_result: ValueResult | None = None,
    step_cost: float | None = None,
) -> LexicographicResult:
    """LVI (Wray et al. 2015) with two objectives: the task first, then `secondary_reward`.

    The per-state slack eta = (1 - gamma) * slack keeps the lexicographic policy's task
    value within `slack` of the optimum at every state. `secondary_reward` is (S,) or
    (S, A); for NSE mitigation it is minus the robot's local penalty. Ties in the
    secondary objective are broken by the task Q-values. Pass `task_result` to reuse
    an already solved task objective.
    """
    if slack < 0:
        raise ValueError(f"slack must be >= 0, got {slack}")
    task = task_result if task_result is not None else value_iteration(mdp, task_reward, tolerance=tolerance)
    eta = (1.0 - mdp.discount) * slack
    allowed = (task.values[:, None] - task.q_values) <= eta + tie_tolerance
    if step_cost is None:
        secondary = value_iteration(mdp, secondary_reward, allowed=allowed, tolerance=tolerance)
    else:
        if not step_cost > 0:
            raise ValueError(f"step_cost must be positive, got {step_cost}")
        r2 = _as_state_action_reward(mdp, secondary_reward)
        if np.any(r2 > 0):
            raise ValueError("a shortest-path secondary objective needs rewards <= 0 (penalties), "
                             f"got up to {r2.max():.3g}")
        r2 = r2 - step_cost
        r2[mdp.terminal] = 0.0  # done is free: terminal states stay absorbing at zero cost
        secondary = value_iteration(mdp, r2, allowed=allowed, tolerance=tolerance, discount=1.0)
    best2 = secondary.q_values.max(axis=1, keepdims=True)
    near_best = secondary.q_values >= best2 - max(tie_tolerance, tolerance)
    policy = np.argmax(np.where(near_best, task.q_values, -np.inf), axis=1)
    return LexicographicResult(task, allowed, secondary, policy, float(slack))


def lexicographic_policy_that_finishes(
    mdp: TabularMDP,
    secondary_reward: np.ndarray,
    slack: float,
    task_result: ValueResult | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    bisection_steps: int = 12,
    relative_step_cost: float = 0.01,
) -> LexicographicResult:
    """LVI whose policy is sure to finish the task from the start.

    With discounting, never finishing costs only a bounded amount, so a generous slack can
    admit a policy that stalls where the secondary penalty is zero (the slack guarantee
    still holds). Robots must complete their tasks, so the secondary objective is solved
    as a stochastic shortest path with a small step cost (see
    `lexicographic_value_iteration`): `relative_step_cost` times the largest secondary
    penalty, so that stalling 1 / relative_step_cost steps costs as much as the worst
    penalty (a smaller step cost makes undiscounted value iteration converge slowly). As a safety net, if the policy still does not finish
    with probability 1 from the start, the slack is bisected down to the largest tried
    value whose policy does (slack 0 keeps only task-optimal actions, which finish whenever
    finishing is possible). The result's `slack` says which slack was used.
    """
    task = task_result if task_result is not None else value_iteration(mdp, tolerance=tolerance)
    scale = float(np.max(np.abs(secondary_reward), initial=0.0))
    step_cost = relative_step_cost * scale if scale > 0 else 1e-3

    def solve(delta: float) -> LexicographicResult:
        return lexicographic_value_iteration(mdp, secondary_reward, delta, task_result=task, tolerance=tolerance,
                                             step_cost=step_cost)

    result = solve(slack)
    if finishes_surely(mdp, result.policy)[mdp.start]:
        return result
    low, high = 0.0, float(slack)
    best = solve(0.0)
    for _ in range(bisection_steps):
        mid = (low + high) / 2
        trial = solve(mid)
        if finishes_surely(mdp, trial.policy)[mdp.start]:
            best, low = trial, mid
        else:
            high = mid
    return best


def policy_evaluation(mdp: TabularMDP, policy: np.ndarray, reward: np.ndarray | None = None) -> np.ndarray:
    """Exact V^pi for `reward` (default: task reward): solves (I - gamma P_pi) V = r_pi."""
    r = _as_state_action_reward(mdp, reward)
    policy = np.asarray(policy)
    p_pi = mdp.policy_matrix(policy)
    r_pi = r[np.arange(mdp.n_states), policy]
    system = sp.identity(mdp.n_states, format="csc") - mdp.discount * p_pi.tocsc()
    return np.atleast_1d(spla.spsolve(system, r_pi))


def _reaches(p_pi: sp.csr_matrix, targets: np.ndarray) -> np.ndarray:
    """States with a positive-probability path into `targets` (vectorised fixed point)."""
    reach = targets.copy()
    while True:
        grown = reach | ((p_pi @ reach.astype(float)) > 0)
        if np.array_equal(grown, reach):
            return reach
        reach = grown


def finishes_surely(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """(S,) bool: from this state the policy reaches a terminal state with probability 1."""
    p_pi = mdp.policy_matrix(policy)
    can_finish = _reaches(p_pi, mdp.terminal)
    return ~_reaches(p_pi, ~can_finish)


def expected_steps(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """Expected number of steps to reach a terminal state; inf where that is not certain."""
    sure = finishes_surely(mdp, policy)
    steps = np.full(mdp.n_states, np.inf)
    steps[mdp.terminal] = 0.0
    transient = np.flatnonzero(sure & ~mdp.terminal)
    if len(transient):
        p_pi = mdp.policy_matrix(policy)[transient][:, transient]
        system = sp.identity(len(transient), format="csc") - p_pi.tocsc()
        steps[transient] = np.atleast_1d(spla.spsolve(system, np.ones(len(transient))))
    return steps


def state_distributions(
    mdp: TabularMDP, policy: np.ndarray, horizon: int, start: int | None = None
) -> np.ndarray:
    """(horizon + 1, S): the probability of each state at t = 0..horizon."""
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    p_t = mdp.policy_matrix(policy).T.tocsr()
    dist = np.zeros((horizon + 1, mdp.n_states))
    dist[0, mdp.start if start is None else start] = 1.0
    for t in range(horizon):
        dist[t + 1] = p_t @ dist[t]
    return dist


@dataclass
class Trajectories:
    states: np.ndarray  # (episodes, horizon + 1) state indices
    actions: np.ndarray  # (episodes, horizon) action indices


def simulate(
    mdp: TabularMDP,
    policy: np.ndarray,
    horizon: int,
    episodes: int = 1,
    seed: int | np.random.Generator | None = None,
    start: int | None = None,
    uniforms: np.ndarray | None = None,
) -> Trajectories:
    """Seeded rollouts of `policy`, all episodes advanced together one step at a time.

    Step t of every episode consumes one uniform draw: `rng.random(episodes)` per step, or
    row t of `uniforms` (horizon, episodes) when given (then `seed` is not used). Several
    robots with one MDP and policy are simulated together by passing their draws side by side.
    """
    if uniforms is not None:
        uniforms = np.asarray(uniforms, dtype=float)
        if uniforms.shape != (horizon, episodes):
            raise ValueError(f"uniforms needs shape {(horizon, episodes)}, got {uniforms.shape}")
    rng = np.random.default_rng(seed) if uniforms is None else None
    p_pi = mdp.policy_matrix(policy)
    indptr, indices = p_pi.indptr, p_pi.indices
    cum = np.cumsum(p_pi.data)
    states = np.empty((episodes, horizon + 1), dtype=np.int64)
    states[:, 0] = mdp.start if start is None else start
    actions = np.empty((episodes, horizon), dtype=np.int64)
    for t in range(horizon):
        s = states[:, t]
        actions[:, t] = policy[s]
        lo, hi = indptr[s], indptr[s + 1]
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        u = rng.random(episodes) if uniforms is None else uniforms[t]
        target = base + u * (cum[hi - 1] - base)
        pos = np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)
        states[:, t + 1] = indices[pos]
    return Trajectories(states, actions)
