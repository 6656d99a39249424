"""Blame evaluations per second for every blame method of metareasoner/blame.py.

    python -m bench.blame [--robots 100] [--episodes 20] [--repeat 3]

The input is what the mitigation blames: the joint states visited in Monte Carlo episodes of
a salp-2 fleet (episodes x (horizon + 1) joint states of `--robots` robots), with each
robot's valid counterfactual values. A "robot blame" is one entry B_i(s); the table gives
joint states per second and robot blames per second. Methods that accept any penalty
callable are also timed on the generic re-evaluation path (a plain function of the joint
state instead of the count-based NSEPenalty), which is what a new penalty model would get.
Shapley enumeration (2^n coalitions) runs on 10 of the robots, Shapley sampling on fewer
states; exchange values from logs are timed per logged group.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench.common import best_of, machine
from metareasoner.blame import (
    CounterfactualBlame,
    DifferenceReward,
    DPlusPlus,
    ExchangeValue,
    ExchangeValueFromLogs,
    ShapleyBlame,
    WonderfulLifeUtility,
)
from metareasoner.mitigation import Fleet, valid_value_table
from metareasoner.monitor import monte_carlo_monitor
from planner.maps import load_map
from planner.scenario import generate_scenario


def row(name: str, seconds: float, states: int, robots: int) -> None:
    print(f"{name:<52} {seconds:8.3f} s  {states / seconds:12,.0f} joint states/s  "
          f"{states * robots / seconds:14,.0f} robot blames/s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("== blame evaluations per second ==")
    print(machine())
    fleet = Fleet.plan(generate_scenario(load_map("maps/salp/salp-2.map"), args.robots, seed=0), backend="serial")
    n = args.robots
    _, visits = monte_carlo_monitor(fleet.penalty, fleet.models([p.policy for p in fleet.plans]), fleet.horizon,
                                    episodes=args.episodes, seed=0)
    states, zone, value = (a.reshape(-1, n) for a in (visits.states, visits.zone, visits.value))
    tables = [valid_value_table(p, fleet.dynamic_feature, fleet.n_values) for p in fleet.plans]
    valid = np.stack([tables[i][states[:, i]] for i in range(n)], axis=1)
    B = len(zone)
    penalty = fleet.penalty
    print(f"input: salp-2, {n} robots, {B:,} visited joint states ({args.episodes} episodes x {fleet.horizon + 1} steps), "
          f"{int((visits.penalty > 0).sum()):,} of them with an NSE")

    def generic(z, v):
        return penalty(z, v)

    timed = [
        ("RECON (CounterfactualBlame, valid values)", lambda: CounterfactualBlame().blame(penalty, zone, value, valid)),
        ("difference reward", lambda: DifferenceReward().blame(penalty, zone, value)),
        ("wonderful life utility", lambda: WonderfulLifeUtility().blame(penalty, zone, value)),
        ("D++ (5 copies)", lambda: DPlusPlus().blame(penalty, zone, value)),
        ("Shapley (closed form)", lambda: ShapleyBlame().blame(penalty, zone, value)),
        ("exchange value", lambda: ExchangeValue().blame(penalty, zone, value)),
    ]
    for name, fn in timed:
        seconds, _ = best_of(fn, args.repeat)
        row(name, seconds, B, n)

    rng = np.random.default_rng(0)
    k = min(200_000, B * n)
    rows, agents = rng.integers(B, size=k), rng.integers(n, size=k)
    new_values = rng.integers(penalty.n_values, size=k)
    seconds, _ = best_of(lambda: CounterfactualBlame().blame_of_one(penalty, zone, value, valid, rows, agents,
                                                                   new_values), args.repeat)
    print(f"{'RECON of one robot in a counterfactual state':<52} {seconds:8.3f} s  {k / seconds:12,.0f} "
          f"(state, robot) pairs/s  (generalised RECON's training pairs)")

    print("generic penalty callable (re-evaluation path):")
    sub = slice(0, max(1, B // 10))
    zs, vs = zone[sub], value[sub]
    for name, fn in [("difference reward", lambda: DifferenceReward().blame(generic, zs, vs)),
                     ("wonderful life utility", lambda: WonderfulLifeUtility().blame(generic, zs, vs)),
                     ("D++ (5 copies)", lambda: DPlusPlus().blame(generic, zs, vs)),
                     ("exchange value", lambda: ExchangeValue().blame(generic, zs, vs))]:
        seconds, _ = best_of(fn, args.repeat)
        row("  " + name, seconds, len(zs), n)
    few = slice(0, max(1, B // 100))
    seconds, _ = best_of(lambda: ShapleyBlame(method="sampling", n_permutations=200).blame(
        generic, zone[few], value[few]), args.repeat)
    row("  Shapley sampling (200 orders)", seconds, len(zone[few]), n)
    seconds, _ = best_of(lambda: ShapleyBlame(method="enumeration").blame(generic, zone[sub, :10], value[sub, :10]),
                         args.repeat)
    row("  Shapley enumeration (10 robots, 1024 coalitions)", seconds, len(zs), 10)

    # exchange values from logs: groups of 2-6 of 60 robots with their collective NSE score
    logs = 5_000
    pool = min(60, n)
    groups, scores = [], []
    for _ in range(logs):
        size = int(rng.integers(2, 7))
        members = rng.choice(pool, size, replace=False)
        b = int(rng.integers(B))
        groups.append([f"r{m}" for m in members])
        scores.append(float(penalty(zone[b:b + 1, members], value[b:b + 1, members])[0]))
    robots = [f"r{m}" for m in range(pool)]
    seconds, _ = best_of(lambda: ExchangeValueFromLogs().fit(groups, scores, robots), args.repeat)
    print(f"{'exchange value from logs (fit)':<52} {seconds:8.3f} s  {logs / seconds:12,.0f} logged groups/s  "
          f"({pool} robots)")


if __name__ == "__main__":
    main()
