"""The solver methods of `value_iteration` ("vi", "mpi", "pi") against independent references:
V* from an exact solve checked to be the Bellman fixed point, brute force over every
deterministic policy, mdptoolbox-hiive's exact policy iteration; on every shipped map and on
random MDPs, discounted and as stochastic shortest paths (LVI's secondary objective)."""
from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

import planner.solvers as solvers
from planner.maps import load_map
from planner.mdp import TabularMDP
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import (
    bellman_q,
    finishes_surely,
    lexicographic_policy_that_finishes,
    lexicographic_value_iteration,
    policy_evaluation,
    value_iteration,
)
from conftest import MAPS

import hiive.mdptoolbox.mdp as mdptoolbox_mdp  # the reference (a dev dependency)

TOL = 1e-8
SHIPPED = sorted(p.relative_to(MAPS).as_posix() for p in MAPS.glob("*/*.map"))


def optimal_values(mdp, reward=None, allowed=None, discount=None):
    """V* by policy iteration with exact sparse solves, written out here: (I - gamma P_pi) V = r_pi
    on the non-terminal states, greedy improvement over the allowed actions, until no state
    improves by more than 1e-12. Returns V* and max |T V* - V*| (the certificate). With
    discount 1 it starts from a policy that finishes (planner.solvers' breadth-first one)."""
    gamma = mdp.discount if discount is None else discount
    r = (mdp.rewards if reward is None else np.asarray(reward, float)).copy()
    r[mdp.terminal] = 0.0
    if allowed is not None:
        r = np.where(allowed, r, -np.inf)
    live = np.flatnonzero(~mdp.terminal)
    if gamma < 1.0:
        policy = np.argmax(r, axis=1)
    else:
        policy = solvers._finishing_policy(mdp, np.isfinite(np.ascontiguousarray(r.T).reshape(-1)))
    for _ in range(500):
        p = mdp.policy_matrix(policy)[live][:, live]
        v = np.zeros(mdp.n_states)
        v[live] = spla.spsolve((sp.identity(len(live)) - gamma * p).tocsc(), r[live, policy[live]])
        q = r + gamma * (mdp.transitions @ v).reshape(mdp.n_states, mdp.n_actions)
        better = q.max(axis=1) > q[np.arange(mdp.n_states), policy] + 1e-12
        if not better.any():
            break
        policy = np.where(better, np.argmax(q, axis=1), policy)
    return v, float(np.max(np.abs(q.max(axis=1) - v)))


