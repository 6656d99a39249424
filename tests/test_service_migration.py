"""Upgrading a populated database from the schema before ids were made never-reused (revision
0001; 0002 rebuilt the SQLite tables AUTOINCREMENT) to the newest (issue 12 item 1).

The database is made with Alembic at 0001 and filled as a service of that time left it:
scenarios with rule sets, runs with their robots' policies and penalties, a robot token, state
reports; then the newest scenario is deleted with its run, the newest of all. The service's own
start-up upgrade (api.db.Database.migrate) brings it to the head. Afterwards:
- every row keeps its id and its links (runs to scenarios, robots to runs, tokens, reports);
- every never-reused table is AUTOINCREMENT on SQLite, its sequence at least its largest id;
- what is deleted after the upgrade never lends its id to a new scenario or run;
- the upgraded scenario serves its own newest run's penalties to its old robot token.

What it cannot promise: on SQLite, a row deleted *before* the upgrade left no trace (without
AUTOINCREMENT SQLite remembers no id beyond the largest present), so its id may be handed out
again after the upgrade; PostgreSQL's sequences never went back, so there it is not.
Runs on PostgreSQL too when TEST_DATABASE_URL is set."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, create_engine, delete, func, inspect, select, text

from api.app import create_app
from api.db import Database, alembic_config
from api.fleets import encode_array
from api.models import Base
from api.routers.scenarios import new_scenario
from api.schemas import ScenarioCreate
from api.security import hash_token
from api.settings import Settings
from metareasoner.mitigation import Fleet
from planner.maps import load_map
from planner.scenario import generate_scenario
from service_support import AUTH, OPERATOR, ROOT, fresh_database_url, wait_for_run, wait_until_planned

pytestmark = pytest.mark.service
TOKEN = "an-old-robot-token-of-scenario-1"
#: tables whose ids are never reused (api.models); those of 0001 are rebuilt by 0002
NEVER_REUSED_TABLES = sorted(t.name for t in Base.metadata.sorted_tables
                             if t.dialect_kwargs.get("sqlite_autoincrement"))


def marker(run_id: int, n: int) -> np.ndarray:
    """A local penalty that says which run it belongs to."""
    return np.full(n, 1000.0 + run_id) + np.arange(n) / 1000


def populate_at_0001(url: str) -> dict:
    """Fill a database at revision 0001 (its own tables, reflected) as the service of that
    time did, the ids handed out by the database; then delete the newest scenario and its
    run. Returns the ids left."""
    engine = create_engine(url)
    tables = MetaData()
    tables.reflect(engine)
    t = tables.tables
    now = datetime.now(timezone.utc)
    settings = Settings(load_shipped=False)
    naive = Fleet.plan(generate_scenario(load_map(ROOT / "maps/salp/salp-demo.map"), 2, seed=0, slack=2.0),
                       backend="serial")

    def insert(connection, table: str, **values) -> int:
        return connection.execute(t[table].insert().values(**values)).inserted_primary_key[0]

    made = {name: [] for name in ("scenarios", "rule_versions", "runs", "run_robots", "robot_tokens", "observations")}
    with engine.begin() as connection:
        for seed in range(3):
            row = new_scenario(settings, ScenarioCreate(map="salp-demo", robots=2, seed=seed))
            sid = insert(connection, "scenarios", name=f"old {seed}", map_name=row.map_name, map_text=row.map_text,
                         domain=row.domain, n_robots=2, seed=seed, slack=2.0, tasks=row.tasks, created_at=now)
            made["scenarios"].append(sid)
            version = row.rule_versions[0]
            made["rule_versions"].append(insert(connection, "rule_versions", scenario_id=sid, version=1,
                                                rules=version.rules, min_count=version.min_count, note=version.note,
                                                created_at=now))
        # two runs of the first scenario, one of each other; a summary of that time (rounds
        # as a number, which 0003 turns into rounds_performed)
        summary = {"nse_before": 3.0, "nse_after": 1.0, "nse_state_rate_before": 0.2, "nse_state_rate_after": 0.1,
                   "updated": ["tb1"], "rounds": 2, "seconds": {"plan": 0.1}}
        first, second, third = made["scenarios"]
        for sid in (first, first, second, third):
            run_id = insert(connection, "runs", scenario_id=sid, rule_version=1, method="recon",
                            params={"update_fraction": 1.0, "rounds": 2, "episodes": 10, "seed": 0},
                            status="succeeded", phase="done", progress=1.0, attempts=1, summary=summary,
                            created_at=now, started_at=now, finished_at=now)
            made["runs"].append(run_id)
            for position, plan in enumerate(naive.plans):
                made["run_robots"].append(insert(
                    connection, "run_robots", run_id=run_id, position=position, robot_id=plan.task.robot_id,
                    blame=1.0, updated=position == 0, task_regret=0.0, slack=2.0,
                    policy=encode_array(plan.policy.astype("int16")),
                    local_penalty=encode_array(marker(run_id, plan.mdp.n_states))))
        for sid, secret in ((first, TOKEN), (third, "a-token-of-the-third-scenario")):
            made["robot_tokens"].append(insert(connection, "robot_tokens", scenario_id=sid, robot_id="tb1",
                                               token_hash=hash_token(secret), created_at=now))
        for report in range(1, 4):
            made["observations"].append(insert(
                connection, "observations", scenario_id=first, robot_id="tb1",
                state=naive.plans[0].mdp.states[report].tolist(), state_index=report, joint_penalty=0.0,
                received_at=now))
        assert made["scenarios"] == [1, 2, 3] and made["runs"] == [1, 2, 3, 4]
        # the newest scenario goes, with its run (the newest run) and all that hangs off them
        connection.execute(delete(t["run_robots"]).where(t["run_robots"].c.run_id == 4))
        connection.execute(delete(t["runs"]).where(t["runs"].c.id == 4))
        for child in ("rule_versions", "robot_tokens", "observations"):
            connection.execute(delete(t[child]).where(t[child].c.scenario_id == 3))
        connection.execute(delete(t["scenarios"]).where(t["scenarios"].c.id == 3))
        if engine.dialect.name == "sqlite":  # no table remembers an id: the next insert would take 3
            assert connection.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")) == 0
            assert connection.scalar(select(func.max(t["scenarios"].c.id))) == 2
    engine.dispose()
    return {"scenarios": [1, 2], "rule_versions": [1, 2], "runs": [1, 2, 3], "run_robots": [1, 2, 3, 4, 5, 6],
            "robot_tokens": [made["robot_tokens"][0]], "observations": made["observations"]}


def ids(connection, table: str) -> list[int]:
    return list(connection.scalars(text(f"SELECT id FROM {table} ORDER BY id")))


def test_upgrade_of_a_populated_0001_database_keeps_ids_and_never_reuses_one(tmp_path):
    url = fresh_database_url(tmp_path)
    command.upgrade(alembic_config(url), "0001")
    kept = populate_at_0001(url)

    database = Database(url)
    database.migrate()  # what `mase serve` does at start-up
    sqlite = database.dialect == "sqlite"
    with database.engine.connect() as connection:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == head
        for table, expected in kept.items():
            assert ids(connection, table) == expected, table
        assert [tuple(r) for r in connection.execute(text("SELECT id, scenario_id FROM runs ORDER BY id"))] == \
            [(1, 1), (2, 1), (3, 2)]
        assert [tuple(r) for r in connection.execute(text("SELECT id, run_id FROM run_robots ORDER BY id"))] == \
            [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3)]
        # 0004: robots keep following the newest succeeded run of their scenario
        assert [tuple(r) for r in connection.execute(text("SELECT id, deployed_run_id FROM scenarios ORDER BY id"))] \
            == [(1, 2), (2, 3)]
        if sqlite:
            names = set(inspect(connection).get_table_names())
            for table in NEVER_REUSED_TABLES:
                assert table in names, table
                create = connection.scalar(text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"),
                                           {"t": table})
                assert "AUTOINCREMENT" in create.upper(), f"{table} is not AUTOINCREMENT after the upgrade"
                largest = connection.scalar(text(f"SELECT max(id) FROM {table}"))
                sequence = connection.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
                if largest is not None:
                    assert sequence is not None and sequence >= largest, (table, sequence, largest)
    database.dispose()

    settings = Settings(database_url=url, tokens_file=tmp_path / "no-tokens", extra_operator_tokens=(OPERATOR,),
                        load_shipped=False, progress_interval=0.0)
    with TestClient(create_app(settings)) as client:
        assert [s["id"] for s in client.get("/api/v1/scenarios", headers=AUTH).json()] == [1, 2]
        old = client.get("/api/v1/runs/2", headers=AUTH).json()
        assert old["scenario_id"] == 1 and old["deployed"] is True
        assert old["summary"]["rounds"] == [] and [r["id"] for r in old["robots"]] == ["tb1", "tb2"]
        page = client.get("/api/v1/scenarios/1/observations", headers=AUTH).json()
        assert [r["id"] for r in page["observations"]] == [1, 2, 3]
        # the old scenario is planned in the background and its old robot token still works:
        # the robot is served its scenario's newest run, run 2, not run 1 nor anything else
        wait_until_planned(client, 1)
        robot = {"Authorization": f"Bearer {TOKEN}"}
        served = client.get("/api/v1/scenarios/1/robots/tb1/penalties", headers=robot)
        assert served.status_code == 200, served.text
        assert served.json()["run_id"] == 2
        assert served.json()["penalties"] == marker(2, len(served.json()["states"])).tolist()

        # the newest scenario and run are deleted after the upgrade: never handed out again
        assert client.delete("/api/v1/scenarios/2", headers=AUTH).status_code == 204
        deleted_scenarios, deleted_runs = {2}, {3}
        if not sqlite:  # PostgreSQL's sequences never forgot the ids deleted before the upgrade either
            deleted_scenarios, deleted_runs = deleted_scenarios | {3}, deleted_runs | {4}
        created = client.post("/api/v1/scenarios", headers=AUTH, json={"map": "salp-demo", "robots": 2})
        assert created.status_code == 201, created.text
        new_id = created.json()["id"]
        assert new_id > max(kept["scenarios"]) and new_id not in deleted_scenarios, new_id
        run = client.post(f"/api/v1/scenarios/{new_id}/runs", headers=AUTH, json={"method": "naive"})
        assert run.status_code == 202, run.text
        run_id = run.json()["id"]
        assert run_id > max(kept["runs"]) and run_id not in deleted_runs, run_id
        assert wait_for_run(client, run_id)["status"] == "succeeded"
        # a run of an old scenario too
        again = client.post("/api/v1/scenarios/1/runs", headers=AUTH, json={"method": "naive"}).json()
        assert again["id"] > run_id
        wait_for_run(client, again["id"])
        # the deleted scenario went with all its rows: the rebuilt tables still cascade
        with client.app.state.database.engine.connect() as connection:
            for table in ("rule_versions", "runs", "observations", "robot_tokens", "monitors", "fleet_plans"):
                left = connection.scalar(text(f"SELECT count(*) FROM {table} WHERE scenario_id = 2"))
                assert left == 0, table
            assert connection.scalar(text("SELECT count(*) FROM run_robots WHERE run_id = 3")) == 0
