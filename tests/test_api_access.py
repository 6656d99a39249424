"""Access control of every endpoint for every role: no token or an unknown one 401; a robot
token outside its own robot 403; tokens stored hashed and never returned again."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from api.app import create_app
from api.models import RobotTokenRow
from api.security import hash_token
from api.settings import Settings
from service_support import AUTH, OPERATOR, fresh_database_url, wait_until_planned

pytestmark = pytest.mark.service
STATE = "1,1,0,0,0"  # tb1's start state on the salp demo map

# (method, path, json body); {s} is the demo scenario, {o} a second scenario with its own tb1
OPERATOR_ONLY = [
    ("GET", "/api/v1/maps", None),
    ("GET", "/api/v1/scenarios", None),
    ("POST", "/api/v1/scenarios", {"map": "salp-demo", "robots": 2}),
    ("GET", "/api/v1/scenarios/{s}", None),
    ("GET", "/api/v1/scenarios/{s}/map", None),
    ("GET", "/api/v1/scenarios/{s}/plan", None),
    ("POST", "/api/v1/scenarios/{s}/plan/restart", None),
    ("POST", "/api/v1/scenarios/{s}/tokens", {"robot_id": "tb1"}),
    ("GET", "/api/v1/scenarios/{s}/tokens", None),
    ("DELETE", "/api/v1/scenarios/{s}/tokens/{t}", None),
    ("GET", "/api/v1/scenarios/{s}/rules", None),
    ("GET", "/api/v1/scenarios/{s}/rules/1", None),
    ("POST", "/api/v1/scenarios/{s}/rules", {"rules": []}),
    ("GET", "/api/v1/scenarios/{s}/runs", None),
    ("POST", "/api/v1/scenarios/{s}/runs", {"method": "naive"}),
    ("GET", "/api/v1/runs/{r}", None),
    ("POST", "/api/v1/runs/{r}/restart", None),
    ("GET", "/api/v1/runs/compare?ids={r}&ids={r}", None),
    ("GET", "/api/v1/scenarios/{s}/monitor", None),
    ("GET", "/api/v1/scenarios/{s}/observations", None),
    ("DELETE", "/api/v1/scenarios/{s}/observations", None),
    ("DELETE", "/api/v1/scenarios/{o}", None),
]
ROBOT = [  # allowed to the operator and to the robot itself
    ("GET", "/api/v1/scenarios/{s}/robots/tb1", None),
    ("GET", "/api/v1/scenarios/{s}/robots/tb1/policy", None),
    ("GET", "/api/v1/scenarios/{s}/robots/tb1/penalties", None),
    ("GET", "/api/v1/scenarios/{s}/robots/tb1/penalty?state=" + STATE, None),
    ("POST", "/api/v1/scenarios/{s}/robots/tb1/state", {"state": [1, 1, 0, 0, 0]}),
]
EVERY = OPERATOR_ONLY + ROBOT + [("GET", "/api/v1/me", None)]
SUCCESS = {"GET": (200,), "POST": (200, 201, 202, 409), "DELETE": (200, 204)}  # restarting what did not fail is 409


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    settings = Settings(database_url=fresh_database_url(tmp), tokens_file=tmp / "none",
                        extra_operator_tokens=(OPERATOR,))
    with TestClient(create_app(settings)) as client:
        other = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2}).json()["id"]
        tokens = {}
        for scenario, robot in ((1, "tb1"), (1, "tb2"), (other, "tb1")):
            response = client.post(f"/api/v1/scenarios/{scenario}/tokens", headers=AUTH, json={"robot_id": robot})
            assert response.status_code == 201
            tokens[(scenario, robot)] = response.json()["token"]
        spare = client.post("/api/v1/scenarios/1/tokens", headers=AUTH, json={"robot_id": "tb1"}).json()["id"]
        run = client.post("/api/v1/scenarios/1/runs", headers=AUTH, json={"method": "naive"}).json()["id"]
        for scenario in (1, other):
            wait_until_planned(client, scenario)
        yield client, settings, tokens, {"s": 1, "o": other, "r": run, "t": spare}


def call(client, method, path, body, ids, headers):
    return client.request(method, path.format(**ids), json=body, headers=headers)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("method, path, body", EVERY)
def test_missing_or_unknown_token_is_401(world, method, path, body):
    client, _, _, ids = world
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic b3A6b3A="}, {"Authorization": "Bearer "}):
        response = call(client, method, path, body, ids, headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize("method, path, body", OPERATOR_ONLY)
def test_robot_token_on_operator_endpoints_is_403(world, method, path, body):
    client, _, tokens, ids = world
    response = call(client, method, path, body, ids, bearer(tokens[(1, "tb1")]))
    assert response.status_code == 403, (path, response.text)


@pytest.mark.parametrize("method, path, body", ROBOT)
def test_robot_endpoints_per_role(world, method, path, body):
    client, _, tokens, ids = world
    own = call(client, method, path, body, ids, bearer(tokens[(1, "tb1")]))
    assert own.status_code == 200, own.text
    assert call(client, method, path, body, ids, AUTH).status_code == 200
    # another robot of the same scenario, and the same robot id in another scenario
    assert call(client, method, path, body, ids, bearer(tokens[(1, "tb2")])).status_code == 403
    assert call(client, method, path, body, ids, bearer(tokens[(ids["o"], "tb1")])).status_code == 403


@pytest.mark.parametrize("method, path, body", OPERATOR_ONLY)
def test_operator_may_do_everything(world, method, path, body):
    client, _, _, ids = world
    response = call(client, method, path, body, ids, AUTH)
    assert response.status_code in SUCCESS[method], (path, response.text)


def test_tokens_are_stored_hashed_and_not_listed(world):
    client, settings, tokens, _ = world
    engine = create_engine(settings.database_url)
    with engine.connect() as connection:
        stored = set(connection.scalars(select(RobotTokenRow.token_hash)))
    engine.dispose()
    assert {hash_token(t) for (scenario, _), t in tokens.items() if scenario == 1} <= stored
    assert not set(tokens.values()) & stored
    everything = "".join(client.get(p, headers=AUTH).text for p in
                         ("/api/v1/scenarios", "/api/v1/scenarios/1", "/api/v1/scenarios/1/runs", "/openapi.json"))
    assert not any(t in everything for t in tokens.values())


def test_token_for_unknown_robot_is_404(world):
    client, *_ = world
    response = client.post("/api/v1/scenarios/1/tokens", headers=AUTH, json={"robot_id": "tb9"})
    assert response.status_code == 404 and "tb9" in response.json()["detail"]


def test_me_says_who_the_token_belongs_to(world):
    client, _, tokens, ids = world
    from api.security import hash_token

    name = f"operator-{hash_token(AUTH['Authorization'].split()[1])[:6]}"  # a token without a name in the file
    assert client.get("/api/v1/me", headers=AUTH).json() == {"role": "operator", "name": name, "scenario_id": None,
                                                             "robot_id": None}
    for robot in ("tb1", "tb2"):  # of scenario 1 (the other scenario is deleted by an earlier test)
        scenario, token = 1, tokens[(1, robot)]
        response = client.get("/api/v1/me", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {"role": "robot", "name": robot, "scenario_id": scenario, "robot_id": robot}
