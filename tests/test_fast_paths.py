"""The performance work (docs/PERFORMANCE.md) against the straightforward versions it replaced:
bit-identical where the arithmetic is the same, within rounding where it is reordered."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metareasoner.blame as blame_module
import metareasoner.monitor as monitor_module
from metareasoner.blame import CounterfactualBlame
from metareasoner.mitigation import Fleet, valid_value_table
from metareasoner.strategies import Generalised, RoundContext
from metareasoner.monitor import (
    exact_monitor,
    monte_carlo_monitor,
    poisson_binomial,
    poisson_binomial_grouped,
)
from planner.domains.base import _DX, _DY, _PERPENDICULAR, move_outcomes
from planner.maps import load_map
from planner.scenario import generate_scenario
from planner.solvers import _as_state_action_reward, bellman_q, simulate, simulate_lanes, value_iteration
from conftest import MAPS
from test_blame import instances_with_valid


@pytest.fixture(scope="module")
def fleet():
    return Fleet.plan(generate_scenario(load_map(MAPS / "salp" / "salp-2.map"), 90, seed=4, slack=100.0),
                      backend="serial")


def plain_value_iteration(mdp, reward, allowed, discount, tolerance=1e-8):
    """The textbook loop value_iteration used before: Q = R + gamma T V, reshaped (S, A)."""
    r = _as_state_action_reward(mdp, reward)
    if allowed is not None:
        r = np.where(allowed, r, -np.inf)
    threshold = tolerance * (1 - discount) / discount if discount < 1 else tolerance
    v, iterations = np.zeros(mdp.n_states), 0
    while True:
        v_new = bellman_q(mdp, r, v, discount).max(axis=1)
        residual = np.max(np.abs(v_new - v))
        v, iterations = v_new, iterations + 1
        if residual <= threshold:
            break
    q = bellman_q(mdp, r, v, discount)
    return q.max(axis=1), q, iterations


def test_value_iteration_is_bit_identical_to_the_plain_loop(fleet):
    mdp = fleet.plans[0].mdp
    ours = value_iteration(mdp, method="vi")  # plain value iteration (the default is modified policy iteration)
    values, q, iterations = plain_value_iteration(mdp, None, None, mdp.discount)
    assert np.array_equal(ours.values, values) and np.array_equal(ours.q_values, q) and ours.iterations == iterations
    # restricted actions and an undiscounted (shortest-path) secondary objective, as LVI uses them
    allowed = (ours.values[:, None] - ours.q_values) <= 0.5
    penalty = -np.where(np.arange(mdp.n_states) % 7 == 0, 1.0, 0.0)[:, None] - 0.01 + np.zeros(mdp.rewards.shape)
    penalty[mdp.terminal] = 0
    ssp = value_iteration(mdp, penalty, allowed=allowed, discount=1.0, method="vi")
    values, q, iterations = plain_value_iteration(mdp, penalty, allowed, 1.0)
    assert np.array_equal(ssp.values, values) and np.array_equal(ssp.q_values, q) and ssp.iterations == iterations


def test_action_major_transitions_are_cached_and_not_pickled(fleet):
    import pickle

    mdp = fleet.plans[0].mdp
    first = mdp.action_major()
    assert mdp.action_major() is first
    assert (first != mdp.transitions[np.arange(mdp.n_states * mdp.n_actions).reshape(mdp.n_states, -1).T.ravel()]).nnz == 0
    assert "_action_major_cache" not in pickle.loads(pickle.dumps(mdp)).__dict__


def test_simulate_with_given_uniforms_is_the_seeded_stream(fleet):
    plan = fleet.plans[1]
    seeded = simulate(plan.mdp, plan.policy, 30, episodes=40, seed=9)
    uniforms = np.random.default_rng(9).random((30, 40))
    given_u = simulate(plan.mdp, plan.policy, 30, episodes=40, uniforms=uniforms)
    assert np.array_equal(seeded.states, given_u.states) and np.array_equal(seeded.actions, given_u.actions)
    with pytest.raises(ValueError, match="uniforms needs shape"):
        simulate(plan.mdp, plan.policy, 30, episodes=40, uniforms=uniforms[:, :3])


def old_simulate(mdp, policy, horizon, episodes, rng):
    """The sampler before: a running sum over the policy's own transition rows."""
    p_pi = mdp.policy_matrix(policy)
    indptr, indices, cum = p_pi.indptr, p_pi.indices, np.cumsum(p_pi.data)
    states = np.empty((episodes, horizon + 1), dtype=np.int64)
    states[:, 0] = mdp.start
    for t in range(horizon):
        s = states[:, t]
        lo, hi = indptr[s], indptr[s + 1]
        base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        target = base + rng.random(episodes) * (cum[hi - 1] - base)
        states[:, t + 1] = indices[np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)]
    return states


