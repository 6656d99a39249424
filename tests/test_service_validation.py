"""Every malformed number or string is a 422 with a JSON body, never a 500 (issue 12 item 2):
hypothesis throws non-finite floats, lone surrogates, wrong types and huge numbers at every
body field, query parameter and path parameter of the API. The tables of fields below are
checked against the OpenAPI schema, so that a field added later and left out here fails
`test_the_tables_cover_every_field_of_the_schema`. Then the HTTP edge: 413 however a body is
sent, 405 with its Allow header; and on a real server, one keep-alive connection that gets
every kind of refusal and is still usable afterwards
(`test_one_connection_survives_every_refusal`; test_service_processes.py has the original
body-level check)."""
from __future__ import annotations

import json
import re
import socket
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api.app import create_app
from api.settings import Settings
from service_support import AUTH, OPERATOR, ServerProcess, fresh_database_url, raw_request, read_response

pytestmark = pytest.mark.service
RUNS = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

#: what the path parameters name in the module's database: the shipped salp demo and its robot
IDS = {"scenario_id": 1, "robot_id": "tb1", "run_id": 1, "version": 1, "token_id": 1, "alert_id": 1,
       "name": "runs.csv"}
#: endpoints whose bodies the tables leave to their own tests (none)
EXCLUDED: set[str] = set()
RULE = {"zone": None, "feature": "sample", "value": "A", "weight": 1.0, "sensitivity": 1.0}
DEMO_SETTINGS = {"name": "salp demo (two Turtlebots)", "tolerance": 0.0, "auto_deploy": False}  # as shipped: a no-op
# (method, path, a valid body, the fields to break: (path into the body, null allowed, kind))
BODIES = [
    ("POST", "/api/v1/scenarios", {"map": "salp-demo", "robots": 2, "seed": 0, "slack": 10.0, "name": "x",
                                   "tolerance": 0.0, "auto_deploy": False},
     [(("map",), False, "str"), (("robots",), False, "int"), (("seed",), False, "int"),
      (("slack",), False, "float"), (("name",), True, "str"), (("tolerance",), False, "float"),
      (("auto_deploy",), False, "bool")]),
    ("POST", "/api/v1/scenarios", {"map_text": "x", "robots": 2}, [(("map_text",), False, "str")]),
    ("PATCH", "/api/v1/scenarios/{scenario_id}", DEMO_SETTINGS,
     [(("name",), True, "str"), (("tolerance",), True, "float"), (("auto_deploy",), True, "bool")]),
    ("POST", "/api/v1/scenarios/{scenario_id}/rules", {"rules": [RULE], "min_count": 2, "note": "n"},
     [(("rules", 0, "zone"), True, "str"), (("rules", 0, "feature"), False, "str"),
      (("rules", 0, "value"), False, "str"), (("rules", 0, "weight"), False, "float"),
      (("rules", 0, "sensitivity"), False, "float"), (("min_count",), True, "int"), (("note",), False, "str"),
      (("rules",), False, "list"), (("rules", 0), False, "object")]),
    ("POST", "/api/v1/scenarios/{scenario_id}/runs", {"method": "naive", "update_fraction": 0.5, "rounds": 1,
                                                      "episodes": 10, "seed": 0, "rule_version": 1, "deploy": False},
     [(("method",), False, "str"), (("update_fraction",), False, "float"), (("rounds",), False, "int"),
      (("episodes",), False, "int"), (("seed",), False, "int"), (("rule_version",), True, "int"),
      (("deploy",), True, "bool")]),
    ("POST", "/api/v1/scenarios/{scenario_id}/robots/{robot_id}/state", {"state": [1, 1, 0, 0, 0], "run_id": 1},
     [(("state", 0), False, "int"), (("state", 4), False, "int"), (("state",), False, "list"),
      (("run_id",), True, "int")]),
    ("POST", "/api/v1/scenarios/{scenario_id}/tokens", {"robot_id": "tb1", "expires_in": 60},
     [(("robot_id",), False, "str"), (("expires_in",), True, "int")]),
    ("POST", "/api/v1/scenarios/{scenario_id}/runs/import", {  # a policy file (docs/LOGS.md)
        "format": "mase-policies", "version": 1, "map": "salp-demo", "domain": "salp", "source": {},
        "policies": [{"task": {"kind": "collect", "start": [1, 1], "items": [0], "option": "", "count": 0},
                      "robots": ["tb1"], "features": ["x", "y", "sample", "collected", "coral"],
                      "states": [[1, 1, 0, 0, 0]], "actions": ["east"]}]},
     [(("format",), False, "str"), (("version",), False, "int"), (("map",), False, "str"),
      (("domain",), False, "str"), (("policies",), False, "list"), (("policies", 0, "robots"), True, "list"),
      (("policies", 0, "robots", 0), False, "str"), (("policies", 0, "task", "start", 0), False, "int"),
      (("policies", 0, "task", "kind"), False, "str"), (("policies", 0, "states", 0, 0), False, "int"),
      (("policies", 0, "states"), False, "list"), (("policies", 0, "actions", 0), False, "str"),
      (("policies", 0), False, "object"), (("policies", 0, "actions"), False, "list"),
      (("policies", 0, "features"), False, "list"), (("policies", 0, "features", 0), False, "str"),
      (("policies", 0, "states", 0), False, "list"), (("policies", 0, "task"), False, "object"),
      (("policies", 0, "task", "count"), False, "int"), (("policies", 0, "task", "items"), False, "list"),
      (("policies", 0, "task", "items", 0), False, "int"), (("policies", 0, "task", "option"), False, "str"),
      (("policies", 0, "task", "start"), False, "list"), (("source",), False, "object")]),
    ("POST", "/api/v1/events/tickets", {"scenario_id": 1}, [(("scenario_id",), False, "int")]),
]
FIELDS = [(method, path.format(**IDS), body, field, nullable, kind) for method, path, body, fields in BODIES
          for field, nullable, kind in fields]
