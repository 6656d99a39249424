"""`mase plan` end to end, checked against the library it wraps."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet, plan_summary
from conftest import MAPS, ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mase", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_plan_json_matches_the_library():
    path = MAPS / "salp" / "salp-3.map"
    result = run_cli("plan", "--map", str(path), "--robots", "7", "--seed", "4", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    expected = plan_summary(plan_fleet(generate_scenario(load_map(path), 7, seed=4)))
    assert [r["id"] for r in out["robots"]] == [r["id"] for r in expected]
    for got, want in zip(out["robots"], expected):
        assert got["task_value"] == pytest.approx(want["task_value"])
        assert got["expected_steps"] == pytest.approx(want["expected_steps"])
        assert got["expected_steps"] > 0 and got["task_value"] < 0


def test_plan_table_lists_every_robot():
    result = run_cli("plan", "--map", str(MAPS / "salp" / "salp-demo.map"), "--robots", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("map salp-demo (salp), 3 robots")
    assert [line.split()[0] for line in lines[2:]] == ["tb1", "tb2", "r0"]
