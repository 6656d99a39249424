"""ROS 2 bridge end to end with the naive policies: the service, the bridge, two executors and
two simulated Turtlebots as separate processes talking over DDS (a random ROS_DOMAIN_ID per
run). The simulated robots visit exactly the cells of their policies' most likely paths as the
service draws them, every step is reported to the service's monitor, and every node stops
cleanly on SIGINT."""
from __future__ import annotations

import pytest

from ros_nodes.demo import ROBOTS, run_episode

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="needs the ros extra (pip install -e '.[ros]'; make test installs it)")


def test_simulated_robots_follow_their_policies(tmp_path):
    result = run_episode(None, seed=1, fast=True, workdir=tmp_path, timeout=90)
    for robot in ROBOTS:
        assert result.visited[robot] == result.planned[robot], robot
        assert result.planned[robot] == result.planned_before[robot]  # no run: the naive policies
    # the start state plus one report per executed step, from both robots
    assert result.observations == sum(result.steps.values()) + len(ROBOTS)
    assert result.nse_state_rate is not None and 0 <= result.nse_state_rate < 1
    assert set(result.exit_codes.values()) == {0}, result.exit_codes
    logs = {p.name: p.read_text() for p in (tmp_path / "nodes").glob("*.log")}
    assert "stopped the robot (zero velocity) on exit" in logs["tb1_executor.log"]
    assert not [line for text in logs.values() for line in text.splitlines() if "Traceback" in line]
