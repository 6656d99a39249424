"""NSE mitigation: monitor the joint policy, compile local penalties, select robots, replan them
within their task budgets, and accept only replans that lower the fleet's exact NSE penalty
(docs/FORMULATION.md sections 5-10).

`Mitigation(method=...)` runs the loop, written once:

    monitor -> compile penalties (the method's strategy) -> select -> replan -> accept -> report

A method is a *strategy* (`strategies.PenaltyStrategy`): from the fleet, the current policies,
the exact count distributions and (if it asks for them) Monte Carlo rollouts, it produces one
score per robot (its blame, what ranks it) and the local penalty each selected robot replans
with. `METHODS` maps a method's name to its strategy.
"""
from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from planner.backends import Backend, get_backend
from planner.budget import BudgetedPolicy
from planner.domains import get_domain
from planner.scenario import RobotPlan, Scenario, plan_fleet
from planner.solvers import evaluate_from_start, policy_evaluation, state_distributions

from .monitor import (
    FleetCounts,
    JointVisits,
    MonitorReport,
    RobotModel,
    _exact_nse_rate,
    cell_occupancy,
    monte_carlo_monitor,
    robot_model,
)
from .penalty import NSEPenalty
from .strategies import REFERENCES, STRATEGIES, PenaltyStrategy, RoundContext

METHODS = tuple(STRATEGIES)
PHASES = ("plan", "monitor", "blame", "generalise", "replan", "accept")
#: a replan is accepted when it lowers J_N by more than this fraction of J_N (rounding)
ACCEPT_TOLERANCE = 1e-12
#: a fleet keeps the cell occupancy of at most this many behaviours (about 20 KB each)
MAX_KEPT_OCCUPANCIES = 50_000


