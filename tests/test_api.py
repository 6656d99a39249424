"""The REST service through the app (TestClient): scenarios, rules, runs, robots' endpoints,
the live monitor, bad input. Runs on PostgreSQL too when TEST_DATABASE_URL is set."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from api.app import SHIPPED_SCENARIOS, create_app
from api.models import ObservationRow, RuleVersionRow, RunRow, ScenarioRow
from api.settings import Settings
from metareasoner.mitigation import Fleet, Mitigation
from metareasoner.penalty import NSEPenalty
from planner.domains import get_domain
from planner.maps import load_map
from planner.scenario import generate_scenario
from service_support import AUTH, OPERATOR, ROOT, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
DEMO = 1  # the shipped scenarios are created in this order: salp demo, salp-1, overcooked-1, warehouse-1


@pytest.fixture
def settings(tmp_path):
    return Settings(database_url=fresh_database_url(tmp_path), tokens_file=tmp_path / "no-tokens",
                    extra_operator_tokens=(OPERATOR,), max_body_bytes=200_000, progress_interval=0.0)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def count(settings, table) -> int:
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        n = connection.scalar(select(func.count()).select_from(table))
    engine.dispose()
    return n


def test_health_and_shipped_scenarios(client):
    assert client.get("/api/v1/health").json()["status"] == "ok"
    scenarios = client.get("/api/v1/scenarios", headers=AUTH).json()
    assert [s["name"] for s in scenarios] == ["salp demo (two Turtlebots)", "salp-1", "overcooked-1", "warehouse-1"]
    demo = scenarios[0]
    assert demo["id"] == DEMO and [r["id"] for r in demo["robots"]] == ["tb1", "tb2"]
    assert demo["rule_version"] == 1 and demo["current_run_id"] is None
    names = {m["name"] for m in client.get("/api/v1/maps", headers=AUTH).json()}
    assert {"salp-demo", "overcooked-1", "warehouse-5", "cramped_room_bins"} <= names


def test_create_scenario_matches_the_library(client):
    response = client.post("/api/v1/scenarios", headers=AUTH,
                           json={"map": "warehouse-2", "robots": 7, "seed": 3, "slack": 5})
    assert response.status_code == 201, response.text
    body = response.json()
    reference = generate_scenario(load_map(ROOT / "maps/warehouse/warehouse-2.map"), 7, seed=3, slack=5)
    assert [r["id"] for r in body["robots"]] == [t.robot_id for t in reference.tasks]
    assert [tuple(r["start"]) for r in body["robots"]] == [t.start for t in reference.tasks]
    assert body["slack"] == "5" and body["domain"] == "warehouse"  # an absolute task budget
    percent = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "warehouse-2", "robots": 3, "slack": "2.5%"})
    assert percent.status_code == 201 and percent.json()["slack"] == "2.5%"
    assert client.get(f"/api/v1/scenarios/{body['id']}", headers=AUTH).json() == body


def test_inline_map_errors_come_back_and_store_nothing(client, settings):
    before = count(settings, ScenarioRow)
    text = (ROOT / "maps/salp/salp-demo.map").read_text().replace("#1a.....a2#", "#1a.....aX#")
    response = client.post("/api/v1/scenarios", headers=AUTH, json={"map_text": text, "robots": 2})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    line = text.splitlines().index("#1a.....aX#") + 1
    assert error["type"] == "map_error" and error["line"] == line and error["column"] == 10
    assert "unknown symbol 'X'" in error["msg"]
    assert count(settings, ScenarioRow) == before
    good = client.post("/api/v1/scenarios", headers=AUTH,
                       json={"map_text": text.replace("X", "2"), "robots": 2, "name": "inline"})
    assert good.status_code == 201 and good.json()["name"] == "inline"


@pytest.mark.parametrize("body, where", [
    ({"robots": 2}, "exactly one of"),
    ({"map": "salp-demo", "map_text": "x", "robots": 2}, "exactly one of"),
    ({"map": "no-such-map", "robots": 2}, "no shipped map"),
    ({"map": "salp-demo", "robots": "two"}, "robots"),
    ({"map": "salp-demo", "robots": 0}, "robots"),
    ({"map": "salp-demo", "robots": 2, "slack": -1}, "slack"),
    ({"map": "salp-demo", "robots": 2, "slack": "5"}, "slack"),  # a number, or a percentage string
    ({"map": "salp-demo", "robots": 2, "slack": "-5%"}, "slack"),
    ({"map": "salp-demo", "robots": 2, "slack": "ten %"}, "slack"),
    ({"map": "salp-demo", "robots": 5000}, "at most"),
    ({"map": "salp-demo", "robots": 2, "colour": "red"}, "colour"),
])
def test_bad_scenario_bodies_are_422(client, settings, body, where):
    before = count(settings, ScenarioRow)
    response = client.post("/api/v1/scenarios", headers=AUTH, json=body)
    assert response.status_code == 422
    assert where in json.dumps(response.json())
    assert count(settings, ScenarioRow) == before


def test_malformed_json_oversized_body_and_unknown_ids(client, settings):
    bad = client.post("/api/v1/scenarios", headers={**AUTH, "Content-Type": "application/json"}, content=b"{robots: 2")
    assert bad.status_code == 422 and "JSON" in bad.text
    huge = client.post("/api/v1/scenarios", headers=AUTH, json={"map_text": "x" * 300_000, "robots": 2})
    assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
    assert count(settings, ScenarioRow) == 4
    for path in ("/api/v1/scenarios/999", "/api/v1/runs/999", "/api/v1/scenarios/999/rules",
                 f"/api/v1/scenarios/{DEMO}/rules/7", f"/api/v1/scenarios/{DEMO}/robots/nobody/policy"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404, path
        assert response.json()["detail"]


def test_rule_versions(client):
    rules = client.get(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH).json()
    assert [v["version"] for v in rules] == [1]
    assert {(r["value"], r["weight"]) for r in rules[0]["rules"]} == {("A", 2.0), ("B", 1.0)}
    new = [{"zone": "reef", "feature": "sample", "value": "A", "weight": 5, "sensitivity": 2}]
    response = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH,
                           json={"rules": new, "min_count": 3, "note": "only A, only the reef"})
    assert response.status_code == 201
    assert response.json()["version"] == 2 and response.json()["min_count"] == 3
    bad = [{**new[0], "zone": "lagoon"}]
    response = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH, json={"rules": bad})
    assert response.status_code == 422 and "lagoon" in json.dumps(response.json())
    bad = [{**new[0], "value": "C"}]
    assert client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH, json={"rules": bad}).status_code == 422
    versions = client.get(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert client.get(f"/api/v1/scenarios/{DEMO}/rules/1", headers=AUTH).json() == versions[0]
    assert client.get(f"/api/v1/scenarios/{DEMO}", headers=AUTH).json()["rule_version"] == 2


DEMO_SLACK = SHIPPED_SCENARIOS[0][3]


def _reference(map_name: str, robots: int, method: str, fraction: float, rules=None, min_count=None,
               slack: str = DEMO_SLACK):
    from api.schemas import RunCreate

    world = load_map(next(ROOT.glob(f"maps/*/{map_name}.map")))
    if rules is not None:
        world = world.with_rules(rules, min_count)
    scenario = generate_scenario(world, robots, seed=0, slack=slack)
    rounds = RunCreate.model_fields["rounds"].default
    return Mitigation(method=method, update_fraction=fraction, rounds=rounds, episodes=100, seed=0).run(
        Fleet.plan(scenario))


def test_run_in_background_equals_the_library(client):
    response = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH,
                           json={"method": "difference-reward", "update_fraction": 1.0})
    assert response.status_code == 202
    queued = response.json()
    assert queued["status"] in ("queued", "running") and queued["progress"] < 1
    scenario = client.get(f"/api/v1/scenarios/{DEMO}", headers=AUTH).json()
    assert scenario["slack"] == DEMO_SLACK
    assert queued["id"] in (scenario["active_run_id"], scenario["current_run_id"])  # active, or already done
    run = wait_for_run(client, queued["id"])
    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == 1.0 and run["phase"] == "done"
    reference = _reference("salp-demo", 2, "difference-reward", 1.0)
    assert run["summary"]["nse_before"] == pytest.approx(reference.before.total_penalty, rel=1e-9)
    assert run["summary"]["nse_after"] == pytest.approx(reference.after.total_penalty, rel=1e-9)
    assert run["summary"]["updated"] == reference.updated
    assert [r["blame"] for r in run["robots"]] == pytest.approx([r.blame for r in reference.robots])
    # a finished run is a proposal: robots keep what they followed until an operator deploys it
    scenario = client.get(f"/api/v1/scenarios/{DEMO}", headers=AUTH).json()
    assert scenario["auto_deploy"] is False and scenario["deployed_run_id"] != run["id"]
    before = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb2", headers=AUTH).json()
    assert before["run_id"] != run["id"]
    assert client.post(f"/api/v1/runs/{run['id']}/deploy", headers=AUTH).status_code == 200
    # robots now follow the run's policies
    wait_until_planned(client, DEMO)
    scenario = client.get(f"/api/v1/scenarios/{DEMO}", headers=AUTH).json()
    assert scenario["current_run_id"] == run["id"] and scenario["active_run_id"] is None
    status = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb2", headers=AUTH).json()
    assert status["run_id"] == run["id"] and status["task"]["start"] == [9, 1]
    for i, robot in enumerate(("tb1", "tb2")):
        policy = client.get(f"/api/v1/scenarios/{DEMO}/robots/{robot}/policy", headers=AUTH).json()
        assert policy["run_id"] == run["id"]
        assert np.array_equal(policy["actions"], reference.policies[i])
        table = client.get(f"/api/v1/scenarios/{DEMO}/robots/{robot}/penalties", headers=AUTH).json()
        expected = reference.local_penalties.get(i, np.zeros(len(policy["states"])))
        assert np.allclose(table["penalties"], expected)


def test_policy_table_is_the_mdp(client):
    wait_until_planned(client, DEMO)
    policy = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb2/policy", headers=AUTH).json()
    assert policy["run_id"] is None
    fleet = Fleet.plan(generate_scenario(load_map(ROOT / "maps/salp/salp-demo.map"), 2, seed=0, slack=DEMO_SLACK))
    plan = fleet.plans[1]
    assert policy["features"] == ["x", "y", "sample", "collected", "coral"]
    assert np.array_equal(policy["states"], plan.mdp.states)
    assert np.array_equal(policy["actions"], plan.policy)
    assert policy["states"][policy["start"]] == [9, 1, 0, 0, 0]
    dense = plan.mdp.transitions.toarray()
    for s, successors in enumerate(policy["successors"]):
        row = dense[s * plan.mdp.n_actions + policy["actions"][s]]
        assert sum(p for _, p in successors) == pytest.approx(1.0)
        assert all(row[int(j)] == pytest.approx(p) for j, p in successors)
    assert policy["cells"][5] == policy["states"][5][:2]


def test_penalty_lookup_and_bad_states(client):
    wait_until_planned(client, DEMO)
    table = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb1/penalties", headers=AUTH).json()
    state = table["states"][3]
    one = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb1/penalty", headers=AUTH,
                     params={"state": ",".join(map(str, state))}).json()
    assert one["state_index"] == 3 and one["penalty"] == table["penalties"][3]
    for bad, message in (("1,1", "has 5 values"), ("1,1,0,0,x", "pattern"), ("99,1,0,0,0", "out of range"),
                         ("0,0,0,0,0", "not reachable")):
        response = client.get(f"/api/v1/scenarios/{DEMO}/robots/tb1/penalty", headers=AUTH, params={"state": bad})
        assert response.status_code == 422 and message in json.dumps(response.json()), bad
    response = client.post(f"/api/v1/scenarios/{DEMO}/robots/tb1/state", headers=AUTH, json={"state": [0, 0, 0, 0, 0]})
    assert response.status_code == 422 and "not reachable" in response.text


def test_live_monitor_from_reported_states(client, settings):
    world = load_map(ROOT / "maps/salp/salp-demo.map")
    feature = get_domain("salp").dynamic_feature
    penalty = NSEPenalty(world.rules, world.zone_names, feature, world.min_count)
    wait_until_planned(client, DEMO)
    states = {}
    for robot in ("tb1", "tb2"):
        policy = client.get(f"/api/v1/scenarios/{DEMO}/robots/{robot}/policy", headers=AUTH).json()
        s = np.array(policy["states"])
        # a reachable state in the reef carrying sample A, and one outside any zone
        in_reef = np.nonzero((s[:, 4] == 1) & (s[:, 2] == 1) & ~np.array(policy["terminal"]))[0]
        outside = np.nonzero(s[:, 4] == 0)[0]
        states[robot] = (s[in_reef[0]].tolist(), s[outside[0]].tolist())
    monitor = client.get(f"/api/v1/scenarios/{DEMO}/monitor", headers=AUTH).json()
    assert monitor["observations"] == 0 and monitor["nse_state_rate"] is None
    first = client.post(f"/api/v1/scenarios/{DEMO}/robots/tb1/state", headers=AUTH, json={"state": states["tb1"][0]})
    assert first.status_code == 200 and first.json()["joint_penalty"] == 0.0  # alone in the reef: no NSE
    second = client.post(f"/api/v1/scenarios/{DEMO}/robots/tb2/state", headers=AUTH, json={"state": states["tb2"][0]})
    expected = float(penalty(np.array([[1, 1]]), np.array([[1, 1]]))[0])
    assert expected > 0 and second.json()["joint_penalty"] == pytest.approx(expected)
    monitor = client.get(f"/api/v1/scenarios/{DEMO}/monitor", headers=AUTH).json()
    assert monitor["current_penalty"] == pytest.approx(expected)
    assert monitor["zones_in_violation"] == ["reef"] and monitor["reporting_robots"] == ["tb1", "tb2"]
    assert monitor["positions"] == {r: states[r][0][:2] for r in ("tb1", "tb2")}
    assert monitor["observations"] == 2 and monitor["nse_state_rate"] == pytest.approx(0.5)
    client.post(f"/api/v1/scenarios/{DEMO}/robots/tb2/state", headers=AUTH, json={"state": states["tb2"][1]})
    monitor = client.get(f"/api/v1/scenarios/{DEMO}/monitor", headers=AUTH).json()
    assert monitor["current_penalty"] == 0.0 and monitor["zones_in_violation"] == []
    assert monitor["nse_state_rate"] == pytest.approx(1 / 3)
    assert count(settings, ObservationRow) == 3
    cleared = client.delete(f"/api/v1/scenarios/{DEMO}/observations", headers=AUTH).json()
    assert cleared["deleted"] == 3 and count(settings, ObservationRow) == 0
    monitor = client.get(f"/api/v1/scenarios/{DEMO}/monitor", headers=AUTH).json()
    assert monitor["observations"] == 0 and monitor["reporting_robots"] == [] and monitor["current_penalty"] == 0


def test_runs_of_one_scenario_do_not_race_and_compare(client):
    ids = [client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH,
                       json={"method": method, "update_fraction": 1.0}).json()["id"]
           for method in ("recon", "considerate")]
    runs = [wait_for_run(client, i) for i in ids]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    assert runs[1]["started_at"] >= runs[0]["finished_at"]  # one after the other
    comparison = client.get("/api/v1/runs/compare", headers=AUTH, params={"ids": ids}).json()
    assert [r["id"] for r in comparison["runs"]] == ids
    best = min(runs, key=lambda r: r["summary"]["nse_after"])
    assert comparison["best_run_id"] == best["id"]
    assert client.get("/api/v1/runs/compare", headers=AUTH, params={"ids": [ids[0]]}).status_code == 422
    listed = client.get(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH).json()
    assert [r["id"] for r in listed] == ids


def test_failed_run_reports_why_and_restarts(client, settings):
    # exchange value needs two robots: the run fails and says why
    one = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 1}).json()
    run = client.post(f"/api/v1/scenarios/{one['id']}/runs", headers=AUTH, json={"method": "exchange"}).json()
    run = wait_for_run(client, run["id"])
    assert run["status"] == "failed" and "at least two robots" in run["error"]
    assert client.post(f"/api/v1/runs/{run['id']}/restart", headers=AUTH).status_code == 202
    again = wait_for_run(client, run["id"])
    assert again["status"] == "failed" and again["attempts"] == 2
    done = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH, json={"method": "naive"}).json()
    assert wait_for_run(client, done["id"])["status"] == "succeeded"
    response = client.post(f"/api/v1/runs/{done['id']}/restart", headers=AUTH)
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]


def test_interrupted_run_is_marked_and_can_start_again(settings):
    with TestClient(create_app(settings)) as client:
        run = client.post("/api/v1/scenarios/2/runs", headers=AUTH, json={"method": "gen-recon-cf"}).json()
    # the app stopped while the run was queued or running
    with TestClient(create_app(settings)) as client:
        stopped = client.get(f"/api/v1/runs/{run['id']}", headers=AUTH).json()
        assert stopped["status"] == "interrupted" and "stopped" in stopped["error"]
        assert client.post(f"/api/v1/runs/{run['id']}/restart", headers=AUTH).status_code == 202
        assert wait_for_run(client, run["id"])["status"] == "succeeded"


def test_rules_change_the_runs_penalty(client):
    new = [{"zone": None, "feature": "sample", "value": "A", "weight": 10, "sensitivity": 1}]
    version = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH, json={"rules": new}).json()["version"]
    run = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH,
                      json={"method": "naive", "rule_version": version}).json()
    run = wait_for_run(client, run["id"])
    assert run["rule_version"] == 2
    from planner.world import NSERule

    reference = _reference("salp-demo", 2, "naive", 0.25, rules=(NSERule(None, "sample", "A", 10.0, 1.0),),
                           min_count=2)
    assert run["summary"]["nse_before"] == pytest.approx(reference.before.total_penalty)
    old = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH, json={"method": "naive", "rule_version": 1})
    assert wait_for_run(client, old.json()["id"])["summary"]["nse_before"] != pytest.approx(
        run["summary"]["nse_before"])


def test_delete_scenario(client, settings):
    created = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-1", "robots": 3}).json()
    token = client.post(f"/api/v1/scenarios/{created['id']}/tokens", headers=AUTH,
                        json={"robot_id": created["robots"][0]["id"]}).json()["token"]
    run = client.post(f"/api/v1/scenarios/{created['id']}/runs", headers=AUTH, json={"method": "recon"}).json()
    response = client.delete(f"/api/v1/scenarios/{created['id']}", headers=AUTH)
    if response.status_code == 409:  # the run was still active: nothing was deleted
        assert "wait" in response.json()["detail"]
        wait_for_run(client, run["id"])
        response = client.delete(f"/api/v1/scenarios/{created['id']}", headers=AUTH)
    assert response.status_code == 204
    assert client.get(f"/api/v1/scenarios/{created['id']}", headers=AUTH).status_code == 404
    assert client.get(f"/api/v1/runs/{run['id']}", headers=AUTH).status_code == 404
    robot = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/v1/scenarios/{created['id']}", headers=robot).status_code == 401
    assert count(settings, RunRow) == 0 and count(settings, RuleVersionRow) == 4


def test_migrations_build_exactly_the_models(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from api.db import Database
    from api.models import Base

    database = Database(fresh_database_url(tmp_path))
    database.migrate()
    database.migrate()  # a second upgrade is a no-op
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    database.dispose()


def test_backend_setting_gives_the_same_run(settings):
    from dataclasses import replace

    summaries = []
    for backend in ("serial", "local"):
        with TestClient(create_app(replace(settings, backend=backend))) as client:
            # not deployed: both runs start from the naive policies
            run = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=AUTH,
                              json={"method": "gen-recon-cf", "update_fraction": 0.5, "deploy": False}).json()
            done = wait_for_run(client, run["id"])
            assert done["status"] == "succeeded", done["error"]
            summaries.append((done["summary"]["nse_after"], [r["blame"] for r in done["robots"]]))
    assert summaries[0] == summaries[1]
    with pytest.raises(ValueError, match="'quantum' is not a backend"):
        create_app(replace(settings, backend="quantum"))
