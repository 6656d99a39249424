"""The RECON authors' experimental protocol, run with our methods on their grids.

Their code (RECON-NSE-Mitigation) runs two experiments on its five test grids per domain:

  (a) ``size`` (effect_of_generalization.py): fleets of 10, 20, 50, 75 and 100 robots, half
      of them corrected (the ceil(n/2) most blamed replan), tasks from their goal_deposit
      table: naive, RECON, generalised RECON without and with counterfactual data,
      difference reward, considerate reward;
  (b) ``fraction`` (varying_corrected_agent.py): 25 robots (goal_deposit (10, 15)), 10, 20,
      50, 75 and 100 % of them corrected: RECON, generalised RECON with counterfactual
      data, difference reward, considerate reward (and naive as the baseline).

Here each fleet is read with their task semantics (`planner.recon_grid`, semantics "recon"),
planned once (`Fleet.plan`), and every method runs on it through `Mitigation(...).run(fleet)`;
only the public library API is used. The reported penalty is ours: the exact expected `J_N`
over the stochastic dynamics (theirs is the NSE summed along one most-likely joint path).

    mase experiment --suite recon-reference --grids PATH [--out results] [--jobs N]

PATH is a checkout of their repository (or its `grids/` folder).
"""
from __future__ import annotations

import csv
import math
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from planner.recon_grid import DOMAINS, goal_deposit, read_recon_grid
from planner.scenario import generate_scenario

from .mitigation import METHODS, Fleet, Mitigation

SIZE_METHODS = ("naive", "recon", "gen-recon", "gen-recon-cf", "difference-reward", "considerate")
FRACTION_METHODS = ("naive", "recon", "gen-recon-cf", "difference-reward", "considerate")
COLUMNS = ("experiment", "domain", "grid", "robots", "goal_deposit", "method", "update_fraction", "nse_before",
           "nse_after", "nse_reduction", "nse_state_rate_before", "nse_state_rate_after", "n_updated",
           "mean_task_regret", "max_task_regret", "seconds_plan", "seconds_mitigation")
EVALUATION_NOTE = (
    "How this differs from their evaluation: their scripts follow one most-likely joint path (every robot takes "
    "its most likely outcome at every step, so no robot ever slips) until every robot is done, and add up the NSE "
    "penalty along it; here `J_N` is the exact expected penalty over the stochastic dynamics (every slip "
    "weighted by its probability) up to the horizon, from each robot's forward state distribution "
    "(Poisson-binomial counts per zone and step). Their penalty is `w log(n + 1)` per coral cell (salp, with "
    "the weight of the last robot listed on the cell), per shelf value over the whole corridor (warehouse) and per "
    "held value over all wastebin cells (Overcooked), counted from n = 1; ours is `w log(1 + k (n - 1))` from "
    "n = 2 over the same zones (k = 2). The blame, the replanning (LVI within the task slack or budget) and the "
    "regressor of generalised RECON are ours too (docs/FORMULATION.md). Numbers are therefore comparable "
    "between methods here, and in direction with the paper, not equal to theirs; `maps/README.md` lists every "
    "difference of the grids' task semantics.")


