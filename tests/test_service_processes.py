"""The service as real `mase serve` processes (issue 12 items 2, 5, 6; issue 13 item 4):
a connection stays usable after a refused body; clients too slow to send their headers are
dropped; a run start racing a scenario delete, and concurrent rule edits, leave no lost or
phantom rows; two worker processes share locks, jobs and cache invalidations; SIGTERM stops
every process of ours, leaves no temporary folder, and the run it interrupted says so at the
next start."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from service_support import AUTH, ServerProcess, fresh_database_url, read_response, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service


def _http(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    status, _, body = read_response(sock)
    return status, body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("processes")
    process = ServerProcess(tmp, fresh_database_url(tmp), env={"MASE_READ_TIMEOUT": "1"}).start()
    yield process
    process.stop()


def test_connection_stays_usable_after_every_refused_body(server):
    bad = [b'{"map": "salp-demo", "robots": 2, "slack": NaN}', b'{"map": "salp-demo", "robots": 2, "slack": 1e309}',
           b'{"map": "salp-demo", "robots": 2, "name": "\\ud800"}', b'{"map": "salp-demo", "robots": "5"}',
           b'{"map": "salp-demo", "robots": ' + b"9" * 5000 + b"}", b'{"robots": 2, "\\udfff": 1}', b"\xff{"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for body in bad:
            sock.sendall(_http("POST", "/api/v1/scenarios", body))
            status, answer = _read_response(sock)
            assert status == 422 and b"detail" in answer, (body[:60], status, answer)
        sock.sendall(_http("GET", "/api/v1/scenarios/1"))  # the same connection, a valid request
        status, answer = _read_response(sock)
        assert status == 200 and b'"id":1' in answer


def test_slow_clients_are_dropped_and_others_served(server):
    sockets = []
    try:
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHo")  # and then one byte now and again
            sockets.append(s)
        deadline = time.monotonic() + 2.5  # MASE_READ_TIMEOUT=1 here
        while time.monotonic() < deadline:
            for s in sockets:
                try:
                    s.sendall(b"s")
                except OSError:
                    pass
            time.sleep(0.3)
        closed = 0
        for s in sockets:
            s.settimeout(2)
            try:
                closed += s.recv(100) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except socket.timeout:
                pass
        assert closed == len(sockets)
        assert httpx.get(f"{server.url}/api/v1/health", timeout=5).status_code == 200
        # a slow body: 408, and the connection is closed
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(_http("POST", "/api/v1/scenarios", b"", "").replace(b"Content-Length: 0", b"Content-Length: 50")
                      + b'{"map"')
            status, answer = _read_response(s)
            assert status == 408 and b"did not arrive" in answer
    finally:
        for s in sockets:
            s.close()


def test_run_start_racing_delete_leaves_no_phantom_run(server):
    with server.client() as http:
        outcomes = []
        for _ in range(6):
            sid = http.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-1", "robots": 3}).json()["id"]
            barrier = threading.Barrier(2)

            def start():
                barrier.wait()
                return http.post(f"/api/v1/scenarios/{sid}/runs", headers=AUTH,
                                 json={"method": "gen-recon-cf", "episodes": 500})

            def remove():
                barrier.wait()
                return http.delete(f"/api/v1/scenarios/{sid}", headers=AUTH)

            with ThreadPoolExecutor(2) as pool:
                started, deleted = pool.submit(start), pool.submit(remove)
                started, deleted = started.result(), deleted.result()
            outcomes.append((started.status_code, deleted.status_code))
            if started.status_code == 202:
                # accepted: the delete came second and was refused; the run exists
                assert deleted.status_code == 409, deleted.text
                assert http.get(f"/api/v1/runs/{started.json()['id']}", headers=AUTH).status_code == 200
                wait_for_run(http, started.json()["id"], timeout=180)
                assert http.delete(f"/api/v1/scenarios/{sid}", headers=AUTH).status_code == 204
            else:
                assert (started.status_code, deleted.status_code) == (404, 204), outcomes
        assert set(outcomes) <= {(202, 409), (404, 204)}


def test_concurrent_rule_edits_all_land_in_order(server):
    with server.client() as http:
        sid = http.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2}).json()["id"]
        rules = http.get(f"/api/v1/scenarios/{sid}/rules", headers=AUTH).json()[0]["rules"]

        def edit(i):
            body = {"rules": [{**r, "weight": float(i + 1)} for r in rules], "note": f"edit {i}"}
            return http.post(f"/api/v1/scenarios/{sid}/rules", headers=AUTH, json=body)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(edit, range(16)))
        assert [a.status_code for a in answers] == [201] * 16, [a.text for a in answers if a.status_code != 201]
        versions = http.get(f"/api/v1/scenarios/{sid}/rules", headers=AUTH).json()
        assert [v["version"] for v in versions] == list(range(1, 18))
        assert sorted(v["note"] for v in versions[1:]) == sorted(f"edit {i}" for i in range(16))


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
            sid = http.post("/api/v1/scenarios", headers=AUTH, json={"map": "overcooked-1", "robots": 1000}).json()["id"]
            run = http.post(f"/api/v1/scenarios/{sid}/runs", headers=AUTH, json={"method": "recon", "rounds": 5}).json()
            deadline = time.monotonic() + 60
            while http.get(f"/api/v1/runs/{run['id']}", headers=AUTH).json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.1)
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
            assert stopped["status"] == "interrupted" and "stopped" in stopped["error"]
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