def test_lanes_of_several_mdps_are_each_their_own_simulation():
    """`simulate_lanes` over MDPs of two domains (7 and 8 actions, rows of other widths), other
    starts and policies, is `simulate` of each lane's MDP and policy with its draws; and both
    are the sampler before (a search over the MDP's running sum, clipped to the row)."""
    plans = [p for name in ("salp/salp-2.map", "warehouse/warehouse-1.map")
             for p in Fleet.plan(generate_scenario(load_map(MAPS / name), 3, seed=2), backend="serial").plans]
    rng = np.random.default_rng(0)
    models = [(p.mdp, p.policy) for p in plans] + [(p.mdp, rng.integers(p.mdp.n_actions, size=p.mdp.n_states))
                                                    for p in plans]
    assert len({m.n_actions for m, _ in models}) == 2
    lane_model = rng.integers(len(models), size=60)
    starts = np.array([rng.integers(models[k][0].n_states) for k in lane_model])
    horizon = 40
    uniforms = rng.random((horizon, len(lane_model)))
    states = simulate_lanes(models, lane_model, horizon, uniforms, starts)
    for lane, k in enumerate(lane_model):
        mdp, policy = models[k]
        alone = simulate(mdp, policy, horizon, episodes=1, start=starts[lane], uniforms=uniforms[:, lane:lane + 1])
        assert np.array_equal(states[:, lane], alone.states[0])
        t = mdp.transitions
        cum, s = np.cumsum(t.data), starts[lane]
        for step in range(horizon):  # the search of the sampler before
            row = s * mdp.n_actions + policy[s]
            lo, hi = t.indptr[row], t.indptr[row + 1]
            base = cum[lo - 1] if lo > 0 else 0.0
            s = t.indices[np.clip(np.searchsorted(cum, base + uniforms[step, lane] * (cum[hi - 1] - base), side="right"),
                                  lo, hi - 1)]
            assert states[step + 1, lane] == s
    with pytest.raises(ValueError, match="uniforms needs shape"):
        simulate_lanes(models, lane_model, horizon, uniforms[:, :3], starts)


@pytest.mark.parametrize("mixed", [False, True])
def test_monte_carlo_monitor_equals_one_simulation_per_robot(fleet, mixed):
    """Robots of one MDP are simulated together, with one policy or (mixed) several: each robot's
    rollouts are those `simulate` gives it alone, and those of the sampler before."""
    policies = [p.policy for p in fleet.plans]
    if mixed:  # every third robot another policy on its MDP
        rng = np.random.default_rng(1)
        policies = [rng.integers(p.mdp.n_actions, size=p.mdp.n_states) if i % 3 == 0 else policy
                    for i, (p, policy) in enumerate(zip(fleet.plans, policies))]
    robots = fleet.models(policies)
    assert len({id(r.mdp) for r in robots}) < len(robots)  # robots share MDPs: the grouped path is used
    report, visits = monte_carlo_monitor(fleet.penalty, robots, fleet.horizon, episodes=25, seed=5)
    rng = np.random.default_rng(5)
    for i, robot in enumerate(robots):  # the per-robot loop it replaced
        run = simulate(robot.mdp, robot.policy, fleet.horizon, episodes=25, seed=rng)
        assert np.array_equal(visits.states[:, :, i], run.states)
        assert np.array_equal(visits.zone[:, :, i], robot.zone[run.states])
        assert np.array_equal(visits.value[:, :, i], robot.value[run.states])
    rng = np.random.default_rng(5)
    for i, robot in enumerate(robots):
        assert np.array_equal(visits.states[:, :, i], old_simulate(robot.mdp, robot.policy, fleet.horizon, 25, rng))
    assert report.total_penalty > 0


