"""The warehouse domain: shipped maps, task semantics under simulation, closed-form values, map errors."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from planner.domains import get_domain
from planner.domains.base import MOVE_NAMES, reachable_cells
from planner.domains.warehouse import TRIPS, WarehouseDomain
from planner.maps import load_map, load_map_text
from planner.mdp import build_mdp
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import finishes_surely, policy_evaluation, simulate, value_iteration
from planner.world import MapError, Task

from metareasoner.blame import CounterfactualBlame
from metareasoner.mitigation import valid_value_table
from metareasoner.monitor import monte_carlo_monitor, robot_model
from metareasoner.penalty import NSEPenalty

MAP_DIR = Path(__file__).resolve().parent.parent / "maps" / "warehouse"
MAPS = sorted(MAP_DIR.glob("*.map"))
EMPTY, TO_COUNTER, RETURNING = (TRIPS.index(t) for t in ("empty", "to_counter", "returning"))
SMALL, BIG = 1, 2  # values of the shelf feature


def no_slip(world):
    return dataclasses.replace(world, params={**world.params, "slip": 0.0})


def columns(problem):
    n = len(problem.task.items)
    return {
        "x": problem.feature_index("x"),
        "y": problem.feature_index("y"),
        "shelf": problem.feature_index("shelf"),
        "trip": problem.feature_index("trip"),
        "done": [problem.feature_index(f"done_{k}") for k in range(n)],
        "corridor": problem.feature_index("corridor"),
    }


def sizes_of(world, task):
    return [1 + ("small", "big").index(world.items[i].label) for i in task.items]


def next_of_size(size_of, done, size):
    """The reference rule, one state at a time: the first not-done assigned shelf of `size`."""
    return next((k for k, s in enumerate(size_of) if s == size and not done[k]), None)


# ---------- shipped maps ----------

def test_at_least_five_instances():
    names = {p.name for p in MAPS}
    assert {f"warehouse-{i}.map" for i in range(1, 6)} <= names


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
def test_shipped_map_loads(path):
    world = load_map(path)
    domain = get_domain("warehouse")
    assert isinstance(domain, WarehouseDomain) and world.domain == "warehouse"
    assert 12 <= world.width <= 16 and 9 <= world.height <= 11
    assert len(world.starts) >= 2
    assert world.extras["counters"]
    assert {it.label for it in world.items} == {"small", "big"}
    for it in world.items:
        assert world.grid[it.cell[1], it.cell[0]] == ("s" if it.label == "small" else "S")
    # every corridor cell is in exactly one zone, and every zone is corridor floor
    corridor = world.grid == "="
    assert corridor.any() and world.zone_names
    np.testing.assert_array_equal(world.zone_layer > 0, corridor)
    # rules weigh big shelves more than small ones
    weight = {r.value: r.weight for r in world.rules if r.zone is None}
    assert weight["big"] > weight["small"] > 0
    # a detour: every shelf home and counter is reachable from every start without any corridor
    open_floor = world.passable & (world.zone_layer == 0)
    for start in world.starts:
        reach = reachable_cells(open_floor, start)
        for cell, _ in domain.targets(world, None):
            assert reach[cell[1], cell[0]], f"{cell} needs a corridor from {start}"


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
def test_mdp_size_bounded(path):
    world = load_map(path)
    assert world.params["items_per_robot"] == 2
    domain = get_domain("warehouse")
    # the two shelves farthest apart and the first start: still a small MDP
    items = (0, len(world.items) - 1)
    mdp = build_mdp(domain.make_problem(world, Task("r", world.starts[0], "process", items)))
    assert 100 < mdp.n_states < 30_000
    # no feature names the carried shelf: its size, the leg of the trip and one done bit per shelf
    assert [f.name for f in mdp.features] == ["x", "y", "shelf", "trip", "done_0", "done_1", "corridor"]
    assert [f.kind for f in mdp.features] == ["local", "local", "dynamic_global", "local", "local", "local",
                                              "static_global"]
    assert mdp.features[2].values == ("none", "small", "big")
    assert mdp.actions == MOVE_NAMES + ("pick_up", "process", "drop", "wait")


# ---------- planning and simulated semantics ----------

@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
@pytest.mark.parametrize("slip", [0.0, 0.1])
def test_fleet_finishes_surely(path, slip):
    world = load_map(path)
    world = dataclasses.replace(world, params={**world.params, "slip": slip})
    plans = plan_fleet(generate_scenario(world, 6, seed=3))
    assert len(plans) == 6
    for plan in plans:
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start], plan.task


def check_trajectory(world, problem, mdp, traj_states, traj_actions):
    """Every step of one episode obeys the warehouse task rules; returns each shelf's stages.

    The carried shelf is tracked here independently of the model: set at pick-up (the first
    not-done shelf of the picked size, in task order), cleared at drop.
    """
    c = columns(problem)
    items = [world.items[i] for i in problem.task.items]
    size_of = sizes_of(world, problem.task)
    counters = set(world.extras["counters"])
    rows = mdp.states[traj_states]
    names = [mdp.actions[a] for a in traj_actions]
    history = [[] for _ in items]
    carried = None
    for t, name in enumerate(names):
        before, after = rows[t], rows[t + 1]
        if mdp.terminal[traj_states[t]]:
            np.testing.assert_array_equal(before, after)
            continue
        cell = (int(before[c["x"]]), int(before[c["y"]]))
        nx, ny = int(after[c["x"]]), int(after[c["y"]])
        assert after[c["corridor"]] == world.zone_layer[ny, nx]
        assert world.passable[ny, nx]
        done_before = [int(before[col]) for col in c["done"]]
        done_after = [int(after[col]) for col in c["done"]]
        # invariants: trip is empty exactly when nothing is carried, and the carried size is the tracked shelf's
        assert (after[c["trip"]] == EMPTY) == (after[c["shelf"]] == 0)
        changed = [k for k in range(len(items)) if done_after[k] != done_before[k]]
        assert len(changed) <= 1 and all(done_after[k] == 1 for k in changed), "done bits are only ever set"
        if name in MOVE_NAMES:
            assert abs(nx - cell[0]) + abs(ny - cell[1]) <= 1
            assert not changed and after[c["shelf"]] == before[c["shelf"]] and after[c["trip"]] == before[c["trip"]]
            continue
        assert (nx, ny) == cell, "only moves change the position"
        acted = not np.array_equal(before, after)
        if name == "pick_up" and acted:
            assert before[c["shelf"]] == 0 and carried is None and not changed
            size = int(after[c["shelf"]])
            k = next_of_size(size_of, done_before, size)
            assert k is not None and cell == items[k].cell, "picks the first not-done shelf of its size, at its home"
            assert after[c["trip"]] == TO_COUNTER
            carried = k
            history[k].append("picked")
        elif name == "process" and acted:
            assert cell in counters and carried is not None
            assert before[c["trip"]] == TO_COUNTER and after[c["trip"]] == RETURNING
            assert after[c["shelf"]] == before[c["shelf"]] == size_of[carried], "the shelf stays on the robot"
            history[carried].append("processed")
        elif name == "drop" and acted:
            assert changed == [carried] and cell == items[carried].cell, "dropped at the carried shelf's home"
            assert before[c["trip"]] == RETURNING and before[c["shelf"]] == size_of[carried]
            assert after[c["shelf"]] == 0 and after[c["trip"]] == EMPTY
            history[carried].append("returned")
            carried = None
        else:
            assert not acted, f"{name} changed the state"
        assert after[c["shelf"]] == (0 if carried is None else size_of[carried])
    return history


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
def test_simulated_episodes_follow_the_task(path):
    world = no_slip(load_map(path))
    plans = plan_fleet(generate_scenario(world, 6, seed=5))
    for plan in plans:
        traj = simulate(plan.mdp, plan.policy, world.horizon, episodes=1, seed=0)
        history = check_trajectory(world, plan.problem, plan.mdp, traj.states[0], traj.actions[0])
        assert plan.mdp.terminal[traj.states[0, -1]], "a deterministic optimal policy finishes within the horizon"
        for k, stages in enumerate(history):
            assert stages == ["picked", "processed", "returned"], (k, stages)
        # deterministic: the task value is the closed form of the number of steps taken
        done = int(np.flatnonzero(plan.mdp.terminal[traj.states[0]])[0])
        expected = -(1 - world.discount ** done) / (1 - world.discount)
        assert plan.task_value == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("path", MAPS[:2], ids=lambda p: p.stem)
def test_slippery_episodes_follow_the_task(path):
    world = load_map(path)
    assert world.slip > 0
    plans = plan_fleet(generate_scenario(world, 4, seed=11))
    for plan in plans:
        traj = simulate(plan.mdp, plan.policy, world.horizon, episodes=25, seed=1)
        for e in range(traj.states.shape[0]):
            check_trajectory(world, plan.problem, plan.mdp, traj.states[e], traj.actions[e])


def shelves_of(world, *labels):
    """Indices of the first world items with these labels, in order."""
    out = []
    for label in labels:
        out.append(next(i for i, it in enumerate(world.items) if it.label == label and i not in out))
    return tuple(out)


def carrying_with_nothing_done(mdp, size):
    cols = [mdp.feature_index(f"done_{k}") for k in range(sum(f.name.startswith("done_") for f in mdp.features))]
    return np.any((mdp.states[:, mdp.feature_index("shelf")] == size) & np.all(mdp.states[:, cols] == 0, axis=1))


def test_robot_chooses_which_size_to_carry_first():
    world = load_map(MAP_DIR / "warehouse-1.map")
    domain = get_domain("warehouse")
    start = world.starts[0]
    small, big = shelves_of(world, "small", "big")
    a = build_mdp(domain.make_problem(world, Task("r", start, "process", (small, big))))
    b = build_mdp(domain.make_problem(world, Task("r", start, "process", (big, small))))
    # both orders are feasible: carrying big with nothing done, and carrying small with nothing done
    assert carrying_with_nothing_done(a, BIG) and carrying_with_nothing_done(a, SMALL)
    # never two shelves at once: at most one carried size, and nothing carried once both are done
    shelf, d0, d1 = (a.feature_index(n) for n in ("shelf", "done_0", "done_1"))
    assert not np.any((a.states[:, d0] == 1) & (a.states[:, d1] == 1) & (a.states[:, shelf] > 0))
    # the listed order does not constrain a robot with shelves of both sizes
    va, vb = value_iteration(a).values[a.start], value_iteration(b).values[b.start]
    assert va == pytest.approx(vb, abs=1e-7)


def test_shelves_of_one_size_are_taken_in_task_order():
    world = load_map(MAP_DIR / "warehouse-1.map")
    domain = get_domain("warehouse")
    first, second = shelves_of(world, "small", "small")
    mdp = build_mdp(domain.make_problem(world, Task("r", world.starts[0], "process", (first, second))))
    d0, d1 = mdp.feature_index("done_0"), mdp.feature_index("done_1")
    assert np.any((mdp.states[:, d0] == 1) & (mdp.states[:, d1] == 0))
    assert not np.any((mdp.states[:, d0] == 0) & (mdp.states[:, d1] == 1)), "the second small shelf went first"
    assert not carrying_with_nothing_done(mdp, BIG)
    # so the listed order is part of the task: reversed, the other shelf goes first
    rev = build_mdp(domain.make_problem(world, Task("r", world.starts[0], "process", (second, first))))
    assert not np.any((rev.states[:, d0] == 0) & (rev.states[:, d1] == 1))


def other_size_variants(mdp):
    """(carrying states, their rows with the other size) of an MDP."""
    shelf = mdp.feature_index("shelf")
    carrying = np.flatnonzero(mdp.states[:, shelf] > 0)
    variants = mdp.states[carrying].copy()
    variants[:, shelf] = np.where(variants[:, shelf] == SMALL, BIG, SMALL)
    return carrying, variants


@pytest.mark.parametrize("path", MAPS, ids=lambda p: p.stem)
def test_the_other_shelf_size_is_a_valid_counterfactual(path):
    world = load_map(path)
    plans = plan_fleet(generate_scenario(world, len(world.robots) + 4, seed=2), backend="serial")
    for plan in plans[len(world.robots):]:  # the generated robots
        mdp = plan.mdp
        size_of = sizes_of(world, plan.task)
        assert sorted(set(size_of)) == [SMALL, BIG], "generated robots get both sizes"
        carrying, variants = other_size_variants(mdp)
        reachable = mdp.index_of(variants) >= 0
        assert reachable.sum() > 0
        # the variant exists exactly when a shelf of the other size is still to do
        done_cols = [mdp.feature_index(f"done_{k}") for k in range(len(size_of))]
        done = mdp.states[carrying][:, done_cols]
        other = variants[:, mdp.feature_index("shelf")]
        other_open = np.any((done == 0) & (np.array(size_of)[None, :] == other[:, None]), axis=1)
        np.testing.assert_array_equal(reachable, other_open)
        assert np.all(reachable[np.all(done == 0, axis=1)]), "all of them while both sizes are still to do"
        # the metareasoner's table agrees: valid counterfactual values exist in carrying states
        table = valid_value_table(plan, "shelf", 3)
        assert table.shape == (mdp.n_states, 3) and table[np.arange(mdp.n_states), mdp.states[:, 2]].all()
        np.testing.assert_array_equal(table[carrying, other], reachable)
        assert table[carrying, other].any()


def test_one_size_only_has_no_other_size_counterfactual():
    world = load_map(MAP_DIR / "warehouse-1.map")
    plan = plan_fleet(generate_scenario(world, 2, seed=0), backend="serial")[1]  # w2: two big shelves
    assert sizes_of(world, plan.task) == [BIG, BIG]
    carrying, variants = other_size_variants(plan.mdp)
    assert len(carrying) > 0 and not np.any(plan.mdp.index_of(variants) >= 0)
    assert not valid_value_table(plan, "shelf", 3)[carrying, SMALL].any()


def test_recon_uses_the_other_size():
    # RECON is no longer an even split in the warehouse: robots that could have carried the other
    # size are blamed by what that would have saved
    world = load_map(MAP_DIR / "warehouse-2.map")
    plans = plan_fleet(generate_scenario(world, 10, seed=0), backend="serial")
    domain = get_domain("warehouse")
    penalty = NSEPenalty.from_world(world, domain.dynamic_feature)
    models = [robot_model(p, "corridor", "shelf", p.policy) for p in plans]
    _, visits = monte_carlo_monitor(penalty, models, world.horizon, episodes=20, seed=0)
    states = visits.states.reshape(-1, len(plans))
    zone, value = visits.zone.reshape(states.shape), visits.value.reshape(states.shape)
    tables = [valid_value_table(p, "shelf", 3) for p in plans]
    valid = np.stack([tables[i][states[:, i]] for i in range(len(plans))], axis=1)  # (B, n, V)
    total, savings, participants = CounterfactualBlame().savings(penalty, zone, value, valid)
    blame = CounterfactualBlame().blame(penalty, zone, value, valid)
    nse = total > 0
    assert nse.any()
    other = np.take_along_axis(valid, np.where(value == SMALL, BIG, SMALL)[:, :, None], axis=2)[:, :, 0]
    assert (other & participants)[nse].any(), "some blamed robots could have carried the other size"
    assert np.all(savings[~other] == 0), "no valid counterfactual, nothing saved"
    even = np.where(participants, total[:, None] / np.maximum(participants.sum(axis=1), 1)[:, None], 0.0)
    differs = np.abs(blame - even).max(axis=1) > 1e-6 * np.maximum(total, 1e-12)
    assert differs[nse].any() and not differs[~nse].any()
    np.testing.assert_allclose(blame.sum(axis=1), total, rtol=1e-9)
    # where the split is uneven, those who could have saved more are blamed more
    for b in np.flatnonzero(differs)[:50]:
        i, j = np.argmax(savings[b]), np.argmin(np.where(participants[b], savings[b], np.inf))
        assert blame[b, i] > blame[b, j]


def test_generated_robots_get_both_sizes():
    world = load_map(MAP_DIR / "warehouse-2.map")
    for per_robot in (2, 3):
        w = dataclasses.replace(world, params={**world.params, "items_per_robot": per_robot})
        scenario = generate_scenario(w, 40, seed=7)
        for task in scenario.tasks:
            labels = [w.items[i].label for i in task.items]
            assert len(labels) == per_robot == len(set(task.items)) and {"small", "big"} <= set(labels)
            assert list(task.items) == sorted(task.items)
        # deterministic per seed, and the seed matters
        assert generate_scenario(w, 40, seed=7).tasks == scenario.tasks
        assert generate_scenario(w, 40, seed=8).tasks != scenario.tasks
    # one shelf per robot: any shelf, both sizes among the fleet
    one = dataclasses.replace(world, params={**world.params, "items_per_robot": 1})
    tasks = generate_scenario(one, 40, seed=7).tasks
    assert all(len(t.items) == 1 for t in tasks)
    assert {one.items[t.items[0]].label for t in tasks} == {"small", "big"}


def test_a_map_with_one_size_still_generates_robots():
    text = GOOD.replace("#..S..#", "#..s..#").replace("items_per_robot = 1", "items_per_robot = 2")
    world = load_map_text(text, "small-only.map")
    tasks = generate_scenario(world, 5, seed=0).tasks[1:]
    assert all(sorted(t.items) == [0, 1] for t in tasks)


def test_batch_transitions_equal_one_state_at_a_time():
    world = load_map(MAP_DIR / "warehouse-4.map")
    problem = get_domain("warehouse").make_problem(world, Task("r", world.starts[0], "process", (0, 3)))
    mdp = build_mdp(problem)
    live = mdp.states[~mdp.terminal]
    for a in range(len(problem.actions)):
        batch = problem.transition_outcomes(live, a)
        for i in range(0, len(live), 37):
            single = problem.transition_outcomes(live[i:i + 1], a)
            assert len(single) == len(batch)
            for (nb, pb), (ns, ps) in zip(batch, single):
                np.testing.assert_array_equal(nb[i], ns[0])
                assert pb[i] == pytest.approx(ps[0])


def test_actions_that_do_not_apply_change_nothing():
    world = load_map(MAP_DIR / "warehouse-1.map")
    # shelves 0 and 3 are small, 1 is big: two of one size and one of the other
    assert [world.items[i].label for i in (0, 3, 1)] == ["small", "small", "big"]
    problem = get_domain("warehouse").make_problem(world, Task("r", world.starts[0], "process", (0, 3, 1)))
    c = columns(problem)
    home0, home3, home1 = (world.items[i].cell for i in (0, 3, 1))
    counter = world.extras["counters"][0]

    def state(cell, shelf, trip, done):
        row = np.zeros(len(problem.features), np.int64)
        row[c["x"]], row[c["y"]], row[c["shelf"]], row[c["trip"]] = cell[0], cell[1], shelf, trip
        row[c["done"]] = done
        row[c["corridor"]] = world.zone_layer[cell[1], cell[0]]
        return row

    cases = [
        ("pick_up", state(home1, SMALL, TO_COUNTER, (0, 0, 0))),  # already carrying a shelf
        ("pick_up", state(counter, 0, EMPTY, (0, 0, 0))),  # not at a shelf home
        ("pick_up", state(home3, 0, EMPTY, (0, 0, 0))),  # small shelf 0 comes before small shelf 3
        ("pick_up", state(home1, 0, EMPTY, (0, 0, 1))),  # shelf 1 is done
        ("process", state(home0, SMALL, TO_COUNTER, (0, 0, 0))),  # not at a counter
        ("process", state(counter, 0, EMPTY, (1, 0, 0))),  # carrying nothing
        ("process", state(counter, BIG, RETURNING, (0, 0, 0))),  # processed already
        ("drop", state(home0, SMALL, TO_COUNTER, (0, 0, 0))),  # not processed yet
        ("drop", state(home3, SMALL, RETURNING, (0, 0, 0))),  # the carried small shelf is 0, not 3
        ("drop", state(home1, SMALL, RETURNING, (0, 0, 0))),  # another shelf's home
        ("drop", state(home0, 0, EMPTY, (0, 0, 0))),  # carrying nothing
        ("wait", state(home0, 0, EMPTY, (0, 0, 0))),
    ]
    rows = np.stack([row for _, row in cases])
    for i, (name, row) in enumerate(cases):
        (nxt, p), = problem.transition_outcomes(rows, problem.actions.index(name))
        np.testing.assert_array_equal(nxt[i], row, err_msg=f"case {i}: {name}")
        assert p[i] == 1.0
    # and the ones that apply do what they should, all in one batch
    good = [
        ("pick_up", state(home0, 0, EMPTY, (0, 0, 0)), (SMALL, TO_COUNTER, (0, 0, 0))),
        ("pick_up", state(home1, 0, EMPTY, (0, 0, 0)), (BIG, TO_COUNTER, (0, 0, 0))),  # either size first
        ("pick_up", state(home3, 0, EMPTY, (1, 0, 0)), (SMALL, TO_COUNTER, (1, 0, 0))),  # shelf 0 done: 3 is next
        ("process", state(counter, BIG, TO_COUNTER, (1, 0, 0)), (BIG, RETURNING, (1, 0, 0))),
        ("drop", state(home0, SMALL, RETURNING, (0, 0, 1)), (0, EMPTY, (1, 0, 1))),
        ("drop", state(home3, SMALL, RETURNING, (1, 0, 0)), (0, EMPTY, (1, 1, 0))),
        ("drop", state(home1, BIG, RETURNING, (1, 1, 0)), (0, EMPTY, (1, 1, 1))),
    ]
    rows = np.stack([row for _, row, _ in good])
    for i, (name, row, (shelf, trip, done)) in enumerate(good):
        (nxt, _), = problem.transition_outcomes(rows, problem.actions.index(name))
        expected = row.copy()
        expected[c["shelf"]], expected[c["trip"]], expected[c["done"]] = shelf, trip, done
        np.testing.assert_array_equal(nxt[i], expected, err_msg=f"case {i}: {name}")
    assert problem.is_terminal(np.stack([state(home0, 0, EMPTY, (1, 1, 1))]))[0]
    assert not problem.is_terminal(np.stack([state(home0, 0, EMPTY, (1, 0, 1)),
                                             state(home0, BIG, RETURNING, (1, 1, 0))])).any()


# ---------- corridor versus detour: closed-form task values ----------

CORRIDOR_ONLY = """
[map]
domain = warehouse
slip = 0.0
discount = 0.9

