"""Solvers over `TabularMDP`: value iteration, lexicographic value iteration (LVI),
policy evaluation, expected steps to finish, forward state distributions and
seeded simulation. Every step is a sparse matrix product over all states at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from .mdp import TabularMDP, csr_rows, terminal_distances

_EPS = float(np.finfo(float).eps)
#: Default bound on |V - V*| at which value iteration stops.
DEFAULT_TOLERANCE = 1e-8
#: Two Q-values closer than this are treated as tied.
DEFAULT_TIE_TOLERANCE = 1e-9


@dataclass
class ValueResult:
    """Outcome of solving the Bellman equation over (possibly restricted) actions."""

    values: np.ndarray  # (S,)
    q_values: np.ndarray  # (S, A); -inf for actions that were not allowed
    policy: np.ndarray  # (S,) greedy action (argmax of q_values, first on ties)
    iterations: int  # Bellman backups over all actions (policy improvements)
    residual: float  # the last ||T v - v||
    method: str = "vi"
    sweeps: int = 0  # policy-evaluation sweeps ("mpi") or exact policy evaluations ("pi")
    error_bound: float = float("nan")  # proven bound on max |values - V*| (nan: none proven)


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


#: Methods of `value_iteration`; "auto" is modified policy iteration, with plain value
#: iteration where its guarantees do not apply.
METHODS = ("auto", "vi", "mpi", "pi")
#: At most this many Gauss-Seidel sweeps of the first policy of a shortest path (see
#: `_certified_start`) before it is evaluated by a sparse LU solve instead.
START_SWEEPS = 1024


def value_iteration(
    mdp: TabularMDP,
    reward: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_iterations: int = 200_000,
    initial_values: np.ndarray | None = None,
    discount: float | None = None,
    method: str = "auto",
    start_policy: np.ndarray | None = None,
) -> ValueResult:
    """Solves the Bellman optimality equation, maximising `reward` (default: the task reward)
    over `allowed` actions; the returned values are within `tolerance` of V*.

    `discount` overrides the MDP's; with discount 1 the problem is a stochastic shortest
    path (every reward must be negative outside terminal states). `method`:

    * "vi", value iteration from `initial_values` (default 0). It stops when
      ||V_{k+1} - V_k|| <= tolerance * (1 - gamma) / gamma, which guarantees |V - V*| <= tolerance;
      with discount 1 when the residual itself is below `tolerance`.
    * "mpi", modified policy iteration (`_policy_iteration`): a Bellman backup over all actions
      picks the greedy policy, cheap sweeps of that policy's transitions alone evaluate it.
      Same stop as "vi" when discounted.
    * "pi", policy iteration: each greedy policy evaluated exactly by a sparse LU solve.
    * "auto" (default): "mpi", the fastest measured on the shipped maps' robots and on the
      benchmark grid, discounted or not (docs/PERFORMANCE.md).

    "mpi" and "pi" start below V* (discounted: at min(R, 0) / (1 - gamma), or at
    `initial_values` if given; with discount 1: `initial_values` made a start below V* if
    they are close enough to one (`_warm_start`), else just below the value of a policy sure
    to finish: `start_policy` if it takes allowed actions only and finishes from every state,
    else one found by a search), and their iterates rise to V*. With discount 1 they stop when the bound proven
    in `_policy_iteration` gives |V - V*| <= tolerance; if no policy finishes from every
    state, or some reward outside terminal states is not negative, they fall back to "vi"
    (whose behaviour there is unchanged). The result says which method ran, its proven bound
    on |values - V*| (`error_bound`; none for "vi" with discount 1), the Bellman backups over
    all actions (`iterations`) and the evaluation sweeps or exact solves (`sweeps`). Ties are
    broken by the first action with the largest returned Q-value, whichever the method (at
    Q-values equal up to rounding, ~1e-14, methods may differ).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
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
    if method == "auto":
        method = "mpi"
    if method != "vi" and mdp.n_states:
        # on the MDP renumbered in order of distance to the goal, then numbered back
        _, order, position = mdp.sweep_order()
        start = None if initial_values is None else np.take(np.asarray(initial_values, float), order)
        hint = None if start_policy is None else np.take(np.asarray(start_policy), order)
        result = _policy_iteration(mdp.sorted_for_sweeps(), np.take(r, order, axis=0), gamma, tolerance,
                                   max_iterations, start, exact=(method == "pi"), start_policy=hint)
        if result is not None:
            result.values, result.policy = np.take(result.values, position), np.take(result.policy, position)
            result.q_values = np.take(result.q_values, position, axis=0)
            return result
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
    # the returned values are T(v): within gamma of the bound on v (none proven with discount 1)
    bound = gamma * gamma / (1.0 - gamma) * residual if gamma < 1.0 else float("nan")
    return ValueResult(v, q, np.argmax(q, axis=1), iterations, residual, "vi", 0, bound)


#: Modified policy iteration's partial evaluation: after a backup with residual rho, Gauss-Seidel
#: sweeps of the greedy policy until a sweep changes V by at most EVAL_FRACTION * rho (every
#: EVAL_CHECK-th sweep is checked), at most EVAL_MAX_SWEEPS of them (tuned on the shipped maps
#: and the benchmark grid, docs/PERFORMANCE.md).
EVAL_FRACTION = 0.1
EVAL_MAX_SWEEPS = 64
EVAL_CHECK = 4


