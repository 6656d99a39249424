"""Request and response bodies of the REST API; every field is documented in the OpenAPI schema."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from metareasoner.mitigation import METHODS

MethodName = Literal[METHODS]  # type: ignore[valid-type]
RunStatus = Literal["queued", "running", "succeeded", "failed", "interrupted"]


class Strict(BaseModel):
    """A request body: unknown fields refused, no coercion (a string or a boolean is not a
    number, a float not an integer), finite numbers only. Non-finite numbers, numbers of
    hundreds of digits and lone surrogates never get here: api.http refuses the body first."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# A scenario's task budget: a percentage of each robot's optimal task cost ("10%") or a number
# of task-value units; strict mode keeps the two apart (a numeric string is not a number).
Slack = Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | \
    Annotated[str, Field(pattern=r"^[0-9]{1,4}(\.[0-9]{1,6})?%$", max_length=16)]


class ErrorDetail(BaseModel):
    detail: str | list = Field(description="What was wrong, and where (a message, or a list of field errors)")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="Always 'ok' when the service answers")
    version: str = Field(description="Service version")
    database: str = Field(description="Database backend in use (sqlite or postgresql)")
    worker: int = Field(description="Id of the service process that answered (several may serve one address)")


class Identity(BaseModel):
    role: Literal["operator", "robot"] = Field(description="What the bearer token may do")
    name: str = Field("", description="The operator's name from the tokens file (what the history records)")
    scenario_id: int | None = Field(description="The robot's scenario (robot tokens only)")
    robot_id: str | None = Field(description="The robot the token is bound to (robot tokens only)")


class ShippedMap(BaseModel):
    name: str = Field(description="Map name, usable as `map` when creating a scenario")
    domain: str = Field(description="Domain: salp, overcooked or warehouse")
    path: str = Field(description="Path of the map file relative to the maps folder")


# -- scenarios ---------------------------------------------------------------------------
class ScenarioCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["map"], "not": {"required": ["map_text"]}},
        {"required": ["map_text"], "not": {"required": ["map"]}}]})

    name: str | None = Field(None, min_length=1, max_length=200, description="Display name (default: the map's name)")
    # not nullable: omit the one you do not give (the schema says exactly one, as oneOf)
    map: str = Field(None, min_length=1, max_length=200,
                            description="Name of a shipped map (see GET /api/v1/maps); give this or `map_text`")
    map_text: str = Field(None, min_length=1,
                                 description="A whole map file inline (format: maps/README.md); give this or `map`")
    robots: int = Field(ge=1, le=100_000, description="Number of robots: the map's own first, then generated ones")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the generated robots' tasks")
    slack: Slack = Field("10%", description="Every robot's task budget when it replans: a percentage of its optimal "
                                            "expected task cost (\"10%\") or a number of task-value units; its task "
                                            "regret from its start never exceeds it")
    tolerance: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False,
                             description="A zone whose live NSE penalty exceeds this raises an alert (penalty units)")
    auto_deploy: bool = Field(False, description="Deploy every run that succeeds (default: an operator deploys)")

    @model_validator(mode="after")
    def _one_map(self) -> "ScenarioCreate":
        if (self.map is None) == (self.map_text is None):
            raise ValueError("give exactly one of `map` (a shipped map's name) and `map_text` (an inline map)")
        return self


class TaskOut(BaseModel):
    id: str = Field(description="Robot id")
    start: list[int] = Field(description="Start cell [x, y]")
    kind: str = Field(description="Task kind (collect, cook, clean, fetch...)")
    items: list[int] = Field(description="Indices of the map's task items the robot handles")
    option: str = Field(description="Domain-specific task option ('' if none)")
    count: int = Field(description="Domain-specific task count (0 if none)")


class PlanOut(BaseModel):
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="The fleet's planning job; robots' policy, penalty and state queries answer 503 until succeeded")
    phase: str = Field(description="queued, plan, store, done or failed")
    progress: float = Field(description="Fraction of the planning done, 0 to 1")
    attempts: int = Field(description="How many times planning was started")
    error: str | None = Field(description="Why planning failed")
    started_at: datetime | None = Field(description="Start of the newest attempt (UTC)")
    finished_at: datetime | None = Field(description="End of the newest attempt (UTC)")