def untied(q: np.ndarray, margin: float = 1e-9) -> np.ndarray:
    if q.shape[1] < 2:
        return np.ones(len(q), bool)
    top2 = np.sort(np.where(np.isfinite(q), q, -1e300), axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > margin


@pytest.fixture(scope="module")
def shipped_plans():
    plans = {}
    for name in SHIPPED:
        plans[name] = plan_fleet(generate_scenario(load_map(MAPS / name), 2, seed=3), backend="serial")
    return plans


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_map_task_objective(shipped_plans, name):
    for plan in shipped_plans[name]:
        mdp = plan.mdp
        v_star, fixed = optimal_values(mdp)
        assert fixed <= 1e-10
        vi = value_iteration(mdp, method="vi")
        for method in ("mpi", "pi", "auto"):
            result = value_iteration(mdp, method=method)
            assert result.method == ("mpi" if method == "auto" else method)
            error = np.max(np.abs(result.values - v_star))
            assert error <= result.error_bound + 1e-12 and result.error_bound <= TOL, (method, error, result.error_bound)
            np.testing.assert_allclose(result.q_values.max(axis=1), result.values, rtol=0, atol=0)
            np.testing.assert_array_equal(result.policy, np.argmax(result.q_values, axis=1))
            # the same policy as plain value iteration wherever its choice is not a tie
            mask = untied(vi.q_values)
            np.testing.assert_array_equal(result.policy[mask], vi.policy[mask])
        assert np.max(np.abs(vi.values - v_star)) <= TOL


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_map_lexicographic_replan(shipped_plans, name):
    """The mitigation's replan (LVI with a shortest-path secondary objective and the finishing
    safety net): the secondary values within tolerance of the exact optimum over the allowed
    actions, and the same policy as with plain value iteration where it is not a tie."""
    rng = np.random.default_rng(len(name))
    for plan in shipped_plans[name]:
        mdp = plan.mdp
        penalty = np.where(rng.random(mdp.n_states) < 0.2, rng.random(mdp.n_states) * 3, 0.0)
        ours = lexicographic_policy_that_finishes(mdp, -penalty, 100.0, task_result=plan.task_solution)
        plain = lexicographic_policy_that_finishes(mdp, -penalty, 100.0, task_result=plan.task_solution, method="vi")
        assert ours.secondary.method == "mpi" and plain.secondary.method == "vi"
        assert ours.slack == plain.slack
        assert finishes_surely(mdp, ours.policy)[mdp.start]
        np.testing.assert_array_equal(ours.allowed, plain.allowed)
        step_cost = 0.01 * penalty.max() if penalty.max() > 0 else 1e-3
        r2 = np.repeat(-penalty[:, None] - step_cost, mdp.n_actions, axis=1)
        v_star, fixed = optimal_values(mdp, r2, ours.allowed, discount=1.0)
        assert fixed <= 1e-9
        error = np.max(np.abs(ours.secondary.values - v_star))
        assert error <= ours.secondary.error_bound + 1e-12 and ours.secondary.error_bound <= TOL, error
        # value iteration's stop (residual <= tolerance) is weaker with discount 1: within 1e-5
        assert np.max(np.abs(plain.secondary.values - v_star)) <= 1e-5
        mask = untied(plain.secondary.q_values, 1e-5) & untied(ours.secondary.q_values, 1e-5)
        assert mask.mean() > 0.5
        np.testing.assert_array_equal(ours.policy[mask], plain.policy[mask])


def random_mdp(rng, n_states, n_actions, density=0.4, terminal_fraction=0.0):
    mats = []
    for _ in range(n_actions):
        m = (rng.random((n_states, n_states)) < density) * rng.random((n_states, n_states))
        m[np.arange(n_states), rng.integers(n_states, size=n_states)] += 0.1
        mats.append(m / m.sum(axis=1, keepdims=True))
    terminal = rng.random(n_states) < terminal_fraction
    return mats, terminal


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 30), st.integers(1, 4), st.floats(0.5, 0.99),
       st.sampled_from([0.0, 0.2]), st.booleans())
def test_random_discounted_mdps_match_hiive_policy_iteration(seed, n_states, n_actions, gamma, terminal_fraction,
                                                             restricted):
    rng = np.random.default_rng(seed)
    mats, terminal = random_mdp(rng, n_states, n_actions, terminal_fraction=terminal_fraction)
    rewards = np.round(rng.normal(size=(n_states, n_actions)), 1)
    mdp = TabularMDP.from_matrices(mats, rewards, gamma, terminal=terminal)
    allowed = None
    if restricted:
        allowed = rng.random((n_states, n_actions)) < 0.7
        allowed[np.arange(n_states), rng.integers(n_actions, size=n_states)] = True
    v_star, fixed = optimal_values(mdp, None, allowed)
    assert fixed <= 1e-9
    if allowed is None:
        ref = mdptoolbox_mdp.PolicyIteration([mdp.action_matrix(a).toarray() for a in range(n_actions)],
                                             mdp.rewards, gamma)
        ref.run()
        np.testing.assert_allclose(ref.V, v_star, atol=1e-9)
    r = mdp.rewards if allowed is None else np.where(allowed, mdp.rewards, -np.inf)
    q_star = bellman_q(mdp, r, v_star)
    mask = untied(q_star, 1e-6)
    for method in ("vi", "mpi", "pi"):
        result = value_iteration(mdp, allowed=allowed, tolerance=TOL, method=method)
        error = np.max(np.abs(result.values - v_star))
        # v_star is a direct solve: exact up to rounding amplified by 1 / (1 - gamma)
        reference = 1e-12 + 16 * np.finfo(float).eps * float(np.max(np.abs(v_star))) / (1.0 - gamma)
        assert error <= TOL and error <= result.error_bound + reference, (method, error, result.error_bound)
        if allowed is not None:
            assert np.all(allowed[np.arange(n_states), result.policy])
        np.testing.assert_array_equal(result.policy[mask], np.argmax(q_star, axis=1)[mask])


