"""The paper's simulation experiments (section V-B) and ours, as a library.

Each experiment is aggregated over map instances x seeds (mean, standard deviation and a 95 %
confidence interval of the mean):

  (a) ``fraction``: exact NSE penalty J_N after mitigation against the percentage of robots that
      replan (paper Fig. 4);
  (b) ``size``: J_N after mitigation by method for several fleet sizes (paper Fig. 5), fleets of
      1000 robots included (``large``: fewer instances and methods);
  (c) ``runtime``: wall time (total and per phase) by method against fleet size, from (b)'s runs
      (paper Table II);
  (d) ``frontier``: J_N after against the task budget for the main methods and the exact
      constrained reference, and how far each robot's LVI policy is from its exact constrained
      optimum (``lvi_gap``);
  (e) paired Wilcoxon signed-rank tests over instances x seeds behind every "beats" claim;
  (f) ``generated``: every method on the random maps of `mase generate`.

``--merge`` (`merge_and_write`) adds to a report already written: it computes only the runs of the
configuration that ``<out>/results/runs.csv`` lacks (optionally only some experiments, and the
LVI-gap table, ``lvi-gap``), keeps every other row, and rewrites the report from all of them.

The considerate reward's care coefficient is first chosen per domain from a small sweep
(``care``), and that best setting is used everywhere else (the report says so).

Every fleet is planned once (`Fleet.plan`) and every method runs on that same fleet. A unit of
work is one (domain, map, seed, fleet size, budget); units run in a process pool when
``jobs > 1``. `run_experiments` returns rows (dicts); `write_results` writes CSV, PNG and Markdown.
"""
from __future__ import annotations

import csv
import math
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from planner.budget import DEFAULT_BUDGET, TaskBudget, budgeted_lvi, budgeted_scalarisation, constrained_optimum, \
    discounted_cost
from planner.maps import load_map, load_map_text
from planner.scenario import generate_scenario

from .mitigation import METHODS, PHASES, Fleet, Mitigation
from .strategies import REFERENCES, BestResponse, RoundContext

DOMAINS = ("salp", "overcooked", "warehouse")
MAPS_DIR = Path(__file__).resolve().parent.parent / "maps"
N_INSTANCES = 5  # maps/<domain>/<domain>-1..5.map
RECON_METHODS = ("recon", "gen-recon", "gen-recon-cf")
PAPER_BASELINES = ("naive", "difference-reward", "considerate")
MAIN_METHODS = ("recon", "gen-recon-cf", "difference-reward", "considerate", "best-response")
ALL_METHODS = METHODS + tuple(REFERENCES)
DEFAULT_METHODS = METHODS
EXCHANGE_METHODS = ("exchange", "exchange-logs")  # they compare robots: fleets of at least 2
EXPERIMENTS = ("care", "fraction", "size", "large", "frontier", "generated")
LVI_GAP = "lvi-gap"  # the LVI-vs-exact-optimum table of (d): not runs, but selectable like an experiment
PARTS = EXPERIMENTS + (LVI_GAP,)
GAP_COLUMNS = ("domain", "instance", "robot", "budget", "naive", "lvi", "lagrangian", "reference")

ROW_COLUMNS = (
    "experiment", "domain", "source", "instance", "map", "seed", "robots", "budget", "method", "update_fraction",
    "care", "nse_before", "nse_after", "nse_reduction", "nse_state_rate_before", "nse_state_rate_after",
    "n_updated", "rounds", "accepted", "rejected", "counterfactual_share", "mean_task_regret", "max_task_regret",
    "max_regret_over_slack", "mean_budget", "seconds_total", "seconds_mitigation",
) + tuple(f"seconds_{p}" for p in PHASES)


@dataclass(frozen=True)
class ExperimentConfig:
    """What to run. `instances` and `seeds` are counts: maps <domain>-1..instances, seeds 0..seeds-1."""

    domains: tuple[str, ...] = DOMAINS
    instances: int = N_INSTANCES
    seeds: int = 2
    sizes: tuple[int, ...] = (10, 25, 50, 100)  # fleet sizes of experiments (b) and (c)
    large_sizes: tuple[int, ...] = (1000,)  # (b) and (c) at scale, on fewer instances and methods
    large_instances: int = 2
    large_seeds: int = 1
    large_methods: tuple[str, ...] = ("naive",) + MAIN_METHODS + ("gen-recon",)
    fraction_size: int = 10  # fleet size of experiment (a)
    fractions: tuple[float, ...] = (0.0, 0.10, 0.25, 0.50, 0.75, 1.0)
    fraction_methods: tuple[str, ...] = RECON_METHODS + ("best-response",)
    methods: tuple[str, ...] = DEFAULT_METHODS
    update_fraction: float = 0.25  # experiment (b)'s fraction
    slack: str = DEFAULT_BUDGET  # every robot's task budget (planner.budget.TaskBudget)
    episodes: int = 100
    rounds: int = 5
    frontier_budgets: tuple[str, ...] = ("0%", "2%", "5%", "10%", "20%", "50%")
    frontier_methods: tuple[str, ...] = MAIN_METHODS + ("constrained-reference",)
    frontier_size: int = 10
    care_values: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
    care_instances: int = 2
    generated_maps: int = 5  # `mase generate` seeds 0..N-1 per domain, experiment (f)
    generated_sizes: tuple[int, ...] = (10, 25)
    generated_methods: tuple[str, ...] = DEFAULT_METHODS
    experiments: tuple[str, ...] = EXPERIMENTS
    maps_dir: str = str(MAPS_DIR)

    @classmethod
    def quick(cls, **overrides) -> "ExperimentConfig":
        """A tiny configuration for tests: 1 instance, 1 seed, fleets of 4 and 6 robots."""
        params = dict(instances=1, seeds=1, sizes=(4, 6), large_sizes=(), fraction_size=4, fractions=(0.0, 0.5, 1.0),
                      fraction_methods=("recon", "best-response"),
                      methods=("naive", "recon", "gen-recon-cf", "considerate", "exchange-logs", "best-response"),
                      episodes=20, rounds=2, frontier_budgets=("0%", "10%"), frontier_size=4,
                      frontier_methods=("recon", "best-response", "constrained-reference"), care_values=(1.0, 5.0),
                      care_instances=1, generated_maps=1, generated_sizes=(4,),
                      generated_methods=("naive", "recon", "best-response"))
        params.update(overrides)
        return cls(**params)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(len(self.domains) > 0, "at least one domain is needed")
        for d in self.domains:
            need(d in DOMAINS, f"unknown domain {d!r}; domains: {', '.join(DOMAINS)}")
        for name in ("instances", "large_instances", "care_instances"):
            k = getattr(self, name)
            need(isinstance(k, int) and 1 <= k <= N_INSTANCES, f"{name} must be in 1..{N_INSTANCES}, got {k!r}")
        need(self.seeds >= 1 and self.large_seeds >= 1, f"seeds must be at least 1, got {self.seeds}")
        need(len(self.sizes) > 0, "at least one fleet size is needed")
        for n in (*self.sizes, *self.large_sizes, *self.generated_sizes, self.fraction_size, self.frontier_size):
            need(isinstance(n, int) and n >= 1, f"fleet sizes must be integers >= 1, got {n!r}")
        for f in (*self.fractions, self.update_fraction):
            need(0.0 <= f <= 1.0, f"update fractions must be in [0, 1], got {f}")
        for m in (*self.methods, *self.fraction_methods, *self.large_methods, *self.frontier_methods,
                  *self.generated_methods):
            need(m in ALL_METHODS, f"unknown method {m!r}; methods: {', '.join(ALL_METHODS)}")
        for m in EXCHANGE_METHODS:
            if m in self.methods:
                need(min(self.sizes) >= 2, f"the {m} method needs fleets of at least 2 robots")
        for spec in (self.slack, *self.frontier_budgets):
            TaskBudget.parse(spec)  # raises ValueError with what is expected
        for c in self.care_values:
            need(math.isfinite(c) and c >= 0, f"care values must be finite and >= 0, got {c}")
        need(self.episodes >= 2, f"episodes must be at least 2, got {self.episodes}")
        need(self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}")
        need(self.generated_maps >= 0, f"generated maps must be >= 0, got {self.generated_maps}")
        for e in self.experiments:
            need(e in EXPERIMENTS, f"unknown experiment {e!r}; experiments: {', '.join(EXPERIMENTS)}")

    def map_path(self, domain: str, instance: int) -> Path:
        return Path(self.maps_dir) / domain / f"{domain}-{instance}.map"

    def care_units(self) -> list["Unit"]:
        """The considerate reward's care sweep, run first: its best value per domain is used after."""
        if "care" not in self.experiments:
            return []
        runs = tuple(("care", "considerate", self.update_fraction, c) for c in self.care_values)
        return [Unit(d, "shipped", i, s, self.fraction_size, self.slack, runs)
                for d in self.domains for i in range(1, self.care_instances + 1) for s in range(self.seeds)]

    def units(self) -> list["Unit"]:
        """One unit per planned fleet (budget included), listing the (experiment, method, fraction) runs it serves."""
        todo: dict[tuple, list] = defaultdict(list)

        def add(domain, source, instance, seed, n, budget, runs):
            todo[(domain, source, instance, seed, n, budget)] += runs

        for d in self.domains:
            for i in range(1, self.instances + 1):
                for s in range(self.seeds):
                    if "fraction" in self.experiments:
                        add(d, "shipped", i, s, self.fraction_size, self.slack,
                            [("fraction", m, f) for m in self.fraction_methods for f in self.fractions])
                    if "size" in self.experiments:
                        for n in self.sizes:
                            add(d, "shipped", i, s, n, self.slack, [("size", m, self.update_fraction)
                                                                     for m in self.methods])
                    if "frontier" in self.experiments:
                        for b in self.frontier_budgets:
                            add(d, "shipped", i, s, self.frontier_size, b,
                                [("frontier", m, self.update_fraction) for m in self.frontier_methods])
            if "large" in self.experiments:
                for i in range(1, self.large_instances + 1):
                    for s in range(self.large_seeds):
                        for n in self.large_sizes:
                            add(d, "shipped", i, s, n, self.slack, [("size", m, self.update_fraction)
                                                                     for m in self.large_methods])
            if "generated" in self.experiments:
                for g in range(self.generated_maps):
                    for n in self.generated_sizes:
                        add(d, "generated", g, 0, n, self.slack, [("generated", m, self.update_fraction)
                                                                   for m in self.generated_methods])
        return [Unit(d, src, i, s, n, b, tuple((e, m, f, None) for e, m, f in runs))
                for (d, src, i, s, n, b), runs in todo.items()]

    def n_runs(self) -> int:
        return sum(len(u.runs) for u in self.care_units() + self.units())