[grid]
##########
#0s.==.K.#
##########

[zones]
c = corridor

[zone-layer]
..........
....cc....
..........

[rules]
* shelf small 1.0 1.0
"""
BOTH = CORRIDOR_ONLY.replace("##########\n\n[zones]", "#.######.#\n#........#\n##########\n\n[zones]").replace(
    "..........\n\n[rules]", "..........\n..........\n..........\n\n[rules]")
DETOUR_ONLY = BOTH.replace("#0s.==.K.#", "#0s.##.K.#").replace("....cc....", "..........").replace(
    "[zones]\nc = corridor\n", "")


def closed_form(steps: int, gamma: float) -> float:
    return -(1 - gamma ** steps) / (1 - gamma)


def start_value(text: str):
    world = load_map_text(text, "tiny.map")
    domain = get_domain("warehouse")
    mdp = build_mdp(domain.make_problem(world, Task("r", world.starts[0], "process", (0,))))
    result = value_iteration(mdp, tolerance=1e-12)
    return float(result.values[mdp.start]), mdp, result


def test_corridor_versus_detour_closed_form():
    gamma = 0.9
    # start (1,1), shelf (2,1), counter (7,1). Corridor route shelf->counter: 5 moves.
    # Detour: (2,1)->(1,1)->(1,2)->(1,3), 7 east to (8,3), north to (8,1), west to (7,1): 13 moves.
    to_shelf, corridor_leg, detour_leg = 1, 5, 13
    n_corridor = to_shelf + 1 + corridor_leg + 1 + corridor_leg + 1  # move, pick_up, go, process, back, drop
    n_detour = to_shelf + 1 + detour_leg + 1 + detour_leg + 1
    assert n_corridor == 14 and n_detour == 30
    v_corr, *_ = start_value(CORRIDOR_ONLY)
    v_det, *_ = start_value(DETOUR_ONLY)
    v_both, mdp, result = start_value(BOTH)
    assert v_corr == pytest.approx(closed_form(n_corridor, gamma), abs=1e-9)
    assert v_det == pytest.approx(closed_form(n_detour, gamma), abs=1e-9)
    # the detour costs exactly its extra length, both ways: gamma^14 (1 - gamma^16) / (1 - gamma)
    assert v_corr - v_det == pytest.approx(gamma ** n_corridor * (1 - gamma ** (2 * (detour_leg - corridor_leg)))
                                           / (1 - gamma), abs=1e-9)
    # with both routes open the optimal robot takes the corridor ...
    assert v_both == pytest.approx(v_corr, abs=1e-9)
    traj = simulate(mdp, result.policy, 40, seed=0)
    corridor_col = mdp.feature_index("corridor")
    assert np.any(mdp.states[traj.states[0], corridor_col] > 0)
    # ... and a policy that never enters the corridor still finishes, at exactly the detour's value
    shelf_col = mdp.feature_index("shelf")
    in_corridor = mdp.states[:, corridor_col] > 0
    penalty = np.where(in_corridor, -1.0, 0.0)
    avoid = value_iteration(mdp, reward=mdp.rewards + 100.0 * penalty[:, None], tolerance=1e-12)
    avoid_traj = simulate(mdp, avoid.policy, 40, seed=0)
    assert not np.any(in_corridor[avoid_traj.states[0]])
    assert np.any(mdp.states[avoid_traj.states[0], shelf_col] > 0)
    assert finishes_surely(mdp, avoid.policy)[mdp.start]
    assert policy_evaluation(mdp, avoid.policy)[mdp.start] == pytest.approx(v_det, abs=1e-9)


# ---------- bad inputs ----------

GOOD = """[map]
domain = warehouse
name = bad
items_per_robot = 1

