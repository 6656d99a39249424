"""Lexicographic value iteration against the bound of its own sparse matrix-vector products.

    python -m bench.lvi [--side 340] [--repeat 3]

Every backup of value iteration is one product of the (S*A) x S transition matrix with the
value vector. We count the backups an LVI call performed (each value iteration's iterations
plus its final backup) and time that many bare `mdp.transitions @ v` calls: the SpMV bound.
The ratio LVI time / bound is the overhead of everything else (the max over actions, the
residual, the slack restriction, the finishing checks of `lexicographic_policy_that_finishes`).

Cases: the 103,842-state grid with a hazard penalty on 10% of the states (slack 5), solved
by `lexicographic_value_iteration` (discounted secondary objective) and by
`lexicographic_policy_that_finishes` (the mitigation's call: shortest-path secondary with a
step cost, task solution given); and the same call on a warehouse-1 robot's MDP (the size
the mitigation replans), penalised in the corridors while carrying a shelf.
"""
from __future__ import annotations

import argparse

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
            self.count += result.iterations + 1
            return result

        solvers.value_iteration = counted
        return self

    def __exit__(self, *exc):
        solvers.value_iteration = self._vi


def measure(name: str, mdp, call, repeat: int) -> float:
    with CountBackups() as counter:
        call()
    backups = counter.count
    seconds, _ = best_of(call, repeat)
    v = np.random.default_rng(0).random(mdp.n_states)
    reps = max(1, min(backups, 2000))
    spmv, _ = best_of(lambda: [mdp.transitions @ v for _ in range(reps)], repeat)
    bound = spmv / reps * backups
    r = seconds / bound
    print(f"{name:<58} {seconds:8.3f} s  {backups:6d} SpMVs  bound {bound:8.3f} s  ratio {r:5.2f}  "
          f"({'meets' if r <= 2 else 'misses'} <= 2)")
    return r


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=340)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("== lexicographic value iteration vs its SpMV bound ==")
    print(machine())
    grid = big_grid_mdp(args.side)
    hazard = hazard_penalty(grid)
    print(f"grid MDP: {grid.n_states:,} states, {grid.transitions.nnz:,} transitions; hazard on "
          f"{int(hazard.sum()):,} states")
    task = solvers.value_iteration(grid)
    measure("grid: lexicographic_value_iteration (slack 5)", grid,
            lambda: solvers.lexicographic_value_iteration(grid, -hazard, slack=5.0), args.repeat)
    measure("grid: lexicographic_policy_that_finishes (slack 5)", grid,
            lambda: solvers.lexicographic_policy_that_finishes(grid, -hazard, 5.0, task_result=task), args.repeat)

    world = load_map(f"{MAPS}/warehouse/warehouse-1.map")
    plan = plan_fleet(generate_scenario(world, 1, seed=0), backend="serial")[0]
    mdp = plan.mdp
    states = mdp.states
    penalty = np.where((states[:, mdp.feature_index("corridor")] > 0) & (states[:, mdp.feature_index("shelf")] > 0),
                       3.0, 0.0)
    print(f"warehouse-1 robot MDP: {mdp.n_states:,} states, {mdp.transitions.nnz:,} transitions; "
          f"penalty on {int((penalty > 0).sum())} states")
    measure("warehouse robot: lexicographic_policy_that_finishes (slack 100)", mdp,
            lambda: solvers.lexicographic_policy_that_finishes(mdp, -penalty, 100.0, task_result=plan.task_solution),
            max(args.repeat, 5))
    measure("warehouse robot: lexicographic_value_iteration (slack 100)", mdp,
            lambda: solvers.lexicographic_value_iteration(mdp, -penalty, slack=100.0), max(args.repeat, 5))


if __name__ == "__main__":
    main()
