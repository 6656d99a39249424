"""Learning robots' policies from fleet logs: BC, EV2BC (paper 000) and a queried learner that
asks the planner on the states it and single-robot deviations reach (BLADES-style, paper 004).

The learners are tabular, one table per task (robots with one task share an MDP): a state's
action is the (weighted) majority of the logged robots' actions there, ties broken by the
task's Q-values. A logged record without its action (the service does not hear actions) counts
for every action that could have led to the robot's next logged state, in proportion to its
probability (inverse dynamics, a uniform prior). On a state with no evidence a learner backs
off to the robot's own task-optimal action (`backoff="task"`), or first to every logged
robot's actions there (`backoff="all"`, for EV2BC), and every learned policy is then made sure
to finish its task (`policies.finishing`). A task no logged robot had gets its task-optimal
policy.

* `BehaviourCloning`: every logged robot counts once per record.
* `EV2BC`: each robot's exchange value is estimated from the episodes' collective NSE scores
  alone (`blame.ExchangeValueFromLogs`: paired exchanges, EV-clustering when robots appear in
  few episodes); as a *desirability* (minus the NSE it adds), so a positive value is a robot
  that makes its groups better than a random replacement would. Only robots whose value is at
  least `threshold` are imitated (`weighting="threshold"`, the paper's Def. 4.5), or every robot
  weighted by how far it is above it (`weighting="weighted"`).
* `QueriedImitation`: starts from a learner fitted on the log and, round after round, asks the
  expert (the planner's policies for a fleet) for its action in every state the learner's policy
  or the robot's deviation to its best response (its task-optimal policy), or any switching
  between the two, can reach; expert answers outvote the log. It stops when no new state is
  reached: the learner then agrees with the expert wherever it can go.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone

from planner.scenario import task_key
from planner.solvers import finishes_surely

from .blame import ExchangeValueFromLogs
from .fleetlog import LoggedFleet
from .policies import FORMAT, VERSION, entry, finishing

BACKOFFS = ("task", "all")
WEIGHTINGS = ("threshold", "weighted")
#: counts closer than this are tied (then the task Q-value decides)
TIE = 1e-9


@dataclass
class Evidence:
    """Per logged record used for learning: its robot, its state and a distribution over the
    action it took (one-hot when logged, inverse dynamics when not)."""

    robot: np.ndarray  # (m,) index into the logged fleet
    state: np.ndarray  # (m,)
    actions: np.ndarray  # (m, A)
    inferred: int  # how many of the m were inferred from the next state
    skipped: int  # records without an action whose next state no action explains (or no next state)


def evidence(logged: LoggedFleet) -> Evidence:
    """What the log says about each robot's behaviour (terminal and held records say nothing)."""
    log, fleet = logged.log, logged.fleet
    A = fleet.plans[0].mdp.n_actions
    if any(p.mdp.actions != fleet.plans[0].mdp.actions for p in fleet.plans):
        raise ValueError("the logged robots' MDPs have different action sets; a domain's robots share one")
    terminal = np.zeros(log.n_records, dtype=bool)
    for k, plan in enumerate(fleet.plans):
        rows = np.flatnonzero(log.robot == k)
        terminal[rows] = plan.mdp.terminal[logged.state_index[rows]]
    usable = ~terminal & ~log.held
    known = usable & (logged.action_index >= 0)
    # the record after each one, for the robots whose actions were not logged
    order = np.lexsort((log.step, log.episode, log.robot))
    nxt = np.full(log.n_records, -1, dtype=np.int64)
    a, b = order[:-1], order[1:]
    follows = (log.robot[a] == log.robot[b]) & (log.episode[a] == log.episode[b]) & (log.step[b] == log.step[a] + 1) \
        & ~log.held[b]
    nxt[a[follows]] = b[follows]
    unknown = usable & (logged.action_index < 0)
    robots, states, dists = [np.flatnonzero(known)], [], []
    states.append(logged.state_index[robots[0]])
    one_hot = np.zeros((len(robots[0]), A))
    one_hot[np.arange(len(robots[0])), logged.action_index[robots[0]]] = 1.0
    dists.append(one_hot)
    inferred, skipped = 0, int((unknown & (nxt < 0)).sum())
    for k, plan in enumerate(fleet.plans):
        rows = np.flatnonzero(unknown & (nxt >= 0) & (log.robot == k))
        if not len(rows):
            continue
        s, s_next = logged.state_index[rows], logged.state_index[nxt[rows]]
        likelihood = _likelihood(plan.mdp.transitions, s, s_next, A)
        total = likelihood.sum(axis=1)
        ok = total > 0
        skipped += int((~ok).sum())
        robots.append(rows[ok])
        states.append(s[ok])
        dists.append(likelihood[ok] / total[ok, None])
        inferred += int(ok.sum())
    rows = np.concatenate(robots)
    return Evidence(log.robot[rows], np.concatenate(states), np.concatenate(dists), inferred, skipped)


