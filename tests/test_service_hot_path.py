"""No database round trip on the robots' hot path (issue 12 item 6), and a cache that still
follows every change (issue 12 item 1).

A robot polls its policy status, its penalty in one state, its penalty table and its policy.
Once the first query of each has filled this process's cache (api.cache), every further one
must be answered from memory: the SQL statements sent to the engine while it polls are
counted (SQLAlchemy's `before_cursor_execute`) and must be zero, with the fast lane in front of
FastAPI (api.fastlane) and without it (MASE_FAST_LANE=0). And the cache must not be so sticky
that it serves an old answer: a run that finishes and is deployed, an undeploy and a rollback
are each seen by the very next query, which is then the only one that reads the database.
(The run is deployed by a background thread of the service: while it runs the robot keeps
polling, and once any query has seen the new run no later one may go back to the old.)

Statements are counted on every thread except the service's own background threads (the
change feed's poll, the job dispatcher and its heartbeats, the event broker, the run and plan
workers), which query the database on their own schedule whatever the robots do.
Runs on PostgreSQL too when TEST_DATABASE_URL is set."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from api.app import create_app
from api.fastlane import FastLane
from api.fleets import decode_array
from api.models import RunRobotRow
from api.settings import Settings
from service_support import AUTH, OPERATOR, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
BACKGROUND = ("change-feed", "job-dispatch", "job-maintenance", "job-warm-up", "event-broker", "run_", "plan_")
ROUNDS = 25  # polls of each query per steady-state check


@contextmanager
def counting(engine):
    """The SQL statements sent while inside, with the thread that sent each (background
    threads left out)."""
    seen: list[tuple[str, str]] = []

    def record(_conn, _cursor, statement, *_args):
        name = threading.current_thread().name
        if not name.startswith(BACKGROUND):
            seen.append((name, statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def spy(monkeypatch):
    """Which requests the fast lane answered itself (True) or passed on to FastAPI (False)."""
    answered: list[bool] = []
    original = FastLane.answer

    async def answer(scope):
        response = await original(scope)
        answered.append(response is not None)
        return response

    monkeypatch.setattr(FastLane, "answer", staticmethod(answer))
    return answered


def stored(client, run_id: int, robot_id: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A run robot's policy and local penalty as written in the database (no cache)."""
    with client.app.state.database.sessions() as session:
        row = session.scalar(select(RunRobotRow).where(RunRobotRow.run_id == run_id, RunRobotRow.robot_id == robot_id))
        return (decode_array(row.policy).astype(int),
                None if row.local_penalty is None else decode_array(row.local_penalty))


