"""The service's fleet-log export: robots report a simulated log's states, the export gives the
same log back; a run's policies come out as a policy file that deploys the run's policies."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from metareasoner.fleetlog import read_log, simulate_log
from metareasoner.mitigation import Fleet
from metareasoner.policies import read_policy_file
from planner.maps import load_map_text
from planner.scenario import generate_scenario
from service_support import AUTH, OPERATOR, fresh_database_url, wait_for_run, wait_until_planned

from test_gaps import TINY

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("service-logs")
    settings = Settings(database_url=fresh_database_url(tmp_path), tokens_file=tmp_path / "no-tokens",
                        extra_operator_tokens=(OPERATOR,), load_shipped=False, progress_interval=0.0)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def tiny_scenario(client):
    """The tiny map's scenario of three robots (seed 0), planned."""
    return _scenario(client, robots=3)


def _scenario(client, robots: int = 3, seed: int = 0) -> int:
    response = client.post("/api/v1/scenarios", headers=AUTH,
                           json={"map_text": TINY, "robots": robots, "seed": seed, "name": "tiny", "slack": "100%"})
    assert response.status_code == 201, response.text
    scenario_id = response.json()["id"]
    wait_until_planned(client, scenario_id)
    return scenario_id


def test_reported_states_export_as_the_same_log(client, tiny_scenario):
    scenario_id = tiny_scenario
    world = load_map_text(TINY, "tiny.map")
    fleet = Fleet.plan(generate_scenario(world, 3, seed=0, slack="100%"), backend="serial")
    # groups of two of the three robots: episodes must be told apart by the reports alone
    log = simulate_log(fleet, [p.policy for p in fleet.plans], 4, seed=2, group_size=2, record_actions=False)
    lengths = log.state_length()
    for r in range(log.n_records):
        robot = log.robots[log.robot[r]]
        response = client.post(f"/api/v1/scenarios/{scenario_id}/robots/{robot}/state", headers=AUTH,
                               json={"state": log.state[r, : lengths[r]].tolist()})
        assert response.status_code == 200, response.text
    response = client.get(f"/api/v1/scenarios/{scenario_id}/observations/export", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    exported = read_log("export.jsonl", text=response.text)
    assert exported == log
    assert exported.source["service"] == "observations/export" and exported.source["reports"] == log.n_records
    # nothing reported: a log with a header and no episode
    empty = _scenario(client, robots=2, seed=1)
    response = client.get(f"/api/v1/scenarios/{empty}/observations/export", headers=AUTH)
    assert read_log("empty.jsonl", text=response.text).n_episodes == 0


def test_export_errors_are_4xx(client, tiny_scenario):
    scenario_id = tiny_scenario
    assert client.get(f"/api/v1/scenarios/{scenario_id}/observations/export").status_code == 401
    assert client.get("/api/v1/scenarios/999/observations/export", headers=AUTH).status_code == 404
    bad = client.get(f"/api/v1/scenarios/{scenario_id}/observations/export?join_window=-1", headers=AUTH)
    assert bad.status_code == 422 and "detail" in bad.json()
    bad = client.get(f"/api/v1/scenarios/{scenario_id}/observations/export?join_window=x", headers=AUTH)
    assert bad.status_code == 422
    assert client.get("/api/v1/runs/999/policies", headers=AUTH).status_code == 404


def test_a_runs_policies_as_a_policy_file(client, tiny_scenario):
    scenario_id = tiny_scenario
    run = client.post(f"/api/v1/scenarios/{scenario_id}/runs", headers=AUTH,
                      json={"method": "best-response", "update_fraction": 1.0, "rounds": 1, "episodes": 10, "seed": 0,
                            "deploy": True})
    assert run.status_code == 202, run.text
    assert wait_for_run(client, run.json()["id"])["status"] == "succeeded"
    response = client.get(f"/api/v1/runs/{run.json()['id']}/policies", headers=AUTH)
    assert response.status_code == 200, response.text
    document = read_policy_file("run.json", text=response.text)
    world = load_map_text(TINY, "tiny.map")
    fleet = Fleet.plan(generate_scenario(world, 3, seed=0, slack="100%"), backend="serial")
    policies, origin = document.policies_for(fleet)
    assert origin == ["robot"] * 3
    for plan, policy in zip(fleet.plans, policies):
        served = client.get(f"/api/v1/scenarios/{scenario_id}/robots/{plan.task.robot_id}/policy",
                            headers=AUTH).json()
        assert served["actions"] == policy.tolist()
    assert np.isfinite(fleet.exact(policies).total_penalty)
