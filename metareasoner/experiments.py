"""The paper's simulation experiments (section V-B), as a library.

Three experiments, each aggregated (mean and standard deviation) over map instances x seeds:

  (a) ``fraction``: exact NSE penalty J_N after mitigation against the percentage of robots that
      replan (RECON, generalised RECON without and with counterfactual data; paper Fig. 4);
  (b) ``size``: J_N after mitigation by method for several fleet sizes at one update fraction
      (paper Fig. 5);
  (c) ``runtime``: wall time (total and per phase) by method against fleet size, from (b)'s runs
      (paper Table II).

Every fleet is planned once (`Fleet.plan`) and every method runs on that same fleet. A unit of
work is one (domain, instance, seed, fleet size); units run in a process pool when ``jobs > 1``.
`run_experiments` returns rows (dicts); `write_results` writes CSV, PNG and Markdown.
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

from planner.maps import load_map
from planner.scenario import generate_scenario

from .mitigation import METHODS, PHASES, Fleet, Mitigation

DOMAINS = ("salp", "overcooked", "warehouse")
MAPS_DIR = Path(__file__).resolve().parent.parent / "maps"
N_INSTANCES = 5  # maps/<domain>/<domain>-1..5.map
RECON_METHODS = ("recon", "gen-recon", "gen-recon-cf")
PAPER_BASELINES = ("naive", "difference-reward", "considerate")
# Every method, the exchange values (from the model and from logs) included: the 783 s exchange-value
# probe of an earlier run was a solver bug (fixed); both now take about as long as RECON.
DEFAULT_METHODS = METHODS
EXCHANGE_METHODS = ("exchange", "exchange-logs")  # they compare robots: fleets of at least 2

ROW_COLUMNS = (
    "experiment", "domain", "instance", "map", "seed", "robots", "method", "update_fraction",
    "nse_before", "nse_after", "nse_reduction", "nse_state_rate_before", "nse_state_rate_after",
    "n_updated", "rounds", "mean_task_regret", "max_task_regret", "max_regret_over_slack",
    "seconds_total", "seconds_mitigation",
) + tuple(f"seconds_{p}" for p in PHASES)


@dataclass(frozen=True)
class ExperimentConfig:
    """What to run. `instances` and `seeds` are counts: maps <domain>-1..instances, seeds 0..seeds-1."""

    domains: tuple[str, ...] = DOMAINS
    instances: int = N_INSTANCES
    seeds: int = 2
    sizes: tuple[int, ...] = (10, 25, 50, 100)  # fleet sizes of experiments (b) and (c)
    fraction_size: int = 10  # fleet size of experiment (a)
    fractions: tuple[float, ...] = (0.0, 0.10, 0.25, 0.50, 0.75, 1.0)
    fraction_methods: tuple[str, ...] = RECON_METHODS
    methods: tuple[str, ...] = DEFAULT_METHODS
    update_fraction: float = 0.25  # experiment (b)'s fraction
    slack: float = 100.0
    episodes: int = 100
    rounds: int = 1
    maps_dir: str = str(MAPS_DIR)

    @classmethod
    def quick(cls, **overrides) -> "ExperimentConfig":
        """A tiny configuration for tests: 1 instance, 1 seed, fleets of 4 and 6 robots."""
        params = dict(instances=1, seeds=1, sizes=(4, 6), fraction_size=4, fractions=(0.0, 0.5, 1.0),
                      episodes=20)
        params.update(overrides)
        return cls(**params)

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(len(self.domains) > 0, "at least one domain is needed")
        for d in self.domains:
            need(d in DOMAINS, f"unknown domain {d!r}; domains: {', '.join(DOMAINS)}")
        need(1 <= self.instances <= N_INSTANCES, f"instances must be in 1..{N_INSTANCES}, got {self.instances}")
        need(self.seeds >= 1, f"seeds must be at least 1, got {self.seeds}")
        need(len(self.sizes) > 0, "at least one fleet size is needed")
        for n in (*self.sizes, self.fraction_size):
            need(isinstance(n, int) and n >= 1, f"fleet sizes must be integers >= 1, got {n!r}")
        for f in (*self.fractions, self.update_fraction):
            need(0.0 <= f <= 1.0, f"update fractions must be in [0, 1], got {f}")
        for m in (*self.methods, *self.fraction_methods):
            need(m in METHODS, f"unknown method {m!r}; methods: {', '.join(METHODS)}")
        for m in EXCHANGE_METHODS:
            if m in self.methods:
                need(min(self.sizes) >= 2, f"the {m} method needs fleets of at least 2 robots")
        need(math.isfinite(self.slack) and self.slack >= 0, f"slack must be finite and >= 0, got {self.slack}")
        need(self.episodes >= 2, f"episodes must be at least 2, got {self.episodes}")
        need(self.rounds >= 1, f"rounds must be at least 1, got {self.rounds}")

    def map_path(self, domain: str, instance: int) -> Path:
        return Path(self.maps_dir) / domain / f"{domain}-{instance}.map"

    def units(self) -> list["Unit"]:
        """One unit per planned fleet, listing the (experiment, method, fraction) runs it serves."""
        out = []
        for domain in self.domains:
            for instance in range(1, self.instances + 1):
                for seed in range(self.seeds):
                    for n in sorted(set(self.sizes) | {self.fraction_size}):
                        runs = []
                        if n == self.fraction_size:
                            runs += [("fraction", m, f) for m in self.fraction_methods for f in self.fractions]
                        if n in self.sizes:
                            runs += [("size", m, self.update_fraction) for m in self.methods]
                        out.append(Unit(domain, instance, seed, n, tuple(runs)))
        return out

    def n_runs(self) -> int:
        return sum(len(u.runs) for u in self.units())


@dataclass(frozen=True)
class Unit:
    domain: str
    instance: int
    seed: int
    robots: int
    runs: tuple[tuple[str, str, float], ...]


def run_unit(config: ExperimentConfig, unit: Unit, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Plan one fleet and run every requested (method, fraction) on it; identical runs are shared."""
    world = load_map(config.map_path(unit.domain, unit.instance))
    scenario = generate_scenario(world, unit.robots, seed=unit.seed, slack=config.slack)
    fleet = Fleet.plan(scenario)
    done: dict[tuple[str, float], dict] = {}
    rows = []
    for experiment, method, fraction in unit.runs:
        key = (method, float(fraction))
        if key not in done:
            mitigation = Mitigation(method=method, update_fraction=fraction, rounds=config.rounds,
                                    episodes=config.episodes, seed=unit.seed)
            done[key] = _metrics(mitigation.run(fleet), config.slack)
        rows.append({"experiment": experiment, "domain": unit.domain, "instance": unit.instance,
                     "map": world.name, "seed": unit.seed, "robots": unit.robots, "method": method,
                     "update_fraction": float(fraction), **done[key]})
        if progress is not None:
            progress(1)
    return rows