@dataclass
class Fleet:
    """The metareasoner's view of a scenario: every robot's solved MDP and the NSE penalty."""

    scenario: Scenario
    plans: list[RobotPlan]
    penalty: NSEPenalty
    static_feature: str
    dynamic_feature: str
    n_values: int
    plan_seconds: float = 0.0
    _valid: dict = field(default_factory=dict, repr=False)  # id(MDP) -> valid_table
    _valid_stacked: tuple | None = field(default=None, repr=False)  # (tables end to end, each robot's offset)
    _occupancy: dict = field(default_factory=dict, repr=False)  # behaviour key -> (H+1, Z+1, V)
    _regret: dict = field(default_factory=dict, repr=False)  # behaviour key -> task regret from the start
    #: the last joint policies asked for: ((behaviour keys, report, counts), (behaviour keys, report))
    _joint: tuple = field(default=(None, None), repr=False)
    _rollouts: tuple | None = field(default=None, repr=False)  # ((behaviour keys, episodes, seed), visits)

    @classmethod
    def plan(cls, scenario: Scenario, progress: Callable[[int, int], None] | None = None,
             backend: "str | Backend" = "local") -> "Fleet":
        """Plan every robot; distinct tasks are solved as jobs of `backend` (planner.backends)."""
        domain = get_domain(scenario.world.domain)
        start = time.perf_counter()
        plans = plan_fleet(scenario, progress=progress, backend=backend)
        penalty = NSEPenalty.from_world(scenario.world, domain.dynamic_feature)
        return cls(scenario, plans, penalty, domain.static_feature, domain.dynamic_feature.name,
                   len(domain.dynamic_feature.values), time.perf_counter() - start)

    @property
    def n_zones(self) -> int:
        return len(self.scenario.world.zone_names)

    @property
    def horizon(self) -> int:
        return self.scenario.world.horizon

    @property
    def budgets(self) -> np.ndarray:
        """(n,) each robot's task budget in task-value units (docs/FORMULATION.md 2)."""
        return np.array([self.scenario.budget.amount(p.task_value) for p in self.plans])

    def models(self, policies: Sequence[np.ndarray]) -> list[RobotModel]:
        return [robot_model(p, self.static_feature, self.dynamic_feature, pol) for p, pol in zip(self.plans, policies)]

    def occupancy(self, policies: Sequence[np.ndarray]) -> np.ndarray:
        """(n, H+1, Z+1, V): P(robot i in zone z with value v at step t), computed once per
        behaviour (kept: the acceptance step and the final report ask again for the same ones)."""
        keys = self.behaviour_keys(policies)
        if len(self._occupancy) > MAX_KEPT_OCCUPANCIES:
            self._occupancy.clear()
        missing: dict[tuple, int] = {}
        for i, key in enumerate(keys):
            if key not in self._occupancy:
                missing.setdefault(key, i)
        if missing:
            robots = [robot_model(self.plans[i], self.static_feature, self.dynamic_feature, policies[i])
                      for i in missing.values()]
            for key, occ in zip(missing, cell_occupancy(robots, self.horizon, self.n_zones, self.n_values)):
                self._occupancy[key] = occ
        return np.stack([self._occupancy[key] for key in keys]) if keys else \
            np.zeros((0, self.horizon + 1, self.n_zones + 1, self.n_values))

    def behaviour_key(self, i: int, policy: np.ndarray) -> tuple:
        """Robots with equal keys move identically in distribution (one MDP, one policy)."""
        policy = np.asarray(policy)
        return (id(self.plans[i].mdp), policy.dtype.str, policy.shape, policy.tobytes())

    def behaviour_keys(self, policies: Sequence[np.ndarray]) -> list[tuple]:
        """`behaviour_key` of every robot; a policy array shared by robots is read once."""
        seen: dict[tuple, tuple] = {}
        keys = []
        for i, policy in enumerate(policies):
            fast = (id(self.plans[i].mdp), id(policy))
            if fast not in seen:
                seen[fast] = self.behaviour_key(i, policy)
            keys.append(seen[fast])
        return keys

    def counts(self, policies: Sequence[np.ndarray]) -> FleetCounts:
        """The exact count distributions of the joint policy, changeable one robot at a time."""
        return self.exact_and_counts(policies)[1]

    def exact(self, policies: Sequence[np.ndarray]) -> MonitorReport:
        """The exact monitor's report (J_N, NSE-state rate, per step and per zone)."""
        return self._exact(policies, want_counts=False)[0]

    def exact_and_counts(self, policies: Sequence[np.ndarray]) -> tuple[MonitorReport, FleetCounts]:
        """The exact report and count distributions of the joint policy (counts of its own: the
        caller may swap robots in them). The last joint policy's are kept: every mitigation of
        a fleet starts from its task policies, and a run that changes nothing ends there."""
        return self._exact(policies, want_counts=True)

    def _exact(self, policies, want_counts: bool) -> tuple[MonitorReport, FleetCounts | None]:
        keys = self.behaviour_keys(policies)
        with_counts, report_only = self._joint
        if with_counts is not None and with_counts[0] == keys:
            return with_counts[1], with_counts[2].copy() if want_counts else None
        if not want_counts and report_only is not None and report_only[0] == keys:
            return report_only[1], None
        counts = FleetCounts(self.penalty, self.occupancy(policies), keys=keys)
        report = self.report_of(policies, counts)
        # a report asked for alone is kept apart, without its counts (no copy to make), and
        # leaves the last counts asked for in place
        self._joint = ((keys, report, counts.copy()), report_only) if want_counts else (with_counts, (keys, report))
        return report, counts

    def report_of(self, policies: Sequence[np.ndarray], counts: FleetCounts) -> MonitorReport:
        """The exact report of `policies` from `counts`, their count distributions (built for
        them, or swapped to them robot by robot: equal up to rounding, and far cheaper than a
        build when a run has changed a few robots)."""
        per_step, per_zone = counts.breakdown()
        rate = _exact_nse_rate(self.occupancy(policies), counts.cells, self.scenario.world.min_count,
                               counts.behaviours)
        return MonitorReport("exact", float(per_step.sum()), rate, per_step, per_zone)

    def rollouts(self, policies: Sequence[np.ndarray], episodes: int, seed: int | None) -> JointVisits:
        """The joint states visited in `episodes` seeded Monte Carlo rollouts of `policies`
        (`monte_carlo_monitor`). The last ones asked for are kept, read-only: every method run
        on one fleet rolls out the same task policies in its first round."""
        key = (self.behaviour_keys(policies), episodes, seed)
        if self._rollouts is not None and self._rollouts[0] == key:
            return self._rollouts[1]
        _, visits = monte_carlo_monitor(self.penalty, self.models(policies), self.horizon, episodes=episodes,
                                        seed=seed)
        for array in (visits.states, visits.zone, visits.value, visits.penalty):
            array.setflags(write=False)
        self._rollouts = (key, visits)
        return visits

    def keep_occupancy(self, i: int, policy: np.ndarray, occupancy: np.ndarray) -> None:
        """Keep `occupancy`, computed elsewhere (a replan's worker), as robot i's under `policy`."""
        key = self.behaviour_key(i, policy)
        if key not in self._occupancy:
            if len(self._occupancy) > MAX_KEPT_OCCUPANCIES:
                self._occupancy.clear()
            self._occupancy[key] = occupancy

    def task_regret(self, i: int, policy: np.ndarray) -> float:
        """Robot i's task regret from its start under `policy`, V1*(s0) - V1^pi(s0), by exact
        policy evaluation (0 below rounding), once per behaviour (every method's report asks for
        the task policies' again)."""
        key = self.behaviour_key(i, policy)
        if key not in self._regret:
            plan = self.plans[i]
            # a deterministic policy on the states it reaches only; a stochastic one (S, A), or
            # one not sure to finish from the start, on every state
            value = evaluate_from_start(plan.mdp, policy) if np.ndim(policy) == 1 else None
            if value is None:
                value = policy_evaluation(plan.mdp, policy)[plan.mdp.start]
            self.keep_regret(i, policy, plan.task_value - value)
        return self._regret[key]

    def keep_regret(self, i: int, policy: np.ndarray, regret: float) -> None:
        """Keep V1*(s0) - V1^pi(s0), measured elsewhere by the same exact evaluation (a replan's
        search), as robot i's under `policy`."""
        if len(self._regret) > MAX_KEPT_OCCUPANCIES:
            self._regret.clear()
        # policy evaluation and value iteration differ by rounding (~1e-14)
        task_value = self.plans[i].task_value
        self._regret[self.behaviour_key(i, policy)] = regret if regret > 1e-9 * max(1.0, abs(task_value)) else 0.0

    def robot_occupancy(self, i: int, policy: np.ndarray) -> np.ndarray:
        """(H+1, Z+1, V) for robot i following `policy`."""
        key = self.behaviour_key(i, policy)
        if key not in self._occupancy:
            self.keep_occupancy(i, policy, cell_occupancy(
                [robot_model(self.plans[i], self.static_feature, self.dynamic_feature, policy)],
                self.horizon, self.n_zones, self.n_values)[0])
        return self._occupancy[key]

    def state_distribution(self, i: int, policy: np.ndarray) -> np.ndarray:
        """(H+1, S_i): robot i's forward state distribution under `policy`."""
        return state_distributions(self.plans[i].mdp, policy, self.horizon)

    def cells_of(self, i: int) -> np.ndarray:
        """(S_i,) the (zone, value) cell index z * V + v of each of robot i's states."""
        model = robot_model(self.plans[i], self.static_feature, self.dynamic_feature)
        return model.zone * self.n_values + model.value

    def valid_table(self, i: int) -> np.ndarray:
        """(S_i, V) bool: robot i's state with its dynamic value set to v is reachable."""
        mdp = self.plans[i].mdp
        if id(mdp) not in self._valid:
            self._valid[id(mdp)] = valid_value_table(self.plans[i], self.dynamic_feature, self.n_values)
        return self._valid[id(mdp)]

    def valid_of(self, states: np.ndarray) -> np.ndarray:
        """(B, n, V) bool: `valid_table(i)[states[:, i]]` for every robot i of the joint states
        `states` (B, n), in one gather from the distinct MDPs' tables laid end to end."""
        if self._valid_stacked is None:
            first: dict[int, int] = {}
            for i, plan in enumerate(self.plans):
                first.setdefault(id(plan.mdp), i)
            tables = [self.valid_table(i) for i in first.values()]
            start = dict(zip(first, np.cumsum([0] + [len(t) for t in tables[:-1]])))
            self._valid_stacked = (np.concatenate(tables),
                                   np.array([start[id(plan.mdp)] for plan in self.plans], dtype=np.int64))
        table, offsets = self._valid_stacked
        return table[np.asarray(states) + offsets]


