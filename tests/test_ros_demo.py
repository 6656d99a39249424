"""`mase ros demo` from the command line: every argument is checked before anything starts (a
bad one: exit status 2, one line, well under a second of work), and a demo prints its service's
dashboard address and token, and leaves no process and no temporary folder behind.

Each command runs with its own TMPDIR: every process it starts inherits that variable, so a
process whose environment still holds it afterwards is one of ours left behind, and the
folder must be empty at the end."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ros


def our_processes(marker: str) -> list[str]:
    """Command lines of the live processes whose environment mentions `marker`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read()
            if marker.encode() not in env:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                found.append(fh.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone, or not ours to read
            continue
    return found


def run_mase(tmpdir, *args, timeout=60):
    """Run `python -m mase ...` with TMPDIR=tmpdir; (result, wall seconds, CPU seconds of the child)."""
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "mase", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, wall, cpu


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--sim", "--bogus"], "unrecognized arguments: --bogus"),
    (["--sim", "--fast", "--method", "naive", "gen-recon-cf", "--seed", "0", "--rollouts", "1"],
     "--rollouts (Monte Carlo rollouts the run blames) must be in 2..10000, got 1"),
    (["--sim", "--episodes", "0"], "--episodes (demo episodes per method and seed) must be at least 1"),
    (["--sim", "--method", "nope"], "argument --method: invalid choice: 'nope'"),
    (["--sim", "--seed", "-1"], "--seed must be in 0..2147483647"),
    (["--sim", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--sim", "--update-fraction", "1.5"], "--update-fraction must be in [0, 1]"),
    (["--sim", "--domain-id", "300"], "--domain-id must be in 0..232"),
    (["--sim", "--service", "http://127.0.0.1:8000"], "--service URL and --token T go together"),
    (["--sim", "--service", "ftp://host", "--token", "t"], "--service must be an http:// or https:// address"),
    (["--sim", "--logs", "pyproject.toml"], "--logs pyproject.toml exists and is not a folder"),
    (["--method", "naive"], "only the simulated demo runs from here (--sim)"),
    (["--sim", "--service", "http://127.0.0.1:{port}", "--token", "t"], "no service answers at http://127.0.0.1:"),
])
def test_a_bad_argument_exits_2_at_once_with_one_line(tmp_path, args, message):
    args = [a.replace("{port}", str(free_port())) for a in args]
    result, wall, cpu = run_mase(tmp_path, "ros", "demo", *args)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mase ros demo: error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""
    # under a second of work (CPU time, which a busy machine does not inflate), and no waiting
    assert cpu < 1.0, cpu
    assert wall < 5.0, wall
    assert list(tmp_path.iterdir()) == [] and our_processes(str(tmp_path)) == []


def test_a_demo_prints_its_dashboard_and_leaves_nothing_behind(tmp_path):
    pytest.importorskip("rclpy", reason="needs the ros extra (pip install -e '.[ros]'; make test installs it)")
    result, wall, _ = run_mase(tmp_path, "ros", "demo", "--sim", "--fast", "--method", "naive", "--seed", "1",
                               "--rollouts", "10", "--json", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert "dashboard: http://127.0.0.1:" in err and "/dashboard  operator token: op-" in err
    out = json.loads(result.stdout)
    (episode,) = out["episodes"]
    assert episode["method"] == "naive" and episode["run_id"] is not None
    for robot in ("tb1", "tb2"):
        assert episode["visited"][robot] == episode["planned"][robot]
    assert episode["observations"] == sum(episode["steps"].values()) + 2
    assert set(episode["exit_codes"].values()) == {0}, f"{episode['exit_codes']}\n{err[-6000:]}"
    assert out["summary"][0]["episodes"] == 1
    # nothing of ours is left: no process (service, its run workers, nodes) and no temporary folder
    deadline = time.monotonic() + 10
    while our_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert our_processes(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_a_demo_stops_everything_it_started(tmp_path):
    pytest.importorskip("rclpy", reason="needs the ros extra (pip install -e '.[ros]'; make test installs it)")
    import signal

    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "mase", "ros", "demo", "--sim", "--fast", "--method", "naive"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while "running" not in seen and time.monotonic() < deadline:  # the service is up, the episode starts
            line = process.stderr.readline()
            if not line:
                break
            seen += line
        assert "dashboard: http://127.0.0.1:" in seen, seen
        time.sleep(2)  # nodes starting
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 128 + signal.SIGTERM, (seen + err)[-6000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    deadline = time.monotonic() + 10
    while our_processes(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert our_processes(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []
