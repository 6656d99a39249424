"""Fleet logs: what robots did, step by step, and how bad each episode was (docs/LOGS.md).

A fleet log is JSON Lines. The first record is the header (`"record": "log"`: format, version,
map, domain, horizon, action names, provenance), then, episode after episode, one `"step"`
record per robot per step (episode, step, robot id, its task, its local state, cell, NSE zone,
dynamic value, the action it took when known) and one `"episode"` record closing each episode
(its robots and its collective NSE score: the sum over its steps of R_N of the joint state).

* `simulate_log` rolls a planned fleet out (seeded; optionally a random group of robots per
  episode), `write_log` writes it, `read_log` reads it back, every bad record an error naming
  the file, the line (and column for bad JSON) and the field.
* `LoggedFleet.bind` checks a log against its map: each robot's task is planned, each logged
  state must be one its robot can reach (file:line errors again).
* `log_from_reports` turns a service's history of state reports into a log (the service's
  `observations/export`): the episode rule is in its docstring.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal, Sequence, TextIO, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from planner.budget import DEFAULT_BUDGET
from planner.domains import get_domain
from planner.scenario import Scenario
from planner.world import LocatedError, Task, World

from .monitor import monte_carlo_monitor

FORMAT = "mase-fleet-log"
VERSION = 1
#: simulated joint states (episodes x steps x robots) per rollout batch: bounds memory
BATCH_ENTRIES = 2_000_000


class LogError(LocatedError):
    """A fleet log (or policy file) that cannot be used, with where: file, line, column, field."""

    unnamed = "<log>"


# -- the records ---------------------------------------------------------------------------------
NonNegative = Annotated[int, Field(ge=0)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TaskRecord(_Record):
    kind: Name
    start: Annotated[list[NonNegative], Field(min_length=2, max_length=2)]
    items: list[NonNegative] = []
    option: str = ""
    count: NonNegative = 0


class HeaderRecord(_Record):
    record: Literal["log"]
    format: Literal["mase-fleet-log"]
    version: Literal[1]
    map: Name
    domain: Name
    horizon: Annotated[int, Field(ge=1)]
    actions: Annotated[list[Name], Field(min_length=1)]
    source: dict = {}


class StepRecord(_Record):
    record: Literal["step"]
    episode: NonNegative
    step: NonNegative
    robot: Name
    task: TaskRecord
    state: Annotated[list[NonNegative], Field(min_length=2, max_length=64)]
    cell: Annotated[list[NonNegative], Field(min_length=2, max_length=2)]
    zone: Name | None
    value: Name
    action: Name | None = None
    held: bool = False  # the robot sent no report for this step: its last state is repeated


class EpisodeRecord(_Record):
    record: Literal["episode"]
    episode: NonNegative
    robots: Annotated[list[Name], Field(min_length=1)]
    steps: Annotated[int, Field(ge=1)]
    score: Annotated[float, Field(ge=0, allow_inf_nan=False)]


_RECORD = TypeAdapter(Annotated[Union[HeaderRecord, StepRecord, EpisodeRecord], Field(discriminator="record")])
_KINDS = ("log", "step", "episode")


def task_from_record(robot_id: str, task: TaskRecord | dict) -> Task:
    t = task if isinstance(task, TaskRecord) else TaskRecord(**task)
    return Task(robot_id, (int(t.start[0]), int(t.start[1])), t.kind, tuple(int(i) for i in t.items), t.option,
                int(t.count))


def task_to_record(task: Task) -> dict:
    return {"kind": task.kind, "start": [int(task.start[0]), int(task.start[1])], "items": [int(i) for i in task.items],
            "option": task.option, "count": int(task.count)}


def _same_task(a: Task, b: Task) -> bool:
    return (a.start, a.kind, a.items, a.option, a.count) == (b.start, b.kind, b.items, b.option, b.count)


# -- the log in memory ---------------------------------------------------------------------------
@dataclass(eq=False)
class FleetLog:
    """A fleet log, column by column (one row per step record, in file order).

    `robot` indexes `robots` (and `tasks`), `action` indexes `actions` (-1: unknown), `state`
    is padded with -1 on the right (robots of different tasks have states of different
    lengths). Episodes: `episode_ids`, `episode_steps`, `scores` and `groups` (robot indices,
    as listed). `lines`/`episode_lines` are the records' line numbers when read from a file.
    Two logs are equal when their records are (provenance, path and lines aside).
    """

    map: str
    domain: str
    horizon: int
    actions: tuple[str, ...]
    robots: tuple[str, ...]
    tasks: tuple[Task, ...]
    episode: np.ndarray
    step: np.ndarray
    robot: np.ndarray
    state: np.ndarray
    zone: np.ndarray  # object: zone name or None
    value: np.ndarray  # object: the dynamic feature's value label
    action: np.ndarray
    held: np.ndarray
    episode_ids: np.ndarray
    episode_steps: np.ndarray
    scores: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    source: dict = field(default_factory=dict)
    path: str | None = None
    lines: np.ndarray | None = None
    episode_lines: np.ndarray | None = None

    @property
    def n_records(self) -> int:
        return len(self.episode)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ids)

    def state_length(self) -> np.ndarray:
        """(N,) the number of values in each record's state."""
        return (self.state >= 0).sum(axis=1)

    def group_ids(self) -> list[list[str]]:
        """Each episode's robots, by id."""
        return [[self.robots[i] for i in g] for g in self.groups]

    def line_of(self, row: int) -> int | None:
        return None if self.lines is None else int(self.lines[row])

    def first_line_of_robot(self, k: int) -> int | None:
        rows = np.flatnonzero(self.robot == k)
        return self.line_of(int(rows[0])) if len(rows) else None

    def _canonical(self) -> dict:
        """The records sorted by (episode, step, robot id), robots by id, for comparisons."""
        ids = np.array(self.robots + ("",), dtype=object)[:-1][self.robot]
        rank = {r: k for k, r in enumerate(sorted(self.robots))}
        by_rank = np.array([rank[r] for r in self.robots] + [0], dtype=np.int64)[:-1]
        order = np.lexsort((by_rank[self.robot], self.step, self.episode))
        width = int(self.state_length().max(initial=0))
        names = np.array(self.actions + (None,), dtype=object)  # index -1: unknown
        return {
            "header": (self.map, self.domain, self.horizon),
            "tasks": {r: (t.start, t.kind, t.items, t.option, t.count) for r, t in zip(self.robots, self.tasks)},
            "episode": self.episode[order], "step": self.step[order], "robot": ids[order],
            "state": self.state[order, :width], "zone": self.zone[order], "value": self.value[order],
            "action": names[self.action[order]], "held": self.held[order], "episodes": self.episode_ids,
            "steps": self.episode_steps, "scores": self.scores,
            "groups": [sorted(g) for g in self.group_ids()],
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FleetLog):
            return NotImplemented
        a, b = self._canonical(), other._canonical()
        return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


