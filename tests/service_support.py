"""Shared helpers of the service tests: a fresh database per test (SQLite in a temporary
folder, or the PostgreSQL server named by TEST_DATABASE_URL), app clients, a real server."""
from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m mase serve` in a subprocess, with its output captured to a file."""

    def __init__(self, tmp_path: Path, database_url: str, port: int | None = None) -> None:
        self.tmp_path, self.database_url = tmp_path, database_url
        self.port = port or free_port()
        self.tokens = tmp_path / "tokens"
        if not self.tokens.exists():
            self.tokens.write_text(f"# test\n{OPERATOR}\n")
        self.log = tmp_path / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        env = {**os.environ, "MASE_DATABASE_URL": self.database_url, "MASE_TOKENS_FILE": str(self.tokens),
               "PYTHONUNBUFFERED": "1"}
        with open(self.log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "mase", "serve", "--port", str(self.port)],
                                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=30)
        self.process = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)
