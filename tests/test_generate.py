"""`mase generate`: seeded random maps that load, plan, have NSEs to mitigate, and only those."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metareasoner.monitor import exact_monitor, robot_model
from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.domains.base import reachable_cells
from planner.generate import GenerationError, MAX_SIDE, generate_map
from planner.maps import load_map_text
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import expected_steps
from mase.cli import main

DOMAINS = ("salp", "overcooked", "warehouse")
SEEDS = range(30)
#: what every generated map of a domain holds (grid symbols)
SYMBOLS = {"salp": set("#.CLab"), "overcooked": set("X.OTDPSBG"), "warehouse": set("#.=sSK")}


def smallest(domain):
    return get_domain(domain).min_map_size


def reachable_penalised_cells(world, plans):
    """(zone, value) cells some rule penalises, and how many of the robots can be in each
    (a state of its MDP), computed from the planned fleet rather than by the generator."""
    domain = get_domain(world.domain)
    feature = domain.dynamic_feature
    count = {}
    for plan in plans:
        mdp = plan.mdp
        pairs = {tuple(p) for p in mdp.states[:, [mdp.feature_index(domain.static_feature),
                                                  mdp.feature_index(feature.name)]].tolist()}
        for rule in world.rules:
            zones = range(1, len(world.zone_names) + 1) if rule.zone is None else [world.zone_index(rule.zone)]
            for z in zones:
                cell = (z, feature.index(rule.value))
                count[cell] = count.get(cell, 0) + (cell in pairs)
    return count


@pytest.mark.parametrize("domain", DOMAINS)
def test_generated_maps_load_plan_and_have_nses(domain):
    width, height = smallest(domain)
    dom = get_domain(domain)
    naive_nse = []
    for seed in SEEDS:
        # one start cell: fewer distinct tasks to plan keeps 30 seeds fast (more starts: the tests below)
        world = load_map_text(generate_map(domain, seed, width, height, starts=1), f"{domain}-{seed}")
        assert world.domain == domain and (world.width, world.height) == (width, height)
        assert SYMBOLS[domain] <= set(np.unique(world.grid)), f"seed {seed}: missing fixtures"
        assert len(world.starts) == 1 and all(world.symbol(c).isdigit() for c in world.starts)
        plans = plan_fleet(generate_scenario(world, 10, seed=seed), backend="serial")
        for plan in {id(p.mdp): p for p in plans}.values():  # robots with one task share one MDP
            assert np.isfinite(expected_steps(plan.mdp, plan.policy)[plan.mdp.start]), (seed, plan.task)
        # NSE zones with rules that several robots can meet in
        assert np.any(world.zone_layer > 0) and world.rules
        assert world.passable[world.zone_layer > 0].all(), "zone cells are cells robots stand on"
        assert max(reachable_penalised_cells(world, plans).values()) >= world.min_count, seed
        penalty = NSEPenalty.from_world(world, dom.dynamic_feature)
        models = [robot_model(p, dom.static_feature, dom.dynamic_feature.name, p.policy) for p in plans]
        report = exact_monitor(penalty, models, world.horizon, len(world.zone_names), len(dom.dynamic_feature.values),
                               world.min_count)
        naive_nse.append(report.total_penalty)
    # and the naive fleets actually cause them: there is something to mitigate
    assert np.mean(np.array(naive_nse) > 0) >= 0.9, naive_nse


def test_domain_layouts():
    for seed in range(5):
        # warehouse: corridors are the zones, each a row crossing the racks, with a corridor-free detour
        world = load_map_text(generate_map("warehouse", seed))
        np.testing.assert_array_equal(world.zone_layer > 0, world.grid == "=")
        assert {it.label for it in world.items} == {"small", "big"}
        open_floor = world.passable & (world.zone_layer == 0)
        for start in world.starts:
            reach = reachable_cells(open_floor, start)
            assert all(reach[y, x] for (x, y), _ in get_domain("warehouse").targets(world, None)), seed
        # generated warehouse robots have both sizes, so the other size is a valid counterfactual
        for task in generate_scenario(world, 5, seed=seed).tasks:
            assert {world.items[i].label for i in task.items} == {"small", "big"}
        # salp: the zones are the water around coral
        world = load_map_text(generate_map("salp", seed))
        coral = world.grid == "C"
        near = np.zeros_like(coral)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near |= np.roll(np.roll(coral, dy, axis=0), dx, axis=1)
        np.testing.assert_array_equal(world.zone_layer > 0, near & world.passable)
        # overcooked: every zone is a bin's neighbourhood
        world = load_map_text(generate_map("overcooked", seed))
        bins = np.argwhere(world.grid == "B")
        for y, x in np.argwhere(world.zone_layer > 0):
            assert np.abs(bins - (y, x)).max(axis=1).min() <= 2


@pytest.mark.parametrize("domain", DOMAINS)
def test_larger_maps_and_more_starts(domain):
    for width, height, starts in [(None, None, 3), (20, 12, 10)]:
        text = generate_map(domain, 4, width, height, starts)
        world = load_map_text(text)
        assert (world.width, world.height) == ((width, height) if width else get_domain(domain).map_size)
        assert len(world.starts) == starts


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_map(domain):
    maps = [generate_map(domain, s) for s in (7, 7, 8)]
    assert maps[0] == maps[1] and maps[0] != maps[2]
    assert generate_map(domain, 7, 20, 12) != maps[0]


def test_a_failed_check_retries_with_a_derived_seed(monkeypatch):
    domain = type(get_domain("salp"))
    real = domain.random_map
    calls = []

    def flaky(self, rng, width, height, starts, name):
        calls.append(rng.integers(1 << 30))
        text = real(self, rng, width, height, starts, name)
        return text.replace("[zones]", "[zones]\nq = nowhere") if len(calls) == 1 else text  # a zone with no cells

    monkeypatch.setattr(domain, "random_map", flaky)
    text = generate_map("salp", 3)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert "(attempt 2)" in text.splitlines()[0] and "nowhere" not in text
    load_map_text(text)
    # no zones at all, every time: an error, never a bad map
    def no_zones(self, *args):
        text = real(self, *args)
        return text[:text.index("[zones]")] + text[text.index("[rules]"):]

    monkeypatch.setattr(domain, "random_map", no_zones)
    with pytest.raises(GenerationError, match="no valid 12x8 salp map .* in 4 attempts; last problem: .*"):
        generate_map("salp", 3, attempts=4)


@pytest.mark.parametrize("kwargs, message", [
    ({"domain": "moon"}, "unknown domain 'moon'"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"width": 5}, "salp map width must be from 8 to 40, got 5"),
    ({"height": MAX_SIDE + 1}, "salp map height must be from 6 to 40"),
    ({"width": True}, "width must be an integer"),
    ({"starts": 0}, r"start cells \(digits on the grid\) must be from 1 to 10"),
    ({"starts": 11}, "must be from 1 to 10, got 11"),
])
def test_bad_arguments(kwargs, message):
    args = {"domain": "salp", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_map(args.pop("domain"), args.pop("seed"), **args)


def run_main(capsys, *args):
    try:
        code = main(["generate", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["--domain", "moon", "--seed", "1"], "invalid choice: 'moon'"),
    (["--domain", "salp"], "required: --seed"),
    (["--seed", "1"], "required: --domain"),
    (["--domain", "salp", "--seed", "x"], "--seed: expected an integer, got 'x'"),
    (["--domain", "salp", "--seed", "-2"], "seed must be an integer >= 0"),
    (["--domain", "warehouse", "--seed", "1", "--width", "8"], "warehouse map width must be from 9 to 40, got 8"),
    (["--domain", "overcooked", "--seed", "1", "--height", "99"], "overcooked map height must be from 5 to 40"),
    (["--domain", "salp", "--seed", "1", "--robots-starts", "12"], "must be from 1 to 10, got 12"),
    (["--domain", "salp", "--seed", "1", "--out", "/nonexistent-dir/x.map"], "cannot write /nonexistent-dir/x.map"),
])
def test_cli_bad_arguments_are_one_line_with_status_2(capsys, args, message):
    code, out = run_main(capsys, *args)
    assert code == 2 and out.out == ""
    assert len(out.err.splitlines()) == 1 and message in out.err and out.err.startswith("mase"), out.err


def test_cli_prints_or_writes_the_library_map(capsys, tmp_path):
    code, out = run_main(capsys, "--domain", "warehouse", "--seed", "5", "--width", "12", "--height", "9",
                         "--robots-starts", "4")
    assert code == 0 and out.out == generate_map("warehouse", 5, 12, 9, 4)
    path = tmp_path / "w.map"
    code, out = run_main(capsys, "--domain", "warehouse", "--seed", "5", "--width", "12", "--height", "9",
                         "--robots-starts", "4", "--out", str(path))
    assert code == 0 and out.out == "" and path.read_text() == generate_map("warehouse", 5, 12, 9, 4)
    # and the written file plans end to end
    code, out = run_main(capsys, "--domain", "salp", "--seed", "2", "--out", str(tmp_path / "s.map"))
    assert code == 0
    assert main(["plan", "--map", str(path), "--robots", "3", "--json", "--no-progress", "--backend", "serial"]) == 0
    assert len(json.loads(capsys.readouterr().out)["robots"]) == 3

