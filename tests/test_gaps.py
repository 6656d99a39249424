"""Value gap and regret gap against brute force: three robots on a tiny map, their joint MDP
(the product of their MDPs, 21^3 joint states) built explicitly. Task values by policy
evaluation of the joint chain, J_N by the joint state distribution step by step, and each
robot's best deviation by value iteration over the joint states with only that robot choosing
(so a deviation may even look at the others: no independence is assumed)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from metareasoner.fleetlog import LoggedFleet
from metareasoner.gaps import gaps, joint_values
from metareasoner.imitation import BehaviourCloning, EV2BC, QueriedImitation, mixed_log
from planner.maps import load_map_text

TINY = """# a tiny salp map: the short way from sample a to the lab passes the reef
[map]
domain = salp
name = tiny
slip = 0.1
discount = 0.9
horizon = 20
items_per_robot = 1

[grid]
######
#1a.L#
#.CC.#
#2..b#
######

[zones]
r = reef

[zone-layer]
......
..rr..
......
......
......

[rules]
min_count = 2
*       sample   A      2.0     1.0
*       sample   B      1.0     0.5
"""


@pytest.fixture(scope="module")
def tiny():
    world = load_map_text(TINY, "tiny.map")
    mixed = mixed_log(world, 3, 200, seed=0, budget="100%")
    logged = LoggedFleet.bind(mixed.log, world)
    learners = {"bc": BehaviourCloning().fit(logged), "ev2bc": EV2BC().fit(logged),
                "queried": QueriedImitation().fit(logged, mixed.fleet, mixed.expert)}
    return mixed, {k: v.policies(mixed.fleet) for k, v in learners.items()}, brute_force(mixed.fleet, mixed.expert)


def _kron_all(mats):
    out = mats[0]
    for m in mats[1:]:
        out = sp.kron(out, m, format="csr")
    return out


def brute_force(fleet, policies):
    """(task values (3,), regrets (3,), J_N) of a joint policy from the joint MDP."""
    plans = fleet.plans
    mdps = [p.mdp for p in plans]
    sizes = [m.n_states for m in mdps]
    gamma = mdps[0].discount
    chains = [m.policy_matrix(np.asarray(q)) for m, q in zip(mdps, policies)]
    joint = _kron_all(chains)
    n_joint = joint.shape[0]
    start = np.ravel_multi_index([m.start for m in mdps], sizes)
    ones = [np.ones(s) for s in sizes]
    values, regrets = [], []
    for i, (mdp, policy) in enumerate(zip(mdps, policies)):
        own = mdp.rewards[np.arange(mdp.n_states), policy]
        reward = _kron_all([sp.csr_matrix(own[:, None] if j == i else ones[j][:, None]) for j in range(3)])
        reward = reward.toarray().ravel()
        v = spla.spsolve((sp.identity(n_joint, format="csc") - gamma * joint.tocsc()), reward)
        values.append(v[start])
        # robot i alone chooses, over joint states, the others following their policies
        moves = [_kron_all([mdp.action_matrix(a) if j == i else chains[j] for j in range(3)])
                 for a in range(mdp.n_actions)]
        lifted = [_kron_all([sp.csr_matrix(mdp.rewards[:, a][:, None]) if j == i else
                             sp.csr_matrix(ones[j][:, None]) for j in range(3)]).toarray().ravel()
                  for a in range(mdp.n_actions)]
        best = np.zeros(n_joint)
        for _ in range(2000):
            new = np.max([r + gamma * (m @ best) for r, m in zip(lifted, moves)], axis=0)
            done = np.abs(new - best).max() < 1e-12
            best = new
            if done:
                break
        regrets.append(best[start] - v[start])
    # J_N: the joint distribution step by step, R_N of every joint state
    models = fleet.models(policies)
    grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    zone = np.stack([m.zone[g.ravel()] for m, g in zip(models, grids)], axis=1)
    value = np.stack([m.value[g.ravel()] for m, g in zip(models, grids)], axis=1)
    penalty = fleet.penalty(zone, value)
    dist = np.zeros(n_joint)
    dist[start] = 1.0
    nse = 0.0
    forward = joint.T.tocsr()
    for _ in range(fleet.horizon + 1):
        nse += float(dist @ penalty)
        dist = forward @ dist
    return np.array(values), np.maximum(np.array(regrets), 0.0), nse


def test_the_tiny_case_has_something_to_learn(tiny):
    mixed, policies, _ = tiny
    fleet = mixed.fleet
    assert len(fleet.plans) == 3 and all(p.mdp.n_states == 21 for p in fleet.plans)
    assert fleet.exact(mixed.expert).total_penalty < fleet.exact([p.policy for p in fleet.plans]).total_penalty
    assert max(joint_values(fleet, mixed.expert).regrets) > 1.0  # the expert asks robots for detours


@pytest.mark.parametrize("learner", ["bc", "ev2bc", "queried"])
def test_value_and_regret_gaps_equal_brute_force(tiny, learner):
    mixed, policies, (expert_values, expert_regrets, expert_nse) = tiny
    fleet = mixed.fleet
    g = gaps(fleet, policies[learner], mixed.expert)
    values, regrets, nse = brute_force(fleet, policies[learner])
    np.testing.assert_allclose(g.expert.task_values, expert_values, atol=1e-8)
    np.testing.assert_allclose(g.learner.task_values, values, atol=1e-8)
    np.testing.assert_allclose(g.expert.regrets, expert_regrets, atol=1e-7)
    np.testing.assert_allclose(g.learner.regrets, regrets, atol=1e-7)
    assert g.value_gap == pytest.approx(np.max(expert_values - values), abs=1e-8)
    assert g.nse_gap == pytest.approx(nse - expert_nse, abs=1e-9)
    assert g.regret_gap == pytest.approx(regrets.max() - expert_regrets.max(), abs=1e-7)
    if learner == "queried":
        assert g.regret_gap == pytest.approx(0.0, abs=1e-9) and g.nse_gap == pytest.approx(0.0, abs=1e-9)


def test_gaps_of_the_expert_and_of_naive(tiny):
    mixed, _, _ = tiny
    fleet = mixed.fleet
    naive = [p.policy for p in fleet.plans]
    same = gaps(fleet, mixed.expert, mixed.expert)
    assert same.value_gap == 0 and same.nse_gap == 0 and same.regret_gap == 0
    selfish = gaps(fleet, naive, mixed.expert)
    assert selfish.learner.regret == 0  # nobody gains by leaving the task-optimal policy
    assert selfish.regret_gap == pytest.approx(-selfish.expert.regret)
    # no robot loses on its task, some gain; the fleet gets more NSE
    assert selfish.value_gap == pytest.approx(0.0, abs=1e-9) and selfish.task_value_gaps.min() < -1.0
    assert selfish.nse_gap > 0
    assert set(selfish.as_dict()) >= {"value_gap", "nse_gap", "regret_gap", "robots"}
    with pytest.raises(ValueError, match="one policy per robot"):
        joint_values(fleet, naive[:2])


def test_cli_learns_a_queried_policy(tmp_path, capsys):
    """`mase learn --method queried` asks the expert of the fleet it is given: no gap left."""
    import json

    from mase.cli import main

    path = tmp_path / "tiny.map"
    path.write_text(TINY)
    log, policy = tmp_path / "log.jsonl", tmp_path / "policy.json"
    assert main(["simulate", "--map", str(path), "--robots", "3", "--episodes", "20", "--out", str(log),
                 "--no-progress", "--backend", "serial"]) == 0
    capsys.readouterr()
    assert main(["learn", "--log", str(log), "--map", str(path), "--method", "queried", "--robots", "3",
                 "--slack", "100%", "--out", str(policy), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["queries"] > 0 and summary["method"] == "queried"
    assert summary["gaps"]["regret_expert"] > 1.0  # the expert (100 % budgets) asks for detours
    assert abs(summary["gaps"]["regret_gap"]) < 1e-9 and abs(summary["gaps"]["nse_gap"]) < 1e-9
    assert main(["learn", "--log", str(log), "--map", str(path), "--method", "queried", "--out", str(policy)]) == 2
    assert "--robots" in capsys.readouterr().err
