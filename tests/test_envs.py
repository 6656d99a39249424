"""The domains as PettingZoo ParallelEnvs: the API and seeding tests pass, observations are in
their spaces, and the env's NSE costs average to the exact monitor's J_N."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from mase.envs import FleetEnv, parallel_env

from conftest import MAPS

DOMAIN_MAPS = {"salp": MAPS / "salp" / "salp-1.map", "overcooked": MAPS / "overcooked" / "overcooked-1.map",
               "warehouse": MAPS / "warehouse" / "warehouse-1.map"}
ROBOTS = 4


@functools.lru_cache(maxsize=None)
def _env(domain: str) -> FleetEnv:
    return parallel_env(map=str(DOMAIN_MAPS[domain]), robots=ROBOTS, seed=0)


@pytest.mark.parametrize("domain", list(DOMAIN_MAPS))
def test_parallel_api_and_seed_tests_pass(domain):
    env = _env(domain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test only warns about some mistakes
        parallel_api_test(env, num_cycles=1000)
    parallel_seed_test(lambda: FleetEnv(env.fleet, seed=3), num_cycles=300)
    observations, infos = env.reset(seed=7)
    assert env.agents == env.possible_agents == [p.task.robot_id for p in env.fleet.plans]
    for agent, observation in observations.items():
        assert env.observation_space(agent).contains(observation)
        plan = env.fleet.plans[env.agent_index[agent]]
        assert np.array_equal(observation, plan.mdp.states[plan.mdp.start])
        assert env.action_space(agent).n == len(plan.mdp.actions)
    for _ in range(5):
        actions = {a: env.action_space(a).sample() for a in env.agents}
        observations, rewards, terminations, truncations, infos = env.step(actions)
        for agent in observations:
            assert env.observation_space(agent).contains(observations[agent])
            assert rewards[agent] == -1.0  # every step costs 1
            assert len({info["nse_cost"] for info in infos.values()}) == 1  # one shared cost


@pytest.mark.parametrize("domain", list(DOMAIN_MAPS))
def test_nse_costs_average_to_the_exact_monitor(domain):
    """Robots follow their naive policies through the env; the reset's cost plus every step's is
    one sample of sum_t R_N(s^t), whose mean the exact monitor computes."""
    env = _env(domain)
    policies = [p.policy for p in env.fleet.plans]
    episodes = 150
    totals = np.empty(episodes)
    env.reset(seed=11)
    for e in range(episodes):
        observations, infos = env.reset()
        total = next(iter(infos.values()))["nse_cost"]
        while env.agents:
            actions = {a: int(policies[env.agent_index[a]][infos[a]["state_index"]]) for a in env.agents}
            observations, rewards, terminations, truncations, infos = env.step(actions)
            total += next(iter(infos.values()))["nse_cost"]
        totals[e] = total
    exact = env.fleet.exact(policies).total_penalty
    se = totals.std(ddof=1) / np.sqrt(episodes)
    assert exact > 0 and se > 0
    assert abs(totals.mean() - exact) <= 4 * se, (domain, totals.mean(), exact, se)


def test_bad_actions_are_refused():
    env = _env("salp")
    env.reset(seed=0)
    live = env.agents[0]
    every = {a: 0 for a in env.agents}
    with pytest.raises(ValueError, match="no agent named 'nobody'"):
        env.step({**every, "nobody": 0})
    with pytest.raises(ValueError, match=f"no action for agent '{env.agents[1]}'"):
        env.step({live: 0})
    with pytest.raises(ValueError, match="action must be an integer in 0..6"):
        env.step({**every, live: 7})
    with pytest.raises(ValueError, match="action must be an integer"):
        env.step({**every, live: 1.0})
    with pytest.raises(ValueError, match="render_mode must be one of"):
        FleetEnv(env.fleet, render_mode="human")
    shown = FleetEnv(env.fleet, render_mode="ansi")
    shown.reset()
    assert shown.render().startswith("t=0 nse_cost=")