def _likelihood(transitions: sp.csr_matrix, s: np.ndarray, s_next: np.ndarray, A: int) -> np.ndarray:
    """(m, A): T(s_next | s, a) for each pair and action."""
    rows = (s[:, None] * A + np.arange(A)[None, :]).ravel()
    cols = np.repeat(s_next, A)
    return np.asarray(transitions[rows, cols]).reshape(len(s), A)


@dataclass
class _Table:
    plan: object  # the logged robots' RobotPlan for this task (its MDP numbers the states)
    kept: np.ndarray  # (S, A) weighted action counts
    everyone: np.ndarray  # (S, A) unweighted counts (the "all" back-off)
    expert: np.ndarray | None = None  # (S, A) expert answers (queried learner)


def _choose(counts: np.ndarray, q_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) the majority action per state (ties: best task Q) and (S,) whether there was evidence."""
    best = counts.max(axis=1, keepdims=True)
    tied = (counts >= best - TIE) & (best > 0)
    choice = np.argmax(np.where(tied, q_values, -np.inf), axis=1)
    return choice, best[:, 0] > 0


class TabularImitation(BaseEstimator):
    """What the tabular learners share: tables per task, the back-off, deployment."""

    def __init__(self, backoff: str = "task") -> None:
        self.backoff = backoff

    def _check(self) -> None:
        if self.backoff not in BACKOFFS:
            raise ValueError(f"backoff must be one of {BACKOFFS}, got {self.backoff!r}")

    def _fit_weights(self, logged: LoggedFleet, weights: np.ndarray, found: Evidence | None = None):
        self._check()
        found = found if found is not None else evidence(logged)
        fleet = logged.fleet
        tables: dict[tuple, _Table] = {}
        w = np.asarray(weights, dtype=float)[found.robot]
        for k, plan in enumerate(fleet.plans):
            key = task_key(plan.task)
            if key not in tables:
                S, A = plan.mdp.n_states, plan.mdp.n_actions
                tables[key] = _Table(plan, np.zeros((S, A)), np.zeros((S, A)))
        # robots of one task share its MDP (planner.scenario.plan_fleet), so one state numbering
        table_of = np.array([list(tables).index(task_key(p.task)) for p in fleet.plans])[found.robot]
        for j, table in enumerate(tables.values()):
            rows = np.flatnonzero(table_of == j)
            np.add.at(table.kept, found.state[rows], found.actions[rows] * w[rows, None])
            np.add.at(table.everyone, found.state[rows], found.actions[rows])
        self.tables_ = tables
        self.evidence_ = {"records": int(len(found.robot)), "inferred": found.inferred, "skipped": found.skipped}
        return self

    # -- deployment ------------------------------------------------------------------------------
    def _table_counts(self, table: _Table, plan) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The table's counts in `plan`'s state numbering (zero rows for states it lacks)."""
        if plan.mdp is table.plan.mdp:
            return table.kept, table.everyone, table.expert
        where = table.plan.mdp.index_of(plan.mdp.states)
        take = lambda c: None if c is None else np.where((where >= 0)[:, None], c[np.maximum(where, 0)], 0.0)  # noqa
        return take(table.kept), take(table.everyone), take(table.expert)

    def policy(self, plan, repair: bool = True) -> np.ndarray:
        """The learned policy for a robot (of any fleet on the map) with `plan`'s task; `repair`
        makes it sure to finish (`policies.finishing`)."""
        table = self.tables_.get(task_key(plan.task))
        if table is None:
            return plan.policy.copy()
        kept, everyone, expert = self._table_counts(table, plan)
        q = plan.task_solution.q_values
        policy, has = _choose(kept, q)
        policy = np.where(has, policy, plan.policy)
        if self.backoff == "all":
            fallback, has_any = _choose(everyone, q)
            policy = np.where(~has & has_any, fallback, policy)
        if expert is not None:
            answer, asked = _choose(expert, q)
            policy = np.where(asked, answer, policy)
        return finishing(plan, policy) if repair else policy

    def policies(self, fleet) -> list[np.ndarray]:
        """One learned policy per robot of `fleet` (robots of one task get the same)."""
        cache: dict[int, np.ndarray] = {}
        out = []
        for plan in fleet.plans:
            if id(plan.mdp) not in cache:
                cache[id(plan.mdp)] = self.policy(plan)
            out.append(cache[id(plan.mdp)])
        return out

    def document(self, source: dict | None = None) -> dict:
        """The learned policy as a policy file (metareasoner.policies): one entry per task."""
        if not getattr(self, "tables_", None):
            raise ValueError("nothing learnt: call fit first")
        world = self.world_
        return {"format": FORMAT, "version": VERSION, "map": world.name, "domain": world.domain,
                "source": source or {}, "policies": [entry(t.plan, self.policy(t.plan)) for t in self.tables_.values()]}


