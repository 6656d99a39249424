"""The Overcooked domain: shipped maps, task semantics, .layout files and map errors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from planner.domains import get_domain
from planner.domains.base import MOVE_NAMES, facing_cell
from planner.domains.overcooked import DISH, GARBAGE, HELD, NONE, SOUP
from planner.maps import load_map, load_map_text
from planner.mdp import build_mdp
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import finishes_surely, simulate, value_iteration
from planner.world import MapError, Task

MAPS_DIR = Path(__file__).resolve().parents[1] / "maps" / "overcooked"
MAP_FILES = sorted(MAPS_DIR.glob("*.map"))
LAYOUT_FILES = sorted(MAPS_DIR.glob("*.layout"))
ALL_FILES = MAP_FILES + LAYOUT_FILES
DOMAIN = get_domain("overcooked")
FOOD = [HELD.index(v) for v in ("onion", "tomato", "dish", "soup")]


def no_slip(world):
    return dataclasses.replace(world, params={**world.params, "slip": 0.0})


def small_map(grid: str, robots: str = "", extra: str = "", source: str = "bad.map") -> str:
    """A map text whose [grid] starts on line 7 (so error lines are predictable)."""
    text = f"[map]\ndomain = overcooked\nname = t\nslip = 0.0\n{extra or '# -'}\n[grid]\n{grid.strip()}\n"
    if robots:
        text += f"[robots]\n{robots}\n"
    return text


GOOD_GRID = """
XXPXXOX
O.....T
B.1..2S
XGXDXGX
"""


# ---------- shipped maps ----------

def test_at_least_five_instances_and_a_layout():
    names = {p.name for p in MAP_FILES}
    assert {f"overcooked-{i}.map" for i in range(1, 6)} <= names
    assert any(p.name == "cramped_room_bins.layout" for p in LAYOUT_FILES)


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.name)
def test_shipped_map_loads_with_bin_zones(path):
    world = load_map(path)
    assert world.domain == "overcooked"
    assert 8 <= world.width <= 12 and 7 <= world.height <= 9
    assert len(world.starts) >= 2
    assert len(world.items) >= 2 and all(it.kind == "garbage" for it in world.items)
    for key in ("pots", "dish", "serving", "bins"):
        assert world.extras[key], key
    assert world.extras["onion"] and world.extras["tomato"]
    # one zone per bin, covering walkable cells only, each within distance 2 of its bin
    assert len(world.zone_names) == len(world.extras["bins"])
    assert np.all(world.passable[world.zone_layer > 0])
    for k, (bx, by) in enumerate(world.extras["bins"], start=1):
        ys, xs = np.nonzero(world.zone_layer == k)
        assert len(xs) > 0
        assert np.all(np.maximum(abs(xs - bx), abs(ys - by)) <= 2)
    # rules on food values only
    values = {r.value for r in world.rules}
    assert values == {"onion", "tomato", "dish", "soup"}
    assert all(r.feature == "held" for r in world.rules)


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.name)
def test_fleet_policies_finish_and_stay_small(path):
    world = no_slip(load_map(path))
    scenario = generate_scenario(world, 6, seed=3)
    plans = plan_fleet(scenario)
    for plan in plans:
        assert plan.mdp.n_states <= 20_000
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start], plan.task
    # with slip too
    slippery = dataclasses.replace(world, params={**world.params, "slip": 0.2})
    for plan in plan_fleet(generate_scenario(slippery, 6, seed=3)):
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start], plan.task


def all_tasks(world):
    """Every cook (each soup, count 2) and clean (first two piles) task from every start."""
    tasks = []
    for start in world.starts:
        for soup in ("onion", "tomato"):
            if world.extras[soup]:
                tasks.append(Task("c", start, "cook", option=soup, count=2))
        if world.items:
            tasks.append(Task("g", start, "clean", tuple(range(min(2, len(world.items))))))
    return tasks


def food_near_bin(mdp):
    held = mdp.states[:, mdp.feature_index("held")]
    return np.isin(held, FOOD) & (mdp.states[:, mdp.feature_index("bin")] > 0)


@pytest.mark.parametrize("path", MAP_FILES, ids=lambda p: p.name)
def test_naive_routes_carry_food_near_bins_and_can_avoid_them(path):
    """Map design: some optimal cook passes a bin with food, and a bin-averse policy
    that pays a little per step near a bin carries food there less, at small cost."""
    world = no_slip(load_map(path))
    exposed, avoided = 0, 0
    for task in all_tasks(world):
        if task.kind != "cook":
            continue
        mdp = build_mdp(DOMAIN.make_problem(world, task))
        bad = food_near_bin(mdp)
        naive = value_iteration(mdp)
        averse = value_iteration(mdp, reward=mdp.rewards - 0.5 * bad[:, None])
        h = world.horizon
        n_naive = visits(mdp, naive.policy, h, bad)
        n_averse = visits(mdp, averse.policy, h, bad)
        steps_naive = visits(mdp, naive.policy, h, ~mdp.terminal)
        steps_averse = visits(mdp, averse.policy, h, ~mdp.terminal)
        exposed += n_naive > 0
        if n_averse < n_naive and steps_averse <= steps_naive + 25:
            avoided += 1
    assert exposed >= 2
    assert avoided >= 1


def visits(mdp, policy, horizon, mask):
    """Steps spent in `mask` states along the (deterministic, slip 0) run of `policy`."""
    traj = simulate(mdp, policy, horizon, seed=0)
    return int(mask[traj.states[0, :-1]].sum())


# ---------- transition semantics ----------

def decode(mdp, index):
    return dict(zip([f.name for f in mdp.features], mdp.states[index].tolist()))


def check_step(world, problem, task, s, a, t):
    """One simulated step s --a--> t obeys the task's rules."""
    action = problem.actions[a]
    grid = world.grid
    if action != "interact":
        assert t["held"] == s["held"], (action, s, t)
        for key in ("pot", "in_pot", "served", "cleaned"):
            if key in s:
                assert t[key] == s[key], (action, s, t)
        if action in MOVE_NAMES:
            assert t["orientation"] == a
        return
    assert (t["x"], t["y"], t["orientation"]) == (s["x"], s["y"], s["orientation"])
    fx, fy = facing_cell(np.array(s["x"]), np.array(s["y"]), np.array(s["orientation"]))
    faced = grid[int(fy), int(fx)]
    before, after = HELD[s["held"]], HELD[t["held"]]
    if before == after:
        assert t == s  # nothing happened
        return
    if task.kind == "cook":
        size = int(world.params["soup_size"])
        if before == "none" and after == task.option:
            assert faced == task.option[0].upper() and s["in_pot"] < size
        elif before == task.option and after == "none":
            assert faced == "P" and t["in_pot"] == s["in_pot"] + 1
            assert s["pot"] in (0, t["pot"]) and t["pot"] > 0
            px, py = world.extras["pots"][t["pot"] - 1]
            assert (px, py) == (int(fx), int(fy))
        elif before == "none" and after == "dish":
            assert faced == "D" and s["in_pot"] == size
        elif before == "dish" and after == "soup":
            assert faced == "P" and s["in_pot"] == size and t["in_pot"] == 0 and t["pot"] == 0
            assert world.extras["pots"][s["pot"] - 1] == (int(fx), int(fy))
        elif before == "soup" and after == "none":
            assert faced == "S" and t["served"] == s["served"] + 1
        else:
            raise AssertionError(f"unexpected change {before} -> {after}")
        if not (before == "soup" and after == "none"):
            assert t["served"] == s["served"]
    else:
        if before == "none" and after == "garbage":
            assert faced == "G"
            new = t["cleaned"] & ~s["cleaned"]
            assert bin(new).count("1") == 1
            k = task.items[new.bit_length() - 1]
            assert world.items[k].cell == (int(fx), int(fy))
        elif before == "garbage" and after == "none":
            assert faced == "B" and t["cleaned"] == s["cleaned"]
        else:
            raise AssertionError(f"unexpected change {before} -> {after}")