def test_grouped_poisson_binomial_matches_the_recursion():
    rng = np.random.default_rng(0)
    counts = np.array([1, 7, 40, 3, 99, 50])
    p_groups = rng.random((6, 5, 4)) * (rng.random((6, 5, 4)) < 0.6)
    p_groups[0, 0, 0], p_groups[1, 0, 1], p_groups[2, 1, 1] = 1.0, 0.5, 1.0  # certain and even robots too
    direct = poisson_binomial(np.repeat(p_groups, counts, axis=0))
    grouped = poisson_binomial_grouped(p_groups, counts)
    assert grouped.shape == direct.shape == (201, 5, 4)
    np.testing.assert_allclose(grouped, direct, rtol=0, atol=1e-13)
    np.testing.assert_allclose(grouped.sum(axis=0), 1.0, atol=1e-12)


def test_exact_monitor_fft_path_agrees_with_the_recursion(fleet, monkeypatch):
    robots = fleet.models([p.policy for p in fleet.plans])
    args = (fleet.penalty, robots, fleet.horizon, fleet.n_zones, fleet.n_values, fleet.scenario.world.min_count)
    monkeypatch.setattr(monitor_module, "FFT_MIN_ROBOTS", 2)
    monkeypatch.setattr(monitor_module, "FFT_RUNS_PER_ROBOT", 1)
    fft = exact_monitor(*args)
    monkeypatch.setattr(monitor_module, "FFT_MIN_ROBOTS", 10**9)
    recursion = exact_monitor(*args)
    assert recursion.total_penalty > 0
    np.testing.assert_allclose(fft.total_penalty, recursion.total_penalty, rtol=1e-11)
    np.testing.assert_allclose(fft.per_step, recursion.per_step, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fft.per_zone, recursion.per_zone, rtol=1e-11)


def test_recon_savings_by_robot_type_are_bit_identical(fleet, monkeypatch):
    n = len(fleet.plans)
    robots = fleet.models([p.policy for p in fleet.plans])
    _, visits = monte_carlo_monitor(fleet.penalty, robots, fleet.horizon, episodes=10, seed=2)
    states, zone, value = (a.reshape(-1, n) for a in (visits.states, visits.zone, visits.value))
    tables = [valid_value_table(p, fleet.dynamic_feature, fleet.n_values) for p in fleet.plans]
    valid = np.stack([tables[i][states[:, i]] for i in range(n)], axis=1)
    assert blame_module._savings_by_type(fleet.penalty, zone, value, valid) is not None  # the fast path runs
    fast = CounterfactualBlame().blame(fleet.penalty, zone, value, valid)
    fast_default = CounterfactualBlame().blame(fleet.penalty, zone, value)
    monkeypatch.setattr(blame_module, "_savings_by_type", lambda *args, **kwargs: None)
    slow = CounterfactualBlame().blame(fleet.penalty, zone, value, valid)
    assert fast.sum() > 0
    assert np.array_equal(fast, slow)
    assert np.array_equal(fast_default, CounterfactualBlame().blame(fleet.penalty, zone, value))


@settings(max_examples=150, deadline=None)
@given(instances_with_valid(), st.integers(0, 2**31), st.booleans())
def test_blame_of_one_robot_in_a_counterfactual_state(inst, seed, default_valid):
    penalty, zone, value, valid = inst
    batch, n = zone.shape
    if batch == 0 or n == 0:
        return
    valid = None if default_valid else valid
    rng = np.random.default_rng(seed)
    k = 15
    rows, agents = rng.integers(batch, size=k), rng.integers(n, size=k)
    new_values = rng.integers(penalty.n_values, size=k)
    got = CounterfactualBlame().blame_of_one(penalty, zone, value, valid, rows, agents, new_values)
    cf_value = value[rows].copy()
    cf_value[np.arange(k), agents] = new_values
    want = CounterfactualBlame().blame(penalty, zone[rows], cf_value, None if valid is None else valid[rows])
    np.testing.assert_allclose(got, want[np.arange(k), agents], rtol=1e-12, atol=1e-12)


