"""`mase serve` processes with a database of their own (issue 12 items 5, 6; issue 13 item 4):
two worker processes share locks, jobs and cache invalidations; SIGTERM and SIGINT stop every
process of ours, leave no temporary folder, and the run they interrupted says so at the next
start. A module apart from test_service_processes.py, whose server (one for its module) would
still be running on the PostgreSQL test database that these empty."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service_support import AUTH, ServerProcess, fresh_database_url, start_long_run, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_mase_serve_stops_every_process_of_ours(tmp_path, stop):
    # its own temporary folder (TMPDIR): what the service and its run processes leave there is ours
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = ServerProcess(tmp_path, fresh_database_url(tmp_path), env={"TMPDIR": str(temp)}).start()
    try:
        with server.client() as http:
            # a run that is still going when the signal comes (seconds, not the shipped fleets' one)
            run = start_long_run(http, robots=1000, rounds=5)
        time.sleep(1.0)  # the run's process and the workers it starts
        ours = _descendants(server.process.pid)
        assert len(ours) >= 2, ours  # at least the fork server and the run
        # the temporary folders it makes: multiprocessing's (pymp-*, the fork server's socket); the
        # run processes make none of their own (their planning and blame run in the process)
        made = sorted(p.name for p in temp.iterdir())
        assert made and all(name.startswith("pymp-") for name in made), made
        server.process.send_signal(stop)
        assert server.process.wait(timeout=60) is not None
        server.process = None
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in ours) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in ours if _alive(p)], "processes outlived mase serve"
        assert not list(temp.iterdir()), "temporary folders outlived mase serve"  # no pymp-*, no mase-*
        server.start()
        with server.client() as http:
            stopped = http.get(f"/api/v1/runs/{run['id']}", headers=AUTH).json()
            assert stopped["status"] == "interrupted" and "stopped" in stopped["error"], (stopped["status"], stopped["error"], stopped.get("phase"))
        server.stop()  # (SIGTERM) without a run: nothing left either
        assert not list(temp.iterdir())
    finally:
        server.stop()


def test_two_workers_share_locks_jobs_and_caches(tmp_path):
    server = ServerProcess(tmp_path, fresh_database_url(tmp_path), args=("--workers", "2")).start()
    try:
        seen = set()
        for _ in range(60):  # new connections are spread over both workers
            seen.add(httpx.get(f"{server.url}/api/v1/health", timeout=5).json()["worker"])
            if len(seen) == 2:
                break
        assert len(seen) == 2, seen

        def fresh(method, path, **kwargs):  # one connection per request: either worker answers
            return httpx.request(method, f"{server.url}{path}", headers=AUTH, timeout=30, **kwargs)

        sid = fresh("POST", "/api/v1/scenarios", json={"map": "salp-demo", "robots": 2}).json()["id"]
        # concurrent rule edits through both workers: versions 2..9, none lost
        rules = fresh("GET", f"/api/v1/scenarios/{sid}/rules").json()[0]["rules"]
        with ThreadPoolExecutor(8) as pool:
            edits = list(pool.map(lambda i: fresh("POST", f"/api/v1/scenarios/{sid}/rules",
                                                  json={"rules": rules, "note": str(i)}), range(8)))
        assert [e.status_code for e in edits] == [201] * 8
        assert [v["version"] for v in fresh("GET", f"/api/v1/scenarios/{sid}/rules").json()] == list(range(1, 10))
        # runs of one scenario accepted by both workers execute one after another
        with ThreadPoolExecutor(4) as pool:
            runs = list(pool.map(lambda _: fresh("POST", f"/api/v1/scenarios/{sid}/runs", json={"method": "recon", "deploy": True}),
                                 range(4)))
        assert [r.status_code for r in runs] == [202] * 4
        with server.client() as http:
            done = sorted((wait_for_run(http, r.json()["id"], timeout=240) for r in runs), key=lambda r: r["id"])
            assert [r["status"] for r in done] == ["succeeded"] * 4
            for earlier, later in zip(done, done[1:]):
                assert later["started_at"] >= earlier["finished_at"], (earlier, later)
            wait_until_planned(http, sid)
        # every worker serves the newest run's policy, and forgets a deleted scenario
        deadline = time.monotonic() + 5
        while True:
            ids = {fresh("GET", f"/api/v1/scenarios/{sid}/robots/tb1").json()["run_id"] for _ in range(10)}
            if ids == {done[-1]["id"]} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ids == {done[-1]["id"]}
        token = fresh("POST", f"/api/v1/scenarios/{sid}/tokens", json={"robot_id": "tb1"}).json()
        robot = {"Authorization": f"Bearer {token['token']}"}
        path = f"{server.url}/api/v1/scenarios/{sid}/robots/tb1/penalties"
        assert {httpx.get(path, headers=robot, timeout=10).status_code for _ in range(10)} == {200}
        assert fresh("DELETE", f"/api/v1/scenarios/{sid}/tokens/{token['id']}").status_code == 204
        time.sleep(1.0)  # the other worker's change feed polls every 0.1 s
        assert {httpx.get(path, headers=robot, timeout=10).status_code for _ in range(10)} == {401}
        assert fresh("DELETE", f"/api/v1/scenarios/{sid}").status_code == 204
        time.sleep(1.0)
        assert {fresh("GET", f"/api/v1/scenarios/{sid}/robots/tb1/penalties").status_code for _ in range(10)} == {404}
    finally:
        server.stop()
