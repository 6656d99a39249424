"""The RECON authors' grids on the command line (issue 13 item 2): `--format recon-grid` (or
detected) and `--semantics recon|ours` on every command that takes `--map` (plan, mitigate,
simulate, learn), in `--help`; a wrong format is the usual file:line:column error; and the
checked sweep of all 15 test grids (`python -m bench.recon_grids`) on a small sample."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from mase.cli import build_parser, main

from conftest import ROOT

GRIDS = ROOT / "tests" / "data" / "recon-nse-mitigation" / "grids"
SALP = GRIDS / "salp" / "test_grid0.txt"
WAREHOUSE = GRIDS / "warehouse" / "test_grid1.txt"
OVERCOOKED = GRIDS / "overcooked" / "test_grid0.txt"
FAST = ["--no-progress", "--backend", "serial"]


def _json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, argv) -> str:
    """The one line `mase` prints for a user error (exit status 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_every_map_command_offers_the_format_and_the_semantics():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - the subcommands' parsers
    for name in ("plan", "mitigate", "simulate", "learn"):
        text = " ".join(commands[name].format_help().split())
        assert "--format {map,layout,recon-grid}" in text and "--semantics {recon,ours}" in text, name
        assert "--goal-deposit FIRST SECOND" in text and "--domain {salp,overcooked,warehouse}" in text, name
        assert "goal_deposit table" in text and "Default: detected" in text, name
    assert "--format" not in commands["generate"].format_help()  # generate writes maps, it reads none


@pytest.mark.parametrize("explicit", [False, True], ids=["detected", "--format"])
def test_plan_reads_their_grid_with_their_semantics_or_ours(capsys, explicit):
    fmt = ["--format", "recon-grid"] if explicit else []
    theirs = _json(capsys, ["plan", "--map", str(WAREHOUSE), *fmt, "--robots", "6", "--json", *FAST])
    assert theirs["map"] == "test_grid1 (recon)" and theirs["domain"] == "warehouse"
    assert [r["id"] for r in theirs["robots"]] == [f"agent{i}" for i in range(1, 7)]  # their robots, default
    same = _json(capsys, ["plan", "--map", str(WAREHOUSE), *fmt, "--semantics", "recon", "--robots", "6", "--json",
                          *FAST])
    assert same == theirs
    ours = _json(capsys, ["plan", "--map", str(WAREHOUSE), *fmt, "--semantics", "ours", "--robots", "6", "--json",
                          *FAST])
    assert ours["map"] == "test_grid1" and [r["id"] for r in ours["robots"]] == [f"r{i}" for i in range(6)]
    # their salp robots start at (0,0) and collect a sample of type A (the first half) or B
    salp = _json(capsys, ["plan", "--map", str(SALP), *fmt, "--robots", "4", "--json", *FAST])
    values = [r["task_value"] for r in salp["robots"]]
    assert values[0] == values[1] != values[2] == values[3]


def test_format_recon_grid_reads_a_grid_the_detection_would_not(capsys, tmp_path):
    grid = tmp_path / "salp-grid.map"  # a .map suffix: detected as our format
    shutil.copy(SALP, grid)
    err = _error(capsys, ["plan", "--map", str(grid), "--robots", "4", *FAST])
    assert err == f"mase: error: {grid}:1:1: text before the first [section]"
    plan = _json(capsys, ["plan", "--map", str(grid), "--format", "recon-grid", "--robots", "4", "--json", *FAST])
    assert plan["domain"] == "salp" and len(plan["robots"]) == 4  # the domain told by its symbols
    mixed = _json(capsys, ["plan", "--map", str(grid), "--format", "recon-grid", "--goal-deposit", "1", "3",
                           "--robots", "4", "--json", *FAST])
    values = [r["task_value"] for r in mixed["robots"]]
    assert values[1:] == [values[1]] * 3 and values[0] != values[1]  # one sample A robot, three B


def test_a_wrong_format_is_an_error_at_its_line_and_column(capsys, tmp_path):
    salp_map = ROOT / "maps" / "salp" / "salp-1.map"
    assert _error(capsys, ["plan", "--map", str(SALP), "--format", "map", "--robots", "2"]) == \
        f"mase: error: {SALP}:1:1: text before the first [section]"
    assert _error(capsys, ["plan", "--map", str(SALP), "--format", "layout", "--robots", "2"]).startswith(
        f"mase: error: {SALP}:2:1: not a Python dict")
    # their grid folder names the domain: the first cell is not a symbol of their salp grids
    assert _error(capsys, ["plan", "--map", str(salp_map), "--format", "recon-grid", "--robots", "2"]).startswith(
        f"mase: error: {salp_map}:1:1: unknown symbol '#' in a RECON salp grid")
    # elsewhere the symbols name it; a cell no RECON grid has is an error at that cell
    elsewhere = tmp_path / "mine.txt"
    elsewhere.write_text("SSSS\nSCGS\nSA?B\n")
    assert _error(capsys, ["mitigate", "--map", str(elsewhere), "--format", "recon-grid", "--robots", "2"]).startswith(
        f"mase: error: {elsewhere}:3:3: unknown symbol '?' in a RECON grid: no RECON grid has it")
    elsewhere.write_text("SSSS\nSCGS\nSAXB\n")  # X: an Overcooked counter, after salp's C and G
    assert "3:3: unknown symbol 'X' in a RECON grid: the cells before it fit only salp" in _error(
        capsys, ["plan", "--map", str(elsewhere), "--format", "recon-grid", "--robots", "2"])
    elsewhere.write_text("SS\nSS\n")  # fits salp and Overcooked: --domain tells
    assert "(it fits salp, overcooked); pass domain= (on the command line --domain)" in _error(
        capsys, ["plan", "--map", str(elsewhere), "--robots", "2"])
    shutil.copy(OVERCOOKED, elsewhere)
    assert _error(capsys, ["plan", "--map", str(elsewhere), "--domain", "warehouse", "--robots", "2"]).startswith(
        f"mase: error: {elsewhere}:1:1: unknown symbol 'X' in a RECON warehouse grid")


def test_recon_options_need_a_recon_grid_and_a_consistent_fleet(capsys):
    salp_map = str(ROOT / "maps" / "salp" / "salp-1.map")
    assert _error(capsys, ["plan", "--map", salp_map, "--semantics", "recon", "--robots", "2"]) == \
        f"mase: error: --semantics applies to RECON grids (--format recon-grid); {salp_map} is read as format " \
        "'map' (detected)"
    assert "--semantics, --domain apply to RECON grids" in _error(
        capsys, ["simulate", "--map", salp_map, "--format", "map", "--semantics", "ours", "--domain", "salp",
                 "--robots", "2", "--episodes", "2", "--out", "x.jsonl"])
    assert _error(capsys, ["plan", "--map", str(SALP), "--goal-deposit", "1", "1", "--robots", "4"]) == \
        "mase: error: --goal-deposit 1 1 must add up to the fleet's 4 robots"
    assert _error(capsys, ["plan", "--map", str(SALP), "--semantics", "ours", "--goal-deposit", "2", "2",
                           "--robots", "4"]) == "mase: error: --goal-deposit is their task assignment: it needs " \
                                               "--semantics recon"
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--map", str(SALP), "--semantics", "theirs", "--robots", "2"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("semantics", ["recon", "ours"])
def test_mitigate_on_their_grid_with_either_semantics(capsys, semantics):
    out = _json(capsys, ["mitigate", "--map", str(OVERCOOKED), "--semantics", semantics, "--robots", "6",
                         "--method", "recon", "--rounds", "1", "--episodes", "20", "--json", *FAST])
    ids = [r["id"] for r in out["robots"]]
    assert ids == ([f"agent{i}" for i in range(1, 7)] if semantics == "recon" else [f"r{i}" for i in range(6)])
    assert out["nse_after"] <= out["nse_before"] + 1e-9


@pytest.mark.parametrize("semantics", ["recon", "ours"])
def test_simulate_then_learn_on_their_grid(capsys, tmp_path, semantics):
    log, policy = tmp_path / "log.jsonl", tmp_path / "policy.json"
    chosen = ["--semantics", semantics]
    assert main(["simulate", "--map", str(SALP), *chosen, "--robots", "4", "--episodes", "3", "--out", str(log),
                 *FAST]) == 0
    capsys.readouterr()
    header = json.loads(log.read_text().split("\n", 1)[0])
    assert header["source"]["format"] == "recon-grid" and header["source"]["semantics"] == semantics
    assert header["map"] == ("test_grid0 (recon)" if semantics == "recon" else "test_grid0")
    # learn reads the map as the log was recorded (their semantics take the fleet size from the log)
    assert main(["learn", "--map", str(SALP), *chosen, "--log", str(log), "--method", "bc", "--out", str(policy),
                 "--no-progress"]) == 0
    assert "of 4 robots" in capsys.readouterr().out and policy.exists()
    other = "ours" if semantics == "recon" else "recon"
    assert "the log was recorded on map" in _error(
        capsys, ["learn", "--map", str(SALP), "--semantics", other, "--log", str(log), "--method", "bc",
                 "--out", str(policy), "--no-progress"])


def test_the_installed_command_reads_both_formats_and_both_semantics(tmp_path):
    def mase(*argv):
        return subprocess.run([sys.executable, "-m", "mase", *argv], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)

    ours_map = mase("plan", "--map", str(ROOT / "maps" / "salp" / "salp-demo.map"), "--robots", "2", *FAST)
    assert ours_map.returncode == 0 and "salp-demo" in ours_map.stdout
    for semantics, first in (("recon", "agent1"), ("ours", "r0")):
        done = mase("plan", "--map", str(SALP), "--format", "recon-grid", "--semantics", semantics, "--robots", "3",
                    *FAST)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[2].split()[0] == first
    wrong = mase("plan", "--map", str(SALP), "--format", "map", "--robots", "3")
    assert wrong.returncode == 2 and wrong.stderr == f"mase: error: {SALP}:1:1: text before the first [section]\n"


def test_the_grid_sweep_plans_a_sample_and_fails_on_a_grid_that_does_not(tmp_path, capsys):
    from bench.recon_grids import main as sweep

    assert sweep(["--grids", str(GRIDS.parent), "--domains", "salp", "warehouse", "--instances", "0", "1",
                  "--sizes", "2", "3"]) == 0
    out = capsys.readouterr().out
    assert "| domain | grid | size | states (largest MDP) | 2 robots (1/1) | 3 robots (1/2) |" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| salp", "| warehouse"))]
    assert [(r[0], r[1], r[2]) for r in rows] == [("| salp", "test_grid0", "20x20"), ("| salp", "test_grid1", "20x20"),
                                                 ("| warehouse", "test_grid0", "18x17"),
                                                 ("| warehouse", "test_grid1", "18x17")]
    assert all(cell.startswith("yes: ") for r in rows for cell in r[4:]), out
    assert rows[2][5].startswith("yes: 3 tasks")  # warehouse: robot i takes shelf i of its half
    assert "8 of 8 fleets plan" in out
    broken = tmp_path / "grids" / "warehouse"
    broken.mkdir(parents=True)
    (broken / "test_grid0.txt").write_text("....\n.ss.\n.tg.\n")  # shelves in the left half only
    assert sweep(["--grids", str(tmp_path), "--domains", "warehouse", "--instances", "0", "--sizes", "2"]) == 1
    out = capsys.readouterr().out
    assert "0 of 1 fleets plan" in out
    assert "| NO: " in out and "robot 2 processes a shelf of the right half, and that half has none" in out
