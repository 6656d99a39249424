"""The service as real `mase serve` processes (issue 12 items 2, 5, 6; issue 13 item 4), one
server for the module: a connection stays usable after a refused body; clients too slow to send
their headers are dropped; a run start racing a scenario delete, and concurrent rule edits,
leave no lost or phantom rows. The tests with servers of their own are in
test_service_lifecycle.py."""
from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from service_support import AUTH, ServerProcess, fresh_database_url, read_response, wait_for_run

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
