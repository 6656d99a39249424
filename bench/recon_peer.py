"""The RECON authors' code side by side with ours, on their grids, tasks and fleet size, in one run
(issue 14 item 3; figures in docs/PERFORMANCE.md).

    python -m bench.recon_peer [--domains salp warehouse] [--grids 0] [--robots 10] [--corrected 5]
                               [--repeat 3] [--backend serial] [--peer PATH] [--workdir DIR]

Theirs: their repository (RECON-NSE-Mitigation, MIT; `../shared/peers/recon-nse-mitigation`) is
copied to a temporary directory (their grid reader rewrites the file it reads), a separate
virtualenv is made there (`python -m venv`, `pip install -r requirements.txt`: their pins), and a
small driver written into the copy calls their functions in the order of their experiment scripts
(`effect_of_generalization.py`, `varying_corrected_agent.py`), timing each call; their algorithms
are not touched. Per grid, in a fresh process:

  setup      their Environment, Agents and Metareasoner (reads the grid, builds every robot's
             state and action spaces)
  plan       `compute_policy.NaivePolicy` for every robot (their value iteration)
  naive      their evaluation of the naive policies (one most-likely joint path) and the blame
             ranking that picks the `--corrected` most blamed robots, once for both methods
  recon      `compute_R_Blame_for_all_Agents` (blame), `ReconPolicy` for each corrected robot
             (LVI: replan), then the evaluation of the new joint policy (monitor)
  gen-recon-cf  `get_training_data_with_cf` (blame: the counterfactual training data),
             `generalize_Rblame_with_cf` (generalise) and `GenRecon_w_cf_Policy` (replan) for
             each corrected robot, then the evaluation (monitor)

Their scripts compute the counterfactual training data on test_grid0 and reuse it (from files) on
the other grids; here it is computed on each grid, as ours is, so that both sides do the same work.

Ours: the same grid file through our reader of their grids with their task semantics
(`load_map(path, format="recon-grid", robots=n)`: the same tasks, starts and goal_deposit as the
`goal_deposit(n)` passed to theirs), `Fleet.plan` (plan), then for each method
`Mitigation(method, update_fraction=corrected/n, rounds=1).run(fleet)` (its `.seconds`: monitor,
blame, generalise, replan, accept), in a fresh process, `--repeat` times: the fastest repetition
is reported (the machine is shared; the least disturbed run), with the first one's total beside it.
Backend `serial` by default: one process, as theirs.

The NSE figures are printed for reference only: theirs is their own measure (the NSE penalty summed
along one most-likely joint path), ours the exact expected penalty J_N; they measure different things.
Their Overcooked code raises a TypeError while building its environment (overcooked_mdp.py line 55):
`--domains overcooked` shows it, and ours runs alone there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("salp", "warehouse", "overcooked")
METHODS = ("recon", "gen-recon-cf")
#: their side's phases of each method (the driver's keys), and ours (MitigationResult.seconds)
SUBPHASES = {"recon": ("blame", "replan", "monitor"), "gen-recon-cf": ("blame", "generalise", "replan", "monitor")}
OUR_SUBPHASES = ("monitor", "blame", "generalise", "replan", "accept")
SUBPHASE_LABEL = {"blame": "blame", "generalise": "generalise", "replan": "replan (LVI)",
                  "monitor": "monitor (evaluation)", "accept": "accept"}
METHOD_LABEL = {"recon": "RECON", "gen-recon-cf": "generalised RECON with counterfactuals"}
DRIVER_NAME = "_peerbench_driver.py"

# Run inside the copy of their repository with their virtualenv's python:
#   python _peerbench_driver.py DOMAIN GRID ROBOTS CORRECTED FIRST SECOND OUT.json
# Their own prints go to stdout, the driver's progress to stderr, the figures to OUT.json.
DRIVER = r'''
import json
import sys
import time

sys.path.insert(0, ".")
import compute_policy  # noqa: E402  (theirs)

domain, grid, n, corrected, first, second, out = sys.argv[1:]
n, corrected, deposit = int(n), int(corrected), (int(first), int(second))
if domain == "salp":
    from salp_mdp import SalpAgent as Agent, SalpEnvironment as Environment
    from metareasoner import SalpMetareasoner as MR
elif domain == "overcooked":
    from overcooked_mdp import OvercookedAgent as Agent, OvercookedEnvironment as Environment
    from metareasoner import OvercookedMetareasoner as MR
else:
    from warehouse_mdp import WarehouseAgent as Agent, WarehouseEnvironment as Environment
    from metareasoner import WarehouseMetareasoner as MR

clock = time.perf_counter
seconds = {"naive": {}, "recon": {}, "gen-recon-cf": {}}
nse, reward = {}, {}


def progress(message):
    print("  theirs %s/test_grid%s: %s" % (domain, grid, message), file=sys.stderr, flush=True)


def evaluate(Agents, method):
    """Their evaluation: one most-likely joint path, NSE summed along it."""
    t = clock()
    joint_states, values = mr.get_jointstates_and_NSE_list(Agents)
    R, NSE = mr.get_total_R_and_NSE_from_path(Agents, values)
    seconds[method]["monitor"] = clock() - t
    nse[method], reward[method] = float(NSE), float(sum(R))
    progress("%s evaluated in %.1f s (their NSE %.2f)" % (method, seconds[method]["monitor"], NSE))
    return joint_states


t = clock()
Grid = Environment(n, deposit, "grids/%s/test_grid%s.txt" % (domain, grid))
Agents = [Agent(i, Grid) for i in range(n)]
mr = MR(Agents, Grid)
seconds["setup"] = clock() - t

Agents = [agent.reset() for agent in Agents]
t = clock()
for k, agent in enumerate(Agents):
    agent.Pi = compute_policy.NaivePolicy(agent)
    progress("naive planning, robot %d/%d, %.0f s" % (k + 1, n, clock() - t))
seconds["plan"] = clock() - t

joint_NSE_states = evaluate(Agents, "naive")
t = clock()
blame = mr.get_total_blame_breakdown(joint_NSE_states)
order = sorted(range(len(blame)), key=lambda a: blame[a], reverse=True)
corrected_agents = [Agents[i] for i in order[:corrected]]
seconds["naive"]["blame"] = clock() - t

# RECON (their order: reset, blame the naive path's joint states, replan the corrected robots)
Agents = [agent.reset() for agent in Agents]
t = clock()
mr.compute_R_Blame_for_all_Agents(corrected_agents, joint_NSE_states)
seconds["recon"]["blame"] = clock() - t
t = clock()
for k, agent in enumerate(corrected_agents):
    agent.Pi = compute_policy.ReconPolicy(agent)
    progress("RECON replanning, robot %d/%d, %.0f s" % (k + 1, corrected, clock() - t))
seconds["recon"]["replan"] = clock() - t
evaluate(Agents, "recon")

# generalised RECON with counterfactual data
Agents = [agent.reset() for agent in Agents]
t = clock()
mr.get_training_data_with_cf(Agents, joint_NSE_states)
seconds["gen-recon-cf"]["blame"] = clock() - t
progress("counterfactual training data in %.1f s" % seconds["gen-recon-cf"]["blame"])
seconds["gen-recon-cf"]["generalise"] = seconds["gen-recon-cf"]["replan"] = 0.0
start = clock()
for k, agent in enumerate(corrected_agents):
    t = clock()
    agent.generalize_Rblame_with_cf()
    seconds["gen-recon-cf"]["generalise"] += clock() - t
    t = clock()
    agent.Pi = compute_policy.GenRecon_w_cf_Policy(agent)
    seconds["gen-recon-cf"]["replan"] += clock() - t
    progress("generalised RECON replanning, robot %d/%d, %.0f s" % (k + 1, corrected, clock() - start))
evaluate(Agents, "gen-recon-cf")

with open(out, "w") as f:
    json.dump({"seconds": seconds, "nse": nse, "reward": reward,
               "corrected": [a.label for a in corrected_agents]}, f)
'''


def peer_checkout() -> Path | None:
    """Their repository where the project's shared folder holds it (../shared/peers/ of the checkout)."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "peers" / "recon-nse-mitigation"
        if (candidate / "salp_mdp.py").is_file():
            return candidate
    return None