def _policy_iteration(
    mdp: TabularMDP,
    r: np.ndarray,
    gamma: float,
    tolerance: float,
    max_iterations: int,
    initial_values: np.ndarray | None,
    exact: bool,
    start_policy: np.ndarray | None = None,
) -> ValueResult | None:
    """Modified (exact=False) or exact (exact=True) policy iteration; None where its stop
    cannot be guaranteed (a shortest path without a policy that finishes from every state,
    or with a reward >= 0 outside terminal states).

    `mdp` is the one renumbered by `TabularMDP.sorted_for_sweeps` (the caller numbers back).
    Each iteration is one Bellman backup over all actions (Q(v), its max Tv), a policy
    improvement (a state changes action only where another one is better by more than
    rounding, so ties keep the current action), then an evaluation of the policy: exact (a
    sparse LU solve) or partial, Gauss-Seidel sweeps of its transitions in state order, that
    is in order of distance to the terminal states, which carry values from the goal
    outwards in one pass.
    The first policy heads for the terminal states: at every state, the action most likely to
    step closer to them.

    The bound it stops on (T the Bellman operator over the allowed actions, v the current
    iterate, b = max_s (Tv - v)(s)):
    * discounted: ||Tv - V*|| <= gamma / (1 - gamma) ||Tv - v|| for every v (T is a
      gamma-contraction), so it stops when ||Tv - v|| <= tolerance (1 - gamma) / gamma, as "vi";
    * shortest path (gamma = 1, rewards <= -c < 0 outside terminal states), for v <= V*, true
      of every iterate (it starts below the value of a policy that finishes with Tv >= v,
      `_certified_start`, and every step from a v with Tv >= v, a backup or a sweep of a
      greedy policy, keeps Tv >= v and stays below V*): with pi*
      optimal and N*(s) its expected number of steps to finish,
      V* - v = sum_t P_pi*^t (T_pi* v - v) <= b N*, and N* <= -V*/c <= -v/c, so
      0 <= V* - Tv <= V* - v <= b |v| / c. It stops when b max|v| / c <= tolerance.
    Either way the returned values are Tv, with the Q-values of that backup.
    """
    n_states, n_actions = mdp.n_states, mdp.n_actions
    t_am = mdp.action_major()
    r_am = np.ascontiguousarray(r.T).reshape(-1)
    allowed_am = np.isfinite(r_am)
    terminal = mdp.terminal
    states = np.arange(n_states)
    shortest_path = gamma == 1.0
    sweeper = None  # made at the first partial evaluation
    if shortest_path:
        best_live = float(r[~terminal].max(initial=-np.inf))  # -inf entries (not allowed) never count
        step_cost = -best_live
        if not step_cost > 0:
            return None
        v, policy, start_sweeps = None, None, 0
        if initial_values is not None and not exact:
            v = _warm_start(mdp, r_am, initial_values, step_cost)
        if v is None:
            policy = _finishing_policy(mdp, allowed_am, start_policy)
            if policy is None:
                return None
            if not exact:
                sweeper = _make_sweeper(mdp, r_am, gamma)
                sweeper.set_policy(policy)
                v, start_sweeps = _certified_start(mdp, sweeper, policy, r_am, step_cost)
        if v is None:
            v = _evaluate_policy(mdp, policy, r_am, gamma)
            if v is None:
                return None
    else:
        if initial_values is None:
            lowest = float(r_am.min(initial=0.0))
            if lowest == -np.inf:  # actions not allowed
                lowest = float(np.min(r_am, where=allowed_am, initial=0.0))
            floor = lowest / (1.0 - gamma)
            v = np.where(terminal, 0.0, floor)
        else:
            v = np.asarray(initial_values, float).copy()
        policy = _heading_policy(mdp, allowed_am)
        threshold = tolerance * (1.0 - gamma) / gamma
        start_sweeps = 0
        if exact and policy is not None:
            v = _evaluate_policy(mdp, policy, r_am, gamma)  # its improvement stops where v is V^pi
    iterations, sweeps = 0, start_sweeps
    residual = bound = np.inf
    x = None
    # the backups compute x = Q / gamma (one multiply fewer over all state-actions)
    r_over_gamma = r_am / gamma if gamma != 1.0 else r_am
    rows = None if policy is None else policy * n_states + states
    backup = _product(t_am)
    x = np.empty(t_am.shape[0])  # reused by every backup: nothing keeps the previous one
    while True:  # at least one backup, for the returned Q-values
        backup(v, x)
        x += r_over_gamma
        q = x.reshape(n_actions, n_states)
        tv = np.maximum.reduce(q, axis=0)
        if gamma != 1.0:
            tv *= gamma
        gain = tv - v
        residual = float(np.max(np.abs(gain)))
        iterations += 1
        if shortest_path:
            bound = max(float(gain.max()), 0.0) * float(np.max(np.abs(v))) / step_cost
            if bound <= tolerance:
                break
        else:
            bound = gamma / (1.0 - gamma) * residual
            if residual <= threshold:
                break
        if iterations >= max_iterations:
            break
        # improvement: a state changes action only where another one is better by more than
        # rounding (16 ulps of the values: Q-values equal in exact arithmetic differ by a few),
        # else, when no state is, wherever another one is larger at all, once v has been
        # evaluated (a cold start's values are all equal: their rounding would pick actions)
        if policy is None:
            policy = np.argmax(q, axis=0)
            rows = policy * n_states + states
            changed = None
        else:
            shortfall = tv - gamma * x[rows]
            changed = np.flatnonzero(shortfall > 16 * _EPS * float(np.max(np.abs(tv))))
            if not len(changed) and (sweeps or exact):
                changed = np.flatnonzero(shortfall > 0)
            if not len(changed):
                if exact:
                    break  # v is the value of a policy greedy for it: V*, up to rounding
            else:
                policy[changed] = np.argmax(q[:, changed], axis=0)
                rows[changed] = policy[changed] * n_states + changed
        if exact:
            v_exact = _evaluate_policy(mdp, policy, r_am, gamma)
            if v_exact is None:
                return None
            v = v_exact
            sweeps += 1
        else:
            if sweeper is None:
                sweeper = _make_sweeper(mdp, r_am, gamma)
                sweeper.set_policy(policy)
            elif changed is None or len(changed):
                sweeper.set_policy(policy, changed)
            v, done = sweeper.sweep(tv, EVAL_FRACTION * residual, EVAL_MAX_SWEEPS)
            sweeps += done
    if gamma != 1.0:
        x *= gamma
    q = np.ascontiguousarray(x.reshape(n_actions, n_states).T)
    values = q.max(axis=1)
    return ValueResult(values, q, np.argmax(q, axis=1), iterations, residual,
                       "pi" if exact else "mpi", sweeps, bound)


