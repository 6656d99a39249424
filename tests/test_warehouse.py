"""The warehouse domain: shipped maps, task semantics under simulation, closed-form values, map errors."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from planner.domains import get_domain
from planner.domains.base import MOVE_NAMES, reachable_cells
from planner.domains.warehouse import STATUSES, WarehouseDomain
from planner.maps import load_map, load_map_text
from planner.mdp import build_mdp
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import finishes_surely, policy_evaluation, simulate, value_iteration
from planner.world import MapError, Task

MAP_DIR = Path(__file__).resolve().parent.parent / "maps" / "warehouse"
MAPS = sorted(MAP_DIR.glob("*.map"))
WAITING, PICKED, PROCESSED, RETURNED = (STATUSES.index(s) for s in ("waiting", "picked", "processed", "returned"))


def no_slip(world):
    return dataclasses.replace(world, params={**world.params, "slip": 0.0})


def columns(problem):
    n = len(problem.task.items)
    return {
        "x": problem.feature_index("x"),
        "y": problem.feature_index("y"),
        "shelf": problem.feature_index("shelf"),
        "status": [problem.feature_index(f"status_{k}") for k in range(n)],
        "corridor": problem.feature_index("corridor"),
    }


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
    # x, y, shelf, status_0, status_1, corridor
    assert [f.name for f in mdp.features] == ["x", "y", "shelf", "status_0", "status_1", "corridor"]
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
    """Every step of one episode obeys the warehouse task rules."""
    c = columns(problem)
    items = [world.items[i] for i in problem.task.items]
    size_of = [1 + ("small", "big").index(it.label) for it in items]
    counters = set(world.extras["counters"])
    rows = mdp.states[traj_states]
    names = [mdp.actions[a] for a in traj_actions]
    history = [[int(rows[0, col])] for col in c["status"]]
    for t, name in enumerate(names):
        before, after = rows[t], rows[t + 1]
        if mdp.terminal[traj_states[t]]:
            np.testing.assert_array_equal(before, after)
            continue
        cell = (int(before[c["x"]]), int(before[c["y"]]))
        nx, ny = int(after[c["x"]]), int(after[c["y"]])
        assert after[c["corridor"]] == world.zone_layer[ny, nx]
        assert world.passable[ny, nx]
        # invariant: the shelf carried is the one picked or processed shelf, or none
        carried = [k for k, col in enumerate(c["status"]) if after[col] in (PICKED, PROCESSED)]
        assert len(carried) <= 1
        assert after[c["shelf"]] == (size_of[carried[0]] if carried else 0)
        changed = [k for k, col in enumerate(c["status"]) if after[col] != before[col]]
        assert len(changed) <= 1
        for k in changed:
            assert after[c["status"][k]] == before[c["status"][k]] + 1, "statuses advance one stage at a time"
            history[k].append(int(after[c["status"][k]]))
        if name in MOVE_NAMES:
            assert abs(nx - cell[0]) + abs(ny - cell[1]) <= 1
            assert not changed and after[c["shelf"]] == before[c["shelf"]]
            continue
        assert (nx, ny) == cell, "only moves change the position"
        if after[c["shelf"]] != before[c["shelf"]]:
            assert name in ("pick_up", "drop")
        if name == "pick_up" and changed:
            (k,) = changed
            assert before[c["shelf"]] == 0 and after[c["shelf"]] == size_of[k]
            assert after[c["status"][k]] == PICKED and cell == items[k].cell
        elif name == "process" and changed:
            (k,) = changed
            assert after[c["status"][k]] == PROCESSED and cell in counters
            assert after[c["shelf"]] == before[c["shelf"]] == size_of[k], "the shelf stays on the robot"
        elif name == "drop" and changed:
            (k,) = changed
            assert after[c["status"][k]] == RETURNED and cell == items[k].cell
            assert before[c["shelf"]] == size_of[k] and after[c["shelf"]] == 0
        else:
            assert not changed and after[c["shelf"]] == before[c["shelf"]]
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
            assert stages == [WAITING, PICKED, PROCESSED, RETURNED], (k, stages)
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


def test_robot_chooses_the_order_of_its_shelves():
    world = load_map(MAP_DIR / "warehouse-1.map")
    domain = get_domain("warehouse")
    start = world.starts[0]
    a = build_mdp(domain.make_problem(world, Task("r", start, "process", (0, 5))))
    b = build_mdp(domain.make_problem(world, Task("r", start, "process", (5, 0))))
    s0, s1 = a.feature_index("status_0"), a.feature_index("status_1")
    # either shelf may be carried first
    assert np.any((a.states[:, s0] == PICKED) & (a.states[:, s1] == WAITING))
    assert np.any((a.states[:, s0] == WAITING) & (a.states[:, s1] == PICKED))
    # never two shelves at once
    assert not np.any(np.isin(a.states[:, s0], (PICKED, PROCESSED)) & np.isin(a.states[:, s1], (PICKED, PROCESSED)))
    # the listed order does not constrain the robot
    va, vb = value_iteration(a).values[a.start], value_iteration(b).values[b.start]
    assert va == pytest.approx(vb, abs=1e-7)


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
    problem = get_domain("warehouse").make_problem(world, Task("r", world.starts[0], "process", (0, 1)))
    c = columns(problem)
    home0, home1 = world.items[0].cell, world.items[1].cell
    counter = world.extras["counters"][0]

    def state(cell, shelf, s0, s1):
        row = np.zeros(len(problem.features), np.int64)
        row[c["x"]], row[c["y"]], row[c["shelf"]] = cell[0], cell[1], shelf
        row[c["status"][0]], row[c["status"][1]] = s0, s1
        row[c["corridor"]] = world.zone_layer[cell[1], cell[0]]
        return row

    size0 = 1 + ("small", "big").index(world.items[0].label)
    cases = [
        ("pick_up", state(home1, size0, PICKED, WAITING)),  # already carrying shelf 0
        ("pick_up", state(counter, 0, WAITING, WAITING)),  # not at a shelf home
        ("process", state(home0, size0, PICKED, WAITING)),  # not at a counter
        ("process", state(counter, 0, RETURNED, WAITING)),  # carrying nothing
        ("drop", state(home0, size0, PICKED, WAITING)),  # not processed yet
        ("drop", state(home1, size0, PROCESSED, WAITING)),  # another shelf's home
        ("wait", state(home0, 0, WAITING, WAITING)),
    ]
    rows = np.stack([row for _, row in cases])
    for i, (name, row) in enumerate(cases):
        (nxt, p), = problem.transition_outcomes(rows, problem.actions.index(name))
        np.testing.assert_array_equal(nxt[i], row, err_msg=name)
        assert p[i] == 1.0
    # and the ones that apply do what they should, all in one batch
    good = np.stack([state(home0, 0, WAITING, WAITING), state(counter, size0, PICKED, WAITING),
                     state(home0, size0, PROCESSED, WAITING)])
    for i, (name, shelf, s0) in enumerate([("pick_up", size0, PICKED), ("process", size0, PROCESSED),
                                           ("drop", 0, RETURNED)]):
        (nxt, _), = problem.transition_outcomes(good, problem.actions.index(name))
        assert nxt[i, c["shelf"]] == shelf and nxt[i, c["status"][0]] == s0, name
    assert problem.is_terminal(np.stack([state(home0, 0, RETURNED, RETURNED)]))[0]
    assert not problem.is_terminal(np.stack([state(home0, 0, RETURNED, PROCESSED)]))[0]


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
