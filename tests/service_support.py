"""Shared helpers of the service tests: a fresh database per test (SQLite in a temporary
folder, or the PostgreSQL server named by TEST_DATABASE_URL), app clients, a real server."""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from api.models import Base

OPERATOR = "operator-test-token"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}
ROOT = Path(__file__).resolve().parent.parent


def fresh_database_url(tmp_path: Path) -> str:
    """An empty database: a new SQLite file, or the PostgreSQL test database emptied."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{tmp_path / 'service.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        Base.metadata.drop_all(connection)
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


def wait_for_run(client, run_id: int, timeout: float = 120.0, headers=AUTH) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}", headers=headers).json()
        if run["status"] not in ("queued", "running"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s: {run}")


def start_long_run(client, robots: int, rounds: int, headers=AUTH, timeout: float = 120.0) -> dict:
    """Start a recon run of seconds (on an Overcooked scenario of `robots` robots of its own:
    the shipped fleets' runs end within a second) and wait until it is running; the run."""
    sid = client.post("/api/v1/scenarios", headers=headers, json={"map": "overcooked-1", "robots": robots}).json()["id"]
    run = client.post(f"/api/v1/scenarios/{sid}/runs", headers=headers, json={"method": "recon", "rounds": rounds}).json()
    deadline = time.monotonic() + timeout
    while (state := client.get(f"/api/v1/runs/{run['id']}", headers=headers).json())["status"] == "queued":
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["status"] == "running", state
    return state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: servers started and not stopped: a failed test's server is stopped when the session ends
_RUNNING: set = set()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_RUNNING):
        server.stop()


class ServerProcess:
    """`python -m mase serve` in a subprocess, with its output captured to a file."""

    def __init__(self, tmp_path: Path, database_url: str, port: int | None = None, args: tuple = (),
                 env: dict | None = None) -> None:
        self.tmp_path, self.database_url = tmp_path, database_url
        self.args, self.env = tuple(args), dict(env or {})
        self.port = port or free_port()
        self.tokens = tmp_path / "tokens"
        if not self.tokens.exists():
            self.tokens.write_text(f"# test\n{OPERATOR}\n")
        self.log = tmp_path / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "ServerProcess":
        env = {**os.environ, "MASE_DATABASE_URL": self.database_url, "MASE_TOKENS_FILE": str(self.tokens),
               "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "mase", "serve", "--port", str(self.port),
                                             *self.args],
                                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    _RUNNING.add(self)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        # a server that is still starting would otherwise outlive the test and keep writing to
        # the shared test database (PostgreSQL) under the next test's feet
        self.stop()
        raise AssertionError(f"server did not start in {timeout:.0f} s: {self.log.read_text()}")

    def stop(self, kill: bool = False) -> None:
        _RUNNING.discard(self)
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def wait_until_planned(client, scenario_id: int, timeout: float = 120.0, headers=AUTH) -> dict:
    """Wait for a scenario's fleet to be planned (a background job); its planning status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        plan = client.get(f"/api/v1/scenarios/{scenario_id}/plan", headers=headers).json()
        if plan["status"] == "succeeded":
            return plan
        assert plan["status"] != "failed", plan
        time.sleep(0.1)
    raise AssertionError(f"scenario {scenario_id} was not planned in {timeout} s: {plan}")


def raw_request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """One HTTP/1.1 request as bytes, to send on a raw socket (a keep-alive connection)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    if body:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_response(sock) -> tuple[int, dict, bytes]:
    """(status, headers in lower case, body) of the next response on `sock`; ConnectionError if
    the server closed the connection instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data[:200]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection in the middle of a body")
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]