def _warm_start(mdp: TabularMDP, r_am: np.ndarray, values: np.ndarray, step_cost: float) -> np.ndarray | None:
    """`values` (say, a solve's over fewer allowed actions) made a start for a shortest path
    (rewards <= -c < 0 outside terminal states, c = `step_cost`) with Tv >= v, hence v <= V*
    (value iteration from any v converges to V* here, and rises from a v with Tv >= v); None
    if they are too far from one (Tv < v - c / 2 somewhere).

    With v <= 0 (0 at terminal states) and rho = max(v - Tv) (plus rounding), v' = (1 + e) v
    with e = rho / (c - rho) has Tv' >= (1 + e) Tv + e c >= v' + e (c - rho) - rho = v', as
    every allowed reward is <= -c. The values of the same rewards over fewer actions already
    have Tv >= v: then e is only rounding."""
    live = ~mdp.terminal
    v = np.where(live, np.minimum(np.asarray(values, float), 0.0), 0.0)
    x = mdp.action_major() @ v
    x += r_am
    tv = np.maximum.reduce(x.reshape(mdp.n_actions, mdp.n_states), axis=0)
    rho = float(np.max((v - tv)[live], initial=0.0))
    rho = max(rho, 0.0) + 16 * _EPS * float(np.max(np.abs(v), initial=0.0))
    if not rho < step_cost / 2:
        return None
    return v * (1.0 + rho / (step_cost - rho))


def _certified_start(mdp: TabularMDP, sweeper, policy: np.ndarray, r_am: np.ndarray, step_cost: float):
    """A start for a shortest path (rewards <= -c < 0 outside terminal states, c = `step_cost`)
    below V* with Tv >= v, from Gauss-Seidel sweeps of a policy that finishes, and the number
    of sweeps; None if they do not settle within START_SWEEPS.

    The sweeps from 0 give v0 <= 0 with rho = ||T_pi v0 - v0|| small. Then
    d = rho |v0| / (c - rho) satisfies d >= rho + P_pi d (as |v0| - P_pi |v0| >= c - rho), so
    v = v0 - d has T v >= T_pi v = T_pi v0 - P_pi d >= v0 - rho - P_pi d >= v: every later
    iterate rises and stays below V*."""
    n = mdp.n_states
    rows = policy * n + np.arange(n)
    t_am = mdp.action_major()
    live = ~mdp.terminal
    sweeper.set_policy(policy)
    v = np.zeros(n)
    done = 0
    while done < START_SWEEPS:
        v, more = sweeper.sweep(v, 1e-9 * step_cost, 64)
        done += more
        rho = float(np.max(np.abs((t_am @ v)[rows] + r_am[rows] - v)[live], initial=0.0))
        if rho <= 1e-6 * step_cost:
            return np.where(live, v - rho * np.abs(v) / (step_cost - rho), 0.0), done
    return None, done


def _product(matrix: sp.csr_matrix):
    """`product(x, out)` sets out = matrix @ x, bit for bit as `matrix @ x`, through scipy's CSR
    kernel without the checks of each `@` (about as long as the product itself on the few-
    thousand-state MDPs of robots, called tens of thousands of times a mitigation); plain `@`
    where the kernel is missing or the matrix is not a float CSR matrix."""
    kernel = _plain_matvec()
    if kernel is None or matrix.format != "csr" or matrix.data.dtype != np.float64:
        def product(x, out):
            out[...] = matrix @ x
            return out
        return product
    n_rows, n_columns = matrix.shape
    indptr, indices, data = matrix.indptr, matrix.indices, matrix.data

    def product(x, out):
        out.fill(0.0)
        kernel(n_rows, n_columns, indptr, indices, data, np.ascontiguousarray(x, dtype=np.float64), out)
        return out
    return product


def _checked_kernel(name: str, case: tuple, expected: list):
    """scipy's private CSR kernel `y += A x` if `csr_matvec(*case)` leaves `case[-1]` equal to
    `expected` (checked once per name), else None: a scipy without it, or other semantics."""
    if name not in _KERNELS:
        kernel = None
        try:
            from scipy.sparse._sparsetools import csr_matvec
            csr_matvec(*case)
            if np.array_equal(case[-1], expected):
                kernel = csr_matvec
        except Exception:
            kernel = None
        _KERNELS[name] = kernel
    return _KERNELS[name]


_KERNELS: dict = {}


def _plain_matvec():
    """The kernel, if it computes y += A x (2 x 3 case)."""
    indptr, indices = np.array([0, 2, 4], dtype=np.int32), np.array([0, 1, 1, 2], dtype=np.int32)
    case = (2, 3, indptr, indices, np.array([1.0, 2.0, 0.5, 3.0]), np.array([1.0, 2.0, 4.0]), np.array([1.0, -1.0]))
    return _checked_kernel("plain", case, [6.0, 12.0])


def _in_place_matvec():
    """The kernel, if it runs row by row in place when x is y (then a product is a Gauss-Seidel
    sweep); None otherwise (Jacobi sweeps)."""
    # rows: v0 <- 1 + 0.5 v1, v1 <- 0.5 v0 + 0.5 v2 (its own old value cancelled), v2 <- v2
    indptr = np.array([0, 3, 6, 7], dtype=np.int32)
    indices = np.array([0, 1, 3, 0, 1, 2, 2], dtype=np.int32)
    v = np.array([0.0, 2.0, 4.0, 1.0])
    case = (3, 4, indptr, indices, np.array([-1.0, 0.5, 1.0, 0.5, -1.0, 0.5, 0.0]), v, v)
    return _checked_kernel("in place", case, [2.0, 3.0, 4.0, 1.0])


def _make_sweeper(mdp: TabularMDP, r_am: np.ndarray, gamma: float):
    padded = mdp.padded_rows()
    kernel = _in_place_matvec()
    if padded is not None and kernel is not None:
        return _GaussSeidelSweeps(mdp, r_am, gamma, padded, kernel)
    return _JacobiSweeps(mdp, r_am, gamma)


