"""The task budget (docs/FORMULATION.md 2): parsing, budgeted LVI, and the exact constrained reference."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from metareasoner.mitigation import Fleet
from metareasoner.monitor import FleetCounts
from metareasoner.strategies import BestResponse, RoundContext
from planner.budget import (
    SEARCH_RATIO,
    REGRET_TOLERANCE,
    TaskBudget,
    _search,
    budgeted_lvi,
    budgeted_scalarisation,
    constrained_optimum,
    discounted_cost,
    start_regret,
)
from planner.maps import load_map
from planner.mdp import TabularMDP
from planner.scenario import generate_scenario
from planner.solvers import finishes_surely, policy_evaluation, value_iteration
from conftest import MAPS


@pytest.mark.parametrize("spec, fraction, absolute", [("10%", 0.10, None), (" 2.5 % ", 0.025, None), ("0%", 0.0, None),
                                                      ("3", None, 3.0), (3, None, 3.0), ("1e-1", None, 0.1)])
def test_budget_specs(spec, fraction, absolute):
    budget = TaskBudget.parse(spec)
    assert (budget.fraction, budget.absolute) == (fraction, absolute)
    assert budget.amount(-40.0) == pytest.approx(0.1 * 40 * (fraction / 0.1) if fraction is not None else absolute)


@pytest.mark.parametrize("spec", ["-1", "-5%", "ten", "10%%", "nan", "inf", True, None, [3]])
def test_bad_budgets_say_what_is_expected(spec):
    with pytest.raises(ValueError, match="budget"):
        TaskBudget.parse(spec)


@st.composite
def random_mdps(draw):
    """Small random MDPs with an absorbing goal reachable from everywhere (so policies can finish)."""
    n = draw(st.integers(3, 7))
    a = draw(st.integers(2, 3))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    mats = []
    for _ in range(a):
        m = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
        m[:, n - 1] += 0.05  # every action can reach the goal
        mats.append(m / m.sum(axis=1, keepdims=True))
    terminal = np.zeros(n, bool)
    terminal[n - 1] = True
    rewards = -rng.uniform(0.5, 2.0, (n, a))
    mdp = TabularMDP.from_matrices(mats, rewards, 0.95, terminal=terminal)
    penalty = rng.random(n) * (rng.random(n) < 0.6)
    fraction = draw(st.sampled_from([0.0, 0.02, 0.1, 0.3, 1.0]))
    return mdp, penalty, fraction


@given(random_mdps())
@settings(max_examples=40, deadline=None)
def test_budgeted_lvi_meets_the_budget_and_never_beats_the_exact_optimum(case):
    mdp, penalty, fraction = case
    task = value_iteration(mdp, tolerance=1e-10)
    budget = fraction * abs(task.values[mdp.start])
    result = budgeted_lvi(mdp, -penalty, budget, task=task)
    assert finishes_surely(mdp, result.policy)[mdp.start]
    assert result.regret == pytest.approx(start_regret(mdp, task, result.policy))
    assert result.regret <= budget + REGRET_TOLERANCE
    reference = constrained_optimum(mdp, penalty, budget, task=task)
    assert reference.task_value >= task.values[mdp.start] - budget - 1e-6
    assert discounted_cost(mdp, result.policy, penalty) >= reference.cost - 1e-7
    relaxed = budgeted_scalarisation(mdp, penalty, budget, 1e3, task=task)
    assert relaxed.regret <= budget + REGRET_TOLERANCE
    assert discounted_cost(mdp, relaxed.policy, penalty) >= reference.cost - 1e-7


def test_constrained_optimum_against_brute_force():
    """On a tiny MDP the LP is at most every budget-feasible deterministic policy (brute force),
    and its stochastic policy has exactly the cost and task value the LP claims."""
    rng = np.random.default_rng(7)
    n, a = 5, 3
    mats = []
    for _ in range(a):
        m = rng.random((n, n)) + 0.1 * np.eye(n)
        m[:, n - 1] += 0.3
        mats.append(m / m.sum(axis=1, keepdims=True))
    terminal = np.zeros(n, bool)
    terminal[-1] = True
    mdp = TabularMDP.from_matrices(mats, -rng.uniform(0.5, 1.5, (n, a)), 0.9, terminal=terminal)
    penalty = np.array([0.0, 2.0, 0.5, 1.0, 0.0])
    task = value_iteration(mdp, tolerance=1e-12)
    for fraction in (0.0, 0.05, 0.2, 1.0):
        budget = fraction * abs(task.values[mdp.start])
        ref = constrained_optimum(mdp, penalty, budget, task=task)
        feasible = []
        for policy in itertools.product(range(a), repeat=n):
            policy = np.array(policy)
            if start_regret(mdp, task, policy) <= budget + 1e-9:
                feasible.append(discounted_cost(mdp, policy, penalty))
        assert ref.cost <= min(feasible) + 1e-9
        # evaluate the LP's stochastic policy independently: (I - gamma P_pi) V = r_pi
        p_pi = sum(ref.policy[:, [k]] * mdp.action_matrix(k).toarray() for k in range(a))
        c_pi = np.where(terminal, 0.0, penalty)
        r_pi = np.where(terminal, 0.0, (ref.policy * mdp.rewards).sum(axis=1))
        system = np.eye(n) - mdp.discount * p_pi
        assert np.linalg.solve(system, c_pi)[mdp.start] == pytest.approx(ref.cost, abs=1e-7)
        assert np.linalg.solve(system, r_pi)[mdp.start] >= task.values[mdp.start] - budget - 1e-7


@pytest.fixture(scope="module")
def salp_fleet():
    return Fleet.plan(generate_scenario(load_map(MAPS / "salp" / "salp-1.map"), 10, seed=1), backend="serial")


def test_one_robot_against_fixed_others_reference_is_monotone_and_lvi_never_below(salp_fleet):
    fleet = salp_fleet
    policies = [p.policy for p in fleet.plans]
    counts = fleet.counts(policies)
    context = RoundContext(fleet, policies, counts, None, 0, 0, 100)
    i = int(np.argmax([counts.contribution(j) for j in range(len(policies))]))
    plan = fleet.plans[i]
    cost = BestResponse().propose(context).penalty(i)  # its exact marginal penalty, per state
    assert cost.max() > 0
    previous = np.inf
    for fraction in (0.0, 0.02, 0.05, 0.10, 0.20, 0.50):
        budget = fraction * abs(plan.task_value)
        ref = constrained_optimum(plan.mdp, cost, budget, task=plan.task_solution)
        assert ref.cost <= previous + 1e-9  # more budget never a higher expected penalty
        previous = ref.cost
        lvi = budgeted_lvi(plan.mdp, -cost, budget, task=plan.task_solution)
        assert lvi.regret <= budget + REGRET_TOLERANCE
        assert discounted_cost(plan.mdp, lvi.policy, cost) >= ref.cost - 1e-7
        assert policy_evaluation(plan.mdp, lvi.policy)[plan.mdp.start] >= plan.task_value - budget - REGRET_TOLERANCE


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 120.0), st.floats(0.0, 120.0), st.floats(0.5, 100.0), st.integers(0, 8))
def test_a_bracket_from_another_robot_gives_the_bisections_answer_where_it_is_judged_alike(
        threshold, other_threshold, low, steps):
    """`_search` on monotone feasibility (x feasible iff x <= threshold), seeded with the bracket of
    the search for another threshold: its setting is always feasible, its bracket holds a
    feasible and an infeasible setting, and where both settings of the seed are judged here as
    they were there, it is the unseeded search's setting, in two solves."""
    high = 100.0

    def search(limit, bracket=None):
        calls = []

        def solve(x):
            calls.append(x)
            return f"policy at {x}", x <= limit
        (setting, policy), solves, found = _search(solve, lambda: f"policy at {0.0}", min(low, high), high, steps, bracket)
        assert solves == len(calls) == len(set(calls))  # no setting solved twice
        return setting, policy, solves, found

    other = search(other_threshold)
    plain = search(threshold)
    seeded = search(threshold, other[3])
    for setting, policy, _, (feasible, infeasible) in (plain, seeded):
        assert setting <= threshold and policy == f"policy at {setting}" and setting == feasible
        assert infeasible == np.inf or infeasible > threshold
    feasible, infeasible = other[3]
    if 0 < feasible <= threshold < infeasible <= high:
        assert seeded[0] == plain[0] and seeded[2] == 2
    else:
        assert seeded[0] <= threshold