def brute_force_shortest_path(mats, r, terminal, allowed):
    """max over every deterministic allowed policy that finishes of its exact value (an
    optimal policy that finishes exists, and its value is the componentwise maximum)."""
    n_states = len(terminal)
    live = np.flatnonzero(~terminal)
    choices = [np.flatnonzero(allowed[s]) if not terminal[s] else [0] for s in range(n_states)]
    best = np.full(n_states, -np.inf)
    for policy in itertools.product(*choices):
        p = np.array([mats[a][s] for s, a in enumerate(policy)])
        system = np.eye(len(live)) - p[np.ix_(live, live)]
        if abs(np.linalg.det(system)) < 1e-12:
            continue  # does not finish from some state
        v = np.zeros(n_states)
        v[live] = np.linalg.solve(system, r[live, np.array(policy)[live]])
        # a singular-free system can still hide a closed class: check the values are finite and sane
        if np.all(np.isfinite(v)):
            best = np.maximum(best, v)
    return best


def assert_below_and_within_bound(result, reference, method, label) -> None:
    """A shortest-path solve by `method`: within its proven bound of V* (`reference`), the bound
    within the tolerance, every value below V* (the iterates rise to it)."""
    assert result.method == method, label
    error = np.max(np.abs(result.values - reference))
    assert error <= result.error_bound + 1e-12 and result.error_bound <= TOL, (label, error, result.error_bound)
    assert np.all(result.values <= reference + 1e-12), label


def random_shortest_path(seed, n_states, n_actions, step_cost):
    """A random shortest path: n_states live states and a goal every state-action reaches with
    some probability, rewards <= -step_cost; (rng, mdp, dense transition matrices, rewards, terminal)."""
    rng = np.random.default_rng(seed)
    mats, _ = random_mdp(rng, n_states + 1, n_actions, density=0.5)
    terminal = np.zeros(n_states + 1, bool)
    terminal[-1] = True
    for m in mats:
        m[:, -1] += 0.05
        m /= m.sum(axis=1, keepdims=True)
    r = -step_cost - rng.random((n_states + 1, n_actions)) * 2
    r[terminal] = 0.0
    mdp = TabularMDP.from_matrices(mats, np.zeros_like(r), 0.9, terminal=terminal)
    return rng, mdp, [np.asarray(mdp.action_matrix(a).todense()) for a in range(n_actions)], r, terminal


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(1, 3), st.floats(0.01, 1.0))
def test_random_shortest_paths_match_brute_force(seed, n_states, n_actions, step_cost):
    """Discount 1, rewards <= -step_cost, some actions not allowed: "mpi" and "pi" within
    tolerance of the best policy found by enumeration, with a bound that covers the error."""
    rng, mdp, mats, r, terminal = random_shortest_path(seed, n_states, n_actions, step_cost)
    allowed = rng.random((n_states + 1, n_actions)) < 0.7
    allowed[np.arange(n_states + 1), rng.integers(n_actions, size=n_states + 1)] = True
    reference = brute_force_shortest_path(mats, r, terminal, allowed)
    for method in ("mpi", "pi"):
        result = value_iteration(mdp, r, allowed=allowed, discount=1.0, tolerance=TOL, method=method)
        assert_below_and_within_bound(result, reference, method, method)
        assert finishes_surely(mdp, result.policy).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(2, 3), st.floats(0.01, 1.0))
