"""The RECON authors' protocol with our methods (`mase experiment --suite recon-reference`), end to
end on one of their grids per domain with a small fleet; `mase experiment` writes to results/
unless told otherwise."""
from __future__ import annotations

import csv
import math

import pytest

from mase.cli import build_parser, main
from metareasoner.recon_reference import EVALUATION_NOTE, ReconReferenceConfig
from planner.recon_grid import read_recon_grid

from conftest import ROOT

GRIDS = ROOT / "tests" / "data" / "recon-nse-mitigation"  # a copy of ../shared/peers/recon-nse-mitigation/grids


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("recon-reference")
    code = main(["experiment", "--suite", "recon-reference", "--grids", str(GRIDS), "--quick", "--out", str(out),
                 "--slack", "100", "--no-progress"])
    assert code == 0
    with (out / "recon_reference" / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return out, rows


def test_every_run_of_the_protocol_is_there(quick_run):
    out, rows = quick_run
    config = ReconReferenceConfig.quick(str(GRIDS), slack=100.0)
    assert len(rows) == config.n_runs() == 3 * (6 + 5 * 2)
    cells = {(r["experiment"], r["domain"], r["method"], float(r["update_fraction"])) for r in rows}
    for domain in ("salp", "overcooked", "warehouse"):
        for method in config.size_methods:
            assert ("size", domain, method, 0.5) in cells
        for method in config.fraction_methods:
            for f in config.fractions:
                assert ("fraction", domain, method, f) in cells
    for r in rows:
        before, after, n = float(r["nse_before"]), float(r["nse_after"]), int(r["robots"])
        assert r["goal_deposit"] == "2/2" and r["grid"] == "0" and n == 4
        assert math.isfinite(after) and after >= 0
        if r["method"] == "naive":
            assert after == before and int(r["n_updated"]) == 0
        else:
            assert int(r["n_updated"]) <= math.ceil(float(r["update_fraction"]) * n)
            assert float(r["max_task_regret"]) <= 100 + 1e-6  # within the task slack
    # the naive penalty is the same fleet's in both experiments (one plan per fleet)
    naive = {(r["domain"], r["nse_before"]) for r in rows}
    assert len(naive) == 3
    # the fleets are their robots: half sample A / onion soup / left-half shelves
    world = read_recon_grid(GRIDS / "grids" / "salp" / "test_grid0.txt", robots=4)
    assert [world.items[t.items[0]].label for t in world.robots] == ["A", "A", "B", "B"]


def test_the_report_states_how_our_evaluation_differs(quick_run):
    out, _ = quick_run
    text = (out / "RECON_REFERENCE.md").read_text()
    assert EVALUATION_NOTE in text and "most-likely joint path" in text
    assert "## (a) J_N by fleet size, 50 % of the robots corrected" in text
    assert "## (b) J_N by percentage of robots corrected, 4 robots (2/2)" in text
    assert "mase experiment --suite recon-reference --grids" in text
    for name in ("size_summary.csv", "fraction_summary.csv", "config.txt"):
        assert (out / "recon_reference" / name).exists()


def test_experiment_writes_to_results_unless_told_and_checks_its_options(capsys, tmp_path):
    parser = build_parser()
    assert parser.parse_args(["experiment"]).out == "results"
    assert parser.parse_args(["experiment", "--out", "docs"]).out == "docs"
    assert main(["experiment", "--suite", "recon-reference", "--no-progress"]) == 2
    assert "needs --grids PATH" in capsys.readouterr().err
    assert main(["experiment", "--grids", str(GRIDS), "--quick", "--no-progress"]) == 2
    assert "--grids is for --suite recon-reference" in capsys.readouterr().err
    assert main(["experiment", "--suite", "recon-reference", "--grids", str(tmp_path), "--no-progress"]) == 2
    assert "must be a checkout of RECON-NSE-Mitigation" in capsys.readouterr().err