class _GaussSeidelSweeps:
    """Gauss-Seidel evaluation sweeps of a policy in state order, each one in-place sparse
    product: row s holds gamma T(s' | s, pi(s)) / (1 - gamma T(s | s, pi(s))) at s' != s, the
    reward scaled alike at a constant entry (index S, always 1) and -1 at s, so that
    `v += A v` sets v(s) = (r + gamma sum_{s' != s} T v(s')) / (1 - gamma T(s | s)) with the
    new values of the states before s. Terminal states stay at 0, and a state whose action never
    leaves it (possible with discount 1 only) keeps its value. Every state-action's row is
    prepared once per MDP and discount (`_gauss_seidel_rows`); a policy's rows are gathered
    from it, and patched where the policy changes."""

    def __init__(self, mdp: TabularMDP, r_am: np.ndarray, gamma: float, padded, kernel) -> None:
        self.columns_all, self.weights_all = _gauss_seidel_rows(mdp, gamma, padded)
        self.r_am, self.kernel = r_am, kernel
        n, width = mdp.n_states, self.columns_all.shape[1]
        self.n, self.width = n, width
        self.columns = np.empty((n, width), dtype=np.int32)
        self.weights = np.empty((n, width))
        self.indptr = np.arange(0, n * width + 1, width, dtype=np.int32)
        self.vector = np.empty(n + 1)
        self.vector[n] = 1.0
        self.before = np.empty(n)

    def set_policy(self, policy: np.ndarray, changed: np.ndarray | None = None) -> None:
        if changed is None:
            rows = policy * self.n + np.arange(self.n)
            np.take(self.columns_all, rows, axis=0, out=self.columns)
            np.take(self.weights_all, rows, axis=0, out=self.weights)
            self.weights[:, -1] *= self.r_am[rows]
        else:
            rows = policy[changed] * self.n + changed
            self.columns[changed] = self.columns_all[rows]
            weights = self.weights_all[rows]
            weights[:, -1] *= self.r_am[rows]
            self.weights[changed] = weights

    def sweep(self, v: np.ndarray, target: float, max_sweeps: int) -> tuple[np.ndarray, int]:
        """Up to `max_sweeps` sweeps from v, until one (every EVAL_CHECK-th is checked) changes
        V by at most `target`."""
        n, vec, before = self.n, self.vector, self.before
        vec[:n] = v
        data, indices = self.weights.reshape(-1), self.columns.reshape(-1)
        done = 0
        while done < max_sweeps:
            for _ in range(EVAL_CHECK - 1):
                self.kernel(n, n + 1, self.indptr, indices, data, vec, vec)
            np.copyto(before, vec[:n])
            self.kernel(n, n + 1, self.indptr, indices, data, vec, vec)
            done += EVAL_CHECK
            np.subtract(vec[:n], before, out=before)
            np.abs(before, out=before)
            if float(np.maximum.reduce(before)) <= target:
                break
        return vec[:n].copy(), done


def _gauss_seidel_rows(mdp: TabularMDP, gamma: float, padded) -> tuple[np.ndarray, np.ndarray]:
    """Every state-action's Gauss-Seidel row (see `_GaussSeidelSweeps`), (A * S, K + 2), cached on
    the MDP per discount; its last entry holds the reward's scale (the reward is per call)."""
    def build():
        columns_all, probabilities_all, stay_all = padded
        n_rows, width = columns_all.shape
        n = mdp.n_states
        state = np.arange(n_rows) % n
        live = ~mdp.terminal[state]
        leave = 1.0 - gamma * stay_all
        moves = live & (leave > 0)  # a terminal state stays at 0; one never left keeps its value
        scale = np.divide(1.0, leave, out=np.zeros(n_rows), where=moves)
        columns = np.empty((n_rows, width + 2), dtype=np.int32)
        weights = np.empty((n_rows, width + 2))
        columns[:, :width] = columns_all
        columns[:, width] = state
        columns[:, width + 1] = n
        np.multiply(probabilities_all, (gamma * scale)[:, None], out=weights[:, :width])
        weights[:, width] = np.where(moves | ~live, -1.0, 0.0)
        weights[:, width + 1] = scale
        return columns, weights
    return mdp.derived(("gauss_seidel_rows", gamma), build)


class _JacobiSweeps:
    """Evaluation sweeps v <- r_pi + gamma P_pi v (where no in-place kernel is available or rows
    vary too much in length to pad)."""

    def __init__(self, mdp: TabularMDP, r_am: np.ndarray, gamma: float) -> None:
        self.mdp, self.r_am, self.gamma = mdp, r_am, gamma

    def set_policy(self, policy: np.ndarray, changed: np.ndarray | None = None) -> None:
        n = self.mdp.n_states
        rows = policy * n + np.arange(n)
        self.matrix = self.mdp.action_major()[rows]
        self.matrix.data *= self.gamma
        self.r_pi = self.r_am[rows]

    def sweep(self, v: np.ndarray, target: float, max_sweeps: int) -> tuple[np.ndarray, int]:
        done = 0
        while done < max_sweeps:
            before = v
            v = self.matrix @ v
            v += self.r_pi
            done += 1
            if float(np.max(np.abs(v - before))) <= target:
                break
        return v, done


def _evaluate_policy(mdp: TabularMDP, policy: np.ndarray, r_am: np.ndarray, gamma: float) -> np.ndarray | None:
    """Exact V of a policy: solves (I - gamma P_pi) V = r_pi with terminal states fixed at 0
    (their self-loop dropped, so that the system is regular with discount 1 too). None if
    the solve fails (with discount 1: a policy that does not finish)."""
    n = mdp.n_states
    rows = policy * n + np.arange(n)
    m = mdp.action_major()[rows]
    m.data *= np.repeat(np.where(mdp.terminal, 0.0, -gamma), np.diff(m.indptr))
    system = (m + sp.identity(n, format="csr")).tocsr()
    system.eliminate_zeros()
    # CSR arrays read as CSC are the transpose: factor that, and solve transposed
    transposed = sp.csc_matrix((system.data, system.indices, system.indptr), shape=(n, n))
    try:
        with np.errstate(all="raise"):
            v = np.atleast_1d(spla.splu(transposed).solve(np.where(mdp.terminal, 0.0, r_am[rows]), trans="T"))
    except (RuntimeError, FloatingPointError):
        return None
    return v if np.all(np.isfinite(v)) else None


