"""bench/recon_peer.py, the RECON authors' code side by side with ours, without their code or its
virtualenv: the update fraction that corrects exactly their number of robots, the ratios and the
tables, our side on a tiny fleet of one of their grids, and the driver it writes into their copy,
run here against stand-ins of their functions that record the calls."""
from __future__ import annotations

import json
import math
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT

if str(ROOT) not in sys.path:  # bench/ is run as `python -m bench.x` from the checkout, not installed
    sys.path.insert(0, str(ROOT))

from bench import recon_peer  # noqa: E402

GRIDS = ROOT / "tests" / "data" / "recon-nse-mitigation" / "grids"


@pytest.mark.parametrize("corrected, robots", [(1, 1), (1, 3), (3, 10), (5, 10), (7, 25), (29, 100), (10, 10)])
def test_update_fraction_corrects_exactly_their_number(corrected, robots):
    f = recon_peer.update_fraction(corrected, robots)
    assert math.ceil(f * robots) == corrected  # what Mitigation selects: ceil(f n)
    assert abs(f - corrected / robots) < 1e-12
    if (corrected, robots) == (7, 25):
        assert math.ceil(7 / 25 * 25) == 8 and f < 7 / 25  # the plain quotient would correct one robot more


@pytest.mark.parametrize("corrected, robots", [(0, 5), (6, 5), (-1, 5)])
def test_update_fraction_refuses_impossible_counts(corrected, robots):
    with pytest.raises(ValueError, match="between 1 and the fleet size"):
        recon_peer.update_fraction(corrected, robots)


def test_ratio():
    assert recon_peer.ratio(432.0, 1.44) == "300x"
    assert recon_peer.ratio(12.5, 0.5) == "25.0x"
    assert recon_peer.ratio(0.02, 0.08) == "0.25x"
    assert recon_peer.ratio(None, 1.0) == recon_peer.ratio(1.0, None) == recon_peer.ratio(1.0, 0.0) == ""


def _theirs(scale: float) -> dict:
    seconds = {"setup": 0.1 * scale, "plan": 100.0 * scale,
               "naive": {"monitor": 0.5 * scale, "blame": 1.5 * scale},
               "recon": {"blame": 1.0 * scale, "replan": 60.0 * scale, "monitor": 0.4 * scale},
               "gen-recon-cf": {"blame": 3.0 * scale, "generalise": 1.0 * scale, "replan": 55.0 * scale,
                                "monitor": 0.5 * scale}}
    total = seconds["setup"] + seconds["plan"] + sum(sum(seconds[m].values()) for m in ("naive", *recon_peer.METHODS))
    return {"seconds": seconds, "total": total, "nse": {"naive": 30.0, "recon": 20.0, "gen-recon-cf": 10.0}}


def _ours(total: float) -> dict:
    methods = {m: {"wall": total * 0.4, "seconds": {"monitor": total * 0.2, "blame": total * 0.1, "generalise": 0.0,
                                                    "replan": total * 0.1, "accept": 0.0},
                   "nse_before": 12.0, "nse_after": 6.5, "updated": ["agent1", "agent3"]} for m in recon_peer.METHODS}
    return {"setup": total * 0.05, "plan": total * 0.15, "methods": methods, "total": total, "first_total": total * 2}


