"""Blame methods: who caused the NSE penalty of a joint state (docs/FORMULATION.md sections 5 and 7).

Every method is a `BlameMethod`: parameters in the constructor, no state changed by
use, and `blame(penalty, zone, value, valid=None) -> (B, n)` on a batch of joint
states in the array representation of `metareasoner.penalty`. Sign convention: a
positive number means the robot is responsible for penalty (more is worse); LVI
uses it as a cost.

With an `NSEPenalty`, single-robot counterfactuals come from the count table: moving
robot i from cell (z, v) to (z, v') only changes n[z, v] - 1 and n[z, v'] + 1, so every
(robot, alternative value) is O(1) and the whole batch is O(B n V). Methods other
than RECON and the Shapley closed form also accept any penalty callable
`f(zone (M, n'), value (M, n')) -> (M,)`; they then re-evaluate it on variant batches
(chunked), which costs a factor n or more.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Hashable, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from .penalty import NSEPenalty

PenaltyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

_CHUNK = 1 << 22  # array elements per penalty call on the generic (re-evaluation) paths
MAX_ENUMERATION_AGENTS = 16


# -- shared machinery ---------------------------------------------------------------------------


def _check_generic(zone, value) -> tuple[np.ndarray, np.ndarray]:
    zone, value = np.asarray(zone), np.asarray(value)
    if zone.shape != value.shape or zone.ndim != 2:
        raise ValueError(f"zone and value must be (B, n) arrays of the same shape, got {zone.shape} and {value.shape}")
    for name, arr in (("zone", zone), ("value", value)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} indices must be >= 0")
    return zone.astype(np.intp, copy=False), value.astype(np.intp, copy=False)


def _check(penalty, zone, value) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(penalty, NSEPenalty):
        return penalty.check(zone, value)
    if not callable(penalty):
        raise TypeError(f"penalty must be an NSEPenalty or a callable (zone, value) -> (B,), got {type(penalty)}")
    return _check_generic(zone, value)


def _need_count_penalty(penalty, what: str) -> NSEPenalty:
    if not isinstance(penalty, NSEPenalty):
        raise TypeError(f"{what} needs the count-based NSEPenalty (it uses its terms), got {type(penalty).__name__}")
    return penalty


def _evaluate_variants(penalty: PenaltyFn, zone: np.ndarray, value: np.ndarray, build, n_variants: int,
                       width: int) -> np.ndarray:
    """Penalty of `n_variants` variant joint states (of `width` robots) per state: (B, n_variants).

    `build(zone_chunk, value_chunk)` returns the variants as two (b, n_variants, width) arrays;
    states are processed in chunks so memory stays near _CHUNK elements.
    """
    B = zone.shape[0]
    out = np.empty((B, n_variants))
    step = max(1, _CHUNK // max(1, n_variants * width))
    for s in range(0, B, step):
        zv, vv = build(zone[s: s + step], value[s: s + step])
        b = zv.shape[0]
        r = np.asarray(penalty(zv.reshape(b * n_variants, width), vv.reshape(b * n_variants, width)), dtype=float)
        out[s: s + b] = r.reshape(b, n_variants)
    return out


class _Counts:
    """R_N(s) and the count table of a batch; any one-robot change is a table look-up."""

    def __init__(self, penalty: NSEPenalty, zone, value, extra: int = 1) -> None:
        zone, value = penalty.check(zone, value)
        # only the visited zones' rows: the same R_N, and of every one-robot change
        penalty, zone, _ = penalty.on_visited_zones(zone)
        self.penalty, self.zone, self.value = penalty, zone, value
        B, n = zone.shape
        self.rows = np.arange(B)[:, None]
        self.counts = penalty.counts(zone, value, check=False)
        self.total = penalty.from_counts(self.counts)  # (B,)
        self.table = penalty.cell_table(n + extra)
        self.n_own = self.counts[self.rows, zone, value]  # (B, n), >= 1
        self.g_own = self.table[zone, value, self.n_own]
        # R_N with robot i taken out of the state altogether
        self.removed = self.total[:, None] - self.g_own + self.table[zone, value, self.n_own - 1]
        self._cell_at = self._table_at = None  # flat offsets, made by the first with_value

    def with_value(self, v) -> np.ndarray:
        """R_N with robot i's value set to v (a scalar or a (B, n) array), (B, n)."""
        # flat look-ups (one index per entry instead of three): the same numbers
        V, size = self.penalty.n_values, self.table.shape[2]
        if self._cell_at is None:
            self._cell_at = (self.rows * (self.penalty.n_zones + 1) + self.zone) * V  # robot i's zone row in counts
            self._table_at = self.zone * (V * size)  # and in the table
        n_new = self.counts.reshape(-1).take(self._cell_at + v)
        at = self._table_at + v * size + n_new
        flat = self.table.reshape(-1)
        moved = self.removed + flat.take(at + 1) - flat.take(at)
        return np.where(self.value == v, self.total[:, None], moved)

    def with_copies(self, k: int) -> np.ndarray:
        """R_N with k extra copies of robot i (same zone and value), (B, n)."""
        return self.total[:, None] - self.g_own + self.table[self.zone, self.value, self.n_own + k]

    def participants(self) -> np.ndarray:
        return self.penalty.cell_has_term[self.zone, self.value] & (self.n_own >= self.penalty.min_count)


