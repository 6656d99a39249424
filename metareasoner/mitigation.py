"""NSE mitigation: monitor the joint policy, blame robots, compile local penalties and
make the most-blamed robots replan with LVI (MATH.md sections 5-8).

`Mitigation(method=...)` is the one entry point; every method of section 7 plugs in
either a blame method (RECON, difference reward, WLU, D++, Shapley, exchange value from the
model or from logs),
a generaliser of blame (generalised RECON with or without counterfactual data) or its
own reward (considerate reward).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestRegressor

from planner.backends import Backend, get_backend
from planner.domains import get_domain
from planner.scenario import RobotPlan, Scenario, plan_fleet
from planner.solvers import (
    lexicographic_policy_that_finishes,
    policy_evaluation,
    value_iteration,
)

from .blame import (
    CounterfactualBlame,
    DifferenceReward,
    DPlusPlus,
    ExchangeValue,
    ExchangeValueFromLogs,
    ShapleyBlame,
    WonderfulLifeUtility,
    recon_split,
)
from .monitor import (
    MonitorReport,
    RobotModel,
    cell_occupancy,
    exact_monitor,
    monte_carlo_monitor,
    poisson_binomial,
    robot_model,
)
from .penalty import NSEPenalty

METHODS = ("naive", "recon", "gen-recon", "gen-recon-cf", "difference-reward", "wlu", "dpp", "considerate",
           "shapley", "exchange", "exchange-logs")
_BLAME = {
    "recon": CounterfactualBlame, "gen-recon": CounterfactualBlame, "gen-recon-cf": CounterfactualBlame,
    "difference-reward": DifferenceReward, "wlu": WonderfulLifeUtility, "dpp": DPlusPlus,
    "shapley": ShapleyBlame, "exchange": ExchangeValue,
}
PHASES = ("plan", "monitor", "blame", "generalise", "replan")


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

    def models(self, policies: Sequence[np.ndarray]) -> list[RobotModel]:
        return [robot_model(p, self.static_feature, self.dynamic_feature, pol) for p, pol in zip(self.plans, policies)]

    def exact(self, policies: Sequence[np.ndarray]) -> MonitorReport:
        return exact_monitor(self.penalty, self.models(policies), self.horizon, self.n_zones, self.n_values,
                             self.scenario.world.min_count)


def valid_value_table(plan: RobotPlan, dynamic_feature: str, n_values: int) -> np.ndarray:
    """(S, V) bool: the robot's state with its dynamic value set to v is reachable (MATH.md 5)."""
    mdp = plan.mdp
    col = mdp.feature_index(dynamic_feature)
    rows = np.repeat(mdp.states[:, None, :], n_values, axis=1)
    rows[:, :, col] = np.arange(n_values)[None, :]
    return (mdp.index_of(rows.reshape(-1, rows.shape[-1])) >= 0).reshape(mdp.n_states, n_values)


@dataclass
class RobotOutcome:
    robot_id: str
    blame: float  # total blame per episode, summed over rounds
    updated: bool
    task_regret: float  # V1*(s0) - V1^pi(s0)
    slack: float  # the slack the robot was given
    slack_used: float  # the slack of its final LVI (smaller if the full slack allowed stalling)


@dataclass
class MitigationResult:
    method: str
    before: MonitorReport
    after: MonitorReport
    robots: list[RobotOutcome]
    rounds: int
    seconds: dict[str, float]
    policies: list[np.ndarray] = field(repr=False)
    local_penalties: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def updated(self) -> list[str]:
        return [r.robot_id for r in self.robots if r.updated]

    def as_dict(self) -> dict:
        def clean(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "method": self.method,
            "nse_before": self.before.total_penalty,
            "nse_after": self.after.total_penalty,
            "nse_state_rate_before": clean(self.before.nse_state_rate),
            "nse_state_rate_after": clean(self.after.nse_state_rate),
            "updated": self.updated,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "robots": [{"id": r.robot_id, "blame": r.blame, "task_regret": r.task_regret, "slack": r.slack,
                        "slack_used": r.slack_used, "updated": r.updated} for r in self.robots],
        }


