"""`mase` command line. User errors print one clear line and exit 2, never a traceback."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

from tqdm import tqdm

from planner.maps import load_map
from planner.scenario import generate_scenario, plan_fleet, plan_summary
from planner.world import MapError


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


def _slack(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"slack must be a finite number >= 0, got {text}")
    return value


def _progress_bar(description: str, enabled: bool):
    bar = tqdm(total=0, desc=description, unit="robot", disable=None if enabled else True, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return bar, update


def cmd_plan(args: argparse.Namespace) -> int:
    world = load_map(args.map)
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
            "slack": args.slack,
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

    world = load_map(args.map)
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
                            episodes=args.episodes, seed=args.seed, backend=backend)
    phases = tqdm(total=100, desc="mitigating", disable=None if not args.no_progress else True, file=sys.stderr,
                  leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(phase: str, done: float) -> None:
        phases.set_postfix_str(phase)
        phases.n = int(100 * done)
        phases.refresh()

    try:
        result = mitigation.run(fleet, progress=progress)
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
    print(f"NSE penalty J_N: {out['nse_before']:.3f} -> {out['nse_after']:.3f}; NSE-state rate: "
          f"{rate(out['nse_state_rate_before'])} -> {rate(out['nse_state_rate_after'])}; rounds {out['rounds']}")
    print(f"{'robot':<10} {'blame':>10} {'task regret':>12} {'updated':>8}")
    for r in out["robots"]:
        print(f"{r['id']:<10} {r['blame']:>10.3f} {r['task_regret']:>12.3f} {'yes' if r['updated'] else '':>8}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in out["seconds"].items()))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex
    import time

    from metareasoner.experiments import ExperimentConfig, run_and_write

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
                       *(["--methods", *args.methods] if args.methods else []), "--jobs", str(args.jobs)])
    bar = tqdm(total=config.n_runs(), desc="experiments", unit="run", disable=None if not args.no_progress else True,
               file=sys.stderr)

    def progress(done: int, total: int) -> None:
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


def _add_fleet_arguments(parser: argparse.ArgumentParser, slack: float, slack_help: str) -> None:
    """The map, fleet and output options `plan` and `mitigate` share."""
    parser.add_argument("--map", required=True, help="map file (.map, or an Overcooked-AI .layout)")
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
    parser = argparse.ArgumentParser(prog="mase", description="Multi-robot planning and NSE mitigation.")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="solve every robot's own task and report its value and expected steps")
    _add_fleet_arguments(plan, 0.0, "task slack delta >= 0 (used when replanning)")
    plan.set_defaults(func=cmd_plan)

    from metareasoner.mitigation import METHODS

    mit = sub.add_parser("mitigate", help="find the fleet's NSEs, blame robots and make the most blamed replan")
    _add_fleet_arguments(mit, 100.0, "task slack delta of every robot (LVI: per-state slack (1 - discount) * delta)")
    mit.add_argument("--method", choices=METHODS, default="recon", help="blame / mitigation method")
    mit.add_argument("--update-fraction", type=_fraction, default=0.25,
                     help="fraction of robots (most blamed first) that replan each round, in [0, 1]")
    mit.add_argument("--rounds", type=_positive_int, default=1, help="round limit of iterative RECON")
    mit.add_argument("--episodes", type=_positive_int, default=100, help="Monte Carlo episodes blamed per round")
    mit.set_defaults(func=cmd_mitigate)

    from metareasoner.experiments import DOMAINS

    exp = sub.add_parser("experiment", help="run the paper's experiments; write RESULTS.md, CSVs and plots")
    exp.add_argument("--out", default="docs", help="output folder: <out>/RESULTS.md and <out>/results/ (default docs)")
    exp.add_argument("--quick", action="store_true", help="tiny configuration (1 instance, 1 seed, 4 and 6 robots)")
    exp.add_argument("--domains", nargs="+", choices=DOMAINS, help="domains (default all three)")
    exp.add_argument("--instances", type=_positive_int, help="map instances <domain>-1..N per domain (N <= 5)")
    exp.add_argument("--seeds", type=_positive_int, help="seeds 0..N-1 per instance")
    exp.add_argument("--sizes", nargs="+", type=_positive_int, help="fleet sizes of the by-method experiments")
    exp.add_argument("--fraction-size", type=_positive_int, help="fleet size of the update-fraction experiment")
    exp.add_argument("--methods", nargs="+", choices=METHODS, help="methods of the by-method experiments")
    exp.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    exp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    exp.set_defaults(func=cmd_experiment)

    from .serve import add_serve_parser

    add_serve_parser(sub)
    from .ros import add_ros_parser

    add_ros_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