@pytest.mark.parametrize("path", MAP_FILES[:3] + LAYOUT_FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("slip", [0.0, 0.1])
def test_simulated_policies_follow_the_task(path, slip):
    world = load_map(path)
    world = dataclasses.replace(world, params={**world.params, "slip": slip})
    scenario = generate_scenario(world, 6, seed=11)
    kinds = set()
    for plan in plan_fleet(scenario):
        task, mdp = plan.task, plan.mdp
        kinds.add(task.kind)
        traj = simulate(mdp, plan.policy, 400, episodes=3, seed=5)
        for ep in range(3):
            changes = 0
            for step in range(400):
                s = decode(mdp, traj.states[ep, step])
                t = decode(mdp, traj.states[ep, step + 1])
                if mdp.terminal[traj.states[ep, step]]:
                    break
                check_step(world, plan.problem, task, s, traj.actions[ep, step], t)
                changes += s["held"] != t["held"]
            assert mdp.terminal[traj.states[ep, step]], "the episode never finished"
            final = decode(mdp, traj.states[ep, step])
            assert final["held"] == NONE
            if task.kind == "cook":
                assert final["served"] == task.count
                # each soup: soup_size ingredients in and out of hand, dish, soup, serve
                assert changes == task.count * (2 * int(world.params["soup_size"]) + 3)
            else:
                assert final["cleaned"] == 2 ** len(task.items) - 1
                assert changes == 2 * len(task.items)
    if path.suffix == ".map":
        assert kinds == {"cook", "clean"}


def test_every_state_and_action_respects_the_model():
    """Exhaustive over one MDP per kind: moves keep held and progress, interact keeps position,
    the bin feature always matches the zone layer, probabilities sum to 1."""
    world = load_map(MAP_FILES[4])
    for task in (Task("c", world.starts[0], "cook", option="tomato", count=2),
                 Task("g", world.starts[1], "clean", (0, 1))):
        problem = DOMAIN.make_problem(world, task)
        mdp = build_mdp(problem)
        states = mdp.states[~mdp.terminal]
        zone = problem.feature_index("bin")
        held = problem.feature_index("held")
        assert np.array_equal(mdp.states[:, zone], world.zone_layer[mdp.states[:, 1], mdp.states[:, 0]])
        for a, name in enumerate(problem.actions):
            outcomes = problem.transition_outcomes(states, a)
            total = sum(np.broadcast_to(p, (len(states),)) for _, p in outcomes)
            np.testing.assert_allclose(total, 1.0)
            for nxt, _ in outcomes:
                assert np.all(world.passable[nxt[:, 1], nxt[:, 0]])
                if name in MOVE_NAMES:
                    assert np.all(nxt[:, 2] == a)
                    assert np.array_equal(nxt[:, 3:zone], states[:, 3:zone])
                else:
                    assert np.array_equal(nxt[:, :3], states[:, :3])
                if name == "wait":
                    assert np.array_equal(nxt, states)
            if name == "interact":
                changed = outcomes[0][0][:, held] != states[:, held]
                assert changed.any() and not changed.all()


def test_move_turns_without_moving_into_a_counter_and_slip_keeps_intended_orientation():
    world = load_map_text(small_map(GOOD_GRID, extra="slip = 0.2").replace("slip = 0.0\n", ""))
    problem = DOMAIN.make_problem(world, Task("c", (2, 2), "cook", option="onion", count=1))
    start = problem.start_state()[None, :]
    assert start[0, 2] == 0  # facing north
    south = MOVE_NAMES.index("south")
    outcomes = problem.transition_outcomes(start, south)  # (2,3) is X: blocked
    cells = sorted((int(n[0, 0]), int(n[0, 1]), float(p[0])) for n, p in outcomes)
    assert cells == [(1, 2, 0.1), (2, 2, 0.8), (3, 2, 0.1)]
    assert all(n[0, 2] == south for n, _ in outcomes)
    # the zone feature follows the robot
    for n, _ in outcomes:
        assert n[0, -1] == world.zone_layer[n[0, 1], n[0, 0]]


def test_interact_rules_in_a_batch():
    world = no_slip(load_map_text(small_map(GOOD_GRID)))
    problem = DOMAIN.make_problem(world, Task("c", (2, 2), "cook", option="onion", count=1))
    names = [f.name for f in problem.features]
    assert names == ["x", "y", "orientation", "held", "pot", "in_pot", "served", "bin"]
    n, s, e, w = range(4)
    rows = np.array([
        # x y  or held pot in_pot served bin
        [1, 1, w, 0, 0, 0, 0, 0],   # faces onion O at (0,1): takes an onion
        [5, 1, e, 0, 0, 0, 0, 0],   # faces tomato T: wrong soup, nothing
        [2, 1, n, 1, 0, 0, 0, 0],   # faces pot P at (2,0) with an onion: in_pot 1, pot 1
        [2, 1, n, 1, 1, 2, 0, 0],   # pot full: keeps the onion
        [3, 2, s, 0, 1, 2, 0, 0],   # faces dish D at (3,3), pot full: takes a dish
        [3, 2, s, 0, 1, 1, 0, 0],   # pot not full: no dish
        [2, 1, n, 3, 1, 2, 0, 0],   # dish at its full pot: soup
        [5, 1, n, 1, 0, 0, 0, 0],   # faces (5,0) = onion dispenser O, holding onion: nothing
        [5, 2, e, 4, 0, 0, 0, 0],   # faces serving S at (6,2) with soup: served
        [1, 2, w, 0, 0, 0, 0, 0],   # faces the bin: nothing for a cook
    ])
    rows[:, 7] = world.zone_layer[rows[:, 1], rows[:, 0]]
    (nxt, p), = problem.transition_outcomes(rows, problem.actions.index("interact"))
    assert np.all(p == 1)
    expect_held = [1, 0, 0, 1, 3, 0, 4, 1, 0, 0]
    assert nxt[:, 3].tolist() == expect_held
    assert nxt[2, 4:6].tolist() == [1, 1]
    assert nxt[6, 4:6].tolist() == [0, 0]
    assert nxt[8, 6] == 1
    assert problem.is_terminal(nxt).tolist() == [False] * 8 + [True, False]


def test_second_pot_is_not_the_robots_pot():
    grid = """
XXPXPXX
O.....T
B.1..2S
XGXDXGX
"""
    world = no_slip(load_map_text(small_map(grid)))
    problem = DOMAIN.make_problem(world, Task("c", (2, 2), "cook", option="onion", count=1))
    assert problem.features[4].values == ("none", "2,0", "4,0")
    # holding a dish, pot 1 (2,0) full, facing pot 2 (4,0): no soup there; facing pot 1: soup
    rows = np.array([[4, 1, 0, DISH, 1, 2, 0, 0], [2, 1, 0, DISH, 1, 2, 0, 0],
                     [4, 1, 0, 1, 1, 1, 0, 0]])  # onion into the other pot: refused
    (nxt, _), = problem.transition_outcomes(rows, problem.actions.index("interact"))
    assert nxt[:, 3].tolist() == [DISH, SOUP, 1]


def test_clean_task_semantics():
    world = no_slip(load_map_text(small_map(GOOD_GRID, robots="g 2,2 clean 5,3 1,3")))
    task = world.robots[0]
    assert task.kind == "clean" and [world.items[i].cell for i in task.items] == [(5, 3), (1, 3)]
    problem = DOMAIN.make_problem(world, task)
    assert [f.name for f in problem.features] == ["x", "y", "orientation", "held", "cleaned", "bin"]
    n, s, e, w = range(4)
    rows = np.array([
        [5, 2, s, NONE, 0b00, 0],   # faces pile (5,3) = task pile 0
        [1, 2, s, NONE, 0b01, 0],   # faces pile (1,3) = task pile 1
        [1, 2, s, NONE, 0b11, 0],   # already cleaned: nothing
        [1, 2, w, GARBAGE, 0b01, 0],  # faces the bin with garbage: dropped
        [1, 2, s, GARBAGE, 0b01, 0],  # hands full: cannot pick another pile
    ])
    rows[:, 5] = world.zone_layer[rows[:, 1], rows[:, 0]]
    (nxt, _), = problem.transition_outcomes(rows, problem.actions.index("interact"))
    assert nxt[:, 3].tolist() == [GARBAGE, GARBAGE, NONE, NONE, GARBAGE]
    assert nxt[:, 4].tolist() == [0b01, 0b11, 0b11, 0b01, 0b01]
    assert problem.is_terminal(np.array([[1, 2, 0, NONE, 0b11, 0], [1, 2, 0, GARBAGE, 0b11, 0]])).tolist() == \
        [True, False]
    plan = plan_fleet(generate_scenario(world, 1))[0]
    assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start]


