"""Per-robot solver cost on the robots' own MDPs (a few hundred to a few thousand states, from
the shipped maps), where fixed per-call costs weigh, against the peers, in one run.

    python -m bench.small_mdps [--robots 6] [--repeat 5] [--max-states 3500] [--quick]

For every shipped map, the distinct task MDPs of `--robots` generated robots (seed 0) with at
most `--max-states` states. Per MDP, each solver's time is the minimum of `--repeat` runs
(the solvers take turns, so that a burst of load on the shared machine hits them alike):

* task objective (discounted), matched accuracy 1e-8 of V* as in `bench.vi`: ours `vi` and
  `mpi` (the default), quantecon `DiscreteDP` value iteration and modified policy iteration,
  mdptoolbox-hiive `ValueIteration` (and `PolicyIterationModified`, run once, on each
  domain's first MDP of at most 1,200 states only: it builds each policy's transition matrix
  dense and takes seconds), mdpsolver value iteration and modified policy iteration (one
  thread);
* the mitigation's replan, `lexicographic_policy_that_finishes` (shortest-path secondary
  objective, a penalty on a random 20% of the states, slack 100): ours `vi` and `mpi`
  (no peer solves a lexicographic objective);
* per-call overhead: a call started at V* (one backup finds it converged), ours `vi` and `mpi`.

Printed per domain: MDPs, median states, the mean over MDPs of each solver's time, and its
ratio to ours (mpi). Peers' model construction is left out of their times.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np

from bench.common import machine
from bench.vi import hiive_run, mdpsolver_model, mdpsolver_run, quantecon_run
from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet
from planner.solvers import lexicographic_policy_that_finishes, policy_evaluation, value_iteration

TARGET = 1e-8
MAPS = "maps"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def peer_solvers(mdp, with_hiive_mpi: bool):
    """name -> run(epsilon) returning (seconds, values, iterations), for this MDP."""
    import hiive.mdptoolbox.mdp as hm
    from quantecon.markov import DiscreteDP

    P = [mdp.action_matrix(a).tocsr() for a in range(mdp.n_actions)]
    R = mdp.rewards.copy()
    ddp = DiscreteDP(mdp.rewards.reshape(-1), mdp.transitions, mdp.discount,
                     np.repeat(np.arange(mdp.n_states), mdp.n_actions), np.tile(np.arange(mdp.n_actions), mdp.n_states))
    peers = {
        "quantecon vi": quantecon_run(ddp, "value_iteration"),
        "quantecon mpi": quantecon_run(ddp, "modified_policy_iteration"),
        "hiive vi": lambda e: hiive_run(hm.ValueIteration, P, R, mdp.discount, e),
    }
    if with_hiive_mpi:
        peers["hiive mpi"] = lambda e: hiive_run(hm.PolicyIterationModified, P, R, mdp.discount, e)
    try:
        import mdpsolver  # noqa: F401
    except ImportError:
        return peers
    model_args = mdpsolver_model(mdp)
    peers["mdpsolver vi"] = mdpsolver_run(model_args, "vi", "standard", False)
    peers["mdpsolver mpi"] = mdpsolver_run(model_args, "mpi", "gs", False, parIterLim=20)
    return peers


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-states", type=int, default=3500)
    parser.add_argument("--quick", action="store_true", help="one map per domain, fewer repeats, no hiive mpi")
    args = parser.parse_args(argv)
    repeat = 2 if args.quick else args.repeat
    print("== per-robot solver cost on the robots' MDPs ==")
    print(machine())
    paths = sorted(glob.glob(f"{MAPS}/*/*.map"))
    if args.quick:
        paths = [p for p in paths if p.endswith("-1.map")]
    by_domain: dict[str, list[dict]] = {}
    hiive_mpi_done: set[str] = set()
    for number, path in enumerate(paths, 1):
        print(f"[{number}/{len(paths)}] {path}", file=sys.stderr, flush=True)
        plans = plan_fleet(generate_scenario(load_map(path), args.robots, seed=0), backend="serial")
        seen = set()
        for plan in plans:
            mdp = plan.mdp
            if id(mdp) in seen or mdp.n_states > args.max_states:
                continue
            seen.add(id(mdp))
            v_star = policy_evaluation(mdp, value_iteration(mdp, method="vi").policy)
            rng = np.random.default_rng(mdp.n_states)
            penalty = np.where(rng.random(mdp.n_states) < 0.2, rng.random(mdp.n_states) * 3, 0.0)
            ours = {
                "ours vi": lambda: value_iteration(mdp, method="vi"),
                "ours mpi": lambda: value_iteration(mdp, method="mpi"),
                "replan vi": lambda: lexicographic_policy_that_finishes(mdp, -penalty, 100.0,
                                                                        task_result=plan.task_solution, method="vi"),
                "replan mpi": lambda: lexicographic_policy_that_finishes(mdp, -penalty, 100.0,
                                                                         task_result=plan.task_solution, method="mpi"),
                "overhead vi": lambda: value_iteration(mdp, method="vi", initial_values=v_star),
                "overhead mpi": lambda: value_iteration(mdp, method="mpi", initial_values=v_star),
            }
            for fn in ours.values():
                fn()  # the MDP's layouts are built once, on the first call
            domain = path.split("/")[-2]
            with_hiive_mpi = not args.quick and mdp.n_states <= 1200 and domain not in hiive_mpi_done
            if with_hiive_mpi:
                hiive_mpi_done.add(domain)
            peers = peer_solvers(mdp, with_hiive_mpi)
            # matched accuracy for the peers: epsilon until within TARGET of V*
            epsilon, error = {}, {}
            for name, run in peers.items():
                eps = TARGET
                # hiive's modified policy iteration has no bound on its improvements: with a
                # smaller epsilon its span test may never pass, so it runs at 1e-8 only
                for _ in range(1 if name == "hiive mpi" else 4):
                    error[name] = float(np.max(np.abs(run(eps)[1] - v_star)))
                    if error[name] <= TARGET:
                        break
                    eps /= 10
                epsilon[name] = eps if error[name] <= TARGET else eps * 10
            best = {name: np.inf for name in [*ours, *peers]}
            for turn in range(repeat):
                for name, fn in ours.items():
                    best[name] = min(best[name], timed(fn)[0])
                for name, run in peers.items():
                    if name != "hiive mpi" or turn == 0:
                        best[name] = min(best[name], run(epsilon[name])[0])
            for name in ("ours vi", "ours mpi"):
                assert np.max(np.abs(ours[name]().values - v_star)) <= TARGET
            best["states"] = mdp.n_states
            best["unmatched"] = {name for name, e in error.items() if e > TARGET}
            by_domain.setdefault(domain, []).append(best)
    names = ["ours mpi", "ours vi", "quantecon mpi", "quantecon vi", "hiive vi", "hiive mpi", "mdpsolver vi",
             "mdpsolver mpi", "replan mpi", "replan vi", "overhead mpi", "overhead vi"]
    print("milliseconds per solve, mean over the domain's MDPs (ratio to ours mpi; replan: to replan mpi;"
          " overhead: a call started at V*)")
    for domain, rows in by_domain.items():
        states = int(np.median([r["states"] for r in rows]))
        print(f"{domain}: {len(rows)} MDPs, median {states:,} states "
              f"(range {min(r['states'] for r in rows):,}-{max(r['states'] for r in rows):,})")
        for name in names:
            values = [r[name] for r in rows if name in r]
            if not values:
                continue
            mean = 1e3 * float(np.mean(values))
            base = "replan mpi" if name.startswith("replan") else "overhead mpi" if name.startswith("overhead") \
                else "ours mpi"
            rel = float(np.mean([r[name] / r[base] for r in rows if name in r]))
            note = "" if len(values) == len(rows) else f"  ({len(values)} of {len(rows)} MDPs)"
            worse = sum(name in r["unmatched"] for r in rows)
            if worse:
                note += f"  (further than 1e-8 from V* on {worse} MDPs)"
            print(f"  {name:<16} {mean:9.2f} ms  {rel:7.2f}x{note}")
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
