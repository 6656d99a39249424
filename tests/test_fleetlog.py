"""Fleet logs: simulate, write, read back unchanged; bad records are file:line errors; a log
fits its map or says where not; service reports become episodes; the CLI's simulate and
learn; policy files deploy."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from mase.cli import main
from metareasoner.fleetlog import (LogError, LoggedFleet, log_from_reports, log_lines, read_log, reports_of,
                                   simulate_log, write_log)
from metareasoner.mitigation import Fleet
from metareasoner.policies import read_policy_file, run_document, write_policy_file
from planner.maps import load_map
from planner.scenario import generate_scenario

from conftest import MAPS

SALP = MAPS / "salp" / "salp-1.map"


@pytest.fixture(scope="module")
def fleet():
    return Fleet.plan(generate_scenario(load_map(SALP), 4, seed=0), backend="serial")


@pytest.fixture(scope="module")
def small_log(fleet):
    return simulate_log(fleet, [p.policy for p in fleet.plans], 4, seed=3, group_size=3)


def text_of(log) -> str:
    out = io.StringIO()
    write_log(log, out)
    return out.getvalue()


def test_round_trip_is_unchanged(small_log, tmp_path):
    path = tmp_path / "log.jsonl"
    write_log(small_log, path)
    back = read_log(path)
    assert back == small_log
    assert text_of(back) == path.read_text()  # and the text is written back byte for byte
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["record"] == "log"
    assert sum(json.loads(x)["record"] == "episode" for x in lines) == 4
    # one record per robot of its group per step, t = 0..H
    assert back.n_records == sum(len(g) for g in back.groups) * (back.horizon + 1)
    assert (back.action[back.step == back.horizon] == -1).all()  # no action after the last step


def test_scores_are_the_joint_penalty_of_the_logged_states(fleet, small_log):
    """Each episode's score recomputed from its step records (zone and value of each robot),
    independently of the simulation."""
    world = fleet.scenario.world
    zone_id = {None: 0, **{z: k + 1 for k, z in enumerate(world.zone_names)}}
    values = list(fleet.penalty.feature.values)
    log = small_log
    for e, (episode, score) in enumerate(zip(log.episode_ids, log.scores)):
        total = 0.0
        for t in range(log.horizon + 1):
            rows = np.flatnonzero((log.episode == episode) & (log.step == t))
            terminal = [fleet.plans[[p.task.robot_id for p in fleet.plans].index(log.robots[k])].problem.is_terminal(
                log.state[r: r + 1, : log.state_length()[r]])[0] for r, k in zip(rows, log.robot[rows])]
            zone = np.array([[zone_id[log.zone[r]] for r in rows]])
            value = np.array([[0 if done else values.index(log.value[r]) for r, done in zip(rows, terminal)]])
            total += float(fleet.penalty(zone, value)[0])
        assert score == pytest.approx(total, abs=1e-12)


def test_full_groups_score_j_n_on_average(fleet):
    """Every robot in every episode: the mean score is the exact monitor's J_N (4 standard errors)."""
    policies = [p.policy for p in fleet.plans]
    log = simulate_log(fleet, policies, 300, seed=1)
    exact = fleet.exact(policies).total_penalty
    se = log.scores.std(ddof=1) / np.sqrt(len(log.scores))
    assert abs(log.scores.mean() - exact) < 4 * se
    assert simulate_log(fleet, policies, 300, seed=1) == log  # seeded
    assert not np.array_equal(simulate_log(fleet, policies, 300, seed=2).scores, log.scores)


def _lines(log) -> list[str]:
    return list(log_lines(log))


def _edit(lines, number, change):
    """Line `number` (1-based) as JSON, changed by `change(record)` (None: delete the line)."""
    lines = list(lines)
    record = json.loads(lines[number - 1])
    out = change(record)
    if out is None:
        del lines[number - 1]
    else:
        lines[number - 1] = out if isinstance(out, str) else json.dumps(out)
    return "\n".join(lines) + "\n"


def _set(**fields):
    def change(record):
        record.update(fields)
        return record
    return change


def _drop(field):
    def change(record):
        record.pop(field)
        return record
    return change


# (what, line to edit, the edit, line reported, field reported, words in the message)
BAD = [
    ("bad JSON", 2, lambda r: json.dumps(r)[:40], 2, None, "not valid JSON"),
    ("not an object", 3, lambda r: "[1, 2]", 3, None, "should be an object"),
    ("unknown record", 3, _set(record="stop"), 3, "record", "must be one of"),
    ("missing field", 3, _drop("robot"), 3, "robot", "field required"),
    ("string step", 3, _set(step="1"), 3, "step", "valid integer"),
    ("negative step", 3, _set(step=-1), 3, "step", "greater than or equal to 0"),
    ("float in state", 3, lambda r: {**r, "state": [float(x) for x in r["state"]]}, 3, "state[0]", "valid integer"),
    ("unknown field", 3, _set(colour="red"), 3, "colour", "extra inputs"),
    ("bad task start", 3, lambda r: {**r, "task": {**r["task"], "start": [1]}}, 3, "task.start", "at least 2"),
    ("unknown action", 3, _set(action="fly"), 3, "action", "not one of the header's actions"),
    ("cell not the state's", 3, _set(cell=[0, 0]), 3, "cell", "not the state's position"),
    ("duplicate step", 3, lambda r: {**r, "step": 0, "robot": json.loads(json.dumps(r))["robot"]}, 3, "step",
     "already has step 0"),
    ("second header", 3, lambda r: {"record": "log", "format": "mase-fleet-log", "version": 1, "map": "m",
                                     "domain": "salp", "horizon": 5, "actions": ["a"]}, 3, "record", "second header"),
    ("no header", 1, lambda r: None, 1, "record", "first record must be the header"),
    ("NaN score", -1, lambda r: json.dumps({k: v for k, v in r.items() if k != "score"})[:-1] + ', "score": NaN}',
     -1, "score", "finite number"),
    ("negative score", -1, _set(score=-1.0), -1, "score", "greater than or equal to 0"),
    ("episode lists a stranger", -1, lambda r: {**r, "robots": r["robots"] + ["ghost"]}, -1, "robots", "ghost"),
    ("episode misses a robot", -1, lambda r: {**r, "robots": r["robots"][1:]}, -1, "robots", "not listed"),
    ("too many steps", -1, lambda r: {**r, "steps": r["steps"] + 1}, -1, "steps", "more than the horizon"),
    ("no episode record", -1, lambda r: None, 2, "episode", "has no episode record"),
]


@pytest.mark.parametrize("what, line, edit, reported, field, words", BAD, ids=[b[0] for b in BAD])
def test_bad_records_are_file_line_errors(fleet, what, line, edit, reported, field, words):
    log = simulate_log(fleet, [p.policy for p in fleet.plans], 1, seed=0, group_size=2)
    lines = _lines(log)
    n = len(lines)
    line = n if line == -1 else line
    reported = n if reported == -1 else reported
    if what == "duplicate step":  # the third line's robot again at step 0: same robot as line 2
        first = json.loads(lines[1])
        edit = lambda r: {**r, "robot": first["robot"], "task": first["task"], "state": first["state"],  # noqa: E731
                          "cell": first["cell"], "zone": first["zone"], "value": first["value"], "step": 0}
    if what == "no header":
        reported = 1  # the first step record now stands first
    if what == "no episode record":
        reported = 2  # where the unfinished episode began
    with pytest.raises(LogError) as info:
        read_log("fleet.jsonl", text=_edit(lines, line, edit))
    error = info.value
    assert str(error).startswith(f"fleet.jsonl:{reported}")
    assert error.line == reported and error.field == field, str(error)
    if words:
        assert words.lower() in str(error).lower()
    if what == "bad JSON":
        assert error.column is not None and str(error).startswith(f"fleet.jsonl:{reported}:{error.column}: ")


def test_episode_order_and_task_changes(fleet):
    log = simulate_log(fleet, [p.policy for p in fleet.plans], 2, seed=0, group_size=2)
    lines = _lines(log)
    first_episode_end = next(i for i, x in enumerate(lines) if json.loads(x)["record"] == "episode")
    # episode 1's records before episode 0 is closed
    swapped = lines[:2] + [lines[first_episode_end + 1]] + lines[2:]
    with pytest.raises(LogError, match=r"fleet.jsonl:3: field 'episode': episode 0 \(from line 2\) has no episode"):
        read_log("fleet.jsonl", text="\n".join(swapped))
    # a robot's task changes between its records
    robot = json.loads(lines[1])["robot"]
    k = next(i for i in range(2, len(lines)) if json.loads(lines[i]).get("robot") == robot)
    changed = _edit(lines, k + 1, lambda r: {**r, "task": {**r["task"], "items": [4]}})
    with pytest.raises(LogError, match=rf"fleet.jsonl:{k + 1}: field 'task': robot '{robot}' has another task on line 2"):
        read_log("fleet.jsonl", text=changed)
    with pytest.raises(LogError, match="no such log file"):
        read_log("/nonexistent/fleet.jsonl")
    with pytest.raises(LogError, match="empty log"):
        read_log("empty.jsonl", text="\n\n")