@dataclass(frozen=True)
class Unit:
    domain: str
    source: str  # "shipped" (maps/<domain>/<domain>-<instance>.map) or "generated" (mase generate --seed instance)
    instance: int
    seed: int
    robots: int
    budget: str
    runs: tuple[tuple[str, str, float, float | None], ...]  # (experiment, method, fraction, care or None)


def _world(config: ExperimentConfig, unit: Unit):
    if unit.source == "generated":
        from planner.generate import generate_map

        return load_map_text(generate_map(unit.domain, unit.instance), source=f"<mase generate --domain "
                             f"{unit.domain} --seed {unit.instance}>")
    return load_map(config.map_path(unit.domain, unit.instance))


def run_unit(config: ExperimentConfig, unit: Unit, care: dict[str, float] | None = None,
             progress: Callable[[int], None] | None = None) -> list[dict]:
    """Plan one fleet and run every requested (method, fraction) on it; identical runs are shared."""
    world = _world(config, unit)
    scenario = generate_scenario(world, unit.robots, seed=unit.seed, slack=unit.budget)
    fleet = Fleet.plan(scenario, backend="serial")
    done: dict[tuple, dict] = {}
    rows = []
    for experiment, method, fraction, care_value in unit.runs:
        if care_value is None:
            care_value = (care or {}).get(unit.domain, 2.0) if method == "considerate" else float("nan")
        key = (method, float(fraction), care_value if method == "considerate" else None)
        if key not in done:
            mitigation = Mitigation(method=method, update_fraction=fraction, rounds=config.rounds,
                                    episodes=config.episodes, seed=unit.seed, backend="serial",
                                    care=care_value if method == "considerate" else 2.0)
            done[key] = _metrics(mitigation.run(fleet))
        rows.append({"experiment": experiment, "domain": unit.domain, "source": unit.source,
                     "instance": unit.instance, "map": world.name, "seed": unit.seed, "robots": unit.robots,
                     "budget": unit.budget, "method": method, "update_fraction": float(fraction),
                     "care": float(care_value), **done[key]})
        if progress is not None:
            progress(1)
    return rows


def _metrics(result) -> dict:
    regrets = np.array([r.task_regret for r in result.robots])
    budgets = np.array([r.slack for r in result.robots])
    over = np.divide(regrets, budgets, out=np.where(regrets > 1e-6, np.inf, 0.0), where=budgets > 0)
    seconds = {f"seconds_{p}": float(result.seconds.get(p, 0.0)) for p in PHASES}
    mitigation_seconds = sum(v for p, v in result.seconds.items() if p != "plan")
    nan = float("nan")
    rate = lambda x: nan if x is None or not math.isfinite(x) else float(x)  # noqa: E731
    before, after = float(result.before.total_penalty), float(result.after.total_penalty)
    return {
        "nse_before": before,
        "nse_after": after,
        "nse_reduction": (before - after) / before if before > 0 else 0.0,
        "nse_state_rate_before": rate(result.before.nse_state_rate),
        "nse_state_rate_after": rate(result.after.nse_state_rate),
        "n_updated": len(result.updated),
        "rounds": len(result.rounds),
        "accepted": sum(len(r.accepted) for r in result.rounds),
        "rejected": sum(len(r.rejected) for r in result.rounds),
        "counterfactual_share": rate(result.counterfactual_share),
        "mean_task_regret": float(regrets.mean()) if len(regrets) else 0.0,
        "max_task_regret": float(regrets.max()) if len(regrets) else 0.0,
        "max_regret_over_slack": float(over.max()) if len(regrets) else nan,
        "mean_budget": float(budgets.mean()) if len(budgets) else 0.0,
        "seconds_total": float(sum(result.seconds.values())),
        "seconds_mitigation": float(mitigation_seconds),
        **seconds,
    }


CSV_TIE = 1e-5  # runs.csv keeps 6 significant digits: means closer than this (relative) are ties


def best_care(rows: Iterable[dict]) -> dict[str, float]:
    """Per domain, the care value of the sweep with the lowest mean J_N after (ties, within `CSV_TIE`
    relative, go to the smaller: rows read back from runs.csv and fresh ones choose alike)."""
    means: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in rows:
        if r["experiment"] == "care":
            means[(r["domain"], r["care"])].append(r["nse_after"])
    best: dict[str, float] = {}
    for (domain, care), values in sorted(means.items()):
        incumbent = np.mean(means[(domain, best[domain])]) if domain in best else None
        if incumbent is None or np.mean(values) < incumbent - CSV_TIE * max(1.0, abs(incumbent)):
            best[domain] = care
    return best


def run_key(experiment: str, domain: str, source: str, instance: int, seed: int, robots: int, budget: str,
            method: str, fraction: float, care: float | None) -> tuple:
    """What identifies one run of a configuration. The care value counts only in the care sweep: a
    considerate run of another experiment is the same run whatever care it used."""
    care = float(care) if experiment == "care" and care is not None else None
    return (experiment, domain, source, int(instance), int(seed), int(robots), str(budget), method,
            round(float(fraction), 9), care)


def row_key(row: dict) -> tuple:
    return run_key(row["experiment"], row["domain"], row["source"], row["instance"], row["seed"], row["robots"],
                   row["budget"], row["method"], row["update_fraction"], row.get("care"))


