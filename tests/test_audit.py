"""The audit log on every backend: triggers record each write in its own transaction, with the
changed columns, the actor and request id of the context, and never a stale actor."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embeddb
from embeddb import audit, migrate
from embeddb.cli import cli
from embeddb.errors import ConfigurationError, MigrationFailed
from embeddb.migrate import history

TABLE = ("CREATE TABLE services (id INTEGER PRIMARY KEY, name TEXT, price INTEGER, "
         "password_hash TEXT)")


def enable(db, **options) -> None:
    statements = audit.enable_sql(db, "services", **options)
    for statement in statements[audit._driver(db).DRIVER]:
        db.execute_sql(statement)


@pytest.fixture
def adb(db):
    db.execute_sql(TABLE)
    enable(db, exclude=["password_hash"])
    return db


def test_every_write_is_recorded_with_the_changed_columns_and_the_actor(adb):
    with audit.context(actor="user:42", request_id="req-1"):
        with adb.atomic():
            adb.execute_sql("INSERT INTO services VALUES (1, 'api', 10, 'secret-1')")
        with adb.atomic():
            adb.execute_sql("UPDATE services SET price = 12, password_hash = 'secret-2' "
                            "WHERE id = 1")
        with adb.atomic():
            adb.execute_sql("UPDATE services SET password_hash = 'secret-3'")  # nothing audited
        with adb.atomic():
            adb.execute_sql("DELETE FROM services WHERE id = 1")
    found = audit.history(adb, "services", 1)
    assert [(c.action, c.old, c.new) for c in found] == [
        ("INSERT", None, {"id": 1, "name": "api", "price": 10}),
        ("UPDATE", {"price": 10}, {"price": 12}),
        ("DELETE", {"id": 1, "name": "api", "price": 12}, None),
    ]
    assert {(c.actor, c.request_id) for c in found} == {("user:42", "req-1")}
    assert all(c.at.tzinfo is not None and abs(c.at - datetime.now(UTC))
               < timedelta(minutes=5) for c in found)
    stored = [tuple(r) for r in adb.execute_sql(
        "SELECT old_values, new_values FROM embeddb_audit").fetchall()]
    assert "secret" not in json.dumps(stored, default=str)  # excluded: never stored


def test_a_rolled_back_change_leaves_no_audit_row(adb):
    with pytest.raises(RuntimeError):
        with audit.context(actor="user:1"), adb.atomic():
            adb.execute_sql("INSERT INTO services VALUES (1, 'api', 10, NULL)")
            raise RuntimeError("the request failed")
    assert audit.changes(adb) == []


def test_writes_outside_a_context_are_unknown_never_stale(adb):
    """Same connection (SQLite) or pooled connection (PostgreSQL) reused by the next request."""
    with audit.context(actor="user:1", request_id="r1"), adb.atomic():
        adb.execute_sql("INSERT INTO services VALUES (1, 'a', 1, NULL)")
    with adb.atomic():
        adb.execute_sql("UPDATE services SET price = 2")
    adb.execute_sql("UPDATE services SET price = 3")  # autocommit, outside any transaction
    with audit.context(actor="user:2"), adb.atomic():
        adb.execute_sql("UPDATE services SET price = 4")
    assert [(c.new, c.actor, c.request_id) for c in audit.history(adb, "services", 1)] == [
        ({"id": 1, "name": "a", "price": 1}, "user:1", "r1"),
        ({"price": 2}, None, None),
        ({"price": 3}, None, None),
        ({"price": 4}, "user:2", None),
    ]


def test_deferred_transactions_carry_the_actor_too(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    db.execute_sql(TABLE)
    enable(db)
    with audit.context(actor="user:d"), db.atomic("DEFERRED"):
        db.execute_sql("INSERT INTO services (id, name) VALUES (1, 'x')")
    with db.atomic("DEFERRED"):
        db.execute_sql("UPDATE services SET name = 'y'")
    assert [c.actor for c in audit.history(db, "services", 1)] == ["user:d", None]
    assert db.execute_sql("SELECT count(*) FROM embeddb_audit_context").fetchone()[0] == 0
    db.close()


def test_deferred_and_read_only_transactions_in_a_context_work(tmp_path):
    """A deferred transaction takes no write lock for the audit's sake: reads go on beside a
    writer and in a read-only engine; its own writes are signed; a write that cannot be made
    fails as SQLite says, and another program's rows are never signed with this actor."""
    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}?busy_timeout=0.05")
    db.execute_sql(TABLE)
    enable(db)
    db.execute_sql("INSERT INTO services (id, name) VALUES (1, 'x')")
    reader = embeddb.connect(f"sqlite:///{path}?busy_timeout=0.05", readonly=True)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for engine in (db, reader):
            with audit.context(actor="user:r"), engine.atomic("DEFERRED"):
                assert engine.execute_sql("SELECT count(*) FROM services").fetchone()[0] == 1
    finally:
        holder.execute("ROLLBACK")
    with pytest.raises(embeddb.DatabaseError, match="readonly"):
        with audit.context(actor="user:r"), reader.atomic("DEFERRED"):
            reader.execute_sql("UPDATE services SET name = 'no'")
    with audit.context(actor="user:d"), db.atomic("DEFERRED"):
        db.execute_sql("SELECT count(*) FROM services").fetchone()
        db.execute_sql("UPDATE services SET name = 'y'")
    with pytest.raises(embeddb.DatabaseError, match="locked"):
        with audit.context(actor="user:late"), db.atomic("DEFERRED"):
            db.execute_sql("SELECT count(*) FROM services").fetchone()
            holder.execute("UPDATE services SET name = 'other program'")  # commits meanwhile
            db.execute_sql("UPDATE services SET name = 'z'")  # stale snapshot: refused
    holder.close()
    assert [(c.new, c.actor) for c in audit.history(db, "services", 1)] == [
        ({"id": 1, "name": "x", "price": None, "password_hash": None}, None),
        ({"name": "y"}, "user:d"),
        ({"name": "other program"}, None),
    ]
    assert db.execute_sql("SELECT count(*) FROM embeddb_audit_context").fetchone()[0] == 0
    reader.close()
    db.close()


