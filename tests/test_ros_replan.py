"""ROS 2 bridge end to end with a replan: the test calls the bridge's `replan` service
(std_srvs/Trigger), the service runs difference-reward mitigation, the bridge announces the new
policies on /mase/policy_updates, both executors adopt them, and the simulated robots then
drive the new most likely paths, which differ from the naive ones (tb1 detours)."""
from __future__ import annotations

import pytest

from ros_nodes.demo import ROBOTS, run_episode

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
    result = run_episode("difference-reward", seed=0, episodes=20, fast=True, workdir=tmp_path, timeout=90)
    check_episode(result, tmp_path)