@dataclass(frozen=True)
class ReconReferenceConfig:
    """What to run. `grids`: a checkout of their repository, or its grids/ folder."""

    grids: str
    domains: tuple[str, ...] = DOMAINS
    instances: tuple[int, ...] = (0, 1, 2, 3, 4)  # test_grid<k>.txt
    sizes: tuple[int, ...] = (10, 20, 50, 75, 100)
    size_fraction: float = 0.5
    size_methods: tuple[str, ...] = SIZE_METHODS
    fraction_size: int = 25
    fractions: tuple[float, ...] = (0.10, 0.20, 0.50, 0.75, 1.00)
    fraction_methods: tuple[str, ...] = FRACTION_METHODS
    # each robot's task slack or budget as `generate_scenario` takes it; None: the scenario's default
    slack: "float | str | None" = None
    episodes: int = 100
    rounds: int = 1  # they correct once, after the naive policies' evaluation
    seed: int = 0

    @classmethod
    def quick(cls, grids: str, **overrides) -> "ReconReferenceConfig":
        """A tiny configuration for tests: one grid per domain, fleets of 4 robots."""
        params = dict(instances=(0,), sizes=(4,), fraction_size=4, fractions=(0.5, 1.0), episodes=20)
        params.update(overrides)
        return cls(grids, **params)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(bool(self.domains) and all(d in DOMAINS for d in self.domains),
             f"domains must be some of {', '.join(DOMAINS)}, got {self.domains}")
        need(bool(self.instances) and all(isinstance(k, int) and k >= 0 for k in self.instances),
             f"instances are test grid numbers >= 0, got {self.instances}")
        for n in (*self.sizes, self.fraction_size):
            need(isinstance(n, int) and n >= 1, f"fleet sizes must be integers >= 1, got {n!r}")
        for f in (*self.fractions, self.size_fraction):
            need(0.0 <= f <= 1.0, f"fractions must be in [0, 1], got {f}")
        for m in (*self.size_methods, *self.fraction_methods):
            need(m in METHODS, f"unknown method {m!r}; methods: {', '.join(METHODS)}")
        need(self.episodes >= 2, f"episodes must be at least 2, got {self.episodes}")
        need(self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}")
        # a number is checked here; any other form (a budget such as "10%") by generate_scenario
        need(not isinstance(self.slack, (int, float)) or (math.isfinite(self.slack) and self.slack >= 0),
             f"slack must be finite and >= 0, got {self.slack}")
        for domain in self.domains:
            for k in self.instances:
                path = self.grid_path(domain, k)
                need(path.is_file(), f"no grid {path}: --grids must be a checkout of RECON-NSE-Mitigation "
                                     "(with grids/<domain>/test_grid<k>.txt) or its grids/ folder")

    @property
    def grids_dir(self) -> Path:
        root = Path(self.grids)
        return root / "grids" if (root / "grids").is_dir() else root

    def grid_path(self, domain: str, instance: int) -> Path:
        return self.grids_dir / domain / f"test_grid{instance}.txt"

    def units(self) -> list[tuple[str, int, int, tuple[tuple[str, str, float], ...]]]:
        """(domain, grid, robots, runs): one planned fleet each, with the (experiment, method,
        fraction) runs it serves; biggest fleets first."""
        out = []
        for n in sorted(set(self.sizes) | {self.fraction_size}, reverse=True):
            runs = []
            if n in self.sizes:
                runs += [("size", m, self.size_fraction) for m in self.size_methods]
            if n == self.fraction_size:
                runs += [("fraction", m, f) for m in self.fraction_methods for f in self.fractions]
            for domain in self.domains:
                for k in self.instances:
                    out.append((domain, k, n, tuple(runs)))
        return out

    def n_runs(self) -> int:
        return sum(len(u[3]) for u in self.units())


def run_unit(config: ReconReferenceConfig, unit) -> list[dict]:
    """Plan one of their fleets and run every method and fraction on it (naive once)."""
    domain, k, n, runs = unit
    world = read_recon_grid(config.grid_path(domain, k), domain=domain, semantics="recon", robots=n)
    options = {} if config.slack is None else {"slack": config.slack}
    fleet = Fleet.plan(generate_scenario(world, n, seed=config.seed, **options), backend="serial")
    rows, done = [], {}
    for experiment, method, fraction in runs:
        key = (method, 0.0 if method == "naive" else float(fraction))
        if key not in done:
            start = time.perf_counter()
            result = Mitigation(method=method, update_fraction=key[1], rounds=config.rounds, episodes=config.episodes,
                                seed=config.seed, backend="serial").run(fleet).as_dict()
            done[key] = _metrics(result, time.perf_counter() - start, fleet.plan_seconds)
        rows.append({"experiment": experiment, "domain": domain, "grid": k, "robots": n,
                     "goal_deposit": "{}/{}".format(*goal_deposit(n)), "method": method,
                     "update_fraction": float(fraction), **done[key]})
    return rows


def _metrics(result: dict, seconds: float, plan_seconds: float) -> dict:
    before, after = float(result["nse_before"]), float(result["nse_after"])
    regrets = np.array([r["task_regret"] for r in result["robots"]], dtype=float)
    nan = float("nan")
    return {
        "nse_before": before, "nse_after": after,
        "nse_reduction": (before - after) / before if before > 0 else 0.0,
        "nse_state_rate_before": nan if result["nse_state_rate_before"] is None else result["nse_state_rate_before"],
        "nse_state_rate_after": nan if result["nse_state_rate_after"] is None else result["nse_state_rate_after"],
        "n_updated": len(result["updated"]),
        "mean_task_regret": float(regrets.mean()) if len(regrets) else 0.0,
        "max_task_regret": float(regrets.max()) if len(regrets) else 0.0,
        "seconds_plan": float(plan_seconds), "seconds_mitigation": float(seconds),
    }


def run_reference(config: ReconReferenceConfig, jobs: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Every run of `config`; `progress(runs_done, runs_total)` after each planned fleet."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    units, total, done, rows = config.units(), config.n_runs(), 0, []
    if jobs == 1:
        for unit in units:
            rows += run_unit(config, unit)
            done += len(unit[3])
            if progress is not None:
                progress(done, total)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_unit, config, unit): unit for unit in units}
            for future in as_completed(futures):
                rows += future.result()
                done += len(futures[future][3])
                if progress is not None:
                    progress(done, total)
    order = {u[:3]: i for i, u in enumerate(units)}
    return sorted(rows, key=lambda r: (r["experiment"], order[(r["domain"], r["grid"], r["robots"])]))


