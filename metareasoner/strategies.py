"""How each mitigation method turns what the monitor saw into local penalties (docs/FORMULATION.md 5-10).

A strategy is a scikit-learn-style object (parameters in the constructor, nothing learnt kept
between calls) with one method, `propose(context) -> Proposal`: from the fleet, the current
policies, the exact count distributions and, if it asks for them (`uses_rollouts`), the joint
states visited in Monte Carlo rollouts, it gives every robot a score (what ranks it for
replanning: its blame per episode) and, for a selected robot, the local penalty it replans with.
`replan` plans one robot for a penalty within its task budget (budgeted LVI unless a method has
its own planner). The loop that uses them is `metareasoner.mitigation.Mitigation.run`.

A new method is one class here (or an existing class with other parameters) and one line in
`STRATEGIES`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.tree import DecisionTreeRegressor

from planner.budget import (
    BudgetedPolicy,
    budgeted_lvi,
    budgeted_scalarisation,
    constrained_optimum,
    discounted_cost,
)
from planner.domains import get_domain

from .blame import (
    BlameMethod,
    CounterfactualBlame,
    DifferenceReward,
    DPlusPlus,
    ExchangeValue,
    ExchangeValueFromLogs,
    ShapleyBlame,
    WonderfulLifeUtility,
    recon_split,
)


@dataclass
class RoundContext:
    """What a strategy may look at in one round (read-only for it)."""

    fleet: "object"  # metareasoner.mitigation.Fleet
    policies: list  # current policy of every robot
    counts: "object"  # monitor.FleetCounts of the current policies (exact)
    visits: "object | None"  # monitor.JointVisits of this round's rollouts, if the strategy uses them
    round: int
    seed: int
    episodes: int

    @property
    def n_robots(self) -> int:
        return len(self.policies)

    def joint_states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(states, zone, value), each (B, n): every visited joint state of the rollouts."""
        n = self.n_robots
        v = self.visits
        return v.states.reshape(-1, n), v.zone.reshape(-1, n), v.value.reshape(-1, n)

    def valid(self, states: np.ndarray) -> np.ndarray:
        """(B, n, V) bool: robot i's state with value v is reachable (valid counterfactuals)."""
        return self.fleet.valid_of(states)

    def visited_valid(self) -> np.ndarray:
        """`valid` of every visited joint state (`joint_states`), read-only, kept with the visits."""
        return self._derived("valid", lambda: self.valid(self.joint_states()[0]))

    def blame_of(self, method: BlameMethod) -> np.ndarray:
        """(B, n) `method`'s blame of every visited joint state (`joint_states`), read-only. Kept
        with the visits (`JointVisits.derived`, keyed by the method and its parameters): the
        methods run on one fleet roll out the same task policies in their first round."""
        def compute():
            _, zone, value = self.joint_states()
            valid = self.visited_valid() if isinstance(method, CounterfactualBlame) else None
            return method.blame(self.fleet.penalty, zone, value, valid)

        return self._derived(("blame", type(method).__qualname__, repr(sorted(method.get_params().items()))),
                             compute)

    def _derived(self, key, compute: Callable[[], np.ndarray]) -> np.ndarray:
        derived = self.visits.derived
        if key not in derived:
            array = compute()
            array.setflags(write=False)
            derived[key] = array
        return derived[key]

    def per_behaviour(self, compute: Callable[[int], object]) -> Callable[[int], object]:
        """`compute(i)` once per behaviour (robots with one MDP and one policy share it)."""
        cache: dict[int, object] = {}
        behaviours = self.counts.behaviours

        def shared(i: int):
            key = int(behaviours[i])
            if key not in cache:
                cache[key] = compute(i)
            return cache[key]

        return shared

    def contributions(self) -> np.ndarray:
        """(n,) each robot's exact contribution to J_N, J_N - J_N without it."""
        one = self.per_behaviour(self.counts.contribution)
        return np.array([one(i) for i in range(self.n_robots)])

    def state_marginals(self, i: int) -> np.ndarray:
        """(H+1, S_i): robot i's exact marginal penalty m_i(t, cell(s)) in each of its states."""
        counts, fleet = self.counts, self.fleet
        marginal = counts.marginal(i)  # (T, C) over the penalised cells
        column = np.full((fleet.n_zones + 1) * fleet.n_values, -1)
        column[counts.cells[:, 0] * fleet.n_values + counts.cells[:, 1]] = np.arange(len(counts.cells))
        col = column[fleet.cells_of(i)]  # (S,)
        padded = np.concatenate([marginal, np.zeros((marginal.shape[0], 1))], axis=1)
        return padded[:, col]  # column -1 is the zero column