#: (path, query parameter, the rest of a valid query string); the event stream's `ticket` has its own test
QUERIES = [
    ("/api/v1/scenarios/{scenario_id}/robots/{robot_id}/penalty", "state", ""),
    ("/api/v1/runs/compare", "ids", "&ids=1"),
    ("/api/v1/scenarios/{scenario_id}/observations", "after", ""),
    ("/api/v1/scenarios/{scenario_id}/observations", "limit", ""),
    ("/api/v1/scenarios/{scenario_id}/observations/export", "join_window", ""),
    ("/api/v1/scenarios/{scenario_id}/alerts", "limit", ""),
    ("/api/v1/scenarios/{scenario_id}/alerts", "state", ""),
]
EVENTS = "/api/v1/scenarios/{scenario_id}/events"
#: the policy import's query parameters (a POST: tested below with a valid document)
IMPORT = "/api/v1/scenarios/{scenario_id}/runs/import"
IMPORT_QUERIES = {(IMPORT, "rule_version"), (IMPORT, "deploy")}
# wrong types, by the kind of field they are wrong for (a numeric string is a valid string...)
WRONG = {"int": ['"5"', '"1.5"', "true", "false", "1.5", "2.0", "[]", "{}", '"NaN"'],
         "float": ['"5"', '"1.5"', "true", "false", "[]", "{}", '"NaN"', '"1e309"'],
         "str": ["true", "5", "1.5", "[]", "{}", '"\\u0000"', '"a\\u0000b"'],
         "bool": ['"true"', '"false"', "1", "0", "1.0", '"1"', '"yes"', "[]", "{}"],
         "list": ['"5"', "true", "1.5", "{}", "5"],
         "object": ['"x"', "5", "1.5", "true", "[]", "[{}]"]}

NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1E400"])
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d"]).map(json.dumps)
HUGE = st.sampled_from([str(10**400), str(-10**400), "9" * 5000, "1e300", "-1e300"])


def bad_values(kind: str):
    return st.one_of(NON_FINITE, SURROGATES, HUGE, st.sampled_from(WRONG[kind]))


def schema():
    return create_app(Settings()).openapi()


def operations(openapi: dict):
    """(method, path, operation) of every operation but the excluded ones."""
    for path, ops in openapi["paths"].items():
        if path in EXCLUDED:
            continue
        for method, op in ops.items():
            yield method.upper(), path, op


def body_fields(node: dict, components: dict, prefix: tuple = ()) -> set[tuple]:
    """Every field of a request body's schema: object properties by name, array items as index 0."""
    while "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[-1]]
    found = set()
    for name, child in node.get("properties", {}).items():
        found |= {prefix + (name,)} | body_fields(child, components, prefix + (name,))
    if node.get("type") == "array":
        found |= {prefix + (0,)} | body_fields(node["items"], components, prefix + (0,))
    for option in node.get("anyOf", []):  # X | None, or a union
        found |= body_fields(option, components, prefix)
    return found


