"""Blame methods (docs/FORMULATION.md sections 5 and 7) against their definitions evaluated by brute force."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metareasoner.blame import (
    MAX_ENUMERATION_AGENTS,
    BlameMethod,
    CounterfactualBlame,
    DifferenceReward,
    DPlusPlus,
    ExchangeValue,
    ExchangeValueFromLogs,
    ShapleyBlame,
    WonderfulLifeUtility,
    counterfactual_penalties,
    shapley_closed_form,
    shapley_enumeration,
    shapley_sampling,
)
from test_penalty import brute_participants, brute_penalty, instances, salp_penalty


def generic(penalty):
    """The same penalty as a plain callable, to drive the re-evaluation paths."""
    return lambda zone, value: penalty(zone, value)


def with_value(row, i, v):
    row = list(row)
    row[i] = v
    return row


@st.composite
def instances_with_valid(draw, max_agents=7):
    penalty, zone, value = draw(instances(max_agents=max_agents))
    seed = draw(st.integers(0, 2**32 - 1))
    valid = np.random.default_rng(seed).random((*zone.shape, penalty.n_values)) < draw(st.floats(0.0, 1.0))
    return penalty, zone, value, valid


def brute_recon(penalty, zone, value, valid, eps=1e-6):
    out = np.zeros(zone.shape)
    for b, (zr, vr) in enumerate(zip(zone.tolist(), value.tolist())):
        total = brute_penalty(penalty, zr, vr)
        part = brute_participants(penalty, zr, vr)
        saving = []
        for i in range(len(zr)):
            options = [v for v in range(penalty.n_values) if valid[b, i, v] or v == vr[i]]
            saving.append(total - min(brute_penalty(penalty, zr, with_value(vr, i, v)) for v in options))
        den = sum(d + eps for d, p in zip(saving, part) if p)
        for i in range(len(zr)):
            if part[i]:
                out[b, i] = total * (saving[i] + eps) / den
    return out


# -- RECON --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(instances_with_valid())
def test_recon_blame_properties(inst):
    penalty, zone, value, valid = inst
    blame = CounterfactualBlame().blame(penalty, zone, value, valid)
    total = penalty(zone, value)
    part = penalty.participants(zone, value)
    assert blame.shape == zone.shape
    assert np.all(blame >= 0)
    np.testing.assert_allclose(blame.sum(axis=1), total, rtol=1e-9, atol=1e-12)  # efficiency
    assert np.all(blame[total == 0] == 0)
    assert np.all(blame[~part] == 0)
    # a participant that could lower the penalty is blamed at least as much as one that could not
    _, saving, _ = CounterfactualBlame().savings(penalty, zone, value, valid)
    for b in range(zone.shape[0]):
        helpers = part[b] & (saving[b] > 1e-12)
        stuck = part[b] & (saving[b] <= 1e-12)
        if helpers.any() and stuck.any():
            assert blame[b, helpers].min() >= blame[b, stuck].max()


@settings(max_examples=100, deadline=None)
@given(instances_with_valid())
def test_recon_blame_matches_the_formula_by_brute_force(inst):
    penalty, zone, value, valid = inst
    np.testing.assert_allclose(CounterfactualBlame().blame(penalty, zone, value, valid),
                               brute_recon(penalty, zone, value, valid), rtol=1e-9, atol=1e-12)


def test_recon_splits_evenly_when_nobody_can_help_alone():
    p = salp_penalty()
    zone, value = np.array([[1, 1, 1, 2]]), np.array([[1, 1, 1, 1]])
    blame = CounterfactualBlame().blame(p, zone, value, valid=np.zeros((1, 4, 3), bool))
    total = p(zone, value)[0]
    np.testing.assert_allclose(blame[0], [total / 3] * 3 + [0.0])


def test_recon_blames_the_robot_that_could_have_switched():
    p = salp_penalty()
    zone, value = np.array([[2, 2]]), np.array([[1, 1]])
    valid = np.zeros((1, 2, 3), bool)
    valid[0, 1, 0] = True  # only robot 1 could have carried nothing
    blame = CounterfactualBlame().blame(p, zone, value, valid)[0]
    assert blame[1] > 1e3 * blame[0] and blame.sum() == pytest.approx(p(zone, value)[0])


def test_recon_default_valid_means_every_value_is_reachable():
    p = salp_penalty()
    rng = np.random.default_rng(1)
    zone, value = rng.integers(0, 3, (30, 6)), rng.integers(0, 3, (30, 6))
    np.testing.assert_allclose(CounterfactualBlame().blame(p, zone, value),
                               CounterfactualBlame().blame(p, zone, value, np.ones((30, 6, 3), bool)))
    # a mask shared by all states broadcasts
    per_robot = rng.random((6, 3)) < 0.5
    np.testing.assert_allclose(CounterfactualBlame().blame(p, zone, value, per_robot),
                               CounterfactualBlame().blame(p, zone, value, np.broadcast_to(per_robot, (30, 6, 3))))


def test_recon_refuses_bad_arguments():
    p = salp_penalty()
    zone, value = np.ones((1, 3), int), np.ones((1, 3), int)
    with pytest.raises(ValueError, match="broadcastable"):
        CounterfactualBlame().blame(p, zone, value, np.ones((1, 3, 2), bool))
    with pytest.raises(ValueError, match="bool"):
        CounterfactualBlame().blame(p, zone, value, np.ones((1, 3, 3), int))
    with pytest.raises(ValueError, match="eps"):
        CounterfactualBlame(eps=0).blame(p, zone, value)
    with pytest.raises(TypeError, match="NSEPenalty"):
        CounterfactualBlame().blame(generic(p), zone, value)


@settings(max_examples=100, deadline=None)
@given(instances())
def test_counterfactual_penalties_equal_re_evaluation(inst):
    penalty, zone, value = inst
    cf = counterfactual_penalties(penalty, zone, value)
    B, n = zone.shape
    assert cf.shape == (B, n, penalty.n_values)
    for b, (zr, vr) in enumerate(zip(zone.tolist(), value.tolist())):
        for i in range(n):
            for v in range(penalty.n_values):
                assert cf[b, i, v] == pytest.approx(brute_penalty(penalty, zr, with_value(vr, i, v)), abs=1e-12)
    np.testing.assert_allclose(counterfactual_penalties(generic(penalty), zone, value, penalty.n_values), cf,
                               atol=1e-12)


# -- difference reward, wonderful life utility, D++ ---------------------------------------------


@settings(max_examples=100, deadline=None)
@given(instances(), st.integers(1, 4))
def test_dr_wlu_dpp_match_brute_force(inst, K):
    penalty, zone, value = inst
    dr = DifferenceReward().blame(penalty, zone, value)
    wlu = WonderfulLifeUtility().blame(penalty, zone, value)
    dpp = DPlusPlus(max_copies=K).blame(penalty, zone, value)
    for b, (zr, vr) in enumerate(zip(zone.tolist(), value.tolist())):
        total = brute_penalty(penalty, zr, vr)
        for i in range(len(zr)):
            assert dr[b, i] == pytest.approx(total - brute_penalty(penalty, zr, with_value(vr, i, 0)), abs=1e-12)
            removed = brute_penalty(penalty, zr[:i] + zr[i + 1:], vr[:i] + vr[i + 1:])
            assert wlu[b, i] == pytest.approx(total - removed, abs=1e-12)
            per_copy = [(brute_penalty(penalty, zr + [zr[i]] * k, vr + [vr[i]] * k) - total) / k
                        for k in range(1, K + 1)]
            assert dpp[b, i] == pytest.approx(max(per_copy), abs=1e-12)
    # for the count penalty a null robot does not count, so removal and nulling agree
    np.testing.assert_allclose(wlu, dr, atol=1e-12)
    for method in (DifferenceReward(), WonderfulLifeUtility(), DPlusPlus(max_copies=K)):
        np.testing.assert_allclose(method.blame(generic(penalty), zone, value), method.blame(penalty, zone, value),
                                   atol=1e-12)


def test_wlu_differs_from_dr_when_presence_itself_matters():
    def crowd(zone, value):  # counts every robot present, null or not
        return (zone.shape[1] ** 2 + value.sum(axis=1)).astype(float)

    zone, value = np.zeros((1, 3), int), np.array([[1, 0, 2]])
    dr = DifferenceReward().blame(crowd, zone, value)
    wlu = WonderfulLifeUtility().blame(crowd, zone, value)
    np.testing.assert_allclose(dr, [[1, 0, 2]])
    np.testing.assert_allclose(wlu, [[9 - 4 + 1, 9 - 4, 9 - 4 + 2]])


def test_dpp_sees_what_dr_misses():
    p = salp_penalty()
    zone, value = np.array([[1, 2]]), np.array([[1, 0]])  # a lone A robot in the reef
    assert DifferenceReward().blame(p, zone, value)[0, 0] == 0
    dpp = DPlusPlus(max_copies=3).blame(p, zone, value)[0]
    reef_a = p.cell_table(4)[1, 1]
    assert dpp[0] == pytest.approx(max(reef_a[1 + k] / k for k in (1, 2, 3))) and dpp[0] > 0
    assert dpp[1] == 0
    # with min_count 3 one copy triggers nothing; two copies do, and D++ is per copy
    p3 = salp_penalty(min_count=3)
    g = p3.cell_table(4)[1, 1]
    assert DPlusPlus(max_copies=1).blame(p3, zone, value)[0, 0] == 0
    assert DPlusPlus(max_copies=2).blame(p3, zone, value)[0, 0] == pytest.approx(g[3] / 2) and g[3] > 0
    with pytest.raises(ValueError, match="max_copies"):
        DPlusPlus(max_copies=0).blame(p, zone, value)


# -- Shapley ------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(instances(max_agents=7))
def test_shapley_closed_form_equals_enumeration(inst):
    penalty, zone, value = inst
    closed = shapley_closed_form(penalty, zone, value)
    np.testing.assert_allclose(closed, shapley_enumeration(penalty, zone, value), atol=1e-10)
    np.testing.assert_allclose(closed, shapley_enumeration(generic(penalty), zone, value), atol=1e-10)
    np.testing.assert_allclose(closed.sum(axis=1), penalty(zone, value), atol=1e-10)  # efficiency
    assert np.all(closed[~penalty.participants(zone, value)] == 0)
    np.testing.assert_allclose(ShapleyBlame().blame(penalty, zone, value), closed)


def table_game(values_by_coalition: dict):
    """A penalty callable for an arbitrary game: value 1 = present, 0 = nulled."""
    def f(zone, value):
        return np.array([values_by_coalition[tuple(np.nonzero(row)[0])] for row in value], dtype=float)
    return f


def test_shapley_enumeration_on_the_papers_example():
    # paper 000, Example A.2: v({1}) = 2, v({2}) = 4, v({1, 2}) = 10 -> Shapley values 4 and 6
    game = table_game({(): 0.0, (0,): 2.0, (1,): 4.0, (0, 1): 10.0})
    np.testing.assert_allclose(shapley_enumeration(game, np.zeros((1, 2), int), np.ones((1, 2), int)), [[4.0, 6.0]])


def non_symmetric(zone, value):
    """A penalty with no closed form: robots interact with different strengths."""
    w = np.arange(1, value.shape[1] + 1, dtype=float)
    present = (value > 0).astype(float)
    return (present @ w) ** 1.5 / 3 + present[:, 0] * present[:, -1] * 4.0 + (present * zone).sum(axis=1) ** 2 / 5


def test_shapley_sampling_converges_to_the_exact_value():
    rng = np.random.default_rng(5)
    zone, value = rng.integers(0, 3, (4, 7)), rng.integers(1, 3, (4, 7))
    exact = shapley_enumeration(non_symmetric, zone, value)
    np.testing.assert_allclose(exact.sum(axis=1), non_symmetric(zone, value), rtol=1e-9)
    errors = []
    for P in (50, 3200):
        est, se = shapley_sampling(non_symmetric, zone, value, n_permutations=P, seed=11)
        assert np.all(np.abs(est - exact) <= 5 * se + 1e-9)
        np.testing.assert_allclose(est.sum(axis=1), non_symmetric(zone, value), rtol=1e-9)  # per order, exact
        errors.append(np.sqrt(np.mean((est - exact) ** 2)))
    assert errors[1] < errors[0] / 3
    # seeded: the same seed gives the same estimate
    a = shapley_sampling(non_symmetric, zone, value, 100, seed=3)[0]
    np.testing.assert_array_equal(a, shapley_sampling(non_symmetric, zone, value, 100, seed=3)[0])


def test_shapley_sampling_handles_many_robots():
    p = salp_penalty()
    rng = np.random.default_rng(2)
    zone, value = rng.integers(0, 3, (2, 40)), rng.integers(0, 3, (2, 40))
    est, se = shapley_sampling(generic(p), zone, value, n_permutations=400, seed=0)
    exact = shapley_closed_form(p, zone, value)
    assert np.all(np.abs(est - exact) <= 5 * se + 1e-9)
    assert ShapleyBlame(n_permutations=50).resolve_method(generic(p), 40) == "sampling"
    assert ShapleyBlame().resolve_method(generic(p), 5) == "enumeration"
    assert ShapleyBlame().resolve_method(p, 40) == "closed_form"


def test_shapley_refusals():
    p = salp_penalty()
    n = MAX_ENUMERATION_AGENTS + 1
    zone, value = np.ones((1, n), int), np.ones((1, n), int)
    with pytest.raises(ValueError, match="above the limit"):
        ShapleyBlame(method="enumeration").blame(p, zone, value)
    with pytest.raises(ValueError, match="unknown Shapley method"):
        ShapleyBlame(method="exact").blame(p, zone, value)
    with pytest.raises(ValueError, match="n_permutations"):
        shapley_sampling(p, zone, value, n_permutations=1)
    with pytest.raises(TypeError, match="NSEPenalty"):
        ShapleyBlame(method="closed_form").blame(generic(p), zone, value)


# -- exchange values ----------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(instances(max_agents=7))
def test_exchange_value_matches_its_definition(inst):
    penalty, zone, value = inst
    if zone.shape[1] < 2:
        with pytest.raises(ValueError, match="no one to exchange with"):
            ExchangeValue().blame(penalty, zone, value)
        return
    ev = ExchangeValue().blame(penalty, zone, value)
    for b, (zr, vr) in enumerate(zip(zone.tolist(), value.tolist())):
        total = brute_penalty(penalty, zr, vr)
        n = len(zr)
        for i in range(n):
            swaps = [total - brute_penalty(penalty, zr, with_value(vr, i, vr[j])) for j in range(n) if j != i]
            assert ev[b, i] == pytest.approx(sum(swaps) / (n - 1), abs=1e-12)
    np.testing.assert_allclose(ExchangeValue().blame(generic(penalty), zone, value), ev, atol=1e-12)


def test_single_robot_exchange_value_raises():
    with pytest.raises(ValueError, match="no one to exchange with"):
        ExchangeValue().blame(salp_penalty(), np.ones((3, 1), int), np.ones((3, 1), int))


def test_exchange_value_sign():
    p = salp_penalty()
    # two A robots in the bay, one robot carrying nothing: swapping an A robot's value for
    # the empty robot's lowers the penalty, so the A robots get a positive EV
    ev = ExchangeValue().blame(p, np.array([[2, 2, 2]]), np.array([[1, 1, 0]]))[0]
    assert ev[0] == ev[1] > 0 > ev[2]


# -- exchange values from logs ----------------------------------------------------------------


def additive_logs(contrib: dict, groups):
    groups = [list(g) for g in groups]
    return groups, [sum(contrib[r] for r in g) for g in groups]


def test_logs_full_dataset_recovers_additive_exchange_values():
    rng = np.random.default_rng(0)
    robots = [f"r{k}" for k in range(8)]
    contrib = dict(zip(robots, rng.permutation(8).astype(float) * 1.5))
    groups, scores = additive_logs(contrib, itertools.combinations(robots, 3))
    est = ExchangeValueFromLogs().fit(groups, scores, robots)
    a = np.array([contrib[r] for r in robots])
    expected = a - (a.sum() - a) / (len(a) - 1)  # paper 000: v_i minus the mean of the others
    np.testing.assert_allclose(est.predict(), expected, atol=1e-9)
    assert list(np.argsort(est.predict())) == list(np.argsort(a))
    assert set(est.source_) == {"pairs"} and est.unestimated_ == ()
    np.testing.assert_allclose(est.predict(["r3", "r0"]), expected[[3, 0]])


def test_logs_repeated_noisy_groups_are_averaged():
    robots = ["a", "b", "c", "d"]
    contrib = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
    groups, scores = additive_logs(contrib, itertools.combinations(robots, 2))
    noise = [0.5, -0.5]
    groups2 = groups + groups
    scores2 = [s + noise[0] for s in scores] + [s + noise[1] for s in scores]
    np.testing.assert_allclose(ExchangeValueFromLogs(min_pairs=1).fit(groups2, scores2, robots).predict(),
                               ExchangeValueFromLogs(min_pairs=1).fit(groups, scores, robots).predict())


def test_logs_sparse_data_uses_ev_clustering_and_keeps_the_ranking():
    rng = np.random.default_rng(4)
    types = np.repeat([0.0, 2.0, 5.0], 10)
    contrib_values = types + rng.normal(0, 0.1, size=30)
    robots = [f"r{k}" for k in range(30)]
    contrib = dict(zip(robots, contrib_values))
    groups = [list(rng.choice(robots, size=3, replace=False)) for _ in range(60)]
    assert {r for g in groups for r in g} == set(robots)
    groups, scores = additive_logs(contrib, groups)
    scores = [s + rng.normal(0, 0.3) for s in scores]
    est = ExchangeValueFromLogs(n_clusters=3, seed=0).fit(groups, scores, robots)
    ev = est.predict()
    assert np.all(np.isfinite(ev))
    assert (est.source_ == "cluster").sum() >= 20  # pairs are rare in these logs
    by_type = [ev[types == t] for t in (0.0, 2.0, 5.0)]
    assert by_type[0].max() < by_type[1].min() and by_type[1].max() < by_type[2].min()
    # clusters follow the hidden types
    for t in (0.0, 2.0, 5.0):
        sel = (types == t) & (est.source_ == "cluster")
        assert len(set(est.clusters_[sel])) == 1
    # without clustering the rare pairs leave most robots unestimated, reported not zeroed
    with pytest.warns(RuntimeWarning, match="no usable comparisons"):
        bare = ExchangeValueFromLogs(clustering="never").fit(groups, scores, robots)
    assert len(bare.unestimated_) > 0 and np.all(np.isnan(bare.predict(list(bare.unestimated_))))


def test_logs_robot_never_logged_is_reported():
    robots = ["a", "b", "c", "ghost"]
    groups, scores = additive_logs({"a": 0, "b": 1, "c": 3}, itertools.combinations("abc", 2))
    with pytest.warns(RuntimeWarning, match="ghost"):
        est = ExchangeValueFromLogs(min_pairs=1).fit(groups, scores, robots)
    assert est.unestimated_ == ("ghost",)
    assert np.isnan(est.predict(["ghost"])[0]) and np.all(np.isfinite(est.predict(["a", "b", "c"])))


@pytest.mark.parametrize("groups, scores, robots, match", [
    ([["a", "zed"]], [1.0], ["a", "b"], "robot 'zed'"),
    ([["a", "a"]], [1.0], ["a", "b"], "twice"),
    ([["a"], ["b"]], [1.0], ["a", "b"], "one score per group"),
    ([["a"]], [1.0], ["a"], "1 robot"),
    ([["a"], ["a", "b"]], [1.0, float("nan")], ["a", "b"], "finite"),
    ([[]], [1.0], ["a", "b"], "empty"),
    ([], [], ["a", "b"], "no logs"),
    ([["a"]], [1.0], ["a", "b", "a"], "duplicates"),
])
def test_logs_errors(groups, scores, robots, match):
    with pytest.raises(ValueError, match=match):
        ExchangeValueFromLogs().fit(groups, scores, robots)


def test_logs_predict_errors():
    with pytest.raises(RuntimeError, match="fit"):
        ExchangeValueFromLogs().predict()
    est = ExchangeValueFromLogs(min_pairs=1).fit([["a"], ["b"]], [1.0, 2.0], ["a", "b"])
    with pytest.raises(ValueError, match="'c'"):
        est.predict(["c"])
    with pytest.raises(ValueError, match="clustering"):
        ExchangeValueFromLogs(clustering="sometimes").fit([["a"], ["b"]], [1.0, 2.0], ["a", "b"])


# -- the interface and scale ----------------------------------------------------------------------


def test_parameters_are_the_constructor_arguments():
    m = ShapleyBlame(method="sampling", n_permutations=20, seed=4)
    assert m.get_params() == {"method": "sampling", "n_permutations": 20, "seed": 4, "enumeration_limit": 10}
    assert "n_permutations=20" in repr(m)
    assert m.set_params(seed=5).seed == 5
    with pytest.raises(ValueError, match="Invalid parameter 'speed'"):
        m.set_params(speed=1)
    assert ExchangeValueFromLogs(min_pairs=2).get_params()["min_pairs"] == 2
    for cls in (CounterfactualBlame, DifferenceReward, WonderfulLifeUtility, DPlusPlus, ShapleyBlame, ExchangeValue):
        assert issubclass(cls, BlameMethod)
        assert type(cls()).__name__ in repr(cls())


def test_blame_does_not_change_the_method_or_inputs():
    p = salp_penalty()
    rng = np.random.default_rng(0)
    zone, value = rng.integers(0, 3, (5, 6)), rng.integers(0, 3, (5, 6))
    z0, v0 = zone.copy(), value.copy()
    for m in (CounterfactualBlame(), DifferenceReward(), WonderfulLifeUtility(), DPlusPlus(), ShapleyBlame(),
              ExchangeValue()):
        before = dict(vars(m))
        first = m.blame(p, zone, value)
        np.testing.assert_array_equal(first, m.blame(p, zone, value))
        assert vars(m) == before
    assert np.array_equal(zone, z0) and np.array_equal(value, v0)


def test_a_thousand_robots_over_many_states():
    p = salp_penalty()
    rng = np.random.default_rng(0)
    zone, value = rng.integers(0, 3, (1000, 1000)), rng.integers(0, 3, (1000, 1000))
    valid = rng.random((1000, 1000, 3)) < 0.7
    start = time.perf_counter()
    blame = CounterfactualBlame().blame(p, zone, value, valid)
    for m in (DifferenceReward(), DPlusPlus(), ShapleyBlame(), ExchangeValue()):
        assert m.blame(p, zone, value).shape == (1000, 1000)
    assert time.perf_counter() - start < 30  # vectorised: a Python loop over robots would take far longer
    np.testing.assert_allclose(blame.sum(axis=1), p(zone, value))