def _heading_policy(mdp: TabularMDP, allowed_am: np.ndarray) -> np.ndarray | None:
    """At every state, the allowed action most likely to step closer (breadth-first, over every
    action) to a terminal state; None for an MDP without terminal states."""
    def heading(allowed):
        progress = _progress(mdp)
        if progress is None:
            return None
        return np.argmax(np.where(allowed, progress, -1.0).reshape(mdp.n_actions, mdp.n_states), axis=0)

    if not allowed_am.all():
        return heading(allowed_am)
    unrestricted = mdp.derived("heading_policy", lambda: heading(allowed_am))
    return None if unrestricted is None else unrestricted.copy()


def _progress(mdp: TabularMDP, distance: np.ndarray | None = None) -> np.ndarray | None:
    """(A * S,) action-major: the probability that (s, a) steps to a state closer to the
    terminal states than s, by `distance` (default: `mdp.sweep_order()`'s, then cached);
    None if no state reaches a terminal state."""
    if distance is None:
        return mdp.derived("progress", lambda: _progress(mdp, mdp.sweep_order()[0]))
    if not np.isfinite(distance).any():
        return None
    n_states, n_actions = mdp.n_states, mdp.n_actions
    padded = mdp.padded_rows()
    if padded is not None:  # self-loops (dropped there) never step closer
        columns, probabilities, _ = padded
        here = distance[np.arange(n_states * n_actions) % n_states]
        return (probabilities * (distance[columns] < here[:, None])).sum(axis=1)
    t = mdp.transitions  # row s * A + a
    entry_row = np.repeat(np.arange(n_states * n_actions), np.diff(t.indptr))
    closer = distance[t.indices] < distance[entry_row // n_actions]
    by_row = np.bincount(entry_row, weights=np.where(closer, t.data, 0.0), minlength=n_states * n_actions)
    return np.ascontiguousarray(by_row.reshape(n_states, n_actions).T).reshape(-1)


def _finishing_policy(mdp: TabularMDP, allowed_am: np.ndarray, candidate: np.ndarray | None = None) -> np.ndarray | None:
    """A policy over the allowed actions that reaches a terminal state with probability 1 from
    every state, or None if there is none: `candidate` if it is one (whether it finishes is
    kept on the MDP: a caller passes the same one, say the task's policy, to many solves),
    else the one below.

    Breadth-first distances to the terminal states in the graph of allowed transitions; each
    state takes the allowed action most likely to step to a state closer than itself, which
    exists and has a positive probability, so from every state the policy finishes within
    S steps with positive probability, hence surely. With every action allowed it is the same
    for every reward: kept on the MDP."""
    if candidate is not None:
        candidate = np.asarray(candidate, dtype=np.int64)
        if (allowed_am[candidate * mdp.n_states + np.arange(mdp.n_states)].all()
                and mdp.derived(("finishes everywhere", candidate.tobytes()),
                                lambda: bool(finishes_surely(mdp, candidate).all()))):
            return candidate.copy()
    if allowed_am.all():
        unrestricted = mdp.derived("finishing_policy", lambda: _finishing_policy_over(mdp, allowed_am))
        return None if unrestricted is None else unrestricted.copy()
    return _finishing_policy_over(mdp, allowed_am)


def _finishing_policy_over(mdp: TabularMDP, allowed_am: np.ndarray) -> np.ndarray | None:
    keep = allowed_am.reshape(mdp.n_actions, mdp.n_states).T.reshape(-1)  # row s * A + a
    distance = terminal_distances(mdp.transitions, mdp.n_actions, mdp.terminal, keep)
    if not np.all(np.isfinite(distance)):
        return None
    progress = _progress(mdp, distance)
    return np.argmax(np.where(allowed_am, progress, -1.0).reshape(mdp.n_actions, mdp.n_states), axis=0)


def lexicographic_value_iteration(
    mdp: TabularMDP,
    secondary_reward: np.ndarray,
    slack: float = 0.0,
    task_reward: np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
    task_result: ValueResult | None = None,
    step_cost: float | None = None,
    method: str = "auto",
    initial_values: np.ndarray | None = None,
) -> LexicographicResult:
    """LVI (Wray et al. 2015) with two objectives: the task first, then `secondary_reward`.

    The per-state slack eta = (1 - gamma) * slack keeps the lexicographic policy's task
    value within `slack` of the optimum at every state. `secondary_reward` is (S,) or
    (S, A); for NSE mitigation it is minus the robot's local penalty. Ties in the
    secondary objective are broken by the task Q-values. Pass `task_result` to reuse
    an already solved task objective. `method` is `value_iteration`'s, for both objectives;
    `initial_values` its start for the secondary objective (with `step_cost`: the secondary
    values of this LVI with a smaller slack are a start below V*, see `_warm_start`).
    """
    if slack < 0:
        raise ValueError(f"slack must be >= 0, got {slack}")
    task = task_result if task_result is not None else value_iteration(mdp, task_reward, tolerance=tolerance,
                                                                       method=method)
    eta = (1.0 - mdp.discount) * slack
    allowed = (task.values[:, None] - task.q_values) <= eta + tie_tolerance
    if step_cost is None:
        secondary = value_iteration(mdp, secondary_reward, allowed=allowed, tolerance=tolerance, method=method)
    else:
        if not step_cost > 0:
            raise ValueError(f"step_cost must be positive, got {step_cost}")
        r2 = _as_state_action_reward(mdp, secondary_reward)
        if np.any(r2 > 0):
            raise ValueError("a shortest-path secondary objective needs rewards <= 0 (penalties), "
                             f"got up to {r2.max():.3g}")
        r2 = r2 - step_cost
        r2[mdp.terminal] = 0.0  # done is free: terminal states stay absorbing at zero cost
        # the task's policy takes allowed actions only (no slack needed): where it finishes
        # from every state, the secondary solve starts from it instead of searching for one
        secondary = value_iteration(mdp, r2, allowed=allowed, tolerance=tolerance, discount=1.0, method=method,
                                    initial_values=initial_values, start_policy=task.policy)
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
    method: str = "auto",
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
    finishing is possible). The result's `slack` says which slack was used. `method` is
    `value_iteration`'s.
    """
    task = task_result if task_result is not None else value_iteration(mdp, tolerance=tolerance, method=method)
    scale = float(np.max(np.abs(secondary_reward), initial=0.0))
    step_cost = relative_step_cost * scale if scale > 0 else 1e-3

    def solve(delta: float) -> LexicographicResult:
        return lexicographic_value_iteration(mdp, secondary_reward, delta, task_result=task, tolerance=tolerance,
                                             step_cost=step_cost, method=method)

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
    """Exact V^pi for `reward` (default: task reward): solves (I - gamma P_pi) V = r_pi.
    `policy` is (S,) actions or (S, A) action probabilities."""
    r = _as_state_action_reward(mdp, reward)
    policy = np.asarray(policy)
    p_pi = mdp.policy_matrix(policy)
    r_pi = (policy * r).sum(axis=1) if policy.ndim == 2 else r[np.arange(mdp.n_states), policy]
    system = sp.identity(mdp.n_states, format="csc") - mdp.discount * p_pi.tocsc()
    return np.atleast_1d(spla.spsolve(system, r_pi))


def _reached_chain(p_pi: sp.csr_matrix, origin: int) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """The states a policy's chain `p_pi` reaches from `origin` (sorted), each state's position
    among them (-1: not reached), and the chain on them: a closed set, since every successor of
    a reached state is reached (an entry into another state holds probability 0 and is zeroed);
    each row keeps its entries' order."""
    reach = np.sort(csgraph.breadth_first_order(p_pi, origin, directed=True, return_predecessors=False))
    position = np.full(p_pi.shape[0], -1, dtype=np.int64)
    position[reach] = np.arange(len(reach))
    sub = csr_rows(p_pi, reach)
    columns = position[sub.indices]
    keep = columns >= 0
    data = sub.data if keep.all() else np.where(keep, sub.data, 0.0)
    return reach, position, sp.csr_matrix((data, np.maximum(columns, 0), sub.indptr), shape=(len(reach),) * 2)


