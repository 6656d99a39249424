"""`metareasoner.experiments` and `mase experiment`, on the tiny quick configuration."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from conftest import ROOT
from metareasoner.experiments import ROW_COLUMNS, ExperimentConfig, aggregate, run_and_write
from metareasoner.mitigation import METHODS


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    (out / "results").mkdir()
    (out / "results" / "notes.md").write_text("## Investigations\n\nA hand-written note.\n")
    config = ExperimentConfig.quick()
    rows, paths = run_and_write(config, out, command="test")
    return config, rows, paths, out


def test_default_methods_include_the_exchange_values():
    config = ExperimentConfig()
    assert {"exchange", "exchange-logs"} <= set(config.methods) and config.methods == METHODS
    assert {"exchange", "exchange-logs"} <= {r[1] for u in ExperimentConfig.quick().units() for r in u.runs}
    with pytest.raises(ValueError, match="exchange-logs method needs fleets of at least 2 robots"):
        ExperimentConfig(sizes=(1, 10), methods=("recon", "exchange-logs"))


def test_quick_configuration_is_tiny():
    config = ExperimentConfig.quick()
    assert (config.instances, config.seeds, config.sizes, config.fractions) == (1, 1, (4, 6), (0.0, 0.5, 1.0))


def test_quick_run_writes_csv_png_and_markdown(quick_run):
    config, rows, paths, out = quick_run
    for key in ("runs", "fraction_summary", "size_summary", "fraction_png", "size_png", "runtime_png", "markdown"):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    for key in ("fraction_png", "size_png", "runtime_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["runs"].open() as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(rows) == config.n_runs()
    text = paths["markdown"].read_text()
    assert text.startswith("# Experiments")
    assert "## Compared with the paper" in text and "results/fraction.png" in text and "```\ntest\n```" in text
    # the hand-written notes survive the regeneration, after the comparison and before the tables
    assert text.index("## Compared with the paper") < text.index("A hand-written note.") < text.index("## (a)")


def test_rows_have_the_expected_columns_and_cover_the_configuration(quick_run):
    config, rows, _, _ = quick_run
    for r in rows:
        assert set(ROW_COLUMNS) <= set(r)
        assert r["seconds_total"] == pytest.approx(sum(r[f"seconds_{p}"] for p in
                                                       ("plan", "monitor", "blame", "generalise", "replan")))
        assert r["nse_before"] >= 0 and r["nse_after"] >= 0
    frac = [r for r in rows if r["experiment"] == "fraction"]
    size = [r for r in rows if r["experiment"] == "size"]
    assert {(r["domain"], r["method"], r["update_fraction"]) for r in frac} == {
        (d, m, f) for d in config.domains for m in config.fraction_methods for f in config.fractions}
    assert {(r["domain"], r["robots"], r["method"]) for r in size} == {
        (d, n, m) for d in config.domains for n in config.sizes for m in config.methods}
    assert all(r["update_fraction"] == config.update_fraction for r in size)


def test_fraction_zero_and_naive_leave_the_penalty_unchanged(quick_run):
    _, rows, _, _ = quick_run
    unchanged = [r for r in rows if r["update_fraction"] == 0.0 or r["method"] == "naive"]
    assert unchanged
    for r in unchanged:
        assert r["nse_after"] == r["nse_before"] and r["n_updated"] == 0


def test_one_fleet_per_domain_instance_seed_size(quick_run):
    _, rows, _, _ = quick_run
    before = {}
    for r in rows:
        key = (r["domain"], r["instance"], r["seed"], r["robots"])
        assert before.setdefault(key, r["nse_before"]) == r["nse_before"]


def test_aggregate_mean_and_std():
    rows = [{"experiment": "size", "domain": "salp", "robots": 4, "method": "recon", "update_fraction": 0.25,
             **{c: 0.0 for c in ROW_COLUMNS[8:]}, "nse_after": v} for v in (1.0, 3.0)]
    (summary,) = aggregate(rows, "size")
    assert summary["n"] == 2 and summary["nse_after_mean"] == 2.0
    assert summary["nse_after_std"] == pytest.approx(2 ** 0.5)


@pytest.mark.parametrize("bad", [dict(domains=("moon",)), dict(sizes=(0,)), dict(instances=6),
                                 dict(methods=("telepathy",)), dict(fractions=(1.5,))])
def test_bad_configuration_raises(bad):
    with pytest.raises(ValueError):
        ExperimentConfig(**bad)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mase", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_cli_quick_run(tmp_path):
    result = run_cli("experiment", "--quick", "--out", str(tmp_path), "--domains", "salp", "--no-progress")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "RESULTS.md").read_text()
    assert "mase experiment --out" in text and "--quick" in text
    assert {p.name for p in (tmp_path / "results").iterdir()} >= {
        "runs.csv", "fraction_summary.csv", "size_summary.csv", "fraction.png", "nse_by_method.png", "runtime.png"}


@pytest.mark.parametrize("args", [["--domains", "moon"], ["--sizes", "0"], ["--sizes", "-3"], ["--seeds", "0"],
                                  ["--instances", "9"], ["--jobs", "0"]])
def test_cli_bad_options_exit_2_without_traceback(tmp_path, args):
    result = run_cli("experiment", "--quick", "--out", str(tmp_path), "--no-progress", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error" in result.stderr
    assert not (tmp_path / "RESULTS.md").exists()
