"""The mitigation pipeline on shipped maps, and its refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from metareasoner.mitigation import METHODS, Fleet, Mitigation, valid_value_table
from metareasoner.monitor import cell_occupancy, monte_carlo_monitor, robot_model
from metareasoner.strategies import FromLogs
from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map
from planner.scenario import generate_scenario
from conftest import MAPS, ROOT

SLACK = "10%"


@pytest.fixture(scope="module")
def fleets():
    out = {}
    for name in ("salp/salp-1.map", "overcooked/overcooked-1.map", "warehouse/warehouse-2.map"):
        out[name] = Fleet.plan(generate_scenario(load_map(MAPS / name), 10, seed=1, slack=SLACK))
    return out


@pytest.mark.parametrize("name", ["salp/salp-1.map", "overcooked/overcooked-1.map", "warehouse/warehouse-2.map"])
@pytest.mark.parametrize("method", ["recon", "gen-recon", "gen-recon-cf"])
def test_recon_lowers_the_penalty_within_budget(fleets, name, method):
    fleet = fleets[name]
    naive = Mitigation(method="naive").run(fleet)
    result = Mitigation(method=method, update_fraction=0.5, rounds=2).run(fleet)
    assert naive.after.total_penalty == pytest.approx(result.before.total_penalty)
    assert naive.before.total_penalty > 0
    assert result.after.total_penalty < naive.after.total_penalty
    assert 1 <= len(result.updated) <= 10
    for robot, plan in zip(result.robots, fleet.plans):
        assert robot.slack == pytest.approx(0.1 * abs(plan.task_value)) and robot.task_cost == abs(plan.task_value)
        assert 0 <= robot.task_regret <= robot.slack + 1e-6
        if not robot.updated:
            assert robot.task_regret == 0
    # the phases were timed
    assert result.seconds["plan"] > 0 and result.seconds["replan"] > 0


@pytest.mark.parametrize("method", ["recon", "best-response"])
def test_the_occupancies_replan_workers_keep_on_the_fleet_are_the_policies_own(method):
    """The acceptance step reads each candidate's cell occupancy from the fleet, where the replan's
    worker (another process) left it: equal to the occupancy computed afresh for that policy."""
    fleet = Fleet.plan(generate_scenario(load_map(MAPS / "salp/salp-1.map"), 10, seed=1, slack=SLACK))
    result = Mitigation(method=method, update_fraction=0.5, rounds=2, backend="local").run(fleet)
    assert result.updated
    kept = dict(fleet._occupancy)
    checked = 0
    for i, plan in enumerate(fleet.plans):
        for key, occupancy in kept.items():
            if key[0] == id(plan.mdp):
                policy = np.frombuffer(key[3], dtype=np.dtype(key[1])).reshape(key[2])
                fresh = cell_occupancy([robot_model(plan, fleet.static_feature, fleet.dynamic_feature, policy)],
                                       fleet.horizon, fleet.n_zones, fleet.n_values)[0]
                np.testing.assert_array_equal(occupancy, fresh)
                checked += 1
    assert checked > len(fleet.plans)  # the replans' policies too, not only the naive ones


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_reports(fleets, method):
    fleet = fleets["salp/salp-1.map"]
    result = Mitigation(method=method, update_fraction=0.3).run(fleet)
    out = result.as_dict()
    assert out["method"] == method and len(out["robots"]) == 10
    assert set(out) >= {"nse_before", "nse_after", "nse_state_rate_before", "nse_state_rate_after", "updated",
                        "rounds", "counterfactual_share"}
    assert all({"id", "blame", "updated", "task_regret", "slack", "task_cost"} <= set(r) for r in out["robots"])
    assert out["nse_after"] <= out["nse_before"]
    # at most ceil(0.3 * 10) = 3 replans accepted per round; every round says who and what J_N became
    nse = out["nse_before"]
    for number, round_ in enumerate(out["rounds"], start=1):
        assert round_["round"] == number and len(round_["accepted"]) <= 3
        assert round_["nse"] <= nse + 1e-9
        nse = round_["nse"]
    assert out["nse_after"] == pytest.approx(nse, rel=1e-9, abs=1e-12)
    if method == "naive":
        assert out["updated"] == [] and out["nse_after"] == out["nse_before"]


def test_update_fraction_zero_changes_nothing(fleets):
    result = Mitigation(method="recon", update_fraction=0.0).run(fleets["salp/salp-1.map"])
    assert result.updated == [] and result.after.total_penalty == result.before.total_penalty


def test_refusals(fleets):
    fleet = fleets["salp/salp-1.map"]
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        Mitigation(method="magic").run(fleet)
    with pytest.raises(ValueError, match=r"update fraction must be in \[0, 1\]"):
        Mitigation(update_fraction=1.5).run(fleet)
    lone = Fleet.plan(generate_scenario(load_map(MAPS / "salp" / "salp-1.map"), 1))
    with pytest.raises(ValueError, match="exchange value needs at least two robots"):
        Mitigation(method="exchange").run(lone)
    with pytest.raises(ValueError, match="exchange value from logs needs at least two robots: .* the fleet has 1"):
        Mitigation(method="exchange-logs").run(lone)


@pytest.mark.parametrize("name", ["salp/salp-1.map", "overcooked/overcooked-1.map", "warehouse/warehouse-2.map"])
def test_exchange_from_logs_lowers_the_penalty_within_slack(fleets, name):
    fleet = fleets[name]
    result = Mitigation(method="exchange-logs", update_fraction=0.5, rounds=2).run(fleet)
    assert result.before.total_penalty > 0
    assert result.after.total_penalty < result.before.total_penalty
    assert 1 <= len(result.updated) <= 10 and 1 <= len(result.rounds) <= 2
    for robot in result.robots:
        assert 0 <= robot.task_regret <= robot.slack + 1e-6
        if not robot.updated:
            assert robot.task_regret == 0 and robot.robot_id not in result.updated


@pytest.mark.parametrize("method", ["exchange-logs", "recon"])
def test_blame_adds_up_to_the_monte_carlo_penalty(fleets, method):
    # efficiency: every logged group's score is split among its members, nothing more, nothing lost
    fleet = fleets["warehouse/warehouse-2.map"]
    result = Mitigation(method=method, update_fraction=0.25, seed=3, rounds=1).run(fleet)
    mc, _ = monte_carlo_monitor(fleet.penalty, fleet.models([p.policy for p in fleet.plans]), fleet.horizon,
                                episodes=100, seed=3)
    blames = np.array([r.blame for r in result.robots])
    assert blames.min() >= 0 and blames.sum() == pytest.approx(mc.total_penalty, rel=1e-9)
    # the three most blamed replanned; the acceptance step kept those that lowered J_N
    top3 = {fleet.plans[i].task.robot_id for i in np.argsort(-blames, kind="stable")[:3]}
    (round_,) = result.rounds
    assert set(round_.accepted) | set(round_.rejected) == top3
    assert set(result.updated) == set(round_.accepted) and [r.rank for r in result.robots if r.robot_id in top3]


def test_exchange_from_logs_splits_each_zone_by_exchange_value():
    world = load_map(MAPS / "salp" / "salp-2.map")  # three zones
    penalty = NSEPenalty.from_world(world, get_domain("salp").dynamic_feature)
    fleet = SimpleNamespace(penalty=penalty, n_zones=len(world.zone_names))
    A = 1  # sample A; robot 2 enters zones empty-handed, robot 4 carries A but never enters a zone
    zone = np.array([[1, 1, 0, 0, 0], [2, 0, 2, 0, 0], [0, 3, 3, 0, 0], [1, 1, 0, 1, 0], [2, 0, 0, 2, 0],
                     [0, 3, 3, 3, 0], [1, 0, 1, 1, 0], [1, 1, 2, 2, 0]])
    value = np.array([[A, A, 0, 0, A], [A, 0, 0, 0, A], [0, A, 0, 0, A], [A, A, 0, A, A], [A, 0, 0, A, A],
                      [0, A, 0, A, A], [A, 0, 0, A, A], [A, A, 0, A, A]])
    blame = FromLogs().blame(penalty, fleet.n_zones, zone, value)
    total = penalty(zone, value)
    np.testing.assert_allclose(blame.sum(axis=1), total)
    assert np.all(blame[:, 4] == 0)  # in no group
    # robot 2 makes every group it joins no worse: its exchange value is not positive, it gets (almost) nothing
    assert blame[5, 2] < 1e-5 * total[5] and blame[6, 2] < 1e-5 * total[6]
    assert blame[5, 1] > 0.3 * total[5] and blame[5, 3] > 0.3 * total[5]
    # last state: zone 1 holds robots 0 and 1 (both A), zone 2 robots 2 and 3 (only 3 carries): no NSE there
    assert blame[7, 2] == 0 and blame[7, 3] == 0 and blame[7, 0] + blame[7, 1] == pytest.approx(total[7])
    # logs in which a single robot ever stands in a zone compare nobody: no blame, no error
    lonely = FromLogs().blame(penalty, fleet.n_zones, np.array([[1, 0], [2, 0]]), np.array([[A, A], [A, 0]]))
    assert np.all(lonely == 0)


def test_valid_counterfactual_values_against_brute_force(fleets):
    plan = fleets["salp/salp-1.map"].plans[0]
    table = valid_value_table(plan, "sample", 3)
    reachable = {tuple(row) for row in plan.mdp.states.tolist()}
    for s in range(0, plan.mdp.n_states, 7):
        for v in range(3):
            row = plan.mdp.states[s].copy()
            row[2] = v
            assert table[s, v] == (tuple(row.tolist()) in reachable)
    assert table[np.arange(plan.mdp.n_states), plan.mdp.states[:, 2]].all()


def test_cli_mitigate_json():
    result = subprocess.run([sys.executable, "-m", "mase", "mitigate", "--map", str(MAPS / "salp" / "salp-demo.map"),
                             "--robots", "2", "--method", "gen-recon-cf", "--update-fraction", "0.5", "--json",
                             "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["method"] == "gen-recon-cf" and [r["id"] for r in out["robots"]] == ["tb1", "tb2"]
    assert out["nse_before"] > 0 and out["nse_after"] <= out["nse_before"]
    assert all({"id", "blame", "task_regret", "slack", "task_cost", "updated"} <= set(r) for r in out["robots"])
    assert all(r["task_regret"] <= r["slack"] + 1e-6 for r in out["robots"])


@pytest.mark.parametrize("args, message", [(["--method", "magic"], "invalid choice: 'magic'"),
                                            (["--update-fraction", "2"], "update fraction must be in [0, 1]")])
def test_cli_mitigate_refuses(args, message):
    result = subprocess.run([sys.executable, "-m", "mase", "mitigate", "--map", str(MAPS / "salp" / "salp-1.map"),
                             "--robots", "3", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
