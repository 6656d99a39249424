"""The operator's console's API (TestClient): deliberate deployment (deploy, roll back,
undeploy; a run's "before" is what was deployed when it started), the history with operator
names and its CSV/JSON export, alerts above a scenario's tolerance, what a run changed and why
(checked against the library's exact monitor), the method list, the map legend."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from metareasoner.mitigation import METHODS, Fleet
from planner.domains import get_domain
from planner.maps import load_map
from planner.scenario import generate_scenario
from service_support import ROOT, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
ALICE, BOB = "alice-token", "bob-token"
A = {"Authorization": f"Bearer {ALICE}"}
B = {"Authorization": f"Bearer {BOB}"}
DEMO = 1


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-api")
    tokens = tmp / "tokens"
    tokens.write_text(f"# operators\n{ALICE} alice\n{BOB}   Bob Builder  # with a comment\n")
    settings = Settings(database_url=fresh_database_url(tmp), tokens_file=tokens, progress_interval=0.0)
    with TestClient(create_app(settings)) as c:
        wait_until_planned(c, DEMO, headers=A)
        yield c


def run(client, headers=A, **body) -> dict:
    body = {"method": "gen-recon-cf", "update_fraction": 1.0, "rounds": 1, "deploy": False, **body}
    response = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=headers, json=body)
    assert response.status_code == 202, response.text
    done = wait_for_run(client, response.json()["id"], headers=headers)
    assert done["status"] == "succeeded", done["error"]
    return done


def followed(client, robot="tb1"):
    return client.get(f"/api/v1/scenarios/{DEMO}/robots/{robot}/policy", headers=A).json()


def reef_state(policy: dict) -> list[int]:
    """A reachable state of the robot in the reef carrying sample A (two of them make an NSE)."""
    zone, sample = policy["features"].index("coral"), policy["features"].index("sample")
    reef, a = policy["feature_values"][zone].index("reef"), policy["feature_values"][sample].index("A")
    return next(s for s, done in zip(policy["states"], policy["terminal"]) if s[zone] == reef and s[sample] == a
                and not done)


def test_operator_names_methods_and_legend(client):
    assert client.get("/api/v1/me", headers=A).json()["name"] == "alice"
    assert client.get("/api/v1/me", headers=B).json()["name"] == "Bob Builder"
    methods = client.get("/api/v1/methods", headers=A).json()
    assert [m["name"] for m in methods] == list(METHODS)
    assert {"exchange-logs", "best-response"} <= {m["name"] for m in methods} and all(m["description"] for m in methods)
    legend = client.get(f"/api/v1/scenarios/{DEMO}/map", headers=A).json()["legend"]
    assert legend == get_domain("salp").legend and legend["C"].startswith("coral")


def test_deploy_roll_back_undeploy_and_the_runs_before(client):
    client.post(f"/api/v1/scenarios/{DEMO}/undeploy", headers=A)
    first = run(client)  # a proposal: nothing changes for the robots
    assert not first["deployed"] and first["base_run_id"] is None and first["created_by"] == "alice"
    assert followed(client)["run_id"] is None
    refused = client.post(f"/api/v1/runs/{first['id']}/deploy", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    deployed = client.post(f"/api/v1/runs/{first['id']}/deploy", headers=B)
    assert deployed.status_code == 200 and deployed.json()["deployed"]
    scenario = client.get(f"/api/v1/scenarios/{DEMO}", headers=A).json()
    assert scenario["deployed_run_id"] == scenario["current_run_id"] == first["id"]
    policy = followed(client)
    assert policy["run_id"] == first["id"]
    mine = {r["id"]: r for r in first["robots"]}
    assert mine["tb1"]["updated"]  # its policy is the run's, not the naive one
    assert policy["actions"] != followed_naive(client)

    # the next run starts from what is deployed: its "before" is the first run's "after"
    second = run(client, headers=B, method="difference-reward")
    assert second["base_run_id"] == first["id"] and second["created_by"] == "Bob Builder"
    assert second["summary"]["nse_before"] == pytest.approx(first["summary"]["nse_after"], rel=1e-9)
    assert followed(client)["run_id"] == first["id"]  # still: the second is a proposal
    client.post(f"/api/v1/runs/{second['id']}/deploy", headers=A)
    assert followed(client)["run_id"] == second["id"]
    client.post(f"/api/v1/runs/{first['id']}/deploy", headers=A)  # roll back
    assert followed(client)["run_id"] == first["id"]
    assert client.get(f"/api/v1/scenarios/{DEMO}/robots/tb2", headers=A).json()["run_id"] == first["id"]
    undone = client.post(f"/api/v1/scenarios/{DEMO}/undeploy", headers=B)
    assert undone.status_code == 200 and undone.json()["deployed_run_id"] is None
    assert followed(client)["run_id"] is None

    history = client.get(f"/api/v1/scenarios/{DEMO}/history", headers=A).json()
    mine = [(e["kind"], e["actor"], e["run_id"]) for e in history if e["run_id"] in (first["id"], second["id"])
            or e["kind"] == "undeployed"]
    assert ("run_started", "alice", first["id"]) in mine and ("run_started", "Bob Builder", second["id"]) in mine
    tail = [(k, a, r) for k, a, r in mine if k in ("deployed", "rolled_back", "undeployed")][-4:]
    assert tail == [("deployed", "Bob Builder", first["id"]), ("deployed", "alice", second["id"]),
                    ("rolled_back", "alice", first["id"]), ("undeployed", "Bob Builder", None)]

    # exports: the same runs and history, as CSV and JSON
    runs_json = client.get(f"/api/v1/scenarios/{DEMO}/export/runs.json", headers=A)
    assert runs_json.headers["content-disposition"].endswith('runs.json"')
    by_id = {r["id"]: r for r in runs_json.json()}
    assert by_id[second["id"]]["base_run_id"] == first["id"] and by_id[second["id"]]["created_by"] == "Bob Builder"
    assert by_id[first["id"]]["nse_after"] == first["summary"]["nse_after"]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/scenarios/{DEMO}/export/runs.csv", headers=A).text)))
    assert [int(r["id"]) for r in rows] == sorted(by_id)
    assert float(next(r for r in rows if int(r["id"]) == first["id"])["nse_after"]) == first["summary"]["nse_after"]
    history_rows = list(csv.DictReader(io.StringIO(
        client.get(f"/api/v1/scenarios/{DEMO}/export/history.csv", headers=A).text)))
    assert [(r["kind"], r["actor"]) for r in history_rows] == [(e["kind"], e["actor"]) for e in history]
    assert client.get(f"/api/v1/scenarios/{DEMO}/export/runs.xml", headers=A).status_code == 422


def followed_naive(client) -> list[int]:
    fleet = Fleet.plan(generate_scenario(load_map(ROOT / "maps/salp/salp-demo.map"), 2, seed=0, slack="10%"))
    return fleet.plans[0].policy.tolist()


def test_deploy_refuses_what_is_not_a_finished_run(client):
    assert client.post("/api/v1/runs/999999/deploy", headers=A).status_code == 404
    response = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=A,
                           json={"method": "exchange", "update_fraction": 1.0, "deploy": False})
    failed_or_running = response.json()["id"]
    answer = client.post(f"/api/v1/runs/{failed_or_running}/deploy", headers=A)
    assert answer.status_code == 409 and "only a succeeded run" in answer.json()["detail"]
    wait_for_run(client, failed_or_running, headers=A)
    robot = client.post(f"/api/v1/scenarios/{DEMO}/tokens", headers=A, json={"robot_id": "tb1"}).json()["token"]
    assert client.post(f"/api/v1/scenarios/{DEMO}/undeploy",
                       headers={"Authorization": f"Bearer {robot}"}).status_code == 403


def test_explanation_equals_the_exact_monitor(client):
    done = run(client, rounds=2)
    explained = client.get(f"/api/v1/runs/{done['id']}/explain", headers=A).json()
    # the library's exact monitor on the run's policies, before and after
    world = load_map(ROOT / "maps/salp/salp-demo.map")
    fleet = Fleet.plan(generate_scenario(world, 2, seed=0, slack="10%"))
    before = fleet.exact([p.policy for p in fleet.plans])
    assert np.allclose(explained["per_step_before"], before.per_step, atol=1e-9)
    assert sum(explained["per_step_before"]) == pytest.approx(done["summary"]["nse_before"], rel=1e-9)
    assert sum(explained["per_step_after"]) == pytest.approx(done["summary"]["nse_after"], rel=1e-9)
    zones = dict(zip(world.zone_names, before.per_zone[1:]))
    assert explained["per_zone_before"] == pytest.approx(zones, rel=1e-9)
    # the heat map's cells add up to their zone's total
    for zone in world.zone_names:
        cells = [c for c in explained["cells"] if c["zone"] == zone]
        assert sum(c["before"] for c in cells) == pytest.approx(explained["per_zone_before"][zone], rel=1e-9)
        assert sum(c["after"] for c in cells) == pytest.approx(explained["per_zone_after"][zone], rel=1e-9, abs=1e-12)
        assert all(world.zone_names[world.zone_layer[c["y"], c["x"]] - 1] == zone for c in cells)
    # rounds and reasons agree with the run's summary
    assert [r["round"] for r in explained["rounds"]] == [r["round"] for r in done["summary"]["rounds"]]
    for mine, summary in zip(explained["rounds"], done["summary"]["rounds"]):
        assert mine["accepted"] == summary["accepted"] and mine["rejected"] == summary["rejected"]
        assert mine["cutoff"] == pytest.approx(summary["cutoff"])
    for robot in explained["robots"]:
        outcome = next(r for r in done["robots"] if r["id"] == robot["id"])
        assert robot["updated"] == outcome["updated"] and robot["blame"] == outcome["blame"]
        assert robot["reason"].startswith("replanned") == outcome["updated"]
        if not outcome["updated"]:
            assert robot["path_before"] == robot["path_after"]
    assert explained["units"]["task"].startswith("steps")
    queued = client.post(f"/api/v1/scenarios/{DEMO}/runs", headers=A, json={"method": "naive", "deploy": False}).json()
    wait_for_run(client, queued["id"], headers=A)


def test_ties_at_the_cut_off_are_named():
    from api.explain import rounds_explained

    scores = [np.array([3.0, 1.0, 3.0, 3.0, 0.0])]
    out = rounds_explained(["a", "b", "c", "d", "e"], scores,
                           [{"round": 1, "accepted": ["a"], "rejected": ["c"]}], k=2, screening=1)[0]
    assert out["selected"] == ["a", "c"] and out["cutoff"] == 3.0 and out["tied_out"] == ["d"]
    none = rounds_explained(["a"], [np.array([0.0])], [{"round": 1, "accepted": [], "rejected": []}], 1, 1)[0]
    assert none["selected"] == [] and none["cutoff"] is None and none["tied_out"] == []


def test_alert_raised_cleared_and_acknowledged(client):
    client.post(f"/api/v1/scenarios/{DEMO}/undeploy", headers=A)
    client.delete(f"/api/v1/scenarios/{DEMO}/observations", headers=A)
    patched = client.patch(f"/api/v1/scenarios/{DEMO}", headers=A, json={"tolerance": 0.5})
    assert patched.status_code == 200 and patched.json()["tolerance"] == 0.5
    assert client.patch(f"/api/v1/scenarios/{DEMO}", headers=A, json={"tolerance": -1}).status_code == 422
    states = {r: reef_state(followed(client, r)) for r in ("tb1", "tb2")}
    before = {a["id"] for a in client.get(f"/api/v1/scenarios/{DEMO}/alerts?state=all", headers=A).json()}
    client.post(f"/api/v1/scenarios/{DEMO}/robots/tb1/state", headers=A, json={"state": states["tb1"]})
    assert not client.get(f"/api/v1/scenarios/{DEMO}/alerts", headers=A).json()  # one robot: no NSE
    joint = client.post(f"/api/v1/scenarios/{DEMO}/robots/tb2/state", headers=A,
                        json={"state": states["tb2"], "run_id": 7}).json()["joint_penalty"]
    assert joint > 0.5
    monitor = client.get(f"/api/v1/scenarios/{DEMO}/monitor", headers=A).json()
    assert monitor["tolerance"] == 0.5
    assert {r["robot_id"]: (r["zone"], r["in_violation"], r["run_id"]) for r in monitor["robots"]} == {
        "tb1": ("reef", True, None), "tb2": ("reef", True, 7)}
    alerts = client.get(f"/api/v1/scenarios/{DEMO}/alerts", headers=A).json()
    assert len(alerts) == 1 and alerts[0]["id"] not in before
    alert = alerts[0]
    assert alert["zone"] == "reef" and alert["robots"] == ["tb1", "tb2"] and alert["tolerance"] == 0.5
    assert alert["penalty"] == pytest.approx(monitor["zone_penalties"]["reef"]) and alert["cleared_at"] is None
    # the same report again: still one alert
    client.post(f"/api/v1/scenarios/{DEMO}/robots/tb2/state", headers=A, json={"state": states["tb2"]})
    assert len(client.get(f"/api/v1/scenarios/{DEMO}/alerts", headers=A).json()) == 1
    # tb1 leaves the reef: cleared (still open until acknowledged)
    start = followed(client, "tb1")
    client.post(f"/api/v1/scenarios/{DEMO}/robots/tb1/state", headers=A,
                json={"state": start["states"][start["start"]]})
    cleared = client.get(f"/api/v1/scenarios/{DEMO}/alerts", headers=A).json()[0]
    assert cleared["id"] == alert["id"] and cleared["cleared_at"] is not None
    acked = client.post(f"/api/v1/alerts/{alert['id']}/ack", headers=B).json()
    assert acked["acknowledged_by"] == "Bob Builder" and acked["acknowledged_at"]
    assert client.get(f"/api/v1/scenarios/{DEMO}/alerts", headers=A).json() == []
    assert alert["id"] in {a["id"] for a in client.get(f"/api/v1/scenarios/{DEMO}/alerts?state=all", headers=A).json()}
    history = client.get(f"/api/v1/scenarios/{DEMO}/history", headers=A).json()
    assert [e for e in history if e["kind"] == "alert_acknowledged"][-1]["actor"] == "Bob Builder"
    assert client.post("/api/v1/alerts/999999/ack", headers=A).status_code == 404
    client.patch(f"/api/v1/scenarios/{DEMO}", headers=A, json={"tolerance": 0.0})


def test_rule_edits_are_in_the_history_and_its_exports_with_who_and_when(client):
    """Each rule edit is a `rules_edited` entry naming the operator (alice, then Bob Builder), when
    (between the request's start and its answer, UTC), the version made and the note; the same
    entries, field for field, are in history.json and history.csv; a refused edit records nothing."""
    from datetime import datetime, timezone

    newest = client.get(f"/api/v1/scenarios/{DEMO}/rules", headers=A).json()[-1]
    edits = []
    for headers, who, note in ((A, "alice", "tighter reef rule"), (B, "Bob Builder", "and back, with a comma, \"quoted\"")):
        before = datetime.now(timezone.utc)
        answer = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=headers,
                             json={"rules": newest["rules"], "min_count": newest["min_count"], "note": note})
        after = datetime.now(timezone.utc)
        assert answer.status_code == 201, answer.text
        edits.append((answer.json()["version"], who, note, before, after))
    count = len(client.get(f"/api/v1/scenarios/{DEMO}/history", headers=A).json())
    bad = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=A,
                      json={"rules": [{**newest["rules"][0], "zone": "no-such-zone"}], "note": "refused"})
    assert bad.status_code == 422
    robot = client.post(f"/api/v1/scenarios/{DEMO}/tokens", headers=A, json={"robot_id": "tb2"}).json()["token"]
    assert client.post(f"/api/v1/scenarios/{DEMO}/rules", headers={"Authorization": f"Bearer {robot}"},
                       json={"rules": newest["rules"], "note": "a robot may not"}).status_code == 403

    history = client.get(f"/api/v1/scenarios/{DEMO}/history", headers=A).json()
    assert len(history) == count + 1  # the token made; neither refused edit
    edited = [e for e in history if e["kind"] == "rules_edited"]
    assert [e["rule_version"] for e in edited[-2:]] == [v for v, *_ in edits]
    for entry, (version, who, note, before, after) in zip(edited[-2:], edits):
        assert entry["actor"] == who and entry["scenario_id"] == DEMO and entry["run_id"] is None
        at = datetime.fromisoformat(entry["at"])
        assert at.utcoffset().total_seconds() == 0 and before <= at <= after, (before, at, after)
        assert entry["detail"]["note"] == note and entry["detail"]["previous_version"] == version - 1
        assert entry["detail"]["rules"] == len(newest["rules"])

    exported = client.get(f"/api/v1/scenarios/{DEMO}/export/history.json", headers=A)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    assert exported.headers["content-disposition"] == f'attachment; filename="scenario-{DEMO}-history.json"'
    assert exported.json() == history
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/scenarios/{DEMO}/export/history.csv", headers=A).text)))
    assert len(rows) == len(history)
    by_id = {int(r["id"]): r for r in rows}
    for entry in edited[-2:]:
        row = by_id[entry["id"]]
        assert (row["kind"], row["actor"], row["at"], row["rule_version"], row["run_id"]) == (
            "rules_edited", entry["actor"], entry["at"], str(entry["rule_version"]), "")
        assert json.loads(row["detail"]) == entry["detail"]
