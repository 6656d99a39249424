"""Versioned NSE rule sets and operators' desired outcomes (docs/FORMULATION.md section 9)."""
from __future__ import annotations

import numpy as np
import pytest

from metareasoner.mitigation import Fleet, Mitigation
from metareasoner.monitor import robot_model
from metareasoner.rules import DesiredOutcome, RuleBook, RuleError
from planner.domains import get_domain
from planner.maps import load_map
from planner.scenario import generate_scenario
from conftest import MAPS

FEATURE = get_domain("warehouse").dynamic_feature


@pytest.fixture
def book():
    return RuleBook(load_map(MAPS / "warehouse" / "warehouse-1.map"), FEATURE)


def test_every_change_is_a_new_version_and_old_ones_stay(book):
    first = book.current
    assert first.version == 1 and len(first.rules) == 2
    v2 = book.add({"zone": "corridor-a", "feature": "shelf", "value": "small", "weight": 5.0, "sensitivity": 2.0})
    v3 = book.change(0, weight=10.0)
    v4 = book.remove(1)
    assert [v.version for v in book.versions] == [1, 2, 3, 4]
    assert len(v2.rules) == 3 and v3.rules[0].weight == 10.0 and len(v4.rules) == 2
    assert book.get(1).rules == first.rules  # untouched
    # the penalty follows the version asked for: two big shelves in corridor-a
    zone, value = np.array([[1, 1]]), np.array([[2, 2]])
    assert book.penalty(1)(zone, value)[0] == pytest.approx(3.0 * np.log(2.0))
    assert book.penalty(3)(zone, value)[0] == pytest.approx(10.0 * np.log(2.0))
    assert book.world_at(4).rules == v4.rules


@pytest.mark.parametrize("spec, field", [
    ({"zone": "corridor-z", "feature": "shelf", "value": "big", "weight": 1, "sensitivity": 1}, "zone"),
    ({"feature": "shelf", "value": "huge", "weight": 1, "sensitivity": 1}, "value"),
    ({"feature": "sample", "value": "big", "weight": 1, "sensitivity": 1}, "feature"),
    ({"feature": "shelf", "value": "big", "weight": -1, "sensitivity": 1}, "weight"),
    ({"feature": "shelf", "value": "big", "weight": "heavy", "sensitivity": 1}, "weight"),
    ({"feature": "shelf", "value": "big", "weight": 1}, "sensitivity"),
])
def test_bad_rules_are_refused_and_nothing_changes(book, spec, field):
    with pytest.raises(RuleError) as info:
        book.add(spec)
    assert info.value.field == field
    assert book.current.version == 1
    with pytest.raises(RuleError, match="no rule 7"):
        book.remove(7)
    with pytest.raises(RuleError, match="min_count"):
        book.replace_rules(book.current.rules, min_count=1)
    assert book.current.version == 1


def test_desired_outcome_keeps_a_proxy_out_of_the_corridors():
    world = load_map(MAPS / "warehouse" / "warehouse-1.map")
    fleet = Fleet.plan(generate_scenario(world, 4, seed=3, slack=2000.0))

    def big_in_corridor(policies, i):
        from planner.solvers import state_distributions

        plan = fleet.plans[i]
        model = robot_model(plan, "corridor", "shelf", policies[i])
        dist = state_distributions(plan.mdp, policies[i], world.horizon)
        return float((dist @ ((model.zone > 0) & (model.value == 2))).sum())

    naive = [p.policy for p in fleet.plans]
    exposed = [i for i in range(4) if big_in_corridor(naive, i) > 0.5]
    assert exposed, "some robot carries a big shelf through a corridor"
    proxy = fleet.plans[exposed[0]].task.robot_id
    outcome = DesiredOutcome((proxy,), "big", zone=None, weight=5.0)
    result = Mitigation(method="naive", desired_outcomes=(outcome,)).run(fleet)
    assert result.updated == [proxy]
    assert big_in_corridor(result.policies, exposed[0]) < 0.5 * big_in_corridor(naive, exposed[0])
    regret = next(r for r in result.robots if r.robot_id == proxy).task_regret
    assert 0 < regret <= 2000.0
    with pytest.raises(RuleError, match="unknown robots"):
        Mitigation(desired_outcomes=(DesiredOutcome(("nobody",), "big"),)).run(fleet)
    with pytest.raises(RuleError, match="unknown zone"):
        Mitigation(desired_outcomes=(DesiredOutcome((proxy,), "big", zone="c9"),)).run(fleet)
