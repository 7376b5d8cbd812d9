"""`embeddb doctor` on real databases: each check can say OK, WARN and FAIL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

import embeddb
from embeddb import doctor
from embeddb.backup import create_backup
from embeddb.cache.placement import default_directory
from embeddb.cli import cli

ROOT = Path(__file__).parent.parent


@pytest.fixture
def migrations(tmp_path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", folder)
    return folder


@pytest.fixture
def migrated(cli_db_url, migrations):
    db = embeddb.connect(cli_db_url)
    embeddb.migrate.up(db, migrations, backup=False)
    yield db
    db.close()


def run(url: str, *args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, ["--db", url, "doctor", "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def by_name(report: dict, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]


def test_a_healthy_database_passes(migrated, cli_db_url, migrations, tmp_path):
    create_backup(migrated, str(tmp_path / "backups"))
    code, report = run(cli_db_url, "--migrations", str(migrations),
                       "--backups", str(tmp_path / "backups"))
    assert code == 0 and report["ok"]
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["migrations"] == "OK" and statuses["backups"] == "OK"
    if migrated.backend == "sqlite":
        assert statuses["pragmas"] == statuses["quick_check"] == statuses["disk"] == "OK"
    else:
        assert statuses["connections"] == statuses["long_transactions"] == "OK"
    assert all(c["fix"] for c in report["checks"] if c["status"] != "OK")


def test_an_edited_migration_fails_and_pending_warns(migrated, cli_db_url, migrations):
    variant = "sqlite" if migrated.backend == "sqlite" else "postgres"
    edited = migrations / f"0002_marketplace.{variant}.up.sql"
    edited.write_text(edited.read_text() + "\n-- changed later\n")
    (migrations / "0099_more.up.sql").write_text("CREATE TABLE more_things (id INTEGER);\n")
    (migrations / "0099_more.down.sql").write_text("DROP TABLE more_things;\n")
    code, report = run(cli_db_url, "--migrations", str(migrations), "--no-verify")
    assert code == 1 and not report["ok"]
    checks = {c["status"]: c for c in by_name(report, "migrations")}
    assert "0002_marketplace" in checks["FAIL"]["message"]
    assert "0099_more" in checks["WARN"]["message"] and checks["WARN"]["fix"] == \
        "embeddb migrate up"
    text = CliRunner().invoke(cli, ["--db", cli_db_url, "doctor", "--migrations",
                                    str(migrations), "--no-verify"])
    assert text.exit_code == 1 and "FAIL  migrations" in text.output
    assert "fix: restore the applied text" in text.output


def test_no_backup_warns_and_a_damaged_one_fails(migrated, cli_db_url, migrations, tmp_path):
    folder = tmp_path / "backups"
    code, report = run(cli_db_url, "--migrations", str(migrations), "--backups", str(folder))
    assert code == 0 and by_name(report, "backups")[0]["status"] == "WARN"
    backup = create_backup(migrated, str(folder))
    path = Path(backup.path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, report = run(cli_db_url, "--migrations", str(migrations), "--backups", str(folder))
    assert code == 1 and by_name(report, "backups")[0]["status"] == "FAIL"


def test_a_foreign_key_without_an_index_is_named_with_its_fix(cli_db_url):
    db = embeddb.connect(cli_db_url)
    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, "
                   "parent_id INTEGER REFERENCES parent (id))")
    [check] = [c for c in doctor.run(db) if c.name == "fk_indexes"]
    assert check.status == "WARN" and "child(parent_id)" in check.message
    db.execute_sql(check.fix)
    [check] = [c for c in doctor.run(db) if c.name == "fk_indexes"]
    assert check.status == "OK"
    db.close()


def test_a_long_transaction_is_reported(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    other = psycopg2.connect(pg_schema_url.split("?")[0])
    try:
        with other.cursor() as cur:
            cur.execute("SELECT 1")  # psycopg2 opened a transaction and keeps it open
        [check] = [c for c in doctor.run(db, doctor.Options(long_transaction=0.0))
                   if c.name == "long_transactions"]
        assert check.status == "WARN" and f"pid {other.get_backend_pid()}" in check.message
    finally:
        other.close()
        db.close_all()


def test_a_cache_directory_others_can_read_warns(sqlite_file_url, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    directory = Path(default_directory(db))
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    [check] = [c for c in doctor.run(db) if c.name == "cache"]
    assert check.status == "WARN" and check.fix == f"chmod 700 {directory}"
    directory.chmod(0o700)
    assert [c for c in doctor.run(db) if c.name == "cache"][0].status == "OK"


def test_a_broken_check_is_a_fail_not_a_crash(sqlite_file_url, monkeypatch):
    db = embeddb.connect(sqlite_file_url)

    def broken(_db, _options):
        raise RuntimeError("boom")

    monkeypatch.setitem(doctor._CHECKS, "sqlite", [broken, *doctor._CHECKS["sqlite"][:1]])
    checks = doctor.run(db)
    assert checks[0].status == "FAIL" and "boom" in checks[0].message
    assert checks[1].name == "pragmas"


def test_an_unreachable_database_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'none.db'}", "doctor",
                                      "--json"])
    assert result.exit_code == 1
    assert "no database at" in json.loads(result.stdout)["error"]


def test_postgres_unused_indexes_and_pg_stat_statements(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    db.execute_sql("CREATE TABLE busy (id SERIAL PRIMARY KEY, a INTEGER, b INTEGER)")
    db.execute_sql("CREATE INDEX busy_b ON busy (b)")
    [check] = [c for c in doctor.run(db) if c.name == "unused_indexes"]
    assert check.status == "OK"  # an index of a table nobody scanned is not "unused"
    with db.atomic():
        for i in range(doctor.USED_TABLE):
            db.execute_sql("SELECT count(*) FROM busy WHERE a = %s", (i,)).fetchone()
    db.execute_sql("SELECT pg_stat_force_next_flush()")
    [check] = [c for c in doctor.run(db) if c.name == "unused_indexes"]
    assert check.status == "WARN" and "busy_b on busy" in check.message
    assert 'DROP INDEX "busy_b"' in check.fix
    [check] = [c for c in doctor.run(db) if c.name == "pg_stat_statements"]
    assert check.status == "OK" and ("not installed" in check.message
                                     or "installed" in check.message)
    db.close_all()


def test_a_corrupt_file_fails_quick_check_with_the_restore_fix(tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'c.db'}")
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    db.execute_sql("CREATE INDEX t_x ON t (x)")
    db.execute_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
                   "INSERT INTO t (x) SELECT hex(randomblob(20)) FROM n")
    db.close()
    with open(tmp_path / "c.db", "r+b") as fh:  # pages 4-7 overwritten: malformed
        fh.seek(4096 * 3)
        fh.write(b"\xff" * 4096 * 4)
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'c.db'}", "doctor",
                                      "--json"])
    assert result.exit_code == 1
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "FAIL"]
    assert check["name"] == "quick_check" and "malformed" in check["message"]
    assert check["fix"].startswith("restore the newest verified backup (embeddb backup restore")


def test_a_reader_that_starves_checkpoints_is_named(tmp_path):
    """A read transaction left open pins its snapshot: the WAL cannot be checkpointed past it
    and grows; doctor says so (and says OK once the reader is gone and a checkpoint ran)."""
    import sqlite3

    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql("CREATE TABLE t (v BLOB)")
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds its snapshot
    for _ in range(40):
        with db.atomic():
            for _ in range(100):
                db.execute_sql("INSERT INTO t VALUES (randomblob(3000))")
    [check] = [c for c in doctor.run(db) if c.name == "wal"]
    assert check.status == "WARN" and "a reader holding an old snapshot" in check.message
    reader.execute("COMMIT")
    reader.close()
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    [check] = [c for c in doctor.run(db) if c.name == "wal"]
    assert check.status == "OK", check
    db.close()


def test_the_reference_schema_has_an_index_on_every_foreign_key(migrated):
    """`embeddb setup && embeddb doctor` must not warn about embeddb's own example app."""
    [check] = [c for c in doctor.run(migrated) if c.name == "fk_indexes"]
    assert check.status == "OK", check.message
