"""The service at fleet scale (issue 12) through the app: ids never reused and caches that
follow what identifies their content; fleet planning as a background job (503 with
Retry-After before it is done, a size limit, memory released on delete); the live monitor
kept incrementally with a retention and the history exportable; tokens revoked and expiring.
Runs on PostgreSQL too when TEST_DATABASE_URL is set."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, func, select

from api.app import Maintenance, create_app
from api.fleets import decode_array
from api.models import ObservationRow, RunRobotRow
from api.settings import Retention, Settings
from service_support import AUTH, OPERATOR, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service


@pytest.fixture
def settings(tmp_path):
    return Settings(database_url=fresh_database_url(tmp_path), tokens_file=tmp_path / "no-tokens",
                    extra_operator_tokens=(OPERATOR,), load_shipped=False, progress_interval=0.0)


def make(client, body) -> dict:
    response = client.post("/api/v1/scenarios", headers=AUTH, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def stored_penalties(settings, run_id: int, robot_id: str) -> np.ndarray:
    """The run's local penalties as written in the database (not through any cache)."""
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        data = connection.scalar(select(RunRobotRow.local_penalty).where(RunRobotRow.run_id == run_id,
                                                                          RunRobotRow.robot_id == robot_id))
    engine.dispose()
    return decode_array(data) if data is not None else None


def penalties(client, scenario_id: int, robot: str) -> dict:
    response = client.get(f"/api/v1/scenarios/{scenario_id}/robots/{robot}/penalties", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("second_map, second_rules", [("warehouse-1", None), ("salp-1", "heavier")])
def test_deleted_scenario_never_lends_its_id_or_its_penalties(settings, second_map, second_rules):
    """The issue's sequence: X created, run, its penalties read, X deleted; Y created and run.
    Y gets new ids and robots are served Y's penalties (another map: no shape error; the same
    map with other rules: not X's numbers)."""
    with TestClient(create_app(settings)) as client:
        x = make(client, {"map": "salp-1", "robots": 3})
        wait_until_planned(client, x["id"])
        x_run = wait_for_run(client, client.post(f"/api/v1/scenarios/{x['id']}/runs", headers=AUTH,
                                                 json={"method": "recon", "update_fraction": 1.0, "deploy": True}).json()["id"])
        assert x_run["status"] == "succeeded", x_run["error"]
        x_table = penalties(client, x["id"], "r0")
        assert x_table["run_id"] == x_run["id"]
        client.get(f"/api/v1/scenarios/{x['id']}/robots/r0/policy", headers=AUTH)
        assert client.delete(f"/api/v1/scenarios/{x['id']}", headers=AUTH).status_code == 204

        y = make(client, {"map": second_map, "robots": 3})
        assert y["id"] > x["id"]
        if second_rules:
            rules = client.get(f"/api/v1/scenarios/{y['id']}/rules", headers=AUTH).json()[0]["rules"]
            for rule in rules:
                rule["weight"] *= 7
            assert client.post(f"/api/v1/scenarios/{y['id']}/rules", headers=AUTH,
                               json={"rules": rules}).status_code == 201
        wait_until_planned(client, y["id"])
        before = penalties(client, y["id"], "r0")
        assert before["run_id"] is None and not any(before["penalties"])  # no run yet: none of X's
        y_run = wait_for_run(client, client.post(f"/api/v1/scenarios/{y['id']}/runs", headers=AUTH,
                                                 json={"method": "recon", "update_fraction": 1.0, "deploy": True}).json()["id"])
        assert y_run["status"] == "succeeded", y_run["error"]
        assert y_run["id"] > x_run["id"]
        served = penalties(client, y["id"], "r0")
        assert served["run_id"] == y_run["id"]
        expected = stored_penalties(settings, y_run["id"], "r0")
        expected = np.zeros(len(served["states"])) if expected is None else expected
        assert np.array_equal(served["penalties"], expected)
        policy = client.get(f"/api/v1/scenarios/{y['id']}/robots/r0/policy", headers=AUTH)
        assert policy.status_code == 200 and policy.json()["run_id"] == y_run["id"]
        assert len(policy.json()["actions"]) == len(served["states"])
        # X is gone for good, in the cache as in the database
        assert client.get(f"/api/v1/scenarios/{x['id']}/robots/r0/penalties", headers=AUTH).status_code == 404
        assert client.get(f"/api/v1/runs/{x_run['id']}", headers=AUTH).status_code == 404


def test_robot_queries_wait_for_the_background_plan(settings):
    with TestClient(create_app(settings)) as client:
        created = make(client, {"map": "overcooked-2", "robots": 12})
        assert created["planning"]["status"] in ("queued", "running", "succeeded")
        seen_503 = False
        while True:
            response = client.get(f"/api/v1/scenarios/{created['id']}/robots/r0/penalty", headers=AUTH,
                                  params={"state": "0,0,0,0"})
            plan = client.get(f"/api/v1/scenarios/{created['id']}/plan", headers=AUTH).json()
            if response.status_code != 503:
                break
            seen_503 = True
            assert int(response.headers["retry-after"]) >= 1 and "planned" in response.json()["detail"]
            assert plan["status"] in ("queued", "running", "succeeded") and 0 <= plan["progress"] <= 1
            time.sleep(0.05)
        assert response.status_code in (200, 422), response.text  # served (that state may not be reachable)
        assert seen_503  # twelve robots take longer to plan than one request
        status = client.get(f"/api/v1/scenarios/{created['id']}/robots/r0", headers=AUTH).json()
        assert status["policy_ready"] is True
        done = wait_until_planned(client, created["id"])
        assert done["attempts"] == 1 and done["progress"] == 1.0


def test_fleet_size_limit_and_memory_released_on_delete(settings, tmp_path):
    from dataclasses import replace

    small = replace(settings, max_fleet_cells=5000)
    with TestClient(create_app(small)) as client:
        response = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "warehouse-1", "robots": 900})
        assert response.status_code == 422
        assert "MASE_MAX_FLEET_CELLS" in response.text and "at most" in response.text
        created = make(client, {"map": "salp-2", "robots": 20})
        wait_until_planned(client, created["id"])
        for robot in created["robots"]:
            assert client.get(f"/api/v1/scenarios/{created['id']}/robots/{robot['id']}/policy",
                              headers=AUTH).status_code == 200
        cache = client.app.state.cache
        held = cache.memory()
        assert held["fleets"] > 0 and held["responses"] > 0
        assert client.delete(f"/api/v1/scenarios/{created['id']}", headers=AUTH).status_code == 204
        assert cache.memory() == {"fleets": 0, "responses": 0, "scenarios": 0}


