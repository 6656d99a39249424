"""Lexicographic value iteration: each LVI stage solved by modified policy iteration (the
default) against plain value iteration, and plain value iteration against the bound of its own
sparse matrix-vector products.

    python -m bench.lvi [--side 340] [--repeat 3]

Cases: the 103,842-state grid with a hazard penalty on 10% of the states (slack 5), solved
by `lexicographic_value_iteration` (discounted secondary objective) and by
`lexicographic_policy_that_finishes` (the mitigation's call: shortest-path secondary with a
step cost, task solution given); and the same calls on a warehouse-1 robot's MDP (the size
the mitigation replans), penalised in the corridors while carrying a shelf.

Per case: the time with `method="mpi"` and with `method="vi"` (each the minimum of
`--repeat` runs, taken in turns), their ratio, and the largest difference between the two
secondary value functions. For "vi" also its SpMV bound: every backup of value iteration is
one product of the (S*A) x S transition matrix with the value vector; the backups an LVI call
performed (each value iteration's iterations plus its final backup) are timed as that many
bare `mdp.transitions @ v`; the ratio LVI time / bound is the overhead of everything else.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import planner.solvers as solvers
from bench.common import best_of, big_grid_mdp, hazard_penalty, machine
from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet

MAPS = "maps"


class CountBackups:
    """Counts the backups (SpMVs with the full transition matrix) of value_iteration calls."""

    def __enter__(self):
        self.count = 0
        self._vi = solvers.value_iteration

        def counted(*args, **kwargs):
            result = self._vi(*args, **kwargs)
            self.count += result.iterations + (1 if result.method == "vi" else 0)
            return result

        solvers.value_iteration = counted
        return self

    def __exit__(self, *exc):
        solvers.value_iteration = self._vi


def measure(name: str, mdp, call, repeat: int) -> float:
    """`call(method)` runs the case; prints mpi and vi times and vi's SpMV bound."""
    call("mpi")  # the MDP's layouts are built once, on the first call
    with CountBackups() as counter:
        plain = call("vi")
    backups = counter.count
    best = {"mpi": np.inf, "vi": np.inf}
    results = {}
    for _ in range(repeat):
        for method in best:
            start = time.perf_counter()
            results[method] = call(method)
            best[method] = min(best[method], time.perf_counter() - start)
    v = np.random.default_rng(0).random(mdp.n_states)
    reps = max(1, min(backups, 2000))
    def products():
        for _ in range(reps):  # results dropped: kept, 2,000 of them would fill 1.7 GB
            mdp.transitions @ v

    spmv, _ = best_of(products, repeat)
    bound = spmv / reps * backups
    difference = float(np.max(np.abs(results["mpi"].secondary.values - plain.secondary.values)))
    same = float(np.mean(results["mpi"].policy == plain.policy))
    print(f"{name}\n    mpi {best['mpi']:8.3f} s   vi {best['vi']:8.3f} s   vi / mpi {best['vi'] / best['mpi']:6.2f}x   "
          f"max|V2 mpi - V2 vi| {difference:.1e}, same action in {100 * same:.2f}% of states\n"
          f"    vi: {backups} SpMVs, bound {bound:.3f} s, vi / bound {best['vi'] / bound:.2f}")
    return best["vi"] / best["mpi"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=340)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("== lexicographic value iteration: modified policy iteration against value iteration ==")
    print(machine())
    grid = big_grid_mdp(args.side)
    hazard = hazard_penalty(grid)
    print(f"grid MDP: {grid.n_states:,} states, {grid.transitions.nnz:,} transitions; hazard on "
          f"{int(hazard.sum()):,} states")
    task = solvers.value_iteration(grid)
    measure("grid: lexicographic_value_iteration (slack 5)", grid,
            lambda m: solvers.lexicographic_value_iteration(grid, -hazard, slack=5.0, method=m), args.repeat)
    measure("grid: lexicographic_policy_that_finishes (slack 5)", grid,
            lambda m: solvers.lexicographic_policy_that_finishes(grid, -hazard, 5.0, task_result=task, method=m),
            max(1, args.repeat - 2))

    world = load_map(f"{MAPS}/warehouse/warehouse-1.map")
    plan = plan_fleet(generate_scenario(world, 1, seed=0), backend="serial")[0]
    mdp = plan.mdp
    states = mdp.states
    penalty = np.where((states[:, mdp.feature_index("corridor")] > 0) & (states[:, mdp.feature_index("shelf")] > 0),
                       3.0, 0.0)
    print(f"warehouse-1 robot MDP: {mdp.n_states:,} states, {mdp.transitions.nnz:,} transitions; "
          f"penalty on {int((penalty > 0).sum())} states")
    measure("warehouse robot: lexicographic_policy_that_finishes (slack 100)", mdp,
            lambda m: solvers.lexicographic_policy_that_finishes(mdp, -penalty, 100.0, task_result=plan.task_solution,
                                                                 method=m), max(args.repeat, 5))
    measure("warehouse robot: lexicographic_value_iteration (slack 100)", mdp,
            lambda m: solvers.lexicographic_value_iteration(mdp, -penalty, slack=100.0, method=m), max(args.repeat, 5))


if __name__ == "__main__":
    main()
