"""The count-based NSE penalty (docs/FORMULATION.md section 3) against a direct evaluation of eq. 4."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map
from planner.problem import Feature
from planner.world import NSERule
from conftest import MAPS


# -- random instances and the brute-force reference ----------------------------------------


@st.composite
def instances(draw, max_agents: int = 8, max_states: int = 5):
    """(penalty, zone (B, n), value (B, n)) with several rules possibly on one cell; a map of
    many zones of which the batch visits a few now and then (the penalty counts on the visited
    zones only, `NSEPenalty.on_visited_zones`)."""
    many = draw(st.booleans())
    n_zones = draw(st.integers(8, 24) if many else st.integers(0, 3))
    n_values = draw(st.integers(2, 4))
    zone_names = tuple(f"z{k}" for k in range(n_zones))
    feature = Feature("f", "dynamic_global", tuple(f"v{k}" for k in range(n_values)))
    visited = sorted(draw(st.sets(st.integers(1, n_zones), min_size=1, max_size=3))) if many else None
    named = zone_names if not many else tuple(zone_names[z - 1] for z in visited) + zone_names[:2]
    zone_choice = st.sampled_from((None,) + named)
    rule = st.builds(NSERule, zone_choice, st.just("f"), st.sampled_from(feature.values[1:]),
                     st.floats(0.1, 5.0), st.floats(0.1, 3.0))
    rules = draw(st.lists(rule, max_size=5))
    penalty = NSEPenalty(rules, zone_names, feature, draw(st.integers(2, 3)))
    B, n = draw(st.integers(1, max_states)), draw(st.integers(0, max_agents))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # few zones and values so that counts of 2 and more are common
    zone = rng.integers(0, n_zones + 1, size=(B, n))
    if many:  # a few zones visited (some rules name others)
        zone = rng.choice(np.array([0, *visited]), size=(B, n))
    value = rng.integers(0, n_values, size=(B, n))
    return penalty, zone, value


def brute_penalty(penalty: NSEPenalty, zone_row, value_row) -> float:
    """Eq. 4 read literally: rules x zones, counting robots one by one."""
    total = 0.0
    for rule in penalty.rules:
        v = penalty.feature.values.index(rule.value)
        zones = range(1, penalty.n_zones + 1) if rule.zone is None else [penalty.zone_names.index(rule.zone) + 1]
        for z in zones:
            n = sum(1 for zi, vi in zip(zone_row, value_row) if zi == z and vi == v)
            if n >= penalty.min_count:
                total += rule.weight * math.log(1 + rule.sensitivity * (n - 1))
    return total


def brute_zone_penalty(penalty, zone_row, value_row, z) -> float:
    return brute_penalty(penalty, [zi if zi == z else 0 for zi in zone_row], value_row)


def brute_participants(penalty, zone_row, value_row) -> list[bool]:
    out = []
    for zi, vi in zip(zone_row, value_row):
        covered = any(penalty.feature.values.index(r.value) == vi and zi > 0
                      and (r.zone is None or penalty.zone_names.index(r.zone) + 1 == zi) for r in penalty.rules)
        n = sum(1 for zj, vj in zip(zone_row, value_row) if (zj, vj) == (zi, vi))
        out.append(covered and n >= penalty.min_count)
    return out


SALP = Feature("sample", "dynamic_global", ("none", "A", "B"))


def salp_penalty(**kw) -> NSEPenalty:
    rules = [NSERule(None, "sample", "A", 2.0, 1.0), NSERule("reef", "sample", "B", 1.0, 0.5),
             NSERule("reef", "sample", "A", 0.5, 2.0)]
    return NSEPenalty(rules, ("reef", "bay"), SALP, **kw)


# -- the penalty against eq. 4 ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(instances())
def test_penalty_matches_equation_4(inst):
    penalty, zone, value = inst
    expected = [brute_penalty(penalty, z, v) for z, v in zip(zone.tolist(), value.tolist())]
    np.testing.assert_allclose(penalty(zone, value), expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(instances())
def test_counts_are_the_number_of_robots_per_zone_and_value(inst):
    penalty, zone, value = inst
    counts = penalty.counts(zone, value)
    B, n = zone.shape
    assert counts.shape == (B, penalty.n_zones + 1, penalty.n_values)
    for b in range(B):
        for z in range(penalty.n_zones + 1):
            for v in range(penalty.n_values):
                assert counts[b, z, v] == sum(1 for i in range(n) if zone[b, i] == z and value[b, i] == v)
    np.testing.assert_allclose(penalty.from_counts(counts), penalty(zone, value))
    np.testing.assert_allclose(penalty.cell_values(counts).sum(axis=(1, 2)), penalty(zone, value))


@settings(max_examples=100, deadline=None)
@given(instances())
def test_participants_and_zone_breakdown(inst):
    penalty, zone, value = inst
    part = penalty.participants(zone, value)
    brk = penalty.zone_breakdown(zone, value)
    for b, (zr, vr) in enumerate(zip(zone.tolist(), value.tolist())):
        assert part[b].tolist() == brute_participants(penalty, zr, vr)
        for z in range(penalty.n_zones + 1):
            assert brk[b, z] == pytest.approx(brute_zone_penalty(penalty, zr, vr, z) if z else 0.0, abs=1e-12)
    # no participant <=> no penalty (every term is positive once it counts)
    assert np.array_equal(part.any(axis=1), penalty(zone, value) > 0)
    total, by_zone = penalty.with_zones(zone, value)  # both at once: the same numbers
    assert np.array_equal(total, penalty(zone, value)) and np.array_equal(by_zone, brk)


def test_null_value_and_zone_zero_never_count():
    p = salp_penalty()
    zone = np.array([[0, 0, 0, 1, 1, 1]])
    value = np.array([[1, 1, 1, 0, 0, 0]])
    assert p(zone, value)[0] == 0.0
    assert not p.participants(zone, value).any()


def test_hand_computed_value_with_stacked_rules():
    p = salp_penalty()
    # three A robots in the reef (two rules cover it), two B robots in the bay (no B rule there)
    zone = np.array([[1, 1, 1, 2, 2]])
    value = np.array([[1, 1, 1, 2, 2]])
    expected = 2.0 * math.log(1 + 1.0 * 2) + 0.5 * math.log(1 + 2.0 * 2)
    assert p(zone, value)[0] == pytest.approx(expected)
    assert p.participants(zone, value)[0].tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(p.zone_breakdown(zone, value)[0], [0.0, expected, 0.0])


def test_min_count_three_ignores_pairs():
    p = salp_penalty(min_count=3)
    zone, value = np.array([[1, 1, 2, 2, 2]]), np.array([[1, 1, 1, 1, 1]])
    assert p(zone, value)[0] == pytest.approx(2.0 * math.log(3))
    assert p.participants(zone, value)[0].tolist() == [False, False, True, True, True]


def test_term_values_and_cell_table_agree():
    p = salp_penalty()
    n = np.arange(7)
    table = p.cell_table(6)
    g = p.term_values(n[:, None])  # broadcasts over the terms
    for t in range(p.n_terms):
        direct = p.term_weight[t] * np.log1p(p.term_sensitivity[t] * np.maximum(n - 1, 0))
        assert np.allclose(g[:, t], np.where(n >= 2, direct, 0))
    reef_a = g[:, (p.term_zone == 1) & (p.term_value == 1)].sum(axis=1)
    np.testing.assert_allclose(table[1, 1, :7], reef_a)
    assert np.all(table[0] == 0) and np.all(table[:, 0] == 0)


def test_max_penalty_is_the_maximum_over_all_placements():
    p = salp_penalty()
    cells = [(z, v) for z in range(p.n_zones + 1) for v in range(p.n_values)]
    for n in range(0, 6):
        best = 0.0
        if n:
            combos = np.array(list(itertools.product(range(len(cells)), repeat=n)))
            zone = np.array([[cells[c][0] for c in row] for row in combos])
            value = np.array([[cells[c][1] for c in row] for row in combos])
            best = p(zone, value).max()
        assert p.max_penalty(n) == pytest.approx(best, abs=1e-12), n
    assert p.max_penalty(200) >= p.max_penalty(100) > 0


def test_no_rules_means_no_penalty():
    p = NSEPenalty([], ("a",), SALP)
    zone, value = np.ones((2, 4), dtype=int), np.ones((2, 4), dtype=int)
    assert np.all(p(zone, value) == 0) and not p.participants(zone, value).any()
    assert p.max_penalty(10) == 0.0


def test_from_world_uses_the_maps_rules():
    world = load_map(MAPS / "salp" / "salp-1.map")
    feature = get_domain("salp").dynamic_feature
    p = NSEPenalty.from_world(world, feature)
    assert p.min_count == world.min_count and p.zone_names == world.zone_names
    assert p.n_terms == sum(len(world.zone_names) if r.zone is None else 1 for r in world.rules)
    rng = np.random.default_rng(3)
    zone = rng.integers(0, len(world.zone_names) + 1, size=(20, 6))
    value = rng.integers(0, len(feature.values), size=(20, 6))
    np.testing.assert_allclose(p(zone, value), [brute_penalty(p, z, v) for z, v in zip(zone.tolist(), value.tolist())])


def test_large_batch_is_vectorised():
    p = salp_penalty()
    rng = np.random.default_rng(0)
    zone, value = rng.integers(0, 3, size=(2000, 1000)), rng.integers(0, 3, size=(2000, 1000))
    r = p(zone, value)
    assert r.shape == (2000,) and np.all(r > 0)
    assert np.all(r <= p.max_penalty(1000) + 1e-9)


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, match", [
    (NSERule("nowhere", "sample", "A", 1.0, 1.0), "unknown zone 'nowhere'"),
    (NSERule(None, "sample", "C", 1.0, 1.0), "unknown value 'C'"),
    (NSERule(None, "sample", "none", 1.0, 1.0), "unknown value 'none'"),
    (NSERule(None, "shelf", "A", 1.0, 1.0), "names feature 'shelf'"),
    (NSERule(None, "sample", "A", 0.0, 1.0), "weight must be positive"),
    (NSERule(None, "sample", "A", -1.0, 1.0), "weight must be positive"),
    (NSERule(None, "sample", "A", 1.0, 0.0), "sensitivity must be positive"),
    (NSERule(None, "sample", "A", 1.0, float("nan")), "sensitivity must be positive"),
    (NSERule(None, "sample", "A", float("inf"), 1.0), "weight must be positive"),
])
def test_bad_rules_are_refused(rule, match):
    with pytest.raises(ValueError, match=match):
        NSEPenalty([rule], ("reef", "bay"), SALP)


@pytest.mark.parametrize("min_count", [1, 0, -2, 2.5, True])
def test_bad_min_count_is_refused(min_count):
    with pytest.raises(ValueError, match="min_count"):
        salp_penalty(min_count=min_count)


def test_static_feature_is_refused():
    with pytest.raises(ValueError, match="dynamic global"):
        NSEPenalty([], ("reef",), Feature("coral", "static_global", ("none", "reef")))


@pytest.mark.parametrize("zone, value, match", [
    (np.zeros((2, 3), int), np.zeros((2, 4), int), "same shape"),
    (np.zeros(3, int), np.zeros(3, int), r"\(B, n\) batches"),
    (np.full((1, 3), 3), np.zeros((1, 3), int), "zone index out of range: found 3, valid 0..2"),
    (np.full((1, 3), -1), np.zeros((1, 3), int), "zone index out of range: found -1"),
    (np.zeros((1, 3), int), np.full((1, 3), 3), "value index out of range: found 3, valid 0..2"),
    (np.zeros((1, 3)), np.zeros((1, 3), int), "integer array"),
])
def test_bad_state_arrays_are_refused(zone, value, match):
    p = salp_penalty()
    for method in (p.__call__, p.counts, p.participants, p.zone_breakdown):
        with pytest.raises(ValueError, match=match):
            method(zone, value)


def test_bad_count_shapes_are_refused():
    p = salp_penalty()
    with pytest.raises(ValueError, match="counts must have shape"):
        p.from_counts(np.zeros((2, 2, 3), int))
    with pytest.raises(ValueError, match="last axis"):
        p.term_values(np.zeros((4, 2), int))