def _cells(text: str, first: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_report_tables_give_the_ratio_per_phase_and_in_total():
    entries = [{"domain": "salp", "grid": 0, "robots": 10, "corrected": 5, "deposit": (5, 5),
                "theirs": _theirs(1.0), "ours": _ours(1.0)},
               {"domain": "warehouse", "grid": 1, "robots": 10, "corrected": 5, "deposit": (5, 5),
                "theirs": _theirs(2.0), "ours": _ours(2.0)},
               {"domain": "overcooked", "grid": 0, "robots": 10, "corrected": 5, "deposit": (5, 5),
                "theirs": {"error": "TypeError: 'module' object is not callable (File \"overcooked_mdp.py\", line 55)"},
                "ours": _ours(3.0)}]
    text = recon_peer.report(entries, ["## header"])
    salp_total = _theirs(1.0)["total"]
    assert _cells(text, "salp/test_grid0") == ["salp/test_grid0", "10", "5", f"{salp_total:.1f}", "1.00 (2.00)",
                                               f"{salp_total:.0f}x"]
    assert _cells(text, "overcooked/test_grid0")[3] == "failed"
    # the sum covers only the grids where their code ran, and says so
    both = _theirs(1.0)["total"] + _theirs(2.0)["total"]
    assert _cells(text, "**grids where theirs ran**")[3:] == [f"{both:.1f}", "3.00", f"{both / 3.0:.0f}x"]
    assert "Their code failed: `TypeError: 'module' object is not callable" in text

    salp = "\n".join(recon_peer.grid_table(entries[0]))
    assert _cells(salp, "naive planning: every robot's task policy") == [
        "naive planning: every robot's task policy", "100.00", "0.150", "667x"]
    assert _cells(salp, "**RECON** (`recon`)") == ["**RECON** (`recon`)", "61.40", "0.400", "154x"]
    assert _cells(salp, "&nbsp;&nbsp;replan (LVI)")[1:] == ["60.00", "0.100", "600x"]  # the first: RECON's
    assert _cells(salp, "**total**")[1:] == [f"{salp_total:.2f}", "1.000", f"{salp_total:.0f}x"]
    # every method's phases are listed under it: theirs where they have it, ours where we spend time
    gen = salp[salp.index("generalised RECON"):]
    assert [c[0] for c in re.findall(r"\| &nbsp;&nbsp;(\w+)( \(\w+\))? \|", gen)] == [
        "monitor", "blame", "generalise", "replan"]
    # and the NSE table carries both measures, labelled as different things
    assert "They measure different things" in text
    assert _cells(text, "salp/test_grid0 | gen-recon-cf")[2:] == ["10.00", "12.000 -> 6.500", "2"]


def test_our_side_on_a_tiny_fleet_of_their_grid():
    out = recon_peer.run_ours(GRIDS / "warehouse" / "test_grid0.txt", robots=2, corrected=1)
    assert out["setup"] >= 0 and out["plan"] > 0
    assert set(out["methods"]) == set(recon_peer.METHODS)
    assert out["total"] == pytest.approx(out["setup"] + out["plan"] + sum(m["wall"] for m in out["methods"].values()))
    for method, m in out["methods"].items():
        assert set(m["seconds"]) == set(recon_peer.OUR_SUBPHASES)
        assert sum(m["seconds"].values()) <= m["wall"] + 1e-6
        assert m["nse_before"] > 0, "their warehouse grid 0 with 2 robots has NSEs in the corridor"
        assert m["nse_after"] <= m["nse_before"] + 1e-9  # the acceptance step: J_N never rises
        assert len(m["updated"]) <= 1 and set(m["updated"]) <= {"agent1", "agent2"}
    text = "\n".join(recon_peer.grid_table({"domain": "warehouse", "grid": 0, "robots": 2, "corrected": 1,
                                            "deposit": (1, 1), "theirs": _theirs(1.0), "ours": out}))
    assert "**total**" in text


STANDINS = {
    # their module names, with the functions the driver calls; each call is logged to calls.log
    "compute_policy.py": """
        def _log(*words):
            open("calls.log", "a").write(" ".join(map(str, words)) + "\\n")
        def NaivePolicy(agent):
            _log("NaivePolicy", agent.label); return {"naive": agent.label}
        def ReconPolicy(agent):
            _log("ReconPolicy", agent.label, sorted(agent.R_blame)); return {"recon": agent.label}
        def GenRecon_w_cf_Policy(agent):
            assert agent.generalised, "generalise before the LVI"
            _log("GenRecon_w_cf_Policy", agent.label); return {"gen": agent.label}
    """,
    "salp_mdp.py": """
        from compute_policy import _log
        class SalpEnvironment:
            def __init__(self, n, deposit, filename):
                _log("Environment", n, deposit, filename)
        class SalpAgent:
            def __init__(self, i, grid):
                self.label, self.IDX, self.R_blame, self.generalised = str(i + 1), i, {}, False
            def reset(self):
                return self
            def generalize_Rblame_with_cf(self):
                _log("generalize", self.label); self.generalised = True
    """,
    "metareasoner.py": """
        import numpy as np
        from compute_policy import _log
        class SalpMetareasoner:
            def __init__(self, agents, grid):
                self.agents = agents
            def get_jointstates_and_NSE_list(self, agents):
                _log("path", [next(iter(a.Pi)) for a in agents])
                return [("js1",), ("js2",)], [0.0, 1.5]
            def get_total_R_and_NSE_from_path(self, agents, values):
                return [10.0] * len(agents), float(sum(values)) + len(_calls())
            def get_total_blame_breakdown(self, states):
                _log("blame_breakdown", states)
                return np.array([0.1, 0.9, 0.0, 0.5])[: len(self.agents)]
            def compute_R_Blame_for_all_Agents(self, agents, states):
                _log("R_Blame", [a.label for a in agents], states)
                for a in agents:
                    a.R_blame = {"s": -1.0}
            def get_training_data_with_cf(self, agents, states):
                _log("training_data", [a.label for a in agents], states)
        def _calls():
            return open("calls.log").read().splitlines()
    """,
}


def _standins(folder):
    for name, text in STANDINS.items():
        (folder / name).write_text(textwrap.dedent(text))
    (folder / recon_peer.DRIVER_NAME).write_text(recon_peer.DRIVER)


def test_the_driver_calls_their_functions_in_their_order(tmp_path, capsys):
    _standins(tmp_path)
    result = recon_peer.run_theirs(tmp_path, Path(sys.executable), "salp", 3, robots=4, corrected=2, timeout=60)
    assert "error" not in result, result
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        "Environment 4 (2, 2) grids/salp/test_grid3.txt",  # goal_deposit(4), as our reader assigns the tasks
        *[f"NaivePolicy {k}" for k in "1234"],
        "path ['naive', 'naive', 'naive', 'naive']",  # the naive policies are evaluated
        "blame_breakdown [('js1',), ('js2',)]",
        "R_Blame ['2', '4'] [('js1',), ('js2',)]",  # the two most blamed robots, blamed on the naive path
        "ReconPolicy 2 ['s']", "ReconPolicy 4 ['s']",
        "path ['naive', 'recon', 'naive', 'recon']",
        "training_data ['1', '2', '3', '4'] [('js1',), ('js2',)]",  # every robot's data, from the naive path
        "generalize 2", "GenRecon_w_cf_Policy 2", "generalize 4", "GenRecon_w_cf_Policy 4",
        "path ['naive', 'gen', 'naive', 'gen']"]
    assert result["corrected"] == ["2", "4"]
    seconds = result["seconds"]
    assert set(seconds) == {"setup", "plan", "naive", *recon_peer.METHODS}
    for method in recon_peer.METHODS:
        assert set(seconds[method]) == set(recon_peer.SUBPHASES[method])
    assert set(seconds["naive"]) == {"monitor", "blame"}
    assert result["total"] == pytest.approx(seconds["setup"] + seconds["plan"] + sum(
        sum(seconds[m].values()) for m in ("naive", *recon_peer.METHODS)))
    assert 0 < result["total"] <= result["wall"]
    # their own measure, as their get_total_R_and_NSE_from_path reports it after each evaluation (the
    # stand-in adds the number of calls so far, so that each method's figure is told apart)
    assert result["nse"] == {"naive": 1.5 + 6, "recon": 1.5 + 11, "gen-recon-cf": 1.5 + 17}
    assert result["reward"]["recon"] == 40.0
    assert "theirs salp/test_grid3: naive planning, robot 4/4" in capsys.readouterr().err  # progress, relayed


def test_a_failure_of_their_code_is_reported_with_its_place(tmp_path):
    _standins(tmp_path)
    module = (tmp_path / "salp_mdp.py").read_text()
    (tmp_path / "salp_mdp.py").write_text(module.replace('_log("Environment", n, deposit, filename)',
                                                         'import copy; copy([])'))
    result = recon_peer.run_theirs(tmp_path, Path(sys.executable), "salp", 0, robots=2, corrected=1, timeout=60)
    assert result["error"].startswith("TypeError: 'module' object is not callable")
    assert '(File "salp_mdp.py", line' in result["error"]  # their file, without our temporary directory
    assert str(tmp_path) not in result["error"]


def test_their_run_is_stopped_at_the_timeout(tmp_path):
    _standins(tmp_path)
    module = (tmp_path / "compute_policy.py").read_text()
    (tmp_path / "compute_policy.py").write_text(module.replace('_log("NaivePolicy", agent.label)',
                                                               'import time; time.sleep(60)'))
    start = time.perf_counter()
    result = recon_peer.run_theirs(tmp_path, Path(sys.executable), "salp", 0, robots=2, corrected=1, timeout=1.0)
    assert result == {"error": "did not finish within 1 s"}
    assert time.perf_counter() - start < 30