[grid]
#######
#0.s.K#
#..S..#
#######

[robots]
w1 1,1 process 3,1
"""


def write(tmp_path, text):
    path = tmp_path / "bad.map"
    path.write_text(text)
    return path


def assert_map_error(tmp_path, text, line, column, words):
    path = write(tmp_path, text)
    with pytest.raises(MapError) as info:
        load_map(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:{column}: "), message
    assert info.value.line == line and info.value.column == column
    for word in words:
        assert re.search(word, message), (word, message)


def test_good_inline_map_loads(tmp_path):
    world = load_map(write(tmp_path, GOOD))
    assert [t.items for t in world.robots] == [(0,)]
    assert [it.label for it in world.items] == ["small", "big"]
    assert world.extras["counters"] == [(5, 1)]


def test_unknown_symbol(tmp_path):
    assert_map_error(tmp_path, GOOD.replace("#..S..#", "#..S.x#"), 9, 6, ["unknown symbol 'x'"])


def test_process_task_naming_a_non_shelf_cell(tmp_path):
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 3,1 4,1"), 13, 20, ["4,1", "not a shelf"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 5,1"), 13, 16, ["'K'", "not a shelf"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 0,0"), 13, 16, ["'#'", "not a shelf"])


def test_process_task_cell_off_the_grid(tmp_path):
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 3,2 9,1"), 13, 20, ["9,1", "off the grid"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 3,-1"), 13, 16, ["off the grid"])


def test_process_task_other_errors(tmp_path):
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process 3,1 3,1"), 13, 20, ["listed twice"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process"), 13, 8, ["at least one shelf"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "process three"), 13, 16, ["x,y"])
    assert_map_error(tmp_path, GOOD.replace("process 3,1", "collect 3,1"), 13, 8, ["unknown task kind"])


@pytest.mark.parametrize("old, new, what", [
    ("#0.s.K#", "#0.s..#", "counter"),
    ("#0.s.K#\n#..S..#", "#0...K#\n#.....#", "shelf"),
])
def test_missing_fixtures(tmp_path, old, new, what):
    text = GOOD.replace(old, new).replace("\n[robots]\nw1 1,1 process 3,1\n", "\n")
    path = write(tmp_path, text)
    with pytest.raises(MapError) as info:
        load_map(path)
    assert str(info.value).startswith(f"{path}: field 'grid': ") and what in str(info.value)


def test_unreachable_shelf(tmp_path):
    text = GOOD.replace("#0.s.K#\n#..S..#", "#0.#.K#\n#.#S#.#").replace("process 3,1", "process 3,2")
    assert_map_error(tmp_path, text, 9, 4, ["big shelf home at 3,2 cannot be reached"])
