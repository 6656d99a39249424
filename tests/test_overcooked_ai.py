"""Overcooked-AI layouts: rooms (regions), forced coordination, layouts written as Python
expressions. The layouts come from tests/data/overcooked-ai (copied from the package, MIT;
see its SOURCE.md) or are written here: nothing is downloaded."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from planner.domains import get_domain
from planner.maps import load_map
from planner.overcooked_ai import markdown, sweep
from planner.scenario import Scenario, generate_scenario, plan_fleet
from planner.solvers import finishes_surely
from planner.world import MapError

DATA = Path(__file__).resolve().parent / "data" / "overcooked-ai"
DOMAIN = get_domain("overcooked")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test here fails if anything tries to open a connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test of the Overcooked-AI layouts tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def one_robot_per_start(world, seed=0):
    rng = np.random.default_rng(seed)
    return Scenario(world, tuple(DOMAIN.random_task(world, f"r{k}", s, rng) for k, s in enumerate(world.starts)))


def cells_of(plan):
    return {(int(x), int(y)) for x, y in plan.mdp.states[:, :2]}


def test_the_test_layouts_are_committed():
    assert {p.name for p in DATA.glob("*.layout")} == {
        "asymmetric_advantages.layout", "forced_coordination.layout", "tutorial_3.layout", "you_shall_not_pass.layout"}
    assert "MIT" in (DATA / "SOURCE.md").read_text()


def test_two_kitchen_layout_plans_with_a_robot_in_each_room():
    world = load_map(DATA / "asymmetric_advantages.layout")
    assert world.starts == ((6, 2), (1, 3))
    right, left = (world.region_of(s) for s in world.starts)
    assert right != left
    plans = plan_fleet(one_robot_per_start(world), backend="serial")
    for plan, region in zip(plans, (right, left)):
        assert plan.task.kind == "cook"
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start]
        # the robot's whole state space lies in its own room
        assert {world.region_of(c) for c in cells_of(plan)} == {region}
    assert not cells_of(plans[0]) & cells_of(plans[1])
    # generated fleets put robots in both rooms
    scenario = generate_scenario(world, 8, seed=0)
    assert {world.region_of(t.start) for t in scenario.tasks} == {left, right}


def test_a_layout_where_robots_must_hand_items_over_gets_the_forced_coordination_message(tmp_path):
    # our own: onions and dishes on the left, the pot and the serving counter on the right
    path = write(tmp_path, "handover.layout", '''{
    "grid":  """XXXXXXX
                O  X  P
                D1 X 2S
                XXXXXXX""",
}''')
    with pytest.raises(MapError) as error:
        load_map(path)
    text = str(error.value)
    assert text.startswith(f"{path}:4:18: forced coordination: ")  # the first start cell, '1' at x=1, y=2
    assert "the region of start 1,2 (4 cells) has no pot 'P' and no serving counter 'S'" in text
    assert "the region of start 5,2 (4 cells) has no onion 'O' or tomato 'T' dispenser and no dish dispenser 'D'" in text
    assert "transition independence" in text and "handed over a counter" in text
    # the package's own forced-coordination layout gets it too
    with pytest.raises(MapError, match="forced coordination: the region of start 3,1"):
        load_map(DATA / "forced_coordination.layout")


def test_one_hopeless_room_is_enough_to_refuse_but_a_map_without_starts_uses_the_good_rooms(tmp_path):
    kitchen_and_cell = '''{{"grid": """XXPXXXX
                           O {a}XX{b}X
                           X   X X
                           XDXSXXX"""}}'''
    with pytest.raises(MapError, match=r"the region of start 5,1 \(2 cells\) has no onion"):
        load_map(write(tmp_path, "a.layout", kitchen_and_cell.format(a="1", b="2")))
    world = load_map(write(tmp_path, "b.layout", kitchen_and_cell.format(a=" ", b=" ")))
    # no start cells: every cell of the kitchen's room is a start, the empty room's are not
    assert world.starts and {world.region_of(s) for s in world.starts} == {world.region_of((1, 1))}


def test_layouts_written_as_python_expressions_read_without_running_anything(tmp_path):
    literal = write(tmp_path, "literal.layout", '{"grid": """XXPXX\n  O  2O\n  X1  X\n  XDXSX"""}')
    expression = write(tmp_path, "expression.layout", '''{
    "grid": "XXPXX\\n" + "O  2O\\n"
            + "\\n".join(["X1  X",
                          "XDXSX"]),
    "order_bonus": float('inf'),
    "num_items_for_soup": 1 + 2,
    "slip": 0.5 * 0.1,
}''')
    a, b = load_map(literal), load_map(expression)
    assert np.array_equal(a.grid, b.grid) and a.starts == b.starts
    assert b.params["soup_size"] == 3 and b.slip == pytest.approx(0.05)
    assert b.extras["_grid_lines"] == [2, 2, 3, 4]  # where each row is written
    assert b.extras["_grid_columns"] == [14, 26, 27, 28]
    assert plan_fleet(generate_scenario(b, 2), backend="serial")
    # an unknown symbol in a row built by an expression: that row's line and column
    with pytest.raises(MapError, match=r"bad\.layout:3:30: unknown layout symbol 'Z'"):
        load_map(write(tmp_path, "bad.layout", expression.read_text().replace('"X1  X"', '"X1 ZX"')))
    # the package's layout with float('inf') in a key this reader ignores
    assert load_map(DATA / "tutorial_3.layout").starts == ((4, 1), (4, 3))


@pytest.mark.parametrize("value, message", [
    ("__import__('os').system('touch pwned')", "a call of __import__('os').system"),
    ("open('pwned', 'w').write('XXPXX')", "a call of open('pwned', 'w').write"),
    ("GRID", "the name 'GRID'"),
    ("'X' * 10 ** 9", "the operator Pow"),
    ("'XXXXXXXXXX' * 1000000", "more than 1000000 items"),
    ("[c for c in 'XPX']", "a ListComp expression"),
])
def test_expressions_that_are_not_simple_values_are_refused(tmp_path, monkeypatch, value, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, "evil.layout", '{\n  "grid": ' + value + "\n}")
    with pytest.raises(MapError) as error:
        load_map(path)
    assert str(error.value).startswith(f"{path}:2:"), str(error.value)
    assert message in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_a_layout_with_one_reachable_serving_counter_of_many_plans():
    world = load_map(DATA / "you_shall_not_pass.layout")
    assert len(world.extras["serving"]) == 16
    reach = world.region_reach(world.region_of(world.starts[0]))
    assert [c for c in world.extras["serving"] if reach[c[1], c[0]]]  # some, not all, are next to the room
    assert not all(reach[y, x] for x, y in world.extras["serving"])
    for plan in plan_fleet(one_robot_per_start(world), backend="serial"):
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start]


def test_the_sweep_reports_what_plans_and_what_is_refused():
    results = {r.name: r for r in sweep(DATA)}
    assert {n: r.status for n, r in results.items()} == {
        "asymmetric_advantages": "plans", "forced_coordination": "forced coordination",
        "tutorial_3": "plans", "you_shall_not_pass": "plans"}
    assert results["asymmetric_advantages"].regions == 2 and results["asymmetric_advantages"].robots == 2
    text = markdown(list(results.values()), "the test layouts", "python -m planner.overcooked_ai")
    assert "4 layouts: 3 plan, 1 are refused for forced coordination, 0 are refused" in text
    assert "- `forced_coordination`: forced coordination: the region of start 3,1" in text


def test_the_sweep_command(tmp_path, capsys):
    import importlib.util

    from planner.overcooked_ai import main

    report = tmp_path / "layouts.md"
    assert main(["--layouts", str(DATA), "--markdown", str(report)]) == 0
    assert "| asymmetric_advantages | plans | 2 | 2 |" in report.read_text()
    assert "forced_coordination                      forced coordination" in capsys.readouterr().out
    if importlib.util.find_spec("overcooked_ai_py") is None:
        assert main([]) == 2
        assert "pip install --no-deps overcooked-ai" in capsys.readouterr().err
