"""Every layout of an installed Overcooked-AI package, read and planned: which plan, which are
refused for forced coordination (and why), which fail otherwise.

    python -m planner.overcooked_ai [--layouts DIR] [--robots-per-start N] [--markdown FILE]

Without `--layouts`, the layouts of the installed `overcooked_ai_py` package are used (found
without importing it, so `pip install --no-deps overcooked-ai` is enough). For each layout
that loads, one fleet (N robots per start cell, their tasks generated with seed 0) is planned
and every robot's policy is checked to finish surely. The result is in docs/OVERCOOKED_AI.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .domains import get_domain
from .maps import load_map
from .scenario import Scenario, plan_fleet
from .solvers import finishes_surely
from .world import MapError

PACKAGE = "overcooked_ai_py"


def installed_layouts_dir() -> Path:
    """The `data/layouts` folder of the installed Overcooked-AI package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Overcooked-AI package ({PACKAGE}) is not installed: "
                                "pip install --no-deps overcooked-ai, or pass --layouts DIR")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "layouts"


@dataclass
class LayoutResult:
    name: str
    status: str  # "plans", "forced coordination" or "refused"
    message: str = ""
    regions: int = 0  # regions holding a start cell
    robots: int = 0
    tasks: str = ""  # e.g. "onion cook x2, tomato cook x1"
    states: int = 0  # largest robot MDP


def sweep_layout(path: Path, robots_per_start: int = 1, seed: int = 0) -> LayoutResult:
    name = path.stem
    try:
        world = load_map(path)
    except MapError as error:
        status = "forced coordination" if error.message.startswith("forced coordination") else "refused"
        return LayoutResult(name, status, error.message)
    # robots_per_start robots on every start cell, so that every region is exercised
    domain = get_domain(world.domain)
    rng = np.random.default_rng(seed)
    tasks = tuple(domain.random_task(world, f"r{k}", start, rng)
                  for k, start in enumerate(s for s in world.starts for _ in range(robots_per_start)))
    scenario = Scenario(world, tasks)
    plans = plan_fleet(scenario, backend="serial")
    stuck = [p.task.robot_id for p in plans if not finishes_surely(p.mdp, p.policy)[p.mdp.start]]
    n = len(tasks)
    kinds: dict[str, int] = {}
    for task in scenario.tasks:
        key = f"{task.option} cook" if task.kind == "cook" else "cleaner"
        kinds[key] = kinds.get(key, 0) + 1
    regions = {world.region_of(c) for c in world.starts}
    result = LayoutResult(name, "plans", "", len(regions), n, ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())),
                          max(p.mdp.n_states for p in plans))
    if stuck:
        result.status, result.message = "refused", f"robots {', '.join(stuck)} are not sure to finish"
    return result


def sweep(layouts: Path, robots_per_start: int = 1, seed: int = 0, progress=None) -> list[LayoutResult]:
    paths = sorted(Path(layouts).glob("*.layout"))
    if not paths:
        raise FileNotFoundError(f"no .layout files in {layouts}")
    results = []
    for k, path in enumerate(paths):
        results.append(sweep_layout(path, robots_per_start, seed))
        if progress is not None:
            progress(k + 1, len(paths))
    return results


def markdown(results: list[LayoutResult], source: str, command: str) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("plans", "forced coordination", "refused")}
    lines = [
        "# Overcooked-AI layouts", "",
        f"Every `.layout` file of {source}, read by `planner.maps.load_map` and planned "
        "(one robot on every start cell, its task generated with seed 0 from what its region holds; every policy checked to finish surely).",
        "", "Command:", "", "```", command, "```", "",
        f"{len(results)} layouts: {counts['plans']} plan, {counts['forced coordination']} are refused for forced "
        f"coordination, {counts['refused']} are refused for another reason.", "",
        "Robots plan in the region (4-connected walkable component) of their start cell, and the tasks generated "
        "for a robot use what its region holds. A layout is refused only when a region holding a start lets no "
        "robot complete any task alone: each robot plans and acts alone (transition independence), so items "
        "cannot be handed over a counter.", "",
        "| layout | result | regions with a start | robots | tasks | states (largest robot) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.status == "plans":
            lines.append(f"| {r.name} | plans | {r.regions} | {r.robots} | {r.tasks} | {r.states} |")
        else:
            lines.append(f"| {r.name} | {r.status} | | | | |")
    refused = [r for r in results if r.status != "plans"]
    if refused:
        lines += ["", "Messages:", ""]
        lines += [f"- `{r.name}`: {r.message}" for r in refused]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m planner.overcooked_ai", description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", help="folder of .layout files (default: the installed overcooked-ai package's)")
    parser.add_argument("--robots-per-start", type=int, default=1, help="robots generated per start cell (default 1)")
    parser.add_argument("--markdown", help="write the Markdown report to this file")
    args = parser.parse_args(argv)
    try:
        layouts = Path(args.layouts) if args.layouts else installed_layouts_dir()
        from tqdm import tqdm

        bar = tqdm(desc="layouts", unit="layout", file=sys.stderr, leave=False)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            results = sweep(layouts, args.robots_per_start, progress=progress)
        finally:
            bar.close()
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    source = ("the installed overcooked-ai package" if not args.layouts else f"`{args.layouts}`")
    version = _installed_version()
    if version and not args.layouts:
        source = f"the installed overcooked-ai {version} package"
    command = "python -m planner.overcooked_ai" + (f" --layouts {args.layouts}" if args.layouts else "") + \
        (f" --robots-per-start {args.robots_per_start}" if args.robots_per_start != 1 else "")
    text = markdown(results, source, command + (f" --markdown {args.markdown}" if args.markdown else ""))
    if args.markdown:
        Path(args.markdown).write_text(text)
    for r in results:
        print(f"{r.name:<40} {r.status}" + (f" ({r.robots} robots, {r.regions} regions)" if r.status == "plans" else ""))
    return 0


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("overcooked-ai")
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
