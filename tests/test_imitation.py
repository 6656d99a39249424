"""Learning from fleet logs: EV2BC against plain BC on logs that mix careful robots (the
expert's mitigated policies) with careless ones (naive), in each domain; exchange values
against their exact values; the queried learner's gaps; actions inferred from states;
EV-clustering; learned policies through policy files."""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

from metareasoner.fleetlog import LoggedFleet, simulate_log
from metareasoner.gaps import gaps
from metareasoner.imitation import (EV2BC, BehaviourCloning, QueriedImitation, exact_exchange_contrasts,
                                    mixed_log)
from metareasoner.policies import read_policy_file, write_policy_file
from planner.maps import load_map
from planner.scenario import task_key
from planner.solvers import finishes_surely

from conftest import MAPS

#: the map of each domain and the scenario seed (one whose fleet has NSEs mitigation removes)
CASES = {"salp": ("salp/salp-1.map", 0), "overcooked": ("overcooked/overcooked-1.map", 1),
         "warehouse": ("warehouse/warehouse-1.map", 0)}
EPISODES = 300


@functools.lru_cache(maxsize=None)
def _case(name: str):
    """The domain's mixed log, bound to its map, and the three learners fitted on it (built
    once per test session: the expert's mitigation is the slow part)."""
    path, seed = CASES[name]
    world = load_map(MAPS / path)
    mixed = mixed_log(world, 6, EPISODES, seed=seed, rounds=1)
    logged = LoggedFleet.bind(mixed.log, world)
    learners = {"bc": BehaviourCloning().fit(logged), "ev2bc": EV2BC().fit(logged),
                "queried": QueriedImitation().fit(logged, mixed.fleet, mixed.expert)}
    policies = {k: learner.policies(mixed.fleet) for k, learner in learners.items()}
    return name, world, mixed, logged, learners, policies


@pytest.fixture(params=list(CASES))
def case(request):
    return _case(request.param)


@pytest.fixture
def salp():
    return _case("salp")


def _finishes(fleet, policies) -> bool:
    return all(finishes_surely(p.mdp, q)[p.mdp.start] for p, q in zip(fleet.plans, policies))


def test_ev2bc_gives_less_nse_than_bc_and_every_robot_finishes(case):
    name, world, mixed, logged, learners, policies = case
    fleet = mixed.fleet  # the expert's fleet: other robots than the logged ones, the same tasks
    nse = {k: fleet.exact(p).total_penalty for k, p in policies.items()}
    naive = fleet.exact([p.policy for p in fleet.plans]).total_penalty
    expert = fleet.exact(mixed.expert).total_penalty
    assert naive > expert  # there was NSE to learn to avoid
    assert nse["ev2bc"] < nse["bc"], (name, nse)
    assert nse["ev2bc"] <= expert + 0.25 * (naive - expert), (name, nse, expert, naive)
    for policy in policies.values():
        assert _finishes(fleet, policy)


def test_exchange_values_match_their_exact_values_and_rank_careless_below_careful(case):
    """The estimate of a careful robot's exchange value against its careless twin is, in
    expectation, the exact contrast of the log's group distribution (imitation.exact_exchange_contrasts);
    within 4 standard errors of a difference of two half-log means."""
    name, world, mixed, logged, learners, policies = case
    ev2bc = learners["ev2bc"]
    value = dict(zip(ev2bc.robots_, ev2bc.exchange_values_))
    careful = np.array([value[r] for r in mixed.careful])
    careless = np.array([value[r] for r in mixed.careless])
    exact = exact_exchange_contrasts(mixed)
    se = 2 * mixed.log.scores.std(ddof=1) / np.sqrt(EPISODES)
    assert np.all(np.abs(careful - exact) <= 4 * se), (name, careful, exact, se)
    assert np.all(np.abs(careless + exact) <= 4 * se)
    assert careful.mean() > careless.mean()
    clear = exact > 4 * se  # tasks where the careful policy clearly helps in the log's company
    assert clear.any(), (name, exact, se)
    assert np.all(careful[clear] > careless[clear])
    kept = set(ev2bc.kept_)  # threshold 0: the careful twin of each such task is imitated, the careless one not
    assert all(c in kept and d not in kept for c, d, ok in zip(mixed.careful, mixed.careless, clear) if ok)
    assert set(ev2bc.ev_sources_) == {"pairs"}  # every robot is in about half the episodes