class ScenarioOut(BaseModel):
    id: int = Field(description="Scenario id")
    name: str = Field(description="Display name")
    map_name: str = Field(description="The map's name")
    domain: str = Field(description="Domain of the map")
    n_robots: int = Field(description="Number of robots")
    seed: int = Field(description="Seed of the generated tasks")
    slack: str = Field(description="Every robot's task budget: \"10%\" of its task cost, or task-value units")
    rule_version: int = Field(description="Newest NSE rule set version")
    current_run_id: int | None = Field(description="The deployed run, whose policies robots follow (null: naive); "
                                                   "the same as deployed_run_id")
    deployed_run_id: int | None = Field(description="The deployed run, whose policies robots follow (null: naive)")
    auto_deploy: bool = Field(description="Runs that succeed are deployed without an operator")
    tolerance: float = Field(description="A zone whose live NSE penalty exceeds this raises an alert (penalty units)")
    active_run_id: int | None = Field(description="A queued or running run of this scenario, if any")
    created_at: datetime = Field(description="Creation time (UTC)")
    robots: list[TaskOut] = Field(description="Every robot's task")
    planning: PlanOut = Field(description="Planning of the fleet (a background job started at creation)")


class ScenarioPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200, description="New display name")
    tolerance: float | None = Field(None, ge=0, le=1e9, allow_inf_nan=False,
                                    description="New alert tolerance (penalty units)")
    auto_deploy: bool | None = Field(None, description="Deploy every run that succeeds")


class ZoneOut(BaseModel):
    name: str = Field(description="Zone name")
    cells: list[list[int]] = Field(description="Cells [x, y] of the zone")


class RobotPath(BaseModel):
    id: str = Field(description="Robot id")
    start: list[int] = Field(description="Start cell [x, y]")
    path: list[list[int]] = Field(description="Most likely cells [x, y] the robot visits under its current policy")


class MapOut(BaseModel):
    width: int = Field(description="Grid width (cells)")
    height: int = Field(description="Grid height (cells)")
    grid: list[str] = Field(description="Grid rows, one character per cell ('#' is a wall)")
    passable: list[list[bool]] = Field(description="passable[y][x]: a robot may stand there")
    zones: list[ZoneOut] = Field(description="NSE zones")
    legend: dict[str, str] = Field(description="What each grid symbol of the map's domain is")
    robots: list[RobotPath] = Field(description="Robots with their planned paths")
    run_id: int | None = Field(description="Run whose policies gave the paths (null: naive policies)")


# -- rules -------------------------------------------------------------------------------
class RuleIn(Strict):
    zone: str | None = Field(None, max_length=200, description="Zone name, or null / '*' for every zone")
    feature: str = Field(min_length=1, max_length=100, description="The dynamic feature counted (e.g. sample)")
    value: str = Field(min_length=1, max_length=100, description="Its value that counts (e.g. A)")
    weight: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="w_v: the term's weight")
    sensitivity: float = Field(gt=0, le=1e6, allow_inf_nan=False, description="k_f: the term's sensitivity")


class RuleOut(BaseModel):
    zone: str | None = Field(description="Zone name, or null for every zone")
    feature: str = Field(description="The dynamic feature counted")
    value: str = Field(description="Its value that counts")
    weight: float = Field(description="w_v")
    sensitivity: float = Field(description="k_f")


class RuleSetIn(Strict):
    rules: list[RuleIn] = Field(max_length=1000, description="The whole new rule set")
    min_count: int | None = Field(None, ge=2, le=100_000,
                                  description="Robots needed in a zone for an NSE (default: unchanged)")
    note: str = Field("", max_length=2000, description="Why the rules changed")


class RuleSetOut(BaseModel):
    version: int = Field(description="Version number (1: the map's own rules)")
    rules: list[RuleOut] = Field(description="The rules of this version")
    min_count: int = Field(description="Robots needed in a zone for an NSE")
    note: str = Field(description="Why the rules changed")
    created_at: datetime = Field(description="When this version was made (UTC)")