@settings(max_examples=200, deadline=None)
@given(st.floats(1.0, 5.0), st.floats(1.01, 1.3), st.integers(-3, 3), st.floats(0.0, 0.99), st.integers(4, 8))
def test_a_bracket_judged_otherwise_is_left_by_a_gallop_to_a_near_answer(feasible, ratio, power, offset, steps):
    """`_search` on monotone feasibility (x feasible iff x <= threshold) seeded with a bracket
    (f, q f) that this threshold does not fall in, but near it (f q^k <= threshold < f q^(k + 1),
    |k| <= 3): a feasible setting within ratio max(q, SEARCH_RATIO) of the threshold, in at most
    2 + 2 m + 1 solves (m = the gallop's steps, ceil(log2(|k| + 1)) + 1), fewer than the
    bisection from `high` takes."""
    if power == 0:
        return  # the seed's own bracket: judged alike in two solves (the test above)
    low, high = 0.05, 1000.0
    threshold = feasible * ratio ** (power + offset)
    calls = []

    def solve(x):
        calls.append(x)
        return f"policy at {x}", x <= threshold
    (setting, _), solves, (found, above) = _search(solve, lambda: "policy at 0", low, high, steps,
                                                  (feasible, feasible * ratio))
    assert solves == len(calls) == len(set(calls))
    assert found == setting <= threshold < above
    assert above / found <= max(ratio, SEARCH_RATIO) * (1 + 1e-12)
    m = int(np.ceil(np.log2(abs(power) + 1))) + 1
    assert solves <= 2 + 2 * m + 1, calls


