"""Retention of the robots' state reports by age (issue 12 item 3, `MASE_OBSERVATIONS_KEEP=12h`
and the like): reports older than the age leave the history, recent ones stay, and the live
monitor (kept incrementally, never recounted from the history) is exactly what it would be
without any pruning, also for a robot whose latest report is older than the age.
Runs on PostgreSQL too when TEST_DATABASE_URL is set."""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import Maintenance, create_app
from api.models import ObservationRow, RobotStateRow
from api.settings import Retention, Settings
from service_support import AUTH, OPERATOR, fresh_database_url, wait_until_planned

pytestmark = pytest.mark.service


@pytest.mark.parametrize("text, keep", [
    ("30s", Retention(seconds=30)), ("15m", Retention(seconds=900)), ("12h", Retention(seconds=43200)),
    ("7d", Retention(seconds=7 * 86400)), (" 2H ", Retention(seconds=7200)), ("100000", Retention(count=100000)),
    ("all", Retention()), ("0", Retention()), ("00", Retention()), ("", Retention()),
])
def test_retention_syntax(monkeypatch, text, keep):
    monkeypatch.setenv("MASE_OBSERVATIONS_KEEP", text)
    assert Settings.from_env().observations_keep == keep


@pytest.mark.parametrize("text", ["\uff11\uff12", "0s", "1w", "1.5h", "-1h", "h", "30 s", "1e3", "12hours", "-5"])
def test_bad_retention_is_named(monkeypatch, text):
    monkeypatch.setenv("MASE_OBSERVATIONS_KEEP", text)
    with pytest.raises(ValueError, match="MASE_OBSERVATIONS_KEEP must be a count"):
        Settings.from_env()


@pytest.fixture
def settings(tmp_path):
    return Settings(database_url=fresh_database_url(tmp_path), tokens_file=tmp_path / "no-tokens",
                    extra_operator_tokens=(OPERATOR,), load_shipped=False, progress_interval=0.0)


def scenario(client) -> tuple[int, dict]:
    """A planned salp-demo scenario; per robot, (states out of the reef, a state in the reef
    carrying sample A): two robots in the reef with sample A make an NSE."""
    created = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    wait_until_planned(client, sid)
    states = {}
    for robot in ("tb1", "tb2"):
        policy = client.get(f"/api/v1/scenarios/{sid}/robots/{robot}/policy", headers=AUTH).json()
        zone, sample = policy["features"].index("coral"), policy["features"].index("sample")
        reef, a = policy["feature_values"][zone].index("reef"), policy["feature_values"][sample].index("A")
        outside = [s for s in policy["states"] if s[zone] != reef]
        inside = next(s for s, done in zip(policy["states"], policy["terminal"])
                      if s[zone] == reef and s[sample] == a and not done)
        states[robot] = (outside, inside)
    return sid, states


def report(client, sid: int, robot: str, state) -> dict:
    response = client.post(f"/api/v1/scenarios/{sid}/robots/{robot}/state", headers=AUTH, json={"state": state})
    assert response.status_code == 200, response.text
    return response.json()


def history(client, sid: int) -> list[dict]:
    """The whole kept history, page by page."""
    records, after = [], 0
    while after is not None:
        page = client.get(f"/api/v1/scenarios/{sid}/observations", headers=AUTH, params={"after": after, "limit": 3})
        assert page.status_code == 200, page.text
        records += page.json()["observations"]
        after = page.json()["next_after"]
    return records


def monitor(client, sid: int) -> dict:
    """The live monitor without what differs between two scenarios fed the same reports."""
    answer = client.get(f"/api/v1/scenarios/{sid}/monitor", headers=AUTH).json()
    answer.pop("scenario_id")
    for robot in answer["robots"]:
        robot.pop("received_at")
    return answer


