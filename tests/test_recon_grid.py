"""The RECON authors' grids (planner/recon_grid.py): their fifteen test grids load with their
task semantics and plan with their fleet sizes; the tasks match what their own code assigns
(run on a copy of ../shared/peers/recon-nse-mitigation when it is there); our semantics,
detection and errors."""
from __future__ import annotations

import copy
import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import label

from planner.maps import load_map
from planner.recon_grid import GOAL_DEPOSIT, START, WEIGHTS, goal_deposit, looks_like_recon_grid, read_recon_grid
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import finishes_surely
from planner.world import MapError

from conftest import ROOT

DATA = ROOT / "tests" / "data" / "recon-nse-mitigation"
GRIDS = sorted(DATA.glob("grids/*/test_grid*.txt"))
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def peer_checkout() -> Path | None:
    """Their repository as the project's shared folder holds it (../shared/peers/ of /work/main)."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "peers" / "recon-nse-mitigation"
        if (candidate / "salp_mdp.py").exists():
            return candidate
    return None


def their_cells(path: Path, symbol: str) -> set[tuple[int, int]]:
    rows = path.read_text().rstrip("\n").split("\n")
    return {(x, y) for y, row in enumerate(rows) for x, ch in enumerate(row) if ch == symbol}


def test_the_committed_grids_are_theirs():
    assert len(GRIDS) == 15 and "MIT License" in (DATA / "LICENSE").read_text()
    peers = peer_checkout()
    if peers is None:
        pytest.skip("../shared/peers/recon-nse-mitigation is not on this machine; the committed copy is used alone")
    for path in GRIDS:
        assert path.read_bytes() == (peers / path.relative_to(DATA)).read_bytes(), path


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_each_test_grid_loads_with_their_tasks_and_plans(path):
    domain = path.parent.name
    before = path.read_bytes()
    for n, (first, second) in GOAL_DEPOSIT.items():
        world = read_recon_grid(path, semantics="recon", robots=n)
        assert world.domain == domain and len(world.robots) == n
        assert {t.start for t in world.robots} == {START[domain]} and world.starts == (START[domain],)
        kinds = [_kind(world, t) for t in world.robots]
        assert kinds == [0] * first + [1] * second, n  # their task_list: the first type, then the second
    assert path.read_bytes() == before  # (their own reader rewrites the file it reads; ours only reads)
    # their NSE cells: every coral cell on its own (salp), every wastebin or corridor cell together
    nse_symbol = {"salp": "C", "overcooked": "W", "warehouse": "s"}[domain]
    cells = their_cells(path, nse_symbol)
    zoned = {(int(x), int(y)) for y, x in zip(*np.nonzero(world.zone_layer))}
    assert zoned == cells
    assert len(world.zone_names) == (len(cells) if domain == "salp" else 1)
    assert {r.value: r.weight for r in world.rules} == WEIGHTS[domain]
    assert world.passable.all() or domain == "overcooked"  # their salp and warehouse grids have no obstacles
    # their largest fleet on the first grid of each domain, their smallest on the others (a
    # warehouse fleet of 100 has 25 distinct tasks to solve, one of 10 has 10)
    n = 100 if path.stem == "test_grid0" else 10
    world = read_recon_grid(path, robots=n)
    plans = plan_fleet(generate_scenario(world, n, seed=0), backend="serial")
    assert [p.task for p in plans] == list(world.robots)
    for plan in plans:
        assert finishes_surely(plan.mdp, plan.policy)[plan.mdp.start], plan.task


def _kind(world, task) -> int:
    """0 for their first task type (salp A, onion soup, a shelf of the left half), 1 for the second."""
    if world.domain == "salp":
        return ("A", "B").index(world.items[task.items[0]].label)
    if world.domain == "overcooked":
        return ("onion", "tomato").index(task.option)
    return int(world.items[task.items[0]].cell[0] >= world.width // 2)


@pytest.fixture
def their_code(tmp_path):
    """Their modules imported from a copy of their repository (their reader rewrites grid files)."""
    peers = peer_checkout()
    if peers is None:
        pytest.skip("needs ../shared/peers/recon-nse-mitigation (their code) to compare with")
    folder = tmp_path / "recon"
    shutil.copytree(peers, folder)
    names = ("read_grid", "salp_mdp", "overcooked_mdp", "warehouse_mdp")
    saved = {n: sys.modules.pop(n, None) for n in names}
    sys.path.insert(0, str(folder))
    try:
        yield folder, {n: importlib.import_module(n) for n in names[1:]}
    finally:
        sys.path.remove(str(folder))
        for n in names:
            sys.modules.pop(n, None)
            if saved[n] is not None:
                sys.modules[n] = saved[n]


@pytest.mark.parametrize("n, grids", [(10, range(5)), (25, [0])])
def test_their_code_assigns_the_same_tasks(their_code, n, grids):
    # (building their agents takes about a second per 10 robots and grid: a few fleets suffice;
    # with 25, the robots of the second type wrap around the right half's 10 shelves; salp's
    # grids differ only in their coral, which the previous test compares on every grid)
    folder, mods = their_code
    deposit = GOAL_DEPOSIT[n]
    for k in grids:
        # warehouse: the shelf of each robot (their shelf_assigner and the robot's index)
        grid = folder / "grids" / "warehouse" / f"test_grid{k}.txt"
        env = mods["warehouse_mdp"].WarehouseEnvironment(n, deposit, str(grid))
        world = read_recon_grid(DATA / "grids" / "warehouse" / f"test_grid{k}.txt", robots=n)
        for i, task in enumerate(world.robots):
            agent = mods["warehouse_mdp"].WarehouseAgent(i, env)
            assert world.items[task.items[0]].cell == (agent.shelf_loc[1], agent.shelf_loc[0]), i
            assert task.start == (agent.start_location[1], agent.start_location[0])
        counters = {(j, i) for i, j in env.goal_locs}
        assert set(world.extras["counters"]) == counters
        if k != grids[0]:
            continue
        # salp: the sample type, the lab
        grid = folder / "grids" / "salp" / f"test_grid{k}.txt"
        env = mods["salp_mdp"].SalpEnvironment(n, deposit, str(grid))
        agents = [mods["salp_mdp"].SalpAgent(i, env) for i in range(n)]
        world = read_recon_grid(DATA / "grids" / "salp" / f"test_grid{k}.txt", robots=n)
        lab = world.extras["labs"][0]
        assert (int(env.s_goal_loc[1]), int(env.s_goal_loc[0])) == lab
        for agent, task in zip(agents, world.robots):
            site = world.items[task.items[0]]
            assert site.label == agent.assigned_sample
            assert env.All_States[site.cell[1]][site.cell[0]] == agent.assigned_sample
            assert (agent.start_location[1], agent.start_location[0]) == task.start


def test_their_overcooked_environment_raises_and_would_assign_no_cleaner(their_code):
    folder, mods = their_code
    oc = mods["overcooked_mdp"]
    grid = str(folder / "grids" / "overcooked" / "test_grid0.txt")
    with pytest.raises(TypeError, match="'module' object is not callable"):  # copy(self.task_list)
        oc.OvercookedEnvironment(10, (5, 5), grid)

    class CopyModule:  # what they meant: copy.copy, keeping copy.deepcopy
        __call__ = staticmethod(copy.copy)
        copy, deepcopy = staticmethod(copy.copy), staticmethod(copy.deepcopy)

    oc.copy = CopyModule()
    env = oc.OvercookedEnvironment(10, (5, 5), grid)
    agents = [oc.OvercookedAgent(i, env) for i in range(10)]
    # the shuffled list with cleaners 'C' is a local variable: every robot cooks
    assert [a.assigned_dish for a in agents] == ["O"] * 5 + ["T"] * 5
    world = read_recon_grid(DATA / "grids" / "overcooked" / "test_grid0.txt", robots=10)
    assert [t.option for t in world.robots] == ["onion"] * 5 + ["tomato"] * 5
    assert {t.start for t in world.robots} == {(agents[0].start_location[1], agents[0].start_location[0])}
    assert {(j, i) for i, j in env.dustbin_locations} == {(int(x), int(y)) for y, x in
                                                          zip(*np.nonzero(world.zone_layer))}


def test_our_semantics_generates_robots_with_one_zone_per_patch():
    path = DATA / "grids" / "salp" / "test_grid2.txt"
    world = load_map(path)  # detected; without robots= our semantics
    assert world.domain == "salp" and world.robots == () and world.extras["recon_semantics"] == "ours"
    assert len(world.starts) == world.width * world.height
    _, patches = label(np.array([[c == "C" for c in r] for r in path.read_text().split("\n")]), structure=CROSS)
    assert len(world.zone_names) == patches
    scenario = generate_scenario(world, 6, seed=3)
    assert len({t.start for t in scenario.tasks}) > 1
    assert all(finishes_surely(p.mdp, p.policy)[p.mdp.start] for p in plan_fleet(scenario, backend="serial"))
    corridor = load_map(DATA / "grids" / "warehouse" / "test_grid0.txt", format="recon-grid", semantics="ours")
    assert len(corridor.zone_names) > 1  # pieces of corridor, each its own zone


def test_detection_options_and_errors(tmp_path):
    path = DATA / "grids" / "warehouse" / "test_grid1.txt"
    assert looks_like_recon_grid(path.read_text())
    assert not looks_like_recon_grid((ROOT / "maps" / "salp" / "salp-1.map").read_text())
    world = load_map(path, robots=20)  # robots= implies their semantics
    assert world.extras["recon_semantics"] == "recon" and len(world.robots) == 20
    assert goal_deposit(30) == (15, 15) and goal_deposit(75) == (35, 40)
    mixed = load_map(path, robots=10, goal_deposit=(2, 8))
    assert [_kind(mixed, t) for t in mixed.robots] == [0] * 2 + [1] * 8
    # outside their folders the domain comes from the symbols
    elsewhere = tmp_path / "grid.txt"
    elsewhere.write_text((DATA / "grids" / "overcooked" / "test_grid0.txt").read_text())
    assert load_map(elsewhere, robots=4).domain == "overcooked"
    ragged = tmp_path / "salp" / "ragged.txt"
    ragged.parent.mkdir()
    ragged.write_text("SSSS\nSCG\nSASB")
    with pytest.raises(MapError, match=r"ragged\.txt:2:4: ragged grid"):
        load_map(ragged, format="recon-grid", robots=2)
    ragged.write_text("SSSS\nSCGQ\nSASB")
    with pytest.raises(MapError, match=r"ragged\.txt:2:4: unknown symbol 'Q' in a RECON salp grid"):
        load_map(ragged, format="recon-grid", robots=2)
    with pytest.raises(ValueError, match="depends on the fleet size"):
        load_map(path, semantics="recon")
    with pytest.raises(ValueError, match="adding up to robots=10"):
        load_map(path, robots=10, goal_deposit=(3, 3))
    with pytest.raises(ValueError, match="apply to RECON grids"):
        load_map(ROOT / "maps" / "salp" / "salp-1.map", robots=3)
    with pytest.raises(ValueError, match="unknown map format"):
        load_map(path, format="csv")