@given(random_mdps(), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_budgeted_lvi_seeded_with_another_penalty_s_bracket_meets_the_budget(case, seed):
    mdp, penalty, fraction = case
    task = value_iteration(mdp, tolerance=1e-10)
    budget = fraction * abs(task.values[mdp.start])
    other = np.random.default_rng(seed).random(mdp.n_states) * (penalty > 0)
    hint = budgeted_lvi(mdp, -other, budget, task=task).bracket
    plain = budgeted_lvi(mdp, -penalty, budget, task=task)
    seeded = budgeted_lvi(mdp, -penalty, budget, task=task, bracket=hint)
    assert finishes_surely(mdp, seeded.policy)[mdp.start]
    assert seeded.regret == pytest.approx(start_regret(mdp, task, seeded.policy))
    assert seeded.regret <= budget + REGRET_TOLERANCE
    # its own bracket: the same setting again, in two solves (one if nothing is infeasible)
    again = budgeted_lvi(mdp, -penalty, budget, task=task, bracket=plain.bracket)
    assert again.setting == plain.setting
    if 0 < plain.bracket[0] and plain.bracket[1] < np.inf:
        assert again.solves == 2


@given(random_mdps(), st.sampled_from([0, 1, 2, 6]))
@settings(max_examples=40, deadline=None)
def test_budgeted_lvi_trusting_wrays_bound_gives_the_answer_of_evaluating_every_setting(case, steps):
    """Slacks within the budget are judged feasible without an evaluation (Wray et al.'s bound):
    the answer, its regret and the search must be those of judging every setting by evaluation."""
    mdp, penalty, fraction = case
    task = value_iteration(mdp, tolerance=1e-10)
    budget = fraction * abs(task.values[mdp.start])
    trusted = budgeted_lvi(mdp, -penalty, budget, task=task, bisection_steps=steps)
    judged = budgeted_lvi(mdp, -penalty, budget, task=task, bisection_steps=steps, trust_bound=False)
    np.testing.assert_array_equal(trusted.policy, judged.policy)
    assert (trusted.setting, trusted.regret, trusted.solves, trusted.bracket) == \
        (judged.setting, judged.regret, judged.solves, judged.bracket)
    assert trusted.regret == pytest.approx(start_regret(mdp, task, trusted.policy), abs=1e-12)


def _detour_mdp(epsilon: float = 0.1):
    """Start state 0, goal 1: 'go' costs 1 and is penalised, 'detour' costs 1 + epsilon."""
    go = np.array([[0.0, 1.0], [0.0, 1.0]])
    mdp = TabularMDP.from_matrices([go, go], np.array([[-1.0, -1.0 - epsilon], [0.0, 0.0]]), 0.5,
                                   terminal=np.array([False, True]))
    secondary = np.array([[-1.0, 0.0], [0.0, 0.0]])  # -penalty on (start, go)
    return mdp, secondary, value_iteration(mdp, tolerance=1e-12)


def test_an_answer_judged_by_the_bound_alone_is_evaluated_and_searched_again_if_it_fails(monkeypatch):
    import planner.budget as budget_module

    mdp, secondary, task = _detour_mdp()
    # everything allowed (the detour) loses 0.1 > 0.09; the budget itself is the answer
    answer = budgeted_lvi(mdp, secondary, 0.09, task=task, bisection_steps=0)
    assert answer.setting == 0.09 and answer.regret == 0.0 and answer.policy[0] == 0
    # should the answer fail its evaluation (the bound broken by rounding), every setting is judged
    real = budget_module.evaluate_from_start
    calls = []

    def first_check_fails(mdp_, policy):
        calls.append(policy[0])
        return None if len(calls) == 2 else real(mdp_, policy)  # call 1: the detour, 2: the answer's check

    monkeypatch.setattr(budget_module, "evaluate_from_start", first_check_fails)
    again = budgeted_lvi(mdp, secondary, 0.09, task=task, bisection_steps=0)
    assert calls == [1, 0, 1, 0]  # the search again: the detour, then the budget's policy, evaluated
    assert again.setting == 0.09 and again.regret == 0.0 and again.policy[0] == 0
    assert again.solves == 2 * answer.solves