def test_a_log_must_fit_its_map(fleet, tmp_path):
    log = simulate_log(fleet, [p.policy for p in fleet.plans], 1, seed=0, group_size=2)
    world = fleet.scenario.world
    lines = _lines(log)
    bound = LoggedFleet.bind(read_log("ok.jsonl", text="\n".join(lines)), world)
    assert (bound.state_index >= 0).all()
    # a state the robot cannot reach: a position inside the coral
    bad = _edit(lines, 3, lambda r: {**r, "state": [3, 2] + r["state"][2:], "cell": [3, 2]})
    with pytest.raises(LogError, match=r"bad.jsonl:3: field 'state': \[3, 2, .*\] is not a state robot"):
        LoggedFleet.bind(read_log("bad.jsonl", text=bad), world)
    bad = _edit(lines, 3, lambda r: {**r, "state": r["state"][:2] + [7] + r["state"][3:]})
    with pytest.raises(LogError, match=r"bad.jsonl:3: field 'state\[2\]': 7 is out of range 0..2 of feature 'sample'"):
        LoggedFleet.bind(read_log("bad.jsonl", text=bad), world)
    bad = _edit(lines, 3, _set(value="B"))
    with pytest.raises(LogError, match=r"bad.jsonl:3: field 'value': 'B' does not match the state"):
        LoggedFleet.bind(read_log("bad.jsonl", text=bad), world)
    bad = _edit(lines, 2, lambda r: {**r, "task": {**r["task"], "items": [40]}})
    robot = json.loads(lines[1])["robot"]
    bad = "\n".join(x if json.loads(x).get("robot") != robot else
                    json.dumps({**json.loads(x), "task": {**json.loads(x)["task"], "items": [40]}})
                    for x in bad.splitlines())
    with pytest.raises(LogError, match=r"bad.jsonl:2: field 'task.items': item 40 does not exist"):
        LoggedFleet.bind(read_log("bad.jsonl", text=bad), world)
    other = load_map(MAPS / "salp" / "salp-2.map")
    with pytest.raises(LogError, match=r"ok.jsonl:1: field 'map': the log was recorded on map 'salp-1', not 'salp-2'"):
        LoggedFleet.bind(read_log("ok.jsonl", text="\n".join(lines)), other)


def test_reports_become_episodes(fleet):
    """The service's episode rule on hand-made report sequences."""
    H = fleet.horizon
    plans = fleet.plans
    policies = [p.policy for p in plans]
    log = simulate_log(fleet, policies, 3, seed=5, group_size=2, record_actions=False)
    robot, state = reports_of(log, fleet)
    assert log_from_reports(fleet, robot, state) == log
    # robot 0 finishes and stops reporting: it is held at its terminal state to the episode's end
    run = simulate_log(fleet, policies, 1, seed=5, groups=np.array([[True, True, False, False]]),
                       record_actions=False)
    r, s = reports_of(run, fleet)
    terminal = plans[0].mdp.terminal[s] & (r == 0)
    first_done = int(np.flatnonzero(terminal)[0])
    keep = ~((r == 0) & (np.arange(len(r)) > first_done))
    short = log_from_reports(fleet, r[keep], s[keep])
    assert short.n_episodes == 1 and short.episode_steps[0] == H + 1
    held = short.held & (short.robot == short.robots.index(plans[0].task.robot_id))
    assert held.sum() == (~keep).sum() and held.any()
    assert short.scores[0] == pytest.approx(run.scores[0])  # a finished robot counts as null anyway
    # a robot that finished and reports its start again begins a new episode, however short the last
    r2 = np.array([0, 0, 0])
    done = int(np.flatnonzero(plans[0].mdp.terminal)[0])
    s2 = np.array([plans[0].mdp.start, done, plans[0].mdp.start])
    again = log_from_reports(fleet, r2, s2)
    assert again.n_episodes == 2 and again.episode_steps.tolist() == [2, 1]
    # a robot starting while the newest episode is beyond step join_window opens a new episode
    r3 = np.array([0, 0, 1])
    s3 = np.array([plans[0].mdp.start, plans[0].mdp.start, plans[1].mdp.start])
    assert log_from_reports(fleet, r3, s3).n_episodes == 2
    assert log_from_reports(fleet, r3, s3, join_window=1).n_episodes == 1


