"""The sweep behind the promises every mitigation keeps, on every map, fleet size and method:

* J_N after <= J_N before (the acceptance step, docs/FORMULATION.md 10);
* every robot's task regret from its start <= its task budget (docs/FORMULATION.md 2);
* the reported rounds descend (each round's J_N at most the previous one's).

The test suite checks a sample of maps; `mase invariants` runs the whole sweep (the shipped maps
and maps of `mase generate`) and writes its table, so that the claim is checked where it could
break. A violated promise makes the command exit with status 1.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from planner.budget import DEFAULT_BUDGET, REGRET_TOLERANCE
from planner.maps import load_map, load_map_text
from planner.scenario import generate_scenario

from .mitigation import METHODS, Fleet, Mitigation

MAPS_DIR = Path(__file__).resolve().parent.parent / "maps"
DOMAINS = ("salp", "overcooked", "warehouse")
#: J_N may exceed its start by this relative amount (rounding of two exact evaluations)
PENALTY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Case:
    map: str  # a path under maps/, or "generated:<domain>:<seed>"
    robots: int
    seed: int


def shipped_maps(maps_dir: Path = MAPS_DIR) -> list[str]:
    return sorted(str(p.relative_to(maps_dir)) for d in DOMAINS for p in (maps_dir / d).glob("*.map"))


def _world(name: str, maps_dir: Path):
    if name.startswith("generated:"):
        from planner.generate import generate_map

        _, domain, seed = name.split(":")
        return load_map_text(generate_map(domain, int(seed)), source=f"<{name}>")
    return load_map(maps_dir / name)


def check_case(case: Case, methods: Sequence[str], slack: str = DEFAULT_BUDGET, rounds: int = 3,
               episodes: int = 50, maps_dir: str = str(MAPS_DIR)) -> list[dict]:
    """Every method on one fleet; one row per method with what was checked and whether it held."""
    world = _world(case.map, Path(maps_dir))
    fleet = Fleet.plan(generate_scenario(world, case.robots, seed=case.seed, slack=slack), backend="serial")
    rows = []
    for method in methods:
        if method in ("exchange", "exchange-logs") and case.robots < 2:
            continue
        start = time.perf_counter()
        result = Mitigation(method=method, rounds=rounds, episodes=episodes, seed=case.seed,
                            backend="serial").run(fleet)
        before, after = result.before.total_penalty, result.after.total_penalty
        levels = [before] + [r.nse for r in result.rounds]
        worst_regret = max((r.task_regret - r.slack for r in result.robots), default=0.0)
        rows.append({
            "map": case.map, "robots": case.robots, "seed": case.seed, "method": method,
            "nse_before": before, "nse_after": after,
            "never_worse": after <= before + PENALTY_TOLERANCE * max(1.0, before),
            "within_budget": worst_regret <= REGRET_TOLERANCE,
            "rounds_descend": all(b <= a + PENALTY_TOLERANCE * max(1.0, a) for a, b in zip(levels, levels[1:])),
            "worst_regret_minus_budget": worst_regret, "updated": len(result.updated),
            "seconds": time.perf_counter() - start,
        })
    return rows


def sweep(maps: Sequence[str], sizes: Sequence[int], methods: Sequence[str] = METHODS, seed: int = 0,
          jobs: int = 1, progress: Callable[[int, int], None] | None = None, **options) -> list[dict]:
    cases = [Case(m, n, seed) for m in maps for n in sizes]
    rows: list[dict] = []
    done = 0
    if jobs == 1:
        for case in cases:
            rows += check_case(case, methods, **options)
            done += 1
            if progress:
                progress(done, len(cases))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(check_case, c, methods, **options) for c in
                       sorted(cases, key=lambda c: -c.robots)]
            for future in as_completed(futures):
                rows += future.result()
                done += 1
                if progress:
                    progress(done, len(cases))
    return sorted(rows, key=lambda r: (r["map"], r["robots"], METHODS.index(r["method"])))


def violations(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if not (r["never_worse"] and r["within_budget"] and r["rounds_descend"])]


def markdown(rows: Sequence[dict], command: str, seconds: float) -> str:
    bad = violations(rows)
    maps = sorted({r["map"] for r in rows})
    sizes = sorted({r["robots"] for r in rows})
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    out = ["# Invariants of every mitigation", "", "Command:", "", "```", command, "```", "",
           f"{len(rows)} runs ({len(maps)} maps x fleets of {', '.join(map(str, sizes))} robots x "
           f"{len(methods)} methods) in {seconds / 60:.1f} min. Checked in each: J_N after <= J_N before, every "
           "robot's task regret from its start <= its budget (10 % of its task cost), and each round's J_N at most "
           "the previous round's.", "",
           f"**{len(rows) - len(bad)} of {len(rows)} runs keep every promise.**", ""]
    if bad:
        out += ["| map | robots | method | J_N before | J_N after | regret - budget |", "|---|---|---|---|---|---|"]
        out += [f"| {r['map']} | {r['robots']} | {r['method']} | {r['nse_before']:.4f} | {r['nse_after']:.4f} | "
                f"{r['worst_regret_minus_budget']:.2e} |" for r in bad]
        out.append("")
    out += ["| map | robots | J_N before | J_N after: " + ", ".join(methods) + " |", "|---|---|---|---|"]
    by = {(r["map"], r["robots"], r["method"]): r for r in rows}
    for m in maps:
        for n in sizes:
            mine = [by[(m, n, k)] for k in methods if (m, n, k) in by]
            if mine:
                out.append(f"| {m} | {n} | {mine[0]['nse_before']:.3f} | "
                           + ", ".join(f"{r['nse_after']:.3f}" for r in mine) + " |")
    return "\n".join(out) + "\n"


def default_maps(generated: int = 5) -> list[str]:
    return shipped_maps() + [f"generated:{d}:{s}" for d in DOMAINS for s in range(generated)]


__all__ = ["Case", "check_case", "default_maps", "markdown", "shipped_maps", "sweep", "violations"]