def update_fraction(corrected: int, robots: int) -> float:
    """The largest f with ceil(f * robots) == corrected (corrected / robots can round up: 7 / 25 * 25 > 7)."""
    if not 1 <= corrected <= robots:
        raise ValueError(f"corrected robots must be between 1 and the fleet size {robots}, got {corrected}")
    f = corrected / robots
    while math.ceil(f * robots) > corrected:
        f = math.nextafter(f, 0.0)
    return f


def ratio(theirs: float | None, ours: float | None) -> str:
    if theirs is None or ours is None or ours <= 0 or theirs <= 0:
        return ""
    r = theirs / ours
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 1 else f"{r:.2g}x"


# -- ours -----------------------------------------------------------------------------------------

def run_ours(grid: str | Path, robots: int, corrected: int, backend: str = "serial", seed: int = 0) -> dict:
    """Our side on one grid, as the table reads it: setup, plan, and per method its wall time,
    its phases (MitigationResult.seconds without plan) and J_N before and after."""
    from metareasoner.mitigation import Fleet, Mitigation
    from planner.maps import load_map
    from planner.scenario import generate_scenario

    clock = time.perf_counter()
    world = load_map(grid, format="recon-grid", robots=robots)
    scenario = generate_scenario(world, robots, seed=seed)
    setup = time.perf_counter() - clock
    fleet = Fleet.plan(scenario, backend=backend)
    out = {"setup": setup, "plan": fleet.plan_seconds, "methods": {}}
    for method in METHODS:
        clock = time.perf_counter()
        result = Mitigation(method=method, update_fraction=update_fraction(corrected, robots), rounds=1,
                            seed=seed, backend=backend).run(fleet)
        wall = time.perf_counter() - clock
        out["methods"][method] = {
            "wall": wall, "seconds": {k: float(result.seconds.get(k, 0.0)) for k in OUR_SUBPHASES},
            "nse_before": float(result.before.total_penalty), "nse_after": float(result.after.total_penalty),
            "updated": list(result.updated)}
    out["total"] = out["setup"] + out["plan"] + sum(m["wall"] for m in out["methods"].values())
    return out