def select_units(units: Sequence[Unit], only: Iterable[str] | None = None, done: Iterable[tuple] = ()) -> list[Unit]:
    """`units` with only the runs of the experiments `only` (all if None) whose `run_key` is not in `done`;
    units left without runs are dropped."""
    only = None if only is None else set(only)
    done = set(done)
    out = []
    for u in units:
        runs = tuple(r for r in u.runs if (only is None or r[0] in only)
                     and run_key(r[0], u.domain, u.source, u.instance, u.seed, u.robots, u.budget, r[1], r[2],
                                 r[3]) not in done)
        if runs:
            out.append(Unit(u.domain, u.source, u.instance, u.seed, u.robots, u.budget, runs))
    return out


def run_experiments(config: ExperimentConfig, jobs: int = 1,
                    progress: Callable[[int, int], None] | None = None, only: Iterable[str] | None = None,
                    existing: Sequence[dict] = ()) -> list[dict]:
    """Run every unit of `config`; `progress(runs_done, runs_total)` after each run (or unit, in a pool).

    `only` restricts the runs to those experiments; runs whose key (`row_key`) is among the rows
    `existing` are skipped, and `existing`'s care sweep counts when the best care value is chosen.
    Only the new rows are returned."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    only = None if only is None else tuple(only)
    done = {row_key(r) for r in existing}
    care_units = select_units(config.care_units(), only, done)
    units = select_units(config.units(), only, done)
    total = sum(len(u.runs) for u in care_units + units)
    count = [0]

    def advance(k: int) -> None:
        count[0] += k
        if progress is not None:
            progress(count[0], total)

    def run(units, care):
        if jobs == 1:
            out = []
            for unit in units:
                out += run_unit(config, unit, care, advance)
            return out
        order = sorted(units, key=lambda u: -u.robots * len(u.runs))
        out = []
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_unit, config, u, care): u for u in order}
            for future in as_completed(futures):
                out += future.result()
                advance(len(futures[future].runs))
        return out

    rows = run(care_units, None)
    rows += run(units, best_care([r for r in existing if r["experiment"] == "care"] + rows))
    return sort_rows(rows)


def sort_rows(rows: Iterable[dict]) -> list[dict]:
    key = lambda r: (EXPERIMENTS.index(r["experiment"]), DOMAINS.index(r["domain"]), r["source"], r["robots"],  # noqa: E731
                     _budget_order(r["budget"]), r["instance"], r["seed"], ALL_METHODS.index(r["method"]),
                     r["update_fraction"], r["care"] if math.isfinite(r["care"]) else -1.0)
    return sorted(rows, key=key)


def _budget_order(spec: str) -> tuple:
    budget = TaskBudget.parse(spec)
    return (0, budget.fraction) if budget.fraction is not None else (1, budget.absolute)


# -- how far LVI is from the exact constrained optimum, one robot against fixed others ------------

def lvi_gap_rows(config: ExperimentConfig, robots_per_fleet: int = 3) -> list[dict]:
    """For the `robots_per_fleet` largest contributors to J_N of each (domain, instance 1..instances,
    seed 0) fleet of `frontier_size` naive robots: at each frontier budget, the expected discounted
    marginal penalty of its budgeted LVI policy, of its budgeted Lagrangian policy, and the exact
    constrained optimum (the LP), all against the others' fixed naive policies."""
    rows = []
    for domain in config.domains:
        for instance in range(1, config.instances + 1):
            world = load_map(config.map_path(domain, instance))
            fleet = Fleet.plan(generate_scenario(world, config.frontier_size, seed=0), backend="serial")
            policies = [p.policy for p in fleet.plans]
            counts = fleet.counts(policies)
            context = RoundContext(fleet, policies, counts, None, 0, 0, config.episodes)
            proposal = BestResponse().propose(context)
            top = [int(i) for i in np.argsort(-proposal.scores, kind="stable")[:robots_per_fleet]
                   if proposal.scores[i] > 0]
            for i in top:
                plan = fleet.plans[i]
                cost = proposal.penalty(i)
                if not cost.max() > 0:
                    continue
                for spec in config.frontier_budgets:
                    budget = TaskBudget.parse(spec).amount(plan.task_value)
                    reference = constrained_optimum(plan.mdp, cost, budget, task=plan.task_solution)
                    lvi = budgeted_lvi(plan.mdp, -cost, budget, task=plan.task_solution)
                    relaxed = budgeted_scalarisation(plan.mdp, cost / cost.max(), budget, 1e3, task=plan.task_solution)
                    rows.append({"domain": domain, "instance": instance, "robot": plan.task.robot_id, "budget": spec,
                                 "naive": discounted_cost(plan.mdp, plan.policy, cost), "reference": reference.cost,
                                 "lvi": discounted_cost(plan.mdp, lvi.policy, cost),
                                 "lagrangian": discounted_cost(plan.mdp, relaxed.policy, cost)})
    return rows


# -- aggregation ---------------------------------------------------------------------------------
SUMMARY_VALUES = ("nse_before", "nse_after", "nse_reduction", "nse_state_rate_after", "n_updated", "rounds",
                  "accepted", "rejected", "counterfactual_share", "max_task_regret", "max_regret_over_slack",
                  "seconds_total", "seconds_mitigation") + tuple(f"seconds_{p}" for p in PHASES)


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def aggregate(rows: Iterable[dict], experiment: str) -> list[dict]:
    """Mean, sample standard deviation and 95 % confidence half-width of the mean over
    instances x seeds per (domain, robots, budget, method, fraction, care)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["experiment"] == experiment:
            care = r.get("care", float("nan"))
            care = None if care is None or not math.isfinite(care) else float(care)  # nan != nan: one key
            groups[(r["domain"], r["robots"], r.get("budget", DEFAULT_BUDGET), r["method"], r["update_fraction"],
                    care)].append(r)
    out = []
    for (domain, robots, budget, method, fraction, care), group in groups.items():
        row = {"domain": domain, "robots": robots, "budget": budget, "method": method, "update_fraction": fraction,
               "care": float("nan") if care is None else care, "n": len(group)}
        for name in SUMMARY_VALUES:
            values = np.array([g.get(name, float("nan")) for g in group], float)
            values = values[np.isfinite(values)]
            row[f"{name}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row[f"{name}_ci"] = _t95(len(values)) * row[f"{name}_std"] / math.sqrt(len(values)) \
                if len(values) > 1 else 0.0
        out.append(row)
    return sorted(out, key=lambda r: (DOMAINS.index(r["domain"]), r["robots"], _budget_order(r["budget"]),
                                      ALL_METHODS.index(r["method"]), r["update_fraction"],
                                      r["care"] if math.isfinite(r["care"]) else -1.0))


def summarise(rows: Sequence[dict], config: ExperimentConfig | None = None) -> dict[str, list[dict]]:
    """`aggregate` per experiment. The fleets of `config.large_sizes` run as experiment "size" (their
    rows say so), and "large" summarises the size rows at those fleet sizes."""
    out = {e: aggregate(rows, e) for e in EXPERIMENTS}
    large = set(config.large_sizes) if config is not None else set()
    out["large"] = [r for r in out["size"] if r["robots"] in large]
    return out


def large_rows(rows: Sequence[dict], config: ExperimentConfig) -> list[dict]:
    """The runs of the largest fleet size of `config.large_sizes` that `rows` hold (experiment "size")."""
    sizes = sorted({r["robots"] for r in rows if r["experiment"] == "size" and r["robots"] in config.large_sizes})
    return [r for r in rows if r["experiment"] == "size" and sizes and r["robots"] == sizes[-1]]


def paired_test(rows: Sequence[dict], experiment: str, domain: str, robots: int, method: str, other: str,
                budget: str | None = None) -> dict | None:
    """One-sided Wilcoxon signed-rank test that `method` has a lower J_N after than `other`,
    paired over the (instance, seed) fleets both ran on. None if they share no fleet."""
    from scipy.stats import wilcoxon

    def of(m):
        return {(r["source"], r["instance"], r["seed"]): r["nse_after"] for r in rows
                if r["experiment"] == experiment and r["domain"] == domain and r["robots"] == robots
                and r["method"] == m and (budget is None or r["budget"] == budget)}

    a, b = of(method), of(other)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    x, y = np.array([a[k] for k in common]), np.array([b[k] for k in common])
    diff = x - y
    scale = max(1.0, float(np.abs(y).max(initial=0.0)))
    nonzero = np.abs(diff) > 1e-9 * scale
    if not nonzero.any():
        p = 1.0
    else:
        p = float(wilcoxon(x[nonzero], y[nonzero], alternative="less").pvalue)
    return {"n": len(common), "wins": int((diff < -1e-9 * scale).sum()), "losses": int((diff > 1e-9 * scale).sum()),
            "mean_difference": float(diff.mean()), "p": p}


def _write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# -- plots -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(plt, domains: Sequence[str], width: float = 4.6, height: float = 3.8):
    fig, axes = plt.subplots(1, len(domains), figsize=(width * len(domains), height), squeeze=False)
    return fig, list(axes[0])


def _legend_below(fig, axes, ncol: int) -> None:
    """One legend for the figure, under the panels: never on the data."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if labels:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=ncol, fontsize=8,
                   frameon=False)