def test_age_retention_drops_old_reports_and_keeps_recent_ones_and_the_monitor(settings, monkeypatch):
    """Two scenarios get the same reports; in one the older reports (all of tb2's, and tb1's
    first ones) are made two hours old and the maintenance prunes with a one-hour age. Its
    history is then the recent reports only, and its monitor equals the other's, before
    and after one more report."""
    monkeypatch.setenv("MASE_OBSERVATIONS_KEEP", "1h")
    keep = Settings.from_env().observations_keep
    assert keep == Retention(seconds=3600)
    settings = replace(settings, observations_keep=keep)
    with TestClient(create_app(settings)) as client:
        (pruned, states), (twin, _) = scenario(client), scenario(client)
        (out1, reef1), (out2, reef2) = states["tb1"], states["tb2"]
        # tb2's reports come first and end in the reef; then tb1 goes in and out of the reef
        sequence = [("tb2", out2[0]), ("tb2", out2[1]), ("tb2", reef2), ("tb1", out1[0]), ("tb1", out1[1]),
                    ("tb1", out1[2]), ("tb1", reef1), ("tb1", out1[3]), ("tb1", reef1)]
        joint = []
        for robot, state in sequence:
            joint.append(report(client, pruned, robot, state)["joint_penalty"])
            assert report(client, twin, robot, state)["joint_penalty"] == joint[-1]
        assert joint[-1] > 0 and joint[-2] == 0  # both in the reef with sample A at the end
        before = history(client, pruned)
        assert [(r["robot_id"], r["state"]) for r in before] == [(robot, state) for robot, state in sequence]

        old = datetime.now(timezone.utc) - timedelta(hours=2)
        with client.app.state.database.transaction() as session:
            session.execute(update(ObservationRow).where(ObservationRow.id.in_([r["id"] for r in before[:5]]))
                            .values(received_at=old))
            session.execute(update(RobotStateRow).where(RobotStateRow.scenario_id == pruned,
                                                        RobotStateRow.robot_id == "tb2").values(received_at=old))
        # the report times are history only: the live monitor does not depend on them
        assert monitor(client, pruned) == monitor(client, twin)

        Maintenance(client.app.state.database, client.app.state.feed, replace(settings, maintenance_interval=0))()
        kept = history(client, pruned)
        assert kept == before[5:]  # the same records, ids and times
        assert len(history(client, twin)) == len(sequence)  # the twin's reports are all recent: none pruned
        live = monitor(client, pruned)
        assert live == monitor(client, twin)
        assert live["observations"] == len(sequence) and live["reporting_robots"] == ["tb1", "tb2"]
        assert live["current_penalty"] == joint[-1]
        tb2 = client.get(f"/api/v1/scenarios/{pruned}/monitor", headers=AUTH).json()["robots"][1]
        assert tb2["robot_id"] == "tb2" and tb2["state"] == sequence[2][1]  # two hours old, still its latest

        # reports go on from the same counters
        for robot, state in (("tb2", out2[2]), ("tb1", reef1)):
            after = report(client, pruned, robot, state)["joint_penalty"]
            assert report(client, twin, robot, state)["joint_penalty"] == after
        assert monitor(client, pruned) == monitor(client, twin)
        assert monitor(client, pruned)["observations"] == len(sequence) + 2
        assert len(history(client, pruned)) == len(kept) + 2


def test_age_retention_runs_in_the_background_on_the_real_clock(settings, monkeypatch):
    """MASE_OBSERVATIONS_KEEP=3s with the maintenance every heartbeat (0.2 s): reports leave the
    history once three seconds old, without anyone asking; new ones are there meanwhile."""
    monkeypatch.setenv("MASE_OBSERVATIONS_KEEP", "3s")
    settings = replace(settings, observations_keep=Settings.from_env().observations_keep, maintenance_interval=0,
                       heartbeat_interval=0.2)
    with TestClient(create_app(settings)) as client:
        sid, states = scenario(client)
        outside = states["tb1"][0]
        first = [report(client, sid, "tb1", outside[i]) for i in range(3)]
        assert len(history(client, sid)) == 3
        sent = time.monotonic()
        deadline = sent + 30
        while history(client, sid):
            assert time.monotonic() < deadline, "the old reports were never pruned"
            time.sleep(0.1)
        assert time.monotonic() - sent >= 2.5  # not before their age (less the clock's grain)
        report(client, sid, "tb1", outside[3])
        recent = history(client, sid)
        assert [r["state"] for r in recent] == [outside[3]]
        live = client.get(f"/api/v1/scenarios/{sid}/monitor", headers=AUTH).json()
        assert live["observations"] == len(first) + 1 and live["reporting_robots"] == ["tb1"]
        assert live["robots"][0]["state"] == outside[3]