# ---------- generated tasks ----------

def test_random_tasks_respect_cook_fraction_and_map():
    world = load_map(MAP_FILES[0])
    rng = np.random.default_rng(0)
    for fraction, kinds in ((0.0, {"clean"}), (1.0, {"cook"})):
        w = dataclasses.replace(world, params={**world.params, "cook_fraction": fraction})
        tasks = [DOMAIN.random_task(w, f"r{i}", w.starts[0], rng) for i in range(40)]
        assert {t.kind for t in tasks} == kinds
        for t in tasks:
            if t.kind == "cook":
                assert t.option in ("onion", "tomato") and 1 <= t.count <= w.params["items_per_robot"]
            else:
                assert len(t.items) == min(w.params["items_per_robot"], len(w.items))
                assert len(set(t.items)) == len(t.items)
    mixed = [DOMAIN.random_task(world, "r", world.starts[0], rng) for _ in range(200)]
    share = np.mean([t.kind == "cook" for t in mixed])
    assert 0.45 < share < 0.75  # default cook_fraction 0.6
    assert {t.option for t in mixed if t.kind == "cook"} == {"onion", "tomato"}


def test_random_tasks_without_piles_or_tomatoes_cook_onions():
    grid = """
XXPXXOX
O.....X
X.1..2S
XXXDXXX
"""
    world = load_map_text(small_map(grid))
    rng = np.random.default_rng(1)
    tasks = [DOMAIN.random_task(world, "r", world.starts[0], rng) for _ in range(30)]
    assert all(t.kind == "cook" and t.option == "onion" for t in tasks)


