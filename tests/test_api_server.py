"""The service as a real uvicorn process: everything survives a restart, a crash marks the
running run interrupted, and no token ever reaches the log."""
from __future__ import annotations

import pytest

from service_support import AUTH, OPERATOR, ServerProcess, fresh_database_url, start_long_run, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service


def snapshot(http) -> dict:
    scenarios = http.get("/api/v1/scenarios", headers=AUTH).json()
    out = {"scenarios": scenarios}
    for s in scenarios:
        out[f"rules{s['id']}"] = http.get(f"/api/v1/scenarios/{s['id']}/rules", headers=AUTH).json()
        for run in http.get(f"/api/v1/scenarios/{s['id']}/runs", headers=AUTH).json():
            out[f"run{run['id']}"] = http.get(f"/api/v1/runs/{run['id']}", headers=AUTH).json()
    return out


def test_restart_keeps_scenarios_rules_runs_and_tokens(tmp_path):
    server = ServerProcess(tmp_path, fresh_database_url(tmp_path)).start()
    try:
        with server.client() as http:
            created = http.post("/api/v1/scenarios", headers=AUTH, json={"map": "warehouse-2", "robots": 4}).json()
            rules = http.get(f"/api/v1/scenarios/{created['id']}/rules", headers=AUTH).json()[0]["rules"]
            rules[0]["weight"] = 7.5
            assert http.post(f"/api/v1/scenarios/{created['id']}/rules", headers=AUTH,
                             json={"rules": rules, "note": "heavier"}).status_code == 201
            run = http.post(f"/api/v1/scenarios/{created['id']}/runs", headers=AUTH,
                            json={"method": "recon", "update_fraction": 0.5}).json()
            assert wait_for_run(http, run["id"])["status"] == "succeeded"
            token = http.post(f"/api/v1/scenarios/{created['id']}/tokens", headers=AUTH,
                              json={"robot_id": created["robots"][0]["id"]}).json()["token"]
            wait_until_planned(http, created["id"])
            robot_path = f"/api/v1/scenarios/{created['id']}/robots/{created['robots'][0]['id']}/policy"
            policy = http.get(robot_path, headers={"Authorization": f"Bearer {token}"}).json()
            before = snapshot(http)
        server.stop()
        server.start()
        with server.client() as http:
            assert snapshot(http) == before
            assert http.get(robot_path, headers={"Authorization": f"Bearer {token}"}).json() == policy
        log = server.log.read_text()
        assert OPERATOR not in log and token not in log
        assert "GET /api/v1/scenarios" in log  # the access log is there, without tokens
    finally:
        server.stop()


def test_crash_marks_the_running_run_interrupted_and_it_restarts(tmp_path):
    server = ServerProcess(tmp_path, fresh_database_url(tmp_path)).start()
    try:
        with server.client() as http:
            # a run of seconds, still going when the server is killed
            run = start_long_run(http, robots=300, rounds=3)
        server.stop(kill=True)  # SIGKILL: no clean shutdown
        server.start()
        with server.client() as http:
            crashed = http.get(f"/api/v1/runs/{run['id']}", headers=AUTH).json()
            assert crashed["status"] == "interrupted" and "restarted" in crashed["error"]
            other = http.get("/api/v1/scenarios/1", headers=AUTH)
            assert other.status_code == 200  # the rest is intact
            assert http.post(f"/api/v1/runs/{run['id']}/restart", headers=AUTH).status_code == 202
            done = wait_for_run(http, run["id"], timeout=180)
            assert done["status"] == "succeeded" and done["attempts"] == 2
    finally:
        server.stop()
