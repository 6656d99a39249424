"""Importing a policy file into the service (`POST /api/v1/scenarios/{id}/runs/import`): a learned
policy becomes a run, evaluated by the run worker exactly as the library evaluates it, deployed
like any run, and then served to robots, through the fast lane and without it; bad files are
4xx with the field's path and store nothing; the import changes nothing robots follow until it
is deployed.

Two apps on one database, one with the fast lane and one without (MASE_FAST_LANE=0), as in
tests/test_fast_lane.py; the tiny salp map of tests/test_gaps.py, three robots."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.fastlane import FastLane
from api.settings import Settings
from metareasoner.fleetlog import LoggedFleet, simulate_log
from metareasoner.gaps import joint_values
from metareasoner.imitation import BehaviourCloning
from metareasoner.mitigation import Fleet, Mitigation
from metareasoner.policies import PolicyDocument, PolicyFile, run_document
from planner.maps import load_map_text
from planner.scenario import generate_scenario
from service_support import fresh_database_url, wait_for_run, wait_until_planned

from test_gaps import TINY

pytestmark = pytest.mark.service
TOKEN = "import-test-operator"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPERATOR_NAME = "alice"
ROBOTS, SEED, SLACK = 3, 0, "100%"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(client with the fast lane, client without, the scenario's id, the library's fleet)."""
    tmp = tmp_path_factory.mktemp("service-import")
    tokens = tmp / "tokens"
    tokens.write_text(f"{TOKEN} {OPERATOR_NAME}\n")
    # two apps in one process are two job managers with one pid: at its periodic reap each takes
    # the other for a stopped process of this host and marks its runs interrupted; no periodic
    # maintenance here (the start-up reap finds nothing to interrupt: no run exists yet)
    settings = Settings(database_url=fresh_database_url(tmp), tokens_file=tokens, load_shipped=False,
                        progress_interval=0.0, heartbeat_interval=3600.0)
    with TestClient(create_app(settings)) as fast, TestClient(create_app(replace(settings, fast_lane=False))) as slow:
        scenario_id = make_scenario(fast)
        fleet = Fleet.plan(generate_scenario(load_map_text(TINY, "tiny.map"), ROBOTS, seed=SEED, slack=SLACK),
                           backend="serial")
        yield fast, slow, scenario_id, fleet


def make_scenario(client, robots: int = ROBOTS, seed: int = SEED) -> int:
    created = client.post("/api/v1/scenarios", headers=AUTH,
                          json={"map_text": TINY, "robots": robots, "seed": seed, "slack": SLACK, "name": "tiny"})
    assert created.status_code == 201, created.text
    wait_until_planned(client, created.json()["id"], headers=AUTH)
    return created.json()["id"]


@pytest.fixture(scope="module")
def learned(service):
    """A policy learnt with the library: behaviour cloning on a simulated log of the expert
    (best response) on the scenario's own fleet: one entry per task, robots null."""
    _, _, _, fleet = service
    expert = Mitigation(method="best-response", update_fraction=1.0, rounds=2, backend="serial").run(fleet).policies
    log = simulate_log(fleet, expert, 60, seed=1)
    learner = BehaviourCloning().fit(LoggedFleet.bind(log, fleet.scenario.world))
    document = learner.document({"command": "mase learn", "method": "bc"})
    policies, origin = PolicyFile(PolicyDocument.model_validate(document)).policies_for(fleet)
    assert set(origin) == {"task"}
    # the learnt policy is not the naive one (else deploying it would show nothing)
    assert any(not np.array_equal(p, plan.policy) for p, plan in zip(policies, fleet.plans))
    return document, policies


