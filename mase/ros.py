"""`mase ros`: the ROS 2 bridge from the command line.

    mase ros demo --sim --method M [M ...] --seed S [S ...] [--episodes N] [--fast] [--json]
    mase ros launch ros_nodes/launch/turtlebots_sim.launch.py [name:=value ...]
    mase ros install PREFIX

`demo` runs the two-Turtlebot salp demo end to end in simulation (service, bridge, two
executors, two simulators: separate processes over DDS) once per method and seed, and reports
the percentage of NSE states from the service's monitor. `launch` starts the nodes of a ROS 2
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
    from metareasoner.mitigation import METHODS

    return METHODS


def cmd_demo(args: argparse.Namespace) -> int:
    from ros_nodes.demo import DemoFailure, run_episode, summarise

    if not args.sim:
        print("mase: error: only the simulated demo runs from here (--sim); for real Turtlebots start the service "
              "and `mase ros launch ros_nodes/launch/turtlebots_real.launch.py service_url:=... operator_token:=... "
              "token_tb1:=... token_tb2:=...`", file=sys.stderr)
        return 2
    results = []
    log = (lambda text: None) if args.quiet else (lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    for method in args.method:
        for seed in args.seed:
            workdir = None
            if args.logs:
                workdir = Path(args.logs) / f"{method}-seed{seed}"
            print(f"{method}, seed {seed}: running", file=sys.stderr, flush=True)
            try:
                result = run_episode(method, seed, episodes=args.episodes, update_fraction=args.update_fraction,
                                     fast=args.fast, workdir=workdir, domain_id=args.domain_id, log=log)
            except DemoFailure as error:
                print(f"mase: error: {method}, seed {seed}: {error}", file=sys.stderr)
                return 1
            results.append(result)
            model = result.model or {}
            expected = model.get("nse_state_rate_after")
            off_path = [r for r in result.visited if result.visited[r] != result.planned[r]]
            print(f"{method}, seed {seed}: {100 * (result.nse_state_rate or 0):.1f}% NSE states "
                  f"({result.nse_observations} of {result.observations} state reports; model "
                  f"{'n/a' if expected is None else f'{100 * expected:.1f}%'}; steps "
                  f"{', '.join(f'{r} {n}' for r, n in result.steps.items())}; cells visited "
                  f"{'as planned' if not off_path else 'differ from the plan for ' + ', '.join(off_path)}; "
                  f"node exit codes {sorted(set(result.exit_codes.values()), key=str)}; {result.seconds:.0f} s)",
                  file=sys.stderr if args.json else sys.stdout, flush=True)
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
    ros_sub = ros.add_subparsers(dest="ros_command", required=True)

    demo = ros_sub.add_parser("demo", help="run the two-Turtlebot salp demo and report the percentage of NSE states")
    demo.add_argument("--sim", action="store_true", help="simulated Turtlebots (required: the only mode run from here)")
    demo.add_argument("--method", nargs="+", default=["gen-recon-cf"], choices=_methods(),
                      help="mitigation method(s) of the run made before the robots start (naive: none replans)")
    demo.add_argument("--seed", nargs="+", type=int, default=[0],
                      help="seed(s): of the run and of the simulators' noise")
    demo.add_argument("--episodes", type=int, default=100, help="Monte Carlo episodes blamed by the run")
    demo.add_argument("--update-fraction", type=float, default=0.25, help="fraction of robots that replan")
    demo.add_argument("--fast", action="store_true",
                      help="faster simulated robots (1 m/s, 6 rad/s, 0.25 s per in-place action): same nodes and cells")
    demo.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: a random one per episode, 1..101)")
    demo.add_argument("--logs", help="keep every process's log under this folder (default: a temporary folder)")
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