def test_shortest_path_from_the_values_of_fewer_allowed_actions(seed, n_states, n_actions, step_cost):
    """A warm start (budgeted LVI's: the values solved over fewer allowed actions, and starts that
    are no start at all): "mpi" within tolerance of brute force over the larger action sets, with
    its bound, the iterates below V*, whichever start it is given (one that is not made a start
    below V*, `_warm_start`, falls back to the cold start)."""
    rng, mdp, mats, r, terminal = random_shortest_path(seed, n_states, n_actions, step_cost)
    fewer = np.zeros((n_states + 1, n_actions), bool)
    fewer[np.arange(n_states + 1), rng.integers(n_actions, size=n_states + 1)] = True
    more = fewer | (rng.random(fewer.shape) < 0.6)
    reference = brute_force_shortest_path(mats, r, terminal, more)
    smaller = value_iteration(mdp, r, allowed=fewer, discount=1.0, tolerance=TOL, method="mpi")
    cold = value_iteration(mdp, r, allowed=more, discount=1.0, tolerance=TOL, method="mpi")
    starts = {"fewer actions": smaller.values, "above V*": reference + 1.0, "far below": reference - 1e3,
              "zero": np.zeros(n_states + 1)}
    for name, start in starts.items():
        result = value_iteration(mdp, r, allowed=more, discount=1.0, tolerance=TOL, method="mpi",
                                 initial_values=start)
        assert_below_and_within_bound(result, reference, "mpi", name)
        assert finishes_surely(mdp, result.policy).all(), name
        np.testing.assert_array_equal(result.policy[untied(cold.q_values)], cold.policy[untied(cold.q_values)])
    # which of them are taken as a start (the others fall back to the cold one)
    r_am = np.ascontiguousarray(np.where(more, r, -np.inf).T).reshape(-1)
    taken = {name: solvers._warm_start(mdp, r_am, start, step_cost) is not None for name, start in starts.items()}
    assert taken["fewer actions"] and taken["far below"] and not taken["zero"]  # T0 <= -c < 0 = v: no start


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(2, 3), st.floats(0.01, 1.0))
def test_shortest_path_from_a_given_start_policy(seed, n_states, n_actions, step_cost):
    """`start_policy` (LVI passes the task's policy): one over allowed actions that finishes
    from every state is where "mpi" starts; one that takes an action not allowed, or never
    finishes from some state, is not (another that finishes is found). Whichever is given, the
    values are V* (brute force) within the bound, the iterates below it."""
    rng, mdp, mats, r, terminal = random_shortest_path(seed, n_states, n_actions, step_cost)
    mats[0][0] = 0.0
    mats[0][0, 0] = 1.0  # action 0 at state 0 never leaves it
    mdp = TabularMDP.from_matrices(mats, np.zeros_like(r), 0.9, terminal=terminal)
    allowed = rng.random((n_states + 1, n_actions)) < 0.6
    allowed[np.arange(n_states + 1), rng.integers(1, n_actions, size=n_states + 1)] = True
    allowed[0, 0] = True
    reference = brute_force_shortest_path(mats, r, terminal, allowed)
    finishing = np.array([rng.choice(np.flatnonzero(row[1:])) + 1 for row in allowed])
    looping = finishing.copy()
    looping[0] = 0
    candidates = {"finishing": finishing, "looping": looping}
    if not allowed.all():
        s_out, a_out = np.argwhere(~allowed)[0]
        outside = finishing.copy()
        outside[s_out] = a_out
        candidates["not allowed"] = outside
    allowed_am = np.ascontiguousarray(allowed.T).reshape(-1)
    for name, candidate in candidates.items():
        result = value_iteration(mdp, r, allowed=allowed, discount=1.0, tolerance=TOL, method="mpi",
                                 start_policy=candidate)
        assert_below_and_within_bound(result, reference, "mpi", name)
        start = solvers._finishing_policy(mdp, allowed_am, candidate)
        assert finishes_surely(mdp, start).all() and allowed[np.arange(n_states + 1), start].all(), name
        assert np.array_equal(start, candidate) == (name == "finishing"), name