def summarise(rows: list[dict], experiment: str) -> list[dict]:
    """Mean and sample standard deviation of J_N after over the grids, per cell."""
    key = "robots" if experiment == "size" else "update_fraction"
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["experiment"] == experiment:
            groups.setdefault((r["domain"], r["method"], r[key]), []).append(r)
    out = []
    for (domain, method, x), group in groups.items():
        after = np.array([r["nse_after"] for r in group])
        before = np.array([r["nse_before"] for r in group])
        out.append({"domain": domain, "method": method, key: x, "grids": len(group),
                    "nse_before": float(before.mean()), "nse_after": float(after.mean()),
                    "nse_after_std": float(after.std(ddof=1)) if len(group) > 1 else 0.0,
                    "nse_reduction": float(np.mean([r["nse_reduction"] for r in group])),
                    "mean_task_regret": float(np.mean([r["mean_task_regret"] for r in group])),
                    "seconds_mitigation": float(np.mean([r["seconds_mitigation"] for r in group]))})
    return out


def markdown(config: ReconReferenceConfig, rows: list[dict], command: str | None = None,
             wall_seconds: float | None = None) -> str:
    grids = ", ".join(f"test_grid{k}" for k in config.instances)
    lines = ["# The RECON authors' protocol with our methods", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    slack = "the scenario's default task budget" if config.slack is None else f"task slack (budget) {config.slack}"
    rounds = "one mitigation round" if config.rounds == 1 else f"up to {config.rounds} mitigation rounds"
    lines += [
        f"Their grids ({grids} per domain, read with their task semantics: `planner/recon_grid.py`, "
        f"`maps/README.md`), their fleets and fractions; {rounds}, {config.episodes} Monte Carlo episodes "
        f"blamed, seed {config.seed}, {slack}. Each cell is the mean ± sample standard deviation over the grids of "
        "the exact expected NSE penalty `J_N` after mitigation (naive: the penalty of the task-optimal policies)."
        + (f" {len(rows)} runs, {wall_seconds / 60:.1f} min." if wall_seconds is not None else ""), "",
        EVALUATION_NOTE, ""]
    size = summarise(rows, "size")
    if size:
        lines += [f"## (a) J_N by fleet size, {100 * config.size_fraction:g} % of the robots corrected", ""]
        lines += _table(size, "robots", sorted({r["robots"] for r in size}), config.size_methods,
                        lambda n: f"{n} robots ({'/'.join(map(str, goal_deposit(n)))})")
    frac = summarise(rows, "fraction")
    if frac:
        lines += [f"## (b) J_N by percentage of robots corrected, {config.fraction_size} robots "
                  f"({'/'.join(map(str, goal_deposit(config.fraction_size)))})", ""]
        lines += _table(frac, "update_fraction", sorted({r["update_fraction"] for r in frac}),
                        config.fraction_methods, lambda f: f"{100 * f:g} %")
    return "\n".join(lines) + "\n"


def _table(summary: list[dict], key: str, xs: list, methods, label) -> list[str]:
    lines = []
    for domain in dict.fromkeys(r["domain"] for r in summary):
        cells = {(r["method"], r[key]): r for r in summary if r["domain"] == domain}
        lines += [f"### {domain}", "", "| method | " + " | ".join(label(x) for x in xs) + " |",
                  "|---|" + "---:|" * len(xs)]
        for method in methods:
            row = [cells.get((method, x)) for x in xs]
            lines.append(f"| {method} | " + " | ".join(
                "" if r is None else f"{r['nse_after']:.2f} ± {r['nse_after_std']:.2f}" for r in row) + " |")
        lines.append("")
    return lines


def write_reference(config: ReconReferenceConfig, rows: list[dict], out_dir: str | Path, command: str | None = None,
                    wall_seconds: float | None = None) -> dict[str, Path]:
    """`<out>/RECON_REFERENCE.md` and `<out>/recon_reference/{runs,size_summary,fraction_summary}.csv`."""
    out_dir = Path(out_dir)
    folder = out_dir / "recon_reference"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "RECON_REFERENCE.md", "runs": folder / "runs.csv",
             "size_summary": folder / "size_summary.csv", "fraction_summary": folder / "fraction_summary.csv"}
    _write_csv(paths["runs"], rows, COLUMNS)
    _write_csv(paths["size_summary"], summarise(rows, "size"))
    _write_csv(paths["fraction_summary"], summarise(rows, "fraction"))
    paths["markdown"].write_text(markdown(config, rows, command, wall_seconds))
    (folder / "config.txt").write_text("".join(f"{k} = {v}\n" for k, v in asdict(config).items()))
    return paths


def _write_csv(path: Path, rows: list[dict], columns=None) -> None:
    # (metareasoner.experiments has its own; that module is the paper suite's, kept apart)
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def run_and_write(config: ReconReferenceConfig, out_dir: str | Path, jobs: int = 1, command: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict[str, Path]]:
    start = time.perf_counter()
    rows = run_reference(config, jobs=jobs, progress=progress)
    return rows, write_reference(config, rows, out_dir, command, time.perf_counter() - start)