def test_a_read_only_postgres_engine_in_a_context_reads(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    db.execute_sql(TABLE)
    enable(db)
    reader = embeddb.connect(pg_schema_url, readonly=True)
    try:
        with audit.context(actor="user:r"), reader.atomic():
            assert reader.execute_sql("SELECT count(*) FROM services").fetchone()[0] == 0
        with pytest.raises(embeddb.DatabaseError, match="read-only"):
            with audit.context(actor="user:r"), reader.atomic():
                reader.execute_sql("INSERT INTO services (id, name) VALUES (1, 'no')")
    finally:
        reader.close_all()
        db.close_all()


def test_odd_column_names_and_values_round_trip(db):
    db.execute_sql('CREATE TABLE odd (id INTEGER PRIMARY KEY, "we""ird, col" TEXT, "ünï" REAL, '
                   'note TEXT)')
    for statement in audit.enable_sql(db, "odd")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    p = db.param
    text = 'a "quoted", comma\\ and \n newline,'
    with db.atomic():
        db.execute_sql(f'INSERT INTO odd VALUES ({p}, {p}, {p}, {p})', (1, text, 1.5, None))
    with db.atomic():
        db.execute_sql(f'UPDATE odd SET "we""ird, col" = NULL, "ünï" = {p}, note = {p}',
                       (2.25, "[1, 2,]"))
    insert, update = audit.history(db, "odd", 1)
    assert insert.new == {"id": 1, 'we"ird, col': text, "ünï": 1.5, "note": None}
    assert update.old == {'we"ird, col': text, "ünï": 1.5, "note": None}
    assert update.new == {'we"ird, col': None, "ünï": 2.25, "note": "[1, 2,]"}


def test_a_table_of_many_columns_is_audited(db):
    """Past SQLite's 127 function arguments (json_object takes two per column): 300 columns."""
    columns = [f"c{i}" for i in range(300)]
    db.execute_sql(f"CREATE TABLE wide (id INTEGER PRIMARY KEY, "
                   f"{', '.join(c + ' TEXT' for c in columns)})")
    for statement in audit.enable_sql(db, "wide")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    p = db.param
    with db.atomic():
        db.execute_sql(f"INSERT INTO wide (id, c0, c299) VALUES (1, {p}, {p})", ("a", "7"))
    with db.atomic():
        db.execute_sql(f"UPDATE wide SET c150 = {p}, c299 = '8'", ("b",))
    with db.atomic():
        db.execute_sql("DELETE FROM wide")
    insert, update, delete = audit.history(db, "wide", 1)
    assert insert.new == {"id": 1, **{c: None for c in columns}, "c0": "a", "c299": "7"}
    assert (update.old, update.new) == ({"c150": None, "c299": "7"}, {"c150": "b", "c299": "8"})
    assert delete.old == {**insert.new, "c150": "b", "c299": "8"} and delete.new is None


def test_contexts_are_per_thread_and_per_task(cli_db_url):
    db = embeddb.connect(cli_db_url)
    db.execute_sql(TABLE)
    enable(db)

    def write(n: int) -> None:
        own = embeddb.connect(cli_db_url)
        with audit.context(actor=f"thread:{n}"):
            for _ in range(5):
                with own.atomic():
                    own.execute_sql(f"INSERT INTO services (id, name) VALUES "
                                    f"({n * 100 + _}, 't{n}')")
        own.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = audit.changes(db, table="services")
    assert len(found) == 20  # every thread's five writes
    for change in found:
        assert change.actor == f"thread:{int(change.pk) // 100}"

    async def task(n: int) -> str | None:
        with audit.context(actor=f"task:{n}"):
            await asyncio.sleep(0.01)
            return audit.current()[0]

    async def both():
        return await asyncio.gather(task(1), task(2))

    assert asyncio.run(both()) == ["task:1", "task:2"]
    db.close()


def test_other_programs_writes_are_captured_too(tmp_path):
    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql(TABLE)
    enable(db)
    conn = sqlite3.connect(path)  # another program: the sqlite3 module, no embeddb
    conn.execute("INSERT INTO services (id, name) VALUES (7, 'raw')")
    conn.commit()
    conn.close()
    [change] = audit.history(db, "services", 7)
    assert change.action == "INSERT" and change.actor is None
    db.close()


def test_changes_filters_by_actor_time_and_table(adb):
    with audit.context(actor="a"), adb.atomic():
        adb.execute_sql("INSERT INTO services VALUES (1, 'x', 1, NULL)")
    with audit.context(actor="b"), adb.atomic():
        adb.execute_sql("INSERT INTO services VALUES (2, 'y', 1, NULL)")
    assert [c.pk for c in audit.changes(adb, actor="a")] == ["1"]
    assert [c.pk for c in audit.changes(adb)] == ["2", "1"]  # newest first
    future = datetime.now(UTC) + timedelta(hours=1)
    assert audit.changes(adb, since=future) == []
    assert len(audit.changes(adb, since=datetime.now(UTC) - timedelta(hours=1))) == 2
    assert audit.changes(adb, table="other") == []
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        audit.changes(adb, since=datetime.now())


@pytest.mark.parametrize("options, words", [
    ({"columns": ["nope"]}, "services has no column 'nope'"),
    ({"exclude": ["id", "name", "price", "password_hash"]}, "nothing left to audit"),
])
def test_bad_enable_requests_are_refused(db, options, words):
    db.execute_sql(TABLE)
    with pytest.raises(audit.AuditError, match=words):
        audit.enable_sql(db, "services", **options)


def test_unknown_table_and_missing_log_are_clear_errors(db):
    with pytest.raises(audit.AuditError, match="no table 'ghost'"):
        audit.enable_sql(db, "ghost")
    with pytest.raises(audit.AuditError, match="has no audit log yet"):
        audit.history(db, "services", 1)
    with pytest.raises(ConfigurationError, match="at most 500"):
        with audit.context(actor="x" * 501):
            pass


def test_cli_enable_migrate_log_disable(tmp_path, cli_db_url):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.up.sql").write_text(TABLE + ";")
    db = embeddb.connect(cli_db_url)
    migrate.up(db, folder, backup=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", cli_db_url, "audit", "enable", "services",
                                 "--exclude", "password_hash", "--migrations", str(folder)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in Path(folder).iterdir())
    assert "0002_audit_enable_services.postgres.up.sql" in written
    assert "0002_audit_enable_services.sqlite.down.sql" in written
    migrate.up(db, folder, backup=False)
    with audit.context(actor="ops:ann"), db.atomic():
        db.execute_sql("INSERT INTO services VALUES (5, 'svc', 3, 'pw')")
        db.execute_sql("UPDATE services SET price = 4 WHERE id = 5")
    log = runner.invoke(cli, ["--db", cli_db_url, "audit", "log", "--table", "services",
                              "--id", "5", "--json"])
    assert log.exit_code == 0, log.output
    changes = json.loads(log.output)["changes"]
    assert [(c["action"], c["actor"]) for c in changes] == [("INSERT", "ops:ann"),
                                                            ("UPDATE", "ops:ann")]
    text = runner.invoke(cli, ["--db", cli_db_url, "audit", "log", "--actor", "ops:ann"])
    assert "UPDATE services 5 by ops:ann: {'price': 3} -> {'price': 4}" in text.output
    result = runner.invoke(cli, ["--db", cli_db_url, "audit", "disable", "services",
                                 "--migrations", str(folder)])
    assert result.exit_code == 0, result.output
    migrate.up(db, folder, backup=False)
    db.execute_sql("UPDATE services SET price = 9")
    assert len(audit.history(db, "services", 5)) == 2  # no longer recorded
    migrate.down(db, folder, backup=False)  # undoing the disable audits again
    db.execute_sql("UPDATE services SET price = 10")
    assert len(audit.history(db, "services", 5)) == 3
    bad = runner.invoke(cli, ["--db", cli_db_url, "audit", "enable", "services", "--columns",
                              "nope", "--migrations", str(folder)])
    assert bad.exit_code == 1 and "services has no column 'nope'" in bad.output
    db.close()


@pytest.mark.parametrize("given", [{"actor": 42}, {"request_id": "r" * 501}, {"actor": b"x"}])
def test_a_context_that_is_not_short_text_is_refused(given):
    with pytest.raises(ConfigurationError, match="must be text of at most 500"):
        audit.context(**given)
    assert audit.current() is None


def test_a_transaction_abandoned_in_a_context_never_signs_a_later_one(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    db.execute_sql(TABLE)
    enable(db)
    with audit.context(actor="alice"):
        db.begin()
        db.execute_sql("INSERT INTO services (id, name) VALUES (1, 'x')")
        db.close()  # never committed
    with db.atomic():  # outside any context
        db.execute_sql("INSERT INTO services (id, name) VALUES (2, 'y')")
    assert [(c.pk, c.actor) for c in audit.changes(db)] == [("2", None)]
    db.close()


def test_blob_columns_never_fail_an_audited_write(db):
    """A BLOB / bytea value is recorded as PostgreSQL writes bytea in JSON: text ``\\x`` + hex."""
    kind = "BLOB" if db.dialect.name == "sqlite" else "BYTEA"
    db.execute_sql(f"CREATE TABLE files (id INTEGER PRIMARY KEY, body {kind}, name TEXT)")
    for statement in audit.enable_sql(db, "files")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    p = db.param
    with db.atomic():
        db.execute_sql(f"INSERT INTO files VALUES (1, {p}, 'a')", (b"\x00\x01",))
    with db.atomic():
        db.execute_sql(f"UPDATE files SET body = {p} WHERE id = 1", (b"\xff",))
    with db.atomic():
        db.execute_sql("UPDATE files SET name = 'b' WHERE id = 1")  # blob unchanged
    with db.atomic():
        db.execute_sql("DELETE FROM files WHERE id = 1")
    assert [(c.action, c.old, c.new) for c in audit.history(db, "files", 1)] == [
        ("INSERT", None, {"id": 1, "body": "\\x0001", "name": "a"}),
        ("UPDATE", {"body": "\\x0001"}, {"body": "\\xff"}),
        ("UPDATE", {"name": "a"}, {"name": "b"}),
        ("DELETE", {"id": 1, "body": "\\xff", "name": "b"}, None),
    ]


@pytest.mark.parametrize("before, after", [
    (0.1, 0.1 + 2 ** -55),                  # differs beyond 15 significant digits
    (0.3, 0.30000000000000004),
    (1.0, float("inf")),
    (float("-inf"), 1e-300),
    (1.0, 1.0235903895552347e+267),         # SQLite's 17-digit printf is off for these
    (3.7668286360006396e+165, 2.0 ** 60),
])
def test_a_real_column_change_is_recorded_exactly(db, before, after):
    """Exactly, as a JSON number; an infinity (JSON has none) as PostgreSQL writes it."""

    def logged(x: float) -> float | str:
        return x if abs(x) != float("inf") else ("Infinity" if x > 0 else "-Infinity")

    kind = "REAL" if db.dialect.name == "sqlite" else "DOUBLE PRECISION"
    db.execute_sql(f"CREATE TABLE m (id INTEGER PRIMARY KEY, x {kind})")
    for statement in audit.enable_sql(db, "m")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    p = db.param
    db.execute_sql(f"INSERT INTO m VALUES (1, {p})", (before,))
    db.execute_sql(f"UPDATE m SET x = {p}", (after,))
    insert, update = audit.history(db, "m", 1)

    def read(values: dict) -> dict:  # PostgreSQL writes 1e267 as digits: JSON gives an int
        return {k: float(v) if isinstance(v, int) and k == "x" else v for k, v in values.items()}

    assert read(insert.new) == {"id": 1, "x": logged(before)}
    assert (read(update.old), read(update.new)) == ({"x": logged(before)}, {"x": logged(after)})


VALUES = st.one_of(
    st.none(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20), st.binary(max_size=8))


def _as_logged(value: object) -> object:
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, float) and abs(value) == float("inf"):
        return "Infinity" if value > 0 else "-Infinity"
    return value


@given(before=st.tuples(VALUES, VALUES, VALUES, VALUES),
       after=st.tuples(VALUES, VALUES, VALUES, VALUES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_value_in_any_sqlite_column_is_recorded_exactly(before, after):
    """SQLite stores any type in any column of a table that is not STRICT: whatever a write
    stores, the audited write succeeds and the log holds exactly the stored values."""
    db = embeddb.connect("sqlite:///:memory:")
    db.execute_sql("CREATE TABLE v (id INTEGER PRIMARY KEY, a, t TEXT, i INTEGER, r REAL)")
    for statement in audit.enable_sql(db, "v")["sqlite"]:
        db.execute_sql(statement)
    columns = ("a", "t", "i", "r")
    db.execute_sql("INSERT INTO v VALUES (1, ?, ?, ?, ?)", before)
    stored_before = db.execute_sql("SELECT a, t, i, r FROM v").fetchone()
    db.execute_sql("UPDATE v SET a = ?, t = ?, i = ?, r = ?", after)
    stored_after = db.execute_sql("SELECT a, t, i, r FROM v").fetchone()
    found = audit.history(db, "v", 1)
    assert found[0].new == {"id": 1, **{c: _as_logged(v) for c, v in zip(columns, stored_before)}}
    changed = [c for c, x, y in zip(columns, stored_before, stored_after)
               if type(x) is not type(y) or x != y]
    if not changed:
        assert len(found) == 1
        return
    assert found[1].old == {c: _as_logged(x) for c, x in zip(columns, stored_before)
                            if c in changed}
    assert found[1].new == {c: _as_logged(y) for c, y in zip(columns, stored_after)
                            if c in changed}
    db.close()


OLD_LOG = (  # the first shape of embeddb_audit (constraints, AUTOINCREMENT, an actor index)
    "CREATE TABLE embeddb_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, table_name TEXT NOT NULL, "
    "row_pk TEXT NOT NULL, action TEXT NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')), "
    "old_values TEXT, new_values TEXT, actor TEXT, request_id TEXT, at TEXT NOT NULL)",
    "CREATE INDEX embeddb_audit_row ON embeddb_audit (table_name, row_pk, id)",
    "CREATE INDEX embeddb_audit_actor ON embeddb_audit (actor, id)",
    "CREATE TABLE embeddb_audit_context (actor TEXT, request_id TEXT)",
    "CREATE TRIGGER embeddb_audit_services_insert AFTER INSERT ON services BEGIN "
    "INSERT INTO embeddb_audit (table_name, row_pk, action, old_values, new_values, actor, "
    "request_id, at) VALUES ('services', CAST(NEW.id AS TEXT), 'INSERT', NULL, "
    "json_object('id', NEW.id, 'name', NEW.name), "
    "(SELECT actor FROM embeddb_audit_context LIMIT 1), "
    "(SELECT request_id FROM embeddb_audit_context LIMIT 1), "
    "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')); END",
)


def _log_shape(db) -> list[tuple[str, str]]:
    return sorted((name, sql) for name, sql in db.execute_sql(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'embeddb_audit'").fetchall())


def test_an_audit_log_of_an_earlier_shape_is_rebuilt_by_the_next_enable(tmp_path):
    """Rows, ids and the old triggers survive; the constraints and the actor index go."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    folder = tmp_path / "migrations"
    db = embeddb.connect(url)
    db.execute_sql(TABLE)
    db.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    for statement in OLD_LOG:
        db.execute_sql(statement)
    with audit.context(actor="user:old"), db.atomic():
        db.execute_sql("INSERT INTO services (id, name) VALUES (1, 'a'), (2, 'b')")
    db.execute_sql("DELETE FROM embeddb_audit WHERE row_pk = '2'")  # AUTOINCREMENT's gap
    fresh = embeddb.connect(f"sqlite:///{tmp_path / 'fresh.db'}")
    fresh.execute_sql(TABLE)
    enable(fresh)
    current = _log_shape(fresh)
    fresh.close()
    assert audit.sqlite.outdated(db)
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", url, "audit", "enable", "notes", "--migrations",
                                 str(folder)])
    assert result.exit_code == 0, result.output
    migrate.up(db, folder, backup=False)
    assert _log_shape(db) == current and not audit.sqlite.outdated(db)
    with audit.context(actor="user:new"), db.atomic():
        db.execute_sql("INSERT INTO services (id, name) VALUES (3, 'c')")  # the old trigger
        db.execute_sql("INSERT INTO notes VALUES (1, 'n')")
    rows = db.execute_sql("SELECT id, row_pk, actor FROM embeddb_audit ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "1", "user:old"), (2, "3", "user:new"),
                                        (3, "1", "user:new")]
    assert [c.new for c in audit.history(db, "services", 1)] == [{"id": 1, "name": "a"}]
    # an explicit upgrade on a current log changes nothing and can be undone
    result = runner.invoke(cli, ["audit", "upgrade", "--migrations", str(folder), "--json"])
    assert result.exit_code == 0 and "audit_upgrade" in result.output, result.output
    migrate.up(db, folder, backup=False)
    assert _log_shape(db) == current
    assert [tuple(r) for r in db.execute_sql(
        "SELECT id, row_pk, actor FROM embeddb_audit ORDER BY id").fetchall()] == [
        tuple(r) for r in rows]
    migrate.down(db, folder, backup=False)
    assert len(audit.changes(db)) == 3
    db.close()


def test_the_upgrade_migration_is_harmless_on_a_current_log(tmp_path, cli_db_url):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.up.sql").write_text(TABLE + ";")
    db = embeddb.connect(cli_db_url)
    migrate.up(db, folder, backup=False)
    audit.write_migration(db, "services", directory=folder)
    migrate.up(db, folder, backup=False)
    with audit.context(actor="a"), db.atomic():
        db.execute_sql("INSERT INTO services (id, name) VALUES (1, 'x')")
    before = audit.history(db, "services", 1)
    [up, *_] = sorted(p.name for p in audit.write_upgrade(folder) if ".up." in p.name)
    assert up.startswith("0003_audit_upgrade")
    migrate.up(db, folder, backup=False)
    assert audit.history(db, "services", 1) == before
    with audit.context(actor="b"), db.atomic():
        db.execute_sql("UPDATE services SET name = 'y'")
    assert [c.actor for c in audit.history(db, "services", 1)] == ["a", "b"]
    migrate.down(db, folder, backup=False)  # undoing the upgrade keeps the log
    assert len(audit.history(db, "services", 1)) == 2
    db.close()
    if isinstance(db, embeddb.PostgresEngine):
        db.close_all()


REBUILD = """\
CREATE TABLE services_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', price INTEGER,
                           password_hash TEXT);
INSERT INTO services_new SELECT id, coalesce(name, ''), price, password_hash FROM services;
DROP TABLE services;
ALTER TABLE services_new RENAME TO services;
"""


def _audit_triggers(db) -> int:
    from embeddb.migrate.backends import backend_for

    return len(backend_for(db).audit_triggers(db).get("services", ()))


def test_a_rebuild_that_would_end_a_tables_audit_log_is_refused(db, tmp_path):
    """Dropping a table drops its triggers: the usual SQLite rebuild (or a DROP and CREATE)
    would stop auditing the table without a word."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.sql").write_text(f"-- migrate:up\n{TABLE};\n")
    migrate.up(db, directory=folder, backup=False)
    audit.write_migration(db, "services", directory=folder, exclude=["password_hash"])
    migrate.up(db, directory=folder, backup=False)
    with db.atomic():
        db.execute_sql("INSERT INTO services VALUES (1, 'x', 1, NULL)")
    triggers = _audit_triggers(db)
    (folder / "0003_rebuild.sql").write_text(f"-- migrate:up\n{REBUILD}")
    with pytest.raises(MigrationFailed, match=r"0003_rebuild up drops the audit triggers of "
                       r"services .* and was rolled back: end it with the statements of "
                       r"`embeddb audit enable services` with the same --columns / --exclude"):
        migrate.up(db, directory=folder, backup=False)
    assert _audit_triggers(db) == triggers and history.current_version(db) == 2
    p = db.param
    with audit.context(actor="after"), db.atomic():
        db.execute_sql(f"UPDATE services SET price = 2 WHERE id = {p}", (1,))
    assert [c.action for c in audit.history(db, "services", 1)] == ["INSERT", "UPDATE"]

    # the same rebuild ending with the audit triggers put back is the way
    enable = audit.enable_sql(db, "services", exclude=["password_hash"])[audit._driver(db).DRIVER]
    (folder / "0003_rebuild.sql").write_text(
        f"-- migrate:up\n{REBUILD}" + "".join(f"{s};\n" for s in enable))
    migrate.up(db, directory=folder, backup=False)
    assert _audit_triggers(db) == triggers and history.current_version(db) == 3
    with audit.context(actor="rebuilt"), db.atomic():
        db.execute_sql(f"UPDATE services SET price = 3 WHERE id = {p}", (1,))
    assert audit.history(db, "services", 1)[-1].actor == "rebuilt"


def test_migrations_run_in_a_postgres_schema_whose_name_keeps_its_case(pg_url, tmp_path):
    """The audit-trigger check reads the schema by its name, not as an identifier to parse
    (which folds 'Shop' to shop: every migration failed with 'schema "shop" does not exist')."""
    import uuid

    import psycopg2

    schema = f"Shop_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    db = embeddb.connect(f"{pg_url}?schema={schema}")
    try:
        folder = tmp_path / "migrations"
        folder.mkdir()
        (folder / "0001_services.sql").write_text(f"-- migrate:up\n{TABLE};\n")
        migrate.up(db, directory=folder, backup=False)
        audit.write_migration(db, "services", directory=folder)
        migrate.up(db, directory=folder, backup=False)
        (folder / "0003_rebuild.sql").write_text(f"-- migrate:up\n{REBUILD}")
        with pytest.raises(MigrationFailed, match="drops the audit triggers of services"):
            migrate.up(db, directory=folder, backup=False)
        assert history.current_version(db) == 2 and _audit_triggers(db) == 1
    finally:
        db.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.mark.parametrize("down", [f"-- embeddb:no-transaction\n{REBUILD}",
                                  f"BEGIN;\n{REBUILD}COMMIT;\n"],
                         ids=["no-transaction", "own-transaction"])
def test_a_down_part_outside_embeddbs_transaction_is_not_refused_after_the_fact(
        sqlite_file_url, tmp_path, down):
    """The check runs before embeddb's own COMMIT only: a part that commits by itself has
    committed by then (a refusal said 'rolled back' while the rebuild stayed, with the history
    still saying applied, or left the script's transaction open on the connection)."""
    db = embeddb.connect(sqlite_file_url)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.sql").write_text(f"-- migrate:up\n{TABLE};\n")
    migrate.up(db, directory=folder, backup=False)
    audit.write_migration(db, "services", directory=folder)
    (folder / "0003_rebuild.up.sql").write_text("SELECT 1;\n")
    (folder / "0003_rebuild.down.sql").write_text(down)
    migrate.up(db, directory=folder, backup=False)
    migrate.down(db, directory=folder, backup=False)
    assert history.current_version(db) == 2 and _audit_triggers(db) == 0
    assert not db.connection().in_transaction
    db.close()


@pytest.mark.parametrize("collation", ["NOCASE", "RTRIM"])
def test_a_change_its_columns_collation_calls_equal_is_recorded(collation):
    """The triggers compare values as they are stored, not by the column's collation: 'abc'
    and 'ABC' are equal to NOCASE, 'a' and 'a ' to RTRIM, yet the change was made."""
    db = embeddb.connect("sqlite:///:memory:")
    db.execute_sql(f"CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT COLLATE {collation}, "
                   "n INTEGER)")
    for statement in audit.enable_sql(db, "tags")["sqlite"]:
        db.execute_sql(statement)
    renamed = "ABC" if collation == "NOCASE" else "abc "
    with db.atomic():
        db.execute_sql("INSERT INTO tags VALUES (1, 'abc', 1)")
    with db.atomic():
        db.execute_sql("UPDATE tags SET name = ?, n = 2", (renamed,))
    with db.atomic():
        db.execute_sql("UPDATE tags SET name = 'abc'")
    _, both, alone = audit.history(db, "tags", 1)
    assert (both.old, both.new) == ({"name": "abc", "n": 1}, {"name": renamed, "n": 2})
    assert (alone.old, alone.new) == ({"name": renamed}, {"name": "abc"})
    db.close()


def test_the_smallest_integer_never_fails_an_audited_write(db):
    """abs() of -2**63 overflows in SQLite: the trigger must not take it (the write failed)."""
    db.execute_sql("CREATE TABLE counts (id INTEGER PRIMARY KEY, n BIGINT)")
    for statement in audit.enable_sql(db, "counts")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    p = db.param
    with db.atomic():
        db.execute_sql(f"INSERT INTO counts VALUES (1, {p})", (-2**63,))
    with db.atomic():
        db.execute_sql(f"UPDATE counts SET n = {p}", (-2**63 + 1,))
    insert, update = audit.history(db, "counts", 1)
    assert insert.new == {"id": 1, "n": -2**63}
    assert (update.old, update.new) == ({"n": -2**63}, {"n": -2**63 + 1})


def test_a_table_of_more_than_a_thousand_columns_is_audited():
    """An UPDATE trigger's 'any column changed' test nests no deeper than SQLite's 1,000
    levels (a chain of 1,199 ORs did: enabling failed)."""
    db = embeddb.connect("sqlite:///:memory:")
    columns = [f"c{i}" for i in range(1199)]
    db.execute_sql(f"CREATE TABLE widest (id INTEGER PRIMARY KEY, {', '.join(columns)})")
    for statement in audit.enable_sql(db, "widest")["sqlite"]:
        db.execute_sql(statement)
    with db.atomic():
        db.execute_sql("INSERT INTO widest (id, c0) VALUES (1, 'a')")
    with db.atomic():
        db.execute_sql("UPDATE widest SET c1198 = 2")
    insert, update = audit.history(db, "widest", 1)
    assert insert.new == {"id": 1, **{c: None for c in columns}, "c0": "a"}
    assert (update.old, update.new) == ({"c1198": None}, {"c1198": 2})
    db.close()


def test_renaming_an_audited_table_keeps_its_log_right(db, tmp_path):
    """SQLite's triggers write the table's name as text and follow a rename: the renamed
    table's writes were logged under the old name. Refused there unless the migration moves
    the audit over; on PostgreSQL the trigger reads the table's name as it fires."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.sql").write_text(f"-- migrate:up\n{TABLE};\n")
    migrate.up(db, directory=folder, backup=False)
    audit.write_migration(db, "services", directory=folder)
    migrate.up(db, directory=folder, backup=False)
    rename = "ALTER TABLE services RENAME TO offers;\n"
    (folder / "0003_rename.sql").write_text(f"-- migrate:up\n{rename}")
    p = db.param
    if audit._driver(db).DRIVER == "sqlite":
        with pytest.raises(MigrationFailed, match=r"^0003_rename up renames audited table "
                           r"services to offers and was rolled back: .*`embeddb audit "
                           r"disable services` in it, then run `embeddb audit enable offers`$"):
            migrate.up(db, directory=folder, backup=False)
        assert history.current_version(db) == 2 and _audit_triggers(db) == 3
        moved = [*audit.write_migration(db, "services", enable=False, directory=tmp_path)]
        drop = next(f for f in moved if f.name.endswith("sqlite.up.sql")).read_text()
        (folder / "0003_rename.sql").write_text(f"-- migrate:up\n{rename}{drop}")
        migrate.up(db, directory=folder, backup=False)
        for statement in audit.enable_sql(db, "offers")["sqlite"]:
            db.execute_sql(statement)
    else:
        migrate.up(db, directory=folder, backup=False)
    assert history.current_version(db) == 3
    with db.atomic():
        db.execute_sql(f"INSERT INTO offers VALUES ({p}, 'x', 1, NULL)", (1,))
    assert [c.action for c in audit.history(db, "offers", 1)] == ["INSERT"]
    assert audit.history(db, "services", 1) == []


def test_a_rebuild_spelling_the_tables_name_in_another_case_is_refused_too(sqlite_file_url,
                                                                           tmp_path):
    """SQLite's names ignore case: 'services' rebuilt is the table created as 'Services'."""
    db = embeddb.connect(sqlite_file_url)
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.sql").write_text(
        f"-- migrate:up\n{TABLE.replace('TABLE services', 'TABLE Services')};\n")
    migrate.up(db, directory=folder, backup=False)
    audit.write_migration(db, "Services", directory=folder)
    migrate.up(db, directory=folder, backup=False)
    (folder / "0003_rebuild.sql").write_text(f"-- migrate:up\n{REBUILD}")
    with pytest.raises(MigrationFailed, match="0003_rebuild up drops the audit triggers of"):
        migrate.up(db, directory=folder, backup=False)
    assert history.current_version(db) == 2 and _audit_triggers(db) == 3
    db.close()


def test_dropping_an_audited_column_says_what_to_do(tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_services.sql").write_text(f"-- migrate:up\n{TABLE};\n")
    migrate.up(db, directory=folder, backup=False)
    audit.write_migration(db, "services", directory=folder)
    migrate.up(db, directory=folder, backup=False)
    (folder / "0003_drop.sql").write_text("-- migrate:up\nALTER TABLE services DROP COLUMN price;\n")
    with pytest.raises(MigrationFailed) as failed:
        migrate.up(db, directory=folder, backup=False)
    assert str(failed.value).endswith(
        "was rolled back: the audit triggers of services name that column; put the statements "
        "of `embeddb audit disable services` before it and of `embeddb audit enable services` "
        "after it")
    assert history.current_version(db) == 2
    db.close()
