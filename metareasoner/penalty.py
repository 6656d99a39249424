"""The count-based NSE penalty R_N (docs/FORMULATION.md section 3, the paper's equation 4).

A batch of B joint states of n robots is two int arrays of shape (B, n): `zone`
(0 = no zone, 1..Z = `zone_names`) and `value` (the robot's dynamic feature value,
0 = null). Everything is computed from the count table n_{z,v} (B, Z+1, V), so the
cost is O(B n) whatever the number of rules, and a one-robot change (blame
counterfactuals) only touches two cells of the table.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from planner.problem import Feature
from planner.world import NSERule, World

#: integer counts are looked up in a table of g_t(0..max) while it holds at most this many entries
TABLE_ENTRIES = 4_000_000


class NSEPenalty:
    """R_N(s) = sum over terms t of g_t(n_{z_t, v_t}(s)), one term per (rule, zone) it covers.

    g_t(n) = w_t log(1 + k_t (n - 1)) if n >= min_count else 0. Several rules may cover
    the same (zone, value) cell: their terms add. A rule with zone None covers every
    named zone 1..Z, never zone 0 (outside all zones nothing is penalised).
    Instances are immutable: a rule change builds a new penalty.
    """

    def __init__(self, rules: Sequence[NSERule], zone_names: Sequence[str], feature: Feature,
                 min_count: int = 2) -> None:
        zone_names = tuple(zone_names)
        if feature.kind != "dynamic_global":
            raise ValueError(f"the NSE penalty counts a dynamic global feature; {feature.name!r} is {feature.kind}")
        if isinstance(min_count, bool) or int(min_count) != min_count or min_count < 2:
            raise ValueError(f"min_count must be an integer >= 2 (a robot alone causes no NSE), got {min_count!r}")
        if len(set(zone_names)) != len(zone_names):
            raise ValueError(f"zone names must be distinct, got {zone_names}")
        tz, tv, tw, tk = [], [], [], []
        for r in rules:
            if r.feature != feature.name:
                raise ValueError(f"rule {r} names feature {r.feature!r}; the penalty counts {feature.name!r}")
            if r.value not in feature.values[1:]:
                raise ValueError(f"rule {r} names unknown value {r.value!r} of {feature.name!r}; "
                                 f"non-null values: {list(feature.values[1:])}")
            if r.zone is not None and r.zone not in zone_names:
                raise ValueError(f"rule {r} names unknown zone {r.zone!r}; zones: {list(zone_names)} (or None for all)")
            for name, x in (("weight", r.weight), ("sensitivity", r.sensitivity)):
                if not (math.isfinite(x) and x > 0):
                    raise ValueError(f"rule {r}: {name} must be positive and finite, got {x}")
            zones = range(1, len(zone_names) + 1) if r.zone is None else (zone_names.index(r.zone) + 1,)
            for z in zones:
                tz.append(z)
                tv.append(feature.values.index(r.value))
                tw.append(float(r.weight))
                tk.append(float(r.sensitivity))
        self.rules = tuple(rules)
        self.feature = feature
        self.min_count = int(min_count)
        self._set_terms(zone_names, np.array(tz, dtype=np.intp), np.array(tv, dtype=np.intp),
                        np.array(tw, dtype=float), np.array(tk, dtype=float))

    def _set_terms(self, zone_names: tuple, tz, tv, tw, tk) -> None:
        self.zone_names = zone_names
        self.n_zones = len(zone_names)  # Z; count tables have Z + 1 zone rows (row 0: no zone)
        self.n_values = len(self.feature.values)  # V, value 0 is null
        self.term_zone = _frozen(tz)
        self.term_value = _frozen(tv)
        self.term_weight = _frozen(tw)
        self.term_sensitivity = _frozen(tk)
        has = np.zeros((self.n_zones + 1, self.n_values), dtype=bool)
        has[self.term_zone, self.term_value] = True
        self.cell_has_term = _frozen(has)
        zone_of_term = np.zeros((len(tz), self.n_zones + 1))
        zone_of_term[np.arange(len(tz)), self.term_zone] = 1.0
        self._zone_of_term = zone_of_term
        self._table_cache = np.zeros((self.n_zones + 1, self.n_values, 0))
        self._max_cache: dict[int, float] = {}
        self._term_table = np.zeros((len(tz), 0))  # g_t(k) for k = 0.. (grown on demand)
        self._views: dict[bytes, NSEPenalty] = {}  # visited zones -> this penalty on them

    def on_visited_zones(self, zone: np.ndarray) -> tuple["NSEPenalty", np.ndarray, np.ndarray | None]:
        """(penalty, zone, zones): this penalty on the zones a checked batch visits only, the
        batch's zones renumbered for it, and the original number of each of its zones (None when
        it is this penalty itself: few zones, or most of them visited).

        R_N is the same on the batch and on every change of a robot's value in it (a term of
        a zone nobody is in counts fewer than min_count >= 2 robots, so g = 0), and count tables
        have a row per visited zone only: a map of a hundred one-cell zones visited by ten
        robots counts in a few rows instead of a hundred."""
        Z = self.n_zones
        if Z < 8 or zone.size == 0:
            return self, zone, None
        present = np.zeros(Z + 1, dtype=bool)
        present[zone.ravel()] = True
        present[0] = True
        zones = np.flatnonzero(present)
        if 2 * len(zones) > Z + 1:
            return self, zone, None
        key = zones.tobytes()
        view = self._views.get(key)
        if view is None:
            number = np.cumsum(present) - 1  # original zone -> its row in the view
            keep = present[self.term_zone]
            view = object.__new__(NSEPenalty)
            view.rules, view.feature, view.min_count = self.rules, self.feature, self.min_count
            view._set_terms(tuple(self.zone_names[z - 1] for z in zones[1:]), number[self.term_zone[keep]],
                            self.term_value[keep].copy(), self.term_weight[keep].copy(),
                            self.term_sensitivity[keep].copy())
            if len(self._views) >= 64:
                self._views.clear()
            self._views[key] = view
        number = np.cumsum(present) - 1
        return view, number[zone], zones

    @classmethod
    def from_world(cls, world: World, feature: Feature) -> "NSEPenalty":
        return cls(world.rules, world.zone_names, feature, world.min_count)

    @property
    def n_terms(self) -> int:
        return len(self.term_zone)

    def __repr__(self) -> str:
        return (f"NSEPenalty({len(self.rules)} rules, {self.n_terms} terms, zones={list(self.zone_names)}, "
                f"feature={self.feature.name!r}, min_count={self.min_count})")

    # -- input checks -------------------------------------------------------------------------

    def check(self, zone, value) -> tuple[np.ndarray, np.ndarray]:
        """Validated (B, n) intp copies-or-views of a batch of joint states."""
        zone, value = np.asarray(zone), np.asarray(value)
        if zone.shape != value.shape:
            raise ValueError(f"zone and value must have the same shape, got {zone.shape} and {value.shape}")
        if zone.ndim != 2:
            raise ValueError(f"zone and value must be (B, n) batches of joint states, got shape {zone.shape}; "
                             "for one joint state pass zone[None], value[None]")
        for name, arr, top in (("zone", zone, self.n_zones), ("value", value, self.n_values - 1)):
            if arr.dtype.kind not in "iu":
                raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
            if arr.size:
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or hi > top:
                    raise ValueError(f"{name} index out of range: found {lo if lo < 0 else hi}, valid 0..{top}")
        return zone.astype(np.intp, copy=False), value.astype(np.intp, copy=False)

    def _check_counts(self, counts) -> np.ndarray:
        counts = np.asarray(counts)
        if counts.ndim < 2 or counts.shape[-2:] != (self.n_zones + 1, self.n_values):
            raise ValueError(f"counts must have shape (..., {self.n_zones + 1}, {self.n_values}), got {counts.shape}")
        return counts

    # -- the penalty --------------------------------------------------------------------------

    def counts(self, zone, value, check: bool = True) -> np.ndarray:
        """n_{z,v} per joint state, (B, Z+1, V) ints (null value and zone 0 included)."""
        if check:
            zone, value = self.check(zone, value)
        B = zone.shape[0]
        cells = (self.n_zones + 1) * self.n_values
        flat = (np.arange(B)[:, None] * cells + zone * self.n_values + value).ravel()
        return np.bincount(flat, minlength=B * cells).reshape(B, self.n_zones + 1, self.n_values)

    def term_values(self, n) -> np.ndarray:
        """g_t(n[..., t]) for counts given per term, shape (..., T); a last axis of 1 broadcasts."""
        n = np.asarray(n)
        if n.ndim == 0 or n.shape[-1] not in (1, self.n_terms):
            raise ValueError(f"term_values needs counts with a last axis of {self.n_terms} terms (or 1), got {n.shape}")
        if n.dtype.kind in "iu" and n.size and int(n.min()) >= 0 and (int(n.max()) + 1) * self.n_terms <= TABLE_ENTRIES:
            # integer counts: looked up in the table of g_t(0..max) (the same values, no log per entry)
            top = int(n.max())
            if self._term_table.shape[1] <= top:  # grown at least twofold, up to TABLE_ENTRIES
                size = min(max(top + 1, 2 * self._term_table.shape[1]), TABLE_ENTRIES // max(1, self.n_terms))
                self._term_table = np.ascontiguousarray(self._term_values_direct(np.arange(size)[:, None]).T)
            table = self._term_table
            if n.shape[-1] == 1:
                return table[:, n[..., 0]].transpose(*range(1, n.ndim), 0)
            # one flat look-up per entry (term t's row starts at t * width): the same values
            return table.reshape(-1).take(n + np.arange(self.n_terms) * table.shape[1])
        return self._term_values_direct(n)

    def _term_values_direct(self, n: np.ndarray) -> np.ndarray:
        g = self.term_weight * np.log1p(self.term_sensitivity * (np.maximum(n, 1) - 1))
        return np.where(n >= self.min_count, g, 0.0)

    def from_counts(self, counts) -> np.ndarray:
        counts = self._check_counts(counts)
        # each term's count, gathered from the flattened (zone, value) cells in one take
        flat = counts.reshape(*counts.shape[:-2], -1)
        return self.term_values(flat.take(self.term_zone * self.n_values + self.term_value, axis=-1)).sum(axis=-1)

    def __call__(self, zone, value) -> np.ndarray:
        """R_N per joint state, (B,)."""
        return self._evaluate(*self.check(zone, value), by_zone=False)[0]

    def cell_values(self, counts) -> np.ndarray:
        """Penalty of each (zone, value) cell, (..., Z+1, V): several terms of a cell add."""
        counts = self._check_counts(counts)
        g = self.term_values(counts[..., self.term_zone, self.term_value])
        out = np.zeros(counts.shape, dtype=float)
        for t in range(self.n_terms):
            out[..., self.term_zone[t], self.term_value[t]] += g[..., t]
        return out

    def zone_breakdown(self, zone, value) -> np.ndarray:
        """Penalty per zone, (B, Z+1); column 0 (no zone) is always 0."""
        return self.with_zones(zone, value)[1]

    def with_zones(self, zone, value) -> tuple[np.ndarray, np.ndarray]:
        """`self(zone, value)` and `zone_breakdown(zone, value)`, counting once."""
        return self._evaluate(*self.check(zone, value), by_zone=True)

    def _evaluate(self, zone, value, by_zone: bool) -> tuple[np.ndarray, np.ndarray | None]:
        B, n = zone.shape
        Z1 = self.n_zones + 1
        if Z1 * self.n_values > 4 * n:
            # more cells than robots: each state's occupied cells, not its count table
            rows, z, v, count = self._occupied(zone, value)
            g = self.cell_table(n)[z, v, count]
            zones = np.bincount(rows * Z1 + z, weights=g, minlength=B * Z1).reshape(B, Z1) if by_zone else None
            return np.bincount(rows, weights=g, minlength=B), zones
        view, zone, visited = self.on_visited_zones(zone)
        g = view.term_values(view.counts(zone, value, check=False)[:, view.term_zone, view.term_value])
        if not by_zone:
            return g.sum(axis=-1), None
        if visited is None:
            return g.sum(axis=-1), g @ self._zone_of_term
        zones = np.zeros((B, Z1))
        zones[:, visited] = g @ view._zone_of_term
        return g.sum(axis=-1), zones

    def _occupied(self, zone: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, ...]:
        """(row, zone, value, count) of every cell that holds robots in a checked batch, one entry
        per (joint state, cell), in row order."""
        B, n = zone.shape
        V = self.n_values
        cell = np.sort(zone * V + value, axis=1)
        first = np.ones((B, n), dtype=bool)
        first[:, 1:] = cell[:, 1:] != cell[:, :-1]
        rows, cols = np.nonzero(first)
        start = rows * n + cols
        count = np.diff(start, append=B * n)  # a row's last cell ends where the next row starts
        z, v = np.divmod(cell[rows, cols], V)
        return rows, z, v, count

    def participants(self, zone, value) -> np.ndarray:
        """P(s), (B, n) bool: robots counted in some term whose count reaches min_count."""
        zone, value = self.check(zone, value)
        view, zone, _ = self.on_visited_zones(zone)
        counts = view.counts(zone, value, check=False)
        own = counts[np.arange(zone.shape[0])[:, None], zone, value]
        return view.cell_has_term[zone, value] & (own >= self.min_count)

    # -- helpers for blame --------------------------------------------------------------------

    def cell_table(self, n_max: int) -> np.ndarray:
        """G[z, v, n] = penalty of cell (z, v) holding n robots, for n = 0..n_max (at least).

        Blame methods look single-robot changes up here instead of re-evaluating R_N.
        """
        if self._table_cache.shape[2] <= n_max:
            size = max(int(n_max) + 1, 2 * self._table_cache.shape[2], 8)
            g = self.term_values(np.arange(size)[:, None]).T  # (T, size)
            table = np.zeros((self.n_zones + 1, self.n_values, size))
            np.add.at(table, (self.term_zone, self.term_value), g)
            self._table_cache = _frozen(table)
        return self._table_cache

    def max_penalty(self, n_agents: int) -> float:
        """The largest R_N any joint state of `n_agents` robots can reach (exact).

        A max-plus knapsack over the penalised cells, O(cells * n_agents^2): g is zero
        below min_count, so greedy allocation is not enough.
        """
        n = int(n_agents)
        if n < 0:
            raise ValueError(f"n_agents must be >= 0, got {n_agents}")
        if n not in self._max_cache:
            table = self.cell_table(n)[:, :, : n + 1]
            best = np.zeros(n + 1)  # best[m]: most penalty with at most m robots placed so far
            for z, v in zip(*np.nonzero(self.cell_has_term)):
                g = table[z, v]
                new = best.copy()
                for j in range(self.min_count, n + 1):  # j robots in this cell
                    new[j:] = np.maximum(new[j:], best[: n + 1 - j] + g[j])
                best = new
            self._max_cache[n] = float(best[n])
        return self._max_cache[n]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a