def test_the_tables_cover_every_field_of_the_schema():
    openapi = schema()
    components = openapi["components"]["schemas"]
    tested_bodies: dict[tuple, set] = {}
    for method, path, _, fields in BODIES:
        tested_bodies.setdefault((method, path), set()).update(f for f, _, _ in fields)
    bodies, queries = {}, set()
    for method, path, op in operations(openapi):
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body is not None:
            bodies[(method, path)] = body_fields(body, components)
        queries |= {(path, p["name"]) for p in op.get("parameters", []) if p["in"] == "query"}
    assert set(bodies) == set(tested_bodies), "operations with a JSON body"
    for operation, fields in bodies.items():
        assert fields <= tested_bodies[operation], (operation, fields - tested_bodies[operation])
    assert queries == {(path, name) for path, name, _ in QUERIES} | {(EVENTS, "ticket")} | IMPORT_QUERIES


@pytest.fixture(scope="module")
def database_url(tmp_path_factory):
    """One database for the module's app and its real server (on PostgreSQL, a second fresh
    database would empty the first under the other's feet)."""
    return fresh_database_url(tmp_path_factory.mktemp("validation"))


@pytest.fixture(scope="module")
def client(database_url, tmp_path_factory):
    settings = Settings(database_url=database_url, tokens_file=tmp_path_factory.mktemp("tokens") / "none",
                        extra_operator_tokens=(OPERATOR,), max_body_bytes=100_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def with_field(body, field, raw: str) -> str:
    """`body` as JSON text with `field` replaced by the raw JSON text `raw`."""
    marker = "__BAD_VALUE__"
    value = json.loads(json.dumps(body))
    target = value
    for part in field[:-1]:
        target = target[part]
    target[field[-1]] = marker
    return json.dumps(value).replace(json.dumps(marker), raw)


def assert_422(response, field) -> None:
    assert response.status_code == 422, (field, response.status_code, response.text)
    detail = response.json()["detail"]
    locs = [tuple(str(p) for p in e["loc"]) for e in detail]
    assert any(str(field[0]) in loc for loc in locs), (field, detail)


@pytest.mark.parametrize("method, path, body, field, nullable, kind", FIELDS,
                         ids=[f"{p.split('/')[-1]}:{'.'.join(map(str, f))}" for _, p, _, f, _, _ in FIELDS])
@given(data=st.data())
@hsettings(**RUNS)
def test_bad_values_in_every_body_field_are_422(client, method, path, body, field, nullable, kind, data):
    raw = data.draw(bad_values(kind))
    text = with_field(body, field, raw)
    response = client.request(method, path, content=text.encode("utf-8", "surrogatepass"),
                              headers={**AUTH, "Content-Type": "application/json"})
    assert_422(response, field)


@pytest.mark.parametrize("method, path, body, field, nullable, kind", FIELDS)
def test_null_where_not_allowed_is_422(client, method, path, body, field, nullable, kind):
    response = client.request(method, path, content=with_field(body, field, "null").encode(),
                              headers={**AUTH, "Content-Type": "application/json"})
    if nullable:
        assert response.status_code != 500
    else:
        assert_422(response, field)


@given(key=SURROGATES)
@hsettings(**RUNS)
def test_surrogate_keys_and_invalid_utf8_are_422(client, key):
    text = '{"map": "salp-demo", "robots": 2, %s: 1}' % key
    response = client.post("/api/v1/scenarios", content=text.encode("utf-8", "surrogatepass"),
                           headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"]
    raw = client.post("/api/v1/scenarios", content=b'{"name": "\xff\xfe", "robots": 2}',
                      headers={**AUTH, "Content-Type": "application/json"})
    assert raw.status_code == 422 and "UTF-8" in raw.text


@pytest.mark.parametrize("method, path", sorted({(m, p.format(**IDS)) for m, p, _, _ in BODIES}))
@given(raw=st.one_of(NON_FINITE, SURROGATES, HUGE, st.sampled_from(["[]", "[1]", '"x"', "5", "true", "null"])))
@hsettings(**RUNS)
def test_a_body_that_is_not_an_object_is_422(client, method, path, raw):
    response = client.request(method, path, content=raw.encode("utf-8", "surrogatepass"),
                              headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, (raw, response.status_code, response.text)
    assert response.json()["detail"]


PRE_ENCODED = {"%ED%A0%80"}
QUERY_BAD = st.one_of(st.sampled_from(["NaN", "inf", "-inf", "1e309", "-1", "1.5", "true", "", " 1", "%ED%A0%80",
                                       "9" * 400, "0x10", "\uff11", "+1", "1_0", "1.0", "1e1"]),
                      st.text(max_size=20).map(lambda t: t + "x"))


def encoded(value: str) -> str:
    # only the literal percent-encoded samples go as they are; generated text (even text that
    # begins with "%") is encoded, or the client itself refuses its control characters
    return value if value in PRE_ENCODED else quote(value, safe="")


@given(value=QUERY_BAD)
@hsettings(**RUNS)
def test_bad_query_values_are_422(client, value):
    for path, name, rest in QUERIES:
        url = f"{path.format(**IDS)}?{name}={encoded(value)}{rest}"
        response = client.get(url, headers=AUTH)
        assert response.status_code == 422, (url, response.status_code, response.text)
        assert response.json()["detail"]


@given(value=QUERY_BAD)
@hsettings(**RUNS)
def test_bad_import_queries_are_422(client, value):
    """A valid policy document with a malformed `rule_version` or `deploy`: 422, and no run made."""
    document = next(body for method, path, body, _ in BODIES if path == IMPORT)
    url = IMPORT.format(**IDS)
    runs = len(client.get(f"/api/v1/scenarios/{IDS['scenario_id']}/runs", headers=AUTH).json())
    queries = [f"rule_version={encoded(value)}"]
    if value.strip().lower() not in {"true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n"}:
        queries.append(f"deploy={encoded(value)}")
    for query in queries:
        response = client.post(f"{url}?{query}", headers=AUTH, json=document)
        assert response.status_code == 422, (query, response.status_code, response.text)
        assert response.json()["detail"]
    assert len(client.get(f"/api/v1/scenarios/{IDS['scenario_id']}/runs", headers=AUTH).json()) == runs


TICKET = re.compile(r"[A-Za-z0-9_-]{10,100}")


@given(value=QUERY_BAD.filter(lambda v: not TICKET.fullmatch(v)))
@hsettings(**RUNS)
def test_bad_event_tickets_are_422(client, value):
    """Without a bearer token (with one, a well-formed ticket would open the stream)."""
    url = f"{EVENTS.format(**IDS)}?ticket={encoded(value)}"
    response = client.get(url)
    assert response.status_code == 422, (url, response.status_code, response.text)
    assert response.json()["detail"]


def test_a_well_formed_unknown_ticket_is_401(client):
    response = client.get(f"{EVENTS.format(**IDS)}?ticket={'a' * 43}")
    assert response.status_code == 401 and "ticket" in response.json()["detail"]


PATH_BAD = ["NaN", "1e309", "-1", "1.5", "true", "9" * 400, "%ED%A0%80", "0x1", "0", "2147483648", "%201", "+1",
            "%EF%BC%91", "1_0", "r" * 101]
PATH_OPERATIONS = sorted({(method, path, name) for method, path, op in operations(schema())
                          for name in re.findall(r"{(\w+)}", path)})


@pytest.mark.parametrize("method, path, name", PATH_OPERATIONS, ids=[f"{m} {p} {n}" for m, p, n in PATH_OPERATIONS])
def test_bad_path_parameters_are_422_or_404(client, method, path, name):
    """Every path parameter of every operation (read from the schema). Ids are plain digits
    in range: anything else is 422 (or 404 where the route cannot tell it from another
    path); a robot id is any text up to 100 characters, so most of these name no robot (404)."""
    for value in PATH_BAD:
        url = path.format(**{**IDS, name: value})
        response = client.request(method, url, headers=AUTH)
        assert response.status_code in (404, 422), (method, url, response.status_code, response.text)
        assert response.json()["detail"]
        if name != "robot_id":
            assert response.status_code == 422, (method, url, response.text)


OUT_OF_RANGE = ["/api/v1/scenarios/{scenario_id}/observations?limit=0",
                "/api/v1/scenarios/{scenario_id}/observations?limit=10001",
                "/api/v1/scenarios/{scenario_id}/observations?after=9223372036854775808",
                "/api/v1/scenarios/{scenario_id}/observations/export?join_window=100001",
                "/api/v1/scenarios/{scenario_id}/alerts?limit=0", "/api/v1/scenarios/{scenario_id}/alerts?limit=10001",
                "/api/v1/runs/compare?ids=0&ids=1", "/api/v1/runs/compare?ids=1",
                "/api/v1/runs/compare?" + "&".join(["ids=1"] * 21), "/api/v1/runs/compare?ids=2147483648&ids=1",
                "/api/v1/scenarios/{scenario_id}/robots/{robot_id}/penalty?state=" + ",".join(["1"] * 65),
                "/api/v1/scenarios/{scenario_id}/robots/{robot_id}/penalty?state=1234567890"]


@pytest.mark.parametrize("url", OUT_OF_RANGE)
def test_query_values_out_of_range_are_422(client, url):
    response = client.get(url.format(**IDS), headers=AUTH)
    assert response.status_code == 422, (url, response.status_code, response.text)
    assert response.json()["detail"]
    for ticket in ("a" * 9, "a" * 101):
        assert client.get(f"{EVENTS.format(**IDS)}?ticket={ticket}").status_code == 422


@pytest.fixture(scope="module")
def server(client, database_url, tmp_path_factory):
    """A real `mase serve` on the module's database (after the app fixture made its scenarios)."""
    process = ServerProcess(tmp_path_factory.mktemp("server"), database_url).start()
    yield process
    process.stop()


#: what the keep-alive test sends into every body field (one of each family)
SAMPLE = ["NaN", "-Infinity", "1e309", json.dumps("\ud800"), "9" * 5000]


def test_one_connection_survives_every_refusal(server):
    """One keep-alive connection to a real server gets every refusal: a bad value in every
    body field, a body that is not an object, a bad value of every query and path parameter.
    Each is a 422 (404 for robot ids) with a JSON body, the connection is never closed, and a
    valid request on it afterwards is answered."""
    requests = []
    for method, path, body, field, _, kind in FIELDS:
        for raw in SAMPLE + WRONG[kind][:2]:
            requests.append((method, path, with_field(body, field, raw).encode("utf-8", "surrogatepass"), {422}))
    for method, path, _, _ in BODIES:
        requests.append((method, path.format(**IDS), b"[]", {422}))
    for path, name, rest in QUERIES:
        for value in ("NaN", "1e309", "%ED%A0%80", "true", " 1", "9" * 400):
            requests.append(("GET", f"{path.format(**IDS)}?{name}={encoded(value)}{rest}", b"", {422}))
    for method, path, name in PATH_OPERATIONS:
        for value in ("NaN", "%ED%A0%80", "9" * 400):
            requests.append((method, path.format(**{**IDS, name: value}), b"", {404, 422}))
    events = [("GET", f"{EVENTS.format(**IDS)}?ticket={value}", b"", {422}) for value in ("NaN", "%ED%A0%80")]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for method, path, body, expected in requests:
            sock.sendall(raw_request(method, path, body, {"Authorization": AUTH["Authorization"]}))
            status, headers, answer = read_response(sock)
            assert status in expected, (method, path, body[:80], status, answer[:300])
            assert headers.get("content-type") == "application/json" and json.loads(answer)["detail"]
            assert headers.get("connection", "").lower() != "close", (method, path)
        for method, path, body, expected in events:  # no token: a ticket instead
            sock.sendall(raw_request(method, path, body))
            status, headers, answer = read_response(sock)
            assert status in expected and json.loads(answer)["detail"], (path, status, answer)
        sock.sendall(raw_request("GET", "/api/v1/scenarios/1", headers={"Authorization": AUTH["Authorization"]}))
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)["id"] == 1
    assert len(requests) > 300


def test_bodies_over_the_limit_are_413_however_they_are_sent(client):
    def chunks():
        for _ in range(40):
            yield b" " * 50_000  # 2 MB in all, no Content-Length
    chunked = client.post("/api/v1/scenarios", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert chunked.status_code == 413 and "larger than" in chunked.json()["detail"]
    sized = client.post("/api/v1/scenarios", content=b" " * 200_000, headers={**AUTH, "Content-Type": "application/json"})
    assert sized.status_code == 413


def test_405_names_every_method_of_the_path(client):
    for path, methods in (("/api/v1/scenarios", {"GET", "POST"}), ("/api/v1/scenarios/1", {"GET", "DELETE", "PATCH"}),
                          ("/api/v1/scenarios/1/rules", {"GET", "POST"}), ("/api/v1/health", {"GET"})):
        response = client.put(path, headers=AUTH)
        assert response.status_code == 405
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert methods <= allowed and allowed <= methods | {"HEAD"}, (path, allowed)