class Mitigation(BaseEstimator):
    """Detect and mitigate NSEs for a planned fleet.

    Parameters (scikit-learn style, all in the constructor):
      method            one of METHODS
      update_fraction   f: the ceil(f * n) most blamed robots replan each round
      rounds            round limit of iterative RECON
      tolerance         tau: stop when the exact J_N is at most this
      episodes          Monte Carlo episodes whose visited joint states are blamed
      seed              seeds the rollouts (and the default regressor)
      regressor         any estimator with fit/predict for generalised RECON
                        (default: a random forest)
      max_training_pairs  generalised RECON subsamples its training set to this size
      selfish, care     alpha1, alpha2 of the considerate reward
      desired_outcomes  `rules.DesiredOutcome`s: their proxy robots replan with them first
      backend           where the selected robots replan: "local" (this machine's cores),
                        "serial", "ray" or a `planner.backends.Backend`; same results
    """

    def __init__(self, method: str = "recon", update_fraction: float = 0.25, rounds: int = 1,
                 tolerance: float = 0.0, episodes: int = 100, seed: int = 0, regressor=None,
                 max_training_pairs: int = 50_000, selfish: float = 1.0, care: float = 1.0,
                 desired_outcomes: tuple = (), backend="local") -> None:
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

    def _check(self, fleet: Fleet) -> None:
        if self.method not in METHODS:
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

    def run(self, fleet: Fleet, progress: Callable[[str, float], None] | None = None) -> MitigationResult:
        """Mitigate; `progress(phase, fraction_done)` is called as work advances."""
        self._check(fleet)
        report = progress or (lambda phase, done: None)
        seconds = dict.fromkeys(PHASES, 0.0)
        seconds["plan"] = fleet.plan_seconds
        n = len(fleet.plans)
        slack = fleet.scenario.slack
        policies = [p.policy for p in fleet.plans]
        local = {}  # robot index -> accumulated local penalty Rhat_i (S_i,)
        blame_total = np.zeros(n)
        updated = np.zeros(n, bool)
        slack_used = np.zeros(n)
        clock = time.perf_counter()
        before = fleet.exact(policies)
        after = before
        seconds["monitor"] += time.perf_counter() - clock
        if self.desired_outcomes:
            clock = time.perf_counter()
            self._apply_outcomes(fleet, policies, local, updated, slack_used)
            seconds["replan"] += time.perf_counter() - clock
            after = fleet.exact(policies)
        valid_tables = None
        rounds = 0
        for round_index in range(self.rounds):
            if self.method == "naive" or after.total_penalty <= self.tolerance or self.update_fraction == 0:
                break
            rounds += 1
            report("monitor", round_index / self.rounds)
            clock = time.perf_counter()
            mc, visits = monte_carlo_monitor(fleet.penalty, fleet.models(policies), fleet.horizon,
                                             episodes=self.episodes, seed=self.seed + round_index)
            seconds["monitor"] += time.perf_counter() - clock
            report("blame", round_index / self.rounds)
            clock = time.perf_counter()
            if self.method == "considerate":
                new_local, exposure = self._considerate_penalties(fleet, policies)
                score = exposure
            else:
                states = visits.states.reshape(-1, n)
                zone, value = visits.zone.reshape(-1, n), visits.value.reshape(-1, n)
                if self.method == "exchange-logs":
                    blame = self._blame_from_logs(fleet, zone, value)
                else:
                    if valid_tables is None:
                        valid_tables = [valid_value_table(p, fleet.dynamic_feature, fleet.n_values)
                                        for p in fleet.plans]
                    valid = np.stack([valid_tables[i][states[:, i]] for i in range(n)], axis=1)
                    blame = self._blame_method().blame(fleet.penalty, zone, value, valid)
                score = blame.sum(axis=0) / self.episodes
                seconds["blame"] += time.perf_counter() - clock
                clock = time.perf_counter()
                if self.method.startswith("gen-recon"):
                    report("generalise", round_index / self.rounds)
                    new_local = self._generalised_penalties(fleet, states, zone, value, valid, blame)
                    seconds["generalise"] += time.perf_counter() - clock
                else:
                    new_local = {}
                    for i in range(n):  # one bincount per robot, not per state
                        s_i = fleet.plans[i].mdp.n_states
                        visits_i = np.bincount(states[:, i], minlength=s_i)
                        sums = np.bincount(states[:, i], weights=blame[:, i], minlength=s_i)
                        mean = np.divide(sums, visits_i, out=np.zeros(s_i), where=visits_i > 0)
                        # a local penalty is never a reward (exchange values and D++ can be < 0)
                        new_local[i] = np.maximum(mean, 0.0)
                    seconds["blame"] += time.perf_counter() - clock
            blame_total += score
            k = math.ceil(self.update_fraction * n)
            ranked = [i for i in np.argsort(-score, kind="stable") if score[i] > 0][:k]
            report("replan", round_index / self.rounds)
            clock = time.perf_counter()
            for i in ranked:
                local[i] = local.get(i, 0.0) + new_local[i]
            replanned = self._replan_many(fleet, [(i, local[i]) for i in ranked], slack)
            for i, (policies[i], slack_used[i]) in zip(ranked, replanned):
                updated[i] = True
            seconds["replan"] += time.perf_counter() - clock
            clock = time.perf_counter()
            after = fleet.exact(policies)
            seconds["monitor"] += time.perf_counter() - clock
        report("done", 1.0)
        regrets = self._regrets(fleet, policies)
        robots = [RobotOutcome(p.task.robot_id, float(blame_total[i]), bool(updated[i]), float(regrets[i]),
                               float(slack), float(slack_used[i]) if updated[i] else 0.0)
                  for i, p in enumerate(fleet.plans)]
        return MitigationResult(self.method, before, after, robots, rounds, seconds, policies, local)

    # -- the pieces ------------------------------------------------------------------------
    def _apply_outcomes(self, fleet: Fleet, policies, local, updated, slack_used) -> None:
        """Pre-strategy intervention: proxy robots replan with the operators' desired outcomes."""
        domain = get_domain(fleet.scenario.world.domain)
        ids = [p.task.robot_id for p in fleet.plans]
        outcomes = [o.validated(fleet.scenario.world, domain.dynamic_feature, ids) for o in self.desired_outcomes]
        for outcome in outcomes:
            for robot in outcome.robots:
                i = ids.index(robot)
                model = robot_model(fleet.plans[i], fleet.static_feature, fleet.dynamic_feature)
                extra = outcome.local_penalty(model.zone, model.value, fleet.scenario.world, domain.dynamic_feature)
                local[i] = local.get(i, 0.0) + extra
        for i in local:
            policies[i], slack_used[i] = self._replan(fleet.plans[i], local[i], fleet.scenario.slack, fleet)
            updated[i] = True

    def _blame_method(self):
        cls = _BLAME[self.method]
        return cls(seed=self.seed) if cls is ShapleyBlame else cls()

    def _blame_from_logs(self, fleet: Fleet, zone: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Exchange values from logs (MATH.md 7, paper 000), turned into per-visit blame (B, n).

        The logs are the Monte Carlo joint states: at each step, the robots standing in one NSE
        zone form a group (a robot alone in a zone too) and the zone's share of R_N is the
        group's collective score; the values of the dynamic feature are not read, so the
        estimator sees only who was together and how bad it was. Then each group's score is
        split among its members in proportion to max(EV_i, 0) (+ eps, RECON's split), so blame
        sums to R_N as for RECON and the local penalty is its mean per visited state. Robots never
        in a zone are in no log: they caused no logged NSE and get no blame (ExchangeValueFromLogs
        would report them as unestimated); a robot in the logs without a usable comparison (its
        EV is NaN) counts as EV 0, an average robot. With fewer than two robots in the logs there
        is no one to compare and nobody is blamed.
        """
        B, n = zone.shape
        scores = fleet.penalty.zone_breakdown(zone, value)  # (B, Z+1): each zone's share of R_N(s)
        members = np.concatenate([zone == z for z in range(1, fleet.n_zones + 1)])  # (B Z, n)
        score = scores[:, 1:].T.ravel()  # in the same order: zone-major
        logged = members.any(axis=1)
        groups, inverse = np.unique(members[logged], axis=0, return_inverse=True)
        inverse = inverse.ravel()
        mean_score = np.bincount(inverse, weights=score[logged]) / np.bincount(inverse)  # repeated logs averaged
        robots = np.flatnonzero(groups.any(axis=0)).tolist()
        blame = np.zeros((B, n))
        if len(robots) < 2:
            return blame
        estimator = ExchangeValueFromLogs(seed=self.seed)
        with warnings.catch_warnings():  # unestimated robots are handled below (EV 0)
            warnings.filterwarnings("ignore", message="no usable comparisons", category=RuntimeWarning)
            estimator.fit([np.flatnonzero(g).tolist() for g in groups], mean_score, robots)
        ev = np.zeros(n)
        ev[robots] = np.nan_to_num(estimator.predict(robots), nan=0.0)
        ev_rows = np.broadcast_to(ev, (B, n))
        for z in range(1, fleet.n_zones + 1):
            blame += recon_split(scores[:, z], ev_rows, zone == z)
        return blame

    def _replan_many(self, fleet: Fleet, jobs: list[tuple[int, np.ndarray]], slack: float) -> list:
        """`_replan` for each (robot, local penalty), one solve per distinct (MDP, penalty), run on
        `self.backend` in chunks of robots sharing an MDP (each MDP travels once per chunk)."""
        penalty_of = dict(jobs)
        key_of = {i: (id(fleet.plans[i].mdp), penalty.tobytes()) for i, penalty in jobs}
        first: dict[tuple, int] = {}
        for i, _ in jobs:
            first.setdefault(key_of[i], i)
        groups: dict[int, list[int]] = {}  # id(mdp) -> the robots solved for it
        for key, i in first.items():
            groups.setdefault(key[0], []).append(i)
        size = max(1, math.ceil(len(first) / 8))
        chunks = [members[s:s + size] for members in groups.values() for s in range(0, len(members), size)]
        results = get_backend(self.backend).map(
            _replan_chunk, [(self, fleet.plans[c[0]], [penalty_of[i] for i in c], slack) for c in chunks])
        solved = {key_of[i]: result for chunk, out in zip(chunks, results) for i, result in zip(chunk, out)}
        return [solved[key_of[i]] for i, _ in jobs]

    def _replan(self, plan: RobotPlan, local_penalty: np.ndarray, slack: float, fleet: Fleet):
        if self.method == "considerate":
            mdp = plan.mdp
            reward = self.selfish * mdp.rewards / max(np.abs(mdp.rewards).max(), 1e-12) \
                - self.care * local_penalty[:, None]
            return value_iteration(mdp, reward).policy, float("nan")
        result = lexicographic_policy_that_finishes(plan.mdp, -local_penalty, slack, task_result=plan.task_solution)
        return result.policy, result.slack

    def _generalised_penalties(self, fleet: Fleet, states, zone, value, valid, blame) -> dict[int, np.ndarray]:
        """MATH.md 6: learn blame from phi(s_i) = (dynamic value, in a zone); predict for every state."""
        rng = np.random.default_rng(self.seed)
        in_zone = (zone > 0).astype(np.int64)
        x = [np.stack([value.ravel(), in_zone.ravel()], axis=1)]
        y = [blame.ravel()]
        if self.method == "gen-recon-cf":
            # blame of robot i in each valid counterfactual neighbour s' (its value changed)
            pairs = []
            for v in range(fleet.n_values):
                use = valid[:, :, v] & (value != v)
                if not use.any():
                    continue
                rows, agents = np.nonzero(use)
                if len(rows) > self.max_training_pairs:
                    pick = rng.choice(len(rows), self.max_training_pairs, replace=False)
                    rows, agents = rows[pick], agents[pick]
                pairs.append((rows, agents, np.full(len(rows), v)))
                x.append(np.stack([np.full(len(rows), v), in_zone[rows, agents]], axis=1))
            if pairs:
                # only robot i's blame in s' is needed: O(types) per pair, not O(n V)
                rows, agents, values = (np.concatenate(a) for a in zip(*pairs))
                cf_blame = CounterfactualBlame().blame_of_one(fleet.penalty, zone, value, valid, rows, agents, values)
                y.extend(np.split(cf_blame, np.cumsum([len(p[0]) for p in pairs])[:-1]))
        x, y = np.concatenate(x), np.concatenate(y)
        if len(y) > self.max_training_pairs:
            pick = rng.choice(len(y), self.max_training_pairs, replace=False)
            x, y = x[pick], y[pick]
        model = clone(self.regressor) if self.regressor is not None else RandomForestRegressor(
            n_estimators=50, min_samples_leaf=3, random_state=self.seed)
        model.fit(x, y)
        domain = get_domain(fleet.scenario.world.domain)
        out, cache = {}, {}
        for i, plan in enumerate(fleet.plans):
            if id(plan.mdp) not in cache:
                phi = domain.generalisation_features(plan.mdp.states, plan.problem)
                cache[id(plan.mdp)] = np.maximum(0.0, model.predict(phi))
            out[i] = cache[id(plan.mdp)]
        return out

    def _considerate_penalties(self, fleet: Fleet, policies) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """Alamdari et al. adapted: robot i's expected NSE penalty at each of its states, the others
        moving by their current policies (their time-averaged occupancy), scaled by R_N's maximum."""
        n, horizon = len(fleet.plans), fleet.horizon
        occ = cell_occupancy(fleet.models(policies), horizon, fleet.n_zones, fleet.n_values)
        p = occ.reshape(n, horizon + 1, -1)  # (n, T, C)
        pmf_all = poisson_binomial(p)  # (n+1, T, C)
        cell_table = fleet.penalty.cell_table(n + 1)
        table = cell_table.reshape(-1, cell_table.shape[-1])
        scale = max(fleet.penalty.max_penalty(n), 1e-12)
        out, exposure = {}, np.zeros(n)
        for i, plan in enumerate(fleet.plans):
            others = _remove_bernoulli(pmf_all, p[i])  # (n, T, C): count of the other robots
            # E[g_c(N_others + 1)] averaged over time, for the cell c robot i would occupy
            gain = np.einsum("ktc,ck->c", others, table[:, 1 : n + 1]) / (horizon + 1)
            model = robot_model(plan, fleet.static_feature, fleet.dynamic_feature, policies[i])
            cells = model.zone * fleet.n_values + model.value
            out[i] = gain[cells] / scale
            exposure[i] = float((p[i].mean(axis=0) * gain).sum())
        return out, exposure

    def _regrets(self, fleet: Fleet, policies) -> np.ndarray:
        cache: dict[tuple, float] = {}
        regrets = np.zeros(len(policies))
        for i, (plan, policy) in enumerate(zip(fleet.plans, policies)):
            key = (id(plan.mdp), policy.tobytes())
            if key not in cache:
                value = policy_evaluation(plan.mdp, policy)[plan.mdp.start]
                regret = plan.task_value - value
                # policy evaluation and value iteration differ by rounding (~1e-14)
                cache[key] = regret if regret > 1e-9 * max(1.0, abs(plan.task_value)) else 0.0
            regrets[i] = cache[key]
        return regrets


def _replan_chunk(job) -> list:
    """A backend job: replan robots that share one plan (MDP), one local penalty each.
    The fleet is not shipped to workers, so `_replan` gets fleet=None here."""
    mitigation, plan, penalties, slack = job
    return [mitigation._replan(plan, penalty, slack, None) for penalty in penalties]


def _remove_bernoulli(pmf: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Deconvolve one Bernoulli(p) from a Poisson-binomial pmf (n+1, ...) -> (n, ...).

    Forward recursion is stable for p <= 1/2, backward for p > 1/2; each element uses its own.
    """
    n = pmf.shape[0] - 1
    fwd = np.zeros((n,) + pmf.shape[1:])
    bwd = np.zeros_like(fwd)
    q = np.where(p < 1.0, 1.0 - p, 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        fwd[0] = pmf[0] / q
        for k in range(1, n):
            fwd[k] = (pmf[k] - p * fwd[k - 1]) / q
    safe_p = np.where(p > 0, p, 1.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        # blows up where p is small; those entries are the forward recursion's anyway
        bwd[n - 1] = pmf[n] / safe_p
        for k in range(n - 1, 0, -1):
            bwd[k - 1] = (pmf[k] - (1.0 - p) * bwd[k]) / safe_p
    return np.clip(np.where(p <= 0.5, fwd, bwd), 0.0, 1.0)


def mitigate(scenario: Scenario, method: str = "recon", progress=None, **params) -> MitigationResult:
    """Plan the fleet and run one mitigation (a convenience over Fleet.plan + Mitigation.run)."""
    fleet = Fleet.plan(scenario)
    return Mitigation(method=method, **params).run(fleet, progress=progress)


__all__ = ["METHODS", "Fleet", "Mitigation", "MitigationResult", "RobotOutcome", "mitigate", "valid_value_table"]