def valid_value_table(plan: RobotPlan, dynamic_feature: str, n_values: int) -> np.ndarray:
    """(S, V) bool: the robot's state with its dynamic value set to v is reachable (docs/FORMULATION.md 5)."""
    mdp = plan.mdp
    col = mdp.feature_index(dynamic_feature)
    rows = np.repeat(mdp.states[:, None, :], n_values, axis=1)
    rows[:, :, col] = np.arange(n_values)[None, :]
    return (mdp.index_of(rows.reshape(-1, rows.shape[-1])) >= 0).reshape(mdp.n_states, n_values)


@dataclass
class RobotOutcome:
    robot_id: str
    blame: float  # total score per episode (its blame), summed over rounds
    updated: bool  # follows a new policy at the end
    task_regret: float  # V1*(s0) - V1^pi(s0), exact policy evaluation
    slack: float  # its task budget, task-value units
    task_cost: float  # |V1*(s0)|, its optimal expected task cost
    lvi_slack: float  # the LVI slack delta (or the method's setting) of its final replan; 0 if none
    rank: int | None  # its rank by score in the first round it was scored (1 = most blamed)
    selected: int  # rounds in which it was selected to replan
    rejected: int  # of those, rounds whose replan the acceptance step refused


@dataclass
class RoundReport:
    round: int
    nse: float  # exact J_N after the round
    accepted: list[str]
    rejected: list[str]
    cutoff: float  # the score of the last robot selected (0 if none)

    def as_dict(self) -> dict:
        return {"round": self.round, "nse": self.nse, "accepted": self.accepted, "rejected": self.rejected,
                "cutoff": self.cutoff}