def _line_panels(plt, summary, x_of, xlabel, title, path, methods, y="nse_after", ylabel="NSE penalty J_N after",
                 xscale=None, yscale=None):
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in summary)]
    fig, axes = _panels(plt, domains, 4.8, 4.4)
    for ax, domain in zip(axes, domains):
        rows = [r for r in summary if r["domain"] == domain]
        for method in methods:
            mine = sorted((r for r in rows if r["method"] == method), key=x_of)
            if not mine:
                continue
            x = [x_of(r) for r in mine]
            mean = np.array([r[f"{y}_mean"] for r in mine])
            ci = np.array([r[f"{y}_ci"] for r in mine])
            k = ALL_METHODS.index(method)
            line, = ax.plot(x, mean, marker="os^vD<>px*hP"[k % 12], linestyle=("-", "--", ":", "-.")[k % 4],
                            label=method, markersize=6 - (k % 3))
            ax.fill_between(x, mean - ci, mean + ci, color=line.get_color(), alpha=0.15)
        ax.set_title(domain)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if xscale:
            ax.set_xscale(xscale)
        if yscale:
            ax.set_yscale(yscale)
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    _legend_below(fig, axes, ncol=min(6, len(methods)))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fraction(summary: list[dict], path: Path) -> None:
    _line_panels(_pyplot(), summary, lambda r: 100 * r["update_fraction"], "robots updated (%)",
                 "(a) NSE penalty vs. percentage of robots updated (mean, 95% CI)", path,
                 [m for m in ALL_METHODS if any(r["method"] == m for r in summary)])


def plot_frontier(summary: list[dict], path: Path) -> None:
    def x_of(r):
        budget = TaskBudget.parse(r["budget"])
        return 100 * (budget.fraction if budget.fraction is not None else float("nan"))

    _line_panels(_pyplot(), summary, x_of, "task budget (% of task cost)",
                 "(d) NSE penalty vs. task budget (mean, 95% CI)", path,
                 [m for m in ALL_METHODS if any(r["method"] == m for r in summary)])


def plot_size(summary: list[dict], path: Path, update_fraction: float) -> None:
    plt = _pyplot()
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in summary)]
    fig, axes = _panels(plt, domains, 5.6, 4.8)
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in summary)]
    cmap = plt.get_cmap("tab20")
    for ax, domain in zip(axes, domains):
        rows = [r for r in summary if r["domain"] == domain]
        sizes = sorted({r["robots"] for r in rows})
        width = 0.8 / len(methods)
        for k, method in enumerate(methods):
            by = {r["robots"]: r for r in rows if r["method"] == method}
            x = np.arange(len(sizes)) + (k - (len(methods) - 1) / 2) * width
            # J_N after relative to the naive policy's J_N, so fleets of every size share one scale
            y = [by[n]["nse_after_mean"] / max(by[n]["nse_before_mean"], 1e-12) if n in by else np.nan for n in sizes]
            err = [by[n]["nse_after_ci"] / max(by[n]["nse_before_mean"], 1e-12) if n in by else 0 for n in sizes]
            ax.bar(x, y, width, yerr=err, label=method, color=cmap(k % 20), error_kw={"lw": 0.6, "capsize": 1})
        ax.set_xticks(np.arange(len(sizes)), [str(n) for n in sizes])
        ax.set_xlabel("robots")
        ax.set_ylabel("J_N after / J_N naive (mean, 95% CI)")
        ax.set_title(domain)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"(b) NSE penalty by method, {100 * update_fraction:g}% of robots updated "
                 "(relative to the naive policy)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    _legend_below(fig, axes, ncol=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_runtime(summary: list[dict], path: Path) -> None:
    _line_panels(_pyplot(), summary, lambda r: r["robots"], "robots",
                 "(c) run time vs. fleet size (mean, 95% CI; log-log)", path,
                 [m for m in ALL_METHODS if any(r["method"] == m for r in summary)], y="seconds_total",
                 ylabel="seconds (plan + mitigation)", xscale="log", yscale="log")


