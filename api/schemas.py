"""Request and response bodies of the REST API; every field is documented in the OpenAPI schema."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from metareasoner.mitigation import METHODS

MethodName = Literal[METHODS]  # type: ignore[valid-type]
RunStatus = Literal["queued", "running", "succeeded", "failed", "interrupted"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(BaseModel):
    detail: str | list = Field(description="What was wrong, and where (a message, or a list of field errors)")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="Always 'ok' when the service answers")
    version: str = Field(description="Service version")
    database: str = Field(description="Database backend in use (sqlite or postgresql)")


class Identity(BaseModel):
    role: Literal["operator", "robot"] = Field(description="What the bearer token may do")
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
    slack: float = Field(100.0, ge=0, le=1e6, allow_inf_nan=False,
                         description="Task slack delta each robot may give up when it replans (MATH.md 2)")

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


class ScenarioOut(BaseModel):
    id: int = Field(description="Scenario id")
    name: str = Field(description="Display name")
    map_name: str = Field(description="The map's name")
    domain: str = Field(description="Domain of the map")
    n_robots: int = Field(description="Number of robots")
    seed: int = Field(description="Seed of the generated tasks")
    slack: float = Field(description="Task slack of every robot")
    rule_version: int = Field(description="Newest NSE rule set version")
    current_run_id: int | None = Field(description="The newest succeeded run, whose policies robots follow (null: naive)")
    active_run_id: int | None = Field(description="A queued or running run of this scenario, if any")
    created_at: datetime = Field(description="Creation time (UTC)")
    robots: list[TaskOut] = Field(description="Every robot's task")


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
    rounds: int = Field(1, ge=1, le=20, description="Round limit of iterative mitigation")
    episodes: int = Field(100, ge=2, le=10_000, description="Monte Carlo episodes blamed per round")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the rollouts")
    rule_version: int | None = Field(None, ge=1, le=2**31 - 1, description="Rule set version to use (default: the newest)")


class RobotResult(BaseModel):
    id: str = Field(description="Robot id")
    blame: float = Field(description="Total blame per episode, summed over rounds")
    updated: bool = Field(description="Whether the robot replanned")
    task_regret: float = Field(description="V1*(s0) - V1^pi(s0): task value the robot gave up")
    slack: float = Field(description="The slack it was allowed")


class RunSummary(BaseModel):
    nse_before: float = Field(description="Expected NSE penalty J_N of the naive joint policy")
    nse_after: float = Field(description="Expected NSE penalty J_N after mitigation")
    nse_state_rate_before: float | None = Field(description="Fraction of steps in an NSE state, before")
    nse_state_rate_after: float | None = Field(description="Fraction of steps in an NSE state, after")
    updated: list[str] = Field(description="Robots that replanned")
    rounds: int = Field(description="Rounds performed")
    seconds: dict[str, float] = Field(description="Wall time per phase (plan, monitor, blame, generalise, replan)")


class RunOut(BaseModel):
    id: int = Field(description="Run id")
    scenario_id: int = Field(description="Scenario the run belongs to")
    method: str = Field(description="Mitigation method")
    params: dict[str, float | int] = Field(description="update_fraction, rounds, episodes, seed")
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
    observations: int = Field(description="Number of state reports")
    zones_in_violation: list[str] = Field(description="Zones whose current penalty is above zero")
    zone_penalties: dict[str, float] = Field(description="Current penalty per zone")
    positions: dict[str, list[int]] = Field(description="Each reporting robot's current cell [x, y]")


class TokenCreate(Strict):
    robot_id: str = Field(min_length=1, max_length=100, description="The robot the token is bound to")


class TokenOut(BaseModel):
    scenario_id: int = Field(description="Scenario id")
    robot_id: str = Field(description="Robot id")
    token: str = Field(description="The bearer token; shown only now, stored hashed")


# -- path parameters ---------------------------------------------------------------------
MAX_ID = 2**31 - 1
ScenarioId = Annotated[int, Path(ge=1, le=MAX_ID, description="Scenario id")]
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="Run id")]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_ID, description="Rule set version")]
RobotId = Annotated[str, Path(min_length=1, max_length=100, description="Robot id")]