def test_shortest_path_without_a_finishing_policy_falls_back_to_value_iteration():
    # state 1 can only loop on itself (not terminal): no policy finishes from it
    T = np.zeros((2, 3, 3))
    T[:, 0, 2] = 1.0
    T[:, 1, 1] = 1.0
    T[:, 2, 2] = 1.0
    mdp = TabularMDP.from_matrices(list(T), -np.ones((3, 2)), 0.9, terminal=[False, False, True])
    result = value_iteration(mdp, -np.ones((3, 2)), discount=1.0, max_iterations=50, method="mpi")
    assert result.method == "vi" and result.iterations == 50  # as before: it does not converge there
    # a reward of 0 outside terminal states: the shortest-path bound does not hold
    zero = value_iteration(mdp, np.zeros((3, 2)), discount=1.0, method="mpi")
    assert zero.method == "vi"


def test_no_terminal_states_and_given_initial_values():
    rng = np.random.default_rng(5)
    mats, _ = random_mdp(rng, 25, 3)
    mdp = TabularMDP.from_matrices(mats, rng.normal(size=(25, 3)), 0.95)
    v_star, _ = optimal_values(mdp)
    for start in (None, v_star + 3.0, -10 * np.ones(25)):
        result = value_iteration(mdp, initial_values=start, method="mpi")
        assert np.max(np.abs(result.values - v_star)) <= TOL


def test_jacobi_sweeps_where_no_in_place_kernel(monkeypatch):
    plan = plan_fleet(generate_scenario(load_map(MAPS / "warehouse" / "warehouse-2.map"), 1, seed=0),
                      backend="serial")[0]
    mdp = plan.mdp
    gauss_seidel = value_iteration(mdp)
    monkeypatch.setitem(solvers._KERNELS, "in place", None)
    jacobi = value_iteration(mdp)
    assert jacobi.sweeps > gauss_seidel.sweeps
    np.testing.assert_allclose(jacobi.values, gauss_seidel.values, rtol=0, atol=2 * TOL)
    penalty = -np.where(np.arange(mdp.n_states) % 5 == 0, 1.0, 0.0)
    a = lexicographic_value_iteration(mdp, penalty, slack=50.0, task_result=plan.task_solution, step_cost=0.01)
    monkeypatch.delitem(solvers._KERNELS, "in place")  # checked again: the kernel
    b = lexicographic_value_iteration(mdp, penalty, slack=50.0, task_result=plan.task_solution, step_cost=0.01)
    np.testing.assert_allclose(a.secondary.values, b.secondary.values, rtol=0, atol=2 * TOL)


def test_in_place_kernel_is_gauss_seidel():
    kernel = solvers._in_place_matvec()
    assert kernel is not None  # scipy's CSR kernel runs in place row by row here
    # v0 <- 1 + v1 / 2 then v1 <- v0 / 2 (the new v0), v1's own old value cancelled by -1
    indptr = np.array([0, 3, 5], dtype=np.int32)
    indices = np.array([0, 1, 2, 0, 1], dtype=np.int32)
    data = np.array([-1.0, 0.5, 1.0, 0.5, -1.0])
    v = np.array([0.0, 4.0, 1.0])
    kernel(2, 3, indptr, indices, data, v, v)
    np.testing.assert_array_equal(v, [3.0, 1.5, 1.0])