def test_cli_simulate_learn_and_mitigate_from_the_policy(tmp_path, capsys):
    log_path, policy_path = tmp_path / "log.jsonl", tmp_path / "policy.json"
    assert main(["simulate", "--map", str(SALP), "--robots", "4", "--episodes", "30", "--group-size", "3",
                 "--out", str(log_path), "--no-progress", "--backend", "serial"]) == 0
    assert "wrote" in capsys.readouterr().out
    log = read_log(log_path)
    assert log.n_episodes == 30 and all(len(g) == 3 for g in log.groups)
    assert log.source["command"] == "mase simulate"
    assert main(["learn", "--log", str(log_path), "--map", str(SALP), "--method", "ev2bc", "--threshold", "-100",
                 "--out", str(policy_path), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["kept"]) == sorted(log.robots)  # a threshold below every value keeps every robot
    # every robot followed its naive policy: imitating them gives the naive policies back
    fleet = Fleet.plan(generate_scenario(load_map(SALP), 4, seed=0), backend="serial")
    policies, origin = read_policy_file(policy_path).policies_for(fleet)
    naive = fleet.exact([p.policy for p in fleet.plans]).total_penalty
    assert fleet.exact(policies).total_penalty == pytest.approx(naive, abs=1e-9)
    assert main(["mitigate", "--map", str(SALP), "--robots", "4", "--method", "naive", "--policies",
                 str(policy_path), "--json", "--no-progress", "--backend", "serial"]) == 0
    assert json.loads(capsys.readouterr().out)["nse_before"] == pytest.approx(naive, abs=1e-9)
    # a run's policies (RUN.json) drive simulate
    run = tmp_path / "run.json"
    write_policy_file(run_document(fleet, [p.policy for p in fleet.plans]), run)
    assert main(["simulate", "--map", str(SALP), "--robots", "4", "--episodes", "2", "--policies", str(run),
                 "--out", str(tmp_path / "run.jsonl"), "--no-progress", "--backend", "serial"]) == 0
    capsys.readouterr()
    # user errors: one line, status 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(log_path.read_text().replace('"step":0', '"step":"zero"', 1))
    assert main(["learn", "--log", str(bad), "--map", str(SALP), "--method", "bc", "--out",
                 str(tmp_path / "p.json")]) == 2
    assert f"{bad}:2: field 'step'" in capsys.readouterr().err
    assert main(["learn", "--log", str(log_path), "--map", str(SALP), "--method", "bc", "--threshold", "1",
                 "--out", str(tmp_path / "p.json")]) == 2
    assert "EV2BC's" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "mase-policies", "version": 1,\n "map": 3}')
    assert main(["mitigate", "--map", str(SALP), "--robots", "4", "--method", "naive", "--policies", str(broken),
                 "--no-progress", "--backend", "serial"]) == 2
    assert f"{broken}: field 'map'" in capsys.readouterr().err


def test_policy_file_entries_deploy_by_robot_then_task(fleet, tmp_path):
    plans = fleet.plans
    other = [np.where(plans[0].mdp.terminal, p.policy, (p.policy + 1) % p.mdp.n_actions) for p in plans[:1]]
    document = run_document(fleet, [p.policy for p in plans])
    document["policies"][0]["actions"] = [plans[0].mdp.actions[a] for a in other[0]]
    path = tmp_path / "run.json"
    write_policy_file(document, path)
    policies, origin = read_policy_file(path).policies_for(fleet)
    assert origin == ["robot"] * len(plans)
    assert all(np.array_equal(p, q.policy) for p, q in zip(policies[1:], plans[1:]))
    from planner.solvers import finishes_surely
    assert finishes_surely(plans[0].mdp, policies[0])[plans[0].mdp.start]  # repaired where it would not finish
    # a robot whose id the file does not list, with the same task: no entry (robot entries are the robot's)
    document["policies"][0]["robots"] = ["someone-else"]
    write_policy_file(document, path)
    _, origin = read_policy_file(path).policies_for(fleet)
    assert origin[0] == "own"
    # an entry of another task under the robot's id is refused
    document["policies"][0]["robots"] = [plans[1].task.robot_id]
    document["policies"][1]["robots"] = None
    write_policy_file(document, path)
    if plans[0].task != plans[1].task:
        with pytest.raises(LogError, match=r"field 'policies\[0\].task'"):
            read_policy_file(path).policies_for(fleet)
    with pytest.raises(LogError, match=r":2:\d+: not valid JSON"):
        read_policy_file("p.json", text='{"format":\n "mase-policies",, }')
