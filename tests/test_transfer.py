"""embeddb copy: the reference app's SQLite file into the real PostgreSQL and back, with its
own migrations folder; refusals; a copy killed with SIGKILL leaves the target untouched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import peewee
import psycopg2
import pytest

import embeddb
import embeddb.migrate
import embeddb.seed
from embeddb.models import UTCDateTimeField
from embeddb.reference.models import MODELS
from embeddb.transfer import CopyError, copy

REFERENCE = Path(embeddb.__file__).parent / "reference"
EMBEDDB = str(Path(sys.executable).parent / "embeddb")  # the console script, a real process
MIGRATIONS = REFERENCE / "migrations"
#: the reference app's newest migration
LATEST = max(int(p.name.split("_", 1)[0]) for p in MIGRATIONS.glob("[0-9]*"))


def _reference_sqlite(path: Path) -> str:
    url = f"sqlite:///{path}"
    db = embeddb.connect(url)
    embeddb.migrate.up(db, MIGRATIONS, backup=False)
    embeddb.seed.run(db, "dev", directory=REFERENCE / "seeds", atomic=True)
    db.close()
    return url


def _model_rows(url: str) -> dict[str, list[dict]]:
    """Every reference table as the models read it (Python values), in id order."""
    db = embeddb.connect(url)
    try:
        with db.bind_ctx(MODELS):
            return {
                m._meta.table_name: [
                    dict(o.__data__) for o in
                    (m.select_with_deleted() if hasattr(m, "select_with_deleted") else m.select())
                    .order_by(m._meta.primary_key)]
                for m in MODELS}
    finally:
        db.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EMBEDDB, *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> str:
    return _reference_sqlite(tmp_path_factory.mktemp("copy") / "app.db")


def test_sqlite_app_moves_to_postgresql_and_back(reference_file, pg_schema_url, tmp_path):
    """The same models read the same values on the target: the reference app's seeded file
    into PostgreSQL (its migrations run there first), and that back into a new SQLite file."""
    result = copy(reference_file, pg_schema_url, migrations=MIGRATIONS, batch_size=700)
    assert result.migrated and result.version == LATEST
    assert result.rows == sum(result.tables.values()) > 30_000
    assert result.skipped == ["services_fts_map"]  # SQLite's search helper: PG has its own
    original = _model_rows(reference_file)
    assert _model_rows(pg_schema_url) == original
    back = f"sqlite:///{tmp_path / 'back.db'}"
    again = copy(pg_schema_url, back, migrations=MIGRATIONS)
    assert again.tables == result.tables
    assert again.skipped == []  # PostgreSQL's search_vector is generated: never read
    assert _model_rows(back) == original
    db = embeddb.connect(back)  # full-text search works on the copy (its triggers filled it)
    name = db.execute_sql("SELECT name FROM services LIMIT 1").fetchone()[0]
    assert db.execute_sql("SELECT count(*) FROM services_fts_map").fetchone()[0] > 0
    db.close()
    assert name


def test_refusals_are_one_line_and_leave_the_target_alone(reference_file, tmp_path):
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with pytest.raises(CopyError, match=f"is at version {LATEST} and the target has no migrations"):
        copy(reference_file, target)
    copy(reference_file, target, migrations=MIGRATIONS)
    with pytest.raises(CopyError, match="already has rows.*--force"):
        copy(reference_file, target)
    with pytest.raises(embeddb.errors.IntegrityError):  # --force adds: the same ids clash
        copy(reference_file, target, force=True)
    assert _model_rows(target) == _model_rows(reference_file)  # nothing half-added
    proc = _cli("copy", "--from", reference_file, "--to", target, "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"ok": False, "error": proc.stderr.strip()[7:]}
    assert proc.stderr.startswith("Error: the target's table ") and proc.stderr.count("\n") == 1
    behind = f"sqlite:///{tmp_path / 'behind.db'}"
    db = embeddb.connect(behind)
    embeddb.migrate.up(db, MIGRATIONS, to=3, backup=False)
    db.close()
    with pytest.raises(CopyError, match=f"version {LATEST} and the target is at version 3"):
        copy(reference_file, behind)
    with pytest.raises(CopyError, match="batch size"):
        copy(reference_file, behind, batch_size=0)


def test_cli_json_reports_what_was_copied(reference_file, tmp_path):
    proc = _cli("copy", "--from", reference_file, "--to", f"sqlite:///{tmp_path / 'c.db'}",
                "--migrations", str(MIGRATIONS), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["version"] == LATEST and out["rows"] == sum(out["tables"].values())
    assert out["tables"]["transactions"] == 20_000


def test_sigkill_mid_copy_leaves_the_target_untouched_and_a_rerun_completes(
        tmp_path, pg_schema_url):
    """One transaction on the target: killed while rows are flowing, the target has its
    migrated tables and none of the rows; the same command run again copies everything."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_items.up.sql").write_text(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL, flag BOOLEAN);\n")
    (folder / "0001_items.down.sql").write_text("DROP TABLE items;\n")
    source = tmp_path / "big.db"
    db = embeddb.connect(f"sqlite:///{source}")
    embeddb.migrate.up(db, folder, backup=False)
    db.close()
    conn = sqlite3.connect(source)
    conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                     ((i, f"item {i}", i % 2) for i in range(1, 400_001)))
    conn.commit()
    conn.close()
    args = [EMBEDDB, "copy", "--from", f"sqlite:///{source}",
            "--to", pg_schema_url, "--migrations", str(folder), "--batch-size", "500"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("copying items"), line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    schema = pg_schema_url.rsplit("schema=", 1)[1]
    pg = psycopg2.connect(pg_schema_url.split("?")[0], options=f"-c search_path={schema}")
    pg.autocommit = True
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")  # the table is there (migrations committed)
        assert cur.fetchone()[0] == 0
    done = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"] == {"items": 400_000}
    with pg.cursor() as cur:
        cur.execute("SELECT count(*), count(*) FILTER (WHERE flag), max(id) FROM items")
        assert cur.fetchone() == (400_000, 200_000, 400_000)
    pg.close()


def test_timestamps_keep_their_instant_whatever_the_postgresql_session_time_zone(
        tmp_path, pg_schema_url, monkeypatch):
    """SQLite text without an offset is UTC to UTCDateTimeField; copied into PostgreSQL
    under a session TimeZone that is not UTC (PGTZ) it stays the same instant, as does text
    with an offset; copied back it is UTC text as embeddb writes it."""
    monkeypatch.setenv("PGTZ", "Europe/Berlin")  # +01:00 in January: a shift shows as 08:00
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_events.sqlite.up.sql").write_text(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL);\n")
    (folder / "0001_events.postgres.up.sql").write_text(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, at TIMESTAMPTZ NOT NULL);\n")
    (folder / "0001_events.down.sql").write_text("DROP TABLE events;\n")

    class Event(peewee.Model):
        at = UTCDateTimeField()

        class Meta:
            table_name = "events"

    def read(url: str) -> dict[int, datetime]:
        db = embeddb.connect(url)
        try:
            with db.bind_ctx([Event]):
                return {e.id: e.at for e in Event.select().order_by(Event.id)}
        finally:
            db.close()

    source = f"sqlite:///{tmp_path / 'events.db'}"
    db = embeddb.connect(source)
    embeddb.migrate.up(db, folder, backup=False)
    db.close()
    conn = sqlite3.connect(tmp_path / "events.db")
    conn.executemany("INSERT INTO events VALUES (?, ?)", [
        (1, "2030-01-01 09:00:00"),  # another tool's spelling: no offset, so UTC
        (2, "2030-01-01 11:00:00+02:00"),  # an offset of its own
        (3, "2030-07-01 09:00:00.000000+00:00")])  # embeddb's own spelling (Berlin is +02:00)
    conn.commit()
    conn.close()
    nine = datetime(2030, 1, 1, 9, tzinfo=UTC)
    expected = {1: nine, 2: nine, 3: datetime(2030, 7, 1, 9, tzinfo=UTC)}
    assert read(source) == expected
    copy(source, pg_schema_url, migrations=folder)
    assert read(pg_schema_url) == expected
    schema = pg_schema_url.rsplit("schema=", 1)[1]
    pg = psycopg2.connect(pg_schema_url.split("?")[0], options=f"-c search_path={schema}")
    with pg.cursor() as cur:  # what the server holds, spelled in UTC by the server itself
        cur.execute("SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') "
                    "FROM events ORDER BY id")
        assert cur.fetchall() == [(1, "2030-01-01 09:00"), (2, "2030-01-01 09:00"),
                                  (3, "2030-07-01 09:00")]
    pg.close()
    back = tmp_path / "back.db"
    copy(pg_schema_url, f"sqlite:///{back}", migrations=folder)
    conn = sqlite3.connect(back)
    assert conn.execute("SELECT id, at FROM events ORDER BY id").fetchall() == [
        (1, "2030-01-01 09:00:00.000000+00:00"), (2, "2030-01-01 09:00:00.000000+00:00"),
        (3, "2030-07-01 09:00:00.000000+00:00")]
    conn.close()
    assert read(f"sqlite:///{back}") == expected
