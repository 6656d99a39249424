"""`mase` command line. User errors print one clear line and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

from tqdm import tqdm

from planner.world import MapError

from .logcmd import add_log_parsers, add_policies_option, start_policies

# planner.maps and planner.scenario (scipy.sparse) are imported by the commands that use them,
# so that `mase ros ...` and argument errors answer at once


BUDGET_HELP = ("each robot's task budget when it replans: a percentage of its optimal expected task cost "
               "(default 10%%) or an absolute number of task-value units; its task regret from its start "
               "never exceeds it")


class UserError(Exception):
    """A problem with what the user asked for, reported without a traceback."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _slack(text: str):
    """A task budget: '10%' of each robot's task cost, or an absolute number of task-value units."""
    from planner.budget import TaskBudget

    try:
        return TaskBudget.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _progress_bar(description: str, enabled: bool):
    bar = tqdm(total=0, desc=description, unit="robot", disable=None if enabled else True, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def cmd_plan(args: argparse.Namespace) -> int:
    from planner.scenario import generate_scenario, plan_fleet, plan_summary

    world = load_world(args)
    scenario = generate_scenario(world, args.robots, seed=args.seed, slack=args.slack)
    bar, update = _progress_bar("planning", not args.no_progress)
    backend = _backend(args)
    try:
        plans = plan_fleet(scenario, progress=update, backend=backend)
    finally:
        bar.close()
        backend.close()
    rows = plan_summary(plans)
    if args.json:
        out = {
            "map": world.name,
            "domain": world.domain,
            "seed": args.seed,
            "slack": str(args.slack),
            "robots": [
                {"id": r["id"], "task_value": r["task_value"],
                 "expected_steps": r["expected_steps"] if math.isfinite(r["expected_steps"]) else None,
                 "states": r["states"]}
                for r in rows
            ],
        }
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print(f"map {world.name} ({world.domain}), {len(rows)} robots, seed {args.seed}, slack {args.slack}")
        print(f"{'robot':<10} {'task value':>12} {'expected steps':>15} {'states':>8}")
        for r in rows:
            steps = f"{r['expected_steps']:.2f}" if math.isfinite(r["expected_steps"]) else "never"
            print(f"{r['id']:<10} {r['task_value']:>12.3f} {steps:>15} {r['states']:>8}")
    return 0


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"update fraction must be in [0, 1], got {text}")
    return value