def _metrics(result, slack: float) -> dict:
    regrets = np.array([r.task_regret for r in result.robots])
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
        "rounds": result.rounds,
        "mean_task_regret": float(regrets.mean()) if len(regrets) else 0.0,
        "max_task_regret": float(regrets.max()) if len(regrets) else 0.0,
        "max_regret_over_slack": float(regrets.max() / slack) if slack > 0 and len(regrets) else nan,
        "seconds_total": float(sum(result.seconds.values())),
        "seconds_mitigation": float(mitigation_seconds),
        **seconds,
    }


def run_experiments(config: ExperimentConfig, jobs: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run every unit of `config`; `progress(runs_done, runs_total)` after each run (or unit, in a pool)."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    units = config.units()
    total = sum(len(u.runs) for u in units)
    count = [0]

    def advance(k: int) -> None:
        count[0] += k
        if progress is not None:
            progress(count[0], total)

    rows: list[dict] = []
    if jobs == 1:
        for unit in units:
            rows += run_unit(config, unit, advance)
    else:
        # biggest fleets first so that the pool's tail is short
        order = sorted(units, key=lambda u: -u.robots * len(u.runs))
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_unit, config, u): u for u in order}
            for future in as_completed(futures):
                rows += future.result()
                advance(len(futures[future].runs))
    key = lambda r: (r["experiment"], DOMAINS.index(r["domain"]), r["robots"], r["instance"], r["seed"],  # noqa: E731
                     METHODS.index(r["method"]), r["update_fraction"])
    return sorted(rows, key=key)