def test_blame_of_one_refuses_bad_indices(fleet):
    zone = np.zeros((2, 3), dtype=int)
    with pytest.raises(ValueError, match="agents must be in 0..2"):
        CounterfactualBlame().blame_of_one(fleet.penalty, zone, zone, None, [0], [3], [1])
    with pytest.raises(ValueError, match="same length"):
        CounterfactualBlame().blame_of_one(fleet.penalty, zone, zone, None, [0, 1], [0], [1])


def test_move_table_matches_the_move_rule():
    world = load_map(MAPS / "warehouse" / "warehouse-1.map")
    walkable = world.passable
    h, w = walkable.shape
    y, x = np.nonzero(walkable)
    for direction in range(4):
        outcomes = move_outcomes(x, y, direction, 0.2, walkable)
        assert [p for _, _, p in outcomes] == pytest.approx([0.8, 0.1, 0.1])
        for (nx, ny, _), d in zip(outcomes, (direction, *_PERPENDICULAR[direction])):
            tx, ty = x + _DX[d], y + _DY[d]
            inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
            ok = inside & walkable[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)]
            assert np.array_equal(nx, np.where(ok, tx, x)) and np.array_equal(ny, np.where(ok, ty, y))


def test_valid_values_of_joint_states_in_one_gather_are_each_robot_s_table(fleet):
    """`Fleet.valid_of` (the distinct MDPs' tables end to end, one gather) is each robot's own
    `valid_table` at its states, on the rollouts' joint states (robots of 30 MDPs)."""
    policies = [p.policy for p in fleet.plans]
    _, visits = monte_carlo_monitor(fleet.penalty, fleet.models(policies), fleet.horizon, episodes=6, seed=1)
    states = visits.states.reshape(-1, len(fleet.plans))
    expected = np.stack([fleet.valid_table(i)[states[:, i]] for i in range(len(fleet.plans))], axis=1)
    assert len({id(p.mdp) for p in fleet.plans}) > 1 and not expected.all()
    np.testing.assert_array_equal(fleet.valid_of(states), expected)


@pytest.mark.parametrize("max_pairs", [500, 10**9])
def test_generalised_training_set_blames_only_the_pairs_it_keeps(fleet, max_pairs):
    """Generalised RECON's training sample is drawn before the counterfactual blames are computed,
    and only the drawn ones are: the same sample as computing them all and drawing after (the
    code before), features equal, blames within rounding."""
    policies = [p.policy for p in fleet.plans]
    _, visits = monte_carlo_monitor(fleet.penalty, fleet.models(policies), fleet.horizon, episodes=20, seed=3)
    context = RoundContext(fleet, policies, fleet.counts(policies), visits, 0, 0, 20)
    _, zone, value = context.joint_states()
    valid = context.valid(context.joint_states()[0])
    blame = CounterfactualBlame().blame(fleet.penalty, zone, value, valid)
    strategy = Generalised(counterfactuals=True, max_training_pairs=max_pairs, seed=5)
    x, y = strategy.training_set(fleet, zone, value, valid, blame)

    rng = np.random.default_rng(5)  # the code before: every pair's blame, then the draw
    in_zone = (zone > 0).astype(np.int64)
    xs, ys = [np.stack([value.ravel(), in_zone.ravel()], axis=1)], [blame.ravel()]
    for v in range(fleet.n_values):
        use = valid[:, :, v] & (value != v)
        if not use.any():
            continue
        rows, agents = np.nonzero(use)
        if len(rows) > max_pairs:
            pick = rng.choice(len(rows), max_pairs, replace=False)
            rows, agents = rows[pick], agents[pick]
        xs.append(np.stack([np.full(len(rows), v), in_zone[rows, agents]], axis=1))
        ys.append(CounterfactualBlame().blame_of_one(fleet.penalty, zone, value, valid, rows, agents,
                                                     np.full(len(rows), v)))
    x_ref, y_ref = np.concatenate(xs), np.concatenate(ys)
    assert len(x_ref) > 500  # the small limit draws a sample
    if len(y_ref) > max_pairs:
        pick = rng.choice(len(y_ref), max_pairs, replace=False)
        x_ref, y_ref = x_ref[pick], y_ref[pick]
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    assert (y > 0).any()


