"""Maintenance tasks on SQLite files, :memory: and PostgreSQL, and their CLI."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

import embeddb
import embeddb.migrate
from embeddb import maintenance, retention
from embeddb.cli import cli
from embeddb.errors import MaintenanceError
from embeddb.models import utcnow
from embeddb.reference.models import ApiKey, Session, ToolExecution, User
from embeddb.repository import Repository

OWNER = "0" * 31 + "1"
MIGRATIONS = Path(__file__).parent.parent / "migrations"


def _create_cleanup_tables(db) -> None:
    embeddb.migrate.up(db, MIGRATIONS, backup=False)


def _fill(db, now) -> None:
    day = timedelta(days=1)
    users = Repository(User, db)
    users.bulk_create([{"id": OWNER, "wallet_address": "0xowner", "chain_id": 1}])
    Repository(Session, db).bulk_create(  # 2 expired, 1 ~now, 2 future
        {"user": OWNER, "token_hash": f"t{i}", "expires_at": now - day * i} for i in range(-2, 3))
    Repository(ApiKey, db).bulk_create(
        {"user": OWNER, "name": "k", "key_hash": f"k{i}", "prefix": "edb", "revoked_at": revoked,
         "expires_at": expires}
        for i, (revoked, expires) in enumerate([
            (now - day * 40, None),  # revoked long ago: goes
            (now - day * 5, None),  # revoked recently: grace period, stays
            (None, now - day * 31),  # expired past the grace: goes
            (None, now + day),  # valid: stays
            (None, None),  # never expires: stays
        ]))
    Repository(ToolExecution, db).bulk_create(
        {"tool_id": "t", "created_at": now - day * d} for d in (1, 89, 91, 200, 365))


def _count(db, table: str) -> int:
    return db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_cleanup_dry_run_then_batched_delete(db) -> None:
    now = utcnow()
    _create_cleanup_tables(db)
    _fill(db, now)
    dry = maintenance.cleanup(db, now=now + timedelta(seconds=1), dry_run=True)
    expected = {"expired sessions": 3, "revoked api keys": 1, "expired api keys": 1,
                "old tool executions": 3}
    assert dry["deleted"] == expected and dry["skipped"] == []
    assert _count(db, "sessions") == 5  # nothing deleted by a dry run

    batches = []
    done = maintenance.cleanup(db, now=now + timedelta(seconds=1), batch_size=1,
                               progress=lambda table, n: batches.append((table, n)))
    assert done["deleted"] == expected
    assert batches.count(("expired sessions", 3)) == 2  # three batches of one, then an empty one
    assert (_count(db, "sessions"), _count(db, "api_keys"), _count(db, "tool_executions")) == (
        2, 3, 2)
    assert maintenance.cleanup(db, now=now + timedelta(seconds=1))["deleted"] == {
        name: 0 for name in expected}


def test_cleanup_skips_missing_tables(db) -> None:
    result = maintenance.cleanup(db)
    assert result["skipped"] == ["expired sessions", "revoked api keys", "expired api keys",
                                 "old tool executions"]
    assert result["deleted"] == {}


def test_vacuum_analyze_optimize_integrity(db) -> None:
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with db.atomic():
        for i in range(200):
            db.execute_sql(f"INSERT INTO t VALUES ({db.param}, {db.param})", (i, "x" * 200))
    db.execute_sql("DELETE FROM t WHERE id >= 20")
    vacuumed = maintenance.vacuum(db)
    if db.backend == "sqlite":  # VACUUM rebuilds the file without the deleted rows
        assert vacuumed["size_after"] < vacuumed["size_before"]
    else:  # PostgreSQL's VACUUM keeps the pages (it may even add the visibility map)
        assert vacuumed["size_after"] > 0 and vacuumed["size_before"] > 0
    assert maintenance.analyze(db)["task"] == "analyze"
    assert maintenance.optimize(db)["task"] == "optimize"
    report = maintenance.integrity(db)
    assert report["ok"] is True and report["problems"] == [] and report["checks"]


def test_checkpoint_reports_wal_sizes(sqlite_file_url: str) -> None:
    db = embeddb.connect(sqlite_file_url)
    db.execute_sql("CREATE TABLE t (x)")
    with db.atomic():
        for i in range(500):
            db.execute_sql("INSERT INTO t VALUES (?)", (str(i) * 50,))
    result = maintenance.checkpoint(db)
    assert result["wal_bytes_before"] > 0
    assert result["wal_bytes_after"] == 0 and result["complete"] is True


@pytest.mark.parametrize("kind", ["sqlite_memory", "postgresql"])
def test_checkpoint_on_memory_and_postgres(kind: str, request: pytest.FixtureRequest) -> None:
    url = "sqlite:///:memory:" if kind == "sqlite_memory" else request.getfixturevalue(
        "pg_schema_url")
    db = embeddb.connect(url)
    result = maintenance.checkpoint(db)
    assert result["task"] == "checkpoint"


def test_integrity_finds_foreign_key_violation_and_cli_exits_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    db = embeddb.connect(url, )
    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id REFERENCES parent)")
    db.execute_sql("PRAGMA foreign_keys = OFF")
    db.execute_sql("INSERT INTO child VALUES (1, 99)")
    db.execute_sql("PRAGMA foreign_keys = ON")
    report = maintenance.integrity(db)
    assert report["ok"] is False and "child" in report["problems"][0]
    db.close()
    result = CliRunner().invoke(cli, ["--db", url, "maintenance", "integrity"])
    assert result.exit_code == 1 and "foreign key violation" in result.output
    as_json = CliRunner().invoke(cli, ["--db", url, "maintenance", "integrity", "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["ok"] is False


@pytest.mark.parametrize("task", ["vacuum", "analyze", "optimize", "checkpoint", "integrity"])
def test_cli_tasks(cli_db_url: str, task: str) -> None:
    embeddb.connect(cli_db_url).close()  # maintenance never creates a database
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "maintenance", task, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["task"] == task


def test_cli_cleanup_dry_run(sqlite_file_url: str, tmp_path) -> None:
    db = embeddb.connect(sqlite_file_url)
    _create_cleanup_tables(db)
    _fill(db, utcnow())
    db.close()
    policies = tmp_path / "retention.toml"
    policies.write_text('[[policy]]\nname = "runs"\ntable = "tool_executions"\n'
                        'column = "created_at"\nolder_than = "100d"\n')
    result = CliRunner().invoke(cli, ["--db", sqlite_file_url, "maintenance", "cleanup",
                                      "--dry-run", "--json", "--policies", str(policies)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deleted"] == {"runs": 2}
    policies.write_text('[[policy]]\nname = "runs"\ntable = "tool_executions"\n'
                        'column = "created_at"\nolder_than = "soon"\n')
    bad = CliRunner().invoke(cli, ["--db", sqlite_file_url, "maintenance", "cleanup",
                                   "--policies", str(policies)])
    assert bad.exit_code == 1 and "policy 'runs': age 'soon'" in bad.output


def _row_counts(db) -> dict[str, int]:
    return {t: db.execute_sql(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("sessions", "api_keys", "tool_executions")}


@pytest.mark.parametrize("option, value, message", [
    ("--policies", "HUGE",
     "age '999999999d' is too long: at most 36500d (100 years)"),
    ("--batch-size", "99999999999999999999",
     "Error: Invalid value for '--batch-size': 99999999999999999999 is not in the range "
     "1<=x<=1000000."),
])
def test_cli_cleanup_refuses_huge_values_alike_on_every_backend(cli_db_url, option, value,
                                                                message, tmp_path):
    if value == "HUGE":
        value = str(tmp_path / "retention.toml")
        Path(value).write_text('[[policy]]\nname = "runs"\ntable = "tool_executions"\n'
                               'column = "created_at"\nolder_than = "999999999d"\n')
    db = embeddb.connect(cli_db_url)
    _create_cleanup_tables(db)
    _fill(db, utcnow())
    before = _row_counts(db)
    db.close()
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "maintenance", "cleanup", option, value])
    assert result.exit_code in (1, 2)
    assert any(message in line for line in result.output.splitlines()), result.output
    if option == "--policies":
        assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output and "Overflow" not in result.output
    db = embeddb.connect(cli_db_url)
    assert _row_counts(db) == before
    db.close()


def test_cleanup_refuses_out_of_range_arguments(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    with pytest.raises(embeddb.errors.MaintenanceError, match="batch_size"):
        maintenance.cleanup(db, batch_size=10**20)
    with pytest.raises(embeddb.errors.MaintenanceError, match="older_than must be between"):
        maintenance.cleanup(db, [retention.Policy("p", "t", "c", timedelta(days=999_999_999))])
    db.close()


def test_cli_prune_refuses_a_huge_age_and_takes_a_huge_keep(tmp_path):
    result = CliRunner().invoke(cli, ["backup", "prune", "--dir", str(tmp_path),
                                      "--older-than", "99999999999d"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: age '99999999999d' is too long: at most 36500d "
                                     "(100 years)")
    result = CliRunner().invoke(cli, ["backup", "prune", "--dir", str(tmp_path),
                                      "--keep", "99999999999999999999"])
    assert result.exit_code == 0, result.output


# -- what the tasks did, not only what they were called ----------------------------------------


def _stats_rows(db) -> int:
    if db.backend == "sqlite":
        if not db.execute_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            return 0
        return db.execute_sql("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 't'").fetchone()[0]
    return db.execute_sql(
        "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = 't'"
    ).fetchone()[0]


@pytest.mark.parametrize("task", ["analyze", "optimize"])
def test_analyze_and_optimize_leave_planner_statistics(db, task: str) -> None:
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute_sql("CREATE INDEX t_v ON t (v)")
    with db.atomic():
        for i in range(300):
            db.execute_sql(f"INSERT INTO t VALUES ({db.param}, {db.param})", (i, f"v{i % 7}"))
    assert _stats_rows(db) == 0
    result = getattr(maintenance, task)(db)
    assert result["task"] == task
    assert _stats_rows(db) > 0


@pytest.fixture
def pg_db(pg_schema_url: str):
    database = embeddb.connect(pg_schema_url)
    yield database
    database.close_all()


def test_postgres_integrity_finds_an_invalid_index_and_a_not_valid_constraint(pg_db) -> None:
    pg_db.execute_sql("CREATE TABLE t (x INTEGER)")
    pg_db.execute_sql("INSERT INTO t VALUES (1), (1), (-5)")
    pg_db.execute_sql("ALTER TABLE t ADD CONSTRAINT t_positive CHECK (x > 0) NOT VALID")
    conn = pg_db.connection()
    conn.autocommit = True
    with conn.cursor() as cur, pytest.raises(psycopg2.errors.UniqueViolation):
        cur.execute("CREATE UNIQUE INDEX CONCURRENTLY t_unique ON t (x)")  # left INVALID
    report = maintenance.integrity(pg_db)
    assert report["ok"] is False
    assert sorted(report["problems"]) == [
        "constraint t_positive on t is NOT VALID (VALIDATE CONSTRAINT it)",
        "invalid index t_unique (rebuild it: REINDEX INDEX t_unique)",
    ]


def test_postgres_checkpoint_refused_without_the_right_role(pg_url: str, pg_schema_url: str) -> None:
    role = f"embeddb_norole_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        plain = embeddb.connect(pg_url.replace("postgres@", f"{role}@", 1))
        try:
            with pytest.raises(MaintenanceError, match="CHECKPOINT needs a superuser"):
                maintenance.checkpoint(plain)
        finally:
            plain.close_all()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP ROLE "{role}"')
        admin.close()
    done = maintenance.checkpoint(embeddb.connect(pg_schema_url))  # the superuser may
    assert done["complete"] is True and done["wal_bytes_before"] >= 0


@pytest.fixture
def pg_private_url(pg_url: str):
    """A database of its own (amcheck is installed per database, not per schema)."""
    name = f"embeddb_amc_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = pg_url.partition("?")
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_postgres_integrity_runs_amcheck_and_reports_a_broken_btree(pg_private_url) -> None:
    db = embeddb.connect(pg_private_url)
    try:
        db.execute_sql("CREATE TABLE t (x INTEGER)")
        db.execute_sql("INSERT INTO t SELECT generate_series(1, 2000)")
        report = maintenance.integrity(db)
        assert report["ok"] is True
        assert any("NOT checked: amcheck is not installed" in c for c in report["checks"])
        # an index built with one ordering whose comparison is then reversed: its pages are
        # out of order, exactly what amcheck exists to find (no catalog flag shows it)
        for statement in (
                "CREATE EXTENSION amcheck",
                "CREATE FUNCTION cmp(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS "
                "'SELECT CASE WHEN $1 < $2 THEN -1 WHEN $1 > $2 THEN 1 ELSE 0 END'",
                "CREATE OPERATOR CLASS odd_ops FOR TYPE int USING btree AS OPERATOR 1 <, "
                "OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, "
                "FUNCTION 1 cmp(int, int)",
                "CREATE INDEX t_x ON t (x odd_ops)"):
            db.execute_sql(statement)
        report = maintenance.integrity(db)
        assert report["ok"] is True, report["problems"]  # amcheck ran and found it sound
        assert "amcheck bt_index_check on every B-tree index" in report["checks"]
        db.execute_sql("CREATE OR REPLACE FUNCTION cmp(int, int) RETURNS int LANGUAGE sql "
                       "IMMUTABLE AS 'SELECT CASE WHEN $1 < $2 THEN 1 WHEN $1 > $2 THEN -1 "
                       "ELSE 0 END'")
        report = maintenance.integrity(db)
        assert report["ok"] is False
        [problem] = report["problems"]
        assert problem.startswith("index t_x: ") and "item order invariant violated" in problem
    finally:
        db.close_all()
