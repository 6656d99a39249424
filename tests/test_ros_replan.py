"""ROS 2 bridge end to end with a replan: the test calls the bridge's `replan` service
(std_srvs/Trigger), the service runs difference-reward mitigation, the bridge announces the new
policies on /mase/policy_updates, both executors adopt them, and the simulated robots then
drive the new most likely paths, which differ from the naive ones (tb1 detours). The episode
uses a service started beforehand (as `mase ros demo --service URL --token T` does), which
`mase ros demo` refuses with a token that is not an operator's."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ros_nodes.demo import ROBOTS, run_episode, start_demo_service

from conftest import ROOT

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="needs the ros extra (pip install -e '.[ros]'; make test installs it)")


def check_episode(result, tmp_path):
    assert result.run_id is not None and result.model is not None
    changed = [r for r in ROBOTS if result.planned[r] != result.planned_before[r]]
    assert changed, "the run changed no robot's path; pick a method that does on this map"
    for robot in ROBOTS:
        assert result.visited[robot] == result.planned[robot], robot
    for robot in changed:
        assert result.visited[robot] != result.planned_before[robot]
    bridge_log = (tmp_path / "nodes" / "mase_bridge.log").read_text()
    assert f"run {result.run_id} queued (difference-reward" in bridge_log
    assert f"announced the policies of run {result.run_id}" in bridge_log
    executor_log = (tmp_path / "nodes" / "tb1_executor.log").read_text()
    assert f"the bridge announced run {result.run_id}" in executor_log
    assert set(result.exit_codes.values()) == {0}, result.exit_codes


def test_a_replan_changes_the_executed_path(tmp_path):
    service = start_demo_service(tmp_path / "running")
    try:
        refused = subprocess.run([sys.executable, "-m", "mase", "ros", "demo", "--sim", "--service", service.url,
                                  "--token", "not-a-token"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "refuses the token" in refused.stderr
        result = run_episode("difference-reward", seed=0, rollouts=20, fast=True, workdir=tmp_path, timeout=90,
                             service=service)
        check_episode(result, tmp_path)
        assert service.process.process.poll() is None  # a service it did not start is left running
    finally:
        service.stop()