class BehaviourCloning(TabularImitation):
    """Plain behaviour cloning: every logged robot's actions count alike."""

    def fit(self, logged: LoggedFleet) -> "BehaviourCloning":
        self.world_ = logged.fleet.scenario.world
        return self._fit_weights(logged, np.ones(len(logged.fleet.plans)))


class EV2BC(TabularImitation):
    """Exchange-value-based behaviour cloning (paper 000, Def. 4.5).

    threshold   imitate robots whose estimated exchange value (desirability: NSE removed from
                their episodes' collective score, relative to a random replacement; per episode)
                is at least this; 0 keeps the robots better than a random replacement
    weighting   "threshold" (kept robots count 1, the others 0) or "weighted" (weight
                max(0, EV - threshold))
    backoff     "task" or "all" (see the module)
    min_pairs, n_clusters, n_restarts, clustering, seed: the estimator's (blame.ExchangeValueFromLogs)
    Fitted: robots_, exchange_values_ (NaN: not estimated, never kept), ev_sources_, weights_, kept_.
    """

    def __init__(self, threshold: float = 0.0, weighting: str = "threshold", backoff: str = "task",
                 min_pairs: int = 10, n_clusters: int = 3, n_restarts: int = 10, clustering: str = "auto",
                 seed: int = 0) -> None:
        super().__init__(backoff)
        self.threshold = threshold
        self.weighting = weighting
        self.min_pairs = min_pairs
        self.n_clusters = n_clusters
        self.n_restarts = n_restarts
        self.clustering = clustering
        self.seed = seed

    def fit(self, logged: LoggedFleet) -> "EV2BC":
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(f"threshold must be a finite number, got {t!r}")
        log = logged.log
        estimator = ExchangeValueFromLogs(min_pairs=self.min_pairs, n_clusters=self.n_clusters,
                                          n_restarts=self.n_restarts, clustering=self.clustering, seed=self.seed)
        estimator.fit(log.group_ids(), log.scores, log.robots)
        ev = -estimator.predict()  # the estimator's EV is NSE added; desirability is NSE removed
        finite = np.isfinite(ev)
        if self.weighting == "threshold":
            weights = (finite & (np.nan_to_num(ev, nan=-np.inf) >= t)).astype(float)
        else:
            weights = np.where(finite, np.maximum(np.nan_to_num(ev) - t, 0.0), 0.0)
        self.robots_ = log.robots
        self.exchange_values_ = ev
        self.ev_sources_ = tuple(estimator.source_)
        self.weights_ = weights
        self.kept_ = tuple(r for r, w in zip(log.robots, weights) if w > 0)
        if not self.kept_:
            warnings.warn(f"no robot's exchange value reaches the threshold {t}: every state backs off",
                          RuntimeWarning, stacklevel=2)
        self.world_ = logged.fleet.scenario.world
        return self._fit_weights(logged, weights)


