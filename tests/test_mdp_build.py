"""build_mdp on a hand-made problem whose MDP is known in closed form (no domain involved)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from planner.mdp import build_mdp
from planner.problem import Feature, RobotProblem
from planner.solvers import expected_steps, value_iteration


class LineProblem(RobotProblem):
    """Walk right along cells 0..L-1 to the last; 'right' fails with probability q.
    A second feature 'parity' flips on every successful move; cell L-1 is terminal."""

    actions = ("right", "stay")

    def __init__(self, length: int, q: float, start: int = 0) -> None:
        self.length, self.q, self.start = length, q, start
        self.discount = 0.9
        self.features = (Feature("cell", "local", tuple(map(str, range(length)))),
                         Feature("parity", "local", ("even", "odd")))

    def start_state(self):
        return np.array([self.start, 0])

    def transition_outcomes(self, states, action):
        if action == 1:
            return [(states.copy(), np.ones(len(states)))]
        moved = states.copy()
        moved[:, 0] += 1
        moved[:, 1] ^= 1
        return [(moved, np.full(len(states), 1 - self.q)), (states.copy(), np.full(len(states), self.q))]

    def task_reward(self, states, action):
        return -np.ones(len(states))

    def is_terminal(self, states):
        return states[:, 0] == self.length - 1


def test_reachable_states_transitions_and_values_in_closed_form():
    L, q = 6, 0.2
    mdp = build_mdp(LineProblem(L, q, start=2))
    # only cells 2..5 are reachable, each with one parity
    assert mdp.n_states == 4 and mdp.start == 0
    assert sorted(mdp.states[:, 0].tolist()) == [2, 3, 4, 5]
    np.testing.assert_array_equal(mdp.states[:, 1], mdp.states[:, 0] % 2)
    np.testing.assert_allclose(mdp.transitions.sum(axis=1).A.ravel(), 1.0)
    right = mdp.action_matrix(0).toarray()
    i3 = mdp.index_of(np.array([3, 1]))[0]
    i4 = mdp.index_of(np.array([4, 0]))[0]
    assert right[i3, i4] == pytest.approx(1 - q) and right[i3, i3] == pytest.approx(q)
    assert mdp.index_of(np.array([[3, 0], [0, 0]])).tolist() == [-1, -1]  # unreachable rows
    terminal = mdp.index_of(np.array([5, 1]))[0]
    assert mdp.terminal[terminal] and mdp.terminal.sum() == 1
    assert right[terminal, terminal] == 1 and np.all(mdp.rewards[terminal] == 0)
    solution = value_iteration(mdp, tolerance=1e-12)
    # V(d cells to go) solves V_d = -1 + 0.9 ((1-q) V_{d-1} + q V_d)
    v = [0.0]
    for _ in range(3):
        v.append((-1 + 0.9 * (1 - q) * v[-1]) / (1 - 0.9 * q))
    for cell, expected in zip((5, 4, 3, 2), v):
        idx = mdp.index_of(np.array([cell, cell % 2]))[0]
        assert solution.values[idx] == pytest.approx(expected, abs=1e-9)
    steps = expected_steps(mdp, solution.policy)
    assert steps[mdp.start] == pytest.approx(3 / (1 - q))


def test_index_of_state_agrees_with_index_of_on_every_row():
    """The scalar lookup (a robot's query) against the vectorised one, on every row of the
    feature grid: reachable states and unreachable ones."""
    mdp = build_mdp(LineProblem(9, 0.3, start=2))
    grid = np.array([[cell, parity] for cell in range(9) for parity in (0, 1)])
    expected = mdp.index_of(grid)
    assert (expected >= 0).sum() == mdp.n_states and (expected < 0).any()
    assert [mdp.index_of_state(row) for row in grid.tolist()] == expected.tolist()


def test_bad_problems_are_reported():
    class Broken(LineProblem):
        def transition_outcomes(self, states, action):
            out = super().transition_outcomes(states, action)
            return out[:1]  # probabilities no longer sum to 1

    with pytest.raises(ValueError, match="sum to 0.8"):
        build_mdp(Broken(4, 0.2))

    class OffRange(LineProblem):
        def is_terminal(self, states):
            return np.zeros(len(states), bool)  # walks off the end of the 'cell' feature

    with pytest.raises(ValueError, match="outside its value range"):
        build_mdp(OffRange(4, 0.0))
    with pytest.raises(ValueError, match="more than 2 reachable states"):
        build_mdp(LineProblem(6, 0.2), max_states=2)


def _assert_same_mdp(got, want):
    for name in ("states", "rewards", "terminal", "_keys", "_key_order", "_radix"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got.transitions, name), getattr(want.transitions, name), err_msg=name)
    assert (got.features, got.actions, got.start, got.discount) == (want.features, want.actions, want.start, want.discount)


def test_stacked_builds_are_the_single_builds_bit_for_bit():
    """build_mdps explores warehouse robots of one map and shelf count together; each MDP must be
    the one build_mdp gives alone (states in the same order, the same transition matrix), for
    1- and 2-shelf tasks, two maps and a problem of another kind in one call, in input order."""
    from pathlib import Path

    from planner.domains import get_domain
    from planner.maps import load_map
    from planner.mdp import MAX_STACKED, build_mdps
    from planner.recon_grid import read_recon_grid
    from planner.scenario import generate_scenario, task_key

    root = Path(__file__).resolve().parents[1]
    worlds = [load_map(root / "maps" / "warehouse" / "warehouse-1.map"),
              read_recon_grid(root / "tests" / "data" / "recon-nse-mitigation" / "grids" / "warehouse" / "test_grid0.txt",
                              robots=10)]
    problems = [LineProblem(7, 0.3, start=1)]
    for world, robots in zip(worlds, (60, 10)):
        tasks = {task_key(t): t for t in generate_scenario(world, robots, seed=3).tasks}
        problems += [get_domain(world.domain).make_problem(world, t) for t in tasks.values()]
        problems.append(LineProblem(5, 0.1))
    # one map's problems beyond MAX_STACKED (two chunks), both shelf counts, problems interleaved
    assert sum(getattr(p, "world", None) is worlds[0] for p in problems) > MAX_STACKED
    assert {p.n_items for p in problems if hasattr(p, "n_items")} == {1, 2}
    problems = problems[::2] + problems[1::2]
    stacked = build_mdps(problems)
    assert len(stacked) == len(problems)
    for problem, mdp in zip(problems, stacked):
        _assert_same_mdp(mdp, build_mdp(problem))


def test_problems_of_different_maps_or_shelf_counts_do_not_stack():
    from pathlib import Path

    from planner.domains.warehouse import StackedWarehouseProblem, WarehouseProblem
    from planner.maps import load_map
    from planner.scenario import generate_scenario

    world = load_map(Path(__file__).resolve().parents[1] / "maps" / "warehouse" / "warehouse-1.map")
    tasks = generate_scenario(world, 4, seed=0).tasks
    one, two = (WarehouseProblem(world, t) for t in tasks[:2])
    single = WarehouseProblem(world, dataclasses.replace(tasks[0], items=tasks[0].items[:1]))
    StackedWarehouseProblem([one, two])  # the same map and shelf count: fine
    with pytest.raises(ValueError, match="same number of shelves"):
        StackedWarehouseProblem([one, single])
    with pytest.raises(NotImplementedError, match="cannot be stacked"):
        LineProblem.stack([LineProblem(3, 0.1), LineProblem(4, 0.1)])
