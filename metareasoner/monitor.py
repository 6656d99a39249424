"""The NSE monitor: the joint penalty of the robots' joint policy (docs/FORMULATION.md section 4).

Robots move simultaneously from their starts for `horizon` steps; a robot that is done
stays in its terminal state and counts as null. Two estimators:

* `exact_monitor`: transitions are independent, so at each time step the count of robots
  in a (zone, value) cell is Poisson-binomial; its distribution comes from a dynamic
  programme over robots, vectorised over time steps and cells.
* `monte_carlo_monitor`: seeded joint rollouts; it also returns the visited joint states
  that the blame resolver learns from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln, xlogy

from planner.mdp import TabularMDP
from planner.solvers import reached_state_distributions, simulate_lanes

#: the exact NSE-state rate tracks capped counts for every (zone, value) cell jointly;
#: above this many joint count states it is left to Monte Carlo
MAX_EXACT_RATE_STATES = 50_000
#: ... and the robots of one behaviour are added at once while there are at most this many
#: pairs of joint states to combine
MAX_RATE_PAIRS = 200_000
#: the exact monitor sums over the robots' count distribution with an FFT (instead of the
#: O(n^2) recursion) from this many robots on, when there are at most n / FFT_RUNS_PER_ROBOT
#: distinct (MDP, policy) behaviours among them
FFT_MIN_ROBOTS = 64
FFT_RUNS_PER_ROBOT = 16
#: FleetCounts' windows are this many counts wider than needed, so that swaps rarely move them
WINDOW_MARGIN = 8
#: ... and each column's transform has the fewest points of the ladder BANK_POINTS, x BANK_GROWTH, ...
#: (odd) that holds its window with a quarter to spare
BANK_POINTS = 41
BANK_GROWTH = 1.5
#: a run of one behaviour's swaps is checked against the windows this many at a time (memory: chunk x columns)
RUN_CHUNK = 256
REFRESH_EVERY = 256  # swaps between rebuilds of phi from log_phi (products drift by ulps per swap)
DEEP_LOG = -650.0  # below this real log phi is within ~1e-282 of underflow: taken from exp(log_phi)


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
    #: what is computed from these visits alone, by whoever asks first (`RoundContext`): kept
    #: with them, so that every method run on the same rollouts shares it
    derived: dict = field(default_factory=dict, repr=False, compare=False)


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
        reach, dist = reached_state_distributions(robot.mdp, robot.policy, horizon)  # states never reached add 0
        cells = robot.zone[reach] * n_values + robot.value[reach]
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
    occ = cell_occupancy(robots, horizon, n_zones, n_values)
    counts = FleetCounts(penalty, occ, keys=_unique_runs(robots)[1])
    per_step, per_zone = counts.breakdown()
    rate = _exact_nse_rate(occ, counts.cells, min_count, counts.behaviours)
    return MonitorReport("exact", float(per_step.sum()), rate, per_step, per_zone)


class FleetCounts:
    """The exact count distributions of a fleet, per step and penalised (zone, value) cell
    (docs/FORMULATION.md sections 4 and 10), changed one robot at a time.

    At step t the count N_c(t) of robots in cell c is a sum of independent Bernoullis
    p_i(t, c). With the other robots fixed, J_N is linear in robot i's own occupancy:
    J_N = const + sum_{t,c} p_i(t, c) m_i(t, c), where the marginal penalty
    m_i(t, c) = E[g_c(N_-i,c(t) + 1) - g_c(N_-i,c(t))]. So the exact change of J_N when robot
    i's policy is swapped needs only m_i, not a recomputation over the fleet.

    The distributions are kept as their probability generating functions at L roots of unity
    w_j, in log form: S(w) = sum_i Log(1 - p_i + p_i w). A robot joins or leaves by adding or
    subtracting its own term (no deconvolution, whose rounding errors grow geometrically with
    every swap), and any expectation E[f(N)] is sum_j phi(w_j) F_j / L with phi = exp(S) and F
    the discrete Fourier transform of f (Parseval), exact up to rounding. L is odd (so no w_j is
    -1 and no term 1 - p + p w vanishes). Only the counts that have probability above 1e-20 matter
    (a Bernstein bound on both tails of N_c(t)): each (t, c) has its own window of L consecutive
    counts holding them, on which the pmf folded modulo L is the pmf itself, and F is the
    transform of f on that window. So L grows with the spread of the counts (about
    sqrt(n)), not with their mean (about n), and is n + 2 at most (every count: exact);
    a window is re-centred, or L grown, when a swap needs it.
    `occupancy` is (n, T, Z+1, V) as `cell_occupancy` returns; `keys` (n hashables) label
    robots with identical occupancy, e.g. (MDP, policy): their factor is built once and their
    marginals computed once. A swap may name the new behaviour's key too.
    """

    def __init__(self, penalty, occupancy: np.ndarray, keys: Sequence | None = None) -> None:
        self.penalty = penalty
        self.cells = np.argwhere(penalty.cell_has_term)  # (C, 2) penalised (zone, value) cells
        n = occupancy.shape[0]
        self.n_robots = n
        self.p = np.ascontiguousarray(occupancy[:, :, self.cells[:, 0], self.cells[:, 1]])  # (n, T, C)
        self._behaviour_of: dict = {}  # key -> behaviour number
        keys = range(n) if keys is None else keys
        self.behaviours = np.array([self._behaviour_of.setdefault(k, len(self._behaviour_of)) for k in keys],
                                   dtype=np.int64)
        self._table = penalty.cell_table(n + 1)[self.cells[:, 0], self.cells[:, 1], : n + 2]  # (C, n+2): g_c(k)
        self._marginals: dict[int, np.ndarray] = {}
        self._expected: np.ndarray | None = None  # E[g_c(N_c(t))] (T, C), kept until the counts change
        self._mean = self.p.sum(axis=0)  # (T, C) E[N]
        self._support = (self.p > 0).sum(axis=0).reshape(-1)  # robots that can be in each (t, c)
        self._var = (self.p * (1.0 - self.p)).sum(axis=0)  # Var N
        self._build()

    def copy(self) -> "FleetCounts":
        """An independent copy: swaps on either leave the other as it is (the penalty, the
        cells and the tables of g, never changed, are shared)."""
        new = object.__new__(FleetCounts)
        new.__dict__ = {key: value.copy() if isinstance(value, (np.ndarray, dict)) else value
                        for key, value in self.__dict__.items()}
        new._banks = [bank.copy() for bank in self._banks]
        return new

    # -- the transform -------------------------------------------------------------------------

    @property
    def L(self) -> int:
        """The largest number of points of any column's transform."""
        return max((bank.L for bank in self._banks), default=3)

    def _windows(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) per flat (t, c) column: every count of probability > 1e-20 of N_c(t), and of
        N_-i,c(t) for any robot i (one less at most), lies in [a, b]."""
        return self._windows_of(self._mean.reshape(-1), self._var.reshape(-1))

    def _windows_of(self, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows of counts of these means and variances: Bernstein on both tails
        (P(|N - mu| >= x) <= 2 exp(-x^2 / (2 (var + x / 3)))), within 0..n."""
        n = self.n_robots
        x = np.sqrt(92.0 * np.maximum(var, 0.0)) + 31.0  # 31: rounding of the incremental sums
        a = np.clip(np.floor(mean - x).astype(np.int64) - 1, 0, n)
        b = np.clip(np.ceil(mean + x).astype(np.int64), 0, n)
        return a, b

    def _points_for(self, width: np.ndarray) -> np.ndarray:
        """The bank (odd number of points L) for columns whose windows are `width` counts wide:
        the smallest of the ladder BANK_POINTS, BANK_POINTS * BANK_GROWTH, ... that holds the
        window with room to drift, or every count (n + 2, made odd: exact) if that is fewer."""
        n = self.n_robots
        full = n + 2 if (n + 2) % 2 else n + 3
        need = width + np.maximum(WINDOW_MARGIN, width // 4)
        ladder = [BANK_POINTS]
        while ladder[-1] < full:
            nxt = int(ladder[-1] * BANK_GROWTH)
            ladder.append(nxt if nxt % 2 else nxt + 1)
        ladder = np.minimum(np.array(ladder), full)
        return ladder[np.minimum(np.searchsorted(ladder, need), len(ladder) - 1)]

    def _bank(self, L: int) -> int:
        """The index of the bank with L points (made if missing)."""
        for index, bank in enumerate(self._banks):
            if bank.L == L:
                return index
        self._banks.append(_Bank(L))
        return len(self._banks) - 1

    def _place(self, columns: np.ndarray, a: np.ndarray, b: np.ndarray, with_phi: bool = True) -> None:
        """Centre the windows of `columns` (flat (t, c); a, b per column) on [a, b] and transform g
        and its increment there, in each column's bank: F_c(j) = sum_{k = lo}^{lo + L - 1} f_c(k) w_j^-k.
        The PGF at L points gives the count's pmf folded modulo L, exact on a window that holds
        all its mass."""
        if not len(columns):
            return
        n, C = self.n_robots, len(self.cells)
        banks = self._bank_of[columns]
        for index in np.unique(banks):
            sel = banks == index
            cols, bank = columns[sel], self._banks[index]
            bank.own_transforms()
            L = bank.L
            lo = np.clip(a[sel] - (L - (b[sel] - a[sel] + 1)) // 2, 0, max(0, n + 1 - L))
            self._lo[cols] = lo
            # the transforms depend on the cell and the window only: once per (cell, lo) pair
            # (every step of a cell shares them while its window does)
            pairs, which = np.unique((cols % C) * (n + 2) + lo, return_inverse=True)
            c, start = np.divmod(pairs, n + 2)
            k = start[:, None] + np.arange(L)[None, :]  # (u, L) counts in each window
            g = np.where(k <= n + 1, self._table[c[:, None], np.minimum(k, n + 1)], 0.0)
            h = np.where(k <= n, self._table[c[:, None], np.minimum(k + 1, n + 1)] - g, 0.0)
            shift = np.exp(-2j * np.pi * ((start[:, None] * bank.j[None, :]) % L) / L)  # w_j^-lo
            h_hat = (h @ bank.phase) * shift
            which = which.reshape(-1)
            rows = _as_slice(self._row_of[cols])  # a build's rows are a range: written in place
            g_hat = (g @ bank.phase) * shift
            if isinstance(rows, slice):
                np.take(g_hat, which, axis=0, out=bank.g_hat[rows])
                np.take(h_hat, which, axis=0, out=bank.h_hat[rows])
                np.take(h_hat * bank.weight, which, axis=0, out=bank.h_weighted[rows])
                h_weighted = bank.h_weighted[rows]
            else:
                bank.g_hat[rows] = g_hat[which]
                bank.h_hat[rows] = h_hat[which]
                h_weighted = (h_hat * bank.weight)[which]
                bank.h_weighted[rows] = h_weighted
            if with_phi:  # (a build sets phi and phi_h once its PGF is summed)
                bank.phi_h[rows] = bank.phi[rows] * h_weighted

    def _build(self) -> None:
        """Every column in the bank its window needs, its PGF summed over the behaviours."""
        T, C = self.p.shape[1:]
        self._banks: list[_Bank] = []
        self._terms: dict[int, list] = {}  # behaviour -> its `_Term`s
        self._marginals.clear()
        self._expected = None
        self._swaps_since_refresh = 0
        self._lo = np.zeros(T * C, dtype=np.int64)
        self._bank_of = np.zeros(T * C, dtype=np.int64)
        self._row_of = np.zeros(T * C, dtype=np.int64)
        if not self.p.size:
            return
        a, b = self._windows()
        self._assign(np.arange(T * C), self._points_for(b - a + 1))
        self._place(np.arange(T * C), a, b, with_phi=False)
        _, first, mult = np.unique(self.behaviours, return_index=True, return_counts=True)
        for i, m in zip(first, mult):  # one term per behaviour, times its robots
            for term in self._term(self.p[i], int(self.behaviours[i])):
                self._banks[term.index].log_phi[term.rows] += float(m) * term.log
        for bank in self._banks:
            bank.set_phi()

    def _assign(self, columns: np.ndarray, points: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Append `columns` to the banks of `points` points each (their rows start empty: log
        PGF 0); (bank, columns) per bank touched."""
        out = []
        for L in np.unique(points):
            cols = columns[points == L]
            index = self._bank(int(L))
            self._bank_of[cols] = index
            self._row_of[cols] = self._banks[index].grow(cols)
            out.append((index, cols))
        return out

    def _regrow(self, columns: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """Columns whose windows outgrew their banks move to larger ones: their log PGF is summed
        again there from every behaviour (their rows in the old banks are left unread)."""
        self._terms.clear()  # cached terms hold the old rows
        _, first, mult = np.unique(self.behaviours, return_index=True, return_counts=True)
        flat_p = self.p.reshape(self.n_robots, -1)
        for index, cols in self._assign(columns, self._points_for(b[columns] - a[columns] + 1)):
            bank = self._banks[index]
            rows = self._row_of[cols]
            log_phi = np.zeros((len(cols), bank.J), dtype=complex)
            q = flat_p[first][:, cols]  # (behaviours, k)
            for start in range(0, len(first), 64):
                block = q[start : start + 64]
                log_phi += np.einsum("b,bkj->kj", mult[start : start + 64].astype(float),
                                     bank.log_term(block.reshape(-1)).reshape(len(block), len(cols), -1))
            bank.log_phi[rows] = log_phi
            bank.set_phi(rows)
        self._place(columns, a[columns], b[columns])

    def _term(self, p: np.ndarray, behaviour: int | None = None) -> list["_Term"]:
        """One robot's factor of the PGF, a `_Term` per bank, cached per behaviour (a robot's p
        never changes without it getting a new behaviour)."""
        if behaviour is not None and behaviour in self._terms:
            return self._terms[behaviour]
        flat = p.reshape(-1)
        cols = np.flatnonzero(flat > 0)
        banks = self._bank_of[cols]
        term = []
        for index in np.unique(banks):
            sel = banks == index
            bank = self._banks[index]
            q = flat[cols[sel]]
            term.append(_Term(int(index), self._row_of[cols[sel]], q, bank))
        if behaviour is not None:
            if len(self._terms) >= 256:  # bounded: a long run makes a behaviour per accepted replan
                self._terms.clear()
            self._terms[behaviour] = term
        return term

    def _exchange_term(self, old: np.ndarray, old_behaviour: int, new: np.ndarray, new_behaviour: int,
                       times: int = 1) -> None:
        """One robot's factor leaves the PGF and another joins: log_phi by adding the log terms,
        phi by multiplying with 1 / the old factor and the new factor (a complex exp of every
        touched (column, point) per swap was most of the acceptance step). Products keep a
        relative error of a few ulp per swap; phi is rebuilt from log_phi every
        `REFRESH_EVERY` swaps, and at once in rows that are or were near underflow (a product
        of tiny values would lose digits there); only the old rows can rise, the new fall.
        `times` robots at once: phi is then exp(log_phi) on every touched row."""
        if times != 1:
            touched: dict[int, list] = {}
            for sign, p, behaviour in ((-float(times), old, old_behaviour), (float(times), new, new_behaviour)):
                for term in self._term(p, behaviour):
                    self._banks[term.index].log_phi[term.rows] += sign * term.log
                    touched.setdefault(term.index, []).append(term.rows)
            for index, parts in touched.items():
                rows = np.unique(np.concatenate(parts))
                self._banks[index].set_phi(rows)
            return
        new_flat = new.reshape(-1)
        deep: dict[int, list] = {}
        for term in self._term(old, old_behaviour):
            index, rows = term.index, term.rows
            bank = self._banks[index]
            log_phi = bank.log_phi[rows]  # one gather for the check and the update
            deep.setdefault(index, []).append(rows[(log_phi.real < DEEP_LOG).any(axis=1)])
            log_phi -= term.log
            bank.log_phi[rows] = log_phi
            bank.scale_phi(rows, term.inverse)
        for term in self._term(new, new_behaviour):
            index, rows = term.index, term.rows
            bank = self._banks[index]
            log_phi = bank.log_phi[rows]
            log_phi += term.log
            bank.log_phi[rows] = log_phi
            bank.scale_phi(rows, bank.factor(new_flat[bank.cols[rows]]))
            deep.setdefault(index, []).append(rows[(log_phi.real < DEEP_LOG).any(axis=1)])
        self._swaps_since_refresh += 1
        if self._swaps_since_refresh >= REFRESH_EVERY:
            for bank in self._banks:
                bank.set_phi()
            self._swaps_since_refresh = 0
            return
        for index, parts in deep.items():
            rows = np.unique(np.concatenate(parts))
            if len(rows):
                self._banks[index].set_phi(rows)

    def _expect_on(self, cols: np.ndarray, increment: bool, leave_out: int | None = None) -> np.ndarray:
        """(k,) E[f_c(N)] at the flat (t, c) columns `cols` (f = g, or its increment), for the
        whole fleet or without robot `leave_out`."""
        value = np.empty(len(cols))
        banks = self._bank_of[cols]
        own = self.p[leave_out].reshape(-1) if leave_out is not None else None
        own_terms = {} if own is None else {t.index: t for t in self._term(self.p[leave_out],
                                                                             int(self.behaviours[leave_out]))}
        for index in np.unique(banks):
            sel = np.flatnonzero(banks == index)
            bank = self._banks[index]
            rows = self._row_of[cols[sel]]
            whole = _as_slice(rows)  # every row of the bank, in order (J_N of a fresh build)
            if isinstance(whole, slice) and whole == slice(0, len(bank.cols)) and index not in own_terms:
                value[sel] = np.einsum("kj,kj,j->k", bank.phi, bank.h_hat if increment else bank.g_hat,
                                       bank.weight).real
                continue
            phi = bank.phi[rows]
            if index in own_terms:
                # the fleet's PGF divided by the robot's own factor (|factor| >= sin(pi / 2L) > 0:
                # L is odd; where exp(log_phi) underflowed, the true value is below 1e-300 too)
                own_rows, inverse = own_terms[index].rows, own_terms[index].inverse
                at = np.full(len(bank.cols), -1)
                at[rows] = np.arange(len(rows))
                where = at[own_rows]
                inside = where >= 0
                phi[where[inside]] *= inverse[inside]
            f_hat = bank.h_hat if increment else bank.g_hat
            value[sel] = np.einsum("kj,kj,j->k", phi, f_hat[rows], bank.weight).real
        # exact zeros stay zeros: where too few robots can be for f to be nonzero (g and its
        # increments vanish below min_count); elsewhere the expectation of f >= 0 is >= 0
        support = self._support[cols]
        if own is not None:
            support = support - (own[cols] > 0)
        shift = 1 if increment else 0
        return np.where(support + shift >= self.penalty.min_count, np.maximum(value, 0.0), 0.0)

    # -- J_N -----------------------------------------------------------------------------------

    def expected(self) -> np.ndarray:
        """(T, C): E[g_c(N_c(t))]."""
        if self._expected is None:  # until the next swap or rebuild
            T, C = self.p.shape[1:]
            self._expected = self._expect_on(np.arange(T * C), False).reshape(T, C)
            self._expected.setflags(write=False)
        return self._expected

    def total(self) -> float:
        """J_N = sum_t sum_c E[g_c(N_c(t))]."""
        return float(self.expected().sum()) if self.p.size else 0.0

    def breakdown(self) -> tuple[np.ndarray, np.ndarray]:
        """(per step (T,), per zone (Z+1,)) expected penalty."""
        T = self.p.shape[1]
        per_zone = np.zeros(self.penalty.n_zones + 1)
        if not self.p.size:
            return np.zeros(T), per_zone
        expected = self.expected()
        np.add.at(per_zone, self.cells[:, 0], expected.sum(axis=0))
        return expected.sum(axis=1), per_zone

    # -- one robot -----------------------------------------------------------------------------

    def cell_probabilities(self, occupancy: np.ndarray) -> np.ndarray:
        """(T, C) of one robot's (T, Z+1, V) occupancy."""
        return occupancy[:, self.cells[:, 0], self.cells[:, 1]]

    def marginal(self, i: int) -> np.ndarray:
        """(T, C): m_i(t, c) = E[g_c(N_-i,c(t) + 1) - g_c(N_-i,c(t))]."""
        key = int(self.behaviours[i])
        hit = self._marginals.get(key)
        if hit is None:
            T, C = self.p.shape[1:]
            hit = self._expect_on(np.arange(T * C), True, i).reshape(T, C)
            self._marginals[key] = hit
        return hit

    def _marginal_where(self, i: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(columns, m_i there) on the flat (t, c) columns where `mask` (T, C) holds."""
        cols = np.flatnonzero(mask.reshape(-1))
        hit = self._marginals.get(int(self.behaviours[i]))
        if hit is not None:
            return cols, hit.reshape(-1)[cols]
        return cols, self._expect_on(cols, True, i)

    def contribution(self, i: int) -> float:
        """J_N - J_N without robot i: what robot i adds to the expected penalty."""
        cols, m = self._marginal_where(i, self.p[i] > 0)
        return float((self.p[i].reshape(-1)[cols] * m).sum())

    def change(self, i: int, p_new: np.ndarray) -> float:
        """The exact change of J_N if robot i's cell probabilities became `p_new` (T, C)."""
        p_new = np.asarray(p_new, dtype=float)
        cols, m = self._marginal_where(i, (p_new > 0) | (self.p[i] > 0))
        return float(((p_new.reshape(-1)[cols] - self.p[i].reshape(-1)[cols]) * m).sum())

    def swap(self, i: int, p_new: np.ndarray, key=None) -> None:
        """Robot i now has cell probabilities `p_new`: its term leaves the PGF, the new one joins.
        `key` names its new behaviour (robots swapped to the same key share one)."""
        key = ("swap", i, len(self._behaviour_of)) if key is None else key  # unique unless named
        self._swap_many([i], np.asarray(p_new, dtype=float), key)

    def swap_while_lowering(self, members: Sequence[int], p_new: np.ndarray, key, threshold: float,
                            limit: int) -> int:
        """Robots `members`, all of one behaviour, swap to cell probabilities `p_new` (behaviour
        `key`) one after another while each swap changes J_N by less than -`threshold`, at most
        `limit` of them; how many swapped (the first ones of `members`).

        The same as `change` then `swap`, robot by robot, each judged with the ones before it
        swapped; done at once: with j of them swapped the PGF is phi (f_new / f_old)^j, so the
        j-th change costs one product, and the PGF is updated once. Runs stop where the current
        windows would no longer hold the counts (then one robot swaps alone, re-centring them)."""
        p_new = np.asarray(p_new, dtype=float)
        members = [int(i) for i in members][: max(0, int(limit))]
        done = 0
        while done < len(members):
            if done == len(members) - 1:
                # one robot left (most runs are one robot): judged on the current windows, as
                # `change` would, then swapped alone, which re-centres the windows it moves;
                # no need to ask how many could swap
                taken = self._lowering_run(members[done], p_new, 1, threshold)
                if taken:
                    self._swap_many([members[done]], p_new, key)
                return done + taken
            room = self._room(members[done], p_new, min(len(members) - done, RUN_CHUNK))
            if room == 0:
                if not self.change(members[done], p_new) < -threshold:
                    break
                self.swap(members[done], p_new, key)
                done += 1
                continue
            taken = self._lowering_run(members[done], p_new, room, threshold)
            if taken:
                self._swap_many(members[done : done + taken], p_new, key)
            done += taken
            if taken < room:
                break
        return done

    def _room(self, i: int, p_new: np.ndarray, most: int) -> int:
        """How many robots of robot i's behaviour can swap to `p_new` (up to `most`) with every
        intermediate count distribution inside the current windows."""
        if not self.p.size:
            return most
        old = self.p[i]
        d_mean = (p_new - old).reshape(-1)
        d_var = (p_new * (1.0 - p_new) - old * (1.0 - old)).reshape(-1)
        cols = np.flatnonzero((d_mean != 0) | (d_var != 0))
        if not len(cols):
            return most
        j = np.arange(1, most + 1)[:, None]
        mean = self._mean.reshape(-1)[cols] + j * d_mean[cols]
        var = self._var.reshape(-1)[cols] + j * d_var[cols]
        a, b = self._windows_of(mean, var)
        lo = self._lo[cols]
        fits = ((a >= lo) & (b <= lo + self._points_of(cols) - 1)).all(axis=1)
        return int(np.argmin(fits)) if not fits.all() else most

    def _lowering_run(self, i: int, p_new: np.ndarray, most: int, threshold: float) -> int:
        """How many of `most` successive swaps of robot i's behaviour to `p_new` each lower J_N
        by more than `threshold` (the first that does not ends the run)."""
        old = self.p[i].reshape(-1)
        new = p_new.reshape(-1)
        cols = np.flatnonzero((new > 0) | (old > 0))
        if not len(cols):
            return 0
        dp = new[cols] - old[cols]
        banks = self._bank_of[cols]
        # robot i's own factor, 1 / (1 - p + p w), where it can be there: its behaviour's cached
        # term (where it cannot, the factor is 1)
        own = {t.index: t for t in self._term(self.p[i], int(self.behaviours[i]))}
        own_old, own_new = old[cols] > 0, new[cols] > 0
        # the columns of each bank, in column order: one sort instead of a comparison per bank
        order = np.argsort(banks, kind="stable")
        edges = np.flatnonzero(np.diff(banks[order])) + 1
        parts = []  # per bank: (its columns' positions in cols, PGF without robot i times h_hat w, ratio new / old or None)
        for sel in np.split(order, edges):
            index = int(banks[sel[0]])
            bank = self._banks[index]
            rows = self._row_of[cols[sel]]
            pgf = bank.phi_h[rows]  # phi h_hat w: the marginal is its sum over the points
            ratio = bank.factor(new[cols[sel]]) if most > 1 else None  # only a second swap needs it
            if index in own:
                # robot i's rows there are those of its columns with old > 0, in the same order
                inverse = own[index].inverse
                mine = own_old[sel]
                if mine.all():
                    pgf *= inverse
                    if ratio is not None:
                        ratio *= inverse
                else:
                    where = np.flatnonzero(mine)
                    pgf[where] *= inverse
                    if ratio is not None:
                        ratio[where] *= inverse
            parts.append((sel, pgf, ratio))
        support = self._support[cols] - own_old  # robots that can be there, robot i left out
        step = own_new.astype(np.int64) - own_old
        m = np.empty(len(cols))
        taken = 0
        while taken < most:
            for sel, pgf, _ in parts:
                m[sel] = pgf.sum(axis=1).real
            allowed = support + taken * step + 1 >= self.penalty.min_count
            change = float((dp * np.where(allowed, np.maximum(m, 0.0), 0.0)).sum())
            if not change < -threshold:
                break
            taken += 1
            if taken < most:
                for _, pgf, ratio in parts:
                    pgf *= ratio
        return taken

    def _swap_many(self, robots: list[int], p_new: np.ndarray, key) -> None:
        """Robots `robots`, all of one behaviour, now have cell probabilities `p_new` (behaviour `key`)."""
        times = len(robots)
        first = robots[0]
        old, old_behaviour = self.p[first].copy(), int(self.behaviours[first])
        self._mean += times * (p_new - old)
        self._var += times * (p_new * (1.0 - p_new) - old * (1.0 - old))
        self._support += times * ((p_new > 0).reshape(-1).astype(np.int64) - (old > 0).reshape(-1))
        self.p[robots] = p_new
        new_behaviour = self._behaviour_of.setdefault(key, len(self._behaviour_of))
        self.behaviours[robots] = new_behaviour
        if self.p.size:
            a, b = self._windows()
            moved = np.flatnonzero(~self._fits(a, b))
            self._exchange_term(old, old_behaviour, p_new, new_behaviour, times)
            if len(moved):
                grow = (b - a + 1)[moved] > self._points_of(moved)
                self._place(moved[~grow], a[moved[~grow]], b[moved[~grow]])  # windows that drifted: re-centred
                if grow.any():  # windows wider than their banks: to larger banks
                    self._regrow(moved[grow], a, b)
        self._marginals.clear()
        self._expected = None

    def _points_of(self, columns: np.ndarray) -> np.ndarray:
        return np.array([bank.L for bank in self._banks], dtype=np.int64)[self._bank_of[columns]]

    def _fits(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a >= self._lo) & (b <= self._lo + self._points_of(np.arange(len(a))) - 1)


def _as_slice(rows: np.ndarray) -> "slice | np.ndarray":
    """`rows` as a slice if they are consecutive and increasing, else as they are."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or bool((np.diff(rows) == 1).all())):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


class _Term:
    """One robot's factor of the PGF on one bank: the rows where its p > 0, and there
    Log(1 - p + p w_j) and 1 / (1 - p + p w_j), each computed when first asked for (a robot
    judged and not swapped needs only the inverse; a new behaviour only the log until it is
    swapped out in its turn)."""

    __slots__ = ("index", "rows", "_q", "_bank", "_log", "_inverse")

    def __init__(self, index: int, rows: np.ndarray, q: np.ndarray, bank: "_Bank") -> None:
        self.index, self.rows, self._q, self._bank = index, rows, q, bank
        self._log = self._inverse = None

    @property
    def log(self) -> np.ndarray:
        if self._log is None:
            self._log = self._bank.log_term(self._q)
        return self._log

    @property
    def inverse(self) -> np.ndarray:
        if self._inverse is None:
            self._inverse = self._bank.inverse_factor(self._q)
        return self._inverse


class _Bank:
    """FleetCounts' columns that share one number of points L (odd): the transforms of g and
    of its increment on each column's window, and the fleet's PGF there, as log and as exp.
    Columns of narrow count windows (most of them: cells few robots can be in) get few points,
    so the work of a swap or a marginal follows each column's spread, not the widest one's."""

    def __init__(self, L: int) -> None:
        self.L = L
        self.j = np.arange(L // 2 + 1)
        self.J = len(self.j)
        theta = 2 * np.pi * self.j / L
        self.cos_minus_1 = np.cos(theta) - 1.0  # for Log(1 - p + p w) in real arithmetic
        self.sin = np.sin(theta)
        self.weight = np.where(self.j == 0, 1.0, 2.0) / L  # Hermitian symmetry of real sequences
        self.phase = np.exp(-2j * np.pi * ((np.arange(L)[:, None] * self.j[None, :]) % L) / L)  # (L, J): w_j^-m
        self.cols = np.zeros(0, dtype=np.int64)  # the flat (t, c) column of each row
        self.shared_transforms = False  # g_hat, h_hat, h_weighted read by a copy too (`copy`)
        self.g_hat = np.zeros((0, self.J), dtype=complex)
        self.h_hat = np.zeros((0, self.J), dtype=complex)
        self.h_weighted = np.zeros((0, self.J), dtype=complex)  # h_hat * weight
        self.log_phi = np.zeros((0, self.J), dtype=complex)
        self.phi = np.ones((0, self.J), dtype=complex)  # exp(log_phi), kept up to date row by row
        self.phi_h = np.zeros((0, self.J), dtype=complex)  # phi * h_weighted, kept with phi (a judged swap sums it)

    def copy(self) -> "_Bank":
        new = object.__new__(_Bank)
        new.__dict__ = dict(self.__dict__)
        for name in ("log_phi", "phi", "phi_h"):  # every swap changes them
            setattr(new, name, getattr(self, name).copy())
        # the transforms change only where a window is re-centred (`own_transforms` first), the
        # columns never in place: both banks read the same arrays until then
        self.shared_transforms = new.shared_transforms = True
        return new

    def own_transforms(self) -> None:
        """Make the transforms this bank's own before writing them (a copy may share them)."""
        if self.shared_transforms:
            for name in ("g_hat", "h_hat", "h_weighted"):
                setattr(self, name, getattr(self, name).copy())
            self.shared_transforms = False

    def grow(self, columns: np.ndarray) -> np.ndarray:
        """Rows for `columns` (transforms and log PGF zero); their row numbers."""
        rows = np.arange(len(self.cols), len(self.cols) + len(columns))
        if not len(self.cols):  # a new bank: its arrays made at their size
            self.cols = np.array(columns, dtype=np.int64)
            for name in ("g_hat", "h_hat", "h_weighted", "log_phi", "phi_h"):
                setattr(self, name, np.zeros((len(columns), self.J), dtype=complex))
            self.phi = np.ones((len(columns), self.J), dtype=complex)
            return rows
        extra = np.zeros((len(columns), self.J), dtype=complex)
        self.cols = np.concatenate([self.cols, columns])
        self.g_hat = np.concatenate([self.g_hat, extra])
        self.h_hat = np.concatenate([self.h_hat, extra])
        self.h_weighted = np.concatenate([self.h_weighted, extra])
        self.log_phi = np.concatenate([self.log_phi, extra])
        self.phi = np.concatenate([self.phi, extra + 1.0])
        self.phi_h = np.concatenate([self.phi_h, extra])
        return rows

    def set_phi(self, rows: np.ndarray | None = None) -> None:
        """phi = exp(log_phi) on `rows` (None: every row), phi_h with it."""
        if rows is None:
            np.exp(self.log_phi, out=self.phi)
            np.multiply(self.phi, self.h_weighted, out=self.phi_h)
        else:
            phi = np.exp(self.log_phi[rows])
            self.phi[rows] = phi
            self.phi_h[rows] = phi * self.h_weighted[rows]

    def scale_phi(self, rows: np.ndarray, factor: np.ndarray) -> None:
        """phi *= factor on `rows`, phi_h with it."""
        self.phi[rows] *= factor
        self.phi_h[rows] *= factor

    def log_term(self, q: np.ndarray) -> np.ndarray:
        """(k, J): Log(1 - q + q w_j) for probabilities q (k,), in real arithmetic (numpy's complex
        log is about ten times slower): |z|^2 = 1 + 2 q (1 - q)(cos - 1), arg z = atan2(q sin, 1 + q (cos - 1))."""
        q = q[:, None]
        out = np.empty((q.shape[0], self.J), dtype=complex)  # parts written in place: no complex temporaries
        np.log1p(2.0 * (q * (1.0 - q)) * self.cos_minus_1, out=out.real)
        out.real *= 0.5
        np.arctan2(q * self.sin, 1.0 + q * self.cos_minus_1, out=out.imag)
        return out

    def factor(self, q: np.ndarray) -> np.ndarray:
        """(k, J): 1 - q + q w_j."""
        q = q[:, None]
        out = np.empty((q.shape[0], self.J), dtype=complex)
        np.multiply(q, self.cos_minus_1, out=out.real)
        out.real += 1.0
        np.multiply(q, self.sin, out=out.imag)
        return out

    def inverse_factor(self, q: np.ndarray) -> np.ndarray:
        """(k, J): 1 / (1 - q + q w_j), never infinite (L is odd: |1 - q + q w_j| >= sin(pi / 2L))."""
        q = q[:, None]
        re, im = 1.0 + q * self.cos_minus_1, q * self.sin
        scale = re * re + im * im
        out = np.empty((q.shape[0], self.J), dtype=complex)
        np.divide(re, scale, out=out.real)
        np.divide(im, scale, out=out.imag)
        np.negative(out.imag, out=out.imag)
        return out


def _exact_nse_rate(occ: np.ndarray, cells: np.ndarray, min_count: int,
                    behaviours: np.ndarray | None = None) -> float | None:
    """Mean over t of P(some penalised cell holds >= min_count robots).

    Tracks every cell's count capped at min_count - 1 jointly, robot by robot; the joint
    count space is min_count ** C, so this is only done while that stays small. Adding a
    robot is a linear map of the joint distribution; `behaviours` (n,) labels robots with
    identical occupancy, whose m robots are then added at once by the map's m-th power
    (while the joint space is small enough for its matrix).
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
    pairs = None
    if behaviours is None:
        groups = [(i, 1) for i in range(occ.shape[0])]
    else:
        _, first, mult = np.unique(behaviours, return_index=True, return_counts=True)
        groups = list(zip(first.tolist(), mult.tolist()))
        if (m * (m + 1) // 2) ** n_cells <= MAX_RATE_PAIRS and any(t > 1 for _, t in groups):
            # joint states a (the robots so far) and b (a group) that add up below m in every cell
            fits = ((digits[:, None, :] + digits[None, :, :]) < m).all(axis=2)
            pairs_a, pairs_b = np.nonzero(fits)
            target = pairs_a + pairs_b  # digits add without carry
            pairs = sp.csr_matrix((np.ones(len(target)), (target, np.arange(len(target)))),
                                  shape=(n_joint, len(target)))
    for i, times in groups:
        p = occ[i][:, cells[:, 0], cells[:, 1]]  # (H+1, C)
        if times > 1 and pairs is not None:
            # the m robots of one behaviour together: their own counts are multinomial
            # (robots in no penalised cell included), P(d) = m! / (prod d_c! (m - r)!)
            # prod p_c^d_c (1 - sum p)^(m - r) for each pattern d of r robots, fewer than m per cell
            r = digits.sum(axis=1)
            log_p = (gammaln(times + 1) - gammaln(digits + 1).sum(axis=1) - gammaln(np.maximum(times - r, 0) + 1)
                     + xlogy(digits[None, :, :], p[:, None, :]).sum(axis=2)
                     + xlogy(np.maximum(times - r, 0)[None, :], np.maximum(1.0 - p.sum(axis=1), 0.0)[:, None]))
            own = np.where(r[None, :] <= times, np.exp(log_p), 0.0)  # (H+1, J)
            prob = (pairs @ (prob[:, pairs_a] * own[:, pairs_b]).T).T
            continue
        for _ in range(times):
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
    # Each robot's draws come from the stream robot after robot, as if `simulate` were called
    # once per robot; every robot's episodes are then advanced together, each by its robot's
    # MDP and policy (bit-identical rollouts, one Python loop over time for the whole fleet).
    uniforms = rng.random((n, horizon, episodes))
    # lane e * n + i is robot i's episode e; robots with one MDP and policy share a model
    models: list[tuple] = []
    known: dict[tuple, int] = {}
    model_of = np.empty(n, dtype=np.intp)
    for i, robot in enumerate(robots):
        key = (id(robot.mdp), robot.policy.tobytes())
        if key not in known:
            known[key] = len(models)
            models.append((robot.mdp, robot.policy))
        model_of[i] = known[key]
    starts = np.array([robot.mdp.start for robot in robots], dtype=np.int64)
    lanes = simulate_lanes(models, np.tile(model_of, episodes), horizon,
                           uniforms.transpose(1, 2, 0).reshape(horizon, episodes * n), np.tile(starts, episodes))
    del uniforms
    states = np.ascontiguousarray(lanes.reshape(horizon + 1, episodes, n).transpose(1, 0, 2))
    del lanes
    zone = np.empty_like(states)
    value = np.empty_like(states)
    # each robot's zone and value tables, laid end to end (robots of one MDP mostly share them)
    for table, out in ((lambda r: r.zone, zone), (lambda r: r.value, value)):
        parts: dict[int, int] = {}
        offset = np.empty(n, dtype=np.int64)
        pieces, size = [], 0
        for i, robot in enumerate(robots):
            t = table(robot)
            if id(t) not in parts:
                parts[id(t)] = size
                pieces.append(np.asarray(t, dtype=np.int64))
                size += len(t)
            offset[i] = parts[id(t)]
        np.take(np.concatenate(pieces), states + offset, out=out)
    flat_pen, flat_zones = penalty.with_zones(zone.reshape(-1, n), value.reshape(-1, n))
    pen = flat_pen.reshape(episodes, horizon + 1)
    totals = pen.sum(axis=1)
    rates = (pen > 0).mean(axis=1)
    per_zone = flat_zones.reshape(episodes, horizon + 1, -1).sum(axis=1).mean(axis=0)
    report = MonitorReport(
        "monte_carlo", float(totals.mean()), float(rates.mean()), pen.mean(axis=0), per_zone,
        standard_error=float(totals.std(ddof=1) / np.sqrt(episodes)),
        rate_standard_error=float(rates.std(ddof=1) / np.sqrt(episodes)), episodes=episodes)
    return report, JointVisits(states, zone, value, pen)