class QueriedImitation(TabularImitation):
    """A learner that queries the expert where it and single-robot deviations go (BLADES-style).

    base        the learner fitted on the log first (default BehaviourCloning()); None: start
                from nothing (every state backs off until asked)
    max_rounds  rounds of rollouts-and-queries at most (it stops earlier when no new state is reached)
    Fitted: queries_ (expert answers asked, per robot and state), rounds_, states_ (states of the
    expert fleet's robots, for scale).
    """

    def __init__(self, base=None, max_rounds: int = 50, backoff: str = "task") -> None:
        super().__init__(backoff)
        self.base = base
        self.max_rounds = max_rounds

    def fit(self, logged: LoggedFleet, expert_fleet, expert_policies: Sequence[np.ndarray]) -> "QueriedImitation":
        self._check()
        if len(expert_policies) != len(expert_fleet.plans):
            raise ValueError(f"need one expert policy per robot ({len(expert_fleet.plans)}), got {len(expert_policies)}")
        base = BehaviourCloning(backoff=self.backoff) if self.base is None else clone(self.base)
        if logged is not None:
            base.fit(logged)
            self.tables_ = dict(base.tables_)
            self.evidence_ = base.evidence_
        else:
            self.tables_, self.evidence_ = {}, {"records": 0, "inferred": 0, "skipped": 0}
        self.world_ = expert_fleet.scenario.world
        for plan in expert_fleet.plans:  # tasks only the expert fleet has start empty
            key = task_key(plan.task)
            if key not in self.tables_:
                S, A = plan.mdp.n_states, plan.mdp.n_actions
                self.tables_[key] = _Table(plan, np.zeros((S, A)), np.zeros((S, A)))
        for key, table in self.tables_.items():
            self.tables_[key] = _Table(table.plan, table.kept, table.everyone, np.zeros_like(table.kept))
        asked = [np.zeros(p.mdp.n_states, dtype=bool) for p in expert_fleet.plans]
        queries, rounds = 0, 0
        for rounds in range(1, int(self.max_rounds) + 1):
            new = 0
            for i, plan in enumerate(expert_fleet.plans):
                # the learner as learnt, before the finishing repair: the repair would send it back
                # to task-optimal actions where the expert has not been asked yet, never to ask there
                reach = _reachable(plan.mdp, [self.policy(plan, repair=False), plan.policy])
                ask = reach & ~asked[i]
                if not ask.any():
                    continue
                table = self.tables_[task_key(plan.task)]
                states = np.flatnonzero(ask)
                where = states if plan.mdp is table.plan.mdp else table.plan.mdp.index_of(plan.mdp.states[states])
                np.add.at(table.expert, (where, np.asarray(expert_policies[i])[states]), 1.0)
                asked[i] |= ask
                new += len(states)
            queries += new
            if new == 0:
                break
        self.queries_ = queries
        self.rounds_ = rounds
        self.states_ = int(sum(p.mdp.n_states for p in expert_fleet.plans))
        return self


def _reachable(mdp, policies: Sequence[np.ndarray]) -> np.ndarray:
    """(S,) bool: states reachable from the start when any of `policies` may be followed in any
    state (the learner's, a deviation, switching between them)."""
    graph = sum((mdp.policy_matrix(np.asarray(p)) != 0).astype(np.int8) for p in policies).T.tocsr()
    reach = np.zeros(mdp.n_states, dtype=bool)
    reach[mdp.start] = True
    frontier = reach.copy()
    while frontier.any():
        grown = (graph @ frontier.astype(np.int8)) > 0
        frontier = grown & ~reach
        reach |= grown
    return reach


# -- a log that mixes careful and careless robots (the experiments and tests) --------------------
@dataclass
class MixedLog:
    """Careful robots (the expert's mitigated policies) and careless ones (naive) on one map.

    `fleet` has one robot per task (the first `n_robots` distinct tasks the scenario generator
    draws from `seed`).
    `fleet` is the fleet the expert mitigated (and where learners are deployed: the learned
    policies are per task, the logged robots are others); `expert` its mitigated policies. The
    log's robots are `careful-<id>` and `careless-<id>`, one of each per task of `fleet`; each
    episode draws one of the two for every task (seeded).
    """

    fleet: object
    expert: list
    pool: object  # the logged robots' Fleet: careful ones first
    pool_policies: list
    log: object  # FleetLog
    careful: tuple[str, ...]
    careless: tuple[str, ...]
    changed: tuple[bool, ...] = field(default=())  # per task: the expert's policy differs from naive


