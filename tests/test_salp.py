"""The salp domain on its shipped maps."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import finishes_surely, simulate
from conftest import MAPS

SALP_MAPS = sorted((MAPS / "salp").glob("*.map"))


def test_at_least_five_instances_and_the_demo():
    names = {p.stem for p in SALP_MAPS}
    assert {"salp-1", "salp-2", "salp-3", "salp-4", "salp-5", "salp-demo"} <= names


@pytest.mark.parametrize("path", SALP_MAPS, ids=lambda p: p.stem)
def test_optimal_policies_finish_and_samples_move_as_the_task_says(path):
    world = load_map(path)
    world = replace(world, params={**world.params, "slip": 0.0})
    plans = plan_fleet(generate_scenario(world, 6, seed=11))
    for plan in plans:
        mdp, states = plan.mdp, plan.mdp.states
        assert finishes_surely(mdp, plan.policy)[mdp.start], plan.task
        run = simulate(mdp, plan.policy, horizon=200, seed=0)
        path_states = states[run.states[0]]
        actions = [mdp.actions[a] for a in run.actions[0]]
        assert mdp.terminal[run.states[0, -1]], "slip 0: the optimal policy must finish within the horizon"
        sample, collected = path_states[:, 2], path_states[:, 3]
        items = [world.items[i] for i in plan.task.items]
        deposits = 0
        for t, action in enumerate(actions):
            before, after = path_states[t], path_states[t + 1]
            x, y = before[0], before[1]
            if sample[t + 1] != sample[t]:
                if action == "pick_up":  # at an assigned, not yet collected site of that type, hands empty
                    assert sample[t] == 0
                    k = int(np.log2(collected[t + 1] ^ collected[t]))
                    assert items[k].cell == (x, y)
                    assert sample[t + 1] == 1 + "AB".index(items[k].label)
                elif action == "deposit":  # only at a lab
                    assert (x, y) in world.extras["labs"] and sample[t + 1] == 0
                    deposits += 1
                else:
                    pytest.fail(f"sample changed on {action}")
            else:
                assert collected[t + 1] == collected[t]
            # the static feature is the zone under the robot
            assert after[4] == world.zone_layer[after[1], after[0]]
        assert deposits == len(items)


def test_demo_map_has_its_two_turtlebots():
    world = load_map(MAPS / "salp" / "salp-demo.map")
    assert [t.robot_id for t in world.robots] == ["tb1", "tb2"]
    assert world.zone_names == ("reef",)
    scenario = generate_scenario(world, 2)
    assert scenario.tasks == world.robots


def test_scenarios_are_seeded_and_scale_to_a_thousand_robots():
    world = load_map(MAPS / "salp" / "salp-2.map")
    a = generate_scenario(world, 1000, seed=5)
    b = generate_scenario(world, 1000, seed=5)
    c = generate_scenario(world, 1000, seed=6)
    assert a.tasks == b.tasks and a.tasks != c.tasks
    assert len({t.robot_id for t in a.tasks}) == 1000
    assert all(t.start in world.starts and len(t.items) == 2 for t in a.tasks)
