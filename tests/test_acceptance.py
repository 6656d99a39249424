"""Never worse (docs/FORMULATION.md 10): the incremental exact J_N, the acceptance step, exact best response,
and the invariants every method keeps (J_N after <= before; regret from the start <= budget)."""
from __future__ import annotations

import numpy as np
import pytest

from metareasoner.mitigation import METHODS, Fleet, Mitigation
from metareasoner.monitor import FleetCounts, exact_monitor, monte_carlo_monitor
from planner.budget import start_regret
from planner.maps import load_map
from planner.scenario import generate_scenario
from conftest import MAPS

SAMPLE_MAPS = ("salp/salp-1.map", "overcooked/overcooked-2.map", "warehouse/warehouse-3.map")


@pytest.fixture(scope="module")
def fleets():
    return {name: Fleet.plan(generate_scenario(load_map(MAPS / name), 10, seed=2), backend="serial")
            for name in SAMPLE_MAPS}


@pytest.mark.parametrize("name", SAMPLE_MAPS)
def test_incremental_exact_penalty_equals_a_full_recompute(fleets, name):
    fleet = fleets[name]
    rng = np.random.default_rng(11)
    policies = [p.policy.copy() for p in fleet.plans]
    counts = fleet.counts(policies)
    assert counts.total() == pytest.approx(fleet.exact(policies).total_penalty, rel=1e-12)
    for _ in range(25):
        i = int(rng.integers(len(policies)))
        mdp = fleet.plans[i].mdp
        # a random policy that still mostly does the task: task-optimal with random changes
        new = policies[i].copy()
        flip = rng.random(mdp.n_states) < 0.2
        new[flip] = rng.integers(mdp.n_actions, size=int(flip.sum()))
        p_new = counts.cell_probabilities(fleet.robot_occupancy(i, new))
        predicted = counts.change(i, p_new)
        old = counts.total()
        counts.swap(i, p_new)
        policies[i] = new
        full = fleet.exact(policies).total_penalty
        assert counts.total() == pytest.approx(full, abs=1e-9)
        assert old + predicted == pytest.approx(full, abs=1e-9)


def test_a_fleet_keeps_its_last_joint_policy_apart_from_the_counts_it_hands_out(fleets):
    """`Fleet.exact_and_counts` keeps the last joint policy's report and counts: asked again for
    equal policies (other arrays) it gives the same numbers as a fresh build, whatever was swapped
    in the counts it handed out before; one fleet's mitigations are those of fresh fleets."""
    fleet = fleets["salp/salp-1.map"]
    policies = [p.policy for p in fleet.plans]
    report, counts = fleet.exact_and_counts(policies)
    fresh = FleetCounts(fleet.penalty, fleet.occupancy(policies), keys=fleet.behaviour_keys(policies))
    assert counts.total() == fresh.total() == report.total_penalty
    rng = np.random.default_rng(3)
    for i in range(3):  # the handed-out counts change
        new = policies[i].copy()
        new[rng.random(len(new)) < 0.3] = 0
        counts.swap(i, counts.cell_probabilities(fleet.robot_occupancy(i, new)))
    assert counts.total() != fresh.total()
    fleet.exact(policies[:1] + [np.zeros_like(p) for p in policies[1:]])  # another report, kept apart
    again_report, again = fleet.exact_and_counts([p.copy() for p in policies])
    assert again is not counts and again_report is report  # kept, though another report was asked for between
    assert again.total() == fresh.total()
    np.testing.assert_array_equal(again.expected(), fresh.expected())
    other = Fleet.plan(fleet.scenario, backend="serial")
    for method in ("recon", "gen-recon-cf", "best-response"):
        ours, theirs = (Mitigation(method=method, seed=1).run(f) for f in (fleet, other))
        other._joint = (None, None)  # the fresh fleet builds every time
        assert ours.before.total_penalty == theirs.before.total_penalty
        assert ours.after.total_penalty == theirs.after.total_penalty
        assert all(np.array_equal(a, b) for a, b in zip(ours.policies, theirs.policies))


def test_marginal_penalty_is_the_exact_contribution(fleets):
    fleet = fleets["salp/salp-1.map"]
    policies = [p.policy for p in fleet.plans]
    counts = fleet.counts(policies)
    for i in range(len(policies)):
        occ = fleet.occupancy(policies)
        without = FleetCounts(fleet.penalty, np.delete(occ, i, axis=0))
        assert counts.contribution(i) == pytest.approx(counts.total() - without.total(), abs=1e-9)