@dataclass
class Proposal:
    scores: np.ndarray  # (n,) per episode; robots with the highest positive scores replan
    penalty: Callable[[int], np.ndarray]  # robot -> its new local penalty (S_i,) >= 0
    seconds: dict = field(default_factory=dict)  # time spent in phases other than "blame"


class PenaltyStrategy(BaseEstimator):
    """Base class: `propose` scores robots and compiles local penalties; `replan` plans one robot."""

    #: needs the joint states visited in Monte Carlo rollouts
    uses_rollouts = True
    #: a robot's penalties of successive rounds add up (iterative RECON); otherwise replaced
    accumulates = True
    #: the loop replans the `screening * k` highest-scored robots and keeps at most k of them;
    #: 1: the k most blamed replan and are judged in rank order (RECON's selection); more: the
    #: candidates are judged best improvement of J_N first
    screening = 1

    def propose(self, context: RoundContext) -> Proposal:
        raise NotImplementedError

    def replan(self, plan, penalty: np.ndarray, budget: float, bisection_steps: int = 6,
               brackets: dict | None = None) -> BudgetedPolicy:
        """LVI: the task first, then the local penalty, within the robot's budget.

        `brackets` (planner name -> `BudgetedPolicy.bracket`), if given, holds what the searches
        of earlier robots of this plan found: tried first, then updated with this robot's."""
        return _bracketed(brackets, "lvi", lambda bracket: budgeted_lvi(
            plan.mdp, -penalty, budget, task=plan.task_solution, bisection_steps=bisection_steps, bracket=bracket))


def _bracketed(brackets: dict | None, planner: str, plan_with: Callable[[tuple | None], BudgetedPolicy]) -> BudgetedPolicy:
    """`plan_with(bracket)` with the bracket `brackets` holds for `planner`, then kept there."""
    result = plan_with(None if brackets is None else brackets.get(planner))
    if brackets is not None:
        brackets[planner] = result.bracket
    return result


def _visited_mean(states: np.ndarray, blame: np.ndarray, n_states: int) -> np.ndarray:
    """Mean blame per visited local state, 0 where unvisited; never negative (docs/FORMULATION.md 5)."""
    visits = np.bincount(states, minlength=n_states)
    sums = np.bincount(states, weights=blame, minlength=n_states)
    mean = np.divide(sums, visits, out=np.zeros(n_states), where=visits > 0)
    return np.maximum(mean, 0.0)  # a local penalty is never a reward (exchange values and D++ can be < 0)


class VisitedMean(PenaltyStrategy):
    """Blame every visited joint state with `blame` (a `blame.BlameMethod`); a robot's local
    penalty is its mean blame in each local state it visited (RECON, the paper's equation 3)."""

    def __init__(self, blame: BlameMethod | None = None) -> None:
        self.blame = blame

    def propose(self, context: RoundContext) -> Proposal:
        states, _, _ = context.joint_states()
        blame = context.blame_of(self.blame if self.blame is not None else CounterfactualBlame())
        plans = context.fleet.plans
        return Proposal(blame.sum(axis=0) / context.episodes,
                        lambda i: _visited_mean(states[:, i], blame[:, i], plans[i].mdp.n_states))


