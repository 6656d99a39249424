"""Behaviour-level shortcuts equal the robot-level computation (issue 14): robots with one MDP
and one policy are one behaviour, and what the exact monitor does once per behaviour gives
what doing it robot by robot gives."""
from __future__ import annotations

import numpy as np
import pytest

from metareasoner.mitigation import Fleet
from metareasoner import monitor
from metareasoner.monitor import FleetCounts, _exact_nse_rate, cell_occupancy, poisson_binomial
from metareasoner.penalty import NSEPenalty
from planner.maps import load_map
from planner.problem import Feature
from planner.scenario import generate_scenario
from planner.world import NSERule
from conftest import MAPS


def _penalty() -> NSEPenalty:
    feature = Feature("load", "dynamic_global", ("none", "a", "b"))
    rules = [NSERule("z1", "load", "a", 2.0, 0.5), NSERule(None, "load", "b", 1.0, 3.0)]
    return NSEPenalty(rules, ["z1", "z2"], feature)


def _fleet_occupancy(rng, n: int, kinds: int, steps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(n, T, 3, 3) occupancies of `kinds` behaviours; every robot in cell (1, a) at t = 0, so
    that count's mean is n and a window much narrower than 0..n holds it."""
    base = rng.dirichlet(np.full(9, 0.3), size=(kinds, steps)).reshape(kinds, steps, 3, 3)
    base[:, 0] = 0.0
    base[:, 0, 1, 1] = 1.0
    kind = rng.integers(kinds, size=n)
    return base[kind], kind


def _reference(p: np.ndarray, table: np.ndarray, leave_out: int | None = None, increment: bool = False):
    """(T, C) E[f_c(N_c(t))] from the pmf by the recursion over robots (no transform)."""
    if leave_out is not None:
        p = np.delete(p, leave_out, axis=0)
    pmf = poisson_binomial(p)  # (m + 1, T, C)
    m = pmf.shape[0]
    f = table[:, 1 : m + 1] - table[:, :m] if increment else table[:, :m]
    return np.einsum("ktc,ck->tc", pmf, f)


def test_windowed_counts_equal_the_recursion_for_a_large_fleet():
    rng = np.random.default_rng(4)
    n = 400
    occ, kind = _fleet_occupancy(rng, n, kinds=6)
    counts = FleetCounts(_penalty(), occ, keys=kind.tolist())
    assert counts.L < n + 2  # the windows are in use, not the whole range of counts
    assert counts.expected() == pytest.approx(_reference(counts.p, counts._table), abs=1e-9)
    for i in (0, 7):
        assert counts.marginal(i) == pytest.approx(_reference(counts.p, counts._table, i, True), abs=1e-9)
    for _ in range(30):  # swaps move means: windows re-centre (or L grows) as needed
        i = int(rng.integers(n))
        new = rng.dirichlet(np.full(9, 0.3), size=occ.shape[1]).reshape(occ.shape[1], 3, 3)
        p_new = counts.cell_probabilities(new)
        before, predicted = counts.total(), counts.change(i, p_new)
        counts.swap(i, p_new)
        exact = _reference(counts.p, counts._table).sum()
        assert counts.total() == pytest.approx(exact, abs=1e-9)
        assert before + predicted == pytest.approx(exact, abs=1e-9)


def test_nse_rate_per_behaviour_equals_robot_by_robot():
    rng = np.random.default_rng(5)
    occ, kind = _fleet_occupancy(rng, 120, kinds=4)
    cells = np.argwhere(_penalty().cell_has_term)
    one_by_one = _exact_nse_rate(occ, cells, 2)
    assert _exact_nse_rate(occ, cells, 2, kind) == pytest.approx(one_by_one, abs=1e-12)
    assert _exact_nse_rate(occ, cells, 3, kind) == pytest.approx(_exact_nse_rate(occ, cells, 3), abs=1e-12)


def test_fleet_occupancy_per_behaviour_equals_each_robots_own():
    fleet = Fleet.plan(generate_scenario(load_map(MAPS / "salp/salp-1.map"), 40, seed=3), backend="serial")
    policies = [p.policy for p in fleet.plans]
    policies[5] = policies[5].copy()  # an equal policy in another array: the same behaviour
    assert len(set(fleet.behaviour_keys(policies))) < len(policies)
    shared = fleet.occupancy(policies)
    alone = np.stack([cell_occupancy(fleet.models(policies)[i:i + 1], fleet.horizon,
                                     fleet.n_zones, fleet.n_values)[0] for i in range(len(policies))])
    np.testing.assert_array_equal(shared, alone)
    report, counts = fleet.exact_and_counts(policies)
    robot_level = FleetCounts(fleet.penalty, alone)  # no keys: one behaviour per robot
    assert report.total_penalty == pytest.approx(robot_level.total(), abs=1e-9)
    assert report.nse_state_rate == pytest.approx(_exact_nse_rate(alone, counts.cells, fleet.scenario.world.min_count),
                                                  abs=1e-12)


@pytest.mark.parametrize("refresh_every", [None, 10**6])  # the default, and the underflow guard alone
def test_many_swaps_keep_the_counts_exact(monkeypatch, refresh_every):
    """Swaps update the PGF by products (not a complex exp per swap); over 600 swaps (past two
    rebuilds, with columns whose PGF nears underflow) J_N, a change and a leave-one-out marginal
    stay those of counts built afresh from the same occupancies, and of the recursion."""
    if refresh_every is not None:
        monkeypatch.setattr(monitor, "REFRESH_EVERY", refresh_every)
    rng = np.random.default_rng(11)
    n = 300
    occ, kind = _fleet_occupancy(rng, n, kinds=4)
    occ[:, 1] = 0.0
    occ[:, 1, 1, 1] = occ[:, 1, 1, 0] = 0.5  # every robot in cell (1, a) with probability 1/2 at t = 1
    counts = FleetCounts(_penalty(), occ, keys=kind.tolist())
    assert any((bank.log_phi.real < -650).any() for bank in counts._banks)  # the underflow guard is exercised
    assert len({bank.L for bank in counts._banks}) > 1  # columns of narrow windows have fewer points
    points_before = counts._points_of(np.arange(counts.p[0].size))
    news = rng.dirichlet(np.full(9, 0.3), size=(5, occ.shape[1])).reshape(5, occ.shape[1], 3, 3)
    for step in range(600):
        i = int(rng.integers(n))
        b = int(rng.integers(5))
        counts.swap(i, counts.cell_probabilities(news[b]), key=("new", b))
        if step % 150 == 149:
            expected = _reference(counts.p, counts._table)
            assert counts.expected() == pytest.approx(expected, abs=1e-9, rel=1e-9)
    j = int(rng.integers(n))
    assert counts.marginal(j) == pytest.approx(_reference(counts.p, counts._table, j, True), abs=1e-9, rel=1e-9)
    p_new = counts.cell_probabilities(news[0])
    predicted = counts.total() + counts.change(j, p_new)
    counts.swap(j, p_new)
    assert predicted == pytest.approx(_reference(counts.p, counts._table).sum(), abs=1e-9, rel=1e-9)
    for bank in counts._banks:
        assert np.allclose(bank.phi, np.exp(bank.log_phi), rtol=1e-9, atol=1e-290)
    assert (counts._points_of(np.arange(counts.p[0].size)) > points_before).any()  # some columns outgrew their bank


@pytest.mark.parametrize("chunk", [None, 16])  # the default, and runs checked 16 swaps at a time
def test_a_run_of_one_behaviour_swaps_as_robot_by_robot(monkeypatch, chunk):
    """`swap_while_lowering` (a run of robots of one behaviour judged at once) accepts the robots
    that `change` then `swap` robot by robot accepts, and leaves the same J_N, including a run
    long enough to move the counts' windows (it then swaps one robot alone to re-centre them)."""
    import copy

    if chunk is not None:
        monkeypatch.setattr(monitor, "RUN_CHUNK", chunk)
    rng = np.random.default_rng(5)
    n = 400
    occ, kind = _fleet_occupancy(rng, n, kinds=3)
    members = np.flatnonzero(kind == kind[0])
    away = occ[members[0]].copy()
    away[0] = 0.0
    away[0, 0, 0] = 1.0  # out of the cell every robot is in at t = 0: that count's window must move
    for label, target in (("away from the crowd", away), ("towards the others", occ[np.flatnonzero(kind != kind[0])[0]]),
                          ("random", rng.dirichlet(np.full(9, 0.3), size=occ.shape[1]).reshape(occ.shape[1], 3, 3))):
        counts = FleetCounts(_penalty(), occ, keys=kind.tolist())
        p_new = counts.cell_probabilities(target)
        reference = copy.deepcopy(counts)
        threshold = 1e-9 * max(1.0, counts.total())
        expected = 0
        for i in members:
            if not reference.change(int(i), p_new) < -threshold:
                break
            reference.swap(int(i), p_new, ("new", label))
            expected += 1
        taken = counts.swap_while_lowering(members.tolist(), p_new, ("new", label), threshold, len(members))
        assert taken == expected, label
        assert counts.total() == pytest.approx(reference.total(), rel=1e-10, abs=1e-10), label
        assert counts.total() == pytest.approx(_reference(counts.p, counts._table).sum(), rel=1e-9, abs=1e-9)
        limited = FleetCounts(_penalty(), occ, keys=kind.tolist())
        assert limited.swap_while_lowering(members.tolist(), p_new, ("new", label), threshold, 3) == min(3, expected)
        alone = FleetCounts(_penalty(), occ, keys=kind.tolist())  # one robot: judged without a second swap's ratio
        assert alone.swap_while_lowering(members[:1].tolist(), p_new, ("new", label), threshold, 1) == min(1, expected)
        assert alone.total() == pytest.approx(_reference(alone.p, alone._table).sum(), rel=1e-9, abs=1e-9)
