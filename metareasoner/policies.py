"""Policy files: a run's policies or a learned policy, deployable on a fleet (docs/LOGS.md).

One JSON document, `{"format": "mase-policies", "version": 1, "map", "domain", "source",
"policies": [entry, ...]}`. An entry is a policy for one task as a table: the task, the
features naming each state's values, every state it covers and the action taken there, and
optionally `robots`, the robot ids it is for. `policies_for(fleet)` gives each robot of a fleet
its policy: the entry that lists its id (its task must match), else the entry for its task
without robot ids; a robot with neither, and a state an entry does not cover, keep the robot's
own task-optimal action. Every deployed policy is made sure to finish (`finishing`).
`check(fleet)` (the service's import) is stricter: no entry for a robot or a task the fleet
does not have, no state the robot cannot reach, none listed twice.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Sequence

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from planner.solvers import finishes_surely
from planner.scenario import task_key

from .fleetlog import LogError, TaskRecord, _field_name, read_text, task_from_record, task_to_record

FORMAT = "mase-policies"
VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class PolicyEntry(_Strict):
    task: TaskRecord
    robots: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    features: Annotated[list[str], Field(min_length=2)]
    states: list[list[Annotated[int, Field(ge=0)]]]
    actions: list[str]


def _not_a_boolean(value):
    # a Literal[1] takes True (1 == True), even in strict mode
    if isinstance(value, bool):
        raise ValueError("the version is the number 1, not a boolean")
    return value


class PolicyDocument(_Strict):
    format: Literal["mase-policies"]
    version: Annotated[Literal[1], BeforeValidator(_not_a_boolean)]
    map: str
    domain: str
    source: dict = {}
    policies: list[PolicyEntry]


def finishing(plan, policy: np.ndarray) -> np.ndarray:
    """`policy` with the robot's task-optimal action in every state from which it would not
    surely finish. One pass suffices: the kept states only lead to kept states (they finish),
    and from a switched state the task-optimal policy reaches a terminal or a kept state."""
    mdp = plan.mdp
    sure = finishes_surely(mdp, policy)
    if sure.all():
        return policy
    return np.where(sure, policy, plan.policy)


@dataclass
class PolicyFile:
    document: PolicyDocument
    path: str = "<policies>"

    @property
    def source(self) -> dict:
        return self.document.source

    def policies_for(self, fleet, strict: bool = False) -> tuple[list[np.ndarray], list[str]]:
        """Each robot's policy and where it comes from ("robot", "task" or "own": no entry, its
        task-optimal policy). LogError if the file is of another map or an entry does not fit;
        `strict` (what the service's import asks) refuses more, see `check`."""
        chosen = self._choose(fleet, strict)
        out, cache = [], {}
        for plan, (k, how) in zip(fleet.plans, chosen):
            if k is None:
                out.append(plan.policy.copy())
                continue
            if (k, id(plan.mdp)) not in cache:
                cache[(k, id(plan.mdp))] = self._deploy(k, plan, strict)
            out.append(cache[(k, id(plan.mdp))])
        return out, [how for _, how in chosen]

    def check(self, fleet) -> list[str]:
        """What `policies_for(fleet, strict=True)` raises, without building a policy: where each
        robot's policy comes from, or the first LogError. Strict, beyond `policies_for`: the file
        has an entry; every robot it lists is one of the fleet's and every task entry is some
        robot's task; an entry lists at least one robot (or null); every state is one the robot
        can reach (each value in its feature's range), listed once."""
        chosen = self._choose(fleet, strict=True)
        seen = set()
        for plan, (k, _) in zip(fleet.plans, chosen):
            if k is not None and (k, id(plan.mdp)) not in seen:
                seen.add((k, id(plan.mdp)))
                self._table(k, plan, strict=True)
        return [how for _, how in chosen]

    def _choose(self, fleet, strict: bool) -> list[tuple[int | None, str]]:
        """Per robot of `fleet`: (index of its entry or None, "robot" | "task" | "own")."""
        doc, world = self.document, fleet.scenario.world
        if doc.domain != world.domain or doc.map != world.name:
            raise LogError(self.path, f"the policies are for map {doc.map!r} ({doc.domain}), not {world.name!r} "
                           f"({world.domain})", field="map")
        if strict and not doc.policies:
            raise LogError(self.path, "the file has no entry: nothing to deploy", field="policies")
        by_robot: dict[str, int] = {}
        by_task: dict[tuple, int] = {}
        for k, entry in enumerate(doc.policies):
            for robot in entry.robots or ():
                if robot in by_robot:
                    raise LogError(self.path, f"robot {robot!r} has two entries (policies[{by_robot[robot]}] too)",
                                   field=f"policies[{k}].robots")
                by_robot[robot] = k
            if entry.robots is None:
                key = task_key(task_from_record("", entry.task))
                if key in by_task:
                    raise LogError(self.path, f"two entries for one task (policies[{by_task[key]}] too)",
                                   field=f"policies[{k}].task")
                by_task[key] = k
        if strict:
            robots = {p.task.robot_id for p in fleet.plans}
            tasks = {task_key(p.task) for p in fleet.plans}
            for k, entry in enumerate(doc.policies):
                if entry.robots is not None and not entry.robots:
                    raise LogError(self.path, "an entry for no robot: list its robots, or null for every robot of "
                                   "its task", field=f"policies[{k}].robots")
                for j, robot in enumerate(entry.robots or ()):
                    if robot not in robots:
                        raise LogError(self.path, f"no robot {robot!r} in this fleet of {len(robots)} robots",
                                       field=f"policies[{k}].robots[{j}]")
            for key, k in by_task.items():
                if key not in tasks:
                    raise LogError(self.path, f"no robot of this fleet has the task "
                                   f"{task_to_record(task_from_record('', doc.policies[k].task))}",
                                   field=f"policies[{k}].task")
        chosen = []
        for plan in fleet.plans:
            robot = plan.task.robot_id
            k, how = by_robot.get(robot), "robot"
            if k is not None and task_key(task_from_record(robot, doc.policies[k].task)) != task_key(plan.task):
                raise LogError(self.path, f"robot {robot!r}'s task in this fleet is {task_to_record(plan.task)}, "
                               f"not the entry's", field=f"policies[{k}].task")
            if k is None:
                k, how = by_task.get(task_key(plan.task)), "task"
            chosen.append((k, how) if k is not None else (None, "own"))
        return chosen

    def _table(self, k: int, plan, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Entry k on robot `plan`'s MDP: (state indices, action indices) of the states it
        covers that the robot can reach (strict: every state must be one, listed once)."""
        entry, mdp = self.document.policies[k], plan.mdp
        where = f"policies[{k}]"
        names = [f.name for f in mdp.features]
        if entry.features != names:
            raise LogError(self.path, f"the entry's features {entry.features} are not robot {plan.task.robot_id!r}'s "
                           f"{names}", field=f"{where}.features")
        if len(entry.actions) != len(entry.states):
            raise LogError(self.path, f"{len(entry.states)} states but {len(entry.actions)} actions",
                           field=f"{where}.actions")
        index = {a: j for j, a in enumerate(mdp.actions)}
        actions = np.array([index.get(a, -1) for a in entry.actions], dtype=np.int64)
        if (actions < 0).any():
            j = int(np.flatnonzero(actions < 0)[0])
            raise LogError(self.path, f"{entry.actions[j]!r} is not an action: {list(mdp.actions)}",
                           field=f"{where}.actions[{j}]")
        if not entry.states:
            return np.zeros(0, dtype=np.int64), actions
        if any(len(s) != len(names) for s in entry.states):
            j = next(j for j, s in enumerate(entry.states) if len(s) != len(names))
            raise LogError(self.path, f"a state has {len(names)} values ({', '.join(names)}), not "
                           f"{len(entry.states[j])}", field=f"{where}.states[{j}]")
        states = np.array(entry.states, dtype=np.int64)
        radix = np.array([len(f.values) for f in mdp.features])
        inside = (states < radix[None, :]).all(axis=1)
        if strict and not inside.all():
            j = int(np.flatnonzero(~inside)[0])
            f = int(np.flatnonzero(states[j] >= radix)[0])
            raise LogError(self.path, f"{names[f]}={states[j, f]} is out of range 0..{radix[f] - 1}",
                           field=f"{where}.states[{j}][{f}]")
        found = np.full(len(states), -1, dtype=np.int64)
        found[inside] = mdp.index_of(states[inside])
        known = found >= 0  # states this robot cannot reach (another map version) are ignored
        if strict:
            if not known.all():
                j = int(np.flatnonzero(~known)[0])
                raise LogError(self.path, f"{entry.states[j]} ({', '.join(names)}) is not a state robot "
                               f"{plan.task.robot_id!r} can reach", field=f"{where}.states[{j}]")
            first = {}
            for j, s in enumerate(found.tolist()):
                if s in first:
                    raise LogError(self.path, f"{entry.states[j]} is listed twice (states[{first[s]}] too)",
                                   field=f"{where}.states[{j}]")
                first[s] = j
        return found[known], actions[known]

    def _deploy(self, k: int, plan, strict: bool = False) -> np.ndarray:
        found, actions = self._table(k, plan, strict)
        policy = plan.policy.copy()
        policy[found] = actions
        return finishing(plan, policy)


def learner_label(source: dict) -> str:
    """What made a policy file, in a word or two: its source's `learner` or `method` (`mase
    learn`: bc, ev2bc, queried), 'run N' (with its method) for a run's policies from the
    service, else 'file'."""
    if source.get("service") == "runs/policies" and isinstance(source.get("run_id"), int):
        method = source.get("method")
        label = f"run {source['run_id']}" + (f" ({method})" if isinstance(method, str) and method else "")
        return label[:60]
    for key in ("learner", "method"):
        value = source.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:60]
    return "file"


def read_policy_file(path: "str | Path", text: str | None = None) -> PolicyFile:
    """Read a policy file; LogError names the file, line and column (bad JSON) or the field."""
    source = str(path)
    if text is None:
        text = read_text(path, "policy file")
    try:
        document = PolicyDocument.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            message = str(first.get("ctx", {}).get("error", first["msg"]))
            match = re.search(r"line (\d+) column (\d+)", message)
            raise LogError(source, f"not valid JSON: {re.sub(r' at line .*', '', message)}",
                           int(match.group(1)) if match else None, int(match.group(2)) if match else None) from None
        shown = first.get("input")
        got = "" if first["type"] == "missing" or isinstance(shown, (dict, list)) else f", got {json.dumps(shown)[:60]}"
        raise LogError(source, f"{first['msg'][0].lower()}{first['msg'][1:]}{got}",
                       field=_field_name(tuple(first["loc"]))) from None
    return PolicyFile(document, source)


def entry(plan, policy: np.ndarray, robots: Sequence[str] | None = None) -> dict:
    """A policy file entry: `policy` over every state of the robot's MDP."""
    mdp = plan.mdp
    return {"task": task_to_record(plan.task), "robots": list(robots) if robots is not None else None,
            "features": [f.name for f in mdp.features], "states": mdp.states.tolist(),
            "actions": [mdp.actions[a] for a in np.asarray(policy).tolist()]}


def run_document(fleet, policies: Sequence[np.ndarray], source: dict | None = None) -> dict:
    """A fleet's policies as a policy file, one entry per robot (what a run's RUN.json holds)."""
    world = fleet.scenario.world
    return {"format": FORMAT, "version": VERSION, "map": world.name, "domain": world.domain, "source": source or {},
            "policies": [entry(plan, policy, [plan.task.robot_id]) for plan, policy in zip(fleet.plans, policies)]}


def write_policy_file(document: dict, path: "str | Path") -> None:
    PolicyDocument.model_validate(document, strict=False)  # what is written can be read back
    Path(path).write_text(json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")


__all__ = ["FORMAT", "VERSION", "PolicyDocument", "PolicyEntry", "PolicyFile", "entry", "finishing",
           "learner_label", "read_policy_file", "run_document", "write_policy_file"]