# -- aggregation ---------------------------------------------------------------------------------
SUMMARY_VALUES = ("nse_before", "nse_after", "nse_reduction", "nse_state_rate_after", "n_updated",
                  "max_task_regret", "seconds_total", "seconds_mitigation") + tuple(f"seconds_{p}" for p in PHASES)


def aggregate(rows: Iterable[dict], experiment: str) -> list[dict]:
    """Mean and sample standard deviation over instances x seeds per (domain, robots, method, fraction)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["experiment"] == experiment:
            groups[(r["domain"], r["robots"], r["method"], r["update_fraction"])].append(r)
    out = []
    for (domain, robots, method, fraction), group in groups.items():
        row = {"domain": domain, "robots": robots, "method": method, "update_fraction": fraction, "n": len(group)}
        for name in SUMMARY_VALUES:
            values = np.array([g[name] for g in group], float)
            values = values[np.isfinite(values)]
            row[f"{name}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append(row)
    return sorted(out, key=lambda r: (DOMAINS.index(r["domain"]), r["robots"], METHODS.index(r["method"]),
                                      r["update_fraction"]))


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


def _panels(plt, domains: Sequence[str]):
    fig, axes = plt.subplots(1, len(domains), figsize=(4.6 * len(domains), 3.8), squeeze=False)
    return fig, list(axes[0])


def plot_fraction(summary: list[dict], path: Path) -> None:
    plt = _pyplot()
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in summary)]
    fig, axes = _panels(plt, domains)
    for ax, domain in zip(axes, domains):
        rows = [r for r in summary if r["domain"] == domain]
        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["update_fraction"])
            if not mine:
                continue
            x = [100 * r["update_fraction"] for r in mine]
            y = np.array([r["nse_after_mean"] for r in mine])
            s = np.array([r["nse_after_std"] for r in mine])
            k = METHODS.index(method)  # distinct line styles: identical curves stay visible
            line, = ax.plot(x, y, marker="os^vD<>px*h"[k % 11], linestyle=("-", "--", ":", "-.")[k % 4], label=method,
                            markersize=6 - (k % 3))
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)
        ax.set_title(f"{domain} ({rows[0]['robots']} robots)" if rows else domain)
        ax.set_xlabel("robots updated (%)")
        ax.set_ylabel("NSE penalty J_N after")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("(a) NSE penalty vs. percentage of robots updated (mean ± std)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_size(summary: list[dict], path: Path, update_fraction: float) -> None:
    plt = _pyplot()
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in summary)]
    fig, axes = _panels(plt, domains)
    fig.set_size_inches(5.6 * len(domains), 4.4)
    methods = [m for m in METHODS if any(r["method"] == m for r in summary)]
    cmap = plt.get_cmap("tab10")
    for ax, domain in zip(axes, domains):
        rows = [r for r in summary if r["domain"] == domain]
        sizes = sorted({r["robots"] for r in rows})
        width = 0.8 / len(methods)
        for k, method in enumerate(methods):
            by = {r["robots"]: r for r in rows if r["method"] == method}
            x = np.arange(len(sizes)) + (k - (len(methods) - 1) / 2) * width
            # J_N after relative to the naive policy's J_N, so fleets of every size share one scale
            y = [by[n]["nse_after_mean"] / max(by[n]["nse_before_mean"], 1e-12) if n in by else np.nan for n in sizes]
            ax.bar(x, y, width, label=method, color=cmap(k % 10), hatch="//" if k >= 10 else None)
        ax.set_xticks(np.arange(len(sizes)), [str(n) for n in sizes])
        ax.set_xlabel("robots")
        ax.set_ylabel("J_N after / J_N naive (mean)")
        ax.set_title(domain)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.grid(alpha=0.3, axis="y")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"(b) NSE penalty by method, {100 * update_fraction:g}% of robots updated "
                 "(relative to the naive policy)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_runtime(summary: list[dict], path: Path) -> None:
    plt = _pyplot()
    domains = [d for d in DOMAINS if any(r["domain"] == d for r in summary)]
    fig, axes = _panels(plt, domains)
    fig.set_size_inches(5.0 * len(domains), 4.2)
    for ax, domain in zip(axes, domains):
        rows = [r for r in summary if r["domain"] == domain]
        for method in METHODS:
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["robots"])
            if not mine:
                continue
            x = [r["robots"] for r in mine]
            ax.errorbar(x, [r["seconds_total_mean"] for r in mine], yerr=[r["seconds_total_std"] for r in mine],
                        marker="o", capsize=2, label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("robots")
        ax.set_ylabel("seconds (plan + mitigation)")
        ax.set_title(domain)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=7, ncol=2)
    fig.suptitle("(c) run time vs. fleet size (mean ± std; log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- Markdown ----------------------------------------------------------------------------------
def _pm(row: dict, name: str, digits: int = 2) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y against log x (1 = linear growth)."""
    xs, ys = np.log(np.asarray(xs, float)), np.log(np.maximum(np.asarray(ys, float), 1e-9))
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) >= 2 else float("nan")