def counterfactual_penalties(penalty, zone, value, n_values: int | None = None) -> np.ndarray:
    """R_N(s with robot i's dynamic value set to v) for every i and v, shape (B, n, V).

    Entry [b, i, value[b, i]] is R_N(s) itself. For a generic penalty callable, V is
    `n_values` (default: the largest value in the batch + 1).
    """
    if isinstance(penalty, NSEPenalty):
        c = _Counts(penalty, zone, value)
        return np.stack([c.with_value(v) for v in range(penalty.n_values)], axis=-1)
    zone, value = _check(penalty, zone, value)
    B, n = zone.shape
    V = int(n_values) if n_values is not None else int(value.max(initial=0)) + 1
    if value.size and V <= value.max():
        raise ValueError(f"n_values = {V} but the batch holds value {int(value.max())}")
    idx = np.arange(n)

    def build(zc, vc):
        b = zc.shape[0]
        zv = np.broadcast_to(zc[:, None, None, :], (b, n, V, n))
        vv = np.broadcast_to(vc[:, None, None, :], (b, n, V, n)).copy()
        vv[:, idx, :, idx] = np.arange(V)
        return zv.reshape(b, n * V, n), vv.reshape(b, n * V, n)

    return _evaluate_variants(penalty, zone, value, build, n * V, n).reshape(B, n, V)


def _valid_mask(valid, shape: tuple[int, int, int]) -> np.ndarray | None:
    if valid is None:
        return None
    valid = np.asarray(valid)
    if valid.dtype != bool:
        raise ValueError(f"valid must be a bool array, got dtype {valid.dtype}")
    try:
        return np.broadcast_to(valid, shape)
    except ValueError:
        raise ValueError(f"valid must be broadcastable to (B, n, V) = {shape}, got {valid.shape}") from None


def recon_split(total, savings, participants, eps: float = 1e-6) -> np.ndarray:
    """B_i = R_N (D_i + eps) / sum_{j in P} (D_j + eps) on P, 0 elsewhere (docs/FORMULATION.md section 5).

    eps makes the split even when no participant could have helped on its own.
    """
    total = np.asarray(total, dtype=float)
    share = np.where(participants, np.maximum(savings, 0.0) + eps, 0.0)
    den = share.sum(axis=1, keepdims=True)
    return np.divide(total[:, None] * share, den, out=np.zeros_like(share), where=den > 0)


# -- the interface ------------------------------------------------------------------------------


class _Params(BaseEstimator):
    """scikit-learn parameters: the constructor's arguments (get_params, set_params, repr)."""


class BlameMethod(_Params):
    """Base class: constructor arguments are the parameters, `blame` is pure.

    `valid` (B, n, V) bool says which counterfactual values are reachable for each robot;
    methods that do not use counterfactual values ignore it.
    """

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        raise NotImplementedError


