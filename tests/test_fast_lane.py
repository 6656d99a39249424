"""The robots' fast lane (api.fastlane) answers exactly what FastAPI answers: the same status,
body bytes and headers, for good and bad requests, and it hands on what it must not answer.

Two apps on one database: one with the fast lane, one without (MASE_FAST_LANE=0). Every
request goes to both; a spy on FastLane.answer records whether the fast lane answered it or
passed it to FastAPI, and each case says which it expects (so that a fast lane that never
answers, or one that answers what it should leave alone, fails here)."""
from __future__ import annotations

import time
from dataclasses import replace

import re
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings, strategies as st

from api.app import create_app
from api.fastlane import PENALTY_QUERY, FastLane
from api.routers.robots import STATE_PATTERN
from api.routers.scenarios import create_scenario
from api.schemas import ScenarioCreate
from api.settings import Settings
from service_support import AUTH, OPERATOR, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
FAST, FASTAPI = "fast lane", "FastAPI"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def lanes(tmp_path_factory):
    """(client with the fast lane, client without, what the cases need)."""
    tmp = tmp_path_factory.mktemp("fastlane")
    # two apps in one process are two job managers with one pid: at its periodic reap each would
    # take the other for a stopped process of this host and mark its jobs interrupted; no periodic
    # maintenance here (as in test_service_import)
    settings = Settings(database_url=fresh_database_url(tmp), tokens_file=tmp / "none", load_shipped=False,
                        extra_operator_tokens=(OPERATOR,), progress_interval=0.0, heartbeat_interval=3600.0)
    fast_app, slow_app = create_app(settings), create_app(replace(settings, fast_lane=False))
    with TestClient(fast_app) as fast, TestClient(slow_app) as slow:
        def make(**body) -> dict:
            created = fast.post("/api/v1/scenarios", headers=AUTH, json=body)
            assert created.status_code == 201, created.text
            wait_until_planned(fast, created.json()["id"])
            return created.json()

        def token(sid: int, robot: str, **extra) -> dict:
            made = fast.post(f"/api/v1/scenarios/{sid}/tokens", headers=AUTH, json={"robot_id": robot, **extra})
            assert made.status_code == 201, made.text
            return made.json()

        demo, other, doomed = make(map="salp-demo", robots=2), make(map="salp-demo", robots=2, seed=3), \
            make(map="salp-demo", robots=2, seed=5)
        run = fast.post(f"/api/v1/scenarios/{demo['id']}/runs", headers=AUTH,
                        json={"method": "recon", "update_fraction": 1.0, "deploy": True}).json()
        assert wait_for_run(fast, run["id"])["status"] == "succeeded"
        deadline = time.monotonic() + 30  # deployed: robots are told the run's id
        while fast.get(f"/api/v1/scenarios/{demo['id']}/robots/tb1", headers=AUTH).json()["run_id"] != run["id"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        states = fast.get(f"/api/v1/scenarios/{demo['id']}/robots/tb1/penalties", headers=AUTH).json()
        tokens = {"tb1": token(demo["id"], "tb1")["token"], "other": token(other["id"], "tb1")["token"],
                  "doomed": token(doomed["id"], "tb1")["token"]}
        revoked = token(demo["id"], "tb2")
        assert fast.delete(f"/api/v1/scenarios/{demo['id']}/tokens/{revoked['id']}", headers=AUTH).status_code == 204
        tokens["revoked"] = revoked["token"]
        tokens["expiring"] = token(demo["id"], "tb1", expires_in=1)["token"]
        for client in (fast, slow):  # both have the doomed scenario in memory before it goes
            assert client.get(f"/api/v1/scenarios/{doomed['id']}/robots/tb1/policy",
                              headers=bearer(tokens["doomed"])).status_code == 200
        assert fast.delete(f"/api/v1/scenarios/{doomed['id']}", headers=AUTH).status_code in (200, 202, 204)
        for app in (fast_app, slow_app):  # from now on no job is claimed: the next fleet stays queued
            app.state.runs._dispatch = lambda: None
        time.sleep(1.1)  # the expiring token has expired, and a claim under way meanwhile has ended
        planning = create_scenario(fast_app.state.database, settings, ScenarioCreate(map="salp-demo", robots=2))
        tokens["planning"] = token(planning, "tb1")["token"]
        for client in (fast, slow):  # every change reached both caches
            client.app.state.feed.poll()
        yield fast, slow, {"demo": demo["id"], "other": other["id"], "doomed": doomed["id"], "planning": planning,
                           "run": run["id"], "states": states["states"], "penalties": states["penalties"],
                           "tokens": tokens}


@pytest.fixture
def spy(monkeypatch):
    """Which lane answered each request: FAST or FASTAPI, in order."""
    answered = []
    original = FastLane.answer

    async def answer(scope):
        response = await original(scope)
        answered.append(FAST if response is not None else FASTAPI)
        return response

    monkeypatch.setattr(FastLane, "answer", staticmethod(answer))
    return answered


def cases(ids: dict) -> list[tuple[str, str, dict, str]]:
    """(path with query, headers, the lane expected to answer)."""
    demo, t = ids["demo"], ids["tokens"]
    robot = f"/api/v1/scenarios/{demo}/robots/tb1"
    state = ",".join(map(str, ids["states"][3]))
    width = len(ids["states"][0])
    own, op = bearer(t["tb1"]), AUTH
    return [
        # good requests
        ("/api/v1/health", {}, FAST),
        ("/api/v1/health?x=1", op, FAST),
        (robot, own, FAST),
        (robot, op, FAST),
        (robot + "?ignored=1", own, FAST),
        (f"/api/v1/scenarios/{demo}/robots/tb2", op, FAST),
        (robot + "/policy", own, FAST),
        (f"/api/v1/scenarios/0{demo}/robots/tb1", own, FAST),  # leading zero: FastAPI reads the same id
        (robot + f"/penalty?state={state}", own, FAST),
        (robot + f"/penalty?state={','.join(map(str, ids['states'][0]))}", op, FAST),
        (robot, {"Authorization": f"bearer {t['tb1']}"}, FAST),  # the scheme is case-insensitive
        # bad states: the fast lane's 422 (not in the state space) and FastAPI's (the pattern)
        (robot + "/penalty?state=" + ",".join(["0"] * (width + 1)), own, FAST),
        (robot + "/penalty?state=" + ",".join(["999"] * width), own, FAST),
        (robot + "/penalty?state=" + ",".join(["0"] * width), own, FAST),  # in range, probably unreachable
        (robot + "/penalty?state=1,a", own, FASTAPI),
        (robot + "/penalty?state=", own, FASTAPI),
        (robot + "/penalty?state=1,,2", own, FASTAPI),
        (robot + "/penalty?state=1234567890", own, FASTAPI),
        (robot + "/penalty?state=" + ",".join(["0"] * 65), own, FASTAPI),
        (robot + "/penalty", own, FASTAPI),
        (robot + f"/penalty?state={state.replace(',', '%2C')}", own, FAST),  # what httpx's params= send
        (robot + f"/penalty?state={state.replace(',', '%2c')}", own, FAST),
        (robot + f"/penalty?state={state.replace(',', '%2C', 1).replace(',', '%2')}", own, FASTAPI),
        (robot + f"/penalty?state={state.replace(',', '+', 1)}", own, FASTAPI),
        (robot + f"/penalty?state=%31{state}", own, FASTAPI),  # %31 is 1: FastAPI decodes it
        (robot + f"/penalty?state=9&state={state}", own, FASTAPI),
        (robot + f"/penalty?state={state}&x=1", own, FASTAPI),
        # bad ids
        ("/api/v1/scenarios/abc/robots/tb1", own, FASTAPI),
        ("/api/v1/scenarios/0/robots/tb1", own, FASTAPI),
        ("/api/v1/scenarios/99999999999/robots/tb1", op, FASTAPI),
        ("/api/v1/scenarios/%EF%BC%91/robots/tb1", op, FASTAPI),  # a full-width digit one
        (f"/api/v1/scenarios/{demo}/robots/" + "r" * 101, op, FASTAPI),
        (f"/api/v1/scenarios/{demo}/robots/" + "r" * 100, op, FAST),  # 404: no such robot
        (f"/api/v1/scenarios/{demo}/robots/t%C3%A9", op, FAST),
        (f"/api/v1/scenarios/{demo}/robots/nobody/penalty?state={state}", op, FAST),
        ("/api/v1/scenarios/424242/robots/tb1", op, FAST),
        (robot + "/", own, FASTAPI),
        # whose token: another scenario's robot, another robot, revoked, expired, unknown, none
        (robot, bearer(t["other"]), FAST),
        (robot + f"/penalty?state={state}", bearer(t["other"]), FAST),
        (f"/api/v1/scenarios/{demo}/robots/tb2/policy", own, FAST),
        (f"/api/v1/scenarios/{demo}/robots/nobody", own, FAST),
        (robot, bearer(t["revoked"]), FAST),
        (robot, bearer(t["expiring"]), FAST),
        (robot, bearer("not-a-token"), FAST),
        (robot, {}, FASTAPI),
        (robot, {"Authorization": "Basic dXNlcjpwdw=="}, FASTAPI),
        (robot, {"Authorization": "Bearer"}, FASTAPI),
        (robot, {"Authorization": "Bearer "}, FASTAPI),
        # a deleted scenario, one still planning
        (f"/api/v1/scenarios/{ids['doomed']}/robots/tb1", op, FAST),
        (f"/api/v1/scenarios/{ids['doomed']}/robots/tb1/policy", bearer(t["doomed"]), FAST),
        (f"/api/v1/scenarios/{ids['doomed']}/robots/tb1/penalty?state={state}", op, FAST),
        (f"/api/v1/scenarios/{ids['planning']}/robots/tb1", bearer(t["planning"]), FAST),
        (f"/api/v1/scenarios/{ids['planning']}/robots/tb1/policy", bearer(t["planning"]), FAST),
        (f"/api/v1/scenarios/{ids['planning']}/robots/tb1/penalty?state={state}", bearer(t["planning"]), FAST),
        # other paths: FastAPI's
        (robot + "/penalties", own, FASTAPI),
        (f"/api/v1/scenarios/{demo}/monitor", op, FASTAPI),
        ("/api/v1/me", own, FASTAPI),
    ]


def test_fast_lane_answers_byte_for_byte_what_fastapi_answers(lanes, spy):
    fast, slow, ids = lanes
    seen = set()
    for path, headers, lane in cases(ids):
        spy.clear()
        a = fast.get(path, headers=headers, follow_redirects=False)
        b = slow.get(path, headers=headers, follow_redirects=False)
        where = f"GET {path} {headers}"
        assert spy == [lane], f"{where}: answered by {spy}, expected {lane}"
        if path.startswith("/api/v1/health"):  # each app names its own worker process
            assert a.json()["worker"] == fast.app.state.runs.process_id, where
            assert {**a.json(), "worker": None} == {**b.json(), "worker": None}, where
        else:
            assert (a.status_code, a.content) == (b.status_code, b.content), where
        assert a.headers.multi_items() == b.headers.multi_items(), where
        assert a.status_code != 500, where
        seen.add(a.status_code)
    assert seen >= {200, 401, 403, 404, 422, 503}  # the cases reach every answer


def test_what_the_fast_lane_answers_is_right(lanes, spy):
    """Not just the same as FastAPI: the values themselves (the deployed run's penalty, the
    refusals' reasons), so that a shared mistake would show too."""
    fast, _, ids = lanes
    robot = f"/api/v1/scenarios/{ids['demo']}/robots/tb1"
    own = bearer(ids["tokens"]["tb1"])
    for index in (0, 3, len(ids["states"]) - 1):
        state = ids["states"][index]
        answer = fast.get(robot + "/penalty", params={"state": ",".join(map(str, state))}, headers=own).json()
        assert answer == {"scenario_id": ids["demo"], "robot_id": "tb1", "run_id": ids["run"], "state": state,
                          "state_index": index, "penalty": ids["penalties"][index]}
    status = fast.get(robot, headers=own).json()
    assert status["run_id"] == ids["run"] and status["policy_ready"] is True and status["task"]["id"] == "tb1"
    planning = fast.get(f"/api/v1/scenarios/{ids['planning']}/robots/tb1/penalty", params={"state": "0,0,0,0,0"},
                        headers=bearer(ids["tokens"]["planning"]))
    assert planning.status_code == 503 and planning.headers["retry-after"] == "2"
    assert "queued" in planning.json()["detail"]
    other = fast.get(robot, headers=bearer(ids["tokens"]["other"]))
    assert other.status_code == 403 and other.json() == {"detail": "this token belongs to another robot"}
    expired = fast.get(robot, headers=bearer(ids["tokens"]["expiring"]))
    assert expired.status_code == 401 and expired.headers["www-authenticate"] == "Bearer"
    gone = fast.get(f"/api/v1/scenarios/{ids['doomed']}/robots/tb1", headers=AUTH)
    assert gone.status_code == 404 and gone.json() == {"detail": f"no scenario {ids['doomed']}"}
    assert spy == [FAST] * 8


def test_fast_lane_off_and_other_methods_go_to_fastapi(lanes, spy):
    fast, slow, ids = lanes
    robot = f"/api/v1/scenarios/{ids['demo']}/robots/tb1"
    for method in ("HEAD", "POST", "PUT"):
        a, b = fast.request(method, robot, headers=AUTH), slow.request(method, robot, headers=AUTH)
        assert (a.status_code, a.content, a.headers.multi_items()) == (b.status_code, b.content,
                                                                       b.headers.multi_items())
    assert spy == []  # not even looked at
    assert Settings.from_env().fast_lane is True


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["0", "7", "123456789", "1234567890", ",", "%2C", "%2c", "%2", "+", "%31", "&", "a"]),
                max_size=140).map("".join))
def test_the_fast_lane_takes_only_states_fastapi_takes(text):
    """Every query string the fast lane takes decodes to a state that FastAPI's pattern admits."""
    taken = PENALTY_QUERY.fullmatch(b"state=" + text.encode())
    if taken is not None:
        assert re.fullmatch(STATE_PATTERN, unquote(taken[1].decode()))
