"""The NSE monitor: the joint penalty of the robots' joint policy (MATH.md section 4).

Robots move simultaneously from their starts for `horizon` steps; a robot that is done
stays in its terminal state and counts as null. Two estimators:

* `exact_monitor`: transitions are independent, so at each time step the count of robots
  in a (zone, value) cell is Poisson-binomial; its distribution comes from a dynamic
  programme over robots, vectorised over time steps and cells.
* `monte_carlo_monitor`: seeded joint rollouts; it also returns the visited joint states
  that the blame resolver learns from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from planner.mdp import TabularMDP
from planner.solvers import simulate, state_distributions

#: the exact NSE-state rate tracks capped counts for every (zone, value) cell jointly;
#: above this many joint count states it is left to Monte Carlo
MAX_EXACT_RATE_STATES = 50_000
#: the exact monitor sums over the robots' count distribution with an FFT (instead of the
#: O(n^2) recursion) from this many robots on, when there are at most n / FFT_RUNS_PER_ROBOT
#: distinct (MDP, policy) behaviours among them
FFT_MIN_ROBOTS = 64
FFT_RUNS_PER_ROBOT = 16


@dataclass(eq=False)
class RobotModel:
    """What the monitor needs of one robot: its MDP, its policy, and per state the NSE
    zone it stands in and its dynamic feature value (0 = null, forced at terminal states)."""

    robot_id: str
    mdp: TabularMDP
    policy: np.ndarray
    zone: np.ndarray  # (S,)
    value: np.ndarray  # (S,)

    def __post_init__(self) -> None:
        self.value = np.where(self.mdp.terminal, 0, self.value)


def robot_model(plan, static_feature: str, dynamic_feature: str, policy: np.ndarray | None = None) -> RobotModel:
    """A `RobotModel` from a planned robot (`planner.scenario.RobotPlan`)."""
    mdp = plan.mdp
    return RobotModel(plan.task.robot_id, mdp, plan.policy if policy is None else policy,
                      mdp.states[:, mdp.feature_index(static_feature)],
                      mdp.states[:, mdp.feature_index(dynamic_feature)])


@dataclass
class MonitorReport:
    method: str
    total_penalty: float  # J_N = E[sum_t R_N(s^t)]
    nse_state_rate: float | None  # mean over t of P(R_N(s^t) > 0); None if not computed
    per_step: np.ndarray  # (H+1,) expected R_N at each step
    per_zone: np.ndarray  # (Z+1,) expected total penalty by zone (index 0: no zone, always 0)
    standard_error: float | None = None  # of total_penalty (Monte Carlo)
    rate_standard_error: float | None = None
    episodes: int | None = None


@dataclass
class JointVisits:
    """Joint states visited in Monte Carlo episodes: `states[e, t, i]` is robot i's local state index."""

    states: np.ndarray  # (episodes, H+1, n)
    zone: np.ndarray  # (episodes, H+1, n)
    value: np.ndarray  # (episodes, H+1, n)
    penalty: np.ndarray  # (episodes, H+1)


def _unique_runs(robots: Sequence[RobotModel]) -> tuple[list[RobotModel], np.ndarray]:
    """Robots with the same MDP and policy behave identically in distribution."""
    keys: dict[tuple, int] = {}
    firsts, owner = [], np.empty(len(robots), dtype=np.int64)
    for i, robot in enumerate(robots):
        key = (id(robot.mdp), robot.policy.tobytes(), robot.mdp.start)
        if key not in keys:
            keys[key] = len(firsts)
            firsts.append(robot)
        owner[i] = keys[key]
    return firsts, owner


def cell_occupancy(robots: Sequence[RobotModel], horizon: int, n_zones: int, n_values: int) -> np.ndarray:
    """(n, H+1, Z+1, V): P(robot i is in zone z with value v at time t)."""
    firsts, owner = _unique_runs(robots)
    n_cells = (n_zones + 1) * n_values
    occ = np.empty((len(firsts), horizon + 1, n_cells))
    for k, robot in enumerate(firsts):
        dist = state_distributions(robot.mdp, robot.policy, horizon)
        cells = robot.zone * n_values + robot.value
        onehot = sp.csr_matrix((np.ones(len(cells)), (np.arange(len(cells)), cells)),
                               shape=(len(cells), n_cells))
        occ[k] = (onehot.T @ dist.T).T
    return occ[owner].reshape(len(robots), horizon + 1, n_zones + 1, n_values)


