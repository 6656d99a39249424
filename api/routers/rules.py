"""NSE rule sets: every edit makes a new version; old versions stay readable."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from metareasoner.rules import RuleError, validate_rule
from planner.domains import get_domain

from .. import repository
from ..cache import RULES_CHANGED, NotFound, lock_scenario, publish
from ..db import Database
from ..deps import get_db, get_operator
from ..errors import COMMON, NOT_FOUND, rule_error_detail
from ..fleets import rules_to_json, world_of
from ..models import RuleVersionRow
from ..schemas import ScenarioId, VersionNumber, RuleSetIn, RuleSetOut
from ..security import Principal

router = APIRouter(prefix="/api/v1/scenarios/{scenario_id}/rules", tags=["rules"])


def version_out(row: RuleVersionRow) -> RuleSetOut:
    return RuleSetOut(version=row.version, rules=row.rules, min_count=row.min_count, note=row.note,
                      created_at=row.created_at)


@router.get("", response_model=list[RuleSetOut], responses={**COMMON, **NOT_FOUND}, summary="Every rule set version")
def list_versions(scenario_id: ScenarioId, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        return [version_out(v) for v in repository.scenario(session, scenario_id).rule_versions]


@router.get("/{version}", response_model=RuleSetOut, responses={**COMMON, **NOT_FOUND}, summary="One rule set version")
def get_version(scenario_id: ScenarioId, version: VersionNumber, db: Database = Depends(get_db), _: Principal = Depends(get_operator)):
    with db.transaction() as session:
        repository.scenario(session, scenario_id)
        return version_out(repository.rule_version(session, scenario_id, version))


@router.post("", response_model=RuleSetOut, status_code=status.HTTP_201_CREATED,
             responses={**COMMON, **NOT_FOUND, 422: {"description": "A rule names an unknown zone, feature or value"}},
             summary="Replace the rules (a new version)")
def post_version(scenario_id: ScenarioId, body: RuleSetIn, db: Database = Depends(get_db),
                 principal: Principal = Depends(get_operator)):
    with db.transaction() as session:
        # the scenario's lock first: concurrent edits take their turns (versions 2, 3, ...)
        if not lock_scenario(session, scenario_id):
            raise NotFound(f"no scenario {scenario_id}")
        scenario = repository.scenario(session, scenario_id)
        world = world_of(scenario.map_text, scenario.map_name, check_size=False)
        feature = get_domain(world.domain).dynamic_feature
        checked = []
        for index, rule in enumerate(body.rules):
            try:
                checked.append(validate_rule(rule.model_dump(), world.zone_names, feature))
            except RuleError as error:
                raise HTTPException(422, rule_error_detail(error, index)) from None
        newest = repository.rule_version(session, scenario_id)
        row = RuleVersionRow(scenario_id=scenario_id, version=newest.version + 1, rules=rules_to_json(checked),
                             min_count=body.min_count if body.min_count is not None else newest.min_count,
                             note=body.note)
        session.add(row)
        session.flush()
        publish(session, RULES_CHANGED, scenario_id, row.version)
        repository.record(session, scenario_id, "rules_edited", principal.actor, rule_version=row.version,
                          previous_version=newest.version, note=body.note, rules=len(checked), min_count=row.min_count)
        return version_out(row)