def test_queried_learner_is_value_and_regret_equivalent(case):
    """Asking the expert wherever the learner and its best-response deviations go makes the
    learner the expert on everything they reach: value gaps and regret gap 0 exactly. BC's
    regret gap is not 0; on these maps it is negative: it recommends selfish (task-optimal)
    actions where careless robots were logged, so robots gain less by deviating from it than
    from the expert, and the NSE gap is what that costs."""
    name, world, mixed, logged, learners, policies = case
    fleet = mixed.fleet
    queried = gaps(fleet, policies["queried"], mixed.expert)
    assert queried.value_gap == pytest.approx(0.0, abs=1e-9)
    assert np.abs(queried.task_value_gaps).max() <= 1e-9
    assert queried.nse_gap == pytest.approx(0.0, abs=1e-9)
    assert queried.regret_gap == pytest.approx(0.0, abs=1e-9)
    assert np.abs(queried.robot_regret_gaps).max() <= 1e-9
    bc, ev2bc = gaps(fleet, policies["bc"], mixed.expert), gaps(fleet, policies["ev2bc"], mixed.expert)
    assert abs(queried.regret_gap) <= abs(bc.regret_gap) and abs(bc.regret_gap) > 1e-6
    assert bc.nse_gap > ev2bc.nse_gap
    q = learners["queried"]
    assert 0 < q.queries_ <= q.states_ and q.rounds_ < q.max_rounds


def test_actions_inferred_from_states_when_the_log_has_none(salp):
    """The service's logs have no actions: the learner weighs every action by how likely it
    makes the next logged state. EV2BC learns the same fleet behaviour."""
    name, world, mixed, logged, learners, policies = salp
    ids = [p.task.robot_id for p in mixed.pool.plans]
    members = np.zeros((mixed.log.n_episodes, len(ids)), dtype=bool)
    for e, group in enumerate(mixed.log.group_ids()):
        members[e, [ids.index(r) for r in group]] = True
    silent = simulate_log(mixed.pool, mixed.pool_policies, mixed.log.n_episodes, seed=0, groups=members,
                          record_actions=False)
    assert np.array_equal(silent.scores, mixed.log.scores) and (silent.action == -1).all()
    learner = EV2BC().fit(LoggedFleet.bind(silent, world))
    assert learner.evidence_["inferred"] == learner.evidence_["records"] > 0
    inferred = learner.policies(mixed.fleet)
    agree = np.mean([np.mean(a == b) for a, b in zip(inferred, policies["ev2bc"])])
    assert agree > 0.99
    fleet = mixed.fleet
    assert fleet.exact(inferred).total_penalty == pytest.approx(fleet.exact(policies["ev2bc"]).total_penalty, rel=0.02)


def test_ev_clustering_when_robots_appear_in_few_episodes(salp):
    """40 episodes of 6 robots drawn from the 12: no two groups differ by one robot often
    enough, every exchange value comes from EV-clustering, and EV2BC still beats BC."""
    name, world, mixed, logged, learners, policies = salp
    log = simulate_log(mixed.pool, mixed.pool_policies, 40, seed=4, group_size=6)
    sparse = LoggedFleet.bind(log, world)
    ev2bc = EV2BC().fit(sparse)
    assert set(ev2bc.ev_sources_) == {"cluster"}
    value = dict(zip(ev2bc.robots_, ev2bc.exchange_values_))
    careful = np.nanmean([value.get(r, np.nan) for r in mixed.careful])
    careless = np.nanmean([value.get(r, np.nan) for r in mixed.careless])
    assert careful > careless
    fleet = mixed.fleet
    assert fleet.exact(ev2bc.policies(fleet)).total_penalty < \
        fleet.exact(BehaviourCloning().fit(sparse).policies(fleet)).total_penalty


def test_learned_policy_deploys_through_its_policy_file(salp, tmp_path):
    name, world, mixed, logged, learners, policies = salp
    for method, learner in learners.items():
        path = tmp_path / f"{method}.json"
        write_policy_file(learner.document({"method": method}), path)
        deployed, origin = read_policy_file(path).policies_for(mixed.fleet)
        assert set(origin) == {"task"}
        assert all(np.array_equal(a, b) for a, b in zip(deployed, policies[method]))


def test_weighting_threshold_and_backoff(salp):
    name, world, mixed, logged, learners, policies = salp
    fleet = mixed.fleet
    weighted = EV2BC(weighting="weighted").fit(logged)
    ev = weighted.exchange_values_
    assert np.allclose(weighted.weights_, np.maximum(ev, 0.0))
    assert fleet.exact(weighted.policies(fleet)).total_penalty < fleet.exact(policies["bc"]).total_penalty
    # "all" backs off to every logged robot before the task-optimal action: the two differ only
    # where no kept robot was seen
    every = EV2BC(backoff="all").fit(logged)
    for plan in fleet.plans:
        table = every.tables_[task_key(plan.task)]
        kept, _, _ = every._table_counts(table, plan)
        a, b = every.policy(plan, repair=False), learners["ev2bc"].policy(plan, repair=False)
        seen = kept.sum(axis=1) > 0
        assert np.array_equal(a[seen], b[seen])
    with pytest.warns(RuntimeWarning, match="no robot's exchange value reaches the threshold"):
        nobody = EV2BC(threshold=1e6).fit(logged)
    assert all(np.array_equal(p, q.policy) for p, q in zip(nobody.policies(fleet), fleet.plans))
    with pytest.raises(ValueError, match="weighting must be one of"):
        EV2BC(weighting="soft").fit(logged)
    with pytest.raises(ValueError, match="backoff must be one of"):
        BehaviourCloning(backoff="random").fit(logged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EV2BC(threshold=-1e6).fit(logged)  # keeps everyone, no warning
