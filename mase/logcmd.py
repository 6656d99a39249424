"""`mase simulate` (a seeded fleet log), `mase learn` (a policy learned from a log) and
`mase mitigate --policies FILE` (start from a run's or a learned policy): docs/LOGS.md."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tqdm import tqdm

POLICY_HELP = ("policies the robots start from: a policy file (a run's RUN.json or `mase learn`'s policy.json; "
               "robots it has no entry for keep their task-optimal policy)")


def add_policies_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", metavar="FILE", default=None, help=POLICY_HELP)


def start_policies(args: argparse.Namespace, fleet):
    """The policies of `--policies` for `fleet` (None: the naive ones); one line to stderr says
    how many robots the file had no entry for."""
    path = getattr(args, "policies", None)
    if path is None or path == "naive":
        return None
    from metareasoner.policies import read_policy_file

    policies, origin = read_policy_file(path).policies_for(fleet)
    own = origin.count("own")
    if own:
        print(f"mase: {own} of {len(origin)} robots have no entry in {path}: they follow their task-optimal policy",
              file=sys.stderr)
    return policies


def _plan(args, scenario):
    from metareasoner.mitigation import Fleet

    from .cli import _backend, _progress_bar

    bar, update = _progress_bar("planning", not args.no_progress)
    backend = _backend(args)
    try:
        return Fleet.plan(scenario, progress=update, backend=backend)
    finally:
        bar.close()
        backend.close()


def cmd_simulate(args: argparse.Namespace) -> int:
    from metareasoner.fleetlog import simulate_log, write_log
    from planner.scenario import generate_scenario

    from .cli import UserError, load_world, map_source

    world = load_world(args)
    scenario = generate_scenario(world, args.robots, seed=args.seed, slack=args.slack)
    if args.group_size is not None and args.group_size > args.robots:
        raise UserError(f"--group-size {args.group_size} is larger than the fleet (--robots {args.robots})")
    fleet = _plan(args, scenario)
    policies = start_policies(args, fleet) or [p.policy for p in fleet.plans]
    bar = tqdm(total=args.episodes, desc="simulating", unit="episode", disable=None if not args.no_progress else True,
               file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.n = done
        bar.refresh()

    source = {"command": "mase simulate", "map": args.map, "robots": args.robots, "seed": args.seed,
              "policies": args.policies, "episodes": args.episodes, "group_size": args.group_size,
              **map_source(args, world)}
    try:
        log = simulate_log(fleet, policies, args.episodes, seed=args.seed, group_size=args.group_size, source=source,
                           progress=progress)
    finally:
        bar.close()
    try:
        write_log(log, args.out)
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    summary = {"out": args.out, "episodes": log.n_episodes, "records": log.n_records, "robots": len(log.robots),
               "mean_score": float(log.scores.mean()),
               "score_standard_error": float(log.scores.std(ddof=1) / np.sqrt(len(log.scores)))
               if len(log.scores) > 1 else None}
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(f"wrote {log.n_records} records of {log.n_episodes} episodes ({len(log.robots)} robots) to {args.out}; "
              f"mean NSE score per episode {summary['mean_score']:.3f}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    from metareasoner.fleetlog import LoggedFleet, read_log
    from metareasoner.gaps import gaps
    from metareasoner.imitation import EV2BC, BehaviourCloning, QueriedImitation
    from metareasoner.policies import write_policy_file
    from planner.maps import detect_format

    from .cli import UserError, load_world

    if args.method != "ev2bc" and (args.threshold is not None or args.weighting is not None):
        raise UserError("--threshold and --weighting are EV2BC's (--method ev2bc)")
    if args.method == "queried" and args.robots is None:
        raise UserError("--method queried asks the planner about a fleet: give its --robots (and --seed)")
    from .cli import _progress_bar

    # a RECON grid read with their semantics needs its fleet size: --robots, else the log's (read first)
    fleet_from_log = (args.robots is None and (args.format or detect_format(args.map)) == "recon-grid"
                      and args.semantics in (None, "recon"))
    world = None if fleet_from_log else load_world(args)
    bar = tqdm(total=0, desc="reading", unit="line", disable=None if not args.no_progress else True, file=sys.stderr,
               leave=False)

    def lines_read(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    try:
        log = read_log(args.log, progress=lines_read)
    finally:
        bar.close()
    if log.n_records == 0:
        raise UserError(f"{args.log}: the log has no step records: nothing to learn from")
    if world is None:
        world = load_world(args, robots=len(log.robots))
    bar, update = _progress_bar("planning", not args.no_progress)
    try:
        logged = LoggedFleet.bind(log, world, progress=update)
    finally:
        bar.close()
    if args.method == "bc":
        learner = BehaviourCloning(backoff=args.backoff).fit(logged)
    elif args.method == "ev2bc":
        learner = EV2BC(threshold=0.0 if args.threshold is None else args.threshold,
                        weighting=args.weighting or "threshold", backoff=args.backoff).fit(logged)
    expert_fleet = expert = None
    if args.method == "queried":
        from metareasoner.mitigation import Mitigation
        from planner.scenario import generate_scenario

        expert_fleet = _plan(args, generate_scenario(world, args.robots, seed=args.seed, slack=args.slack))
        expert = Mitigation(method=args.expert, update_fraction=1.0, seed=args.seed,
                            backend="serial").run(expert_fleet).policies
        learner = QueriedImitation(BehaviourCloning(backoff=args.backoff)).fit(logged, expert_fleet, expert)
    source = {"command": "mase learn", "method": args.method, "log": args.log, "backoff": args.backoff,
              "evidence": learner.evidence_}
    if args.method == "ev2bc":
        source.update(threshold=learner.threshold, weighting=learner.weighting,
                      exchange_values={r: (None if not np.isfinite(v) else float(v))
                                       for r, v in zip(learner.robots_, learner.exchange_values_)},
                      kept=list(learner.kept_))
    if args.method == "queried":
        source.update(expert=args.expert, robots=args.robots, seed=args.seed, queries=learner.queries_)
    try:
        write_policy_file(learner.document(source), args.out)
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    summary = {"out": args.out, "method": args.method, "tasks": len(learner.tables_), **source}
    if expert_fleet is not None:
        summary["gaps"] = gaps(expert_fleet, learner.policies(expert_fleet), expert).as_dict()
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    e = learner.evidence_
    print(f"learnt {args.method} from {e['records']} records ({e['inferred']} actions inferred from the next state, "
          f"{e['skipped']} records unusable) of {len(log.robots)} robots; {len(learner.tables_)} tasks; "
          f"wrote {args.out}")
    if args.method == "ev2bc":
        print(f"{'robot':<20} {'exchange value':>15} {'kept':>5}")
        for r, v in sorted(zip(learner.robots_, learner.exchange_values_), key=lambda x: -np.nan_to_num(x[1])):
            print(f"{r:<20} {v:>15.3f} {'yes' if r in learner.kept_ else '':>5}")
    if "gaps" in summary:
        g = summary["gaps"]
        print(f"queries {learner.queries_}; on the expert's fleet: J_N {g['nse_learner']:.3f} (expert "
              f"{g['nse_expert']:.3f}), value gap {g['value_gap']:.3f}, regret gap {g['regret_gap']:.3f}")
    return 0


def add_log_parsers(sub) -> None:
    from metareasoner.mitigation import METHODS

    from .cli import BUDGET_HELP, _add_fleet_arguments, _positive_int, _slack, add_map_options

    sim = sub.add_parser("simulate", help="roll a fleet out (seeded) and write its fleet log (JSON Lines)",
                         description="Seeded rollouts of a fleet's policies, written as a fleet log (docs/LOGS.md): "
                                     "one record per robot per step and one per episode with its NSE score.")
    _add_fleet_arguments(sim, "10%", BUDGET_HELP)
    sim.add_argument("--policies", metavar="naive|FILE", default="naive",
                     help="naive (every robot's task-optimal policy, the default) or a policy file (RUN.json, "
                          "policy.json)")
    sim.add_argument("--episodes", type=_positive_int, required=True, help="episodes to simulate")
    sim.add_argument("--group-size", type=_positive_int, default=None,
                     help="robots per episode, drawn at random from the fleet (default: all of them)")
    sim.add_argument("--out", required=True, metavar="LOG.jsonl", help="the fleet log to write")
    sim.set_defaults(func=cmd_simulate)

    learn = sub.add_parser("learn", help="learn a policy from a fleet log (bc, ev2bc or queried) and write it",
                           description="Tabular imitation from a fleet log (docs/LOGS.md): plain behaviour cloning, "
                                       "EV2BC (only robots whose exchange value reaches --threshold), or a learner "
                                       "that also asks the planner (queried).")
    learn.add_argument("--log", required=True, help="the fleet log (JSON Lines)")
    add_map_options(learn, "the map the log was recorded on, read as it was then (the same --format and "
                           "--semantics)")
    learn.add_argument("--method", choices=("bc", "ev2bc", "queried"), required=True, help="the learner")
    learn.add_argument("--threshold", type=float, default=None,
                       help="EV2BC: imitate robots whose exchange value (NSE per episode they remove, relative to a "
                            "random replacement) is at least this (default 0)")
    learn.add_argument("--weighting", choices=("threshold", "weighted"), default=None,
                       help="EV2BC: keep robots above the threshold (default) or weight them by how far above")
    learn.add_argument("--backoff", choices=("task", "all"), default="task",
                       help="where no kept robot was seen: the robot's task-optimal action (default), or first every "
                            "logged robot's actions")
    learn.add_argument("--robots", type=_positive_int, default=None, help="queried: the fleet the planner is asked about")
    learn.add_argument("--seed", type=int, default=0, help="queried: that fleet's seed")
    learn.add_argument("--slack", type=_slack, default="10%", help="queried: that fleet's task budget (" + BUDGET_HELP + ")")
    learn.add_argument("--expert", choices=METHODS, default="best-response",
                       help="queried: the mitigation method whose policies the planner recommends")
    learn.add_argument("--out", required=True, metavar="POLICY.json", help="the policy file to write")
    learn.add_argument("--json", action="store_true", help="print a JSON summary instead of a table")
    learn.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    learn.add_argument("--backend", choices=("local", "serial", "ray"), default="serial", help=argparse.SUPPRESS)
    learn.add_argument("--ray-address", default=None, help=argparse.SUPPRESS)
    learn.set_defaults(func=cmd_learn)