class Robot:
    """tb1 of the scenario, polling with its own robot token."""

    def __init__(self, client, scenario_id: int, token: str) -> None:
        self.client, self.base = client, f"/api/v1/scenarios/{scenario_id}/robots/tb1"
        self.headers = {"Authorization": f"Bearer {token}"}
        table = self.get("/penalties")
        self.states = table["states"]

    def get(self, suffix: str = "", **params) -> dict:
        response = self.client.get(self.base + suffix, headers=self.headers, params=params)
        assert response.status_code == 200, (suffix, response.status_code, response.text)
        return response.json()

    def poll(self) -> dict:
        """One round of the robot's four queries; what each said."""
        state = self.states[len(self.states) // 2]
        return {"status": self.get(), "penalty": self.get("/penalty", state=",".join(map(str, state))),
                "penalties": self.get("/penalties"), "policy": self.get("/policy")}


def assert_serves(client, robot: Robot, answers: dict, run_id: int | None) -> None:
    """Every query of a round names `run_id` and gives its stored numbers (naive ones: None)."""
    assert {what: a["run_id"] for what, a in answers.items()} == dict.fromkeys(answers, run_id)
    middle = len(robot.states) // 2
    if run_id is None:
        assert not any(answers["penalties"]["penalties"]) and answers["penalty"]["penalty"] == 0.0
        return
    policy, local = stored(client, run_id, "tb1")
    expected = np.zeros(len(robot.states)) if local is None else local
    assert answers["penalties"]["penalties"] == expected.tolist()
    assert answers["penalty"]["penalty"] == expected[middle] and answers["penalty"]["state_index"] == middle
    assert answers["policy"]["actions"] == policy.tolist()


def assert_steady(client, robot: Robot, run_id: int | None) -> None:
    """ROUNDS more rounds of polling send no SQL statement at all, and keep the same answers."""
    with counting(client.app.state.database.engine) as seen:
        rounds = [robot.poll() for _ in range(ROUNDS)]
    assert seen == [], f"{len(seen)} statements in {4 * ROUNDS} steady-state queries: {seen[:5]}"
    assert all(r == rounds[0] for r in rounds)
    assert rounds[0]["status"]["run_id"] == run_id


def next_round_sees(client, robot: Robot, run_id: int | None, reloads: bool = True) -> None:
    """The first round after a change answers `run_id` (and, unless a query already saw the
    change, reads the database to learn it)."""
    with counting(client.app.state.database.engine) as seen:
        answers = robot.poll()
    assert_serves(client, robot, answers, run_id)
    if reloads:
        assert seen, "the first query after a change must reload what changed"


@pytest.mark.parametrize("fast_lane_env", ["1", "0"], ids=["fast-lane", "MASE_FAST_LANE=0"])
def test_robot_polling_sends_no_sql_and_sees_every_change(tmp_path, monkeypatch, spy, fast_lane_env):
    monkeypatch.setenv("MASE_FAST_LANE", fast_lane_env)
    fast_lane = Settings.from_env().fast_lane
    assert fast_lane is (fast_lane_env == "1")
    settings = Settings(database_url=fresh_database_url(tmp_path), tokens_file=tmp_path / "no-tokens",
                        extra_operator_tokens=(OPERATOR,), load_shipped=False, progress_interval=0.0)
    with TestClient(create_app(replace(settings, fast_lane=fast_lane))) as client:
        created = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        wait_until_planned(client, sid)
        token = client.post(f"/api/v1/scenarios/{sid}/tokens", headers=AUTH, json={"robot_id": "tb1"}).json()
        # a run kept as a proposal, for the rollback below
        first = client.post(f"/api/v1/scenarios/{sid}/runs", headers=AUTH,
                            json={"method": "recon", "update_fraction": 1.0, "deploy": False}).json()
        assert wait_for_run(client, first["id"])["status"] == "succeeded"

        # warm-up: the first queries fill the cache from the database (which the counter sees)
        with counting(client.app.state.database.engine) as seen:
            robot = Robot(client, sid, token["token"])
            answers = robot.poll()
        assert seen, "the counter saw no statement while the cache was filled: it counts nothing"
        assert_serves(client, robot, answers, None)
        spy.clear()
        assert_steady(client, robot, None)
        if fast_lane:  # status, penalty and policy are the fast lane's; the penalty table is FastAPI's
            assert spy == [True, True, False, True] * ROUNDS
        else:
            assert spy == []

        # a run finishes and deploys itself: the next query follows it
        second = client.post(f"/api/v1/scenarios/{sid}/runs", headers=AUTH,
                             json={"method": "gen-recon-cf", "update_fraction": 1.0, "episodes": 50,
                                   "deploy": True}).json()
        following = None  # meanwhile the naive policies, then (once deployed) the run's, never back
        while client.get(f"/api/v1/runs/{second['id']}", headers=AUTH).json()["status"] in ("queued", "running"):
            for answer in robot.poll().values():
                assert answer["run_id"] in (following, second["id"]), answer
                following = answer["run_id"]
            time.sleep(0.05)
        done = client.get(f"/api/v1/runs/{second['id']}", headers=AUTH).json()
        assert done["status"] == "succeeded" and done["deployed"], done
        next_round_sees(client, robot, second["id"], reloads=following is None)
        assert_steady(client, robot, second["id"])
        local = stored(client, second["id"], "tb1")[1]
        assert local is not None and local.any(), "a run without penalties would not tell old answers from new"

        # an operator undeploys: naive policies, no penalty
        assert client.post(f"/api/v1/scenarios/{sid}/undeploy", headers=AUTH).status_code == 200
        next_round_sees(client, robot, None)
        assert_steady(client, robot, None)

        # and deploys the first run (the other one's arrays are still in memory: not served)
        assert client.post(f"/api/v1/runs/{first['id']}/deploy", headers=AUTH).status_code == 200
        next_round_sees(client, robot, first["id"])
        assert_steady(client, robot, first["id"])
        # back to the second: a rollback forward, its arrays loaded again
        assert client.post(f"/api/v1/runs/{second['id']}/deploy", headers=AUTH).status_code == 200
        next_round_sees(client, robot, second["id"])
        assert_steady(client, robot, second["id"])