def comparison(rows: list[dict], frac: list[dict], size: list[dict], slack: float = float("nan")) -> list[str]:
    """Statements about the paper's claims, derived only from the numbers."""
    lines: list[str] = []
    # 1. RECON and generalised RECON against the baselines
    cells = sorted({(r["domain"], r["robots"]) for r in size}, key=lambda c: (DOMAINS.index(c[0]), c[1]))
    by = {(r["domain"], r["robots"], r["method"]): r for r in size}
    baselines = [b for b in PAPER_BASELINES if any(r["method"] == b for r in size)]
    others = [m for m in METHODS if m not in RECON_METHODS and m not in PAPER_BASELINES
              and any(r["method"] == m for r in size)]
    if baselines:
        lines.append(f"**RECON vs. the paper's baselines ({', '.join(baselines)}), mean J_N after, "
                     "experiment (b).**")
        for method in RECON_METHODS:
            wins, ties, losses = [], [], []
            for domain, n in cells:
                if (domain, n, method) not in by:
                    continue
                mine = by[(domain, n, method)]["nse_after_mean"]
                best = min(by[(domain, n, b)]["nse_after_mean"] for b in baselines if (domain, n, b) in by)
                tol = 1e-6 * max(1.0, abs(best))
                (wins if mine < best - tol else ties if mine <= best + tol else losses).append(f"{domain}/{n}")
            total = len(wins) + len(ties) + len(losses)
            if total:
                text = f"- `{method}` beats the best of them in {len(wins)}/{total} (domain/fleet) cells"
                if ties:
                    text += f", ties in {len(ties)}"
                if losses:
                    text += f", is worse in {len(losses)}: {', '.join(losses)}"
                lines.append(text + ".")
        ranks = []
        for domain, n in cells:
            present = [m for m in METHODS if (domain, n, m) in by]
            best = min(present, key=lambda m: by[(domain, n, m)]["nse_after_mean"])
            ranks.append(f"{domain}/{n}: `{best}`")
        lines.append("- Lowest mean J_N after of all methods, per cell: " + "; ".join(ranks) + ".")
        if others:
            lines.append(f"- Methods not in the paper ({', '.join(others)}) are included for reference; the "
                         "comparison above is against the paper's baselines only.")
    # 2. Generalisation
    gen = []
    for domain, n in cells:
        if all((domain, n, m) in by for m in RECON_METHODS):
            r, g, c = (by[(domain, n, m)]["nse_after_mean"] for m in RECON_METHODS)
            gen.append((domain, n, r, g, c))
    if gen:
        better_g = sum(g < r - 1e-9 for _, _, r, g, _ in gen)
        better_c = sum(c < r - 1e-9 for _, _, r, _, c in gen)
        cf_vs_g = sum(c <= g + 1e-9 for _, _, _, g, c in gen)
        lines.append(f"- Generalisation: `gen-recon` has lower mean J_N than `recon` in {better_g}/{len(gen)} "
                     f"cells, `gen-recon-cf` in {better_c}/{len(gen)}; `gen-recon-cf` is at most `gen-recon` in "
                     f"{cf_vs_g}/{len(gen)}.")
    # 3. Fraction trend
    if frac:
        lines.append("")
        lines.append("**Percentage of robots updated, experiment (a).**")
        for domain in DOMAINS:
            for method in RECON_METHODS:
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
    # 4. Run time
    if len({r["robots"] for r in size}) >= 2:
        lines.append("")
        lines.append("**Run time, experiment (c).** Log-log slope of mean total seconds (plan + mitigation) "
                     "against fleet size (1 = linear):")
        for domain in DOMAINS:
            parts = []
            for method in METHODS:
                mine = sorted((r for r in size if r["domain"] == domain and r["method"] == method),
                              key=lambda r: r["robots"])
                if len(mine) >= 2:
                    parts.append(f"`{method}` {_slope([r['robots'] for r in mine], [r['seconds_total_mean'] for r in mine]):.2f}")
            if parts:
                lines.append(f"- {domain}: " + ", ".join(parts) + ".")
        mitigation_slopes = []
        for domain in DOMAINS:
            for method in METHODS:
                if method == "naive":
                    continue
                mine = sorted((r for r in size if r["domain"] == domain and r["method"] == method),
                              key=lambda r: r["robots"])
                if len(mine) >= 2:
                    mitigation_slopes.append(_slope([r["robots"] for r in mine],
                                                    [r["seconds_mitigation_mean"] for r in mine]))
        if mitigation_slopes:
            lines.append(f"- Mitigation time alone (without planning), all non-naive methods: slopes "
                         f"{min(mitigation_slopes):.2f} to {max(mitigation_slopes):.2f} "
                         f"(median {np.median(mitigation_slopes):.2f}).")
        fastest = []
        for domain, n in cells:
            present = [m for m in METHODS if m != "naive" and (domain, n, m) in by]
            if present:
                best = min(present, key=lambda m: by[(domain, n, m)]["seconds_mitigation_mean"])
                fastest.append(best)
        if fastest:
            k = sum(m == "considerate" for m in fastest)
            counts = defaultdict(int)
            for m in fastest:
                counts[m] += 1
            tally = ", ".join(f"`{m}` {c}" for m, c in sorted(counts.items(), key=lambda kv: -kv[1]))
            lines.append(f"- Fastest mitigation (excluding planning, shared by all methods; naive excluded): "
                         f"`considerate` in {k}/{len(fastest)} cells ({tally}).")
    # 5. Anything that got worse
    worse = [r for r in rows if r["nse_after"] > r["nse_before"] + 1e-9 * max(1.0, r["nse_before"])]
    lines.append("")
    lines.append("**Runs where mitigation increased the NSE penalty.**")
    if worse:
        counts = defaultdict(int)
        for r in worse:
            counts[(r["method"], r["domain"])] += 1
        n_runs = defaultdict(int)
        for r in rows:
            n_runs[(r["method"], r["domain"])] += 1
        worst = max(worse, key=lambda r: r["nse_after"] / max(r["nse_before"], 1e-12))
        lines.append(f"- {len(worse)} of {len(rows)} runs end with J_N above the naive policy's: " + "; ".join(
            f"`{m}` {d} {c}/{n_runs[(m, d)]}" for (m, d), c in sorted(counts.items())) + ". Worst: "
            f"`{worst['method']}` on {worst['map']} with {worst['robots']} robots (seed {worst['seed']}, "
            f"{100 * worst['update_fraction']:g}% updated): {worst['nse_before']:.2f} -> {worst['nse_after']:.2f}.")
    else:
        lines.append("- None: no run ended with a higher J_N than the naive policy's.")
    over = [r for r in rows if math.isfinite(r["max_regret_over_slack"]) and r["max_regret_over_slack"] > 1 + 1e-6
            and r["method"] != "considerate"]
    if over:
        lines.append(f"- {len(over)} LVI runs have a robot whose task regret exceeds its slack.")
    cons = [r for r in rows if r["method"] == "considerate" and r["n_updated"] > 0]
    if cons:
        lines.append(f"- Considerate reward is not slack-bounded (single objective): largest task regret "
                     f"{max(r['max_task_regret'] for r in cons):.2f} (LVI's slack {slack:g}); """
                     f"{sum(r['nse_after'] < r['nse_before'] - 1e-9 for r in cons)}/{len(cons)} considerate runs "
                     "that updated robots lowered J_N at all.")
    return lines