def plot_large(rows: Sequence[dict], path: Path) -> None:
    """The largest fleets, per domain: J_N before and after each method (top; every run a point, the
    bar the mean after, its whisker the range over the runs) and the mean seconds per phase (bottom,
    stacked; the whisker is the range of the runs' totals, the points their totals). Legends right of
    the panels."""
    plt = _pyplot()
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in rows)]
    methods = [m for m in ALL_METHODS if any(r["method"] == m for r in rows)]
    robots = max(r["robots"] for r in rows)
    fig, axes = plt.subplots(2, len(domains), figsize=(4.6 * len(domains) + 2.4, 8.2), squeeze=False)
    colours = plt.get_cmap("tab10")
    phase_colours = plt.get_cmap("Set2")
    x = np.arange(len(methods))
    for col, domain in enumerate(domains):
        mine = [r for r in rows if r["domain"] == domain]
        fleets = sorted({(r["source"], r["instance"], r["seed"]) for r in mine})
        ax = axes[0][col]
        after = {m: [r["nse_after"] for r in mine if r["method"] == m] for m in methods}
        mean = np.array([np.mean(after[m]) if after[m] else np.nan for m in methods])
        low = np.array([min(after[m]) if after[m] else np.nan for m in methods])
        high = np.array([max(after[m]) if after[m] else np.nan for m in methods])
        ax.bar(x, mean, 0.6, color="0.85", edgecolor="0.5", label="mean J_N after (whisker: range)",
               yerr=np.maximum(0.0, np.vstack([mean - low, high - mean])), error_kw={"lw": 0.8, "capsize": 3, "ecolor": "0.3"})
        for k, (source, instance, seed) in enumerate(fleets):
            runs = {r["method"]: r for r in mine if (r["source"], r["instance"], r["seed"]) == (source, instance, seed)}
            if not runs:
                continue
            before = next(iter(runs.values()))["nse_before"]
            colour = colours(k % 10)
            ax.axhline(before, color=colour, ls="--", lw=1.0, label=f"J_N before, instance {instance} seed {seed}")
            offset = (k - (len(fleets) - 1) / 2) * 0.18
            xs = [i + offset for i, m in enumerate(methods) if m in runs]
            ax.scatter(xs, [runs[m]["nse_after"] for m in methods if m in runs], color=colour, zorder=3, s=22,
                       label=f"J_N after, instance {instance} seed {seed}")
        ax.set_title(f"{domain}, {robots} robots")
        ax.set_ylabel("NSE penalty J_N")
        ax.set_xticks(x, methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[1][col]
        bottom = np.zeros(len(methods))
        for j, phase in enumerate(PHASES):
            values = np.array([np.mean([r[f"seconds_{phase}"] for r in mine if r["method"] == m]) if after[m]
                               else np.nan for m in methods])
            ax.bar(x, values, 0.6, bottom=bottom, color=phase_colours(j % 8), label=phase)
            bottom = bottom + np.nan_to_num(values)
        totals = {m: [r["seconds_total"] for r in mine if r["method"] == m] for m in methods}
        lo = np.array([min(totals[m]) if totals[m] else np.nan for m in methods])
        hi = np.array([max(totals[m]) if totals[m] else np.nan for m in methods])
        ax.errorbar(x, bottom, yerr=np.maximum(0.0, np.vstack([bottom - lo, hi - bottom])), fmt="none", ecolor="0.2", lw=0.8,
                    capsize=3, label="range of the runs' totals")
        for i, m in enumerate(methods):
            ax.scatter([i] * len(totals[m]), totals[m], color="k", s=8, zorder=3,
                       label="total seconds of a run" if i == 0 else None)
        ax.set_ylabel("seconds (mean per phase)")
        ax.set_xticks(x, methods, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Fleets of {robots} robots, with the acceptance step: J_N before and after (top), "
                 "time per phase (bottom)")
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / (4.6 * len(domains) + 2.4), 0.96))
    for row, anchor in ((0, 0.74), (1, 0.28)):
        handles, labels = {}, []
        for ax in axes[row]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
        fig.legend([handles[lab] for lab in labels], labels, loc="center left", bbox_to_anchor=(
            1 - 2.25 / (4.6 * len(domains) + 2.4), anchor), fontsize=8, frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- Markdown ----------------------------------------------------------------------------------
def _pm(row: dict, name: str, digits: int = 2) -> str:
    mean, ci = row[f"{name}_mean"], row[f"{name}_ci"]
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (1 = linear growth)."""
    xs, ys = np.log(np.asarray(xs, float)), np.log(np.maximum(np.asarray(ys, float), 1e-9))
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 else float("nan")


def _p(p: float) -> str:
    return "1" if p >= 0.9995 else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _cells(summary: list[dict]) -> list[tuple[str, int]]:
    return sorted({(r["domain"], r["robots"]) for r in summary}, key=lambda c: (DOMAINS.index(c[0]), c[1]))


def comparison(rows: list[dict], summaries: dict[str, list[dict]], config: ExperimentConfig) -> list[str]:
    """Statements about the paper's claims and ours, derived only from the numbers; every "beats"
    comes with its paired test."""
    lines: list[str] = []
    size = summaries["size"]
    cells = _cells(size)
    by = {(r["domain"], r["robots"], r["method"]): r for r in size}
    alpha = 0.05

    def claim(method: str, other: str, cell) -> str:
        domain, n = cell
        test = paired_test(rows, "size", domain, n, method, other)
        if test is None:
            return ""
        verdict = "beats" if test["p"] < alpha and test["mean_difference"] < 0 else "does not significantly beat"
        return (f"{domain}/{n}: {verdict} `{other}` ({test['wins']} wins, {test['losses']} losses of {test['n']}, "
                f"p = {_p(test['p'])})")

    baselines = [b for b in ("difference-reward", "considerate") if any(r["method"] == b for r in size)]
    if baselines:
        lines.append(f"**RECON and generalised RECON vs. the paper's baselines ({', '.join(baselines)}), J_N after, "
                     f"experiment (b).** One-sided Wilcoxon signed-rank test over the paired instances x seeds; "
                     f"\"beats\" means p < {alpha}.")
        for method in RECON_METHODS:
            parts = [claim(method, b, c) for c in cells for b in baselines if (c[0], c[1], method) in by]
            parts = [p for p in parts if p]
            if parts:
                wins = sum(p.split(": ")[1].startswith("beats") for p in parts)
                lines.append(f"- `{method}` beats a baseline in {wins} of {len(parts)} (cell, baseline) pairs: "
                             + "; ".join(parts) + ".")
    ranks = []
    for domain, n in cells:
        present = [m for m in METHODS if (domain, n, m) in by and m != "naive"]
        if present:
            best = min(present, key=lambda m: by[(domain, n, m)]["nse_after_mean"])
            ranks.append((domain, n, best))
    if ranks:
        lines.append("- Lowest mean J_N after of all methods, per cell: " +
                     "; ".join(f"{d}/{n}: `{m}`" for d, n, m in ranks) + ".")
    if any(r["method"] == "best-response" for r in size):
        lost = [(d, n, m) for d, n, m in ranks if m != "best-response" and (d, n, "best-response") in by]
        total = sum((d, n, "best-response") in by for d, n, _ in ranks)
        lines.append(f"- `best-response` has the lowest mean J_N after in {total - len(lost)} of {total} cells"
                     + (": it loses " + "; ".join(
                         f"{d}/{n} to `{m}` ({by[(d, n, m)]['nse_after_mean']:.3g} vs "
                         f"{by[(d, n, 'best-response')]['nse_after_mean']:.3g}; "
                         f"{claim(m, 'best-response', (d, n)).split(': ', 1)[1]})" for d, n, m in lost)
                        if lost else "") + ".")
        beats = []
        for d, n in cells:
            if (d, n, "best-response") not in by:
                continue
            others = [m for m in MAIN_METHODS if m != "best-response" and (d, n, m) in by]
            tests = [paired_test(rows, "size", d, n, "best-response", m) for m in others]
            sig = [m for m, t in zip(others, tests) if t and t["p"] < alpha and t["mean_difference"] < 0]
            beats.append(f"{d}/{n}: {len(sig)} of {len(others)}")
        lines.append("- `best-response` significantly beats (p < 0.05) how many of the other main methods "
                     f"({', '.join(m for m in MAIN_METHODS if m != 'best-response')}), per cell: "
                     + "; ".join(beats) + ".")
    # generalisation
    gen = []
    for domain, n in cells:
        if all((domain, n, m) in by for m in RECON_METHODS):
            r, g, c = (by[(domain, n, m)]["nse_after_mean"] for m in RECON_METHODS)
            gen.append((domain, n, r, g, c))
    if gen:
        better_g = sum(g < r - 1e-9 for _, _, r, g, _ in gen)
        better_c = sum(c < r - 1e-9 for _, _, r, _, c in gen)
        cf_vs_g = [claim("gen-recon-cf", "gen-recon", (d, n)) for d, n, *_ in gen]
        lines.append(f"- Generalisation: `gen-recon` has a lower mean J_N than `recon` in {better_g}/{len(gen)} "
                     f"cells, `gen-recon-cf` in {better_c}/{len(gen)}. `gen-recon-cf` against `gen-recon`: "
                     + "; ".join(c for c in cf_vs_g if c) + ".")
    share = [r for r in rows if r["experiment"] == "size" and r["method"] == "recon"
             and math.isfinite(r["counterfactual_share"])]
    if share:
        lines.append("- Share of blamed (state, robot) pairs with a valid counterfactual (RECON's runs), mean per "
                     "domain: " + "; ".join(
                         f"{d} {100 * np.mean([r['counterfactual_share'] for r in share if r['domain'] == d]):.0f}%"
                         for d in DOMAINS if any(r["domain"] == d for r in share)) + ".")
    # never worse, within budget
    worse = [r for r in rows if r["nse_after"] > r["nse_before"] + 1e-9 * max(1.0, r["nse_before"])]
    over = [r for r in rows if math.isfinite(r["max_regret_over_slack"]) and r["max_regret_over_slack"] > 1 + 1e-6]
    lines += ["", "**Never worse, within budget.**",
              f"- {len(worse)} of {len(rows)} runs end with J_N above where they started"
              + (": " + ", ".join(f"`{r['method']}` {r['map']} {r['robots']}" for r in worse[:10]) if worse else "")
              + ".",
              f"- {len(over)} of {len(rows)} runs have a robot whose task regret from its start exceeds its budget"
              + (": " + ", ".join(f"`{r['method']}` {r['map']} {r['robots']}" for r in over[:10]) if over else "")
              + ".",
              f"- Replans refused by the acceptance step (they would have raised J_N or changed nothing): "
              f"{sum(r['rejected'] for r in rows)} of {sum(r['accepted'] + r['rejected'] for r in rows)}."]
    # fraction trend
    frac = summaries["fraction"]
    if frac:
        lines += ["", "**Percentage of robots updated, experiment (a).**"]
        for domain in DOMAINS:
            for method in ALL_METHODS:
                mine = sorted((r for r in frac if r["domain"] == domain and r["method"] == method),
                              key=lambda r: r["update_fraction"])
                if len(mine) < 2:
                    continue
                ys = [r["nse_after_mean"] for r in mine]
                rises = [f"{100 * mine[k + 1]['update_fraction']:g}%" for k in range(len(ys) - 1)
                         if ys[k + 1] > ys[k] + 1e-6 * max(1, ys[k])]
                change = 100 * (ys[-1] / ys[0] - 1) if ys[0] > 0 else 0.0
                text = (f"- {domain} `{method}`: J_N {ys[0]:.2f} at {100 * mine[0]['update_fraction']:g}% -> "
                        f"{ys[-1]:.2f} at {100 * mine[-1]['update_fraction']:g}% "
                        f"({abs(change):.0f}% {'higher' if change > 0 else 'lower'})")
                text += f"; not monotone: rises at {', '.join(rises)}" if rises else "; non-increasing"
                lines.append(text + ".")
    # run time
    if len({r["robots"] for r in size}) >= 2:
        lines += ["", "**Run time, experiment (c).** Log-log slope of mean total seconds (plan + mitigation) "
                  "against fleet size (1 = linear):"]
        for domain in DOMAINS:
            parts = []
            for method in ALL_METHODS:
                mine = sorted((r for r in size if r["domain"] == domain and r["method"] == method),
                              key=lambda r: r["robots"])
                if len(mine) >= 2:
                    parts.append(f"`{method}` "
                                 f"{_slope([r['robots'] for r in mine], [r['seconds_total_mean'] for r in mine]):.2f}")
            if parts:
                lines.append(f"- {domain}: " + ", ".join(parts) + ".")
    return lines


def _table(summary: list[dict], column_of, columns: Sequence, metric: str, domain_rows: bool = True,
           header: str = "method") -> list[str]:
    """Markdown tables of `metric` (mean ± 95% CI), one per domain: methods by `columns`."""
    out: list[str] = []
    by = {(r["domain"], column_of(r), r["method"]): r for r in summary}
    for domain in DOMAINS:
        if not any(r["domain"] == domain for r in summary):
            continue
        out += [f"### {domain}", "", f"| {header} | " + " | ".join(str(c) for c in columns) + " |",
                "|---|" + "---|" * len(columns)]
        for method in ALL_METHODS:
            if any((domain, c, method) in by for c in columns):
                out.append(f"| {method} | " + " | ".join(
                    _pm(by[(domain, c, method)], metric) if (domain, c, method) in by else "" for c in columns) + " |")
        out.append("")
    return out


def care_lines(rows: Sequence[dict], config: ExperimentConfig) -> list[str]:
    """Which care value the considerate rows use, and whether it is the sweep's best. A sweep extended
    with `--merge` can find a better value than the one the other experiments' rows were run at:
    then say so, and how J_N differs at the sweep's fleets between the two."""
    care = best_care(rows)
    values = sorted({r["care"] for r in rows if r["experiment"] == "care"})
    used: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["method"] == "considerate" and r["experiment"] != "care":
            used[r["domain"]].add(r["care"])
    text = ("The considerate reward's care coefficient is chosen per domain from the sweep "
            f"{[float(f'{c:g}') for c in values]} (lowest mean J_N after on {config.care_instances} instance(s) x "
            f"{config.seeds} seed(s), {config.fraction_size} robots, section \"care sweep\"): "
            + ", ".join(f"{d} {c:g}" for d, c in care.items()) + ".")
    stale = {d: sorted(used[d]) for d in care if used.get(d) and used[d] != {care[d]}}
    if not stale:
        return [text + " The considerate rows of every other experiment run at it."]
    lines = [text + " The considerate rows of the other experiments run at " + ", ".join(
        f"{d} {', '.join(f'{c:g}' for c in used[d])}" for d in care if used.get(d)) + ": "
        "they were computed before the sweep was extended, at the best care of the sweep then, and were not rerun."]
    for domain, olds in stale.items():
        for old in olds:
            a = {(r["instance"], r["seed"]): r["nse_after"] for r in rows
                 if r["experiment"] == "care" and r["domain"] == domain and r["care"] == old}
            b = {(r["instance"], r["seed"]): r["nse_after"] for r in rows
                 if r["experiment"] == "care" and r["domain"] == domain and r["care"] == care[domain]}
            common = sorted(set(a) & set(b))
            if not common:
                lines.append(f"- {domain}: care {old:g} is not in the sweep.")
                continue
            ma, mb = np.mean([a[k] for k in common]), np.mean([b[k] for k in common])
            wins = sum(b[k] < a[k] - CSV_TIE * max(1.0, a[k]) for k in common)
            losses = sum(b[k] > a[k] + CSV_TIE * max(1.0, a[k]) for k in common)
            lines.append(f"- {domain}: at the sweep's {len(common)} fleets of {config.fraction_size} robots "
                         f"(the same fleets and runs as the size experiment's {config.fraction_size}-robot "
                         f"cell), mean J_N after is {mb:.3f} at care {care[domain]:g} against {ma:.3f} at "
                         f"{old:g} ({mb - ma:+.3f}, {100 * (mb / ma - 1) if ma > 0 else 0.0:+.1f} %; lower in "
                         f"{wins}, higher in {losses} of {len(common)} fleets). Larger fleets, the frontier and "
                         f"the generated maps were not rerun at {care[domain]:g}.")
    return lines


def gap_lines(gap: Sequence[dict], config: ExperimentConfig, command: str | None = None) -> list[str]:
    """(d)'s table of how far each robot's budgeted LVI policy is from its exact constrained optimum."""
    gap = list(gap)
    robots_of = defaultdict(set)
    for g in gap:
        robots_of[g["domain"]].add((g["instance"], g["robot"]))
    instances = sorted({g["instance"] for g in gap})
    tol = lambda g: 1e-6 * max(1.0, abs(g["naive"]))  # noqa: E731  the LP's own tolerance is about 1e-7
    out = ["### One robot against the others' fixed naive policies: LVI against the exact constrained optimum", "",
           f"For the 3 largest contributors to J_N of each fleet of {config.frontier_size} naive robots (maps "
           f"<domain>-{instances[0]}..{instances[-1]}, seed 0; {len(gap)} (robot, budget) pairs): the expected "
           "discounted marginal penalty that the robot causes, against the others' fixed naive policies, under its "
           "naive policy, its budgeted LVI policy (what every method replans with), the budgeted Lagrangian "
           "policy (the scalarised planner best response may use instead), and the exact constrained optimum "
           "(`reference`, the occupancy-measure linear programme, stochastic policies allowed), which no policy "
           "within the budget can beat. Columns are means over the robots; the gap is LVI minus reference; "
           "'share' is how much of the reduction from naive to the reference a policy achieves "
           "(sum over the robots).", ""]
    if command:
        out += ["```", command, "```", ""]
    out += ["| domain | budget | robots | naive | budgeted LVI | Lagrangian | reference | gap: mean | gap: largest | "
            "LVI's share | Lagrangian's share |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups = defaultdict(list)
    for g in gap:
        groups[(g["domain"], g["budget"])].append(g)

    def share(items, key):
        possible = sum(g["naive"] - g["reference"] for g in items)
        if possible <= 1e-4 * max(1.0, sum(g["naive"] for g in items)):  # nothing to reduce but rounding
            return "n/a"
        return f"{100 * sum(g['naive'] - g[key] for g in items) / possible:.0f} %"

    def num(x):
        return f"{0.0 if abs(x) < 5e-4 else x:.3f}"

    for (domain, budget), items in sorted(groups.items(), key=lambda kv: (DOMAINS.index(kv[0][0]),
                                                                            _budget_order(kv[0][1]))):
        mean = {k: float(np.mean([g[k] for g in items])) for k in ("naive", "lvi", "lagrangian", "reference")}
        gaps = [g["lvi"] - g["reference"] for g in items]
        out.append(f"| {domain} | {budget} | {len(items)} | {mean['naive']:.3f} | {mean['lvi']:.3f} | "
                   f"{mean['lagrangian']:.3f} | {mean['reference']:.3f} | {num(np.mean(gaps))} | {num(max(gaps))} | "
                   f"{share(items, 'lvi')} | {share(items, 'lagrangian')} |")
    out.append("")
    gaps = [g["lvi"] - g["reference"] for g in gap]
    worst = max(gap, key=lambda g: g["lvi"] - g["reference"])
    below = [g for g in gap if g["lvi"] < g["reference"] - tol(g)]
    lag_below = [g for g in gap if g["lagrangian"] < g["reference"] - tol(g)]
    lower = min(g["lvi"] - g["reference"] for g in gap)
    lag_better = sum(g["lagrangian"] < g["lvi"] - tol(g) for g in gap)
    lvi_better = sum(g["lvi"] < g["lagrangian"] - tol(g) for g in gap)
    monotone = []
    for (domain, instance, robot) in {(g["domain"], g["instance"], g["robot"]) for g in gap}:
        mine = sorted((g for g in gap if (g["domain"], g["instance"], g["robot"]) == (domain, instance, robot)),
                      key=lambda g: _budget_order(g["budget"]))
        monotone.append(all(b["reference"] <= a["reference"] + tol(a) for a, b in zip(mine, mine[1:])))
    def named(items):
        return "; ".join(f"{g['domain']}-{g['instance']} robot {g['robot']} at {g['budget']}: LVI {g['lvi']:.6g}, "
                         f"Lagrangian {g['lagrangian']:.6g}, reference {g['reference']:.6g}" for g in items)

    out += [f"- LVI below the reference: {len(below)} of {len(gap)} pairs, by more than 1e-6 x max(1, naive) "
            f"(the smallest LVI - reference is {lower:.2g}); the Lagrangian policy {len(lag_below)} of {len(gap)}"
            + (f" ({named(sorted(below + [g for g in lag_below if g not in below], key=lambda g: g['lvi']))})"
               if below or lag_below else "") + ".",
            f"- The reference never rises with the budget for {sum(monotone)} of {len(monotone)} robots.",
            f"- Gap LVI - reference over all pairs: mean {np.mean(gaps):.3f}, largest {max(gaps):.3f} "
            f"({worst['domain']}-{worst['instance']}, robot {worst['robot']}, budget {worst['budget']}: LVI "
            f"{worst['lvi']:.3f}, reference {worst['reference']:.3f}, naive {worst['naive']:.3f}, Lagrangian "
            f"{worst['lagrangian']:.3f}).",
            f"- The Lagrangian policy is lower than LVI in {lag_better} pairs, LVI lower than the Lagrangian in "
            f"{lvi_better} (of {len(gap)}).", ""]
    return out


def markdown(config: ExperimentConfig, rows: list[dict], command: str | None = None,
             wall_seconds: float | None = None, notes: str = "", gap: Sequence[dict] = (),
             gap_command: str | None = None) -> str:
    """RESULTS.md; `notes` (hand-written Markdown, kept across regenerations) follows the comparison."""
    summaries = summarise(rows, config)
    care = best_care(rows)
    out = ["# Experiments: NSE mitigation (paper section V-B, and ours)", ""]
    if command:
        several = len(command.strip().splitlines()) > 1
        out += ["Commands (in order; each `--merge` added the runs the report lacked and rewrote it):" if several
                else "Command:", "", "```", command.strip(), "```", ""]
    cfg = asdict(config)
    cfg.pop("maps_dir")
    out += [f"Configuration: {', '.join(f'{k}={v}' for k, v in cfg.items())}.", "",
            f"Instances are maps `<domain>-1..{config.instances}.map`; seeds 0..{config.seeds - 1} generate the "
            "extra robots (starts and tasks) and seed the Monte Carlo rollouts. Numbers are mean ± the 95 % "
            "confidence half-width of the mean (Student t) over instances x seeds. J_N is the exact expected NSE "
            f"penalty per episode (docs/FORMULATION.md). Every robot's task budget is {config.slack} of its optimal "
            "expected task cost unless a table says otherwise; up to "
            f"{config.rounds} rounds per run (a run stops earlier when no replan is accepted). "
            f"{len(rows)} runs" + (f", {wall_seconds / 60:.1f} min wall time." if wall_seconds is not None else "."),
            ""]
    if care:
        out += care_lines(rows, config) + [""]
    out += ["Files: `results/runs.csv` (one row per run), `results/<experiment>_summary.csv` (`large_summary.csv`: "
            "the size rows of the large fleets), `results/lvi_gap.csv`, `results/fraction.png`, "
            "`results/nse_by_method.png`, `results/runtime.png`, `results/large.png`, `results/frontier.png`, "
            "`results/generated.png`.", ""]
    out += ["## Compared with the paper", ""] + comparison(rows, summaries, config) + [""]
    if notes.strip():
        out += [notes.strip(), ""]
    sweep = summaries["care"]
    if sweep:
        values = sorted({r["care"] for r in sweep})
        out += [f"## Considerate reward: care sweep ({config.fraction_size} robots, "
                f"{100 * config.update_fraction:g}% updated)", "",
                "J_N after mitigation by care coefficient (the worst state weighs as this many steps); the lowest "
                "mean per domain in bold.", "",
                "| domain | " + " | ".join(f"{c:g}" for c in values) + " |", "|---|" + "---|" * len(values)]
        for domain in DOMAINS:
            mine = {r["care"]: r for r in sweep if r["domain"] == domain}
            if mine:
                out.append(f"| {domain} | " + " | ".join(
                    "" if c not in mine else f"**{_pm(mine[c], 'nse_after')}**" if c == care.get(domain)
                    else _pm(mine[c], "nse_after") for c in values) + " |")
        out.append("")
    frac = summaries["fraction"]
    if frac:
        fractions = sorted({r["update_fraction"] for r in frac})
        out += [f"## (a) NSE penalty vs. percentage of robots updated ({config.fraction_size} robots)", "",
                "![fraction](results/fraction.png)", ""]
        out += _table(frac, lambda r: f"{100 * r['update_fraction']:g}%", [f"{100 * f:g}%" for f in fractions],
                      "nse_after")
    size = summaries["size"]
    if size:
        sizes = sorted({r["robots"] for r in size})
        out += [f"## (b) NSE penalty by method ({100 * config.update_fraction:g}% of robots updated)", "",
                "![nse by method](results/nse_by_method.png)", "",
                "J_N after mitigation; the `naive` row is J_N before. Fleets of "
                f"{', '.join(map(str, config.large_sizes))} robots run on {config.large_instances} instance(s) x "
                f"{config.large_seeds} seed(s) and the methods {', '.join(config.large_methods)}." if config.large_sizes
                else "J_N after mitigation; the `naive` row is J_N before.", ""]
        out += _table(size, lambda r: r["robots"], sizes, "nse_after")
        out += ["### Task regret from the start, as a share of the budget (largest robot per run)", ""]
        out += _table(size, lambda r: r["robots"], sizes, "max_regret_over_slack")
        out += ["## (c) Run time by method vs. fleet size", "", "![runtime](results/runtime.png)", "",
                "Total seconds = planning the fleet (shared by every method) + the method's mitigation.", ""]
        out += _table(size, lambda r: r["robots"], sizes, "seconds_total")
        largest = sizes[-1]
        by = {(r["domain"], r["robots"], r["method"]): r for r in size}
        out += [f"### Seconds per phase, {largest} robots (mean)", ""]
        big = large_rows(rows, config)
        if big and big[0]["robots"] == largest:
            n_fleets = len({(r["domain"], r["source"], r["instance"], r["seed"]) for r in big})
            out += ["![large](results/large.png)", "",
                    f"{n_fleets} fleets of {largest} robots ({config.large_instances} instance(s) x "
                    f"{config.large_seeds} seed(s) per domain): every run is a point; the whiskers are the range "
                    "over the runs (with so few runs a 95 % interval says little).", ""]
        out += [
                "| domain | method | J_N before | J_N after | " + " | ".join(PHASES) + " | total |",
                "|---|---|---|---|" + "---|" * (len(PHASES) + 1)]
        for domain in DOMAINS:
            for method in ALL_METHODS:
                r = by.get((domain, largest, method))
                if r:
                    out.append(f"| {domain} | {method} | {r['nse_before_mean']:.1f} | {r['nse_after_mean']:.1f} | "
                               + " | ".join(f"{r[f'seconds_{p}_mean']:.2f}" for p in PHASES)
                               + f" | {r['seconds_total_mean']:.2f} |")
        out.append("")
    front = summaries["frontier"]
    if front:
        budgets = sorted({r["budget"] for r in front}, key=_budget_order)
        out += [f"## (d) Trade-off frontier: NSE penalty vs. task budget ({config.frontier_size} robots)", "",
                "![frontier](results/frontier.png)", "",
                "`constrained-reference` is exact best response in which every robot plays its exact constrained "
                "optimum (the occupancy-measure linear programme, stochastic policies): a reference, not a "
                "deployable method.", ""]
        out += _table(front, lambda r: r["budget"], budgets, "nse_after", header="method \\ budget")
    if gap:
        out += gap_lines(gap, config, gap_command)
    if size:
        out += ["## (e) Paired tests", "",
                "One-sided Wilcoxon signed-rank test, over the paired instances x seeds of experiment (b), that the "
                "row method has a lower J_N after than the column method; each cell is `wins-losses (p)`.", ""]
        for domain, n in _cells(size):
            methods = [m for m in MAIN_METHODS if any(r["method"] == m and r["domain"] == domain and r["robots"] == n
                                                       for r in size)]
            if len(methods) < 2:
                continue
            out += [f"**{domain}, {n} robots.**", "", "| method | " + " | ".join(methods) + " |",
                    "|---|" + "---|" * len(methods)]
            for m in methods:
                cells = []
                for o in methods:
                    t = paired_test(rows, "size", domain, n, m, o) if m != o else None
                    cells.append("" if t is None else f"{t['wins']}-{t['losses']} ({_p(t['p'])})")
                out.append(f"| {m} | " + " | ".join(cells) + " |")
            out.append("")
    generated = summaries["generated"]
    if generated:
        gsizes = sorted({r["robots"] for r in generated})
        out += [f"## (f) Random maps of `mase generate` ({config.generated_maps} maps per domain, seeds "
                f"0..{config.generated_maps - 1}, default sizes)", "", "![generated](results/generated.png)", ""]
        out += _table(generated, lambda r: r["robots"], gsizes, "nse_after")
    return "\n".join(out)


def gap_command(config: ExperimentConfig, out_dir: str | Path) -> str:
    """The `mase experiment` command that recomputes `lvi_gap_rows(config)` into an existing report."""
    import shlex

    default = ExperimentConfig()
    if (config.frontier_size, config.frontier_budgets) != (default.frontier_size, default.frontier_budgets):
        return "lvi_gap_rows(config) (metareasoner/experiments.py): its frontier size and budgets have no option"
    return " ".join(shlex.quote(a) for a in [
        "mase", "experiment", "--out", str(out_dir), "--instances", str(config.instances),
        *(["--domains", *config.domains] if config.domains != DOMAINS else []), "--merge", "--only", LVI_GAP])


def write_results(config: ExperimentConfig, rows: list[dict], out_dir: str | Path, command: str | None = None,
                  wall_seconds: float | None = None, gap: Sequence[dict] = ()) -> dict[str, Path]:
    """Write `<out>/RESULTS.md` and `<out>/results/*.csv|png`; returns the written paths.

    Hand-written notes in `<out>/results/notes.md` (investigations, other experiments) are
    included in RESULTS.md, so regenerating the tables never loses them."""
    out_dir = Path(out_dir)
    res = out_dir / "results"
    res.mkdir(parents=True, exist_ok=True)
    summaries = summarise(rows, config)
    paths = {"runs": res / "runs.csv", "markdown": out_dir / "RESULTS.md", "lvi_gap": res / "lvi_gap.csv"}
    _write_csv(paths["runs"], rows, ROW_COLUMNS)
    for e in EXPERIMENTS:
        paths[f"{e}_summary"] = res / f"{e}_summary.csv"
        _write_csv(paths[f"{e}_summary"], summaries[e])
    _write_csv(paths["lvi_gap"], list(gap), GAP_COLUMNS)
    big = large_rows(rows, config)
    if big:
        paths["large_png"] = res / "large.png"
        plot_large(big, paths["large_png"])
    plots = {"fraction_png": ("fraction", lambda s, p: plot_fraction(s, p), "fraction.png"),
             "size_png": ("size", lambda s, p: plot_size(s, p, config.update_fraction), "nse_by_method.png"),
             "runtime_png": ("size", lambda s, p: plot_runtime(s, p), "runtime.png"),
             "frontier_png": ("frontier", lambda s, p: plot_frontier(s, p), "frontier.png"),
             "generated_png": ("generated", lambda s, p: plot_size(s, p, config.update_fraction), "generated.png")}
    for key, (experiment, plot, name) in plots.items():
        if summaries[experiment]:
            paths[key] = res / name
            plot(summaries[experiment], paths[key])
    notes = res / "notes.md"
    paths["markdown"].write_text(markdown(config, rows, command, wall_seconds,
                                          notes.read_text() if notes.exists() else "", gap,
                                          gap_command(config, out_dir) if gap else None))
    return paths


def read_rows(path: str | Path) -> list[dict]:
    """Rows written to `runs.csv` by `write_results`, with their types restored."""
    ints = {"instance", "seed", "robots", "n_updated", "rounds", "accepted", "rejected"}
    strings = {"experiment", "domain", "source", "map", "method", "budget"}
    with Path(path).open() as fh:
        return [{k: (v if k in strings else int(v) if k in ints else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def read_gap(path: str | Path) -> list[dict]:
    """Rows written to `lvi_gap.csv` by `write_results` (none if the file is missing)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as fh:
        return [{k: (v if k in ("domain", "robot", "budget") else int(v) if k == "instance" else float(v))
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def previous_command(markdown_path: str | Path) -> str | None:
    """The command block at the top of a RESULTS.md written by `markdown`, or None."""
    path = Path(markdown_path)
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines[:12]):
        if line.startswith(("Command:", "Commands (")) and k + 2 < len(lines) and lines[k + 2] == "```":
            end = lines.index("```", k + 3) if "```" in lines[k + 3:] else None
            return "\n".join(lines[k + 3:end]) if end is not None else None
    return None


def run_and_write(config: ExperimentConfig, out_dir: str | Path, jobs: int = 1, command: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict[str, Path]]:
    start = time.perf_counter()
    rows = run_experiments(config, jobs=jobs, progress=progress)
    gap = lvi_gap_rows(config) if "frontier" in config.experiments else []
    return rows, write_results(config, rows, out_dir, command, time.perf_counter() - start, gap)


def merge_and_write(config: ExperimentConfig, out_dir: str | Path, jobs: int = 1, command: str | None = None,
                    progress: Callable[[int, int], None] | None = None, only: Iterable[str] | None = None
                    ) -> tuple[list[dict], dict[str, Path]]:
    """Add to the report in `out_dir`: run only the runs of `config` (of the experiments `only`, all
    if None) that `<out>/results/runs.csv` lacks, keep its rows, and rewrite the report from all of
    them. ``"lvi-gap"`` in `only` (or `only` None) recomputes `lvi_gap.csv`; otherwise it is kept.
    The report's command block keeps the earlier commands and adds `command`. Returns the new rows."""
    out_dir = Path(out_dir)
    res = out_dir / "results"
    only = PARTS if only is None else tuple(only)
    for part in only:
        if part not in PARTS:
            raise ValueError(f"unknown experiment {part!r}; experiments: {', '.join(PARTS)}")
    old = read_rows(res / "runs.csv") if (res / "runs.csv").exists() else []
    new = run_experiments(config, jobs=jobs, progress=progress,
                          only=[e for e in only if e in config.experiments], existing=old)
    # as runs.csv keeps them, so the report of the merged rows is the report of runs.csv read back
    new = [{k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in r.items()} for r in new]
    gap = lvi_gap_rows(config) if LVI_GAP in only else read_gap(res / "lvi_gap.csv")
    commands = "\n".join(c for c in (previous_command(out_dir / "RESULTS.md"), command) if c) or None
    return new, write_results(config, sort_rows(old + new), out_dir, commands, None, gap)
