"""Start and stop the service and the nodes as separate processes (the demo and the tests).

Nodes run as `python -m ros_nodes.<node>` with the parameters their launch file gives them
(see `launching`), in their own process group, with their output in a log file each. They
are stopped with SIGINT (as Ctrl-C would) so that executors stop their robots first.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .client import ServiceClient, ServiceError
from .launching import NodeSpec, node_command, write_params_file

ROOT = Path(__file__).resolve().parent.parent
DEMO_SCENARIO = "salp demo (two Turtlebots)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_domain_id() -> int:
    """A ROS_DOMAIN_ID for one run (1..101 are safe on Linux), so that concurrent runs on one
    machine rarely share DDS traffic."""
    return random.SystemRandom().randint(1, 101)


def ros_environment(domain_id: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # this machine only (ROS 2 Jazzy and later)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    pythonpath = env.get("PYTHONPATH", "")
    if str(ROOT) not in pythonpath.split(os.pathsep):
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + pythonpath if pythonpath else "")
    return env


def stop_process(process: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGINT) -> int | None:
    """Signal one process (by its id), wait, and kill it if it does not end."""
    if process.poll() is None:
        try:
            process.send_signal(sig)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        except ProcessLookupError:
            pass
    return process.returncode


class ServiceProcess:
    """`mase serve` on a free port with a fresh SQLite database and a known operator token."""

    def __init__(self, workdir: Path, port: int | None = None, python: str = sys.executable,
                 operator_token: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.python = python
        self.operator_token = operator_token or "op-" + os.urandom(16).hex()
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "service.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None, timeout: float = 10.0) -> ServiceClient:
        return ServiceClient(self.url, self.operator_token if token is None else token, timeout)

    def start(self, timeout: float = 60.0) -> "ServiceProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        tokens = self.workdir / "tokens"
        if not tokens.exists():
            tokens.write_text(self.operator_token + "\n")
        env = dict(os.environ, MASE_DATABASE_URL=f"sqlite:///{self.workdir / 'db.sqlite'}",
                   MASE_TOKENS_FILE=str(tokens), PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "mase", "serve", "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = self.client(timeout=2.0)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}; see {self.log_path}")
            try:
                client.health()
                return self
            except ServiceError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the service did not answer within {timeout} s; see {self.log_path}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 15.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def demo_scenario(self) -> int:
        for scenario in self.client().scenarios():
            if scenario["name"] == DEMO_SCENARIO:
                return scenario["id"]
        raise RuntimeError(f"no scenario {DEMO_SCENARIO!r} in the service")


class NodeProcess:
    def __init__(self, spec: NodeSpec, workdir: Path, env: dict, python: str = sys.executable) -> None:
        self.spec, self.workdir, self.env, self.python = spec, Path(workdir), env, python
        slug = self.spec.fqn.strip("/").replace("/", "_")
        self.params_file = self.workdir / f"{slug}.params.yaml"
        self.log_path = self.workdir / f"{slug}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "NodeProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_params_file(self.spec, self.params_file)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(node_command(self.spec, self.params_file, self.python), cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        return stop_process(self.process, timeout) if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class NodeGroup:
    """The nodes of one launch description, started and stopped together."""

    def __init__(self, specs: list[NodeSpec], workdir: Path, env: dict, python: str = sys.executable) -> None:
        self.nodes = [NodeProcess(s, workdir, env, python) for s in specs]

    def start(self) -> "NodeGroup":
        """Start every node; if one fails to start (or a signal interrupts), stop those started."""
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __getitem__(self, fqn: str) -> NodeProcess:
        for node in self.nodes:
            if node.spec.fqn == fqn:
                return node
        raise KeyError(fqn)

    def stop(self) -> dict[str, int | None]:
        """SIGINT every node (executors first, so the robots stop before anything else), then wait."""
        order = sorted(self.nodes, key=lambda n: n.spec.executable != "mase-executor")
        for node in order:
            node.signal(signal.SIGINT)
        return {node.spec.fqn: node.stop(10.0) for node in order}

    def logs(self, only: set[str] | None = None) -> str:
        """The end of each node's log (of the nodes named in `only`, if given)."""
        return "\n".join(f"----- {n.spec.fqn} -----\n{n.log()[-4000:]}" for n in self.nodes
                         if only is None or n.spec.fqn in only)