def mixed_log(world, n_robots: int, episodes: int, seed: int = 0, method: str = "best-response",
              update_fraction: float = 1.0, rounds: int = 5, backend="serial", budget="10%") -> MixedLog:
    from dataclasses import replace

    from planner.scenario import Scenario, generate_scenario

    from .fleetlog import simulate_log
    from .mitigation import Fleet, Mitigation

    # one robot per task: the learners keep one policy per task, so the expert's fleet must not
    # ask two robots of one task to behave differently (mitigation often does)
    drawn = generate_scenario(world, min(4 * n_robots, 100_000), seed=seed, slack=budget)
    distinct: dict[tuple, object] = {}
    for task in drawn.tasks:
        distinct.setdefault(task_key(task), task)
    if len(distinct) < n_robots:
        raise ValueError(f"map {world.name!r} offers only {len(distinct)} distinct tasks from seed {seed}, "
                         f"not {n_robots}")
    tasks = tuple(distinct.values())[:n_robots]
    scenario = Scenario(world, tasks, drawn.budget)
    pool_tasks = tuple(replace(t, robot_id=f"careful-{t.robot_id}") for t in tasks) + \
        tuple(replace(t, robot_id=f"careless-{t.robot_id}") for t in tasks)
    pool = Fleet.plan(Scenario(world, pool_tasks, scenario.budget), backend=backend)
    n = len(tasks)
    # the expert's fleet shares the pool's solved MDPs (same tasks)
    fleet = Fleet(scenario, [replace(p, task=t) for p, t in zip(pool.plans[:n], tasks)], pool.penalty,
                  pool.static_feature, pool.dynamic_feature, pool.n_values, pool.plan_seconds)
    result = Mitigation(method=method, update_fraction=update_fraction, rounds=rounds, seed=seed,
                        backend=backend).run(fleet)
    expert = [np.asarray(p) for p in result.policies]
    pool_policies = expert + [p.policy for p in pool.plans[n:]]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 15]))
    careless = rng.random((episodes, n)) < 0.5
    groups = np.concatenate([~careless, careless], axis=1)
    log = simulate_log(pool, pool_policies, episodes, seed=seed, groups=groups,
                       source={"command": "metareasoner.imitation.mixed_log", "method": method, "seed": seed})
    changed = tuple(not np.array_equal(e, p.policy) for e, p in zip(expert, fleet.plans))
    return MixedLog(fleet, expert, pool, pool_policies, log, tuple(t.robot_id for t in pool_tasks[:n]),
                    tuple(t.robot_id for t in pool_tasks[n:]), changed)


__all__ = ["BACKOFFS", "WEIGHTINGS", "BehaviourCloning", "EV2BC", "Evidence", "MixedLog", "QueriedImitation",
           "exact_exchange_contrasts",
           "TabularImitation", "evidence", "mixed_log"]


def exact_exchange_contrasts(mixed: MixedLog) -> np.ndarray:
    """(n,) per task of `mixed.fleet`: the exact expected episode score of the log's groups
    with its careless robot minus with its careful one, the other tasks' robots drawn as the log
    draws them (careful or careless with probability 1/2, independently). It is what the
    careful robot's exchange value against its careless twin estimates.

    Robots' types are independent and so are their moves given their types, so a robot of
    unknown type is a robot whose occupancy is the mixture of the two; J_N is exact through the
    Poisson-binomial counts (monitor.FleetCounts), and one robot's swap changes it exactly."""
    from .monitor import FleetCounts

    fleet = mixed.fleet
    careful = fleet.occupancy(mixed.expert)
    careless = fleet.occupancy([p.policy for p in fleet.plans])
    counts = FleetCounts(fleet.penalty, 0.5 * (careful + careless))
    return np.array([counts.change(k, counts.cell_probabilities(careless[k]))
                     - counts.change(k, counts.cell_probabilities(careful[k])) for k in range(len(fleet.plans))])