# ---------- .layout files ----------

def test_cramped_room_layout_loads_and_plans():
    world = load_map(MAPS_DIR / "cramped_room_bins.layout")
    assert world.name == "cramped_room_bins" and world.domain == "overcooked"
    assert ["".join(r) for r in world.grid] == ["XXPXX", "O..2O", "X1..B", "XDXSX"]
    assert world.starts == ((3, 1), (1, 2))
    assert world.zone_names == ("bin-1",)
    assert world.extras["bins"] == [(4, 2)]
    zone_cells = {(int(x), int(y)) for y, x in zip(*np.nonzero(world.zone_layer))}
    assert zone_cells == {(2, 1), (3, 1), (2, 2), (3, 2)}
    assert {r.value: r.weight for r in world.rules} == {"soup": 3.0, "onion": 1.0, "tomato": 1.0, "dish": 1.0}
    assert world.extras["_grid_lines"] == [2, 3, 4, 5]
    plans = plan_fleet(generate_scenario(no_slip(world), 4, seed=2))
    for plan in plans:
        assert plan.task.kind == "cook" and plan.task.option == "onion"
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_layout_without_bins_has_no_zones_and_plans(tmp_path):
    path = write(tmp_path, "plain.layout", '''{
    "grid":  """XXPXX
                T  2O
                X1  X
                XDXSX""",
    "num_items_for_soup": 3,
    "cook_time": 20,
    "start_order_list": None,
    "slip": 0.0,
}''')
    world = load_map(path)
    assert world.zone_names == () and world.rules == () and not world.zone_layer.any()
    assert world.params["soup_size"] == 3 and world.slip == 0.0
    plans = plan_fleet(generate_scenario(world, 3, seed=0))
    for plan in plans:
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start]
        assert len(plan.problem.features[plan.problem.feature_index("in_pot")].values) == 4