@dataclass
class MitigationResult:
    method: str
    before: MonitorReport
    after: MonitorReport
    robots: list[RobotOutcome]
    rounds: list[RoundReport]
    seconds: dict[str, float]
    policies: list[np.ndarray] = field(repr=False)
    local_penalties: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    counterfactual_share: float | None = None
    nse_after_orders: float | None = None  # J_N once the operators' desired outcomes applied
    budget: str = ""

    @property
    def updated(self) -> list[str]:
        return [r.robot_id for r in self.robots if r.updated]

    def as_dict(self) -> dict:
        def clean(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "method": self.method,
            "budget": self.budget,
            "nse_before": self.before.total_penalty,
            "nse_after_orders": self.nse_after_orders,
            "nse_after": self.after.total_penalty,
            "nse_state_rate_before": clean(self.before.nse_state_rate),
            "nse_state_rate_after": clean(self.after.nse_state_rate),
            "updated": self.updated,
            "rounds": [r.as_dict() for r in self.rounds],
            "counterfactual_share": clean(self.counterfactual_share),
            "seconds": self.seconds,
            "robots": [{"id": r.robot_id, "blame": r.blame, "updated": r.updated, "task_regret": r.task_regret,
                        "slack": r.slack, "task_cost": r.task_cost, "lvi_slack": r.lvi_slack, "rank": r.rank,
                        "selected": r.selected, "rejected": r.rejected} for r in self.robots],
        }