def poisson_binomial(p: np.ndarray) -> np.ndarray:
    """Distribution of the number of successes of independent Bernoullis.

    `p` is (n, ...) success probabilities; returns (n+1, ...) with the pmf of the count,
    by the recurrence over robots, vectorised over the trailing axes.
    """
    n = p.shape[0]
    pmf = np.zeros((n + 1,) + p.shape[1:])
    pmf[0] = 1.0
    tmp = np.empty_like(pmf)
    for i in range(n):
        pi = p[i]
        # pmf[k] <- pmf[k] (1 - p_i) + pmf[k-1] p_i, in place (the same floating-point operations)
        np.multiply(pmf[0 : i + 1], pi, out=tmp[0 : i + 1])
        pmf[0 : i + 2] *= 1 - pi
        pmf[1 : i + 2] += tmp[0 : i + 1]
    return pmf


def poisson_binomial_grouped(p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """`poisson_binomial` when `counts[k]` robots each succeed with probability `p[k]` (K, ...).

    Through the probability generating function at the n+1 roots of unity w_j:
    prod_k (1 - p_k + p_k w_j)^(m_k), each power by repeated squaring, then an inverse FFT.
    O(K n log m) per trailing element instead of the recursion's O(n^2); the pmf is exact up
    to rounding (~1e-15 absolute, tested against the recursion).
    """
    counts = np.asarray(counts, dtype=np.int64)
    size = int(counts.sum()) + 1
    w = np.exp(-2j * np.pi * np.arange(size // 2 + 1) / size).reshape((-1,) + (1,) * (p.ndim - 1))
    phi = np.ones((len(w),) + p.shape[1:], dtype=complex)
    for pk, m in zip(p, counts):
        z, m = (1.0 - pk) + pk * w, int(m)
        while m:
            if m & 1:
                phi *= z
            m >>= 1
            if m:
                z = z * z
    return np.clip(np.fft.irfft(phi, n=size, axis=0), 0.0, 1.0)


def exact_monitor(penalty, robots: Sequence[RobotModel], horizon: int, n_zones: int, n_values: int,
                  min_count: int = 2) -> MonitorReport:
    """Exact J_N and breakdowns through Poisson-binomial counts per step and cell."""
    n = len(robots)
    occ = cell_occupancy(robots, horizon, n_zones, n_values)
    cells = np.argwhere(penalty.cell_has_term)  # (z, v) cells some rule penalises
    per_step = np.zeros(horizon + 1)
    per_zone = np.zeros(n_zones + 1)
    if len(cells):
        p = occ[:, :, cells[:, 0], cells[:, 1]]  # (n, H+1, C)
        _, first, mult = np.unique(_unique_runs(robots)[1], return_index=True, return_counts=True)
        if n >= FFT_MIN_ROBOTS and FFT_RUNS_PER_ROBOT * len(first) <= n:
            pmf = poisson_binomial_grouped(p[first], mult)  # many robots, few distinct behaviours
        else:
            pmf = poisson_binomial(p)  # (n+1, H+1, C)
        g = penalty.cell_table(n)[cells[:, 0], cells[:, 1], : n + 1]  # (C, n+1): g_c(k)
        expected = np.einsum("ktc,ck->tc", pmf, g)  # (H+1, C)
        per_step = expected.sum(axis=1)
        np.add.at(per_zone, cells[:, 0], expected.sum(axis=0))
    rate = _exact_nse_rate(occ, cells, min_count)
    return MonitorReport("exact", float(per_step.sum()), rate, per_step, per_zone)


def _exact_nse_rate(occ: np.ndarray, cells: np.ndarray, min_count: int) -> float | None:
    """Mean over t of P(some penalised cell holds >= min_count robots).

    Tracks every cell's count capped at min_count - 1 jointly, robot by robot; the joint
    count space is min_count ** C, so this is only done while that stays small.
    """
    n_cells = len(cells)
    if n_cells == 0:
        return 0.0
    m = min_count
    n_joint = m ** n_cells
    if n_joint > MAX_EXACT_RATE_STATES:
        return None
    horizon1 = occ.shape[1]
    # prob[t, j]: probability that no cell has reached m and the capped counts are joint state j
    prob = np.zeros((horizon1, n_joint))
    prob[:, 0] = 1.0
    digits = (np.arange(n_joint)[:, None] // (m ** np.arange(n_cells))[None, :]) % m  # (J, C)
    strides = m ** np.arange(n_cells)
    for i in range(occ.shape[0]):
        p = occ[i][:, cells[:, 0], cells[:, 1]]  # (H+1, C)
        new = prob * (1.0 - p.sum(axis=1, keepdims=True))  # robot i in no penalised cell
        for c in range(n_cells):
            ok = digits[:, c] < m - 1  # adding robot i to cell c keeps it below m
            src = np.flatnonzero(ok)
            new[:, src + strides[c]] += prob[:, src] * p[:, c : c + 1]
        prob = new
    rate = float(np.mean(1.0 - prob.sum(axis=1)))
    return 0.0 if rate < 1e-12 else min(rate, 1.0)  # rounding leaves ~1e-17 where no NSE is possible


def monte_carlo_monitor(penalty, robots: Sequence[RobotModel], horizon: int, episodes: int = 200,
                        seed: int | None = 0) -> tuple[MonitorReport, JointVisits]:
    """Seeded joint rollouts; returns the report and the visited joint states."""
    if episodes < 2:
        raise ValueError("Monte Carlo needs at least 2 episodes for its standard error")
    rng = np.random.default_rng(seed)
    n = len(robots)
    states = np.empty((episodes, horizon + 1, n), dtype=np.int64)
    zone = np.empty_like(states)
    value = np.empty_like(states)
    # Each robot's draws come from the stream robot after robot, as if `simulate` were called
    # once per robot; robots with the same MDP, policy and start are then advanced together
    # (bit-identical rollouts, one Python loop over time per group instead of per robot).
    uniforms = rng.random((n, horizon, episodes))
    firsts, owner = _unique_runs(robots)
    for k, robot in enumerate(firsts):
        members = np.flatnonzero(owner == k)
        u = uniforms[members].transpose(1, 0, 2).reshape(horizon, len(members) * episodes)
        run = simulate(robot.mdp, robot.policy, horizon, episodes=len(members) * episodes, uniforms=u)
        states[:, :, members] = run.states.reshape(len(members), episodes, horizon + 1).transpose(1, 2, 0)
        same = [i for i in members if np.array_equal(robots[i].zone, robot.zone)
                and np.array_equal(robots[i].value, robot.value)]
        zone[:, :, same] = robot.zone[states[:, :, same]]
        value[:, :, same] = robot.value[states[:, :, same]]
        for i in set(members.tolist()) - set(same):
            zone[:, :, i] = robots[i].zone[states[:, :, i]]
            value[:, :, i] = robots[i].value[states[:, :, i]]
    del uniforms
    flat_pen = penalty(zone.reshape(-1, n), value.reshape(-1, n))
    pen = flat_pen.reshape(episodes, horizon + 1)
    totals = pen.sum(axis=1)
    rates = (pen > 0).mean(axis=1)
    per_zone = penalty.zone_breakdown(zone.reshape(-1, n), value.reshape(-1, n)).reshape(
        episodes, horizon + 1, -1).sum(axis=1).mean(axis=0)
    report = MonitorReport(
        "monte_carlo", float(totals.mean()), float(rates.mean()), pen.mean(axis=0), per_zone,
        standard_error=float(totals.std(ddof=1) / np.sqrt(episodes)),
        rate_standard_error=float(rates.std(ddof=1) / np.sqrt(episodes)), episodes=episodes)
    return report, JointVisits(states, zone, value, pen)