def evaluate_from_start(mdp: TabularMDP, policy: np.ndarray, reward: np.ndarray | None = None) -> float | None:
    """V^pi(s0) for `reward` (default: the task reward) if the deterministic `policy` finishes
    surely from the start, else None: `finishes_surely(...)[start]` and
    `policy_evaluation(...)[start]` in one, on the states the policy reaches from the start
    only (a closed set under the policy, so its values there are the whole MDP's).

    Budgeted planning calls it once per solve, thousands of times a mitigation, on chains of a
    few hundred states: where the MDP has fixed-width rows (`padded_rows`) the policy's rows
    are gathered as (S, K) tables and each sparse matrix is made once from them."""
    policy = np.asarray(policy)
    padded = mdp.padded_rows()
    if padded is None:
        return _evaluate_from_start_rows(mdp, policy, reward)
    _, probabilities_all, stay_all = padded
    n = mdp.n_states
    rows = policy * n + np.arange(n)  # action-major rows
    probabilities = np.take(probabilities_all, rows, axis=0)
    columns = np.take(_successor_columns(mdp, padded), rows, axis=0)
    width = columns.shape[1]
    graph = sp.csr_matrix((probabilities.reshape(-1), columns.reshape(-1), np.arange(0, n * width + 1, width)),
                          shape=(n, n))
    reach = np.sort(csgraph.breadth_first_order(graph, mdp.start, directed=True, return_predecessors=False))
    terminal = mdp.terminal[reach]
    if not terminal.any():
        return None
    m = len(reach)
    position = np.full(n, -1, dtype=np.int64)
    position[reach] = np.arange(m)
    sub_columns = position[columns[reach]].astype(np.int32)  # every successor is reached
    sub_probabilities = probabilities[reach]
    # a breadth-first search back from the terminal states (from one extra node m, whose
    # successors they are, on the reverse graph) must find every reached state; its order is
    # by distance to the goal
    targets = sub_columns.reshape(-1)
    back = np.argsort(targets, kind="stable")
    starts = np.zeros(m + 2, dtype=np.int32)
    np.cumsum(np.bincount(targets, minlength=m), out=starts[1:m + 1])
    goals = np.flatnonzero(terminal).astype(np.int32)
    starts[m + 1] = starts[m] + len(goals)
    reverse = sp.csr_matrix((np.ones(len(targets) + len(goals)),
                             np.concatenate([(back // width).astype(np.int32), goals]), starts), shape=(m + 1, m + 1))
    found = csgraph.breadth_first_order(reverse, m, directed=True, return_predecessors=False)
    if len(found) != m + 1:
        return None
    # (I - gamma P) on the reached states, row by row: -gamma P off the diagonal, 1 - gamma
    # T(s | s) on it (the identity at terminal states, which stay at 0); as CSC it is the
    # transpose, solved transposed
    gamma = mdp.discount
    live = ~terminal
    # the states farthest from the goal first: a robot's chain runs along its path to the goal,
    # so (I - gamma P) is then nearly triangular and factors with little fill-in (less than in
    # index order, and faster than a fill-reducing ordering on these few hundred states)
    order = found[:0:-1]
    rank = np.empty(m, dtype=np.int32)
    rank[order] = np.arange(m, dtype=np.int32)
    data = np.empty((m, width + 1))
    data[:, :width] = sub_probabilities[order] * np.where(live[order], -gamma, 0.0)[:, None]
    data[:, width] = np.where(live[order], 1.0 - gamma * stay_all[rows[reach[order]]], 1.0)
    indices = np.empty((m, width + 1), dtype=np.int32)
    indices[:, :width] = rank[sub_columns[order]]
    indices[:, width] = np.arange(m)
    system = sp.csc_matrix((data.reshape(-1), indices.reshape(-1),
                            np.arange(0, m * (width + 1) + 1, width + 1, dtype=np.int32)), shape=(m, m))
    r = np.where(terminal, 0.0, _as_state_action_reward(mdp, reward)[reach, policy[reach]])[order]
    value = spla.splu(system, permc_spec="NATURAL", **_SMALL_LU).solve(r, trans="T")
    return float(np.atleast_1d(value)[rank[position[mdp.start]]])


#: SuperLU settings for a robot's chain (a few hundred to a few thousand states, a handful of
#: entries per row): no supernode relaxation and panels of one column, 0.33 -> 0.24 ms per
#: factorisation of the authors' grids' chains (the same values up to 3e-14)
_SMALL_LU = {"relax": 1, "panel_size": 1}


def _successor_columns(mdp: TabularMDP, padded) -> np.ndarray:
    """`padded_rows`' columns with every entry of probability 0 at the row's own state (a loop,
    not a step: a breadth-first search over them follows positive probabilities only), cached."""
    def build():
        columns_all, probabilities_all, _ = padded
        own = (np.arange(columns_all.shape[0]) % mdp.n_states).astype(columns_all.dtype)
        return np.where(probabilities_all > 0, columns_all, own[:, None])
    return mdp.derived("successor_columns", build)


def _evaluate_from_start_rows(mdp: TabularMDP, policy: np.ndarray, reward: np.ndarray | None) -> float | None:
    """`evaluate_from_start` on the policy's sparse rows (MDPs whose rows vary too much in
    length to pad)."""
    reach, position, sub = _reached_chain(mdp.policy_matrix(policy), mdp.start)
    terminal = mdp.terminal[reach]
    if not terminal.any():
        return None
    distance = csgraph.dijkstra(sub.T.tocsr(), directed=True, indices=np.flatnonzero(terminal), unweighted=True,
                                min_only=True)
    if not np.all(np.isfinite(distance)):
        return None
    r = _as_state_action_reward(mdp, reward)[reach, policy[reach]]
    system = sp.identity(len(reach), format="csc") - mdp.discount * sub.tocsc()
    return float(np.atleast_1d(spla.splu(system, permc_spec="NATURAL", **_SMALL_LU).solve(r))[position[mdp.start]])


def _reaches(p_pi: sp.csr_matrix, targets: np.ndarray) -> np.ndarray:
    """States with a positive-probability path into `targets` (a breadth-first search backwards)."""
    sources = np.flatnonzero(targets)
    if not len(sources):
        return np.zeros(len(targets), bool)
    distance = csgraph.dijkstra(p_pi.T.tocsr(), directed=True, indices=sources, unweighted=True, min_only=True)
    return np.isfinite(np.atleast_1d(distance))


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
    reach, reached = reached_state_distributions(mdp, policy, horizon, start)
    dist = np.zeros((horizon + 1, mdp.n_states))
    dist[:, reach] = reached
    return dist


def reached_state_distributions(
    mdp: TabularMDP, policy: np.ndarray, horizon: int, start: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`state_distributions` on the states the policy can reach from the start, the only ones
    with a probability above 0: (reach (R,) sorted state indices, (horizon + 1, R)).

    A robot's policy reaches a fraction of its MDP (a tenth of an Overcooked robot's), so the
    products are that much smaller; the numbers are the same bit for bit (the entries left out
    only ever add 0, and each row keeps its order)."""
    if horizon < 0:
        raise ValueError("horizon must be >= 0")
    origin = mdp.start if start is None else int(start)
    reach, position, sub = _reached_chain(mdp.policy_matrix(policy), origin)
    step = _product(sub.T.tocsr())
    dist = np.zeros((horizon + 1, len(reach)))
    dist[0, position[origin]] = 1.0
    for t in range(horizon):
        step(dist[t], dist[t + 1])
    return reach, dist


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
    lanes: np.ndarray | None = None,
) -> Trajectories:
    """Seeded rollouts of `policy`, all episodes advanced together one step at a time.

    Step t of every episode consumes one uniform draw: `rng.random(episodes)` per step, or
    row t of `uniforms` (horizon, episodes) when given (then `seed` is not used). Several
    robots with one MDP are simulated together by passing their draws side by side, and, if
    their policies differ, `policy` as a (K, S) table with `lanes` (episodes,) giving each
    episode's row of it: every episode's states are those it would have alone. Robots of
    several MDPs together: `simulate_lanes`.
    """
    if uniforms is not None:
        uniforms = np.asarray(uniforms, dtype=float)
        if uniforms.shape != (horizon, episodes):
            raise ValueError(f"uniforms needs shape {(horizon, episodes)}, got {uniforms.shape}")
    rng = np.random.default_rng(seed) if uniforms is None else None
    table = np.atleast_2d(np.asarray(policy))
    lanes = np.zeros(episodes, dtype=np.intp) if lanes is None else np.asarray(lanes, dtype=np.intp)
    if lanes.shape != (episodes,) or table.shape[1] != mdp.n_states:
        raise ValueError(f"policy needs shape (K, {mdp.n_states}) with lanes (episodes,), "
                         f"got {table.shape} and {lanes.shape}")
    draw = (lambda t: rng.random(episodes)) if uniforms is None else uniforms.__getitem__
    # steps left once every episode has finished: the generator still draws for them
    skip = (lambda steps: rng.random((steps, episodes))) if uniforms is None else (lambda steps: None)
    origin = mdp.start if start is None else int(start)
    states, actions = _rollouts([(mdp, row) for row in table], lanes, np.full(episodes, origin), horizon, draw,
                                keep_actions=True, skip=skip)
    return Trajectories(np.ascontiguousarray(states.T), np.ascontiguousarray(actions.T))


def simulate_lanes(models: list[tuple[TabularMDP, np.ndarray]], lane_model: np.ndarray, horizon: int,
                   uniforms: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """Rollouts of many (MDP, policy) pairs at once, one step of all of them per step: lane l
    follows `models[lane_model[l]]` from `starts[l]` (default: its MDP's start), step t drawing
    `uniforms[t, l]`. Returns the states (horizon + 1, L). Each lane's states are those
    `simulate` gives its MDP and policy with the same draws, bit for bit: a fleet of robots
    with a few dozen MDPs is one loop over time, not one per MDP."""
    lane_model = np.asarray(lane_model, dtype=np.intp)
    uniforms = np.asarray(uniforms, dtype=float)
    if uniforms.shape != (horizon, len(lane_model)):
        raise ValueError(f"uniforms needs shape {(horizon, len(lane_model))}, got {uniforms.shape}")
    if len(lane_model) and not (0 <= lane_model.min() and lane_model.max() < len(models)):
        raise ValueError(f"lane_model must index the {len(models)} models")
    if starts is None:
        starts = np.array([models[k][0].start for k in lane_model], dtype=np.int64)
    states, _ = _rollouts(models, lane_model, np.asarray(starts, dtype=np.int64), horizon, uniforms.__getitem__,
                          skip=lambda steps: None)
    return states


def _sampling_rows(mdp: TabularMDP) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per state-action row (s * A + a) of the transitions, cached: the running sum of the
    probabilities before the row (`base`) and through it (`top`), the running sums inside it
    (R, W - 1) but the last (+inf there and beyond: the last successor takes the rest), and
    the successors (R, W), W the longest row. A draw u in row r goes to successor
    #{j : cum[r, j] <= base + u (top - base)}: `np.searchsorted` over the MDP's running sum
    clipped to the row, which it is bit for bit, without a search over every row."""
    def build():
        t = mdp.transitions
        lengths = np.diff(t.indptr)
        if len(lengths) and lengths.min() == 0:
            raise ValueError("every state-action needs at least one successor to simulate")
        width = int(lengths.max(initial=1))
        n_rows = len(lengths)
        cum = np.cumsum(t.data)
        lo, hi = t.indptr[:-1], t.indptr[1:]
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        top = cum[hi - 1]
        slot = np.arange(width)[None, :]
        entry = lo[:, None] + slot
        inside = slot < lengths[:, None]
        successors = np.where(inside, t.indices[np.minimum(entry, t.nnz - 1)], 0).astype(np.int64)
        running = np.where(slot[:, : width - 1] < (lengths - 1)[:, None], cum[np.minimum(entry[:, : width - 1], t.nnz - 1)],
                           np.inf)
        return base, top, np.ascontiguousarray(running), successors
    return mdp.derived("sampling_rows", build)


def _absorbing(mdp: TabularMDP) -> np.ndarray:
    """(S,) bool, cached: every action leaves the state where it is, with probability 1 (a
    terminal state of a built MDP): a lane there stays for good, whatever it draws."""
    def build():
        t = mdp.transitions
        lengths = np.diff(t.indptr)
        rows = np.arange(t.shape[0])
        own = rows // mdp.n_actions
        stays = (lengths == 1) & (t.indices[np.minimum(t.indptr[:-1], max(t.nnz - 1, 0))] == own)
        return stays.reshape(mdp.n_states, mdp.n_actions).all(axis=1)
    return mdp.derived("absorbing", build)


#: the rollouts check every this many steps whether every lane is absorbed (and then stop)
ABSORBED_CHECK = 4


def _rollouts(models, lane_model: np.ndarray, starts: np.ndarray, horizon: int, draw, keep_actions: bool = False,
              skip=None):
    """The sampler of `simulate` and `simulate_lanes`: (horizon + 1, L) states and, if asked,
    (horizon, L) actions. The rows of every MDP involved are stacked (each MDP's own running
    sums, so the draws compare exactly as in one MDP alone), and the policies laid end to end.
    With `skip` (skip(k): consume the draws of k steps), the steps after every lane has reached
    an absorbing state are not simulated: each lane keeps its state (and its policy's action)."""
    mdps: dict[int, int] = {}
    tables = []
    for mdp, _ in models:
        if id(mdp) not in mdps:
            mdps[id(mdp)] = len(tables)
            tables.append((mdp, _sampling_rows(mdp)))
    width = max(t[1][3].shape[1] for t in tables)
    row_offset = np.cumsum([0] + [mdp.n_states * mdp.n_actions for mdp, _ in tables])
    if len(tables) == 1:
        base, top, running, successors = tables[0][1]
    else:
        def stacked(part: int, columns: int, fill):  # rows widened to `columns` with `fill`
            return np.concatenate([np.pad(rows[part], ((0, 0), (0, columns - rows[part].shape[1])), constant_values=fill)
                                   for _, rows in tables])
        base, top = (np.concatenate([rows[part] for _, rows in tables]) for part in (0, 1))
        running, successors = stacked(2, width - 1, np.inf), stacked(3, width, 0)
    which = np.array([mdps[id(mdp)] for mdp, _ in models], dtype=np.intp)
    sizes = [mdp.n_states for mdp, _ in models]
    policy_offset = np.cumsum([0] + sizes)[:-1]
    policies = np.concatenate([np.asarray(policy, dtype=np.int64) for _, policy in models]) if models else np.zeros(0, np.int64)
    n_actions = np.array([tables[k][0].n_actions for k in which], dtype=np.int64)[lane_model]
    lane_policy = policy_offset[lane_model]
    lane_rows = row_offset[which][lane_model]
    lanes = len(lane_model)
    states = np.empty((horizon + 1, lanes), dtype=np.int64)
    states[0] = starts
    actions = np.empty((horizon, lanes), dtype=np.int64) if keep_actions else None
    if skip is not None:
        state_offset = np.cumsum([0] + [mdp.n_states for mdp, _ in tables])
        absorbing = np.concatenate([_absorbing(mdp) for mdp, _ in tables])
        lane_states = state_offset[which][lane_model]
    for t in range(horizon):
        s = states[t]
        if skip is not None and t % ABSORBED_CHECK == 0 and absorbing[lane_states + s].all():
            states[t + 1:] = s
            if keep_actions:
                actions[t:] = policies[lane_policy + s]
            skip(horizon - t)
            break
        a = policies[lane_policy + s]
        if keep_actions:
            actions[t] = a
        row = lane_rows + s * n_actions + a
        low = base[row]
        target = low + draw(t) * (top[row] - low)
        passed = (running[row] <= target[:, None]).sum(axis=1)
        states[t + 1] = successors[row, passed]
    return states, actions
