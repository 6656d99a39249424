"""Every kind of bad map, scenario and command line gives a clear message saying where."""
from __future__ import annotations

import subprocess
import sys

import pytest

from planner.maps import load_map, load_map_text
from planner.scenario import generate_scenario
from planner.world import MapError
from conftest import MAPS, ROOT

GOOD = """\
[map]
domain = salp
name = tiny

[grid]
#######
#1..a.#
#..C..#
#L...b#
#######

[zones]
r = reef

[zone-layer]
.......
.rrrrr.
.rrrrr.
.rrrrr.
.......

[rules]
*  sample  A  2.0  1.0

[robots]
tb1  1,1  collect 4,1 5,3
"""
# line numbers in GOOD: domain 2, [grid] rows 6-10, [zones] 13, [zone-layer] 16-20, rule 23, robot 26


def variant(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def test_the_base_map_is_good(write_map):
    world = load_map(write_map(GOOD))
    assert world.robots[0].items and world.zone_names == ("reef",)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("#..C..#", "#..Z..#", r"bad\.map:8:4: unknown symbol 'Z'"),
        ("#..C..#", "#..C...#", r"bad\.map:8:\d+: ragged \[grid\]"),
        ("collect 4,1 5,3", "collect 4,1 9,3", r"bad\.map:26:\d+: sample site 9,3 is off the grid"),
        ("collect 4,1 5,3", "collect 4,1 0,3", r"bad\.map:26:\d+: sample site 0,3 is on '#'"),
        ("tb1  1,1", "tb1  3,2", r"bad\.map:26:6: robot 'tb1' start 3,2 is on 'C'"),
    ],
    ids=["unknown-symbol", "ragged-rows", "task-off-grid", "task-at-wall", "start-on-coral"],
)
def test_grid_and_task_errors(write_map, old, new, expected):
    with pytest.raises(MapError, match=expected):
        load_map(write_map(variant(old, new)))


def test_unreachable_goal(write_map):
    text = GOOD.replace("#1..a.#", "#1..a##").replace("#..C..#", "#..C.##").replace("#L...b#", "#L..#b#")
    text = text.replace(".rrrrr.\n.rrrrr.\n.rrrrr.", ".rrrr..\n.rrrr..\n.rrrr..")
    with pytest.raises(MapError, match=r"bad\.map:9:6: sample site at 5,3 cannot be reached"):
        load_map(write_map(text))


def test_zone_with_no_cells(write_map):
    text = variant("r = reef\n", "r = reef\nq = empty-patch\n")
    with pytest.raises(MapError, match=r"bad\.map:14:1: zone 'empty-patch' has no cells"):
        load_map(write_map(text))


def test_zone_key_not_declared(write_map):
    with pytest.raises(MapError, match=r"bad\.map:17:3: zone key 'x' is not declared"):
        load_map(write_map(variant(".rrrrr.\n", ".rxrrr.\n")))


def test_negative_weight(write_map):
    with pytest.raises(MapError, match=r"bad\.map:23:15: weight must be positive, got -2.0"):
        load_map(write_map(variant("*  sample  A  2.0  1.0", "*  sample  A  -2.0  1.0")))


@pytest.mark.parametrize(
    "row, expected",
    [
        ("*  shelf  A  2.0  1.0", r"23:4: rule names unknown feature 'shelf'"),
        ("*  sample  C  2.0  1.0", r"23:12: rule names unknown value 'C'"),
        ("*  sample  none  2.0  1.0", r"unknown value 'none'"),
        ("kelp  sample  A  2.0  1.0", r"23:1: rule names unknown zone 'kelp'"),
        ("*  sample  A  2.0  0", r"23:20: sensitivity must be positive"),
        ("*  sample  A  heavy  1.0", r"23:15: weight must be a number, got 'heavy'"),
        ("*  sample  A  2.0", r"a rule row has 5 fields"),
    ],
)
def test_rule_errors(write_map, row, expected):
    with pytest.raises(MapError, match=expected):
        load_map(write_map(variant("*  sample  A  2.0  1.0", row)))


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("domain = salp", "domain = moon", r"2:10: unknown domain 'moon'"),
        ("domain = salp\n", "", r"field 'domain'"),
        ("name = tiny", "name = tiny\nslip = 1.5", r"4:8: slip must be in \[0, 1\)"),
        ("name = tiny", "name = tiny\ndiscount = 1", r"discount must be in \(0, 1\)"),
        ("name = tiny", "name = tiny\nspeed = 3", r"4:1: unknown parameter 'speed'"),
        ("[zones]", "[zonez]", r"12:1: unknown section \[zonez\]"),
        ("collect 4,1 5,3", "collect 4,1 4,1", r"26:\d+: sample site 4,1 is listed twice"),
        ("collect 4,1 5,3", "collect 2,2", r"26:\d+: 2,2 is '\.', not a sample site"),
        ("collect 4,1 5,3", "harvest 4,1", r"26:\d+: unknown task kind 'harvest'"),
        ("tb1  1,1", "tb1  one", r"26:6: expected a cell as x,y"),
        ("#L...b#", "#....b#", r"needs at least one lab"),
    ],
)
def test_header_and_task_errors(write_map, old, new, expected):
    with pytest.raises(MapError, match=expected):
        load_map(write_map(variant(old, new)))


def test_missing_file_and_inline_text():
    with pytest.raises(MapError, match=r"nowhere\.map: no such map file"):
        load_map("nowhere.map")
    with pytest.raises(MapError, match=r"<inline map>:8:4: unknown symbol"):
        load_map_text(variant("#..C..#", "#..Z..#"))


def test_scenario_arguments_are_checked():
    world = load_map(MAPS / "salp" / "salp-1.map")
    with pytest.raises(ValueError, match="at least 1"):
        generate_scenario(world, 0)
    with pytest.raises(ValueError, match="a task budget must be a finite number >= 0, got -0.5"):
        generate_scenario(world, 3, slack=-0.5)
    with pytest.raises(ValueError, match="a task budget is a number or a percentage such as '10%', got 'lots'"):
        generate_scenario(world, 3, slack="lots")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mase", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--robots", "0"], "must be at least 1"),
        (["--robots", "3", "--slack", "-1"], "a task budget must be a finite number >= 0"),
        (["--robots", "3", "--slack", "5 steps"], "a task budget is a number or a percentage such as '10%'"),
        (["--robots", "two"], "expected an integer"),
    ],
)
def test_cli_refuses_bad_arguments_without_traceback(args, expected):
    result = run_cli("plan", "--map", str(MAPS / "salp" / "salp-1.map"), *args)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_cli_reports_map_errors_without_traceback(write_map):
    path = write_map(variant("domain = salp", "domain = moon"))
    result = run_cli("plan", "--map", str(path), "--robots", "2")
    assert result.returncode == 2
    assert f"{path}:2:10: unknown domain 'moon'" in result.stderr
    assert "Traceback" not in result.stderr