class CounterfactualBlame(BlameMethod):
    """RECON (docs/FORMULATION.md section 5): split R_N(s) among the participants in proportion to
    D_i(s) + eps, D_i being what robot i alone could have saved with a valid value.

    `valid=None` treats every value as reachable.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be positive and finite, got {self.eps}")
        penalty = _need_count_penalty(penalty, "CounterfactualBlame")
        return recon_split(*self.savings(penalty, zone, value, valid), eps=self.eps)

    def savings(self, penalty: NSEPenalty, zone, value, valid=None):
        """(R_N (B,), D (B, n), P (B, n)): the inputs of the split.

        Large fleets take a bit-identical shortcut: D_i depends only on robot i's type
        (zone, value, valid values) and the state's count table, so it is computed once per
        type present instead of once per robot.
        """
        fast = _savings_by_type(penalty, zone, value, valid)
        if fast is not None:
            return fast
        c = _Counts(penalty, zone, value)
        B, n = c.zone.shape
        mask = _valid_mask(valid, (B, n, penalty.n_values))
        best = np.broadcast_to(c.total[:, None], (B, n)).copy()
        for v in range(penalty.n_values):
            if mask is not None and not mask[:, :, v].any():
                continue
            alt = np.minimum(best, c.with_value(v))
            best = alt if mask is None else np.where(mask[:, :, v], alt, best)
        return c.total, np.maximum(c.total[:, None] - best, 0.0), c.participants()

    def blame_of_one(self, penalty, zone, value, valid, rows, agents, new_values) -> np.ndarray:
        """(K,): the blame of robot `agents[k]` in joint state `rows[k]` with its value set to
        `new_values[k]` (generalised RECON's counterfactual training pairs, docs/FORMULATION.md 6).

        The same formula as `blame` on those K counterfactual states (every robot keeps its
        row of `valid`), without building them: robots are grouped by type (zone, value, valid
        values), a robot's savings D_i depend only on its type and the state's count table, and
        the split's denominator is a sum over types. Cost O(R n + K T) for R distinct rows and
        T types instead of O(K n V); equal to `blame(...)[k, agents[k]]` up to rounding (the
        denominator is summed in another order).
        """
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be positive and finite, got {self.eps}")
        penalty = _need_count_penalty(penalty, "CounterfactualBlame")
        zone, value = penalty.check(zone, value)
        B, n = zone.shape
        V = penalty.n_values
        rows, agents, new_values = (np.asarray(a, dtype=np.intp).ravel() for a in (rows, agents, new_values))
        if not len(rows) == len(agents) == len(new_values):
            raise ValueError("rows, agents and new_values must have the same length")
        for name, a, top in (("rows", rows, B), ("agents", agents, n), ("new_values", new_values, V)):
            if a.size and (a.min() < 0 or a.max() >= top):
                raise ValueError(f"{name} must be in 0..{top - 1}")
        out = np.zeros(len(rows))
        if not len(rows):
            return out
        urows, r_of = np.unique(rows, return_inverse=True)
        penalty, zu, _ = penalty.on_visited_zones(zone[urows])
        vu = value[urows]
        mask = _valid_mask(valid, (B, n, V))
        code = _valid_code(mask, urows, zu.shape, V)
        z_a, v_a, c_a = zu[r_of, agents], vu[r_of, agents], code[r_of, agents]
        new_full = ((z_a.astype(np.int64) * V + new_values) << V) | c_a
        types, t_of, new_c = _robot_types(penalty, zu, vu, code, new_full)
        # only types standing in a penalised cell can be participants (a share > 0)
        tz, tv = np.divmod(types >> V, V)
        kept = np.flatnonzero(penalty.cell_has_term[tz, tv])
        T = len(kept)
        column = np.full(len(types), T)  # type -> its column; T: a spare column for the others
        column[kept] = np.arange(T)
        old_c, new_c = column[t_of[r_of, agents]], column[new_c]
        hist = np.bincount((np.arange(len(urows))[:, None] * (T + 1) + column[t_of]).ravel(),
                           minlength=len(urows) * (T + 1)).reshape(len(urows), T + 1)
        counts = penalty.counts(zu, vu, check=False)  # (R, Z+1, V)
        table = penalty.cell_table(n + 1)
        # robots of one type in one joint state, given one new value, get one blame: each
        # such (row, type, value) is computed once, for its first pair
        pair_key = (r_of.astype(np.int64) * len(types) + t_of[r_of, agents]) * V + new_values
        _, firsts, repeat = np.unique(pair_key, return_index=True, return_inverse=True)
        step = max(1, (1 << 21) // max(T + 1, (penalty.n_zones + 1) * V))
        for s in range(0, len(firsts), step):
            k = firsts[s:s + step]
            idx = np.arange(len(k))
            cf = counts[r_of[k]]  # fancy indexing copies
            cf[idx, z_a[k], v_a[k]] -= 1
            cf[idx, z_a[k], new_values[k]] += 1
            total = penalty.from_counts(cf)  # (k,)
            h = hist[r_of[k]]
            h[idx, old_c[k]] -= 1
            h[idx, new_c[k]] += 1
            savings, part = _type_savings(penalty, cf, total, table, types[kept])
            share = np.zeros((len(k), T + 1))
            share[:, :T] = np.where(part, savings + self.eps, 0.0)
            den = (h * share).sum(axis=1)
            own = share[idx, new_c[k]]
            out[k] = np.divide(total * own, den, out=np.zeros(len(k)), where=den > 0)
        return out[firsts][repeat.reshape(-1)]


def _valid_code(mask, rows, shape, n_values: int) -> np.ndarray:
    """(R, n) int64: bit v set when value v is a valid counterfactual (all bits when mask is None)."""
    if n_values > 56:
        raise ValueError(f"robot types pack the valid values into 64 bits; {n_values} values is too many")
    if mask is None:
        return np.full(shape, (1 << n_values) - 1, dtype=np.int64)
    packed = np.packbits(mask if rows is None else mask[rows], axis=-1, bitorder="little")  # (R, n, ceil(V/8))
    code = packed[..., 0].astype(np.int64)
    for byte in range(1, packed.shape[-1]):
        code |= packed[..., byte].astype(np.int64) << (8 * byte)
    return code


def _robot_types(penalty: NSEPenalty, zone, value, code, extra=None):
    """Robot types (zone, value, valid code) present: (sorted full type ids (T,), (B, n) compact
    type of each robot, compact types of the `extra` full ids or None). A full id is
    ((zone * V + value) << V) | code."""
    V = penalty.n_values
    full = ((zone.astype(np.int64) * V + value) << V) | code
    n_full = ((penalty.n_zones + 1) * V) << V
    if n_full <= 1 << 24:  # a presence table instead of sorting B n type ids
        present = np.zeros(n_full, dtype=bool)
        present[full.ravel()] = True
        if extra is not None:
            present[extra] = True
        types = np.flatnonzero(present)
        compact = np.cumsum(present) - 1
        return types, compact[full], None if extra is None else compact[extra]
    ids = full.ravel() if extra is None else np.concatenate([full.ravel(), extra])
    types, inverse = np.unique(ids, return_inverse=True)
    return types, inverse[: full.size].reshape(full.shape), None if extra is None else inverse[full.size:]


def _type_savings(penalty: NSEPenalty, counts, total, table, types):
    """D and participation per state and robot type, (B, T) each: the arithmetic of
    `_Counts.with_value` and `CounterfactualBlame.savings`, element for element."""
    V = penalty.n_values
    tc = types & ((1 << V) - 1)
    tz, tv = np.divmod(types >> V, V)
    n_own = counts[:, tz, tv]  # (B, T)
    # look-ups in the flat table (one index per entry instead of three): the same numbers
    flat, size = table.reshape(-1), table.shape[2]
    own_at = (tz * V + tv) * size  # (T,) where each type's row of g starts
    removed = total[:, None] - flat.take(own_at + n_own) + flat.take(own_at + np.maximum(n_own - 1, 0))
    best = np.broadcast_to(total[:, None], n_own.shape).copy()
    for v in range(V):
        bit = ((tc >> v) & 1).astype(bool)
        if not bit.any():
            continue
        n_new = counts[:, tz, v]
        at = (tz * V + v) * size + n_new
        moved = removed + flat.take(at + 1) - flat.take(at)
        alt = np.minimum(best, np.where(tv == v, total[:, None], moved))
        best = np.where(bit, alt, best)
    part = penalty.cell_has_term[tz, tv] & (n_own >= penalty.min_count)
    return np.maximum(total[:, None] - best, 0.0), part


def _savings_by_type(penalty, zone, value, valid, min_agents: int = 64):
    """`CounterfactualBlame.savings` computed per robot type, or None where that does not pay
    (few robots, or nearly as many types as robots)."""
    zone_a = np.asarray(zone)
    if zone_a.ndim != 2 or zone_a.shape[1] < min_agents or zone_a.shape[0] == 0 or penalty.n_values > 56:
        return None
    zone, value = penalty.check(zone, value)
    B, n = zone.shape
    V = penalty.n_values
    mask = _valid_mask(valid, (B, n, V))
    penalty, zone, _ = penalty.on_visited_zones(zone)
    types, t_of, _ = _robot_types(penalty, zone, value, _valid_code(mask, None, (B, n), V))
    if 2 * len(types) > n:
        return None
    counts = penalty.counts(zone, value, check=False)
    total = penalty.from_counts(counts)
    table = penalty.cell_table(n + 1)
    savings, part = _type_savings(penalty, counts, total, table, types)
    return total, np.take_along_axis(savings, t_of, axis=1), np.take_along_axis(part, t_of, axis=1)


class DifferenceReward(BlameMethod):
    """DR_i = R_N(s) - R_N(s with robot i's dynamic value null)."""

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        if isinstance(penalty, NSEPenalty):
            c = _Counts(penalty, zone, value)
            return c.total[:, None] - c.with_value(0)
        zone, value = _check(penalty, zone, value)
        n = zone.shape[1]
        idx = np.arange(n)

        def build(zc, vc):
            b = zc.shape[0]
            vv = np.broadcast_to(vc[:, None, :], (b, n, n)).copy()
            vv[:, idx, idx] = 0
            return np.broadcast_to(zc[:, None, :], (b, n, n)), vv

        total = np.asarray(penalty(zone, value), dtype=float)
        return total[:, None] - _evaluate_variants(penalty, zone, value, build, n, n)


class WonderfulLifeUtility(BlameMethod):
    """WLU_i = R_N(s) - R_N(s without robot i).

    For the count penalty a null value never counts, so removing robot i and nulling it
    give the same state counts: WLU equals DR there (tested), but not for other penalties.
    """

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        if isinstance(penalty, NSEPenalty):
            c = _Counts(penalty, zone, value)
            return c.total[:, None] - c.removed
        zone, value = _check(penalty, zone, value)
        n = zone.shape[1]
        rest = np.arange(max(n - 1, 0))
        others = rest[None, :] + (rest[None, :] >= np.arange(n)[:, None])  # (n, n-1): everyone but i

        def build(zc, vc):
            return zc[:, others], vc[:, others]

        total = np.asarray(penalty(zone, value), dtype=float)
        return total[:, None] - _evaluate_variants(penalty, zone, value, build, n, max(n - 1, 0))


class DPlusPlus(BlameMethod):
    """D++_i = max over k = 1..K of [R_N(s + k copies of robot i) - R_N(s)] / k.

    Copies keep robot i's zone and value. For a penalty (to minimise) the per-copy
    increase is blame: positive means robots like i make things worse. It is non-zero
    where DR is zero, e.g. a robot alone in a zone that one more robot would trigger.
    """

    def __init__(self, max_copies: int = 5) -> None:
        self.max_copies = max_copies

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        K = self.max_copies
        if isinstance(K, bool) or int(K) != K or K < 1:
            raise ValueError(f"max_copies must be an integer >= 1, got {K!r}")
        K = int(K)
        if isinstance(penalty, NSEPenalty):
            c = _Counts(penalty, zone, value, extra=K)
            best = c.with_copies(1) - c.total[:, None]
            for k in range(2, K + 1):
                best = np.maximum(best, (c.with_copies(k) - c.total[:, None]) / k)
            return best
        zone, value = _check(penalty, zone, value)
        n = zone.shape[1]
        total = np.asarray(penalty(zone, value), dtype=float)
        best = np.full(zone.shape, -np.inf)
        for k in range(1, K + 1):
            def build(zc, vc, k=k):
                b = zc.shape[0]

                def grow(a):
                    base = np.broadcast_to(a[:, None, :], (b, n, n))
                    extra = np.broadcast_to(a[:, :, None], (b, n, k))
                    return np.concatenate([base, extra], axis=2)

                return grow(zc), grow(vc)

            more = _evaluate_variants(penalty, zone, value, build, n, n + k)
            best = np.maximum(best, (more - total[:, None]) / k)
        return best


# -- Shapley --------------------------------------------------------------------------------


def shapley_closed_form(penalty: NSEPenalty, zone, value) -> np.ndarray:
    """Each term is a symmetric game among the m robots of its cell: each gets g(m)/m."""
    penalty = _need_count_penalty(penalty, "the Shapley closed form")
    c = _Counts(penalty, zone, value)
    return c.g_own / c.n_own


def _null_outside(zc, vc, masks):
    """Variants of each state with robots outside each coalition mask nulled: (b, M, n)."""
    b = zc.shape[0]
    M, n = masks.shape
    return np.broadcast_to(zc[:, None, :], (b, M, n)), np.where(masks[None], vc[:, None, :], 0)


def shapley_enumeration(penalty, zone, value) -> np.ndarray:
    """Exact Shapley values of v_s(C) = R_N(s with robots outside C nulled), any penalty.

    Evaluates all 2^n coalitions, so n is capped at MAX_ENUMERATION_AGENTS.
    """
    zone, value = _check(penalty, zone, value)
    B, n = zone.shape
    if n > MAX_ENUMERATION_AGENTS:
        raise ValueError(f"Shapley enumeration evaluates 2^n coalitions; n = {n} robots is above the limit of "
                         f"{MAX_ENUMERATION_AGENTS}: use method='sampling' (or 'closed_form' for NSEPenalty)")
    codes = np.arange(1 << n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)  # (2^n, n)
    vals = _evaluate_variants(penalty, zone, value, lambda zc, vc: _null_outside(zc, vc, masks), 1 << n, n)
    size = masks.sum(axis=1)
    fact = np.array([math.factorial(s) for s in range(n + 1)], dtype=float)
    weight = fact[size] * fact[np.maximum(n - 1 - size, 0)] / fact[n]  # for coalitions C without i
    phi = np.empty((B, n))
    for i in range(n):
        without = codes[~masks[:, i]]
        phi[:, i] = (vals[:, without | (1 << i)] - vals[:, without]) @ weight[without]
    return phi


def shapley_sampling(penalty, zone, value, n_permutations: int = 1000, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo Shapley values over random robot orders, with their standard errors.

    The same seeded orders serve every state of the batch; each order costs n + 1
    penalty evaluations per state, evaluated together as one batch.
    """
    zone, value = _check(penalty, zone, value)
    B, n = zone.shape
    P = int(n_permutations)
    if P < 2:
        raise ValueError(f"n_permutations must be >= 2 (for a standard error), got {n_permutations}")
    rng = np.random.default_rng(seed)
    total, total_sq = np.zeros((B, n)), np.zeros((B, n))
    block = max(1, _CHUNK // max(1, (n + 1) * n))
    done = 0
    while done < P:
        p = min(block, P - done)
        order = rng.permuted(np.tile(np.arange(n), (p, 1)), axis=1)
        rank = np.argsort(order, axis=1)  # rank[q, i]: position of robot i in order q
        masks = (rank[:, None, :] < np.arange(n + 1)[None, :, None]).reshape(p * (n + 1), n)
        vals = _evaluate_variants(penalty, zone, value, lambda zc, vc: _null_outside(zc, vc, masks),
                                  p * (n + 1), n).reshape(B, p, n + 1)
        after = np.take_along_axis(vals, np.broadcast_to(rank[None] + 1, (B, p, n)), axis=2)
        before = np.take_along_axis(vals, np.broadcast_to(rank[None], (B, p, n)), axis=2)
        marg = after - before
        total += marg.sum(axis=1)
        total_sq += (marg ** 2).sum(axis=1)
        done += p
    mean = total / P
    var = np.maximum(total_sq / P - mean ** 2, 0.0) * P / (P - 1)
    return mean, np.sqrt(var / P)


class ShapleyBlame(BlameMethod):
    """Shapley value of the game v_s(C) = R_N(s with robots outside C nulled).

    method: "closed_form" (NSEPenalty only, exact, O(B n)), "enumeration" (exact, any
    penalty, n <= 16), "sampling" (any penalty, `n_permutations` seeded orders), or
    "auto": closed form for NSEPenalty, else enumeration up to `enumeration_limit`
    robots, else sampling.
    """

    METHODS = ("auto", "closed_form", "enumeration", "sampling")

    def __init__(self, method: str = "auto", n_permutations: int = 1000, seed=0, enumeration_limit: int = 10) -> None:
        self.method = method
        self.n_permutations = n_permutations
        self.seed = seed
        self.enumeration_limit = enumeration_limit

    def resolve_method(self, penalty, n_agents: int) -> str:
        if self.method not in self.METHODS:
            raise ValueError(f"unknown Shapley method {self.method!r}; choose one of {self.METHODS}")
        if self.method != "auto":
            return self.method
        if isinstance(penalty, NSEPenalty):
            return "closed_form"
        return "enumeration" if n_agents <= min(self.enumeration_limit, MAX_ENUMERATION_AGENTS) else "sampling"

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        method = self.resolve_method(penalty, np.shape(zone)[-1] if np.ndim(zone) else 0)
        if method == "closed_form":
            return shapley_closed_form(penalty, zone, value)
        if method == "enumeration":
            return shapley_enumeration(penalty, zone, value)
        return shapley_sampling(penalty, zone, value, self.n_permutations, self.seed)[0]


# -- exchange values --------------------------------------------------------------------------


class ExchangeValue(BlameMethod):
    """EV_i(s) = mean over j != i of [R_N(s) - R_N(s with i's dynamic value replaced by j's)].

    This is docs/FORMULATION.md section 7's version: the group is the whole joint state and only
    the dynamic value is exchanged (robot i keeps its place). Paper 000 (Def. 4.1) also
    averages over every sub-group size; the sign agrees: positive means robot i's value
    causes more penalty than a randomly chosen other robot's would.
    """

    def blame(self, penalty, zone, value, valid=None) -> np.ndarray:
        zone, value = _check(penalty, zone, value)
        B, n = zone.shape
        if n < 2:
            raise ValueError(f"the exchange value compares robot i with the other robots (i's value swapped for "
                             f"another robot's); with {n} robot(s) there is no one to exchange with")
        if isinstance(penalty, NSEPenalty):
            c = _Counts(penalty, zone, value)
            total, V = c.total, penalty.n_values
            cf = None
        else:
            cf = counterfactual_penalties(penalty, zone, value)
            total, V = cf[np.arange(B), 0, value[:, 0]], cf.shape[2]
        how_many = np.zeros((B, V))  # robots with value v in state b
        np.add.at(how_many, (np.repeat(np.arange(B), n), value.ravel()), 1.0)
        swapped = np.zeros((B, n))  # sum over all j (i included) of R_N(s with i's value := value_j)
        for v in range(V):
            if how_many[:, v].any():
                r = c.with_value(v) if cf is None else cf[:, :, v]
                swapped += how_many[:, v, None] * r
        return total[:, None] - (swapped - total[:, None]) / (n - 1)


class ExchangeValueFromLogs(_Params):
    """Exchange values from logs alone: groups of robots with their collective NSE score.

    No penalty model is needed (paper 000, section 4.2). Higher score = more NSE, so a
    positive EV means the robot makes its groups worse than a random replacement would.

    * Paired sampling estimate: two logged groups identical except that robot i stands
      where robot j stood give one exchange contribution score(G) - score(G') (the
      paper's eq. 2); robot i's EV is the mean over all such pairs in the logs. Repeated
      logs of one group are averaged first.
    * EV-clustering (Def. 4.4, simplified) for robots with fewer than `min_pairs` pairs
      (few pairs against unlucky partners give a biased mean): robots are clustered with
      sklearn KMeans (`n_clusters`) on their score profile, the contribution a_i of a
      least-squares additive fit of the scores (under the additive approximation the
      paper proves EV-clustering equals clustering by these contributions). Groups are
      then read as multisets of clusters with scores averaged per multiset (the paper's
      clustered value function), and paired exchanges between clusters give
      Gamma[c, c']. A robot's estimate is the mean of Gamma[u_i, u_j] over the other
      robots j (0 within its own cluster), on the same scale as the paired estimate.
      Among `n_restarts` KMeans runs the assignment with the largest variance of the
      robots' EVs is kept (the paper's objective, eq. 4); k itself is a parameter, as the
      paper fixes it (elbow) rather than optimising eq. 4 over k.
    * A robot with fewer pairs and no cluster estimate keeps its few pairs; one with
      neither gets NaN and is listed in `unestimated_` (and warned about), never 0.

    clustering: "auto" (as above), "always" (every clustered robot takes its cluster
    estimate, as in the paper) or "never" (pairs only).
    Fitted attributes: robots_, values_, n_pairs_, source_ ("pairs"/"cluster"/"none"),
    clusters_ (-1: not clustered), profile_, unestimated_.
    """

    def __init__(self, min_pairs: int = 10, n_clusters: int = 3, n_restarts: int = 10, clustering: str = "auto",
                 seed=0) -> None:
        self.min_pairs = min_pairs
        self.n_clusters = n_clusters
        self.n_restarts = n_restarts
        self.clustering = clustering
        self.seed = seed

    def fit(self, groups: Sequence[Sequence[Hashable]], scores: Sequence[float],
            robots: Sequence[Hashable]) -> "ExchangeValueFromLogs":
        if self.clustering not in ("auto", "always", "never"):
            raise ValueError(f"clustering must be 'auto', 'always' or 'never', got {self.clustering!r}")
        robots = list(robots)
        index = {r: k for k, r in enumerate(robots)}
        if len(index) != len(robots):
            dup = sorted({repr(r) for r in robots if robots.count(r) > 1})
            raise ValueError(f"robot list has duplicates: {', '.join(dup)}")
        n = len(robots)
        if n < 2:
            raise ValueError(f"exchange values compare robots with each other; got {n} robot(s)")
        scores = np.asarray(scores, dtype=float)
        if scores.ndim != 1 or len(scores) != len(groups):
            raise ValueError(f"need one score per group: {len(groups)} groups, scores of shape {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores must be finite")
        if len(groups) == 0:
            raise ValueError("no logs to estimate from")
        # average repeated logs of one group (stochastic outcomes)
        sums: dict[frozenset, list] = {}
        for g, s in zip(groups, scores):
            members = list(g)
            if not members:
                raise ValueError("a logged group is empty")
            for r in members:
                if r not in index:
                    raise ValueError(f"a log names robot {r!r}, which is not in the robot list")
            if len(set(members)) != len(members):
                raise ValueError(f"logged group {members} names a robot twice")
            acc = sums.setdefault(frozenset(index[r] for r in members), [0.0, 0])
            acc[0] += s
            acc[1] += 1
        uniq = list(sums)
        ubar = np.array([sums[g][0] / sums[g][1] for g in uniq])

        pair_sum, pair_n = _paired_exchanges([tuple(g) for g in uniq], ubar, n)
        profile = _additive_profile(uniq, ubar, n)

        few = pair_n > 0
        pair_ev = np.divide(pair_sum, pair_n, out=np.full(n, np.nan), where=few)
        enough = pair_n >= max(1, int(self.min_pairs))
        clusters, cluster_ev = np.full(n, -1), np.full(n, np.nan)
        if self.clustering == "always" or (self.clustering == "auto" and not enough.all()):
            clusters, cluster_ev = self._ev_clustering(uniq, ubar, profile, n)
        has_cluster = np.isfinite(cluster_ev)
        if self.clustering == "never":
            choice = [(few, pair_ev, "pairs")]
        elif self.clustering == "always":
            choice = [(has_cluster, cluster_ev, "cluster"), (few, pair_ev, "pairs")]
        else:  # few pairs are still better than nothing when no cluster estimate exists
            choice = [(enough, pair_ev, "pairs"), (has_cluster, cluster_ev, "cluster"), (few, pair_ev, "pairs")]
        values = np.full(n, np.nan)
        source = np.full(n, "none", dtype=object)
        for usable, est, name in choice:
            take = usable & np.isnan(values)
            values[take] = est[take]
            source[take] = name
        self.robots_ = tuple(robots)
        self.values_ = values
        self.n_pairs_ = pair_n.astype(int)
        self.source_ = source
        self.clusters_ = clusters
        self.profile_ = profile
        self.unestimated_ = tuple(r for r, v in zip(robots, values) if not np.isfinite(v))
        if self.unestimated_:
            warnings.warn(f"no usable comparisons for {len(self.unestimated_)} robot(s): "
                          f"{list(self.unestimated_)[:10]}; their exchange value is NaN", RuntimeWarning, stacklevel=2)
        return self

    def predict(self, robots: Sequence[Hashable] | None = None) -> np.ndarray:
        """Estimated EVs of `robots` (default: all, in fit order); NaN where unestimated."""
        if not hasattr(self, "values_"):
            raise RuntimeError("call fit(groups, scores, robots) first")
        if robots is None:
            return self.values_.copy()
        index = {r: k for k, r in enumerate(self.robots_)}
        missing = [r for r in robots if r not in index]
        if missing:
            raise ValueError(f"unknown robot(s) {missing}: not in the robot list given to fit")
        return self.values_[[index[r] for r in robots]]

    def _ev_clustering(self, uniq, ubar, profile, n):
        from sklearn.cluster import KMeans

        ok = np.isfinite(profile)
        labels_best, ev_best, var_best = np.full(n, -1), np.full(n, np.nan), -np.inf
        distinct = len(np.unique(profile[ok])) if ok.any() else 0
        k = min(int(self.n_clusters), distinct)
        if k < 1:
            return labels_best, ev_best
        rng = np.random.default_rng(self.seed)
        for _ in range(max(1, int(self.n_restarts))):
            km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(2 ** 31 - 1)))
            labels = np.full(n, -1)
            labels[ok] = km.fit_predict(profile[ok, None])
            ev = _clustered_ev(uniq, ubar, labels, k)
            var = np.nanvar(ev) if np.isfinite(ev).any() else -np.inf
            if var > var_best:
                labels_best, ev_best, var_best = labels, ev, var
        return labels_best, ev_best


def _paired_exchanges(groups: list[tuple], scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and number of exchange contributions score(G) - score(G') per member label.

    Groups sharing all members but one fall in the same bucket (keyed by the rest); in a
    bucket of L groups, member a gets sum over b of (s_a - s_b) = L s_a - sum s, from L - 1 pairs.
    """
    buckets: dict[tuple, list] = {}
    for g, s in zip(groups, scores):
        members = sorted(g)
        for pos, a in enumerate(members):
            buckets.setdefault(tuple(members[:pos] + members[pos + 1:]), []).append((a, s))
    total, count = np.zeros(n), np.zeros(n)
    for entries in buckets.values():
        if len(entries) < 2:
            continue
        who = np.array([a for a, _ in entries])
        s = np.array([x for _, x in entries])
        np.add.at(total, who, len(s) * s - s.sum())
        np.add.at(count, who, len(s) - 1)
    return total, count


def _additive_profile(groups: list[frozenset], scores: np.ndarray, n: int) -> np.ndarray:
    """Each robot's contribution in the least-squares additive fit score(G) ~ c_|G| + sum_{i in G} a_i.

    Paper 000 (App. A.2) shows EV-clustering is clustering by these contributions under
    the additive approximation; unlike the raw with/without contrast, the fit accounts for
    who the robot was logged with. Minimum-norm solution; NaN for robots never logged.
    """
    sizes = np.array([len(g) for g in groups])
    size_ids, size_col = np.unique(sizes, return_inverse=True)
    X = np.zeros((len(groups), n + len(size_ids)))
    for r, g in enumerate(groups):
        X[r, list(g)] = 1.0
    X[np.arange(len(groups)), n + size_col] = 1.0
    coef = np.linalg.lstsq(X, scores, rcond=None)[0][:n]
    return np.where(X[:, :n].any(axis=0), coef, np.nan)


def _clustered_ev(groups: list[frozenset], scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Robot EVs from the clustered value function: mean over j != i of Gamma[u_i, u_j]."""
    n = len(labels)
    out = np.full(n, np.nan)
    sums: dict[tuple, list] = {}
    for g, s in zip(groups, scores):
        lab = labels[list(g)]
        if (lab < 0).any():
            continue
        acc = sums.setdefault(tuple(sorted(lab.tolist())), [0.0, 0])
        acc[0] += s
        acc[1] += 1
    gamma_sum, gamma_n = np.zeros((k, k)), np.zeros((k, k))
    buckets: dict[tuple, list] = {}
    for multiset, (s, c) in sums.items():
        for pos in {multiset.index(u) for u in multiset}:  # one removal per distinct cluster
            buckets.setdefault(multiset[:pos] + multiset[pos + 1:], []).append((multiset[pos], s / c))
    for entries in buckets.values():
        for a, sa in entries:
            for b, sb in entries:
                if a != b:
                    gamma_sum[a, b] += sa - sb
                    gamma_n[a, b] += 1
    gamma = np.divide(gamma_sum, gamma_n, out=np.full((k, k), np.nan), where=gamma_n > 0)
    np.fill_diagonal(gamma, 0.0)
    size = np.bincount(labels[labels >= 0], minlength=k).astype(float)
    for u in range(k):
        others = size.copy()
        others[u] -= 1  # the robots j != i of a robot i in cluster u
        known = np.isfinite(gamma[u]) & (others > 0)
        if not (known & (np.arange(k) != u)).any():
            continue  # no exchange with another cluster observed: nothing to say
        w = np.where(known, others, 0.0)
        out[labels == u] = np.where(known, gamma[u], 0.0) @ w / w.sum()
    return out
