"""Value iteration, LVI, policy evaluation and simulation against independent references."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.mdp import TabularMDP
from planner.solvers import (
    expected_steps,
    finishes_surely,
    lexicographic_policy_that_finishes,
    lexicographic_value_iteration,
    policy_evaluation,
    simulate,
    state_distributions,
    value_iteration,
)

import hiive.mdptoolbox.example as mdptoolbox_example  # mdptoolbox-hiive, a dev dependency: the reference
import hiive.mdptoolbox.mdp as mdptoolbox_mdp


def random_sparse_mdp(rng: np.random.Generator, n_states: int, n_actions: int, density: float = 0.3):
    """Per-action row-stochastic sparse matrices (every row has at least one successor) and rewards."""
    mats = []
    for _ in range(n_actions):
        m = sp.random(n_states, n_states, density=density, random_state=rng, format="lil")
        for s in range(n_states):  # test set-up only
            m[s, rng.integers(n_states)] = rng.random() + 0.1
        m = sp.csr_matrix(m)
        m = sp.diags(1.0 / np.asarray(m.sum(axis=1)).ravel()) @ m
        mats.append(sp.csr_matrix(m))
    rewards = rng.normal(size=(n_states, n_actions))
    return mats, rewards


def untied(q: np.ndarray, margin: float = 1e-6) -> np.ndarray:
    top2 = np.sort(q, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > margin


@pytest.mark.parametrize("method", ["vi", "mpi", "pi"])
def test_forest_matches_mdptoolbox(method):
    P, R = mdptoolbox_example.forest(S=10, r1=4, r2=2, p=0.1)
    mdp = TabularMDP.from_matrices(list(P), R, 0.96)
    ours = value_iteration(mdp, tolerance=1e-10, method=method)
    ref = mdptoolbox_mdp.PolicyIteration(P, R, 0.96)  # exact policy iteration as the reference
    ref.run()
    np.testing.assert_allclose(ours.values, ref.V, atol=1e-7)
    np.testing.assert_array_equal(ours.policy, ref.policy)
    # hiive's value iteration stops on a span criterion: its values are off by a
    # constant, but its greedy policy must be the same
    vi = mdptoolbox_mdp.ValueIteration(P, R, 0.96, epsilon=1e-10, max_iter=100_000)
    vi.run()
    np.testing.assert_array_equal(ours.policy, vi.policy)


@pytest.mark.parametrize("method", ["vi", "mpi", "pi"])
@pytest.mark.parametrize("seed", range(5))
def test_random_sparse_mdps_match_mdptoolbox(seed, method):
    rng = np.random.default_rng(seed)
    mats, rewards = random_sparse_mdp(rng, n_states=40, n_actions=3)
    mdp = TabularMDP.from_matrices(mats, rewards, 0.9)
    ours = value_iteration(mdp, tolerance=1e-10, method=method)
    ref = mdptoolbox_mdp.PolicyIteration(mats, rewards, 0.9)
    ref.run()
    np.testing.assert_allclose(ours.values, ref.V, atol=1e-7)
    mask = untied(ours.q_values)
    assert mask.sum() > 30
    np.testing.assert_array_equal(ours.policy[mask], np.asarray(ref.policy)[mask])
    vi = mdptoolbox_mdp.ValueIteration(mats, rewards, 0.9, epsilon=1e-10, max_iter=100_000)
    vi.run()
    np.testing.assert_array_equal(ours.policy[mask], np.asarray(vi.policy)[mask])
    np.testing.assert_allclose(policy_evaluation(mdp, ours.policy), ours.values, atol=1e-7)


@st.composite
def lexicographic_cases(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    n_states = draw(st.integers(2, 12))
    n_actions = draw(st.integers(2, 4))
    gamma = draw(st.floats(0.5, 0.95))
    slack = draw(st.one_of(st.just(0.0), st.floats(0.0, 5.0)))
    rng = np.random.default_rng(seed)
    mats, r1 = random_sparse_mdp(rng, n_states, n_actions, density=0.4)
    r1 = np.round(r1, 1)  # coarse rewards make exact ties (and so delta = 0 choices) common
    r2 = -np.abs(rng.normal(size=n_states)) * (rng.random(n_states) < 0.6)  # a penalty on some states
    return TabularMDP.from_matrices(mats, r1, gamma), r2, slack


@settings(max_examples=150, deadline=None)
@given(lexicographic_cases())
def test_lvi_slack_guarantee_and_secondary_improvement(case):
    mdp, penalty, slack = case
    task_opt = value_iteration(mdp, tolerance=1e-11)
    lex = lexicographic_value_iteration(mdp, penalty, slack=slack, tolerance=1e-11)
    v1_lex = policy_evaluation(mdp, lex.policy)
    # task value at every state within slack of the optimum
    assert np.all(v1_lex >= task_opt.values - slack - 1e-6)
    # never worse on the penalty than the plain task-optimal policy
    v2_lex = policy_evaluation(mdp, lex.policy, reward=penalty)
    v2_task = policy_evaluation(mdp, task_opt.policy, reward=penalty)
    assert np.all(v2_lex >= v2_task - 1e-6)


def test_lvi_uses_slack_to_avoid_penalty():
    # two routes from state 0 to the goal: short (via 1, penalised) or one step longer (via 2, 3)
    S, A = 5, 2
    T = np.zeros((A, S, S))
    T[0, 0, 1] = T[1, 0, 2] = 1
    T[:, 1, 4] = 1
    T[:, 2, 3] = 1
    T[:, 3, 4] = 1
    T[:, 4, 4] = 1
    R = -np.ones((S, A))
    terminal = np.array([False, False, False, False, True])
    mdp = TabularMDP.from_matrices(list(T), R, 0.9, terminal=terminal)
    penalty = np.array([0, -5.0, 0, 0, 0])
    strict = lexicographic_value_iteration(mdp, penalty, slack=0.0)
    assert strict.policy[0] == 0  # no slack: the short route, penalty and all
    # the detour costs one more discounted step, 0.9**2, in Q at state 0; docs/FORMULATION.md's
    # per-state slack eta = (1 - gamma) * delta admits it once delta >= 0.81 / 0.1
    threshold = 0.9 ** 2 / (1 - 0.9)
    loose = lexicographic_value_iteration(mdp, penalty, slack=threshold + 1e-6)
    assert loose.policy[0] == 1
    too_tight = lexicographic_value_iteration(mdp, penalty, slack=threshold - 1e-3)
    assert too_tight.policy[0] == 0


def test_expected_steps_closed_form_and_certainty():
    # a chain 0 -> 1 -> 2 (terminal) where each step succeeds with probability p
    p = 0.25
    T = np.zeros((1, 3, 3))
    T[0, 0, 0], T[0, 0, 1] = 1 - p, p
    T[0, 1, 1], T[0, 1, 2] = 1 - p, p
    T[0, 2, 2] = 1
    mdp = TabularMDP.from_matrices(list(T), -np.ones((3, 1)), 0.9, terminal=[False, False, True])
    steps = expected_steps(mdp, np.zeros(3, int))
    np.testing.assert_allclose(steps, [2 / p, 1 / p, 0])
    # a trap: from state 0 the robot may fall into a loop that never finishes
    T = np.zeros((1, 4, 4))
    T[0, 0, 1], T[0, 0, 3] = 0.5, 0.5
    T[0, 1, 2] = 1
    T[0, 2, 2] = 1
    T[0, 3, 3] = 1
    trap = TabularMDP.from_matrices(list(T), -np.ones((4, 1)), 0.9, terminal=[False, False, True, False])
    pol = np.zeros(4, int)
    np.testing.assert_array_equal(finishes_surely(trap, pol), [False, True, True, False])
    assert np.isinf(expected_steps(trap, pol)[0]) and expected_steps(trap, pol)[1] == 1


def test_simulation_matches_forward_distributions():
    rng = np.random.default_rng(7)
    mats, rewards = random_sparse_mdp(rng, 15, 2)
    mdp = TabularMDP.from_matrices(mats, rewards, 0.9)
    policy = value_iteration(mdp).policy
    horizon, episodes = 6, 20_000
    dist = state_distributions(mdp, policy, horizon)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    runs = simulate(mdp, policy, horizon, episodes=episodes, seed=3)
    assert np.array_equal(runs.actions, policy[runs.states[:, :-1]])
    for t in range(horizon + 1):
        freq = np.bincount(runs.states[:, t], minlength=mdp.n_states) / episodes
        sigma = np.sqrt(dist[t] * (1 - dist[t]) / episodes)
        assert np.all(np.abs(freq - dist[t]) <= 5 * sigma + 1e-12)
    again = simulate(mdp, policy, horizon, episodes=50, seed=3)
    np.testing.assert_array_equal(again.states, simulate(mdp, policy, horizon, episodes=50, seed=3).states)


def test_value_iteration_rejects_bad_shapes():
    mats, rewards = random_sparse_mdp(np.random.default_rng(0), 4, 2)
    mdp = TabularMDP.from_matrices(mats, rewards, 0.9)
    with pytest.raises(ValueError, match="reward needs shape"):
        value_iteration(mdp, reward=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="slack must be"):
        lexicographic_value_iteration(mdp, np.zeros(4), slack=-1)
    with pytest.raises(ValueError, match="discount"):
        TabularMDP.from_matrices(mats, rewards, 1.0)


def test_generous_slack_can_stall_but_the_finishing_variant_does_not():
    # state 0 -> 1 (penalised) -> 2 terminal; 'wait' stays put at no penalty
    T = np.zeros((2, 3, 3))
    T[0, 0, 1] = T[0, 1, 2] = T[0, 2, 2] = 1  # go
    T[1, 0, 0] = T[1, 1, 1] = T[1, 2, 2] = 1  # wait
    mdp = TabularMDP.from_matrices(list(T), -np.ones((3, 2)), 0.9, terminal=[False, False, True])
    penalty = np.array([0.0, -50.0, 0.0])
    optimum = value_iteration(mdp).values[0]  # -1.9
    stalling = lexicographic_value_iteration(mdp, penalty, slack=9.0)
    assert not finishes_surely(mdp, stalling.policy)[0]  # waits forever: -10 is within slack of -1.9
    assert policy_evaluation(mdp, stalling.policy)[0] >= optimum - 9.0
    # the secondary objective as a shortest path makes stalling unboundedly costly
    safe = lexicographic_policy_that_finishes(mdp, penalty, slack=9.0)
    assert finishes_surely(mdp, safe.policy)[0] and safe.slack == 9.0
    assert policy_evaluation(mdp, safe.policy)[0] >= optimum - 9.0
    ssp = lexicographic_value_iteration(mdp, penalty, slack=9.0, step_cost=0.5)
    assert finishes_surely(mdp, ssp.policy)[0] and ssp.secondary.iterations < 1000


def test_shortest_path_secondary_prefers_a_detour_to_stalling():
    # 0 -> 1 (penalised) -> 3, or the detour 0 -> 2 -> 4 -> 3; 'wait' stays put
    T = np.zeros((3, 5, 5))
    T[0, 0, 1] = T[0, 1, 3] = T[0, 2, 4] = T[0, 4, 3] = 1  # straight on
    T[1, 0, 2] = T[1, 1, 3] = T[1, 2, 4] = T[1, 4, 3] = 1  # turn (the detour from 0)
    for s in range(5):
        T[2, s, s] = 1  # wait
    T[:, 3, :] = 0
    T[:, 3, 3] = 1
    mdp = TabularMDP.from_matrices(list(T), -np.ones((5, 3)), 0.99, terminal=[0, 0, 0, 1, 0])
    penalty = np.array([0.0, -5.0, 0.0, 0.0, 0.0])
    slack = 150.0  # eta = 1.5 admits the one-step-longer detour (Q-gap 0.99) and waiting (gap ~0.99)
    result = lexicographic_policy_that_finishes(mdp, penalty, slack=slack)
    assert result.policy[0] == 1 and result.slack == slack  # detour, not stall, not bisected
    assert finishes_surely(mdp, result.policy)[0]