def test_direct_products_are_those_of_scipy_bit_for_bit(monkeypatch):
    """The backups and state distributions call scipy's CSR kernel directly (no checks per
    call); the products are `@`'s, bit for bit, with or without the kernel."""
    plan = plan_fleet(generate_scenario(load_map(MAPS / "warehouse" / "warehouse-2.map"), 1, seed=0),
                      backend="serial")[0]
    mdp, rng = plan.mdp, np.random.default_rng(3)
    matrix = mdp.action_major()
    x = rng.normal(size=mdp.n_states)
    out = np.full(matrix.shape[0], np.nan)
    assert solvers._plain_matvec() is not None
    np.testing.assert_array_equal(solvers._product(matrix)(x, out), matrix @ x)
    p_t = mdp.policy_matrix(plan.policy).T.tocsr()
    reference = [np.eye(mdp.n_states)[mdp.start]]
    for _ in range(30):
        reference.append(p_t @ reference[-1])
    direct = solvers.state_distributions(mdp, plan.policy, 30)
    np.testing.assert_array_equal(direct, reference)
    # computed on the states reached from the start only: every other state has probability 0
    reach, reached = solvers.reached_state_distributions(mdp, plan.policy, 30)
    others = np.setdiff1d(np.arange(mdp.n_states), reach)
    assert len(others) and not np.asarray(reference)[:, others].any()
    np.testing.assert_array_equal(reached, np.asarray(reference)[:, reach])
    elsewhere = int(reach[len(reach) // 2])
    from_there = [np.eye(mdp.n_states)[elsewhere]]
    for _ in range(10):
        from_there.append(p_t @ from_there[-1])
    np.testing.assert_array_equal(solvers.state_distributions(mdp, plan.policy, 10, start=elsewhere), from_there)
    fast = value_iteration(mdp)
    monkeypatch.setitem(solvers._KERNELS, "plain", None)
    np.testing.assert_array_equal(solvers._product(matrix)(x, out), matrix @ x)
    np.testing.assert_array_equal(solvers.state_distributions(mdp, plan.policy, 30), reference)
    slow = value_iteration(mdp)
    np.testing.assert_array_equal(fast.values, slow.values)
    np.testing.assert_array_equal(fast.q_values, slow.q_values)


def test_solving_leaves_the_mdp_unchanged_and_layouts_are_not_pickled():
    plan = plan_fleet(generate_scenario(load_map(MAPS / "salp" / "salp-1.map"), 1, seed=0), backend="serial")[0]
    mdp = plan.mdp
    before = (mdp.transitions.data.copy(), mdp.transitions.indices.copy(), mdp.transitions.indptr.copy(),
              mdp.rewards.copy(), mdp.terminal.copy())
    penalty = -np.where(np.arange(mdp.n_states) % 3 == 0, 2.0, 0.0)
    for method in solvers.METHODS:
        value_iteration(mdp, method=method)
        lexicographic_policy_that_finishes(mdp, penalty, 100.0, task_result=plan.task_solution, method=method)
    after = (mdp.transitions.data, mdp.transitions.indices, mdp.transitions.indptr, mdp.rewards, mdp.terminal)
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    assert "_derived" in mdp.__dict__
    assert "_derived" not in pickle.loads(pickle.dumps(mdp)).__dict__
    # the renumbered MDP is the same MDP
    _, order, position = mdp.sweep_order()
    renumbered = mdp.sorted_for_sweeps()
    v = np.random.default_rng(0).random(mdp.n_states)
    np.testing.assert_allclose((renumbered.transitions @ v[order]).reshape(-1, mdp.n_actions),
                               (mdp.transitions @ v).reshape(-1, mdp.n_actions)[order], rtol=0, atol=1e-15)
    assert np.all(np.diff(mdp.sweep_order()[0][order]) >= 0) and position[order[0]] == 0


def test_rejects_an_unknown_method():
    mats, _ = random_mdp(np.random.default_rng(0), 4, 2)
    mdp = TabularMDP.from_matrices(mats, np.zeros((4, 2)), 0.9)
    with pytest.raises(ValueError, match="method must be one of"):
        value_iteration(mdp, method="fast")


@pytest.mark.parametrize("map_name", ["salp/salp-2.map", "overcooked/overcooked-1.map", "warehouse/warehouse-1.map"])
def test_evaluate_from_start_equals_finishes_surely_and_policy_evaluation(map_name):
    """The start-only evaluation that budgeted planning uses (on the states the policy reaches)
    against the whole-MDP reference, on optimal and on randomly perturbed policies (many of
    which never finish)."""
    from metareasoner.mitigation import Fleet
    from planner.maps import load_map
    from planner.mdp import csr_rows
    from planner.scenario import generate_scenario
    from planner.solvers import evaluate_from_start, finishes_surely, policy_evaluation

    fleet = Fleet.plan(generate_scenario(load_map(MAPS / map_name), 4, seed=0), backend="serial")
    rng = np.random.default_rng(0)
    finishing = stuck = 0
    for plan in fleet.plans:
        mdp = plan.mdp
        rows = rng.integers(0, mdp.n_states * mdp.n_actions, 50)
        assert (csr_rows(mdp.transitions, rows) != mdp.transitions[rows]).nnz == 0
        for k in range(12):
            flip = rng.random(mdp.n_states) < 0.04 * k
            policy = np.where(flip, rng.integers(0, mdp.n_actions, mdp.n_states), plan.policy)
            value = evaluate_from_start(mdp, policy)
            on_rows = solvers._evaluate_from_start_rows(mdp, policy, None)  # MDPs that cannot be padded
            if finishes_surely(mdp, policy)[mdp.start]:
                finishing += 1
                reference = policy_evaluation(mdp, policy)[mdp.start]
                assert value == pytest.approx(reference, rel=1e-10, abs=1e-10)
                assert on_rows == pytest.approx(reference, rel=1e-10, abs=1e-10)
            else:
                stuck += 1
                assert value is None and on_rows is None
    assert finishing and stuck  # both branches exercised
    assert mdp.padded_rows() is not None  # the padded path is the one tested


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12), st.integers(1, 3), st.floats(0.05, 0.6),
       st.floats(0.0, 0.4), st.floats(0.5, 0.99))