# -- writing -------------------------------------------------------------------------------------
def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


HELD = ',"held":true'


def log_lines(log: FleetLog) -> Iterator[str]:
    """The log's JSON Lines (each without its newline): header, then each episode's step
    records followed by its episode record."""
    yield _dumps({"record": "log", "format": FORMAT, "version": VERSION, "map": log.map, "domain": log.domain,
                  "horizon": int(log.horizon), "actions": list(log.actions), "source": log.source})
    robot_part = [f',"robot":{_dumps(r)},"task":{_dumps(task_to_record(t))},' for r, t in zip(log.robots, log.tasks)]
    actions = [_dumps(a) for a in log.actions] + ["null"]
    # a record's state, cell, zone and value as one fragment, formatted once per distinct combination
    zone_code = {z: k for k, z in enumerate(dict.fromkeys(log.zone.tolist()))}
    value_code = {v: k for k, v in enumerate(dict.fromkeys(log.value.tolist()))}
    keys = np.column_stack([log.state, [zone_code[z] for z in log.zone], [value_code[v] for v in log.value]]) \
        if log.n_records else np.zeros((0, log.state.shape[1] + 2), dtype=np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    zones, values = list(zone_code), list(value_code)
    fragments = []
    for row in unique.tolist():
        state = [x for x in row[:-2] if x >= 0]
        fragments.append(f'"state":{_dumps(state)},"cell":{_dumps(state[:2])},"zone":{_dumps(zones[row[-2]])},'
                         f'"value":{_dumps(values[row[-1]])},"action":')
    episode, step, robot = log.episode.tolist(), log.step.tolist(), log.robot.tolist()
    action, held, inverse = log.action.tolist(), log.held.tolist(), inverse.ravel().tolist()
    ends = np.searchsorted(log.episode, log.episode_ids, side="right")  # step records are grouped by episode
    row = 0
    for e, end in enumerate(ends):
        for r in range(row, int(end)):
            yield (f'{{"record":"step","episode":{episode[r]},"step":{step[r]}{robot_part[robot[r]]}'
                   f'{fragments[inverse[r]]}{actions[action[r]]}{HELD if held[r] else ""}}}')
        row = int(end)
        yield _dumps({"record": "episode", "episode": int(log.episode_ids[e]),
                      "robots": [log.robots[i] for i in log.groups[e]], "steps": int(log.episode_steps[e]),
                      "score": float(log.scores[e])})


def write_log(log: FleetLog, path: "str | Path | TextIO") -> None:
    """Write `log` as JSON Lines to a path or an open text file."""
    if hasattr(path, "write"):
        for line in log_lines(log):
            path.write(line + "\n")
        return
    with open(path, "w", encoding="utf-8") as out:
        for line in log_lines(log):
            out.write(line + "\n")


# -- reading -------------------------------------------------------------------------------------
def _field_name(loc: tuple) -> str | None:
    """('task', 'start', 1) -> 'task.start[1]'."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (("." if name else "") + str(part))
    return name or None


def _validation_error(source: str, number: int, error: ValidationError, kind: str | None) -> LogError:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    if loc and loc[0] == kind:  # the discriminated union's tag leads the location
        loc = loc[1:]
    if first["type"] == "json_invalid":
        text = str(first.get("ctx", {}).get("error", first["msg"]))
        match = re.search(r"line \d+ column (\d+)", text)
        return LogError(source, f"not valid JSON: {re.sub(r' at line .*', '', text)}", number,
                        int(match.group(1)) if match else None)
    if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        return LogError(source, f"must be one of {', '.join(map(repr, _KINDS))}", number, field="record")
    if first["type"] == "model_type" and not loc:
        return LogError(source, "a record is a JSON object", number)
    shown = first.get("input")
    got = "" if first["type"] == "missing" or isinstance(shown, dict) else f", got {json.dumps(shown)[:60]}"
    return LogError(source, f"{first['msg'][0].lower()}{first['msg'][1:]}{got}", number, field=_field_name(loc))


def _kind_of(text: str) -> str | None:
    match = re.search(r'"record"\s*:\s*"(\w+)"', text)
    return match.group(1) if match else None


def read_text(path: "str | Path", what: str) -> str:
    """A UTF-8 file's text; LogError naming the file if it is missing or unreadable."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LogError(str(path), f"no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LogError(str(path), f"cannot read the {what}: {exc}") from None


def read_log(path: "str | Path", text: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> FleetLog:
    """Read a fleet log (or parse `text` as one, named `path` in errors); LogError names the
    file, the line (and column for bad JSON) and the field of the first bad record.
    `progress(lines_read, lines)` is called every 10,000 lines."""
    source = str(path)
    if text is None:
        text = read_text(path, "log file")
    reader = _Reader(source)
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            reader.add(number, line)
        if progress is not None and number % 10_000 == 0:
            progress(number, len(lines))
    if progress is not None:
        progress(len(lines), len(lines))
    return reader.finish()


class _Reader:
    """Checks records one by one (types, then their order and consistency) and keeps columns."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.header: HeaderRecord | None = None
        self.robots: dict[str, int] = {}
        self.tasks: list[Task] = []
        self.task_records: list[TaskRecord] = []
        self.robot_line: list[int] = []
        self.robot_width: list[int] = []
        self.cols: dict[str, list] = {k: [] for k in ("episode", "step", "robot", "state", "zone", "value", "action",
                                                      "held", "line")}
        self.episodes: dict[str, list] = {k: [] for k in ("id", "steps", "score", "group", "line")}
        self.open: int | None = None  # the episode whose step records are being read
        self.open_line = 0
        self.open_steps: dict[int, dict[int, int]] = {}  # robot -> step -> line
        self.closed: set[int] = set()
        self.last_closed = -1
        self.action_index: dict[str, int] = {}

    def error(self, message: str, line: int, field: str | None = None) -> LogError:
        return LogError(self.source, message, line, field=field)

    def add(self, number: int, line: str) -> None:
        try:
            record = _RECORD.validate_json(line)
        except ValidationError as exc:
            raise _validation_error(self.source, number, exc, _kind_of(line)) from None
        if isinstance(record, HeaderRecord):
            if self.header is not None:
                raise self.error("a second header record; a log has one, on its first line", number, "record")
            self.header = record
            self.action_index = {a: k for k, a in enumerate(record.actions)}
            if len(self.action_index) != len(record.actions):
                raise self.error("action names must be distinct", number, "actions")
            return
        if self.header is None:
            raise self.error('the first record must be the header {"record": "log", ...}', number, "record")
        if isinstance(record, StepRecord):
            self._step(number, record)
        else:
            self._episode(number, record)

    def _step(self, number: int, r: StepRecord) -> None:
        if self.open is None:
            if r.episode in self.closed:
                raise self.error(f"episode {r.episode} was already closed by its episode record", number, "episode")
            if r.episode <= self.last_closed:
                raise self.error(f"episodes come in increasing order: episode {r.episode} after episode "
                                 f"{self.last_closed}", number, "episode")
            self.open, self.open_line, self.open_steps = r.episode, number, {}
        elif r.episode != self.open:
            raise self.error(f"episode {self.open} (from line {self.open_line}) has no episode record before "
                             f"episode {r.episode} begins", number, "episode")
        if r.step > self.header.horizon:
            raise self.error(f"step {r.step} is beyond the log's horizon {self.header.horizon}", number, "step")
        k = self.robots.get(r.robot)
        if k is None:
            k = self.robots[r.robot] = len(self.tasks)
            self.tasks.append(task_from_record(r.robot, r.task))
            self.task_records.append(r.task)
            self.robot_line.append(number)
            self.robot_width.append(len(r.state))
        elif r.task != self.task_records[k]:
            raise self.error(f"robot {r.robot!r} has another task on line {self.robot_line[k]}", number, "task")
        elif len(r.state) != self.robot_width[k]:
            raise self.error(f"robot {r.robot!r}'s states have {self.robot_width[k]} values (line "
                             f"{self.robot_line[k]}), this one {len(r.state)}", number, "state")
        if r.cell != r.state[:2]:
            raise self.error(f"{r.cell} is not the state's position {r.state[:2]} (x, y lead every state)",
                             number, "cell")
        seen = self.open_steps.setdefault(k, {})
        if r.step in seen:
            raise self.error(f"robot {r.robot!r} already has step {r.step} of episode {r.episode} (line "
                             f"{seen[r.step]})", number, "step")
        seen[r.step] = number
        action = -1
        if r.action is not None:
            action = self.action_index.get(r.action, -2)
            if action == -2:
                raise self.error(f"{r.action!r} is not one of the header's actions {list(self.action_index)}",
                                 number, "action")
        c = self.cols
        c["episode"].append(r.episode)
        c["step"].append(r.step)
        c["robot"].append(k)
        c["state"].append(r.state)
        c["zone"].append(r.zone)
        c["value"].append(r.value)
        c["action"].append(action)
        c["held"].append(r.held)
        c["line"].append(number)

    def _episode(self, number: int, r: EpisodeRecord) -> None:
        if self.open != r.episode:
            if r.episode in self.closed:
                raise self.error(f"episode {r.episode} already has its episode record", number, "episode")
            if self.open is None:
                raise self.error(f"episode {r.episode} has no step records before its episode record", number,
                                 "episode")
            raise self.error(f"this closes episode {r.episode}, but the step records before it are of episode "
                             f"{self.open} (from line {self.open_line})", number, "episode")
        listed = []
        for name in r.robots:
            k = self.robots.get(name)
            if k is None or k not in self.open_steps:
                raise self.error(f"robot {name!r} has no step record in episode {r.episode}", number, "robots")
            listed.append(k)
        if len(set(listed)) != len(listed):
            raise self.error("a robot is listed twice", number, "robots")
        extra = sorted(set(self.open_steps) - set(listed))
        if extra:
            names = [self.tasks[k].robot_id for k in extra]
            raise self.error(f"robot(s) {names} have step records in episode {r.episode} but are not listed",
                             number, "robots")
        if r.steps > self.header.horizon + 1:
            raise self.error(f"{r.steps} steps, more than the horizon {self.header.horizon} allows "
                             f"({self.header.horizon + 1}: steps 0..{self.header.horizon})", number, "steps")
        for k in listed:
            steps = self.open_steps[k]
            if len(steps) != r.steps or max(steps) != r.steps - 1:
                missing = sorted(set(range(r.steps)) - set(steps))
                what = f"misses step(s) {missing[:5]}" if missing else f"has steps beyond {r.steps - 1}"
                raise self.error(f"robot {self.tasks[k].robot_id!r} {what} of episode {r.episode} (its {r.steps} "
                                 "steps)", number, "steps")
        e = self.episodes
        e["id"].append(r.episode)
        e["steps"].append(r.steps)
        e["score"].append(r.score)
        e["group"].append(tuple(listed))
        e["line"].append(number)
        self.closed.add(r.episode)
        self.last_closed = r.episode
        self.open = None

    def finish(self) -> FleetLog:
        if self.header is None:
            raise LogError(self.source, 'empty log: no header record {"record": "log", ...}')
        if self.open is not None:
            raise self.error(f"episode {self.open} has no episode record (the log ends before it)", self.open_line,
                             "episode")
        c, h = self.cols, self.header
        width = max(self.robot_width, default=2)
        state = np.full((len(c["state"]), width), -1, dtype=np.int64)
        for row, values in enumerate(c["state"]):
            state[row, : len(values)] = values
        return FleetLog(
            map=h.map, domain=h.domain, horizon=h.horizon, actions=tuple(h.actions),
            robots=tuple(t.robot_id for t in self.tasks), tasks=tuple(self.tasks),
            episode=np.array(c["episode"], dtype=np.int64), step=np.array(c["step"], dtype=np.int64),
            robot=np.array(c["robot"], dtype=np.int64), state=state,
            zone=np.array(c["zone"] + [None], dtype=object)[:-1], value=np.array(c["value"] + [""], dtype=object)[:-1],
            action=np.array(c["action"], dtype=np.int64), held=np.array(c["held"], dtype=bool),
            episode_ids=np.array(self.episodes["id"], dtype=np.int64),
            episode_steps=np.array(self.episodes["steps"], dtype=np.int64),
            scores=np.array(self.episodes["score"], dtype=float), groups=tuple(self.episodes["group"]),
            source=dict(h.source), path=self.source, lines=np.array(c["line"], dtype=np.int64),
            episode_lines=np.array(self.episodes["line"], dtype=np.int64))


# -- building logs from rollouts -----------------------------------------------------------------
def _labels(fleet) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per robot: the zone name (or None) and dynamic value label of each of its states."""
    world = fleet.scenario.world
    dynamic = get_domain(world.domain).dynamic_feature
    zone_names = np.array((None,) + tuple(world.zone_names), dtype=object)
    value_names = np.array(dynamic.values, dtype=object)
    cache: dict[int, tuple] = {}
    zones, values = [], []
    for plan in fleet.plans:
        mdp = plan.mdp
        if id(mdp) not in cache:
            cache[id(mdp)] = (zone_names[mdp.states[:, mdp.feature_index(fleet.static_feature)]],
                              value_names[mdp.states[:, mdp.feature_index(fleet.dynamic_feature)]])
        zones.append(cache[id(mdp)][0])
        values.append(cache[id(mdp)][1])
    return zones, values


def _assemble(fleet, members: np.ndarray, states: np.ndarray, actions: np.ndarray | None, held: np.ndarray | None,
              lengths: np.ndarray, episode_ids: np.ndarray, scores: np.ndarray, source: dict) -> FleetLog:
    """A FleetLog from per-episode joint trajectories: `members` (E, n) bool, `states` (E, T, n)
    state indices, `actions` (E, T, n) action indices or -1, `held` (E, T, n), `lengths` (E,)
    steps of each episode (T >= every length)."""
    E, T, n = states.shape
    zones, values = _labels(fleet)
    keep = members[:, None, :] & (np.arange(T)[None, :, None] < lengths[:, None, None])
    e_idx, t_idx, r_idx = np.nonzero(keep)  # C order: episode, step, robot
    width = max(len(p.mdp.features) for p in fleet.plans)
    state = np.full((len(e_idx), width), -1, dtype=np.int64)
    zone = np.empty(len(e_idx), dtype=object)
    value = np.empty(len(e_idx), dtype=object)
    for i, plan in enumerate(fleet.plans):
        rows = np.flatnonzero(r_idx == i)
        if len(rows):
            s = states[e_idx[rows], t_idx[rows], i]
            state[rows, : len(plan.mdp.features)] = plan.mdp.states[s]
            zone[rows], value[rows] = zones[i][s], values[i][s]
    world = fleet.scenario.world
    names = tuple(dict.fromkeys(a for p in fleet.plans for a in p.mdp.actions))  # one domain: the same for all
    action = np.full(len(e_idx), -1, dtype=np.int64)
    if actions is not None:
        taken = actions[e_idx, t_idx, r_idx]
        for i, plan in enumerate(fleet.plans):
            rows = np.flatnonzero((r_idx == i) & (taken >= 0))
            action[rows] = np.array([names.index(a) for a in plan.mdp.actions])[taken[rows]]
    return FleetLog(
        map=world.name, domain=world.domain, horizon=world.horizon, actions=names,
        robots=tuple(p.task.robot_id for p in fleet.plans), tasks=tuple(p.task for p in fleet.plans),
        episode=episode_ids[e_idx].astype(np.int64), step=t_idx.astype(np.int64), robot=r_idx.astype(np.int64),
        state=state, zone=zone, value=value, action=action.astype(np.int64),
        held=held[e_idx, t_idx, r_idx] if held is not None else np.zeros(len(e_idx), dtype=bool),
        episode_ids=episode_ids.astype(np.int64), episode_steps=lengths.astype(np.int64),
        scores=np.asarray(scores, dtype=float),
        groups=tuple(tuple(np.flatnonzero(m).tolist()) for m in members), source=dict(source))


def _used_robots(log: FleetLog) -> FleetLog:
    """The log with `robots`/`tasks` restricted to robots that have records (first-seen order)."""
    order = list(dict.fromkeys(log.robot.tolist()))
    remap = np.full(len(log.robots), -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    log.robot = remap[log.robot]
    log.groups = tuple(tuple(int(remap[i]) for i in g) for g in log.groups)
    log.robots = tuple(log.robots[i] for i in order)
    log.tasks = tuple(log.tasks[i] for i in order)
    return log


def random_groups(n_robots: int, episodes: int, group_size: int, seed=0) -> np.ndarray:
    """(episodes, n) bool: a seeded uniformly random group of `group_size` robots per episode."""
    if not 1 <= group_size <= n_robots:
        raise ValueError(f"group size must be in 1..{n_robots} (the fleet's robots), got {group_size}")
    rng = np.random.default_rng(seed)
    keys = rng.random((episodes, n_robots))
    picked = np.argsort(keys, axis=1)[:, :group_size]
    members = np.zeros((episodes, n_robots), dtype=bool)
    members[np.arange(episodes)[:, None], picked] = True
    return members


def simulate_log(fleet, policies: Sequence[np.ndarray], episodes: int, seed: int = 0,
                 groups: np.ndarray | None = None, group_size: int | None = None, record_actions: bool = True,
                 source: dict | None = None, progress: Callable[[int, int], None] | None = None) -> FleetLog:
    """Seeded rollouts of `policies` on `fleet` (`metareasoner.mitigation.Fleet`) as a fleet log.

    Every episode runs the monitor's horizon H (H + 1 steps, t = 0..H). Its group is every robot,
    the rows of `groups` ((episodes, n) bool), or a random `group_size` robots per episode; only
    its members move (and are logged), and its score is the sum over its steps of R_N of their
    joint state, exactly what the Monte Carlo monitor sums. `record_actions=False` leaves the
    actions out, as the service's export does. `progress(episodes_done, episodes)`.
    """
    n = len(fleet.plans)
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    if len(policies) != n:
        raise ValueError(f"policies must hold one policy per robot ({n}), got {len(policies)}")
    seeds = np.random.SeedSequence(seed)
    group_seed, roll_seed = seeds.spawn(2)
    if groups is None:
        if group_size is None:
            groups = np.ones((episodes, n), dtype=bool)
        else:
            groups = random_groups(n, episodes, group_size, group_seed)
    groups = np.asarray(groups, dtype=bool)
    if groups.shape != (episodes, n):
        raise ValueError(f"groups must have shape {(episodes, n)}, got {groups.shape}")
    if not groups.any(axis=1).all():
        raise ValueError(f"episode {int(np.flatnonzero(~groups.any(axis=1))[0])}'s group is empty")
    H = fleet.horizon
    models = fleet.models([np.asarray(p) for p in policies])
    batch = max(2, BATCH_ENTRIES // max(1, (H + 1) * n))
    logs, done = [], 0
    batch_seeds = roll_seed.spawn((episodes + batch - 1) // batch)
    for b, start in enumerate(range(0, episodes, batch)):
        members = groups[start : start + batch]
        used = np.flatnonzero(members.any(axis=0))
        count = len(members)
        _, visits = monte_carlo_monitor(fleet.penalty, [models[i] for i in used], H, episodes=max(2, count),
                                        seed=int(batch_seeds[b].generate_state(1)[0]))
        states = np.zeros((count, H + 1, n), dtype=np.int64)
        zone, value = np.zeros_like(states), np.zeros_like(states)
        states[:, :, used] = visits.states[:count]
        zone[:, :, used], value[:, :, used] = visits.zone[:count], visits.value[:count]
        value = np.where(members[:, None, :], value, 0)  # robots outside the group count as absent
        scores = fleet.penalty(zone.reshape(-1, n), value.reshape(-1, n)).reshape(count, H + 1).sum(axis=1)
        actions = None
        if record_actions:
            actions = np.full_like(states, -1)
            for i in used:
                s = states[:, :H, i]
                actions[:, :H, i] = np.where(fleet.plans[i].mdp.terminal[s], -1, models[i].policy[s])
        logs.append(_assemble(fleet, members, states, actions, None, np.full(count, H + 1),
                              np.arange(start, start + count), scores, source or {}))
        done += count
        if progress is not None:
            progress(done, episodes)
    return _used_robots(concatenate(logs))


def concatenate(logs: Sequence[FleetLog]) -> FleetLog:
    """Logs of one fleet (same robots, map and actions) one after another."""
    first = logs[0]
    if len(logs) == 1:
        return first
    join = lambda name: np.concatenate([getattr(x, name) for x in logs])  # noqa: E731
    width = max(x.state.shape[1] for x in logs)
    state = np.concatenate([np.pad(x.state, ((0, 0), (0, width - x.state.shape[1])), constant_values=-1)
                            for x in logs])
    return FleetLog(first.map, first.domain, first.horizon, first.actions, first.robots, first.tasks,
                    join("episode"), join("step"), join("robot"), state, join("zone"), join("value"), join("action"),
                    join("held"), join("episode_ids"), join("episode_steps"), join("scores"),
                    tuple(g for x in logs for g in x.groups), dict(first.source))


# -- a service's state reports as a log -----------------------------------------------------------
def log_from_reports(fleet, robot: np.ndarray, state_index: np.ndarray, join_window: int = 0,
                     penalty=None, source: dict | None = None) -> FleetLog:
    """A fleet log from state reports in arrival order: report k is robot `robot[k]` (an index
    into `fleet.plans`) in its state `state_index[k]`. Robots report once per step.

    * A report starts a new episode of its robot when it is the robot's first, when the robot's
      current episode already has H + 1 reports (t = 0..H), or when it is the robot's start state
      and its previous report was a terminal state (it finished, and began again).
    * A robot's new episode joins the fleet's newest episode if the robot is not in it yet and no
      member of it has reported beyond step `join_window`; otherwise it opens a new fleet episode.
    * A report's step is its position in its robot's episode. An episode lasts as long as its
      longest robot episode; a robot that stopped reporting earlier is held at its last state
      (those records are marked `held`).
    * The score is the sum over steps of R_N (`penalty`, default the fleet's) of the joint state.
    """
    robot, state_index = np.asarray(robot, dtype=np.int64), np.asarray(state_index, dtype=np.int64)
    H = fleet.horizon
    n = len(fleet.plans)
    starts = np.array([p.mdp.start for p in fleet.plans])
    terminal = [p.mdp.terminal for p in fleet.plans]
    runs: list[list] = []  # fleet episodes: per robot (its reports' state indices)
    current: list[list | None] = [None] * n  # each robot's open episode (a list of state indices)
    previous = np.full(n, -1)
    newest_step = -1  # the largest step reported in the newest fleet episode
    for i, s in zip(robot.tolist(), state_index.tolist()):
        mine = current[i]
        restart = (mine is None or len(mine) == H + 1
                   or (s == starts[i] and previous[i] >= 0 and terminal[i][previous[i]]))
        if restart:
            mine = []
            if runs and i not in runs[-1] and newest_step <= join_window:
                runs[-1][i] = mine
            else:
                runs.append({i: mine})
                newest_step = -1
            current[i] = mine
        mine.append(s)
        if runs[-1].get(i) is mine:
            newest_step = max(newest_step, len(mine) - 1)
        previous[i] = s
    E = len(runs)
    lengths = np.array([max(len(v) for v in run.values()) for run in runs], dtype=np.int64)
    T = int(lengths.max(initial=1))
    members = np.zeros((E, n), dtype=bool)
    states = np.zeros((E, T, n), dtype=np.int64)
    held = np.zeros((E, T, n), dtype=bool)
    for e, run in enumerate(runs):
        for i, seq in run.items():
            members[e, i] = True
            states[e, : len(seq), i] = seq
            states[e, len(seq):, i] = seq[-1]
            held[e, len(seq):, i] = True
    models = fleet.models([p.policy for p in fleet.plans])
    zone = np.stack([m.zone[states[:, :, i]] for i, m in enumerate(models)], axis=-1) if E else states
    value = np.stack([m.value[states[:, :, i]] for i, m in enumerate(models)], axis=-1) if E else states
    value = np.where(members[:, None, :] & (np.arange(T)[None, :, None] < lengths[:, None, None]), value, 0)
    penalty = penalty if penalty is not None else fleet.penalty
    scores = penalty(zone.reshape(-1, n), value.reshape(-1, n)).reshape(E, T).sum(axis=1) if E else np.zeros(0)
    log = _assemble(fleet, members, states, None, held, lengths, np.arange(E), scores, source or {})
    return _used_robots(log)


# -- a log against its map -----------------------------------------------------------------------
@dataclass
class LoggedFleet:
    """A log bound to its map: `fleet` holds one planned robot per logged robot (in
    `log.robots` order); `state_index` (N,) and `action_index` (N,, -1 unknown) are each
    record's state and action in its robot's MDP."""

    log: FleetLog
    fleet: object  # metareasoner.mitigation.Fleet
    state_index: np.ndarray
    action_index: np.ndarray

    @classmethod
    def bind(cls, log: FleetLog, world: World, budget=DEFAULT_BUDGET, backend="serial",
             progress: Callable[[int, int], None] | None = None) -> "LoggedFleet":
        """Plan the log's robots on `world` and find every logged state in its robot's MDP;
        a record that does not fit its map is a LogError at its line."""
        from .mitigation import Fleet

        source = log.path or "<log>"
        header = 1 if log.path else None
        if log.domain != world.domain:
            raise LogError(source, f"the log is of domain {log.domain!r}, the map {world.name!r} of {world.domain!r}",
                           header, field="domain")
        if log.map != world.name:
            raise LogError(source, f"the log was recorded on map {log.map!r}, not {world.name!r}", header, field="map")
        if log.horizon != world.horizon:
            raise LogError(source, f"the log's horizon is {log.horizon}, map {world.name!r}'s is {world.horizon}",
                           header, field="horizon")
        domain = get_domain(world.domain)
        checked: dict[tuple, object] = {}
        for k, task in enumerate(log.tasks):
            key = (task.start, task.kind, task.items, task.option, task.count)
            if key in checked:
                continue
            problem = _check_task(world, domain, task, source, log.first_line_of_robot(k))
            checked[key] = problem
        fleet = Fleet.plan(Scenario(world, tuple(log.tasks), _budget(budget)), progress=progress, backend=backend)
        state_index = np.full(log.n_records, -1, dtype=np.int64)
        action_index = np.full(log.n_records, -1, dtype=np.int64)
        lengths = log.state_length()
        zones, values = _labels(fleet)
        for k, plan in enumerate(fleet.plans):
            rows = np.flatnonzero(log.robot == k)
            if not len(rows):
                continue
            mdp = plan.mdp
            F = len(mdp.features)
            bad = np.flatnonzero(lengths[rows] != F)
            if len(bad):
                names = ", ".join(f.name for f in mdp.features)
                raise LogError(source, f"robot {plan.task.robot_id!r}'s states have {F} values ({names}), this one "
                               f"{lengths[rows[bad[0]]]}", log.line_of(int(rows[bad[0]])), field="state")
            rows_states = log.state[rows, :F]
            radix = np.array([len(f.values) for f in mdp.features])
            out = rows_states >= radix[None, :]
            if out.any():
                r, col = np.argwhere(out)[0]
                f = mdp.features[col]
                raise LogError(source, f"{rows_states[r, col]} is out of range 0..{len(f.values) - 1} of feature "
                               f"{f.name!r}", log.line_of(int(rows[r])), field=f"state[{col}]")
            index = mdp.index_of(rows_states)
            if (index < 0).any():
                r = int(np.flatnonzero(index < 0)[0])
                raise LogError(source, f"{rows_states[r].tolist()} is not a state robot {plan.task.robot_id!r} can "
                               f"reach on map {world.name!r}", log.line_of(int(rows[r])), field="state")
            for name, labels in (("zone", zones[k]), ("value", values[k])):
                column = log.zone if name == "zone" else log.value
                wrong = np.flatnonzero(labels[index] != column[rows])
                if len(wrong):
                    r = int(wrong[0])
                    raise LogError(source, f"{column[rows[r]]!r} does not match the state, which has "
                                   f"{labels[index[r]]!r}", log.line_of(int(rows[r])), field=name)
            state_index[rows] = index
            names = {a: j for j, a in enumerate(mdp.actions)}
            to_mdp = np.array([names.get(a, -2) for a in log.actions] + [-1])
            mapped = to_mdp[log.action[rows]]
            if (mapped == -2).any():
                r = int(np.flatnonzero(mapped == -2)[0])
                raise LogError(source, f"{log.actions[log.action[rows[r]]]!r} is not an action of robot "
                               f"{plan.task.robot_id!r}: {list(mdp.actions)}", log.line_of(int(rows[r])),
                               field="action")
            action_index[rows] = mapped
        return cls(log, fleet, state_index, action_index)


def _budget(budget):
    from planner.budget import TaskBudget

    return TaskBudget.parse(budget)


def _check_task(world: World, domain, task: Task, source: str, line: int | None):
    """The task's problem, or a LogError at the robot's first record."""
    x, y = task.start
    if task.kind not in domain.task_kinds:
        raise LogError(source, f"{task.kind!r} is not a {domain.name} task kind; kinds: {list(domain.task_kinds)}",
                       line, field="task.kind")
    if not (0 <= x < world.width and 0 <= y < world.height) or not world.passable[y, x]:
        raise LogError(source, f"start {x},{y} is not a cell a robot can stand on in map {world.name!r}", line,
                       field="task.start")
    bad = [i for i in task.items if i >= len(world.items)]
    if bad:
        raise LogError(source, f"item {bad[0]} does not exist: map {world.name!r} has {len(world.items)} items",
                       line, field="task.items")
    if len(set(task.items)) != len(task.items):
        raise LogError(source, "an item is listed twice", line, field="task.items")
    try:
        problem = domain.make_problem(world, task)
        problem.start_state()
        return problem
    except (ValueError, KeyError, IndexError) as exc:
        raise LogError(source, f"not a task of map {world.name!r}: {exc}", line, field="task") from None


def reports_of(log: FleetLog, fleet) -> tuple[np.ndarray, np.ndarray]:
    """(robot index in `fleet`, state index) of every non-held record, in the order robots
    would report them: what a fleet posting this log to the service sends."""
    index = {p.task.robot_id: i for i, p in enumerate(fleet.plans)}
    robot = np.array([index[log.robots[k]] for k in log.robot], dtype=np.int64)
    state = np.empty(log.n_records, dtype=np.int64)
    lengths = log.state_length()
    for i, plan in enumerate(fleet.plans):
        rows = np.flatnonzero(robot == i)
        if len(rows):
            state[rows] = plan.mdp.index_of(log.state[rows, : lengths[rows[0]]])
    keep = ~log.held
    return robot[keep], state[keep]


__all__ = ["FORMAT", "VERSION", "EpisodeRecord", "FleetLog", "HeaderRecord", "LogError", "LoggedFleet", "StepRecord",
           "TaskRecord", "concatenate", "log_from_reports", "log_lines", "random_groups", "read_log", "reports_of",
           "simulate_log", "task_from_record", "task_to_record", "write_log"]