def cmd_mitigate(args: argparse.Namespace) -> int:
    from metareasoner.mitigation import Fleet, Mitigation
    from planner.scenario import generate_scenario

    world = load_world(args)
    scenario = generate_scenario(world, args.robots, seed=args.seed, slack=args.slack)
    bar, update = _progress_bar("planning", not args.no_progress)
    backend = _backend(args)
    try:
        fleet = Fleet.plan(scenario, progress=update, backend=backend)
    except BaseException:
        backend.close()
        raise
    finally:
        bar.close()
    mitigation = Mitigation(method=args.method, update_fraction=args.update_fraction, rounds=args.rounds,
                            episodes=args.episodes, seed=args.seed, backend=backend, care=args.care)
    phases = tqdm(total=100, desc="mitigating", disable=None if not args.no_progress else True, file=sys.stderr,
                  leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(phase: str, done: float) -> None:
        phases.set_postfix_str(phase)
        phases.n = int(100 * done)
        phases.refresh()

    try:
        result = mitigation.run(fleet, progress=progress, policies=start_policies(args, fleet))
    finally:
        phases.close()
        backend.close()
    out = result.as_dict()
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    rate = lambda r: "n/a" if r is None else f"{100 * r:.1f}%"  # noqa: E731
    print(f"map {world.name} ({world.domain}), {len(fleet.plans)} robots, method {args.method}, "
          f"update fraction {args.update_fraction}, slack {args.slack}")
    share = out["counterfactual_share"]
    print(f"NSE penalty J_N: {out['nse_before']:.3f} -> {out['nse_after']:.3f}; NSE-state rate: "
          f"{rate(out['nse_state_rate_before'])} -> {rate(out['nse_state_rate_after'])}; "
          f"valid counterfactuals: {'n/a' if share is None else f'{100 * share:.0f}% of blamed pairs'}")
    for r in out["rounds"]:
        print(f"round {r['round']}: J_N {r['nse']:.3f}, accepted {len(r['accepted'])}, "
              f"rejected {len(r['rejected'])}")
    print(f"{'robot':<10} {'blame':>10} {'task cost':>10} {'budget':>8} {'regret':>8} {'updated':>8}")
    for r in out["robots"]:
        print(f"{r['id']:<10} {r['blame']:>10.3f} {r['task_cost']:>10.3f} {r['slack']:>8.3f} "
              f"{r['task_regret']:>8.3f} {'yes' if r['updated'] else '':>8}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in out["seconds"].items()))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    if args.suite == "recon-reference":
        return _recon_reference(args)
    for name in ("grids", "slack"):
        if getattr(args, name) is not None:
            raise UserError(f"--{name} is for --suite recon-reference")
    from metareasoner.experiments import ExperimentConfig, merge_and_write, run_and_write

    if args.only and not args.merge:
        raise UserError("--only needs --merge (a report of only some experiments would drop the others' rows)")

    overrides = {}
    if args.domains:
        overrides["domains"] = tuple(args.domains)
    if args.instances is not None:
        overrides["instances"] = args.instances
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.sizes:
        overrides["sizes"] = tuple(args.sizes)
    if args.fraction_size is not None:
        overrides["fraction_size"] = args.fraction_size
    if args.methods:
        overrides["methods"] = tuple(args.methods)
    config = ExperimentConfig.quick(**overrides) if args.quick else ExperimentConfig(**overrides)
    command = " ".join(shlex.quote(a) for a in ["mase", "experiment", "--out", args.out, *(["--quick"] if args.quick else []),
                       *(["--domains", *args.domains] if args.domains else []),
                       *(["--instances", str(args.instances)] if args.instances is not None else []),
                       *(["--seeds", str(args.seeds)] if args.seeds is not None else []),
                       *(["--sizes", *map(str, args.sizes)] if args.sizes else []),
                       *(["--fraction-size", str(args.fraction_size)] if args.fraction_size is not None else []),
                       *(["--methods", *args.methods] if args.methods else []),
                       *(["--merge"] if args.merge else []), *(["--only", *args.only] if args.only else []),
                       "--jobs", str(args.jobs)])
    if args.merge:
        def merge(config, out, **kwargs):
            return merge_and_write(config, out, only=args.only or None, **kwargs)

        return _run_experiments(args, config, command, merge, "experiments (missing runs)")
    return _run_experiments(args, config, command, run_and_write, "experiments")


def _run_experiments(args: argparse.Namespace, config, command: str, run_and_write, description: str) -> int:
    """Run an experiment suite's `run_and_write` with a progress bar; print what it wrote."""
    import time

    bar = tqdm(total=config.n_runs(), desc=description, unit="run", disable=None if not args.no_progress else True,
               file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    start = time.perf_counter()
    try:
        rows, paths = run_and_write(config, args.out, jobs=args.jobs, command=command, progress=progress)
    finally:
        bar.close()
    print(f"{len(rows)} runs in {(time.perf_counter() - start) / 60:.1f} min; wrote {paths['markdown']} and "
          f"{paths['runs'].parent}/")
    return 0


def _recon_reference(args: argparse.Namespace) -> int:
    """`mase experiment --suite recon-reference --grids PATH`: the RECON authors' protocol on their grids."""
    import shlex

    from metareasoner.recon_reference import ReconReferenceConfig, run_and_write

    if args.grids is None:
        raise UserError("--suite recon-reference needs --grids PATH, a checkout of RECON-NSE-Mitigation")
    if args.merge or args.only:
        raise UserError("--merge and --only are for the paper suite")
    if args.seeds is not None:
        raise UserError("--seeds is for the paper suite; the RECON protocol has one seed per fleet")
    overrides = {}
    if args.domains:
        overrides["domains"] = tuple(args.domains)
    if args.instances is not None:
        overrides["instances"] = tuple(range(args.instances))
    if args.sizes:
        overrides["sizes"] = tuple(args.sizes)
    if args.fraction_size is not None:
        overrides["fraction_size"] = args.fraction_size
    if args.methods:
        overrides["size_methods"] = tuple(args.methods)
    if args.slack is not None:
        overrides["slack"] = args.slack
    config = (ReconReferenceConfig.quick(args.grids, **overrides) if args.quick
              else ReconReferenceConfig(args.grids, **overrides))
    command = " ".join(shlex.quote(a) for a in [
        "mase", "experiment", "--suite", "recon-reference", "--grids", args.grids, "--out", args.out,
        *(["--quick"] if args.quick else []), *(["--domains", *args.domains] if args.domains else []),
        *(["--instances", str(args.instances)] if args.instances is not None else []),
        *(["--sizes", *map(str, args.sizes)] if args.sizes else []),
        *(["--fraction-size", str(args.fraction_size)] if args.fraction_size is not None else []),
        *(["--methods", *args.methods] if args.methods else []),
        *(["--slack", str(args.slack)] if args.slack is not None else []), "--jobs", str(args.jobs)])
    return _run_experiments(args, config, command, run_and_write, "recon-reference")


def cmd_invariants(args: argparse.Namespace) -> int:
    import shlex
    import time
    from pathlib import Path

    from metareasoner.invariants import default_maps, markdown, sweep, violations

    maps = args.maps or default_maps(args.generated)
    command = " ".join(shlex.quote(a) for a in ["mase", "invariants", *(["--maps", *args.maps] if args.maps else []),
                       "--generated", str(args.generated), "--sizes", *map(str, args.sizes),
                       *(["--methods", *args.methods] if args.methods else []), "--jobs", str(args.jobs),
                       "--out", args.out])
    bar = tqdm(total=len(maps) * len(args.sizes), desc="invariants", unit="fleet",
               disable=None if not args.no_progress else True, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    start = time.perf_counter()
    try:
        kwargs = {"methods": tuple(args.methods)} if args.methods else {}
        rows = sweep(maps, args.sizes, jobs=args.jobs, progress=progress, **kwargs)
    finally:
        bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, command, time.perf_counter() - start))
    bad = violations(rows)
    print(f"{len(rows) - len(bad)} of {len(rows)} runs keep every promise; wrote {out}")
    return 1 if bad else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from planner.generate import generate_map

    text = generate_map(args.domain, args.seed, args.width, args.height, args.robots_starts)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _add_generate_parser(sub) -> None:
    from planner.domains import domain_names
    from planner.generate import DEFAULT_STARTS, MAX_SIDE, MAX_STARTS

    gen = sub.add_parser("generate", help="write a seeded random map of a domain (the same seed, the same map)",
                         description="Write a random map in the map format of maps/README.md: the same "
                                     "arguments give the same map, and the map always loads and plans.")
    gen.add_argument("--domain", required=True, choices=domain_names(), help="the map's domain")
    gen.add_argument("--seed", type=_integer, required=True, help="seed (an integer >= 0)")
    gen.add_argument("--width", type=_integer, help=f"columns (default and minimum per domain; at most {MAX_SIDE})")
    gen.add_argument("--height", type=_integer, help=f"rows (default and minimum per domain; at most {MAX_SIDE})")
    gen.add_argument("--robots-starts", type=_integer, default=DEFAULT_STARTS,
                     help=f"start cells for generated robots, 1 to {MAX_STARTS} (default {DEFAULT_STARTS})")
    gen.add_argument("--out", metavar="FILE", help="write the map to FILE (default: print it)")

    def one_line_error(message: str) -> None:
        # argparse would print the usage first; a bad argument here is one line, as every other error
        gen.exit(2, f"{gen.prog}: error: {message}\n")

    gen.error = one_line_error
    gen.set_defaults(func=cmd_generate)


MAP_HELP = "map file: ours (.map), an Overcooked-AI .layout, or a RECON authors' grid (see --format)"


def add_map_options(parser: argparse.ArgumentParser, map_help: str = MAP_HELP) -> None:
    """--map and how it is read: --format, and for RECON grids --semantics, --goal-deposit and
    --domain (planner.maps.load_map's options; maps/README.md)."""
    from planner.maps import MAP_FORMATS

    group = parser.add_argument_group("map format", "how --map is read (maps/README.md; the RECON options apply to "
                                                    "--format recon-grid only)")
    group.add_argument("--map", required=True, help=map_help)
    group.add_argument("--format", choices=MAP_FORMATS, default=None,
                       help="map: our sectioned format; layout: an Overcooked-AI layout; recon-grid: a grid file of "
                            "the RECON authors' code (grids/<domain>/test_grid<k>.txt). Default: detected (.map "
                            "ours, .layout a layout, another file holding a bare grid of their symbols a RECON grid)")
    group.add_argument("--semantics", choices=("recon", "ours"), default=None,
                       help="recon-grid: recon (default) gives the robots their code gives a fleet of --robots: "
                            "all start where theirs do, task types split by their goal_deposit table, their NSE "
                            "zones; ours generates --robots robots (seeded starts and tasks) as on our maps, one NSE "
                            "zone per patch")
    group.add_argument("--goal-deposit", nargs=2, type=_nonnegative_int, metavar=("FIRST", "SECOND"), default=None,
                       help="recon-grid, --semantics recon: robots of their first and second task type (adding up "
                            "to --robots; default their table, else an even split)")
    group.add_argument("--domain", choices=("salp", "overcooked", "warehouse"), default=None,
                       help="recon-grid: the grid's domain (default: its folder grids/<domain>/, else its symbols)")


def _nonnegative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def load_world(args: argparse.Namespace, robots: int | None = None):
    """The World of `--map` read as --format and, for a RECON grid, --semantics say; `robots`
    is the fleet their semantics assign tasks to (default --robots)."""
    from planner.maps import detect_format, load_map

    fmt = args.format or detect_format(args.map)
    given = [f"--{name.replace('_', '-')}" for name in ("semantics", "goal_deposit", "domain")
             if getattr(args, name, None) is not None]
    if fmt != "recon-grid":
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise UserError(f"{', '.join(given)} {verb} to RECON grids (--format recon-grid); {args.map} is read as "
                            f"format {fmt!r}" + ("" if args.format else " (detected)"))
        return load_map(args.map, fmt)
    semantics = args.semantics or "recon"
    options = {"semantics": semantics, "domain": args.domain}
    if semantics == "recon":
        n = args.robots if robots is None else robots
        if n is None:
            raise UserError("--semantics recon assigns their tasks to a fleet: give --robots")
        if args.goal_deposit is not None and sum(args.goal_deposit) != n:
            raise UserError(f"--goal-deposit {args.goal_deposit[0]} {args.goal_deposit[1]} must add up to the "
                            f"fleet's {n} robots")
        options.update(robots=n, goal_deposit=None if args.goal_deposit is None else tuple(args.goal_deposit))
    elif args.goal_deposit is not None:
        raise UserError("--goal-deposit is their task assignment: it needs --semantics recon")
    return load_map(args.map, fmt, **options)


def map_source(args: argparse.Namespace, world) -> dict:
    """How --map was read, for the records a command writes: nothing for our maps and layouts;
    the format and semantics (and the options given) for a RECON grid."""
    semantics = world.extras.get("recon_semantics")
    if semantics is None:
        return {}
    return {"format": "recon-grid", "semantics": semantics,
            **{name: getattr(args, name) for name in ("goal_deposit", "domain") if getattr(args, name, None) is not None}}


def _add_fleet_arguments(parser: argparse.ArgumentParser, slack: str, slack_help: str) -> None:
    """The map, fleet and output options `plan`, `mitigate` and `simulate` share."""
    add_map_options(parser)
    parser.add_argument("--robots", type=_positive_int, required=True, help="number of robots (>= 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the generated robots (and rollouts)")
    parser.add_argument("--slack", type=_slack, default=slack, help=slack_help)
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--backend", choices=("local", "serial", "ray"), default="local",
                        help="where robots are planned (and replanned): this machine's cores (default), this "
                             "process, or a Ray cluster; the results are the same")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="Ray cluster address for --backend ray (default: start a local Ray instance)")


