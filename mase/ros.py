"""`mase ros`: the ROS 2 bridge from the command line.

    mase ros demo --sim [--method M ...] [--seed S ...] [--episodes N] [--rollouts N] [--fast]
                  [--service URL --token T] [--json]
    mase ros launch ros_nodes/launch/turtlebots_sim.launch.py [name:=value ...]
    mase ros install PREFIX

`demo` runs the two-Turtlebot salp demo end to end in simulation (service, bridge, two
executors, two simulators: separate processes over DDS), `--episodes` times per method and
seed, and reports the percentage of NSE states from the service's monitor. Every argument is
checked before anything starts (a bad one: one line, exit status 2). It starts one service for
all its episodes and prints that service's dashboard address and operator token, or uses a
running one (`--service URL --token T`); its temporary folders are removed when it ends. `launch` starts the nodes of a ROS 2
Python launch file as processes without `launch_ros` (which is not on PyPI) and runs them
until Ctrl-C. `install` registers the package `mase` in an ament prefix, so that a system
ROS 2's `ros2 launch mase <file>` finds the launch files and node executables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _methods() -> tuple[str, ...]:
    """The mitigation methods (the keys of metareasoner/strategies.py's `STRATEGIES` dict, in
    order), read from its syntax tree without importing it: that import (scikit-learn) takes
    about a second, longer than a bad argument may take to be refused. Anything but string keys
    of a dict display falls back to the import."""
    import ast

    source = Path(__file__).resolve().parent.parent / "metareasoner" / "strategies.py"
    try:
        for node in ast.parse(source.read_text()).body:
            target = node.target if isinstance(node, ast.AnnAssign) else \
                (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if getattr(target, "id", None) == "STRATEGIES" and isinstance(node.value, ast.Dict):
                keys = [k.value if isinstance(k, ast.Constant) else None for k in node.value.keys]
                if keys and all(isinstance(k, str) for k in keys):
                    return tuple(keys)
    except (OSError, SyntaxError, ValueError):
        pass
    from metareasoner.mitigation import METHODS

    return METHODS


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (`mase ros demo: error: ...`) and exit 2,
    unrecognised arguments included."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


MAX_SEED = 2**31 - 1  # the service's limits on a run
MAX_ROLLOUTS = 10_000
MAX_DOMAIN_ID = 232  # ROS 2 (0..101 are safe on Linux)


def _check_demo(args: argparse.Namespace) -> str | None:
    """What is wrong with the demo's arguments (one line), or None; nothing is started here."""
    if not args.sim:
        return ("only the simulated demo runs from here (--sim); for real Turtlebots start the service and "
                "`mase ros launch ros_nodes/launch/turtlebots_real.launch.py service_url:=... operator_token:=... "
                "token_tb1:=... token_tb2:=...`")
    bad = [s for s in args.seed if not 0 <= s <= MAX_SEED]
    if bad:
        return f"--seed must be in 0..{MAX_SEED}, got {bad[0]}"
    if args.episodes < 1:
        return f"--episodes (demo episodes per method and seed) must be at least 1, got {args.episodes}"
    if not 2 <= args.rollouts <= MAX_ROLLOUTS:
        return (f"--rollouts (Monte Carlo rollouts the run blames) must be in 2..{MAX_ROLLOUTS}, "
                f"got {args.rollouts}")
    if not 0.0 <= args.update_fraction <= 1.0:
        return f"--update-fraction must be in [0, 1], got {args.update_fraction:g}"
    if args.domain_id is not None and not 0 <= args.domain_id <= MAX_DOMAIN_ID:
        return f"--domain-id must be in 0..{MAX_DOMAIN_ID}, got {args.domain_id}"
    if (args.service is None) != (args.token is None):
        return "--service URL and --token T go together (an operator token of that service)"
    if args.service is not None and not args.service.startswith(("http://", "https://")):
        return f"--service must be an http:// or https:// address, got {args.service!r}"
    if args.logs is not None:
        logs = Path(args.logs)
        if logs.exists() and not logs.is_dir():
            return f"--logs {args.logs} exists and is not a folder"
        parent = next((p for p in (logs, *logs.parents) if p.exists()), Path("."))
        if not os.access(parent, os.W_OK):
            return f"--logs {args.logs}: cannot write in {parent}"
    import importlib.util

    if importlib.util.find_spec("rclpy") is None:
        return "the demo needs rclpy: pip install -e '.[ros]' (make install does)"
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    problem = _check_demo(args)
    if problem is not None:
        print(f"mase ros demo: error: {problem}", file=sys.stderr)
        return 2
    from ros_nodes.demo import DemoFailure, connect_demo_service, run_episode, start_demo_service, summarise

    import signal

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # unwinds through the clean-up below, as Ctrl-C does

    signal.signal(signal.SIGTERM, terminate)
    out = sys.stderr if args.json else sys.stdout
    log = (lambda text: None) if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    try:
        if args.service is not None:
            service = connect_demo_service(args.service, args.token)
            print(f"dashboard: {service.dashboard} (the service at --service)", file=sys.stderr, flush=True)
        else:
            service = start_demo_service(Path(args.logs) / "service" if args.logs else None)
            print(f"dashboard: {service.dashboard}  operator token: {service.operator_token}  (this demo's service, "
                  "until it ends)", file=sys.stderr, flush=True)
    except (DemoFailure, RuntimeError) as error:
        print(f"mase ros demo: error: {error}", file=sys.stderr)
        return 2
    results = []
    try:
        for method in args.method:
            for seed in args.seed:
                for episode in range(args.episodes):
                    name = f"{method}, seed {seed}" + (f", episode {episode + 1}" if args.episodes > 1 else "")
                    workdir = None
                    if args.logs:
                        workdir = Path(args.logs) / f"{method}-seed{seed}" / f"episode{episode + 1}"
                    print(f"{name}: running", file=sys.stderr, flush=True)
                    try:
                        result = run_episode(method, seed, rollouts=args.rollouts,
                                             update_fraction=args.update_fraction, fast=args.fast, workdir=workdir,
                                             domain_id=args.domain_id, log=log, service=service)
                    except DemoFailure as error:
                        print(f"mase ros demo: error: {name}: {error}", file=sys.stderr)
                        return 1
                    results.append(result)
                    expected = (result.model or {}).get("nse_state_rate_after")
                    off_path = [r for r in result.visited if result.visited[r] != result.planned[r]]
                    print(f"{name}: {100 * (result.nse_state_rate or 0):.1f}% NSE states "
                          f"({result.nse_observations} of {result.observations} state reports; model "
                          f"{'n/a' if expected is None else f'{100 * expected:.1f}%'}; steps "
                          f"{', '.join(f'{r} {n}' for r, n in result.steps.items())}; cells visited "
                          f"{'as planned' if not off_path else 'differ from the plan for ' + ', '.join(off_path)}; "
                          f"node exit codes {sorted(set(result.exit_codes.values()), key=str)}; "
                          f"{result.seconds:.0f} s)", file=out, flush=True)
    except KeyboardInterrupt:
        print("mase ros demo: interrupted", file=sys.stderr)
        return 130
    finally:
        service.stop()
    rows = summarise(results)
    if args.json:
        json.dump({"episodes": [r.as_dict() for r in results], "summary": rows}, sys.stdout, indent=2)
        print()
        return 0
    if len(results) > 1:
        print(f"\n{'method':<20} {'episodes':>8} {'NSE states % (mean)':>20} {'std':>7} {'model %':>8}")
        for row in rows:
            model = "n/a" if row["model"] is None else f"{row['model']:.1f}"
            print(f"{row['method']:<20} {row['episodes']:>8} {row['mean']:>20.1f} {row['std']:>7.1f} {model:>8}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    import tempfile

    from ros_nodes.launching import load_launch_file, parse_assignments, resolve
    from ros_nodes.processes import NodeGroup, ros_environment

    specs = resolve(load_launch_file(args.file), parse_assignments(args.arguments))
    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0"))
    env = ros_environment(domain)
    workdir = Path(args.logs or tempfile.mkdtemp(prefix="mase-ros-launch-"))
    group = NodeGroup(specs, workdir, env).start()
    for node in group.nodes:
        print(f"started {node.spec.fqn} ({node.spec.executable}, pid {node.process.pid}); log {node.log_path}")
    try:
        while all(node.alive() for node in group.nodes):
            time.sleep(0.5)
        dead = [n for n in group.nodes if not n.alive()]
        for node in dead:
            print(f"{node.spec.fqn} exited with {node.process.returncode}; last lines:\n{node.log()[-2000:]}",
                  file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping (robots first)", file=sys.stderr)
        return 0
    finally:
        group.stop()


def cmd_install(args: argparse.Namespace) -> int:
    from ros_nodes.ament import environment_line, install_prefix

    try:
        made = install_prefix(args.prefix)
    except (FileNotFoundError, FileExistsError) as error:
        print(f"mase: error: {error}", file=sys.stderr)
        return 2
    for path in made:
        print(f"{path}" + (f" -> {os.readlink(path)}" if path.is_symlink() else ""))
    print(f"\nthen, after sourcing the system ROS 2:\n  {environment_line(args.prefix)}\n"
          "  ros2 launch mase turtlebots_real.launch.py service_url:=... operator_token:=... token_tb1:=... token_tb2:=...")
    return 0


def add_ros_parser(sub) -> None:
    ros = sub.add_parser("ros", help="the ROS 2 bridge: the simulated two-Turtlebot demo, launch files")
    _add_ros_commands(ros)


def _add_ros_commands(ros: argparse.ArgumentParser) -> None:
    ros_sub = ros.add_subparsers(dest="ros_command", required=True, parser_class=OneLineParser)

    demo = ros_sub.add_parser("demo", help="run the two-Turtlebot salp demo and report the percentage of NSE states")
    demo.add_argument("--sim", action="store_true", help="simulated Turtlebots (required: the only mode run from here)")
    demo.add_argument("--method", nargs="+", default=["gen-recon-cf"], choices=_methods(),
                      help="mitigation method(s) of the run made before the robots start (naive: none replans)")
    demo.add_argument("--seed", nargs="+", type=int, default=[0],
                      help="seed(s): of the run and of the simulators' noise")
    demo.add_argument("--episodes", type=int, default=1, help="demo episodes per method and seed (default 1)")
    demo.add_argument("--rollouts", type=int, default=100,
                      help="Monte Carlo rollouts the run blames (2..10000, default 100)")
    demo.add_argument("--update-fraction", type=float, default=0.25, help="fraction of robots that replan")
    demo.add_argument("--fast", action="store_true",
                      help="faster simulated robots (1 m/s, 6 rad/s, 0.25 s per in-place action): same nodes and cells")
    demo.add_argument("--service", metavar="URL", help="use the service already running at URL (with --token) "
                                                       "instead of starting one")
    demo.add_argument("--token", metavar="T", help="an operator token of the --service")
    demo.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: a random one per episode, 1..101)")
    demo.add_argument("--logs", help="keep every process's log under this folder (default: a temporary folder, "
                                     "removed at the end)")
    demo.add_argument("--json", action="store_true", help="print the episodes and the summary as JSON")
    demo.add_argument("--quiet", action="store_true", help="no progress lines")
    demo.set_defaults(func=cmd_demo)

    launch = ros_sub.add_parser("launch", help="start the nodes of a ROS 2 Python launch file (without launch_ros)")
    launch.add_argument("file", help="a launch file, e.g. ros_nodes/launch/turtlebots_sim.launch.py")
    launch.add_argument("arguments", nargs="*", help="launch arguments name:=value")
    launch.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: the environment's, or 0)")
    launch.add_argument("--logs", help="folder for the nodes' logs (default: a temporary folder)")
    launch.set_defaults(func=cmd_launch)

    install = ros_sub.add_parser("install", help="register the package 'mase' in an ament prefix (for a system "
                                                 "ROS 2's `ros2 launch mase ...`)")
    install.add_argument("prefix", help="the prefix folder, e.g. ~/mase_ament (created if missing)")
    install.set_defaults(func=cmd_install)


def main(argv: list[str]) -> int:
    """`mase ros ...` on its own (what `mase.cli.main` hands `ros` commands to): the other
    commands' parsers import scikit-learn, which a bad argument should not wait for."""
    parser = OneLineParser(prog="mase ros", description="the ROS 2 bridge: the simulated two-Turtlebot demo, "
                                                       "launch files")
    _add_ros_commands(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("mase: interrupted", file=sys.stderr)
        return 130