def test_layout_with_two_bins_splits_zones_by_nearest_bin(tmp_path):
    path = write(tmp_path, "two.layout", '{"grid": """XXXPXXXXXX\n    B        O\n    X1      2X\n'
                                         '    XXDXBXSXXX"""}')
    world = load_map(path)
    assert world.extras["bins"] == [(0, 1), (4, 3)]
    assert world.zone_names == ("bin-1", "bin-2")
    assert world.zone_layer[1, 2] == 1  # distance 2 from both bins: the first one
    assert world.zone_layer[1, 3] == 2  # nearer the second
    assert world.zone_layer[2, 1] == 1 and world.zone_layer[2, 6] == 2
    assert world.zone_layer[1, 7] == 0  # too far from both
    assert np.all(world.passable[world.zone_layer > 0])


@pytest.mark.parametrize("text, where", [
    ("[1, 2, 3]", "bad.layout:1:1"),
    ('{"cook_time": 20}', "bad.layout:1:1"),
    ('{"grid": """XXPXX\n  O   2O\n  X1  X\n  XDXSX"""}', "bad.layout:2:3"),  # ragged rows
    ('{"grid": """XXPXX\n  O  2O\n  X1 ZX\n  XDXSX"""}', "bad.layout:3:6"),  # unknown symbol
    ('{"grid": """XXXXX\n  O  2O\n  X1  X\n  XDXSX"""}', "bad.layout:1:"),  # no pot
    ('{"grid": "XXPXX" + }', "bad.layout:1:"),
])
def test_malformed_layouts_name_the_file(tmp_path, text, where):
    path = write(tmp_path, "bad.layout", text)
    with pytest.raises(MapError) as err:
        load_map(path)
    assert str(err.value).startswith(str(tmp_path / where)), str(err.value)