class Generalised(PenaltyStrategy):
    """Generalised RECON (docs/FORMULATION.md 6): learn blame from phi(s_i) with a regressor, predict it in
    every state; with `counterfactuals`, also train on each valid counterfactual neighbour."""

    def __init__(self, counterfactuals: bool = False, regressor=None, max_training_pairs: int = 50_000,
                 seed: int = 0) -> None:
        self.counterfactuals = counterfactuals
        self.regressor = regressor
        self.max_training_pairs = max_training_pairs
        self.seed = seed

    def propose(self, context: RoundContext) -> Proposal:
        fleet = context.fleet
        _, zone, value = context.joint_states()
        valid = context.visited_valid()
        blame = context.blame_of(CounterfactualBlame())
        scores = blame.sum(axis=0) / context.episodes
        clock = time.perf_counter()
        model = self._fit(fleet, zone, value, valid, blame)
        domain = get_domain(fleet.scenario.world.domain)
        cache: dict[int, np.ndarray] = {}
        known: dict[bytes, float] = {}  # feature row -> the model's prediction

        def penalty(i: int) -> np.ndarray:
            plan = fleet.plans[i]
            if id(plan.mdp) not in cache:
                phi = domain.generalisation_features(plan.mdp.states, plan.problem)
                cache[id(plan.mdp)] = np.maximum(0.0, _predict_distinct(model, phi, known))
            return cache[id(plan.mdp)]

        return Proposal(scores, penalty, {"generalise": time.perf_counter() - clock})

    def _fit(self, fleet, zone, value, valid, blame):
        x, y = self.training_set(fleet, zone, value, valid, blame)
        if self.regressor is not None:
            return clone(self.regressor).fit(x, y)
        return fit_regression_tree(x, y, random_state=self.seed)

    def training_set(self, fleet, zone, value, valid, blame) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): features (value, in a zone) and blame of each robot in each visited joint state
        and, with `counterfactuals`, in its valid counterfactual neighbours; at most
        `max_training_pairs` of them, drawn at random (`seed`)."""
        rng = np.random.default_rng(self.seed)
        in_zone = (zone > 0).astype(np.int64)
        x = [np.stack([value.ravel(), in_zone.ravel()], axis=1)]
        y = [blame.ravel()]
        pairs = []
        if self.counterfactuals:
            # blame of robot i in each valid counterfactual neighbour s' (its value changed)
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
        x = np.concatenate(x)
        observed = len(y[0])
        keep = None
        if len(x) > self.max_training_pairs:  # the training sample, drawn before any blame of s' is computed
            keep = rng.choice(len(x), self.max_training_pairs, replace=False)
            x = x[keep]
        if pairs:
            # only robot i's blame in s' is needed (O(types) per pair, not O(n V)), and only
            # for the pairs in the sample
            rows, agents, values = (np.concatenate(a) for a in zip(*pairs))
            needed = np.arange(len(rows)) if keep is None else keep[keep >= observed] - observed
            cf_blame = np.zeros(len(rows))
            cf_blame[needed] = CounterfactualBlame().blame_of_one(fleet.penalty, zone, value, valid, rows[needed],
                                                                  agents[needed], values[needed])
            y.append(cf_blame)
        y = np.concatenate(y)
        return x, (y if keep is None else y[keep])


def fit_regression_tree(x: np.ndarray, y: np.ndarray, random_state: int | None = 0) -> DecisionTreeRegressor:
    """The default generaliser: a least-squares regression tree grown on `(x, y)`, fitted on
    the distinct rows of `x` (each weighted by how often it occurs, with its mean target).

    phi holds a handful of distinct rows (section 6) among tens of thousands of pairs. A squared
    error tree's splits and leaf values depend on the data only through each distinct row's
    count and target sum (the spread within a row is the same for every split, and a row is
    never split), so this is the tree grown on every pair, at the cost of a few rows; grown
    fully, it predicts each seen row's mean blame."""
    x = np.asarray(x)
    y = np.asarray(y, dtype=float)
    if not len(x):
        raise ValueError("the generaliser has no training pairs")
    rows, inverse, count = _distinct_rows(x)
    mean = np.bincount(inverse, weights=y, minlength=len(rows)) / count
    return DecisionTreeRegressor(random_state=random_state).fit(rows, mean, sample_weight=count.astype(float))