def served(client, scenario_id: int, robot: str) -> dict:
    response = client.get(f"/api/v1/scenarios/{scenario_id}/robots/{robot}/policy", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def status_run_id(client, scenario_id: int, robot: str):
    response = client.get(f"/api/v1/scenarios/{scenario_id}/robots/{robot}", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["run_id"]


def wait_deployed(client, scenario_id: int, run_id, robot: str = "r0") -> None:
    """Until this app's cache serves `run_id` as the deployed run (a change reaches each app's
    cache through the change feed, within its poll interval)."""
    deadline = time.monotonic() + 30
    while status_run_id(client, scenario_id, robot) != run_id:
        assert time.monotonic() < deadline, f"run {run_id} not deployed in time"
        time.sleep(0.05)


def counts(client, scenario_id: int) -> tuple[int, int]:
    runs = client.get(f"/api/v1/scenarios/{scenario_id}/runs", headers=AUTH).json()
    history = client.get(f"/api/v1/scenarios/{scenario_id}/history", headers=AUTH).json()
    return len(runs), len(history)


@pytest.fixture
def lane_spy(monkeypatch):
    """Which robot queries the fast lane answered itself (a path -> answered list)."""
    answered: list[tuple[str, bool]] = []
    original = FastLane.answer

    async def spy(scope):
        response = await original(scope)
        answered.append((scope["path"], response is not None))
        return response

    monkeypatch.setattr(FastLane, "answer", staticmethod(spy))
    return answered


def test_a_learned_policy_is_imported_evaluated_deployed_and_served(service, learned, lane_spy):
    fast, slow, scenario_id, fleet = service
    document, policies = learned
    ids = [p.task.robot_id for p in fleet.plans]
    # the naive policies deployed (whatever another test deployed before)
    assert fast.post(f"/api/v1/scenarios/{scenario_id}/undeploy", headers=AUTH).status_code == 200
    for client in (fast, slow):
        wait_deployed(client, scenario_id, None)
    before = {r: served(fast, scenario_id, r) for r in ids}
    assert all(before[r]["run_id"] is None for r in ids)

    response = fast.post(f"/api/v1/scenarios/{scenario_id}/runs/import", headers=AUTH, json=document)
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["method"] == "import" and run["status"] in ("queued", "running") and run["params"] == {}
    assert run["imported"] == {"learner": "bc", "entries": len(document["policies"]),
                               "robots": {"robot": 0, "task": ROBOTS, "own": 0}, "source": "mase learn"}
    assert run["created_by"] == OPERATOR_NAME and run["deployed"] is False and run["deploy_on_success"] is False
    # a proposal: while it is queued or running, and once it has finished, robots follow what they did
    for client in (fast, slow):
        assert {r: served(client, scenario_id, r) for r in ids} == before
    done = wait_for_run(fast, run["id"], headers=AUTH)
    assert done["status"] == "succeeded", done["error"]
    for client in (fast, slow):
        assert status_run_id(client, scenario_id, "r0") is None
        assert {r: served(client, scenario_id, r) for r in ids} == before

    # what it holds: exactly what the library computes for those policies on this fleet
    summary = done["summary"]
    naive = [p.policy for p in fleet.plans]
    assert summary["nse_before"] == pytest.approx(fleet.exact(naive).total_penalty, rel=1e-12, abs=1e-15)
    values = joint_values(fleet, policies)
    assert summary["nse_after"] == pytest.approx(values.nse, rel=1e-12, abs=1e-15)
    assert summary["nse_after"] == pytest.approx(fleet.exact(policies).total_penalty, rel=1e-12, abs=1e-15)
    assert summary["rounds"] == [] and summary["budget"] == SLACK
    changed = [r for r, p, q in zip(ids, policies, naive) if not np.array_equal(p, q)]
    assert summary["updated"] == changed and changed
    budgets = fleet.budgets
    for i, robot in enumerate(done["robots"]):
        assert robot["id"] == ids[i] and robot["imported_from"] == "task" and robot["updated"] == (ids[i] in changed)
        assert robot["task_regret"] == pytest.approx(values.regrets[i], rel=1e-9, abs=1e-12)
        assert robot["slack"] == pytest.approx(budgets[i])
    assert summary["over_budget"] == [r for i, r in enumerate(ids) if values.regrets[i] > budgets[i] + 1e-9]
    # the audit trail: who imported what
    history = fast.get(f"/api/v1/scenarios/{scenario_id}/history", headers=AUTH).json()
    entry = next(e for e in history if e["run_id"] == run["id"])
    assert entry["kind"] == "run_imported" and entry["actor"] == OPERATOR_NAME
    assert entry["detail"]["learner"] == "bc" and entry["detail"]["method"] == "import"
    explained = fast.get(f"/api/v1/runs/{run['id']}/explain", headers=AUTH)
    assert explained.status_code == 200, explained.text
    assert all(r["reason"].startswith("imported: follows the file's entry for its task")
               for r in explained.json()["robots"])
    assert explained.json()["per_step_after"] and explained.json()["rounds"] == []

    # deployed like any run: then every robot is served exactly the imported actions, both lanes
    deployed = fast.post(f"/api/v1/runs/{run['id']}/deploy", headers=AUTH)
    assert deployed.status_code == 200 and deployed.json()["deployed"] is True
    lane_spy.clear()
    for client in (fast, slow):
        wait_deployed(client, scenario_id, run["id"])
        for robot, policy in zip(ids, policies):
            table = served(client, scenario_id, robot)
            assert table["run_id"] == run["id"]
            assert table["actions"] == policy.tolist()
            assert table["states"] == before[robot]["states"]
    assert (f"/api/v1/scenarios/{scenario_id}/robots/r0/policy", True) in lane_spy  # the fast app's own answer
    assert fast.get(f"/api/v1/scenarios/{scenario_id}", headers=AUTH).json()["deployed_run_id"] == run["id"]
    # and its policies come out as a policy file that deploys the same policies
    out = fast.get(f"/api/v1/runs/{run['id']}/policies", headers=AUTH)
    assert out.status_code == 200
    assert out.json()["source"]["method"] == "import" and out.json()["source"]["imported"]["learner"] == "bc"
    again, origin = PolicyFile(PolicyDocument.model_validate(out.json())).policies_for(fleet)
    assert origin == ["robot"] * ROBOTS and all(np.array_equal(a, b) for a, b in zip(again, policies))
    # the runs table and its export name the method and the learner
    listed = fast.get(f"/api/v1/scenarios/{scenario_id}/runs", headers=AUTH).json()
    assert next(r for r in listed if r["id"] == run["id"])["imported"]["learner"] == "bc"
    exported = fast.get(f"/api/v1/scenarios/{scenario_id}/export/runs.json", headers=AUTH).json()
    assert next(r for r in exported if r["id"] == run["id"])["learner"] == "bc"


def test_before_is_the_deployed_run_and_a_run_document_imports_as_itself(service):
    """A run's own policy file imported back: the same policies; its "before" is the run deployed
    when it starts (as for any run), so J_N before and after are that run's J_N after."""
    fast, slow, scenario_id, fleet = service
    started = fast.post(f"/api/v1/scenarios/{scenario_id}/runs", headers=AUTH,
                        json={"method": "best-response", "update_fraction": 1.0, "rounds": 1, "episodes": 10,
                              "deploy": True})
    assert started.status_code == 202, started.text
    mitigated = wait_for_run(fast, started.json()["id"], headers=AUTH)
    assert mitigated["status"] == "succeeded", mitigated["error"]
    document = fast.get(f"/api/v1/runs/{mitigated['id']}/policies", headers=AUTH).json()
    response = slow.post(f"/api/v1/scenarios/{scenario_id}/runs/import", headers=AUTH, json=document)
    assert response.status_code == 202, response.text
    assert response.json()["imported"]["learner"] == f"run {mitigated['id']} (best-response)"
    assert response.json()["imported"]["robots"] == {"robot": ROBOTS, "task": 0, "own": 0}
    done = wait_for_run(slow, response.json()["id"], headers=AUTH)
    assert done["status"] == "succeeded", done["error"]
    assert done["base_run_id"] == mitigated["id"]
    assert done["summary"]["nse_before"] == pytest.approx(mitigated["summary"]["nse_after"], rel=1e-12, abs=1e-15)
    assert done["summary"]["nse_after"] == pytest.approx(mitigated["summary"]["nse_after"], rel=1e-12, abs=1e-15)
    assert done["summary"]["updated"] == [] and done["summary"]["over_budget"] == []
    assert [r["task_regret"] for r in done["robots"]] == pytest.approx([r["task_regret"] for r in mitigated["robots"]])


def _bad_documents(document: dict, fleet) -> list[tuple[str, dict | bytes | list, list]]:
    """(what, body, the error's expected `loc`) for a run's policy file `document`."""
    plan = fleet.plans[0]
    mdp = plan.mdp
    radix = [len(f.values) for f in mdp.features]
    out: list = []

    def altered(what: str, change, loc: list) -> None:
        body = copy.deepcopy(document)
        change(body)
        out.append((what, body, loc))

    out.append(("not JSON", b'{"format": "mase-policies",\n "version": 1,, }', ["body", 42]))
    out.append(("a JSON array", [document], ["body"]))
    out.append(("a fleet log's header", {"record": "log", "format": "mase-fleet-log", "version": 1, "map": "tiny"},
                ["body", "format"]))
    altered("another version", lambda d: d.update(version=2), ["body", "version"])
    altered("another format", lambda d: d.update(format="mase-fleet-log"), ["body", "format"])
    altered("no policies field", lambda d: d.pop("policies"), ["body", "policies"])
    altered("another map", lambda d: d.update(map="salp-1"), ["body", "map"])
    altered("no entry", lambda d: d.update(policies=[]), ["body", "policies"])
    altered("a robot the scenario does not have", lambda d: d["policies"][1].update(robots=["ghost"]),
            ["body", "policies", 1, "robots", 0])
    altered("an entry for no robot", lambda d: d["policies"][1].update(robots=[]), ["body", "policies", 1, "robots"])
    altered("one robot in two entries", lambda d: d["policies"][1].update(robots=[plan.task.robot_id]),
            ["body", "policies", 1, "robots"])
    altered("a task the scenario does not have", lambda d: d["policies"][0].update(
        robots=None, task={**d["policies"][0]["task"], "start": [4, 1]}), ["body", "policies", 0, "task"])
    altered("another task under a robot's id", lambda d: d["policies"][0]["task"].update(start=[4, 1]),
            ["body", "policies", 0, "task"])
    altered("a task start that is not a cell", lambda d: d["policies"][0]["task"].update(start=[1]),
            ["body", "policies", 0, "task", "start"])
    altered("features of another MDP", lambda d: d["policies"][0].update(features=["x", "y"]),
            ["body", "policies", 0, "features"])
    altered("fewer actions than states", lambda d: d["policies"][0]["actions"].pop(),
            ["body", "policies", 0, "actions"])
    altered("an action the robot does not have", lambda d: d["policies"][0]["actions"].__setitem__(3, "fly"),
            ["body", "policies", 0, "actions", 3])
    altered("an action index instead of a name", lambda d: d["policies"][0]["actions"].__setitem__(3, 2),
            ["body", "policies", 0, "actions", 3])
    altered("a state of another length", lambda d: d["policies"][0]["states"].__setitem__(2, [1, 1]),
            ["body", "policies", 0, "states", 2])
    altered("a state value out of its feature's range",
            lambda d: d["policies"][0]["states"].__setitem__(2, [*d["policies"][0]["states"][2][:-1], radix[-1]]),
            ["body", "policies", 0, "states", 2, len(radix) - 1])
    altered("a negative state value", lambda d: d["policies"][0]["states"][2].__setitem__(0, -1),
            ["body", "policies", 0, "states", 2, 0])
    altered("a state listed twice",
            lambda d: d["policies"][0]["states"].__setitem__(2, list(d["policies"][0]["states"][1])),
            ["body", "policies", 0, "states", 2])
    unreachable = next(s for s in np.ndindex(*radix) if mdp.index_of_state(list(s)) < 0)
    altered("a state the robot cannot reach",
            lambda d: d["policies"][0]["states"].__setitem__(2, [int(v) for v in unreachable]),
            ["body", "policies", 0, "states", 2])
    altered("an unknown field", lambda d: d.update(learner="bc"), ["body", "learner"])
    return out


def test_bad_documents_are_4xx_with_the_field_and_store_nothing(service):
    fast, slow, scenario_id, fleet = service
    document = json.loads(json.dumps(run_document(fleet, [p.policy for p in fleet.plans], {"method": "naive"})))
    url = f"/api/v1/scenarios/{scenario_id}/runs/import"
    stored = counts(fast, scenario_id)
    for what, body, loc in _bad_documents(document, fleet):
        if isinstance(body, bytes):
            response = fast.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=body)
        else:
            response = fast.post(url, headers=AUTH, json=body)
        assert response.status_code == 422, (what, response.status_code, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, list) and detail, (what, detail)
        assert loc in [e["loc"] for e in detail], (what, detail)
        assert all(isinstance(e["msg"], str) and e["msg"] for e in detail), what
    # the request's own checks before the document's
    robot = fast.post(f"/api/v1/scenarios/{scenario_id}/tokens", headers=AUTH, json={"robot_id": "r0"}).json()
    assert fast.post(url, json=document).status_code == 401
    forbidden = fast.post(url, headers={"Authorization": f"Bearer {robot['token']}"}, json=document)
    assert forbidden.status_code == 403 and "operator" in forbidden.json()["detail"]
    assert fast.post("/api/v1/scenarios/999/runs/import", headers=AUTH, json=document).status_code == 404
    assert fast.post(url + "?rule_version=99", headers=AUTH, json=document).status_code == 404
    assert fast.post(url + "?rule_version=x", headers=AUTH, json=document).status_code == 422
    huge = json.dumps({**document, "source": {"padding": "x" * 1_100_000}})
    too_large = fast.post(url, headers={**AUTH, "Content-Type": "application/json"}, content=huge)
    assert too_large.status_code == 413 and "detail" in too_large.json()
    # nothing stored: no run, no history entry (the robot token made one: counted before)
    assert counts(fast, scenario_id) == (stored[0], stored[1] + 1)
    # the same document, unaltered, is accepted (the refusals above were the alterations')
    accepted = fast.post(url, headers=AUTH, json=document)
    assert accepted.status_code == 202, accepted.text
    assert wait_for_run(fast, accepted.json()["id"], headers=AUTH)["status"] == "succeeded"


def test_another_scenarios_document_is_refused(service):
    fast, slow, scenario_id, fleet = service
    other = make_scenario(fast, robots=ROBOTS + 1, seed=SEED + 1)
    run = fast.post(f"/api/v1/scenarios/{other}/runs", headers=AUTH, json={"method": "naive"}).json()
    assert wait_for_run(fast, run["id"], headers=AUTH)["status"] == "succeeded"
    document = fast.get(f"/api/v1/runs/{run['id']}/policies", headers=AUTH).json()
    stored = counts(fast, scenario_id)
    url = f"/api/v1/scenarios/{scenario_id}/runs/import"
    response = fast.post(url, headers=AUTH, json=document)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][:2] == ["body", "policies"] and error["type"] == "policy_error"
    # without its extra robot: robots of this scenario's ids, with the other scenario's tasks
    other_tasks = {tuple(e["robots"]): e["task"] for e in document["policies"]}
    mine = [p.task.robot_id for p in fleet.plans]
    differ = [r for r, p in zip(mine, fleet.plans)
              if other_tasks[(r,)]["start"] != list(p.task.start) or other_tasks[(r,)]["items"] != list(p.task.items)]
    assert differ, "the two scenarios' robots have the same tasks: pick another seed"
    document["policies"] = [e for e in document["policies"] if e["robots"][0] in mine]
    response = fast.post(url, headers=AUTH, json=document)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    k = next(k for k, e in enumerate(document["policies"]) if e["robots"][0] == differ[0])
    assert error["loc"] == ["body", "policies", k, "task"] and repr(differ[0]) in error["msg"]
    assert counts(fast, scenario_id) == stored
    # the other scenario takes its own document
    response = fast.post(f"/api/v1/scenarios/{other}/runs/import", headers=AUTH,
                         json=fast.get(f"/api/v1/runs/{run['id']}/policies", headers=AUTH).json())
    assert response.status_code == 202, response.text


def test_import_before_the_fleet_is_planned_is_503(service):
    fast, slow, scenario_id, fleet = service
    from api.routers.scenarios import create_scenario
    from api.schemas import ScenarioCreate

    app = fast.app
    for client in (fast, slow):  # no job is claimed for now: the new fleet stays queued
        client.app.state.runs._dispatch = lambda: None
    try:
        time.sleep(0.6)  # a claim under way has ended
        queued = create_scenario(app.state.database, app.state.settings,
                                 ScenarioCreate(map_text=TINY, robots=ROBOTS, seed=SEED, slack=SLACK))
        document = {"format": "mase-policies", "version": 1, "map": "tiny", "domain": "salp", "policies": []}
        for client in (fast, slow):
            response = client.post(f"/api/v1/scenarios/{queued}/runs/import", headers=AUTH, json=document)
            assert response.status_code == 503 and "Retry-After" in response.headers, response.text
    finally:
        for client in (fast, slow):
            del client.app.state.runs._dispatch  # back to the class's method