# ---------- map errors name file:line:column ----------

@pytest.mark.parametrize("grid, robots, where, message", [
    (GOOD_GRID.replace("B.1", "B#1"), "", "bad.map:9:2", "unknown symbol '#'"),
    (GOOD_GRID.replace("XXPXX", "XXXXX"), "", "bad.map:7:1", "needs a pot"),
    (GOOD_GRID.replace("2S", "2X"), "", "bad.map:7:1", "needs a serving counter"),
    (GOOD_GRID.replace("XDX", "XXX"), "", "bad.map:7:1", "needs a dish dispenser"),
    (GOOD_GRID.replace("B.1", "X.1"), "", "bad.map:7:1", "need a garbage bin"),
    (GOOD_GRID, "c 2,2 cook leek 1", "bad.map:12:12", "unknown soup 'leek'"),
    (GOOD_GRID.replace("T\n", "X\n"), "c 2,2 cook tomato 1", "bad.map:12:12", "tomato dispenser"),
    (GOOD_GRID, "c 2,2 cook onion 0", "bad.map:12:18", "number of soups"),
    (GOOD_GRID, "c 2,2 cook onion", "bad.map:12:7", "cook onion|tomato"),
    (GOOD_GRID, "g 2,2 clean 3,3", "bad.map:12:13", "not a garbage pile"),
    (GOOD_GRID, "g 2,2 clean 1,3 9,9", "bad.map:12:17", "off the grid"),
    (GOOD_GRID, "g 2,2 clean 1,3 1,3", "bad.map:12:17", "listed twice"),
    (GOOD_GRID, "g 2,2 clean", "bad.map:12:7", "at least one garbage pile"),
    (GOOD_GRID, "g 2,2 bake 1,3", "bad.map:12:7", "unknown task kind"),
])
def test_bad_maps_raise_with_position(grid, robots, where, message):
    with pytest.raises(MapError) as err:
        load_map_text(small_map(grid, robots), "bad.map")
    assert str(err.value).startswith(where), str(err.value)
    assert message in str(err.value)


def test_good_small_map_loads():
    world = load_map_text(small_map(GOOD_GRID, robots="c 2,2 cook tomato 2\ng 5,2 clean 1,3"), "bad.map")
    assert [t.kind for t in world.robots] == ["cook", "clean"]
    assert world.extras["_grid_lines"][0] == 7


def test_a_region_without_a_kitchen_cleans_and_a_cook_there_is_refused():
    grid = """
XXPXXOX
O..X..T
B.1X..S
XGXXDXX
"""
    # the serving counter, the dishes and the tomatoes are only next to the right-hand room, which
    # has no start; the left-hand room has a pile and a bin, so its robots clean
    world = load_map_text(small_map(grid), "bad.map")
    assert world.starts == ((2, 2),)
    rng = np.random.default_rng(0)
    tasks = [DOMAIN.random_task(world, f"r{i}", (2, 2), rng) for i in range(20)]
    assert {t.kind for t in tasks} == {"clean"}
    plans = plan_fleet(generate_scenario(world, 3, seed=1))
    assert all(finishes_surely(p.mdp, p.policy)[p.mdp.start] for p in plans)
    with pytest.raises(MapError, match=r"bad.map:12:7: robot 'c' cannot cook onion soup alone from 2,2: its region "
                                       r"has no dish dispenser 'D' and no serving counter 'S'"):
        load_map_text(small_map(grid, robots="c 2,2 cook onion 1"), "bad.map")
    assert load_map_text(small_map(grid, robots="g 2,2 clean 1,3"), "bad.map").robots[0].kind == "clean"


def test_bad_parameters():
    with pytest.raises(MapError, match="soup_size must be at least 1"):
        load_map_text(small_map(GOOD_GRID, extra="soup_size = 0"), "bad.map")
    with pytest.raises(MapError, match="cook_fraction must be in"):
        load_map_text(small_map(GOOD_GRID, extra="cook_fraction = 1.5"), "bad.map")