def run_ours_repeated(grid: str | Path, robots: int, corrected: int, backend: str, repeat: int) -> dict:
    runs = [run_ours(grid, robots, corrected, backend) for _ in range(max(1, repeat))]
    best = dict(min(runs, key=lambda r: r["total"]))
    best["first_total"], best["repeat"] = runs[0]["total"], len(runs)
    return best


def ours_subprocess(grid: Path, robots: int, corrected: int, backend: str, repeat: int, timeout: float) -> dict:
    """Ours in a fresh process (as theirs), so that each grid starts cold and alone in memory."""
    command = [sys.executable, "-m", "bench.recon_peer", "--ours", str(grid), str(robots), str(corrected),
               backend, str(repeat)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"our run on {grid} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- theirs ---------------------------------------------------------------------------------------

def prepare_theirs(peer: Path, workdir: Path, python: str) -> tuple[Path, Path, dict]:
    """Copy their repository into `workdir` (writable) and make its virtualenv with their pins
    (kept when `workdir` already has one); returns (copy, its python, what was installed)."""
    copy = workdir / "recon-nse-mitigation"
    shutil.copytree(peer, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    for path in [copy, *copy.rglob("*")]:  # the shared folder is read-only: their reader opens grids "r+"
        if ".venv" not in path.relative_to(copy).parts:
            path.chmod(path.stat().st_mode | 0o200)
    venv = copy / ".venv"
    their_python = venv / "bin" / "python"
    info = {}
    if not their_python.exists():
        print(f"theirs: python -m venv {venv}", file=sys.stderr, flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        print("theirs: pip install -r requirements.txt (their pins; about a minute)", file=sys.stderr, flush=True)
        clock = time.perf_counter()
        subprocess.run([str(their_python), "-m", "pip", "install", "--quiet", "-r", "requirements.txt"],
                       cwd=copy, check=True)
        info["install_seconds"] = time.perf_counter() - clock
    info["python"] = subprocess.run([str(their_python), "--version"], capture_output=True, text=True).stdout.strip()
    freeze = subprocess.run([str(their_python), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    info["packages"] = " ".join(line for line in freeze.split() if line.split("==")[0].lower() in
                                ("numpy", "scipy", "scikit-learn", "matplotlib", "simple-colors"))
    (copy / DRIVER_NAME).write_text(DRIVER)
    return copy, their_python, info


def run_theirs(copy: Path, their_python: Path, domain: str, grid: int, robots: int, corrected: int,
               timeout: float) -> dict:
    """Their pipeline on one grid in a fresh process; {"error": ...} when their code fails."""
    from planner.recon_grid import goal_deposit

    first, second = goal_deposit(robots)
    out = copy / f"_peerbench_{domain}_{grid}.json"
    log = copy / f"_peerbench_{domain}_{grid}.log"
    out.unlink(missing_ok=True)
    command = [str(their_python), DRIVER_NAME, domain, str(grid), str(robots), str(corrected), str(first),
               str(second), out.name]
    clock = time.perf_counter()
    lines, timed_out = [], threading.Event()
    with log.open("w") as stdout:
        proc = subprocess.Popen(command, cwd=copy, stdout=stdout, stderr=subprocess.PIPE, text=True)
        timer = threading.Timer(timeout, lambda: (timed_out.set(), proc.kill()))
        timer.start()
        try:
            for line in proc.stderr:  # the driver's progress, live; anything else is kept for the error
                if line.startswith("  theirs "):
                    sys.stderr.write(line)
                    sys.stderr.flush()
                else:
                    lines.append(line.rstrip("\n"))
            proc.wait()
        finally:
            timer.cancel()
    wall = time.perf_counter() - clock
    if timed_out.is_set():
        return {"error": f"did not finish within {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        where = next((line.strip() for line in reversed(lines) if line.strip().startswith("File ")), "")
        where = where.replace(f'"{copy}/', '"')  # their file, not our temporary directory
        return {"error": (lines[-1] if lines else f"exit status {proc.returncode}") + (f" ({where})" if where else "")}
    result = json.loads(out.read_text())
    s = result["seconds"]
    result["total"] = s["setup"] + s["plan"] + sum(sum(s[m].values()) for m in ("naive", *METHODS))
    result["wall"] = wall
    return result


# -- the table ------------------------------------------------------------------------------------

def _row(label: str, theirs: float | None, ours: float | None, note: str = "") -> str:
    t = "" if theirs is None else f"{theirs:.2f}"
    o = "" if ours is None else f"{ours:.3f}"
    return f"| {label} | {t} | {o} | {ratio(theirs, ours)} |{(' ' + note) if note else ''}"


def grid_table(entry: dict) -> list[str]:
    """One grid's phases: their seconds, ours, the ratio (theirs / ours)."""
    theirs, ours = entry.get("theirs") or {}, entry["ours"]
    failed = "error" in theirs
    ts = None if failed else theirs["seconds"]

    def their(*keys):
        if ts is None:
            return None
        value = ts
        for key in keys:
            value = value.get(key)
            if value is None:
                return None
        return float(value)

    lines = [f"##### {entry['domain']}/test_grid{entry['grid']}: {entry['robots']} robots "
             f"(goal_deposit {entry['deposit'][0]}/{entry['deposit'][1]}), {entry['corrected']} corrected", ""]
    if failed:
        lines += [f"Their code failed: `{theirs['error']}`", ""]
    lines += ["| phase | theirs s | ours s | theirs / ours |", "|---|---:|---:|---:|",
              _row("setup: read the grid, build the robots", their("setup"), ours["setup"]),
              _row("naive planning: every robot's task policy", their("plan"), ours["plan"]),
              _row("naive evaluation and blame ranking (theirs: once, for both methods; ours: in each method's run)",
                   None if ts is None else their("naive", "monitor") + their("naive", "blame"), None)]
    for method in METHODS:
        mine = ours["methods"][method]
        their_total = None if ts is None else sum(ts[method].values())
        lines.append(_row(f"**{METHOD_LABEL[method]}** (`{method}`)", their_total, mine["wall"]))
        for phase in OUR_SUBPHASES:
            t = their(method, phase) if phase in SUBPHASES[method] else None
            o = mine["seconds"][phase]
            if t is None and o == 0.0:
                continue
            lines.append(_row(f"&nbsp;&nbsp;{SUBPHASE_LABEL[phase]}", t, o))
    lines.append(_row("**total**", None if failed else theirs["total"], ours["total"]))
    lines.append("")
    return lines


def nse_table(entries: list[dict]) -> list[str]:
    lines = ["| grid | method | theirs: NSE summed along their most-likely joint path | "
             "ours: exact expected J_N, before -> after | ours: robots updated |", "|---|---|---:|---:|---:|"]
    for e in entries:
        theirs, ours = e.get("theirs") or {}, e["ours"]
        name = f"{e['domain']}/test_grid{e['grid']}"
        methods = ours["methods"]
        naive = theirs.get("nse", {}).get("naive")
        lines.append(f"| {name} | naive | {'' if naive is None else f'{naive:.2f}'} | "
                     f"{methods[METHODS[0]]['nse_before']:.3f} | |")
        for method in METHODS:
            t = theirs.get("nse", {}).get(method)
            m = methods[method]
            lines.append(f"| {name} | {method} | {'' if t is None else f'{t:.2f}'} | "
                         f"{m['nse_before']:.3f} -> {m['nse_after']:.3f} | {len(m['updated'])} |")
    return lines + [""]


def summary_table(entries: list[dict]) -> list[str]:
    lines = ["| grid | robots | corrected | theirs s | ours s (first run) | theirs / ours |",
             "|---|---:|---:|---:|---:|---:|"]
    their_sum = our_sum = 0.0
    complete = True
    for e in entries:
        theirs, ours = e.get("theirs") or {}, e["ours"]
        t = None if "error" in theirs or "total" not in theirs else theirs["total"]
        first = ours.get("first_total")
        lines.append(f"| {e['domain']}/test_grid{e['grid']} | {e['robots']} | {e['corrected']} | "
                     f"{'failed' if t is None else f'{t:.1f}'} | {ours['total']:.2f}"
                     f"{'' if first is None else f' ({first:.2f})'} | {ratio(t, ours['total'])} |")
        if t is None:
            complete = False
        else:
            their_sum, our_sum = their_sum + t, our_sum + ours["total"]
    if our_sum > 0:
        label = "all grids" if complete else "grids where theirs ran"
        lines.append(f"| **{label}** | | | {their_sum:.1f} | {our_sum:.2f} | {ratio(their_sum, our_sum)} |")
    return lines + [""]


def report(entries: list[dict], header: list[str]) -> str:
    lines = list(header) + ["", "#### Total time per grid (theirs / ours: the ratio; ours: fastest repetition, "
                            "first one in parentheses)", ""]
    lines += summary_table(entries)
    lines += ["#### Per phase", ""]
    for e in entries:
        lines += grid_table(e)
    lines += ["#### NSE, for reference only (not comparable)", "",
              "They measure different things: theirs is their own reported measure, the NSE penalty summed "
              "along one most-likely joint path (every robot takes its most likely outcome at every step, "
              "until all are done); ours is the exact expected NSE penalty J_N over the stochastic dynamics "
              "(docs/FORMULATION.md section 4), with our penalty's form (maps/README.md, \"RECON grids\"). "
              "Theirs always replaces the corrected robots' policies; ours keeps a replan only if J_N falls.", ""]
    lines += nse_table(entries)
    return "\n".join(lines)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def machine_lines() -> list[str]:
    from bench.common import machine

    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(os.cpu_count())
    return [f"nproc: {nproc}", *machine().splitlines()]


# -- the command ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=["salp", "warehouse"])
    parser.add_argument("--grids", type=int, nargs="+", default=[0], help="their test_grid<k>.txt (0-4)")
    parser.add_argument("--robots", type=int, default=10)
    parser.add_argument("--corrected", type=int, default=5, help="robots that replan (their M)")
    parser.add_argument("--repeat", type=int, default=3, help="our runs per grid (the fastest is reported)")
    parser.add_argument("--backend", default="serial", choices=("serial", "local"))
    parser.add_argument("--peer", type=Path, default=None,
                        help="their repository (default: ../shared/peers/recon-nse-mitigation above this checkout)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to copy their code and make its venv (kept, and reused next time); "
                             "default a temporary directory, removed at the end")
    parser.add_argument("--python", default=sys.executable, help="the interpreter their venv is made from")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per grid and side")
    parser.add_argument("--ours", nargs=5, metavar=("GRID", "N", "CORRECTED", "BACKEND", "REPEAT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ours:
        grid, n, corrected, backend, repeat = args.ours
        print(json.dumps(run_ours_repeated(grid, int(n), int(corrected), backend, int(repeat))))
        return 0
    try:
        update_fraction(args.corrected, args.robots)
    except ValueError as exc:
        parser.error(str(exc))
    peer = args.peer or peer_checkout()
    if peer is None or not (peer / "salp_mdp.py").is_file():
        parser.error(f"their repository not found at {peer or '../shared/peers/recon-nse-mitigation'}: "
                     "give it with --peer PATH (a checkout of RECON-NSE-Mitigation)")
    for domain in args.domains:
        for k in args.grids:
            if not (peer / "grids" / domain / f"test_grid{k}.txt").is_file():
                parser.error(f"no grid {peer / 'grids' / domain / f'test_grid{k}.txt'}")

    from planner.recon_grid import goal_deposit

    command = "python -m bench.recon_peer " + " ".join(sys.argv[1:] if argv is None else argv)
    load_before, machine_before = uptime(), machine_lines()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recon-peer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    entries = []
    try:
        copy, their_python, info = prepare_theirs(peer, workdir, args.python)
        for domain in args.domains:
            for k in args.grids:
                print(f"{domain}/test_grid{k}: theirs ({args.robots} robots, {args.corrected} corrected)",
                      file=sys.stderr, flush=True)
                theirs = run_theirs(copy, their_python, domain, k, args.robots, args.corrected, args.timeout)
                print(f"{domain}/test_grid{k}: ours ({args.repeat} runs)", file=sys.stderr, flush=True)
                ours = ours_subprocess(peer / "grids" / domain / f"test_grid{k}.txt", args.robots, args.corrected,
                                       args.backend, args.repeat, args.timeout)
                entries.append({"domain": domain, "grid": k, "robots": args.robots, "corrected": args.corrected,
                                "deposit": goal_deposit(args.robots), "theirs": theirs, "ours": ours})
                t = theirs.get("total")
                print(f"{domain}/test_grid{k}: theirs {'failed' if t is None else f'{t:.1f} s'}, "
                      f"ours {ours['total']:.2f} s", file=sys.stderr, flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    header = [f"### {args.robots} robots, {args.corrected} corrected: {', '.join(args.domains)}, "
              f"test_grid{', '.join(map(str, args.grids))}", "", "```",
              f"$ {command}", *machine_before, f"uptime before: {load_before}", f"uptime after:  {uptime()}",
              f"theirs: {peer} copied to a temporary directory, venv {info['python']}, {info['packages']}"
              + (f" (pip install took {info['install_seconds']:.0f} s, not counted)" if "install_seconds" in info
                 else ""),
              f"ours: backend {args.backend}, {args.repeat} runs per grid in a fresh process", "```"]
    print(report(entries, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
