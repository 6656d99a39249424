"""Every test grid of the RECON authors loads and plans with their fleet sizes (issue 13).

    python -m bench.recon_grids [--grids PATH] [--domains ...] [--instances ...] [--sizes ...]

Reads each `grids/<domain>/test_grid<k>.txt` of PATH (a checkout of RECON-NSE-Mitigation or
its grids/ folder; default the byte-identical copy in tests/data/recon-nse-mitigation) with
their task semantics for every fleet size (`planner.recon_grid`, semantics "recon": their
robots, their goal_deposit table), plans the fleet (`plan_fleet`, serial) and checks that
every robot's task-optimal policy reaches its goal with probability 1. Prints one Markdown
row per grid and fleet and exits 1 if any fleet does not load or plan.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from planner.recon_grid import DOMAINS, goal_deposit, read_recon_grid
from planner.scenario import generate_scenario, plan_fleet, task_key
from planner.solvers import finishes_surely

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GRIDS = ROOT / "tests" / "data" / "recon-nse-mitigation"
SIZES = (10, 20, 50, 75, 100)


def check(path: Path, domain: str, n: int) -> dict:
    """Load `path` for a fleet of `n` with their semantics and plan it; what was found."""
    row = {"domain": domain, "grid": path.stem, "robots": n, "goal_deposit": "{}/{}".format(*goal_deposit(n))}
    start = time.perf_counter()
    try:
        world = read_recon_grid(path, domain=domain, semantics="recon", robots=n)
        plans = plan_fleet(generate_scenario(world, n, seed=0), backend="serial")
    except (ValueError, OSError) as exc:  # MapError is a ValueError
        return {**row, "ok": False, "problem": str(exc), "seconds": time.perf_counter() - start}
    unsure = [p.task.robot_id for p in plans if not finishes_surely(p.mdp, p.policy)[p.mdp.start]]
    ok = len(plans) == n and [p.task for p in plans] == list(world.robots) and not unsure
    return {**row, "size": f"{world.width}x{world.height}", "tasks": len({task_key(p.task) for p in plans}),
            "states": max(p.mdp.n_states for p in plans), "ok": ok,
            "problem": "" if ok else f"robots whose policy may never finish: {', '.join(unsure)}",
            "seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=Path, default=DEFAULT_GRIDS,
                        help="a checkout of RECON-NSE-Mitigation, or its grids/ folder (default: the copy in "
                             "tests/data/recon-nse-mitigation)")
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    parser.add_argument("--instances", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="test_grid<k>.txt")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="fleet sizes (default 10 20 50 75 100)")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.sizes):
        parser.error("fleet sizes must be at least 1")
    folder = args.grids / "grids" if (args.grids / "grids").is_dir() else args.grids
    print("One row per grid; per fleet size (their goal_deposit): plans (every robot's task-optimal policy "
          "reaches its goal with probability 1), distinct tasks solved, seconds to load and plan.\n")
    print("| domain | grid | size | states (largest MDP) | "
          + " | ".join(f"{n} robots ({'/'.join(map(str, goal_deposit(n)))})" for n in args.sizes) + " |")
    print("|---|---|---|---:|" + "---|" * len(args.sizes))
    rows, start = [], time.perf_counter()
    for domain in args.domains:
        for k in args.instances:
            path = folder / domain / f"test_grid{k}.txt"
            found = [check(path, domain, n) for n in args.sizes]
            rows += found
            size = next((r["size"] for r in found if "size" in r), "")
            states = max((r["states"] for r in found if "states" in r), default="")
            cells = [f"yes: {r['tasks']} tasks, {r['seconds']:.2f} s" if r["ok"] else f"NO: {r['problem']}"
                     for r in found]
            print(f"| {domain} | test_grid{k} | {size} | {states} | " + " | ".join(cells) + " |", flush=True)
    good = sum(r["ok"] for r in rows)
    print(f"\n{good} of {len(rows)} fleets plan; {time.perf_counter() - start:.1f} s")
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
