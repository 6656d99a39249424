"""The push channel (GET /api/v1/scenarios/{id}/events) against a real `mase serve`: who may
open it (tokens, single-use tickets, a robot token only its own scenario and robot), 100
clients receiving every event of a run in order, and a client that stops reading dropped
while the others keep getting their events at once (bounded: it ends as soon as the drop is
seen, with a cap on the events sent)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

import httpx
import pytest

from service_support import AUTH, ServerProcess, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
DEMO = 1
CLIENTS = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("events")
    env = {"MASE_EVENTS_PER_TOKEN": str(CLIENTS + 10), "MASE_EVENTS_QUEUE": "8", "MASE_EVENTS_SEND_TIMEOUT": "3",
           "MASE_ACCESS_LOG": "0", "MASE_EVENTS_SEND_BUFFER": "65536"}
    process = ServerProcess(tmp, fresh_database_url(tmp), env=env).start()
    with process.client() as client:
        wait_until_planned(client, DEMO)
    try:
        yield process
    finally:
        process.stop()


def parse(lines):
    """(id, kind, data) of each event in SSE lines."""
    event_id, kind = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield event_id, kind, json.loads(line[6:])


def test_who_may_open_the_stream(server):
    url = f"{server.url}/api/v1/scenarios/{DEMO}/events"
    with server.client() as client:
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(url, params={"ticket": "x" * 43}).status_code == 401
        assert client.get(f"{server.url}/api/v1/scenarios/999/events", headers=AUTH).status_code == 404
        ticket = client.post("/api/v1/events/tickets", headers=AUTH, json={"scenario_id": DEMO}).json()["ticket"]
        other = client.post("/api/v1/events/tickets", headers=AUTH, json={"scenario_id": 2}).json()["ticket"]
        assert client.get(url, params={"ticket": other}).status_code == 401  # a ticket opens its own scenario only
        with client.stream("GET", url, params={"ticket": ticket}) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            first = next(parse(response.iter_lines()))
            assert first[1] == "snapshot" and first[2]["scenario"]["id"] == DEMO
            assert {"runs", "monitor", "alerts", "history"} <= set(first[2])
        assert client.get(url, params={"ticket": ticket}).status_code == 401  # used once

        # a robot token: its own scenario only, and of it no other robot's reports
        robot = client.post(f"/api/v1/scenarios/{DEMO}/tokens", headers=AUTH, json={"robot_id": "tb1"}).json()
        mine = {"Authorization": f"Bearer {robot['token']}"}
        assert client.get(f"{server.url}/api/v1/scenarios/2/events", headers=mine).status_code == 403
        assert client.post("/api/v1/events/tickets", headers=mine, json={"scenario_id": 2}).status_code == 403
        policies = {r: client.get(f"/api/v1/scenarios/{DEMO}/robots/{r}/policy", headers=AUTH).json()
                    for r in ("tb1", "tb2")}
        seen = []
        with client.stream("GET", url, headers=mine) as response:
            events = parse(response.iter_lines())
            snapshot = next(events)
            assert snapshot[1] == "snapshot" and set(snapshot[2]) == {"scenario", "robots"}
            for r in ("tb2", "tb1"):  # tb2 first: tb1's stream must skip it
                p = policies[r]
                client.post(f"/api/v1/scenarios/{DEMO}/robots/{r}/state", headers=AUTH,
                            json={"state": p["states"][p["start"]]})
            for event in events:
                seen.append(event)
                if event[1] == "robots":
                    break
        assert {e[1] for e in seen} <= {"robots", "scenario", "deployment", "rules", "plan"}
        assert [r["robot_id"] for r in seen[-1][2]["robots"]] == ["tb1"]
        # revoking the token ends its open stream
        ticket = client.post("/api/v1/events/tickets", headers=mine, json={"scenario_id": DEMO}).json()["ticket"]
        with client.stream("GET", url, params={"ticket": ticket}) as response:
            lines = response.iter_lines()
            assert next(parse(lines))[1] == "snapshot"
            assert client.delete(f"/api/v1/scenarios/{DEMO}/tokens/{robot['id']}", headers=AUTH).status_code == 204
            rest = list(lines)  # the server ends the stream
        assert not any(line.startswith("event: robots") for line in rest)


def test_hundred_clients_get_every_event_of_a_run_in_order(server):
    url = f"{server.url}/api/v1/scenarios/{DEMO}/events"
    received: dict[int, list] = {}
    ready = threading.Event()
    run_id: dict = {}

    async def one(client: httpx.AsyncClient, k: int, joined: list) -> None:
        events = []
        async with client.stream("GET", url, headers=AUTH) as response:
            assert response.status_code == 200
            kind = event_id = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    events.append((event_id, kind, data))
                    if kind == "snapshot":
                        joined.append(k)
                    if kind == "run" and data["id"] == run_id.get("id") and data["status"] in (
                            "succeeded", "failed", "interrupted"):
                        break
        received[k] = events

    async def main() -> None:
        joined: list = []
        limits = httpx.Limits(max_connections=CLIENTS + 5, max_keepalive_connections=CLIENTS + 5)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            tasks = [asyncio.create_task(one(client, k, joined)) for k in range(CLIENTS)]
            deadline = time.monotonic() + 60
            while len(joined) < CLIENTS:
                assert time.monotonic() < deadline, f"{len(joined)} of {CLIENTS} clients got their snapshot"
                await asyncio.sleep(0.05)
            ready.set()
            response = await client.post(f"{server.url}/api/v1/scenarios/{DEMO}/runs", headers=AUTH,
                                         json={"method": "gen-recon-cf", "update_fraction": 1.0, "rounds": 2,
                                               "deploy": False})
            assert response.status_code == 202
            run_id["id"] = response.json()["id"]
            await asyncio.wait_for(asyncio.gather(*tasks), 180)

    asyncio.run(main())
    with server.client() as client:
        final = wait_for_run(client, run_id["id"])
    assert final["status"] == "succeeded", final["error"]
    sequences = []
    for k in range(CLIENTS):
        events = received[k]
        snapshot_id = events[0][0]
        ids = [e[0] for e in events[1:]]
        # after its snapshot a client gets every event, in order: ids follow one another
        assert ids == list(range(snapshot_id + 1, snapshot_id + 1 + len(ids))), (k, ids)
        run_events = [(e[0], e[2]["status"], e[2]["phase"], e[2]["progress"]) for e in events
                      if e[1] == "run" and e[2]["id"] == run_id["id"]]
        sequences.append(run_events)
    assert all(s == sequences[0] for s in sequences)  # the same events, the same order, for every client
    statuses = [s[1] for s in sequences[0]]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    progress = [s[3] for s in sequences[0] if s[1] == "running"]
    assert progress == sorted(progress) and len(progress) >= 3  # phases and progress were pushed as they came


def test_a_client_that_stops_reading_is_dropped_without_slowing_the_others(server):
    """A client stops reading after its headers (a small receive buffer); rule edits of 1000 rules
    make large events. Its queue (8 events here) fills once its socket is full: it is dropped,
    while a reading client keeps getting each event right after its edit."""
    with server.client() as client:
        rules = client.get(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH).json()[-1]
    body = {"rules": (rules["rules"] * 1000)[:1000], "note": "big events " + "x" * 1900}
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(f"GET /api/v1/scenarios/{DEMO}/events HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode())
    assert stalled.recv(12) == b"HTTP/1.1 200"

    arrived: dict[int, float] = {}
    stop = threading.Event()

    def reader() -> None:
        try:
            with httpx.stream("GET", f"{server.url}/api/v1/scenarios/{DEMO}/events", headers=AUTH, timeout=60) as r:
                for _, kind, data in parse(r.iter_lines()):
                    if kind == "rules":
                        arrived[data["version"]] = time.monotonic()
                    if stop.is_set():
                        return
        except httpx.HTTPError:  # the server stops at the end of the module
            pass

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(1.0)
    posted: dict[int, float] = {}
    dropped_after = None
    log = server.log
    start = time.monotonic()
    with server.client() as client:
        # ~80 KB per edit: the stalled stream's socket (MASE_EVENTS_SEND_BUFFER) fills within ~10
        # events, then the drop comes within MASE_EVENTS_SEND_TIMEOUT; the cap is in time, not in
        # edits, because how many edits the broker turns into events per second depends on load
        while dropped_after is None and time.monotonic() - start < 60 and len(posted) < 600:
            response = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH, json=body)
            assert response.status_code == 201, response.text
            posted[response.json()["version"]] = time.monotonic()
            if "dropped an event stream" in log.read_text():
                dropped_after = len(posted)
        assert dropped_after is not None, "the client that stopped reading was never dropped"
        for _ in range(3):  # edits after the drop still reach the reading client
            response = client.post(f"/api/v1/scenarios/{DEMO}/rules", headers=AUTH, json=body)
            posted[response.json()["version"]] = time.monotonic()
    deadline = time.monotonic() + 20
    while set(posted) - set(arrived) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    assert set(posted) <= set(arrived), f"the reading client missed {sorted(set(posted) - set(arrived))}"
    lags = [arrived[v] - posted[v] for v in posted]
    assert max(lags) < 5.0, f"the reading client waited {max(lags):.1f} s for an event"
    assert "its queue of 8 events was full" in log.read_text() or "took no event" in log.read_text()
    # the dropped connection is closed by the server: reading it to the end finds the end
    stalled.settimeout(10)
    try:
        while stalled.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    stalled.close()
    assert time.monotonic() - start < 120



LIMIT = 3


def test_a_token_past_its_stream_limit_gets_429_others_do_not_and_a_closed_stream_frees_a_slot(tmp_path):
    """A server with MASE_EVENTS_PER_TOKEN=3: a token's fourth stream (by header or by a ticket it
    asked for) is refused with a 429 JSON answer and Retry-After, while another operator token
    and a robot token still open theirs and the token's three open streams keep getting events;
    when one of them is closed by its client, the token may open one again, and only one.
    Bounded: reads time out after 10 s (the server pings every 15 s), the slot must free in 10 s."""
    (tmp_path / "tokens").write_text("# two operators\nfirst-operator-token first\nsecond-operator-token second\n")
    mine, theirs = {"Authorization": "Bearer first-operator-token"}, {"Authorization": "Bearer second-operator-token"}
    process = ServerProcess(tmp_path, fresh_database_url(tmp_path),
                            env={"MASE_EVENTS_PER_TOKEN": str(LIMIT), "MASE_ACCESS_LOG": "0"}).start()
    url = f"{process.url}/api/v1/scenarios/{DEMO}/events"
    try:
        with httpx.Client(base_url=process.url, timeout=10) as client, contextlib.ExitStack() as streams:
            wait_until_planned(client, DEMO, headers=mine)

            def attempt(**kwargs):
                """Open a stream: the response (kept open while it is a 200), or the refusal, read."""
                response = streams.enter_context(client.stream("GET", url, **kwargs))
                if response.status_code != 200:
                    response.read()
                return response

            def open_stream(**kwargs):
                """An open stream whose snapshot arrived: the response and its events."""
                response = attempt(**kwargs)
                assert response.status_code == 200, response.text
                events = parse(response.iter_lines())
                assert next(events)[1] == "snapshot"
                return response, events

            def ticket(headers):
                answer = client.post("/api/v1/events/tickets", headers=headers, json={"scenario_id": DEMO})
                assert answer.status_code == 201, answer.text
                return answer.json()["ticket"]

            opened = [open_stream(headers=mine) for _ in range(LIMIT - 1)]
            opened.append(open_stream(params={"ticket": ticket(mine)}))  # a ticket's stream counts for its token

            refused = attempt(headers=mine)
            assert refused.status_code == 429, refused.text
            assert refused.headers["content-type"].startswith("application/json")
            assert refused.headers["retry-after"] == "5"
            detail = refused.json()["detail"]
            assert f"has {LIMIT} event streams open" in detail and f"MASE_EVENTS_PER_TOKEN={LIMIT}" in detail
            assert attempt(params={"ticket": ticket(mine)}).status_code == 429  # nor through a new ticket

            # other tokens are not affected: another operator, a robot of the scenario
            open_stream(headers=theirs)
            robot = client.post(f"/api/v1/scenarios/{DEMO}/tokens", headers=mine, json={"robot_id": "tb1"}).json()
            open_stream(headers={"Authorization": f"Bearer {robot['token']}"})
            open_stream(params={"ticket": ticket(theirs)})

            # the refusals did not disturb the token's open streams: each gets the next event
            assert client.patch(f"/api/v1/scenarios/{DEMO}", headers=mine, json={"name": "renamed"}).status_code == 200
            for _, events in opened:
                data = next(d for _, k, d in events if k == "scenario")
                assert data["name"] == "renamed"

            # its client closes one: the server sees it and frees the slot, one slot
            opened.pop()[0].close()
            deadline = time.monotonic() + 10
            while (again := attempt(headers=mine)).status_code != 200:
                assert again.status_code == 429, again.text
                assert time.monotonic() < deadline, "a closed stream's slot was not freed within 10 s"
                time.sleep(0.1)
            assert attempt(headers=mine).status_code == 429  # three open again: the limit
    finally:
        process.stop()
