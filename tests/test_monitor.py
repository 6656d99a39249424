"""The NSE monitor: exact Poisson-binomial expectation against brute force and Monte Carlo."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from metareasoner.monitor import exact_monitor, monte_carlo_monitor, poisson_binomial, robot_model
from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet
from conftest import MAPS


def test_poisson_binomial_matches_enumeration():
    rng = np.random.default_rng(0)
    p = rng.random((6, 3))
    pmf = poisson_binomial(p)
    brute = np.zeros((7, 3))
    for outcome in itertools.product([0, 1], repeat=6):
        o = np.array(outcome)[:, None]
        brute[o.sum()] += np.prod(np.where(o == 1, p, 1 - p), axis=0)
    np.testing.assert_allclose(pmf, brute, atol=1e-12)


def fleet(map_name: str, n: int, seed: int):
    world = load_map(MAPS / map_name)
    domain = get_domain(world.domain)
    plans = plan_fleet(generate_scenario(world, n, seed=seed))
    robots = [robot_model(p, domain.static_feature, domain.dynamic_feature.name) for p in plans]
    penalty = NSEPenalty.from_world(world, domain.dynamic_feature)
    return world, domain, penalty, robots


@pytest.mark.parametrize("map_name, n", [("salp/salp-demo.map", 2), ("salp/salp-1.map", 8),
                                         ("warehouse/warehouse-2.map", 6)])
def test_exact_and_monte_carlo_agree_within_sampling_error(map_name, n):
    world, domain, penalty, robots = fleet(map_name, n, seed=2)
    z, v = len(world.zone_names), len(domain.dynamic_feature.values)
    exact = exact_monitor(penalty, robots, world.horizon, z, v, world.min_count)
    mc, visits = monte_carlo_monitor(penalty, robots, world.horizon, episodes=3000, seed=1)
    assert exact.total_penalty > 0, "the shipped maps are meant to produce NSEs"
    assert abs(exact.total_penalty - mc.total_penalty) <= 4 * mc.standard_error + 1e-9
    assert exact.nse_state_rate is not None
    assert abs(exact.nse_state_rate - mc.nse_state_rate) <= 4 * mc.rate_standard_error + 1e-9
    np.testing.assert_allclose(exact.per_step.sum(), exact.total_penalty)
    np.testing.assert_allclose(exact.per_zone.sum(), exact.total_penalty)
    assert exact.per_zone[0] == 0
    # per-step agreement, loosely (each step is its own estimate)
    # (a floor for steps where the rare event never happened in the sample)
    se_step = visits.penalty.std(axis=0, ddof=1) / np.sqrt(3000)
    assert np.all(np.abs(exact.per_step - mc.per_step) <= 5 * se_step + 0.01)
    # the visits are the joint states the penalty was measured on
    np.testing.assert_allclose(visits.penalty[0], penalty(visits.zone[0], visits.value[0]))


def test_monitor_is_zero_for_a_lone_robot():
    world, domain, penalty, robots = fleet("salp/salp-1.map", 1, seed=0)
    report = exact_monitor(penalty, robots, world.horizon, len(world.zone_names),
                           len(domain.dynamic_feature.values), world.min_count)
    assert report.total_penalty == 0 and report.nse_state_rate == 0