def _backend(args: argparse.Namespace):
    """The `planner.backends` backend the options ask for; Ray is connected to here, so that a
    missing install or a wrong address is a one-line user error."""
    from planner.backends import RayBackend, get_backend

    if args.ray_address is not None and args.backend != "ray":
        raise UserError("--ray-address needs --backend ray")
    backend = get_backend(args.backend, address=args.ray_address)
    if isinstance(backend, RayBackend):
        try:
            backend.connect()
        except ImportError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:  # ray raises ConnectionError, RuntimeError... for a bad address
            raise UserError(f"cannot start or reach Ray at {args.ray_address or 'a new local instance'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return backend


def build_parser() -> argparse.ArgumentParser:
    from planner.budget import DEFAULT_BUDGET

    parser = argparse.ArgumentParser(prog="mase", description="Multi-robot planning and NSE mitigation.")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="solve every robot's own task and report its value and expected steps")
    _add_fleet_arguments(plan, DEFAULT_BUDGET, BUDGET_HELP)
    plan.set_defaults(func=cmd_plan)

    from metareasoner.mitigation import METHODS

    mit = sub.add_parser("mitigate", help="find the fleet's NSEs, blame robots and make the most blamed replan")
    _add_fleet_arguments(mit, DEFAULT_BUDGET, BUDGET_HELP)
    mit.add_argument("--method", choices=METHODS, default="recon", help="blame / mitigation method")
    mit.add_argument("--update-fraction", type=_fraction, default=0.25,
                     help="fraction of robots (most blamed first) that replan each round, in [0, 1]")
    mit.add_argument("--rounds", type=_positive_int, default=5,
                     help="round limit (rounds also stop once J_N is 0 or no replan is accepted)")
    mit.add_argument("--care", type=_nonnegative, default=2.0,
                     help="care coefficient of the considerate method: the worst state weighs as this many steps")
    mit.add_argument("--episodes", type=_positive_int, default=100, help="Monte Carlo episodes blamed per round")
    add_policies_option(mit)
    mit.set_defaults(func=cmd_mitigate)

    from metareasoner.experiments import DOMAINS

    exp = sub.add_parser("experiment", help="run the paper's experiments, or the RECON authors' protocol on their "
                                            "grids; write a Markdown report and CSVs")
    exp.add_argument("--suite", choices=("paper", "recon-reference"), default="paper",
                     help="paper: our maps, <out>/RESULTS.md and <out>/results/ (default); recon-reference: the "
                          "RECON authors' grids and protocol, <out>/RECON_REFERENCE.md and <out>/recon_reference/")
    exp.add_argument("--grids", metavar="PATH", help="recon-reference: a checkout of RECON-NSE-Mitigation (or its grids/); "
                                                    "their test grids are read as --format recon-grid with "
                                                    "--semantics recon (their protocol)")
    exp.add_argument("--out", default="results",
                     help="output folder (default results/; the published figures in docs/ are only rewritten when "
                          "asked for with --out docs)")
    exp.add_argument("--quick", action="store_true", help="tiny configuration (paper: 1 instance, 1 seed, 4 and 6 robots; "
                                                          "recon-reference: 1 grid per domain, 4 robots)")
    exp.add_argument("--domains", nargs="+", choices=DOMAINS, help="domains (default all three)")
    exp.add_argument("--instances", type=_positive_int,
                     help="paper: maps <domain>-1..N (N <= 5); recon-reference: test_grid0..N-1")
    exp.add_argument("--seeds", type=_positive_int, help="paper: seeds 0..N-1 per instance")
    exp.add_argument("--sizes", nargs="+", type=_positive_int,
                     help="fleet sizes of the by-method experiment (recon-reference default: 10 20 50 75 100)")
    exp.add_argument("--fraction-size", type=_positive_int,
                     help="fleet size of the update-fraction experiment (recon-reference default: 25)")
    exp.add_argument("--methods", nargs="+", choices=METHODS, help="methods of the by-method experiment")
    exp.add_argument("--slack", type=_slack, help="recon-reference: every robot's task slack (default: the scenario's)")
    from metareasoner.experiments import PARTS

    exp.add_argument("--merge", action="store_true",
                     help="paper: add to <out>/results/runs.csv: compute only the runs of this configuration it "
                          "lacks, keep its other rows and rewrite the report from all of them")
    exp.add_argument("--only", nargs="+", choices=PARTS, metavar="EXPERIMENT",
                     help=f"with --merge: compute only these ({', '.join(PARTS)}; lvi-gap is (d)'s LVI-vs-optimum "
                          "table, recomputed in full)")
    exp.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    exp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    exp.set_defaults(func=cmd_experiment)

    inv = sub.add_parser("invariants", help="check on every map, size and method: J_N never rises, every robot "
                                            "stays within its task budget")
    inv.add_argument("--maps", nargs="+", help="maps under maps/ (default: every shipped map and --generated "
                                              "random ones per domain)")
    inv.add_argument("--generated", type=int, default=5, help="maps of `mase generate` per domain (default 5)")
    inv.add_argument("--sizes", nargs="+", type=_positive_int, default=[10, 100], help="fleet sizes (default 10 100)")
    inv.add_argument("--methods", nargs="+", choices=METHODS, help="methods (default all)")
    inv.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    inv.add_argument("--out", default="results/INVARIANTS.md", help="the report (default results/INVARIANTS.md)")
    inv.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    inv.set_defaults(func=cmd_invariants)

    _add_generate_parser(sub)
    add_log_parsers(sub)

    from .serve import add_serve_parser

    add_serve_parser(sub)
    from .ros import add_ros_parser

    add_ros_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ros"]:  # parsed alone: building the other parsers imports scikit-learn (about a second)
        from .ros import main as ros_main

        return ros_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (MapError, UserError, ValueError) as exc:
        print(f"mase: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mase: interrupted", file=sys.stderr)
        return 130