def test_the_default_generaliser_is_the_tree_grown_on_every_pair():
    """`fit_regression_tree` fits on distinct rows with counts and mean targets: its predictions
    are those of scikit-learn's tree grown on every raw pair, on seen rows (their mean target)
    and on rows never seen."""
    from sklearn.tree import DecisionTreeRegressor

    from metareasoner.strategies import fit_regression_tree

    rng = np.random.default_rng(4)
    for trial in range(6):
        size = int(rng.integers(30, 3000))
        x = np.stack([rng.integers(0, 5, size), rng.integers(0, 2, size)], axis=1)
        x[x[:, 0] == 3, 1] = 0  # (3, 1) never seen
        y = rng.exponential(1.0, size) * (1 + x[:, 0] * x[:, 1]) + (rng.random(size) < 0.3) * trial
        grid = np.array([(v, z) for v in range(6) for z in range(2)])
        raw = DecisionTreeRegressor(random_state=0).fit(x, y)
        ours = fit_regression_tree(x, y, random_state=0)
        np.testing.assert_allclose(ours.predict(grid), raw.predict(grid), rtol=1e-9, atol=1e-12)
        for row in np.unique(x, axis=0):
            same = (x == row).all(axis=1)
            assert ours.predict(row[None])[0] == pytest.approx(y[same].mean(), rel=1e-9)
        assert ours.tree_.node_count <= 2 * len(np.unique(x, axis=0))
    with pytest.raises(ValueError, match="no training pairs"):
        fit_regression_tree(np.zeros((0, 2)), np.zeros(0))
    from metareasoner.strategies import _distinct_rows
    for x in (rng.integers(0, 4, (500, 2)), rng.integers(-2, 3, (50, 3)), rng.random((20, 2)).round(1)):
        ours, reference = _distinct_rows(x), np.unique(x, axis=0, return_inverse=True, return_counts=True)
        for a, b in zip(ours, reference):
            np.testing.assert_array_equal(a, b.reshape(a.shape))


def test_predictions_of_distinct_feature_rows_are_the_regressors_own():
    """Generalised RECON predicts each distinct feature row once: the same values, bit for bit,
    as predicting every state, also for rows known from an earlier MDP."""
    from sklearn.ensemble import RandomForestRegressor

    from metareasoner.strategies import _predict_distinct

    rng = np.random.default_rng(2)
    x = np.stack([rng.integers(0, 3, 400), rng.integers(0, 2, 400)], axis=1)
    model = RandomForestRegressor(n_estimators=20, min_samples_leaf=3, random_state=0).fit(x, rng.random(400) + x[:, 0])
    known: dict = {}
    for size in (600, 50, 900):  # MDPs of different sizes, later ones mostly known rows
        phi = np.stack([rng.integers(0, 4, size), rng.integers(0, 2, size)], axis=1)
        np.testing.assert_array_equal(_predict_distinct(model, phi, known), model.predict(phi))
    assert len(known) == 8  # 4 x 2 feature rows, each predicted once


def test_rollouts_stop_once_every_lane_is_absorbed_with_the_same_states_actions_and_draws(fleet):
    """Past the step where every episode has finished, the sampler stops: the states, the
    actions and what the generator has drawn afterwards must be those of simulating every step."""
    plan = fleet.plans[0]
    horizon = 400  # far longer than the task: every episode ends early
    rng_new, rng_old = np.random.default_rng(3), np.random.default_rng(3)
    run = simulate(plan.mdp, plan.policy, horizon, episodes=30, seed=rng_new)
    old = old_simulate(plan.mdp, plan.policy, horizon, 30, rng_old)
    assert plan.mdp.terminal[run.states[:, -1]].all()
    np.testing.assert_array_equal(run.states, old)
    np.testing.assert_array_equal(run.actions, plan.policy[run.states[:, :-1]])
    assert rng_new.random() == rng_old.random()  # the generator drew for every step
    uniforms = np.random.default_rng(4).random((horizon, 30))
    lanes = simulate_lanes([(plan.mdp, plan.policy)], np.zeros(30, dtype=np.intp), horizon, uniforms)
    np.testing.assert_array_equal(lanes.T, old_simulate(plan.mdp, plan.policy, horizon, 30, np.random.default_rng(4)))