class Mitigation(BaseEstimator):
    """Detect and mitigate NSEs for a planned fleet.

    Parameters (scikit-learn style, all in the constructor):
      method            one of METHODS (its strategy: `metareasoner.strategies`)
      update_fraction   f: the ceil(f * n) highest-scored robots replan each round
      rounds            round limit (rounds also stop when J_N <= tolerance or none is accepted)
      tolerance         tau: stop when the exact J_N is at most this
      episodes          Monte Carlo episodes whose visited joint states are blamed, at most: large
                        fleets use fewer, so that a round blames about `max_samples` (robot, step)
                        pairs (each episode of n robots holds n (H + 1) of them), never fewer than 2
      max_samples       see `episodes`
      seed              seeds the rollouts (and the default regressor)
      regressor         any estimator with fit/predict for generalised RECON (default: a regression tree, strategies.fit_regression_tree)
      max_training_pairs  generalised RECON subsamples its training set to this size
      selfish, care     alpha1, alpha2 of the considerate reward
      desired_outcomes  `rules.DesiredOutcome`s: orders for their proxy robots, applied first, as asked
      backend           where the selected robots replan: "local" (this machine's cores), "serial",
                        "ray" or a `planner.backends.Backend`; same results
      bisection_steps   how finely each robot's LVI slack is searched to meet its budget
    """

    def __init__(self, method: str = "recon", update_fraction: float = 0.25, rounds: int = 5,
                 tolerance: float = 0.0, episodes: int = 100, seed: int = 0, regressor=None,
                 max_training_pairs: int = 50_000, selfish: float = 1.0, care: float = 2.0,
                 desired_outcomes: tuple = (), backend="local", bisection_steps: int = 6,
                 max_samples: int = 2_000_000) -> None:
        self.method = method
        self.update_fraction = update_fraction
        self.rounds = rounds
        self.tolerance = tolerance
        self.episodes = episodes
        self.seed = seed
        self.regressor = regressor
        self.max_training_pairs = max_training_pairs
        self.selfish = selfish
        self.care = care
        self.desired_outcomes = desired_outcomes
        self.backend = backend
        self.bisection_steps = bisection_steps
        self.max_samples = max_samples

    def strategy(self) -> PenaltyStrategy | None:
        """The method's strategy, built from these parameters (None: naive, nothing replans)."""
        make = STRATEGIES.get(self.method) or REFERENCES.get(self.method)
        if make is None:
            raise ValueError(f"unknown method {self.method!r}; methods: {', '.join(METHODS)}")
        return make(self)

    def _check(self, fleet: Fleet) -> None:
        if self.method not in METHODS and self.method not in REFERENCES:
            raise ValueError(f"unknown method {self.method!r}; methods: {', '.join(METHODS)}")
        f = self.update_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
            raise ValueError(f"update fraction must be in [0, 1], got {f!r}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {self.rounds}")
        if self.episodes < 2:
            raise ValueError(f"episodes must be at least 2, got {self.episodes}")
        if self.method == "exchange" and len(fleet.plans) < 2:
            raise ValueError("exchange value needs at least two robots: it swaps a robot for another one")
        if self.method == "exchange-logs" and len(fleet.plans) < 2:
            raise ValueError(f"exchange value from logs needs at least two robots: it compares logged groups in "
                             f"which one robot stands in for another, and the fleet has {len(fleet.plans)}")

    def run(self, fleet: Fleet, progress: Callable[[str, float], None] | None = None,
            policies: Sequence[np.ndarray] | None = None) -> MitigationResult:
        """Mitigate from `policies` (default: the naive ones); `progress(phase, fraction_done)`."""
        # one session of the backend for every round's replans (local: one pool of workers,
        # which keep each MDP's solver layouts from round to round)
        with get_backend(self.backend).session() as backend:
            return self._run(fleet, progress, policies, backend)

    def _run(self, fleet: Fleet, progress, policies, backend: Backend) -> MitigationResult:
        self._check(fleet)
        strategy = self.strategy()
        report = progress or (lambda phase, done: None)
        seconds = dict.fromkeys(PHASES, 0.0)
        seconds["plan"] = fleet.plan_seconds
        n = len(fleet.plans)
        ids = [p.task.robot_id for p in fleet.plans]
        budgets = fleet.budgets
        start_policies = [p.policy for p in fleet.plans] if policies is None else [np.asarray(p) for p in policies]
        if len(start_policies) != n:
            raise ValueError(f"policies must hold one policy per robot ({n}), got {len(start_policies)}")
        policies = list(start_policies)
        settings = np.zeros(n)
        score_total = np.zeros(n)
        rank: list[int | None] = [None] * n
        selected, rejected_count = np.zeros(n, int), np.zeros(n, int)
        clock = time.perf_counter()
        before, counts = fleet.exact_and_counts(policies)
        seconds["monitor"] += time.perf_counter() - clock

        orders: dict[int, np.ndarray] = {}  # robot -> the desired outcomes' local penalty
        nse_after_orders = None
        if self.desired_outcomes:
            clock = time.perf_counter()
            orders = self._orders_penalties(fleet)
            planned = self._replan_many(None, fleet, [(i, orders[i]) for i in orders], budgets, backend=backend)
            for i, result in zip(orders, planned):  # orders apply as asked: no acceptance step
                policies[i], settings[i] = result.policy, result.setting
                counts.swap(i, counts.cell_probabilities(fleet.robot_occupancy(i, result.policy)),
                            fleet.behaviour_key(i, result.policy))
            nse_after_orders = counts.total()
            seconds["replan"] += time.perf_counter() - clock
        floor_policies = list(policies)  # what the method's own changes are judged against
        floor = counts.total()

        local: dict[int, np.ndarray] = {}  # what each robot last replanned with (beyond its orders)
        brackets: dict[int, dict] = {}  # id(MDP) -> the planners' last brackets on it (this run only)
        rounds: list[RoundReport] = []
        share = None
        k = math.ceil(self.update_fraction * n)
        episodes = self.episodes_for(fleet)
        for round_index in range(self.rounds):
            if strategy is None or k == 0 or counts.total() <= self.tolerance:
                break
            done = round_index / self.rounds
            visits = None
            if strategy.uses_rollouts:
                report("monitor", done)
                clock = time.perf_counter()
                visits = fleet.rollouts(policies, episodes, self.seed + round_index)
                seconds["monitor"] += time.perf_counter() - clock
                if share is None:
                    share = counterfactual_share(fleet, visits)
            report("blame", done)
            context = RoundContext(fleet, policies, counts, visits, round_index, self.seed, episodes)
            clock = time.perf_counter()
            proposal = strategy.propose(context)
            for phase, spent in proposal.seconds.items():
                seconds[phase] += spent
            seconds["blame"] += max(0.0, time.perf_counter() - clock - sum(proposal.seconds.values()))
            scores = np.asarray(proposal.scores, dtype=float)
            score_total += scores
            order = np.argsort(-scores, kind="stable")
            for position, i in enumerate(order):
                if rank[i] is None and scores[i] > 0:
                    rank[i] = position + 1
            screening = max(1, int(getattr(strategy, "screening", 1)))
            ranked = [int(i) for i in order[: k * screening] if scores[i] > 0]
            if not ranked:
                break
            report("replan", done)
            clock = time.perf_counter()
            jobs = []
            for i in ranked:
                new = proposal.penalty(i)
                local[i] = local[i] + new if strategy.accumulates and i in local else new
                jobs.append((i, local[i] + orders[i] if i in orders else local[i]))
            planned = self._replan_many(strategy, fleet, jobs, budgets, brackets, backend)
            seconds["replan"] += time.perf_counter() - clock
            report("accept", done)
            clock = time.perf_counter()
            accepted, rejected = self._accept(fleet, counts, policies, settings, ranked, planned,
                                              limit=k, by_improvement=screening > 1)
            selected[ranked] += 1
            rejected_count[rejected] += 1
            seconds["accept"] += time.perf_counter() - clock
            rounds.append(RoundReport(round_index + 1, counts.total(), [ids[i] for i in accepted],
                                      [ids[i] for i in rejected], float(scores[ranked[-1]])))
            if not accepted:
                break
        report("done", 1.0)
        clock = time.perf_counter()
        # the counts have followed every accepted swap: the final report without a rebuild
        after = fleet.report_of(policies, counts)
        if after.total_penalty > floor and any(a is not b for a, b in zip(policies, floor_policies)):
            # the accepted changes lowered J_N up to rounding only: keep what the run started from
            policies = list(floor_policies)
            after = fleet.exact(policies)
        seconds["monitor"] += time.perf_counter() - clock
        regrets = self._regrets(fleet, policies)
        updated = [policies[i] is not start_policies[i] for i in range(n)]
        robots = [RobotOutcome(ids[i], float(score_total[i]), bool(updated[i]), float(regrets[i]),
                               float(budgets[i]), abs(fleet.plans[i].task_value),
                               float(settings[i]) if updated[i] else 0.0, rank[i], int(selected[i]),
                               int(rejected_count[i])) for i in range(n)]
        return MitigationResult(self.method, before, after, robots, rounds, seconds, policies, local, share,
                                nse_after_orders, str(fleet.scenario.budget))

    def episodes_for(self, fleet: Fleet) -> int:
        """Rollouts per round: `episodes`, or fewer (at least 2) so that they hold about
        `max_samples` (robot, step) pairs."""
        per_episode = len(fleet.plans) * (fleet.horizon + 1)
        return int(max(2, min(self.episodes, self.max_samples // max(1, per_episode))))

    # -- the pieces ------------------------------------------------------------------------

    def _accept(self, fleet: Fleet, counts: FleetCounts, policies: list, settings: np.ndarray,
                ranked: list[int], planned: list[BudgetedPolicy], limit: int,
                by_improvement: bool = False) -> tuple[list[int], list[int]]:
        """Keep a robot's new policy only if it lowers the exact J_N (docs/FORMULATION.md 10), each judged
        against the fleet with the replans accepted before it, at most `limit` of them: in rank
        order, or (`by_improvement`) largest first-judged improvement first."""
        accepted, rejected = [], []
        occupancy: dict[tuple, np.ndarray] = {}

        def cells(i: int, policy: np.ndarray) -> np.ndarray:
            key = (id(fleet.plans[i].mdp), policy.tobytes())
            if key not in occupancy:
                occupancy[key] = counts.cell_probabilities(fleet.robot_occupancy(i, policy))
            return occupancy[key]

        todo = [(i, r) for i, r in zip(ranked, planned) if not np.array_equal(r.policy, policies[i])]
        rejected += [i for i, r in zip(ranked, planned) if np.array_equal(r.policy, policies[i])]
        if by_improvement:
            first = {i: counts.change(i, cells(i, r.policy)) for i, r in todo}
            todo.sort(key=lambda item: first[item[0]])
        threshold = ACCEPT_TOLERANCE * max(1.0, counts.total())
        start = 0
        while start < len(todo):  # runs of robots of one behaviour replanned alike are judged at once
            i, result = todo[start]
            key = fleet.behaviour_key(i, result.policy)
            end = start + 1
            while (end < len(todo) and counts.behaviours[todo[end][0]] == counts.behaviours[i]
                   and fleet.behaviour_key(todo[end][0], todo[end][1].policy) == key):
                end += 1
            run = todo[start:end]
            taken = counts.swap_while_lowering([j for j, _ in run], cells(i, result.policy), key, threshold,
                                               limit - len(accepted))
            for j, planned_j in run[:taken]:
                policies[j], settings[j] = planned_j.policy, planned_j.setting
                accepted.append(j)
            rejected += [j for j, _ in run[taken:]]
            start = end
        return accepted, rejected

    def _orders_penalties(self, fleet: Fleet) -> dict[int, np.ndarray]:
        """Pre-strategy intervention: the local penalty each proxy robot's desired outcomes give it."""
        domain = get_domain(fleet.scenario.world.domain)
        ids = [p.task.robot_id for p in fleet.plans]
        outcomes = [o.validated(fleet.scenario.world, domain.dynamic_feature, ids) for o in self.desired_outcomes]
        out: dict[int, np.ndarray] = {}
        for outcome in outcomes:
            for robot in outcome.robots:
                i = ids.index(robot)
                model = robot_model(fleet.plans[i], fleet.static_feature, fleet.dynamic_feature)
                extra = outcome.local_penalty(model.zone, model.value, fleet.scenario.world, domain.dynamic_feature)
                out[i] = out.get(i, 0.0) + extra
        return out

    def _replan_many(self, strategy: PenaltyStrategy | None, fleet: Fleet, jobs: list[tuple[int, np.ndarray]],
                     budgets: np.ndarray, brackets: dict[int, dict] | None = None,
                     backend: Backend | None = None) -> list[BudgetedPolicy]:
        """Replan each (robot, local penalty) within its budget: one solve per distinct (MDP,
        penalty, budget), run on `backend` (default: `self.backend`) in chunks of robots sharing
        an MDP (each MDP travels once per chunk). `brackets` (id(MDP) -> planner -> bracket) seeds each chunk's
        searches and keeps what the last chunk of each MDP found, for the next call."""
        brackets = {} if brackets is None else brackets
        if not jobs:
            return []
        penalty_of = dict(jobs)
        key_of = {i: (id(fleet.plans[i].mdp), penalty.tobytes(), float(budgets[i])) for i, penalty in jobs}
        first: dict[tuple, int] = {}
        for i, _ in jobs:
            first.setdefault(key_of[i], i)
        groups: dict[int, list[int]] = {}  # id(mdp) -> the robots solved for it
        for key, i in first.items():
            groups.setdefault(key[0], []).append(i)
        size = max(1, math.ceil(len(first) / 8))
        chunks = [members[s:s + size] for members in groups.values() for s in range(0, len(members), size)]
        # the costliest first (robots x states), so that the workers finish together
        chunks.sort(key=lambda c: -len(c) * fleet.plans[c[0]].mdp.n_states)
        # each new policy's cell occupancy, which the acceptance step needs, is computed by the
        # worker that planned it (in parallel) and kept on the fleet
        results = (backend or get_backend(self.backend)).map(
            _replan_chunk, [(strategy, self.bisection_steps, fleet.plans[c[0]],
                             [(penalty_of[i], float(budgets[i])) for i in c],
                             dict(brackets.get(id(fleet.plans[c[0]].mdp), {})),
                             (robot_model(fleet.plans[c[0]], fleet.static_feature, fleet.dynamic_feature),
                              fleet.horizon, fleet.n_zones, fleet.n_values)) for c in chunks])
        solved = {}
        for chunk, (out, found, occupancies) in zip(chunks, results):
            solved.update((key_of[i], result) for i, result in zip(chunk, out))
            brackets[id(fleet.plans[chunk[0]].mdp)] = found
            for result, occupancy in zip(out, occupancies):
                fleet.keep_occupancy(chunk[0], result.policy, occupancy)
                if result.evaluated:
                    fleet.keep_regret(chunk[0], result.policy, result.regret)
        return [solved[key_of[i]] for i, _ in jobs]

    def _regrets(self, fleet: Fleet, policies) -> np.ndarray:
        return np.array([fleet.task_regret(i, policy) for i, policy in enumerate(policies)], dtype=float)


def replan_within_budget(strategy: PenaltyStrategy | None, plan: RobotPlan, penalty: np.ndarray, budget: float,
                         bisection_steps: int = 6, brackets: dict | None = None) -> BudgetedPolicy:
    """The robot's policy for `penalty` within `budget`: the strategy's own planner, or budgeted
    LVI (operators' orders, and every method that does not bring its own). `brackets`: what
    the searches for earlier robots of this plan found (`PenaltyStrategy.replan`)."""
    return (strategy or PenaltyStrategy()).replan(plan, penalty, budget, bisection_steps, brackets)


def _replan_chunk(job) -> tuple[list[BudgetedPolicy], dict, list[np.ndarray]]:
    """A backend job: replan robots that share one plan (MDP), one (penalty, budget) each; each
    robot's search starts from the settings the one before found (robots of one task are often
    judged alike there, see `planner.budget._search`), the first from `brackets`. Returns the
    policies, the brackets after the last robot, and each policy's cell occupancy (H+1, Z+1, V)
    (`model`: the plan's `RobotModel`, with the horizon and the numbers of zones and values)."""
    strategy, steps, plan, work, brackets, (model, horizon, n_zones, n_values) = job
    plan = _resident(plan)
    model = replace(model, mdp=plan.mdp)
    out = [replan_within_budget(strategy, plan, penalty, budget, steps, brackets) for penalty, budget in work]
    robots = [replace(model, policy=result.policy) for result in out]
    return out, brackets, list(cell_occupancy(robots, horizon, n_zones, n_values))


#: in a worker process: the MDPs of the jobs it ran, by `TabularMDP.token`, with the solver
#: layouts they built (kept for the worker's life: a backend session's, `planner.backends`)
_RESIDENT: dict[str, object] = {}
MAX_RESIDENT = 64


def _resident(plan: RobotPlan) -> RobotPlan:
    """`plan` with the MDP this worker process already holds under its token, if any (its
    layouts then built once per worker, not once per job); in the main process, `plan`."""
    if multiprocessing.parent_process() is None:
        return plan
    kept = _RESIDENT.get(plan.mdp.token)
    if kept is None:
        if len(_RESIDENT) >= MAX_RESIDENT:
            _RESIDENT.clear()
        _RESIDENT[plan.mdp.token] = kept = plan.mdp
    return plan if kept is plan.mdp else replace(plan, mdp=kept)


def counterfactual_share(fleet: Fleet, visits) -> float | None:
    """Of the blamed (visited joint state, robot) pairs (R_N > 0 and the robot a participant),
    the share where the robot had a valid counterfactual value (docs/FORMULATION.md 5); None if none blamed."""
    n = len(fleet.plans)
    states = visits.states.reshape(-1, n)
    zone, value = visits.zone.reshape(-1, n), visits.value.reshape(-1, n)
    blamed = fleet.penalty.participants(zone, value) & (visits.penalty.reshape(-1)[:, None] > 0)
    if not blamed.any():
        return None
    has = np.zeros_like(blamed)
    for i in range(n):
        rows = np.flatnonzero(blamed[:, i])
        if len(rows):
            valid = fleet.valid_table(i)[states[rows, i]].copy()  # (r, V)
            valid[np.arange(len(rows)), value[rows, i]] = False  # another value than its own
            has[rows, i] = valid.any(axis=1)
    return float(has[blamed].mean())


def mitigate(scenario: Scenario, method: str = "recon", progress=None, **params) -> MitigationResult:
    """Plan the fleet and run one mitigation (a convenience over Fleet.plan + Mitigation.run)."""
    fleet = Fleet.plan(scenario)
    return Mitigation(method=method, **params).run(fleet, progress=progress)


__all__ = ["METHODS", "PHASES", "Fleet", "Mitigation", "MitigationResult", "RobotOutcome", "RoundReport",
           "counterfactual_share", "mitigate", "replan_within_budget", "valid_value_table"]