# -- the side-by-side comparison (docs/LOGS.md) ---------------------------------------------------
def compare_learners(world, n_robots: int = 6, episodes: int = 300, seed: int = 0, rounds: int = 2) -> list[dict]:
    """Naive, the expert, BC, EV2BC and the queried learner on one map's mixed log: exact J_N,
    the gaps against the expert (metareasoner.gaps) and whether every robot finishes."""
    from .gaps import gaps

    mixed = mixed_log(world, n_robots, episodes, seed=seed, rounds=rounds)
    logged = LoggedFleet.bind(mixed.log, world)
    fleet = mixed.fleet
    learners = {"bc": BehaviourCloning().fit(logged), "ev2bc": EV2BC().fit(logged),
                "queried": QueriedImitation().fit(logged, fleet, mixed.expert)}
    candidates = {"naive": [p.policy for p in fleet.plans], "expert": mixed.expert,
                  **{k: v.policies(fleet) for k, v in learners.items()}}
    rows = []
    for name, policies in candidates.items():
        g = gaps(fleet, policies, mixed.expert)
        finish = all(bool(finishes_surely(p.mdp, q)[p.mdp.start]) for p, q in zip(fleet.plans, policies))
        extra = ""
        if name == "ev2bc":
            extra = f"kept {len(learners[name].kept_)} of {len(mixed.log.robots)}"
        elif name == "queried":
            extra = f"{learners[name].queries_} queries ({learners[name].states_} states)"
        rows.append({"map": world.name, "learner": name, "nse": g.learner.nse, "nse_gap": g.nse_gap,
                     "value_gap": g.value_gap, "regret": g.learner.regret, "regret_gap": g.regret_gap,
                     "finish": finish, "note": extra})
    return rows


def _main(argv=None) -> int:
    import argparse
    import shlex
    import sys
    import time
    from pathlib import Path

    from tqdm import tqdm

    from planner.maps import load_map

    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="python -m metareasoner.imitation",
                                     description="BC, EV2BC and the queried learner side by side on mixed logs")
    parser.add_argument("--maps", nargs="+", default=[str(p.relative_to(root)) for d in ("salp", "overcooked", "warehouse")
                                                      for p in sorted((root / "maps" / d).glob(f"{d}-[0-9].map"))])
    parser.add_argument("--robots", type=int, default=6)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="the expert's best-response rounds")
    parser.add_argument("--out", default="docs/results/imitation.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for path in tqdm(args.maps, desc="maps", file=sys.stderr):
        rows += compare_learners(load_map(root / path if not Path(path).is_absolute() else path), args.robots,
                                 args.episodes, args.seed, args.rounds)
    command = "python -m metareasoner.imitation " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = ["# BC, EV2BC and the queried learner side by side", "",
             f"`{command.strip()}` ({(time.perf_counter() - start) / 60:.1f} min). Per map: {args.robots} robots, one "
             f"per task; the expert is exact best response ({args.rounds} rounds); the log has {args.episodes} "
             "episodes, each with the careful (expert) or careless (naive) robot of every task at random. Learners "
             "are deployed on the expert's fleet. J_N exact; gaps against the expert (docs/LOGS.md): value gap = "
             "largest task-value loss of a robot, regret = largest gain of a robot by deviating to its task-optimal "
             "policy.", "",
             "| map | learner | J_N | J_N gap | value gap | regret | regret gap | all finish | |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['map']} | {r['learner']} | {r['nse']:.3f} | {r['nse_gap']:+.3f} | {r['value_gap']:+.3f} | "
                     f"{r['regret']:.3f} | {r['regret_gap']:+.3f} | {'yes' if r['finish'] else 'NO'} | {r['note']} |")
    by = lambda name: [r for r in rows if r["learner"] == name]  # noqa: E731
    wins = sum(e["nse"] < b["nse"] for e, b in zip(by("ev2bc"), by("bc")))
    q_le_bc = sum(q["regret_gap"] <= b["regret_gap"] + 1e-9 for q, b in zip(by("queried"), by("bc")))
    lines += ["", f"EV2BC's J_N is below BC's on {wins} of {len(by('bc'))} maps. The queried learner's regret gap "
              f"is at most BC's on {q_le_bc} of {len(by('bc'))} maps; its absolute regret gap is "
              f"{max(abs(q['regret_gap']) for q in by('queried')):.1e} at most."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
