"""`metareasoner.experiments` and `mase experiment`, on the tiny quick configuration."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from conftest import ROOT
from metareasoner.experiments import (ROW_COLUMNS, ExperimentConfig, aggregate, best_care, care_lines, gap_lines,
                                      merge_and_write, paired_test, previous_command, read_gap, read_rows, row_key,
                                      run_and_write)
from metareasoner.mitigation import METHODS


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    (out / "results").mkdir()
    (out / "results" / "notes.md").write_text("## Investigations\n\nA hand-written note.\n")
    config = ExperimentConfig.quick(domains=("salp", "warehouse"), large_sizes=(8,), large_instances=1,
                                    large_methods=("naive", "best-response"))
    rows, paths = run_and_write(config, out, command="test")
    return config, rows, paths, out


def test_default_methods_include_the_exchange_values():
    config = ExperimentConfig()
    assert {"exchange", "exchange-logs"} <= set(config.methods) and config.methods == METHODS
    assert "exchange-logs" in {r[1] for u in ExperimentConfig.quick().units() for r in u.runs}
    with pytest.raises(ValueError, match="exchange-logs method needs fleets of at least 2 robots"):
        ExperimentConfig(sizes=(1, 10), methods=("recon", "exchange-logs"))


def test_quick_configuration_is_tiny():
    config = ExperimentConfig.quick()
    assert (config.instances, config.seeds, config.sizes, config.fractions) == (1, 1, (4, 6), (0.0, 0.5, 1.0))
    assert config.large_sizes == () and config.slack == "10%"


def test_quick_run_writes_csv_png_and_markdown(quick_run):
    config, rows, paths, out = quick_run
    for key in ("runs", "fraction_summary", "size_summary", "frontier_summary", "generated_summary", "care_summary",
                "large_summary", "lvi_gap", "fraction_png", "size_png", "runtime_png", "large_png", "frontier_png",
                "generated_png", "markdown"):
        assert paths[key].exists() and paths[key].stat().st_size > 0, key
    for key in ("fraction_png", "size_png", "runtime_png", "large_png", "frontier_png", "generated_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with paths["runs"].open() as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(rows) == config.n_runs()
    text = paths["markdown"].read_text()
    assert text.startswith("# Experiments")
    assert "## Compared with the paper" in text and "results/fraction.png" in text and "```\ntest\n```" in text
    # the hand-written notes survive the regeneration, after the comparison and before the tables
    assert text.index("## Compared with the paper") < text.index("A hand-written note.") < text.index("## (a)")
    for section in ("## (b)", "## (c)", "## (d)", "## (e) Paired tests", "## (f)", "Wilcoxon", "care coefficient",
                    "## Considerate reward: care sweep", "results/large.png", "LVI against the exact constrained",
                    "LVI below the reference: 0 of"):
        assert section in text, section
    assert "The considerate rows of every other experiment run at it." in text
    with paths["large_summary"].open() as fh:
        large = list(csv.DictReader(fh))
    assert large and {r["robots"] for r in large} == {"8"} and {r["method"] for r in large} == {"naive", "best-response"}
    gap = read_gap(paths["lvi_gap"])
    assert gap and all(g["lvi"] >= g["reference"] - 1e-6 * max(1.0, g["naive"]) for g in gap)


def test_merge_runs_only_the_missing_runs_and_keeps_the_rest(quick_run, tmp_path):
    import shutil

    config, rows, paths, out = quick_run
    shutil.copytree(out, tmp_path / "out")
    before = (tmp_path / "out" / "results" / "runs.csv").read_text()
    gap_before = (tmp_path / "out" / "results" / "lvi_gap.csv").read_text()
    wider = ExperimentConfig.quick(**{**{k: getattr(config, k) for k in ("domains", "large_sizes", "large_instances",
                                                                         "large_methods")},
                                      "care_values": config.care_values + (20.0,)})
    new, written = merge_and_write(wider, tmp_path / "out", command="second", only=["care"])
    assert {(r["experiment"], r["care"]) for r in new} == {("care", 20.0)}
    assert len(new) == len(config.domains) * config.care_instances * config.seeds
    merged = read_rows(written["runs"])
    assert len(merged) == len(rows) + len(new) and len({row_key(r) for r in merged}) == len(merged)
    old = {row_key(r): r for r in read_rows(paths["runs"])}
    kept = {row_key(r): r for r in merged if row_key(r) in old}
    assert len(kept) == len(old) and all(kept[k]["nse_after"] == old[k]["nse_after"] for k in old)
    assert set(before.splitlines()) <= set(written["runs"].read_text().splitlines())  # old rows byte for byte
    assert written["lvi_gap"].read_text() == gap_before  # lvi-gap not asked for: kept
    assert previous_command(written["markdown"]) == "test\nsecond"
    text = written["markdown"].read_text()
    assert "Commands (in order" in text and "| domain | 1 | 5 | 20 |" in text
    stale = best_care(merged) != best_care(rows)
    assert ("were not rerun" in text) == stale and ("run at it." in text) == (not stale)
    # nothing left to run: a second merge computes nothing and changes no row
    again, _ = merge_and_write(wider, tmp_path / "out", command="third", only=["care"])
    assert again == [] and len(read_rows(written["runs"])) == len(merged)


def test_care_lines_say_when_the_other_rows_used_an_older_best():
    def row(experiment, care, instance, after, robots=10):
        return {"experiment": experiment, "domain": "salp", "source": "shipped", "instance": instance, "seed": 0,
                "robots": robots, "budget": "10%", "method": "considerate", "update_fraction": 0.25, "care": care,
                "nse_after": after}

    config = ExperimentConfig(instances=2, seeds=1, domains=("salp",))
    sweep = [row("care", 5.0, 1, 4.0), row("care", 5.0, 2, 6.0), row("care", 50.0, 1, 3.0), row("care", 50.0, 2, 5.0)]
    lines = care_lines(sweep + [row("size", 5.0, 1, 4.0, 25)], config)
    assert "salp 50" in lines[0] and "run at salp 5" in lines[0] and "not rerun" in lines[0]
    assert "mean J_N after is 4.000 at care 50 against 5.000 at 5 (-1.000, -20.0 %; lower in 2, higher in 0 of 2" \
        in lines[1]
    assert care_lines(sweep + [row("size", 50.0, 1, 3.0, 25)], config)[0].endswith("run at it.")


def test_gap_lines_count_lvi_below_the_reference():
    gap = [{"domain": "salp", "instance": 1, "robot": "r1", "budget": b, "naive": 4.0, "lvi": lvi, "lagrangian": lag,
            "reference": ref} for b, lvi, lag, ref in (("0%", 4.0, 4.0, 4.0), ("10%", 3.0, 2.0, 1.0),
                                                      ("20%", 0.5, 1.0, 0.6))]
    text = "\n".join(gap_lines(gap, ExperimentConfig()))
    assert "LVI below the reference: 1 of 3 pairs" in text and "1 of 1 robots" in text
    assert "(salp-1 robot r1 at 20%: LVI 0.5, Lagrangian 1, reference 0.6)" in text
    assert "| salp | 0% | 1 | 4.000 | 4.000 | 4.000 | 4.000 | 0.000 | 0.000 | n/a | n/a |" in text
    assert "| salp | 10% | 1 | 4.000 | 3.000 | 2.000 | 1.000 | 2.000 | 2.000 | 33 % | 67 % |" in text
    assert "largest 2.000 (salp-1, robot r1, budget 10%" in text


def test_rows_have_the_expected_columns_and_cover_the_configuration(quick_run):
    config, rows, _, _ = quick_run
    for r in rows:
        assert set(ROW_COLUMNS) <= set(r)
        assert r["seconds_total"] == pytest.approx(sum(r[f"seconds_{p}"] for p in
                                                       ("plan", "monitor", "blame", "generalise", "replan", "accept")))
        assert 0 <= r["nse_after"] <= r["nse_before"] + 1e-9  # never worse
        assert r["max_regret_over_slack"] <= 1 + 1e-6 or r["max_task_regret"] <= 1e-6  # within budget
    frac = [r for r in rows if r["experiment"] == "fraction"]
    size = [r for r in rows if r["experiment"] == "size"]
    assert {(r["domain"], r["method"], r["update_fraction"]) for r in frac} == {
        (d, m, f) for d in config.domains for m in config.fraction_methods for f in config.fractions}
    assert {(r["domain"], r["robots"], r["method"]) for r in size} == {
        (d, n, m) for d in config.domains for n in config.sizes for m in config.methods} | {
        (d, n, m) for d in config.domains for n in config.large_sizes for m in config.large_methods}
    assert all(r["update_fraction"] == config.update_fraction for r in size)
    frontier = [r for r in rows if r["experiment"] == "frontier"]
    assert {(r["domain"], r["budget"], r["method"]) for r in frontier} == {
        (d, b, m) for d in config.domains for b in config.frontier_budgets for m in config.frontier_methods}
    assert {r["care"] for r in rows if r["experiment"] == "care"} == set(config.care_values)
    care = best_care(rows)
    assert all(r["care"] == care[r["domain"]] for r in rows if r["method"] == "considerate" and r["experiment"] != "care")
    assert {r["source"] for r in rows if r["experiment"] == "generated"} == {"generated"}


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
        key = (r["domain"], r["source"], r["instance"], r["seed"], r["robots"], r["budget"])
        assert before.setdefault(key, r["nse_before"]) == r["nse_before"]


def test_aggregate_mean_std_and_confidence_interval():
    rows = [{"experiment": "size", "domain": "salp", "robots": 4, "method": "recon", "update_fraction": 0.25,
             "budget": "10%", "care": float("nan"), **{c: 0.0 for c in ROW_COLUMNS[11:]}, "nse_after": v}
            for v in (1.0, 3.0)]
    (summary,) = aggregate(rows, "size")
    assert summary["n"] == 2 and summary["nse_after_mean"] == 2.0
    assert summary["nse_after_std"] == pytest.approx(2 ** 0.5)
    assert summary["nse_after_ci"] == pytest.approx(12.7062047 * 1.0)  # t(0.975, 1) * std / sqrt(2)


def test_paired_test_is_scipys_one_sided_wilcoxon():
    from scipy.stats import wilcoxon

    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    b = [1.5, 2.9, 3.1, 6.0, 5.0, 8.0]  # one tie
    rows = [{"experiment": "size", "domain": "salp", "robots": 4, "method": m, "source": "shipped", "instance": k,
             "seed": 0, "nse_after": v, "budget": "10%"} for m, vals in (("x", a), ("y", b)) for k, v in enumerate(vals)]
    test = paired_test(rows, "size", "salp", 4, "x", "y")
    keep = [k for k in range(6) if a[k] != b[k]]
    assert test["p"] == pytest.approx(wilcoxon([a[k] for k in keep], [b[k] for k in keep], alternative="less").pvalue)
    assert (test["wins"], test["losses"], test["n"]) == (5, 0, 6)
    assert paired_test(rows, "size", "salp", 4, "x", "x")["p"] == 1.0


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
        "runs.csv", "fraction_summary.csv", "size_summary.csv", "fraction.png", "nse_by_method.png", "runtime.png",
        "frontier.png", "frontier_summary.csv"}


@pytest.mark.parametrize("args", [["--domains", "moon"], ["--sizes", "0"], ["--sizes", "-3"], ["--seeds", "0"],
                                  ["--instances", "9"], ["--jobs", "0"], ["--only", "care"],
                                  ["--merge", "--only", "telepathy"]])
def test_cli_bad_options_exit_2_without_traceback(tmp_path, args):
    result = run_cli("experiment", "--quick", "--out", str(tmp_path), "--no-progress", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error" in result.stderr
    assert not (tmp_path / "RESULTS.md").exists()