def _statements(engine):
    """SQL the requests run: the maintenance thread's retention (which reads the history on
    purpose, at its own times) is not counted."""
    seen = []

    def record(_conn, _cursor, statement, *_args):
        if threading.current_thread().name != "job-maintenance":
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(engine, "before_cursor_execute", record)


def test_monitor_and_reports_never_read_the_history_and_keep_a_retention(settings):
    from dataclasses import replace

    with TestClient(create_app(replace(settings, observations_keep=Retention(count=5)))) as client:
        created = make(client, {"map": "salp-demo", "robots": 2})
        sid = created["id"]
        wait_until_planned(client, sid)
        states = client.get(f"/api/v1/scenarios/{sid}/robots/tb1/penalties", headers=AUTH).json()["states"]
        engine = client.app.state.database.engine
        seen, stop = _statements(engine)
        try:
            for i in range(12):
                response = client.post(f"/api/v1/scenarios/{sid}/robots/tb1/state", headers=AUTH,
                                       json={"state": states[i % len(states)]})
                assert response.status_code == 200, response.text
            monitor = client.get(f"/api/v1/scenarios/{sid}/monitor", headers=AUTH).json()
        finally:
            stop()
        reading = [s for s in seen if re.search(r"\b(FROM|JOIN|UPDATE)\s+observations\b", s)]
        assert not reading and any(re.search(r"INSERT INTO observations\b", s) for s in seen), reading
        assert monitor["observations"] == 12 and monitor["reporting_robots"] == ["tb1"]
        Maintenance(client.app.state.database, client.app.state.feed,
                    replace(settings, observations_keep=Retention(count=5), maintenance_interval=0))()
        engine2 = create_engine(settings.database_url)
        with engine2.connect() as connection:
            kept = connection.scalar(select(func.count()).select_from(ObservationRow))
        engine2.dispose()
        assert kept == 5
        assert client.get(f"/api/v1/scenarios/{sid}/monitor", headers=AUTH).json()["observations"] == 12
        pages, after = [], 0
        while after is not None:
            page = client.get(f"/api/v1/scenarios/{sid}/observations", headers=AUTH,
                              params={"after": after, "limit": 2}).json()
            pages += page["observations"]
            after = page["next_after"]
        assert len(pages) == 5 and [p["state"] for p in pages] == [states[i % len(states)] for i in range(7, 12)]
        assert [p["id"] for p in pages] == sorted(p["id"] for p in pages)


def test_token_revocation_and_expiry(settings):
    with TestClient(create_app(settings)) as client:
        created = make(client, {"map": "salp-demo", "robots": 2})
        sid = created["id"]
        wait_until_planned(client, sid)
        token = client.post(f"/api/v1/scenarios/{sid}/tokens", headers=AUTH, json={"robot_id": "tb1"}).json()
        short = client.post(f"/api/v1/scenarios/{sid}/tokens", headers=AUTH,
                            json={"robot_id": "tb2", "expires_in": 1}).json()
        assert token["expires_at"] is None and short["expires_at"] is not None
        as_robot = {"Authorization": f"Bearer {token['token']}"}
        assert client.get(f"/api/v1/scenarios/{sid}/robots/tb1", headers=as_robot).status_code == 200
        listed = client.get(f"/api/v1/scenarios/{sid}/tokens", headers=AUTH).json()
        assert [t["id"] for t in listed] == [token["id"], short["id"]] and "token" not in listed[0]
        assert client.delete(f"/api/v1/scenarios/{sid}/tokens/{token['id']}", headers=AUTH).status_code == 204
        refused = client.get(f"/api/v1/scenarios/{sid}/robots/tb1", headers=as_robot)
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        assert client.delete(f"/api/v1/scenarios/{sid}/tokens/{token['id']}", headers=AUTH).status_code == 404
        time.sleep(1.1)
        expired = client.get(f"/api/v1/scenarios/{sid}/robots/tb2", headers={"Authorization": f"Bearer {short['token']}"})
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]