# -- runs --------------------------------------------------------------------------------
class RunCreate(Strict):
    method: MethodName = Field("gen-recon-cf", description="Mitigation method")  # type: ignore[valid-type]
    update_fraction: float = Field(0.25, ge=0, le=1, allow_inf_nan=False,
                                   description="Fraction f of robots that replan each round (the ceil(f*n) most blamed)")
    rounds: int = Field(5, ge=1, le=20, description="Round limit (rounds also stop when no replan is accepted)")
    episodes: int = Field(100, ge=2, le=10_000, description="Monte Carlo episodes blamed per round")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the rollouts")
    rule_version: int | None = Field(None, ge=1, le=2**31 - 1, description="Rule set version to use (default: the newest)")
    deploy: bool | None = Field(None, description="Deploy the run when it succeeds (default: the scenario's auto_deploy; "
                                                  "false: it is a proposal that an operator deploys)")


class RobotResult(BaseModel):
    id: str = Field(description="Robot id")
    blame: float = Field(description="Total blame per episode, summed over rounds")
    updated: bool = Field(description="Whether the robot replanned")
    task_regret: float = Field(description="V1*(s0) - V1^pi(s0): task value the robot gave up")
    slack: float = Field(description="Its task budget, in task-value units")
    task_cost: float | None = Field(None, description="|V1*(s0)|: its optimal expected task cost")
    rank: int | None = Field(None, description="Its rank by blame in the first round it was scored (1 = most blamed)")
    selected: int | None = Field(None, description="Rounds in which it was selected to replan")
    rejected: int | None = Field(None, description="Of those, rounds whose replan the acceptance step refused")
    imported_from: Literal["robot", "task", "own"] | None = Field(
        None, description="An imported run: where its policy comes from (the file's entry for its robot id, the "
                          "entry for its task, or own: no entry, its task-optimal policy); null for other runs")


class RoundOut(BaseModel):
    round: int = Field(description="Round number, from 1")
    nse: float = Field(description="Exact J_N after the round")
    accepted: list[str] = Field(description="Robots whose new policy the acceptance step kept (J_N fell)")
    rejected: list[str] = Field(description="Robots that replanned but kept their policy (J_N would not fall)")
    cutoff: float | None = Field(None, description="Score of the last robot selected this round")


class RunSummary(BaseModel):
    nse_before: float = Field(description="Expected NSE penalty J_N of the naive joint policy")
    nse_after: float = Field(description="Expected NSE penalty J_N after mitigation")
    nse_state_rate_before: float | None = Field(description="Fraction of steps in an NSE state, before")
    nse_state_rate_after: float | None = Field(description="Fraction of steps in an NSE state, after")
    updated: list[str] = Field(description="Robots that replanned")
    rounds: list[RoundOut] = Field(description="Every round performed: J_N after it, robots accepted and rejected")
    counterfactual_share: float | None = Field(None, description="Share of blamed (state, robot) pairs with a valid "
                                                                 "counterfactual value (null: no rollouts blamed)")
    nse_after_orders: float | None = Field(None, description="J_N once operators' desired outcomes applied (null: none)")
    budget: str | None = Field(None, description="The task budget the run used")
    seconds: dict[str, float] = Field(description="Wall time per phase (plan, monitor, blame, generalise, replan, "
                                                  "accept)")
    over_budget: list[str] | None = Field(None, description="An imported run: robots whose task regret exceeds their "
                                                            "budget (a mitigation run never has any; null for them)")


class ImportedOut(BaseModel):
    learner: str = Field(description="The file's learner label: its source's `learner` or `method` (bc, ev2bc, "
                                     "queried), 'run N' for a run's policies, else 'file'")
    entries: int = Field(description="Entries (policies) in the file")
    robots: dict[str, int] = Field(description="Robots whose policy comes from an entry for their id (robot), for "
                                               "their task (task), or from none: their task-optimal policy (own)")
    source: str | None = Field(None, description="What wrote the file (its source's `command` or `service`)")