def test_evaluate_from_start_on_random_mdps(seed, n_states, n_actions, density, terminal_fraction, gamma):
    """Random sparse MDPs (self-loops, closed classes without a terminal state, rows of every
    length) and random policies: the start-only evaluation, padded or on sparse rows, is
    `finishes_surely` and `policy_evaluation` at the start."""
    rng = np.random.default_rng(seed)
    mats, terminal = random_mdp(rng, n_states, n_actions, density, terminal_fraction)
    for m in mats:
        m[terminal] = 0.0
        m[terminal, terminal] = 1.0
    mdp = TabularMDP.from_matrices(mats, -rng.random((n_states, n_actions)) * ~terminal[:, None], gamma,
                                   terminal=terminal)
    from planner.solvers import evaluate_from_start
    for _ in range(4):
        policy = rng.integers(0, n_actions, n_states)
        values = [evaluate_from_start(mdp, policy), solvers._evaluate_from_start_rows(mdp, policy, None)]
        if finishes_surely(mdp, policy)[mdp.start]:
            reference = policy_evaluation(mdp, policy)[mdp.start]
            assert values == [pytest.approx(reference, rel=1e-9, abs=1e-9)] * 2
        else:
            assert values == [None, None]


def test_the_unrestricted_finishing_policy_is_kept_and_never_shared(shipped_plans):
    mdp = shipped_plans[SHIPPED[0]][0].mdp
    every = np.ones(mdp.n_states * mdp.n_actions, bool)
    first = solvers._finishing_policy(mdp, every)
    np.testing.assert_array_equal(first, solvers._finishing_policy_over(mdp, every))
    first[:] = -1  # a caller changing its copy changes nothing kept
    np.testing.assert_array_equal(solvers._finishing_policy(mdp, every), solvers._finishing_policy_over(mdp, every))
    assert finishes_surely(mdp, solvers._finishing_policy(mdp, every)).all()
