"""Does the stored history slow robots' reports and the live monitor down? (issue 12)

    python -m bench.history [--rows 300000] [--requests 300]

In one process, two copies of the service app (`api.app.create_app`, in-process clients), each on
its own temporary SQLite database with the salp demo scenario: one with 100 stored observations,
one with `--rows` (100 reported, the rest bulk-inserted into the history table). Times `POST
.../robots/tb1/state` and `GET .../monitor` on both, their requests interleaved one by one so
that both see the same load, and prints the medians and their ratio. The monitor keeps its counts incrementally (a robot's latest state and the count
table n_{z,v}), so the ratio should be about 1; a query that scanned the history would show here.
The in-process client adds the same fixed cost to both sides: compare the two sides, not the
absolute figures with `bench.load_service`'s.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

TOKEN = "history-benchmark-operator"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _service(client, rows: int):
    """Create the salp demo scenario on `client`'s app, wait for its plan, store `rows` observations
    (100 through the API, the rest bulk-inserted); its (post_state, get_monitor, stored rows)."""
    from sqlalchemy import func, insert, select

    from api.models import ObservationRow

    created = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2})
    created.raise_for_status()
    sid = created.json()["id"]
    deadline = time.monotonic() + 300
    while client.get(f"/api/v1/scenarios/{sid}/plan", headers=AUTH).json()["status"] != "succeeded":
        if time.monotonic() > deadline:
            raise SystemExit("the scenario was not planned in 300 s")
        time.sleep(0.1)
    states = client.get(f"/api/v1/scenarios/{sid}/robots/tb1/penalties", headers=AUTH).json()["states"]
    k = [0]

    def post_state():
        k[0] += 1
        response = client.post(f"/api/v1/scenarios/{sid}/robots/tb1/state", headers=AUTH,
                               json={"state": states[k[0] % len(states)]})
        assert response.status_code == 200, response.text

    def get_monitor():
        response = client.get(f"/api/v1/scenarios/{sid}/monitor", headers=AUTH)
        assert response.status_code == 200, response.text

    for _ in range(min(rows, 100)):
        post_state()
    engine = client.app.state.database.engine
    now = datetime.now(timezone.utc)
    batch = 50_000
    for start in range(100, rows, batch):  # a transaction per batch: the service's own writes wait less
        with engine.begin() as connection:
            connection.execute(insert(ObservationRow), [
                {"scenario_id": sid, "robot_id": "tb2", "state": states[i % len(states)],
                 "state_index": i % len(states), "joint_penalty": 0.0, "received_at": now}
                for i in range(start, min(rows, start + batch))])
    with engine.connect() as connection:
        stored = connection.scalar(select(func.count()).select_from(ObservationRow))
    return post_state, get_monitor, stored


def measure(urls: tuple[str, str], rows: int, requests: int, tokens_file: Path):
    """Two services side by side, one with 100 stored observations and one with `rows`; their requests
    interleaved one by one, so that both see the same load. Median seconds per request kind."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    def app(url):
        return create_app(Settings(database_url=url, tokens_file=tokens_file, extra_operator_tokens=(TOKEN,),
                                   load_shipped=False, progress_interval=0.0))

    with TestClient(app(urls[0])) as small_client, TestClient(app(urls[1])) as large_client:
        small = _service(small_client, 100)
        large = _service(large_client, rows)
        times = {(name, side): [] for name in ("POST .../state", "GET .../monitor") for side in (0, 1)}
        for i in range(10 + requests):
            for side, (post_state, get_monitor, _) in enumerate((small, large)):
                for name, call in (("POST .../state", post_state), ("GET .../monitor", get_monitor)):
                    start = time.perf_counter()
                    call()
                    if i >= 10:  # the first ten are warm-up
                        times[name, side].append(time.perf_counter() - start)
    figures = [(name, statistics.median(times[name, 0]), statistics.median(times[name, 1]))
               for name in ("POST .../state", "GET .../monitor")]
    return small[2], large[2], figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="observations added to the history")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per figure")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mase-history-") as tmp:
        urls = (f"sqlite:///{Path(tmp) / 'small.db'}", f"sqlite:///{Path(tmp) / 'large.db'}")
        small_rows, large_rows, figures = measure(urls, args.rows, args.requests, Path(tmp) / "no-tokens")
    print(f"stored observations before the timed requests: {small_rows} and {large_rows}; median of "
          f"{args.requests} requests each, the two services' requests interleaved (in-process client)")
    print(f"{'request':<18} {'ms at ' + str(small_rows):>12} {'ms at ' + str(large_rows):>14} {'ratio':>7}")
    for name, small, large in figures:
        print(f"{name:<18} {1000 * small:12.2f} {1000 * large:14.2f} {large / small:7.2f}")
    worst = max(large / small for _, small, large in figures)
    print(f"target: within 20 % ({'met' if worst <= 1.2 else 'not met'}: worst ratio {worst:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