def _size_tables(size: list[dict], metric: str) -> list[str]:
    """Markdown tables of `metric` (mean ± std), one per domain: methods by fleet size."""
    sizes = sorted({r["robots"] for r in size})
    by = {(r["domain"], r["robots"], r["method"]): r for r in size}
    out: list[str] = []
    for domain in DOMAINS:
        if not any(r["domain"] == domain for r in size):
            continue
        out += [f"### {domain}", "", "| method | " + " | ".join(f"{n} robots" for n in sizes) + " |",
                "|---|" + "---|" * len(sizes)]
        for method in METHODS:
            if any((domain, n, method) in by for n in sizes):
                out.append(f"| {method} | " + " | ".join(
                    _pm(by[(domain, n, method)], metric) if (domain, n, method) in by else "" for n in sizes) + " |")
        out.append("")
    return out


def markdown(config: ExperimentConfig, rows: list[dict], command: str | None = None,
             wall_seconds: float | None = None, notes: str = "") -> str:
    """RESULTS.md; `notes` (hand-written Markdown, kept across regenerations) follows the comparison."""
    frac, size = aggregate(rows, "fraction"), aggregate(rows, "size")
    out = ["# Experiments: NSE mitigation (paper section V-B)", ""]
    if command:
        out += ["Command:", "", "```", command, "```", ""]
    runs = len(rows)
    cfg = asdict(config)
    cfg.pop("maps_dir")
    out += [f"Configuration: {', '.join(f'{k}={v}' for k, v in cfg.items())}.",
            f"Instances are maps `<domain>-1..{config.instances}.map`; seeds 0..{config.seeds - 1} generate the "
            "extra robots (starts and tasks) and seed the Monte Carlo rollouts. Mean ± sample standard deviation "
            f"over {config.instances} instances x {config.seeds} seeds. J_N is the exact expected NSE penalty per "
            "episode (MATH.md section 4); one mitigation round per run. "
            f"{runs} runs" + (f", {wall_seconds / 60:.1f} min wall time." if wall_seconds is not None else "."),
            ""]
    skipped = [m for m in METHODS if m not in config.methods]
    if skipped:
        out += [f"Methods not run in experiment (b): {', '.join(f'`{m}`' for m in skipped)} (`--methods` chose "
                "the others).", ""]
    if max(config.sizes) < 100:
        out += [f"The paper also reports fleets of 100 robots; this run stops at {max(config.sizes)} robots to fit "
                "its time budget.", ""]
    out += ["Files: `results/runs.csv` (one row per run), `results/fraction_summary.csv`, "
            "`results/size_summary.csv`, `results/fraction.png`, `results/nse_by_method.png`, `results/runtime.png`.",
            ""]
    out += ["## Compared with the paper", ""] + comparison(rows, frac, size, config.slack) + [""]
    if notes.strip():
        out += [notes.strip(), ""]
    if frac:
        out += [f"## (a) NSE penalty vs. percentage of robots updated ({config.fraction_size} robots)", "",
                "![fraction](results/fraction.png)", ""]
        fractions = sorted({r["update_fraction"] for r in frac})
        out += ["| domain | method | " + " | ".join(f"{100 * f:g}%" for f in fractions) + " |",
                "|---|---|" + "---|" * len(fractions)]
        by = {(r["domain"], r["method"], r["update_fraction"]): r for r in frac}
        for domain in DOMAINS:
            for method in METHODS:
                if (domain, method, fractions[0]) in by:
                    out.append(f"| {domain} | {method} | " + " | ".join(
                        _pm(by[(domain, method, f)], "nse_after") if (domain, method, f) in by else "" for f in fractions)
                        + " |")
        out.append("")
    if size:
        sizes = sorted({r["robots"] for r in size})
        by = {(r["domain"], r["robots"], r["method"]): r for r in size}
        out += [f"## (b) NSE penalty by method ({100 * config.update_fraction:g}% of robots updated)", "",
                "![nse by method](results/nse_by_method.png)", "",
                "J_N after mitigation (mean ± std); the `naive` row is J_N before.", ""]
        out += _size_tables(size, "nse_after")
        out += ["## (c) Run time by method vs. fleet size", "", "![runtime](results/runtime.png)", "",
                "Total seconds = planning the fleet (shared by every method) + the method's mitigation; "
                "mean ± std.", ""]
        out += _size_tables(size, "seconds_total")
        largest = sizes[-1]
        out += [f"### Seconds per phase, {largest} robots (mean)", "",
                "| domain | method | " + " | ".join(PHASES) + " | total |", "|---|---|" + "---|" * (len(PHASES) + 1)]
        for domain in DOMAINS:
            for method in METHODS:
                r = by.get((domain, largest, method))
                if r:
                    out.append(f"| {domain} | {method} | " + " | ".join(
                        f"{r[f'seconds_{p}_mean']:.2f}" for p in PHASES) + f" | {r['seconds_total_mean']:.2f} |")
        out.append("")
    return "\n".join(out)


