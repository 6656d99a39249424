"""The exact NSE monitor against Monte Carlo at equal accuracy.

    python -m bench.monitor [--sizes 10 100] [--tolerances 0.01 0.001] [--repeat 3]

For each domain's fleet the exact monitor gives J_N (the expected total NSE penalty per
episode) to rounding. Monte Carlo's standard error is sigma / sqrt(E) for E episodes; for a
stated tolerance tol (a standard error of tol x J_N: 1% and 0.1% by default) Monte Carlo
needs E = (sigma / (tol J_N))^2 episodes, sigma estimated from a 400-episode pilot. We time
Monte Carlo at that many episodes (in batches of at most 400 so memory stays bounded; its
cost is linear in episodes, and beyond --max-episodes it is extrapolated) and print the
ratio against the exact monitor, and check that the estimates agree within 4 standard errors.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from bench.common import best_of, machine, ratio
from metareasoner.mitigation import Fleet
from metareasoner.monitor import monte_carlo_monitor
from planner.maps import load_map
from planner.scenario import generate_scenario

MAPS = {"salp": "maps/salp/salp-2.map", "overcooked": "maps/overcooked/overcooked-1.map",
        "warehouse": "maps/warehouse/warehouse-1.map"}
PILOT = 400


def time_monte_carlo(fleet, models, episodes: int, seed: int) -> tuple[float, np.ndarray]:
    """Seconds for `episodes` Monte Carlo episodes (batches of at most PILOT) and their totals."""
    totals, done, start = [], 0, time.perf_counter()
    while done < episodes:
        batch = max(2, min(PILOT, episodes - done))
        _, visits = monte_carlo_monitor(fleet.penalty, models, fleet.horizon, episodes=batch, seed=seed)
        totals.append(visits.penalty.sum(axis=1))
        done, seed = done + batch, seed + 1
    return time.perf_counter() - start, np.concatenate(totals)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.01, 0.001],
                        help="target standard errors, relative to J_N")
    parser.add_argument("--max-episodes", type=int, default=20_000,
                        help="beyond this, Monte Carlo time is extrapolated linearly from this many")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("== exact NSE monitor vs Monte Carlo at equal accuracy ==")
    print(machine())
    print("Monte Carlo episodes needed for a standard error of tol x J_N: (sigma / (tol J_N))^2, sigma from a "
          f"{PILOT}-episode pilot")
    for domain, path in MAPS.items():
        for n in args.sizes:
            fleet = Fleet.plan(generate_scenario(load_map(path), n, seed=0), backend="serial")
            policies = [p.policy for p in fleet.plans]
            models = fleet.models(policies)
            exact_s, exact = best_of(lambda: fleet.exact(policies), args.repeat)
            pilot, _ = monte_carlo_monitor(fleet.penalty, models, fleet.horizon, episodes=PILOT, seed=1)
            sigma = pilot.standard_error * math.sqrt(PILOT)
            print(f"{domain:<10} {n:4d} robots: exact J_N {exact.total_penalty:9.3f} in {exact_s:7.3f} s "
                  f"(per-episode sd {sigma:.2f})")
            for tol in args.tolerances:
                need = max(2, math.ceil((sigma / (tol * exact.total_penalty)) ** 2))
                run = min(need, args.max_episodes)
                mc_s, totals = time_monte_carlo(fleet, models, run, seed=100)
                note = ""
                if run < need:
                    mc_s, note = mc_s * need / run, f" (extrapolated from {run:,})"
                se = totals.std(ddof=1) / math.sqrt(len(totals))
                agree = abs(totals.mean() - exact.total_penalty) <= 4 * se
                print(f"    tol {100 * tol:5.2f}%: Monte Carlo needs {need:9,d} episodes, {mc_s:9.2f} s{note}; "
                      f"MC / exact time {ratio(mc_s, exact_s):>9}; MC {totals.mean():9.3f} +- {se:.3f} agrees "
                      f"within 4 SE: {'yes' if agree else 'NO'}")


if __name__ == "__main__":
    main()