class RunOut(BaseModel):
    id: int = Field(description="Run id")
    scenario_id: int = Field(description="Scenario the run belongs to")
    method: str = Field(description="Mitigation method, or import (an imported policy file)")
    params: dict[str, float | int] = Field(description="update_fraction, rounds, episodes, seed (empty for an "
                                                       "imported run)")
    rule_version: int = Field(description="Rule set version used")
    status: RunStatus = Field(description="queued, running, succeeded, failed or interrupted")
    phase: str = Field(description="Current phase: queued, plan, monitor, blame, generalise, replan, done...")
    progress: float = Field(description="Fraction of the work done, 0 to 1")
    attempts: int = Field(description="How many times the run was started")
    error: str | None = Field(description="Why the run failed or was interrupted")
    summary: RunSummary | None = Field(description="Results, once succeeded")
    created_at: datetime = Field(description="Creation time (UTC)")
    started_at: datetime | None = Field(description="Start of the newest attempt (UTC)")
    finished_at: datetime | None = Field(description="End of the newest attempt (UTC)")
    base_run_id: int | None = Field(None, description="The run deployed when this one started, its 'before' "
                                                      "(null: the naive policies)")
    created_by: str = Field("", description="Who started it")
    deploy_on_success: bool = Field(False, description="It is deployed when it succeeds")
    deployed: bool = Field(False, description="Robots follow this run now")
    imported: ImportedOut | None = Field(None, description="An imported policy file (method 'import'): what it holds; "
                                                           "null for mitigation runs")


class RunDetail(RunOut):
    robots: list[RobotResult] = Field(description="Per-robot outcome (empty until succeeded)")


class RunComparison(BaseModel):
    runs: list[RunDetail] = Field(description="The runs compared, in the order asked")
    best_run_id: int | None = Field(description="Succeeded run with the lowest NSE penalty after mitigation")


# -- robots ------------------------------------------------------------------------------
class PolicyOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    run_id: int | None = Field(description="Run that produced the policy (null: the naive, task-optimal one)")
    features: list[str] = Field(description="State feature names; a state is a list of their value indices")
    feature_values: list[list[str]] = Field(description="Each feature's value names")
    action_names: list[str] = Field(description="Action names; `actions` index this list")
    start: int = Field(description="Index of the start state in `states`")
    states: list[list[int]] = Field(description="Every reachable state")
    cells: list[list[int]] = Field(description="The cell [x, y] of each state")
    actions: list[int] = Field(description="The policy's action in each state")
    terminal: list[bool] = Field(description="Whether each state ends the task")
    successors: list[list[list[float]]] = Field(
        description="Per state: [next state index, probability] pairs under the policy's action")


class RobotStatusOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    run_id: int | None = Field(description="Run whose policy the robot should follow (null: its naive policy)")
    task: TaskOut = Field(description="The robot's task")
    policy_ready: bool = Field(description="The fleet is planned: policy, penalties and state reports are served")