def write_results(config: ExperimentConfig, rows: list[dict], out_dir: str | Path, command: str | None = None,
                  wall_seconds: float | None = None) -> dict[str, Path]:
    """Write `<out>/RESULTS.md` and `<out>/results/*.csv|png`; returns the written paths.

    Hand-written notes in `<out>/results/notes.md` (investigations, other experiments) are
    included in RESULTS.md, so regenerating the tables never loses them."""
    out_dir = Path(out_dir)
    res = out_dir / "results"
    res.mkdir(parents=True, exist_ok=True)
    frac, size = aggregate(rows, "fraction"), aggregate(rows, "size")
    paths = {"runs": res / "runs.csv", "fraction_summary": res / "fraction_summary.csv",
             "size_summary": res / "size_summary.csv", "fraction_png": res / "fraction.png",
             "size_png": res / "nse_by_method.png", "runtime_png": res / "runtime.png",
             "markdown": out_dir / "RESULTS.md"}
    _write_csv(paths["runs"], rows, ROW_COLUMNS)
    _write_csv(paths["fraction_summary"], frac)
    _write_csv(paths["size_summary"], size)
    plot_fraction(frac, paths["fraction_png"])
    plot_size(size, paths["size_png"], config.update_fraction)
    plot_runtime(size, paths["runtime_png"])
    notes = res / "notes.md"
    paths["markdown"].write_text(markdown(config, rows, command, wall_seconds,
                                          notes.read_text() if notes.exists() else ""))
    return paths


def read_rows(path: str | Path) -> list[dict]:
    """Rows written to `runs.csv` by `write_results`, with their types restored."""
    ints = {"instance", "seed", "robots", "n_updated", "rounds"}
    strings = {"experiment", "domain", "map", "method"}
    with Path(path).open() as fh:
        return [{k: (v if k in strings else int(v) if k in ints else float(v)) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def run_and_write(config: ExperimentConfig, out_dir: str | Path, jobs: int = 1, command: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict[str, Path]]:
    start = time.perf_counter()
    rows = run_experiments(config, jobs=jobs, progress=progress)
    return rows, write_results(config, rows, out_dir, command, time.perf_counter() - start)