def _distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(x, axis=0) with inverse and counts; rows of small non-negative integers are
    numbered first (a 1-D unique instead of a sort of row records)."""
    if x.ndim == 2 and x.dtype.kind in "iu" and x.size and x.min() >= 0:
        dims = x.max(axis=0).astype(np.int64) + 1
        if float(np.prod(dims.astype(float))) < 2.0 ** 62:
            keys, inverse, count = np.unique(np.ravel_multi_index(x.T, dims), return_inverse=True,
                                             return_counts=True)
            rows = np.stack(np.unravel_index(keys, dims), axis=1).astype(x.dtype)
            return rows, inverse.reshape(-1), count
    rows, inverse, count = np.unique(x, axis=0, return_inverse=True, return_counts=True)
    return rows, inverse.reshape(-1), count


def _predict_distinct(model, phi: np.ndarray, known: dict[bytes, float]) -> np.ndarray:
    """`model.predict(phi)`, predicting each distinct feature row once (states share few feature
    values: a robot's MDP has thousands of states and a handful of rows), rows predicted before
    (`known`, updated) not again. A regressor predicts row by row, so the values are the same."""
    phi = np.ascontiguousarray(phi)
    rows, inverse = np.unique(phi, axis=0, return_inverse=True)
    keys = [row.tobytes() for row in rows]
    new = [k for k, key in enumerate(keys) if key not in known]
    if new:
        known.update(zip((keys[k] for k in new), model.predict(rows[new]).tolist()))
    return np.array([known[key] for key in keys])[inverse.reshape(-1)]


class FromLogs(PenaltyStrategy):
    """Exchange values estimated from logs alone (docs/FORMULATION.md 7, paper 000), turned into per-visit
    blame: a robot's local penalty is its mean blame per visited state, as for RECON."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def propose(self, context: RoundContext) -> Proposal:
        states, zone, value = context.joint_states()
        blame = self.blame(context.fleet.penalty, context.fleet.n_zones, zone, value)
        plans = context.fleet.plans
        return Proposal(blame.sum(axis=0) / context.episodes,
                        lambda i: _visited_mean(states[:, i], blame[:, i], plans[i].mdp.n_states))

    def blame(self, penalty, n_zones: int, zone: np.ndarray, value: np.ndarray) -> np.ndarray:
        """(B, n) blame from logs.

        The logs are the Monte Carlo joint states: at each step, the robots standing in one NSE
        zone form a group (a robot alone in a zone too) and the zone's share of R_N is the
        group's collective score; the values of the dynamic feature are not read, so the
        estimator sees only who was together and how bad it was. Then each group's score is
        split among its members in proportion to max(EV_i, 0) (+ eps, RECON's split), so blame
        sums to R_N as for RECON. Robots never in a zone are in no log and get no blame; a robot
        in the logs without a usable comparison (its EV is NaN) counts as EV 0, an average
        robot. With fewer than two robots in the logs there is no one to compare, no blame.
        """
        B, n = zone.shape
        scores = penalty.zone_breakdown(zone, value)  # (B, Z+1): each zone's share of R_N(s)
        members = np.concatenate([zone == z for z in range(1, n_zones + 1)])  # (B Z, n)
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
        for z in range(1, n_zones + 1):
            blame += recon_split(scores[:, z], ev_rows, zone == z)
        return blame


class BestResponse(PenaltyStrategy):
    """Exact best response (docs/FORMULATION.md 10): a robot replans against the exact expected marginal
    penalty m_i(t, c) = E[g_c(N_-i,c(t) + 1) - g_c(N_-i,c(t))] that the others' current
    policies make it cause at each step, within its budget.

    J_N is linear in a robot's own occupancy, so its score is its exact contribution to J_N and
    any accepted replan is a descent step on the fleet's shared objective. The `screening * k`
    largest contributors replan and the k whose replans lower J_N most are kept (a robot that
    contributes much may have no better way within its budget). Robots follow
    stationary policies, so the time-dependent marginal becomes one cost per local state: its
    mean over the steps at which the robot's current policy is there (exact for its current
    behaviour), and its mean over the horizon in states it does not visit yet.
    """

    uses_rollouts = False
    accumulates = False

    def __init__(self, screening: int = 4, lagrangian: bool = True) -> None:
        self.screening = screening
        self.lagrangian = lagrangian

    def replan(self, plan, penalty: np.ndarray, budget: float, bisection_steps: int = 6,
               brackets: dict | None = None) -> BudgetedPolicy:
        """The better (lower expected discounted penalty) of budgeted LVI and, with `lagrangian`,
        the budgeted Lagrangian relaxation `task - lambda * penalty` (lambda bisected): LVI
        restricts every state to near-optimal task actions, the relaxation trades off globally."""
        lvi = super().replan(plan, penalty, budget, bisection_steps, brackets)
        top = float(penalty.max(initial=0.0))
        if not self.lagrangian or top <= 0:
            return lvi
        relaxed = _bracketed(brackets, "lagrangian", lambda bracket: budgeted_scalarisation(
            plan.mdp, penalty / top, budget, 1e3, task=plan.task_solution, bisection_steps=bisection_steps + 2,
            bracket=bracket))
        lvi_cost = discounted_cost(plan.mdp, lvi.policy, penalty)
        return relaxed if discounted_cost(plan.mdp, relaxed.policy, penalty) < lvi_cost else lvi

    def propose(self, context: RoundContext) -> Proposal:
        def penalty(i: int) -> np.ndarray:
            m = context.state_marginals(i)  # (T, S)
            occupancy = context.fleet.state_distribution(i, context.policies[i])  # (T, S)
            mass = occupancy.sum(axis=0)
            weighted = np.divide((occupancy * m).sum(axis=0), mass, out=m.mean(axis=0), where=mass > 1e-12)
            return np.maximum(weighted, 0.0)

        return Proposal(context.contributions(), context.per_behaviour(penalty))


class ConstrainedReference(BestResponse):
    """Exact best response in which each robot plays its exact constrained optimum (the
    occupancy-measure linear programme of `planner.budget.constrained_optimum`: least expected
    marginal penalty within its budget, over stochastic policies). A reference for the trade-off
    frontier, not a deployable method: its policies are action distributions."""

    def __init__(self, screening: int = 4) -> None:
        self.screening = screening

    def replan(self, plan, penalty: np.ndarray, budget: float, bisection_steps: int = 6,
               brackets: dict | None = None) -> BudgetedPolicy:
        reference = constrained_optimum(plan.mdp, penalty, budget, task=plan.task_solution)
        regret = max(0.0, plan.task_value - reference.task_value)
        return BudgetedPolicy(reference.policy, regret, budget, 0.0, 1, evaluated=False)  # the LP's value


class Considerate(PenaltyStrategy):
    """The considerate reward (Alamdari et al. 2022, docs/FORMULATION.md 7), adapted to simultaneous robots:
    one objective `selfish * R_T / max|R_T| - care * c_i(s)`, c_i the robot's expected marginal
    NSE penalty on the others at state s (the others moving by their current policies, averaged
    over the horizon), normalised to at most 1 like the task term, so that `care` says how many
    task steps the worst state is worth. The care weight is bisected down per robot until its
    budget holds."""

    uses_rollouts = False
    accumulates = False

    def __init__(self, selfish: float = 1.0, care: float = 2.0) -> None:
        self.selfish = selfish
        self.care = care

    def propose(self, context: RoundContext) -> Proposal:
        def penalty(i: int) -> np.ndarray:
            cost = np.maximum(context.state_marginals(i).mean(axis=0), 0.0)
            top = cost.max(initial=0.0)
            return cost / top if top > 0 else cost

        return Proposal(context.contributions(), context.per_behaviour(penalty))

    def replan(self, plan, penalty: np.ndarray, budget: float, bisection_steps: int = 6,
               brackets: dict | None = None) -> BudgetedPolicy:
        if not self.selfish > 0:
            raise ValueError(f"the selfish coefficient must be positive, got {self.selfish}")
        return _bracketed(brackets, "scalarisation", lambda bracket: budgeted_scalarisation(
            plan.mdp, penalty, budget, self.care / self.selfish, task=plan.task_solution,
            bisection_steps=bisection_steps + 2, bracket=bracket))


#: method name -> its strategy, built from a `Mitigation`'s parameters (None: naive)
STRATEGIES: dict[str, Callable] = {
    "naive": lambda m: None,
    "recon": lambda m: VisitedMean(CounterfactualBlame()),
    "gen-recon": lambda m: Generalised(False, m.regressor, m.max_training_pairs, m.seed),
    "gen-recon-cf": lambda m: Generalised(True, m.regressor, m.max_training_pairs, m.seed),
    "difference-reward": lambda m: VisitedMean(DifferenceReward()),
    "wlu": lambda m: VisitedMean(WonderfulLifeUtility()),
    "dpp": lambda m: VisitedMean(DPlusPlus()),
    "considerate": lambda m: Considerate(m.selfish, m.care),
    "shapley": lambda m: VisitedMean(ShapleyBlame(seed=m.seed)),
    "exchange": lambda m: VisitedMean(ExchangeValue()),
    "exchange-logs": lambda m: FromLogs(m.seed),
    "best-response": lambda m: BestResponse(),
}

#: references for experiments (not deployable: stochastic policies)
REFERENCES: dict[str, Callable] = {
    "constrained-reference": lambda m: ConstrainedReference(),
}

__all__ = ["REFERENCES", "STRATEGIES", "ConstrainedReference", "BestResponse", "Considerate", "FromLogs", "Generalised", "PenaltyStrategy", "Proposal",
           "RoundContext", "VisitedMean"]