@pytest.mark.parametrize("name", SAMPLE_MAPS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_never_raises_the_penalty_and_keeps_every_budget(fleets, name, method):
    fleet = fleets[name]
    result = Mitigation(method=method, update_fraction=0.3, rounds=3, episodes=40, backend="serial").run(fleet)
    assert result.after.total_penalty <= result.before.total_penalty + 1e-9
    # the report after comes from the counts the run swapped robot by robot: a fresh evaluation
    # of the final policies must give it too
    fresh = exact_monitor(fleet.penalty, fleet.models(result.policies), fleet.horizon, fleet.n_zones,
                          fleet.n_values, fleet.scenario.world.min_count)
    assert result.after.total_penalty == pytest.approx(fresh.total_penalty, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(result.after.per_step, fresh.per_step, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.after.per_zone, fresh.per_zone, rtol=1e-9, atol=1e-12)
    assert result.after.nse_state_rate == pytest.approx(fresh.nse_state_rate, rel=1e-9, abs=1e-12)
    for robot, plan, policy in zip(result.robots, fleet.plans, result.policies):
        assert robot.slack == pytest.approx(0.10 * abs(plan.task_value))
        assert robot.task_regret <= robot.slack + 1e-6
        # the regret reported (kept from the replan's own search, or from the fleet's first
        # evaluation of the task policy) is a fresh evaluation's
        fresh = start_regret(plan.mdp, plan.task_solution, policy) if np.ndim(policy) == 1 else None
        if fresh is not None:
            assert robot.task_regret == pytest.approx(fresh if fresh > 1e-9 * max(1, abs(plan.task_value)) else 0.0,
                                                      rel=1e-12, abs=1e-12)
    levels = [result.before.total_penalty] + [r.nse for r in result.rounds]
    assert all(b <= a + 1e-9 for a, b in zip(levels, levels[1:]))
    if method != "naive" and result.before.total_penalty > 0:
        assert result.rounds, "a fleet with NSEs gets at least one round"


def test_acceptance_rejects_a_replan_that_raises_the_penalty(fleets):
    """A strategy that makes robots seek NSEs: every replan raises J_N, so none is kept."""
    from metareasoner.strategies import BestResponse, Proposal

    class SeekTrouble(BestResponse):
        def propose(self, context):
            proposal = super().propose(context)
            # the negated marginal as a cost: staying out of zones is penalised instead
            return Proposal(proposal.scores, lambda i: proposal.penalty(i).max() - proposal.penalty(i))

    fleet = fleets["overcooked/overcooked-2.map"]
    mitigation = Mitigation(method="best-response", update_fraction=0.5, rounds=2, backend="serial")
    mitigation.strategy = lambda: SeekTrouble(screening=1)
    result = mitigation.run(fleet)
    assert result.after.total_penalty == pytest.approx(result.before.total_penalty)
    assert result.updated == [] and result.rounds and not result.rounds[0].accepted
    assert all(r.task_regret == 0 for r in result.robots)


def test_best_response_descends_and_stops(fleets):
    for name, fleet in fleets.items():
        result = Mitigation(method="best-response", rounds=8, backend="serial").run(fleet)
        levels = [result.before.total_penalty] + [r.nse for r in result.rounds]
        assert all(b < a for a, b in zip(levels, levels[1:-1])), name  # each round with an acceptance lowers J_N
        assert levels[-1] <= levels[0]
        # it stopped for a reason: J_N 0, nothing accepted, or the round limit
        assert levels[-1] == 0 or not result.rounds[-1].accepted or len(result.rounds) == 8


def test_desired_outcomes_are_orders_and_reported_apart(fleets):
    from metareasoner.rules import DesiredOutcome

    fleet = fleets["salp/salp-1.map"]
    robot = fleet.plans[0].task.robot_id
    order = DesiredOutcome(robots=(robot,), zone=None, value="A", weight=50.0)
    result = Mitigation(method="recon", desired_outcomes=(order,), backend="serial").run(fleet)
    out = result.as_dict()
    assert out["nse_after_orders"] is not None
    assert out["nse_after"] <= out["nse_after_orders"] + 1e-9  # the method's own changes never raise J_N
    assert result.robots[0].task_regret <= result.robots[0].slack + 1e-6


def test_counterfactual_share_counts_blamed_pairs_with_a_valid_other_value(fleets):
    fleet = fleets["salp/salp-1.map"]
    result = Mitigation(method="recon", rounds=1, backend="serial").run(fleet)
    share = result.counterfactual_share
    assert share is not None and 0 < share <= 1
    _, visits = monte_carlo_monitor(fleet.penalty, fleet.models([p.policy for p in fleet.plans]), fleet.horizon,
                                    episodes=100, seed=0)
    n = len(fleet.plans)
    states, zone, value = (a.reshape(-1, n) for a in (visits.states, visits.zone, visits.value))
    total = fleet.penalty(zone, value)
    part = fleet.penalty.participants(zone, value)
    pairs = [(b, i) for b, i in zip(*np.nonzero(part)) if total[b] > 0]
    has = [any(fleet.valid_table(i)[states[b, i], v] for v in range(fleet.n_values) if v != value[b, i])
           for b, i in pairs]
    assert share == pytest.approx(np.mean(has))


def test_counterfactuals_exist_in_every_domain(fleets):
    """RECON's counterfactual neighbours are valid somewhere in every domain (the warehouse robot
    may carry its other shelf size first), so its blame is not an even split by construction."""
    for name, fleet in fleets.items():
        result = Mitigation(method="recon", rounds=1, backend="serial").run(fleet)
        assert result.counterfactual_share is not None and result.counterfactual_share > 0, name


@pytest.mark.parametrize("domain", ["salp", "overcooked", "warehouse"])
def test_every_method_on_a_generated_map(domain):
    from planner.generate import generate_map
    from planner.maps import load_map_text

    world = load_map_text(generate_map(domain, 1), source=f"<generated {domain} 1>")
    fleet = Fleet.plan(generate_scenario(world, 8, seed=0), backend="serial")
    for method in METHODS:
        result = Mitigation(method=method, rounds=2, episodes=30, backend="serial").run(fleet)
        assert result.after.total_penalty <= result.before.total_penalty + 1e-9, method
        assert all(r.task_regret <= r.slack + 1e-6 for r in result.robots), method


def test_a_fleet_keeps_its_last_rollouts_read_only(fleets):
    fleet = fleets["salp/salp-1.map"]
    policies = [p.policy for p in fleet.plans]
    visits = fleet.rollouts(policies, 20, 5)
    again = fleet.rollouts([p.copy() for p in policies], 20, 5)
    assert again is visits  # the same behaviours, episodes and seed
    with pytest.raises(ValueError):
        visits.states[0, 0, 0] = 1
    _, fresh = monte_carlo_monitor(fleet.penalty, fleet.models(policies), fleet.horizon, episodes=20, seed=5)
    np.testing.assert_array_equal(visits.states, fresh.states)
    np.testing.assert_array_equal(visits.penalty, fresh.penalty)
    other = fleet.rollouts(policies, 20, 6)
    assert other is not visits and not np.array_equal(other.states, visits.states)


def test_the_blame_of_shared_rollouts_is_computed_once_per_method_and_parameters(fleets):
    from metareasoner.blame import CounterfactualBlame
    from metareasoner.strategies import RoundContext

    fleet = fleets["warehouse/warehouse-3.map"]
    policies = [p.policy for p in fleet.plans]
    visits = fleet.rollouts(policies, 30, 2)
    contexts = [RoundContext(fleet, policies, fleet.counts(policies), visits, 0, 0, 30) for _ in range(2)]
    first = contexts[0].blame_of(CounterfactualBlame())
    assert contexts[1].blame_of(CounterfactualBlame()) is first  # another run on the same rollouts
    _, zone, value = contexts[0].joint_states()
    valid = fleet.valid_of(contexts[0].joint_states()[0])
    np.testing.assert_array_equal(first, CounterfactualBlame().blame(fleet.penalty, zone, value, valid))
    other = contexts[1].blame_of(CounterfactualBlame(eps=0.5))  # other parameters: its own
    assert other is not first and not np.array_equal(other, first)
    with pytest.raises(ValueError):
        first[0, 0] = 1.0


def test_a_copy_of_the_counts_moves_its_windows_without_touching_the_original():
    """FleetCounts.copy shares the transforms of g until a window is re-centred: swaps that move
    many windows in the copy must leave the original equal to a fresh build, and the copy equal
    to a fresh build of its own occupancy."""
    fleet = Fleet.plan(generate_scenario(load_map(MAPS / "salp" / "salp-1.map"), 150, seed=4), backend="serial")
    policies = [p.policy for p in fleet.plans]
    occupancy = fleet.occupancy(policies)
    counts = fleet.counts(policies)
    original = counts.expected().copy()
    copy = counts.copy()
    # 20 robots move to one penalised cell at every step: its count distribution moves there (and
    # its window with it, in place: moving them adds no variance)
    zone, value = counts.cells[0]
    moved = occupancy.copy()
    for i in range(20):
        moved[i] = 0.0
        moved[i, :, zone, value] = 1.0
        copy.swap(i, copy.cell_probabilities(moved[i]), key=("piled", 0))
    counts._expected = None
    np.testing.assert_array_equal(counts.expected(), original)
    np.testing.assert_allclose(copy.expected(), FleetCounts(fleet.penalty, moved).expected(), rtol=1e-9, atol=1e-10)
    # and windows re-centred in place (one count up: a white-box move) in banks the copy shares
    shared = [index for index, bank in enumerate(copy._banks) if bank.shared_transforms]
    assert shared
    columns = np.flatnonzero(np.isin(copy._bank_of, shared) & (copy._lo < copy.n_robots + 1 - copy._points_of(
        np.arange(len(copy._lo)))))
    assert len(columns)
    middle = copy._lo[columns] + copy._points_of(columns) // 2 + 1
    copy._place(columns, middle, middle)
    assert all(not copy._banks[index].shared_transforms for index in np.unique(copy._bank_of[columns]))
    counts._expected = None  # J_N is kept until the counts change: read the banks again
    np.testing.assert_array_equal(counts.expected(), original)
    fresh = FleetCounts(fleet.penalty, occupancy, keys=fleet.behaviour_keys(policies))
    np.testing.assert_allclose(counts.expected(), fresh.expected(), rtol=1e-12, atol=1e-12)