class ObservationsCleared(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    deleted: int = Field(description="State reports removed; the live monitor starts afresh")


class PenaltyOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    run_id: int | None = Field(description="Run whose local penalty this is (null: none yet, all zero)")
    state: list[int] = Field(description="The state asked for")
    state_index: int = Field(description="Its index in the robot's state list")
    penalty: float = Field(description="The robot's local NSE penalty in that state")


class PenaltyTableOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    run_id: int | None = Field(description="Run whose local penalties these are (null: none yet)")
    features: list[str] = Field(description="State feature names")
    states: list[list[int]] = Field(description="Every reachable state")
    penalties: list[float] = Field(description="Local NSE penalty per state")


class StateIn(Strict):
    state: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(min_length=1, max_length=64,
                             description="The robot's current state: value indices in the order of the policy's `features`")
    run_id: int | None = Field(None, ge=1, le=2**31 - 1,
                               description="The run whose policy the robot follows (its policy's `run_id`; omit or "
                                           "null for the naive one): the console flags robots on an old policy")


class ObservationOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    state_index: int = Field(description="Index of the reported state in the robot's state list")
    joint_penalty: float = Field(description="NSE penalty of the fleet's latest reported states, now")


class MonitorOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    rule_version: int = Field(description="Rule set version the penalty uses")
    reporting_robots: list[str] = Field(description="Robots that reported a state")
    current_penalty: float = Field(description="NSE penalty of the latest reported joint state")
    nse_state_rate: float | None = Field(description="Fraction of reports at which the joint state was an NSE state")
    observations: int = Field(description="Number of state reports since the last clear (the history kept may be shorter)")
    zones_in_violation: list[str] = Field(description="Zones whose current penalty is above zero")
    zone_penalties: dict[str, float] = Field(description="Current penalty per zone")
    positions: dict[str, list[int]] = Field(description="Each reporting robot's current cell [x, y]")
    tolerance: float = Field(0.0, description="A zone above this penalty raises an alert (penalty units)")
    robots: list["RobotReportOut"] = Field(default_factory=list, description="Each reporting robot's latest report")


class RobotReportOut(BaseModel):
    robot_id: str = Field(description="Robot id")
    state: list[int] = Field(description="Its latest reported state")
    cell: list[int] = Field(description="Its cell [x, y]")
    zone: str | None = Field(description="The NSE zone it stands in (null: none)")
    in_violation: bool = Field(description="Its zone's penalty is above zero")
    run_id: int | None = Field(description="The run whose policy it said it follows (null: naive or not said)")
    received_at: datetime = Field(description="When the report arrived (UTC)")


class TokenCreate(Strict):
    robot_id: str = Field(min_length=1, max_length=100, description="The robot the token is bound to")
    expires_in: int | None = Field(None, ge=1, le=10 * 365 * 86400,
                                   description="Seconds the token is valid (default: MASE_TOKEN_TTL; 0 there: until revoked)")


class TokenInfoOut(BaseModel):
    id: int = Field(description="Token id (to revoke it)")
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    created_at: datetime = Field(description="When it was made (UTC)")
    expires_at: datetime | None = Field(description="When it stops being valid (UTC; null: until revoked)")


class TokenOut(TokenInfoOut):
    token: str = Field(description="The bearer token; shown only now, stored hashed")


class ObservationRecord(BaseModel):
    id: int = Field(description="Report id (increasing)")
    robot_id: str = Field(description="Robot id")
    state: list[int] = Field(description="The reported state")
    state_index: int = Field(description="Its index in the robot's state list")
    joint_penalty: float = Field(description="NSE penalty of the fleet's latest states after this report")
    received_at: datetime = Field(description="When it arrived (UTC)")


class ObservationPage(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    observations: list[ObservationRecord] = Field(description="Reports in id order")
    next_after: int | None = Field(description="Pass as `after` for the next page (null: no more)")


# -- path and query parameters ---------------------------------------------------------------
MAX_ID = 2**31 - 1


def _digits(value):
    """A number in a URL is plain ASCII digits (not ' 1', '+1', '1_0', '１' or '1.0')."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 19):
        raise ValueError("must be a whole number written in plain digits (0-9)")
    return value


Digits = BeforeValidator(_digits)
ScenarioId = Annotated[int, Digits, Path(ge=1, le=MAX_ID, description="Scenario id")]
RunId = Annotated[int, Digits, Path(ge=1, le=MAX_ID, description="Run id")]
VersionNumber = Annotated[int, Digits, Path(ge=1, le=MAX_ID, description="Rule set version")]
RobotId = Annotated[str, Path(min_length=1, max_length=100, description="Robot id")]
TokenId = Annotated[int, Digits, Path(ge=1, le=MAX_ID, description="Token id")]


# -- the operator's console ------------------------------------------------------------------------
HistoryKind = Literal["scenario_created", "run_started", "run_imported", "run_restarted", "deployed", "rolled_back",
                      "undeployed", "rules_edited", "settings_changed", "alert_acknowledged", "token_created",
                      "token_revoked", "observations_cleared"]


class HistoryOut(BaseModel):
    id: int = Field(description="Entry id (increasing)")
    scenario_id: int = Field(description="Scenario id")
    kind: HistoryKind = Field(description="What happened")  # type: ignore[valid-type]
    actor: str = Field(description="Who did it: an operator's name, or 'robot <id>'")
    at: datetime = Field(description="When (UTC)")
    run_id: int | None = Field(description="The run it is about")
    rule_version: int | None = Field(description="The rule set version it is about")
    detail: dict = Field(description="More about it (previous_run_id, automatic, method, zone, ...)")


class AlertOut(BaseModel):
    id: int = Field(description="Alert id")
    scenario_id: int = Field(description="Scenario id")
    zone: str = Field(description="The NSE zone whose penalty went above the tolerance")
    robots: list[str] = Field(description="Robots standing in the zone when it was raised")
    penalty: float = Field(description="The zone's live penalty when raised (penalty units)")
    peak: float = Field(description="The highest it reached while above the tolerance (penalty units)")
    tolerance: float = Field(description="The tolerance it exceeded (penalty units)")
    rule_version: int = Field(description="Rule set version of the penalty")
    raised_at: datetime = Field(description="When it was raised (UTC)")
    cleared_at: datetime | None = Field(description="When the zone came back within the tolerance (null: not yet)")
    acknowledged_at: datetime | None = Field(description="When an operator acknowledged it (null: not yet)")
    acknowledged_by: str | None = Field(description="Who acknowledged it")


class TicketIn(Strict):
    scenario_id: int = Field(ge=1, le=2**31 - 1, description="The scenario whose events the ticket opens")


class TicketOut(BaseModel):
    ticket: str = Field(description="Pass as `?ticket=` to GET /api/v1/scenarios/{id}/events, once, within expires_in")
    scenario_id: int = Field(description="Scenario id")
    expires_in: float = Field(description="Seconds it stays valid")


class MethodOut(BaseModel):
    name: str = Field(description="Method name, as `method` of a run")
    description: str = Field(description="What it does")
    min_robots: int = Field(description="Fewest robots it works with")


class RobotExplained(BaseModel):
    id: str = Field(description="Robot id")
    updated: bool = Field(description="It follows a new policy after the run")
    blame: float = Field(description="Total blame, summed over rounds (penalty units per episode)")
    rank: int | None = Field(description="Rank by blame in the first round it was scored (1 = most blamed)")
    selected: int | None = Field(description="Rounds in which it was selected to replan")
    rejected: int | None = Field(description="Of those, rounds whose replan the acceptance step refused")
    tied_out: list[int] = Field(description="Rounds in which it tied with the cut-off but was not selected")
    task_regret: float = Field(description="Task value given up (steps: every action costs 1)")
    slack: float = Field(description="Its task budget (steps)")
    reason: str = Field(description="Why it was or was not replanned, in words")
    path_before: list[list[int]] = Field(description="Most likely cells [x, y] under its policy before the run")
    path_after: list[list[int]] = Field(description="... and after")


class RoundExplained(BaseModel):
    round: int = Field(description="Round number, from 1")
    scores: list[float] = Field(description="Every robot's blame score this round, in robot order (penalty units)")
    selected: list[str] = Field(description="Robots selected to replan (highest positive scores)")
    cutoff: float | None = Field(description="Score of the last robot selected (penalty units)")
    tied_out: list[str] = Field(description="Robots whose score equals the cut-off but were not selected (stable order)")
    accepted: list[str] = Field(description="Replans the acceptance step kept (the exact J_N fell)")
    rejected: list[str] = Field(description="Replans it refused (J_N would not fall)")


class CellHeat(BaseModel):
    x: int = Field(description="Column")
    y: int = Field(description="Row")
    zone: str = Field(description="Its NSE zone")
    before: float = Field(description="Expected NSE penalty here before the run (penalty units per episode)")
    after: float = Field(description="... and after")


class RunExplained(BaseModel):
    run_id: int = Field(description="Run id")
    scenario_id: int = Field(description="Scenario id")
    base_run_id: int | None = Field(description="The run deployed when it started (its 'before'; null: naive)")
    k: int = Field(description="Robots replanned per round: ceil(update_fraction x robots)")
    units: dict[str, str] = Field(description="Unit of each kind of number")
    per_step_before: list[float] = Field(description="Exact expected NSE penalty at each step t = 0..H, before")
    per_step_after: list[float] = Field(description="... and after")
    per_zone_before: dict[str, float] = Field(description="Exact expected NSE penalty per zone over the horizon, before")
    per_zone_after: dict[str, float] = Field(description="... and after")
    cells: list[CellHeat] = Field(description="Where it happens: every zone cell's share of its zone's penalty")
    rounds: list[RoundExplained] = Field(description="Each round's scores, selection, cut-off, ties and acceptance")
    robots: list[RobotExplained] = Field(description="Why each robot was or was not replanned, with its paths")
