"""connect(): tuning, transactions, after-commit, errors — on every backend."""

from __future__ import annotations

import os
import threading

import peewee
import pytest
from dropped_privileges import as_user, other_user, shared_directory

import embeddb
from embeddb.errors import ConfigurationError, ConnectionFailed, IntegrityError, PoolExhausted


def _make_table(db):
    db.execute_sql("CREATE TABLE item (name TEXT PRIMARY KEY)")


def _count(db):
    return db.execute_sql("SELECT count(*) FROM item").fetchone()[0]


def test_sqlite_file_pragmas_apply_to_every_thread(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    expected = {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 5000,
                "cache_size": -65536, "temp_store": 2, "mmap_size": 268435456,
                "journal_size_limit": 67108864}
    seen = {}

    def read():
        seen.update({k: db.execute_sql(f"PRAGMA {k}").fetchone()[0] for k in expected})
        db.close()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert seen == expected
    named = {**expected, "synchronous": "NORMAL", "temp_store": "MEMORY"}
    assert {k: v for k, v in db.info()["settings"].items() if k in expected} == named


def test_sqlite_options_override_defaults(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url, synchronous="FULL", busy_timeout=1.5)
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 1500


def test_write_transactions_begin_immediate(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    _make_table(db)
    other = embeddb.connect(sqlite_file_url, busy_timeout=0)
    with db.atomic():
        # Holding the write lock before any write: another writer cannot start.
        with pytest.raises(embeddb.DatabaseError, match="locked"):
            with other.atomic():
                pass
    with other.atomic():
        other.execute_sql("INSERT INTO item (name) VALUES ('x')")
    assert _count(db) == 1


def test_memory_database_is_shared_by_threads_and_private_per_connect():
    db = embeddb.connect("sqlite:///:memory:")
    _make_table(db)

    def insert():
        db.execute_sql("INSERT INTO item (name) VALUES ('from-thread')")
        db.close()

    thread = threading.Thread(target=insert)
    thread.start()
    thread.join()
    assert _count(db) == 1
    other = embeddb.connect("sqlite:///:memory:")
    assert "item" not in other.get_tables()


def test_nested_atomic_rolls_back_savepoint_only(db):
    _make_table(db)
    with db.atomic():
        db.execute_sql("INSERT INTO item (name) VALUES ('outer')")
        with pytest.raises(RuntimeError):
            with db.atomic():
                db.execute_sql("INSERT INTO item (name) VALUES ('inner')")
                raise RuntimeError("boom")
    names = [r[0] for r in db.execute_sql("SELECT name FROM item").fetchall()]
    assert names == ["outer"]


def test_after_commit_runs_once_after_outer_commit_and_never_for_rolled_back_work(db):
    _make_table(db)
    ran = []
    with db.atomic():
        db.after_commit(lambda: ran.append("outer"))
        with db.atomic():
            db.after_commit(lambda: ran.append("kept-savepoint"))
        with pytest.raises(RuntimeError):
            with db.atomic():
                db.after_commit(lambda: ran.append("rolled-back-savepoint"))
                raise RuntimeError
        assert ran == []  # nothing before the commit
    assert ran == ["outer", "kept-savepoint"]

    ran.clear()
    with pytest.raises(RuntimeError):
        with db.atomic():
            db.after_commit(lambda: ran.append("rolled-back"))
            raise RuntimeError
    with db.atomic():
        pass
    assert ran == []
    db.after_commit(lambda: ran.append("no-transaction"))
    assert ran == ["no-transaction"]


def test_failed_commit_drops_callbacks(db):
    """The COMMIT itself fails (a deferred foreign key): no callback runs."""
    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES "
                   "parent (id) DEFERRABLE INITIALLY DEFERRED)")
    ran = []
    with pytest.raises(IntegrityError):
        with db.atomic():
            db.after_commit(lambda: ran.append("x"))
            db.execute_sql("INSERT INTO child VALUES (1, 42)")  # accepted until COMMIT
    assert ran == []
    assert db.execute_sql("SELECT count(*) FROM child").fetchone()[0] == 0


def test_a_failing_callback_does_not_undo_the_commit_or_skip_the_others(db, caplog):
    _make_table(db)
    ran = []

    def broken():
        raise RuntimeError("callback bug")

    with db.atomic():
        db.execute_sql("INSERT INTO item (name) VALUES ('kept')")
        db.after_commit(broken)
        db.after_commit(lambda: ran.append("second"))
    assert ran == ["second"]
    assert _count(db) == 1
    assert "callback bug" in caplog.text


def test_driver_errors_are_translated_and_keep_peewee_classes(db):
    _make_table(db)
    db.execute_sql("INSERT INTO item (name) VALUES ('a')")
    with pytest.raises(IntegrityError) as info:
        db.execute_sql("INSERT INTO item (name) VALUES ('a')")
    assert isinstance(info.value, embeddb.EmbeddbError)
    assert isinstance(info.value, peewee.IntegrityError)
    assert info.value.__cause__ is not None
    with pytest.raises(embeddb.DatabaseError):
        db.execute_sql("SELECT * FROM no_such_table")


def test_foreign_keys_enforced(db):
    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, "
                   "parent_id INTEGER NOT NULL REFERENCES parent(id))")
    with pytest.raises(IntegrityError):
        db.execute_sql("INSERT INTO child (parent_id) VALUES (42)")


def test_health_and_info(db):
    health = db.health()
    assert health["ok"] is True and health["latency_ms"] >= 0
    info = db.info()
    assert info["backend"] == db.dialect.name
    assert info["version"]
    assert info["settings"]


def test_missing_directory_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        embeddb.connect(f"sqlite:///{tmp_path}/no/such/dir/app.db")


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(ConnectionFailed, match="not a database"):
        embeddb.connect(f"sqlite:///{path}")
    assert path.read_bytes() == before


def _connect_into(folder: str) -> str:
    try:
        embeddb.connect(f"sqlite:///{folder}/app.db")
    except ConfigurationError as exc:
        return str(exc)
    return "connected"


def test_unwritable_directory(tmp_path):
    """Root writes anywhere, so as root (CI) the attempt runs as another user in a child."""
    if os.geteuid() == 0:
        with shared_directory() as home:
            (home / "ro").mkdir(mode=0o500)
            os.chown(home / "ro", *other_user())
            message = as_user(_connect_into, str(home / "ro"))
            assert not (home / "ro" / "app.db").exists()
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        message = _connect_into(str(tmp_path / "ro"))
    assert "not writable" in message and "/ro" in message, message


def test_default_url_is_a_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_DATABASE_URL", raising=False)
    db = embeddb.connect()
    assert db.info()["path"] == str(tmp_path / "embeddb.db")
    assert (tmp_path / "embeddb.db").exists()


def test_postgres_refusing_server_fails_fast_with_redacted_url():
    with pytest.raises(ConnectionFailed) as info:
        embeddb.connect("postgresql://app:hunter2@127.0.0.1:1/nodb", connect_timeout=2)
    assert "hunter2" not in str(info.value) and "app:***@" in str(info.value)


def test_postgres_wrong_database_is_connection_failed(pg_url):
    with pytest.raises(ConnectionFailed, match="does not exist"):
        embeddb.connect("postgresql://postgres@127.0.0.1:5432/no_such_db_embeddb")


def test_postgres_pool_stats_and_exhaustion(pg_schema_url):
    db = embeddb.connect(pg_schema_url, max_connections=1, timeout=0.2)
    db.connect(reuse_if_open=True)
    assert db.pool_stats()["in_use"] == 1
    errors = []

    def second():
        try:
            db.connect()
        except PoolExhausted as exc:
            errors.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    thread.join()
    assert errors and "max_connections" in str(errors[0])
    db.close()
    assert db.pool_stats() == {"in_use": 0, "idle": 1, "max": 1, "reclaimed": 0}
    db.close_all()


def test_postgres_pool_takes_back_connections_of_threads_that_ended(pg_schema_url):
    """Two threads that end without closing their connection must not exhaust a pool of two."""
    db = embeddb.connect(pg_schema_url, max_connections=2, timeout=0.5)
    db.execute_sql("CREATE TABLE t (n INTEGER)")
    db.close()

    def leak(n: int) -> None:
        # (the server ends such a session after 5 s, so a failing run cannot hang the
        # schema's DROP at teardown)
        db.execute_sql("SET idle_in_transaction_session_timeout = '5s'")
        db.begin()  # even one left in the middle of a transaction
        db.execute_sql("INSERT INTO t VALUES (%s)", (n,))

    for n in range(2):
        thread = threading.Thread(target=leak, args=(n,))
        thread.start()
        thread.join()
    assert db.pool_stats()["in_use"] == 2
    found: list = []

    def use() -> None:
        try:
            found.append(db.execute_sql("SELECT count(*) FROM t").fetchone()[0])
        except PoolExhausted as exc:
            found.append(exc)
        db.close()

    for _ in range(3):
        thread = threading.Thread(target=use)
        thread.start()
        thread.join()
    assert found == [0, 0, 0]  # the ended threads' uncommitted rows were rolled back
    assert db.pool_stats()["reclaimed"] == 2
    db.close_all()


def test_postgres_connection_killed_in_a_transaction_is_an_embeddb_error(pg_schema_url):
    """The server ends the connection mid-transaction (pg_terminate_backend, a restart): the
    error raised is the server's, as an EmbeddbError (peewee's rollback of the dead connection
    raised a raw InterfaceError in its place), and after close() the database works again."""
    import psycopg2

    db = embeddb.connect(pg_schema_url)
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    killer = psycopg2.connect(pg_schema_url.split("?")[0])
    killer.autocommit = True
    try:
        with pytest.raises(embeddb.errors.OperationalError, match="server closed the connection"):
            with db.atomic():
                db.execute_sql("INSERT INTO t VALUES (1)")
                pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
                killer.cursor().execute("SELECT pg_terminate_backend(%s)", (pid,))
                db.execute_sql("SELECT 1")
        with pytest.raises(embeddb.errors.OperationalError, match="connection already closed"):
            db.execute_sql("SELECT 1")  # the dead connection, until it is given back
        db.close()
        assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 0
    finally:
        killer.close()
        db.close_all()


def test_postgres_schema_option_isolates(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    schema = pg_schema_url.rsplit("schema=", 1)[1]
    assert db.execute_sql("SELECT current_schema()").fetchone()[0] == schema
    db.close_all()


def test_postgres_server_that_does_not_answer_times_out():
    """A port that accepts the connection but never speaks the protocol (a hung server)."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionFailed, match="timeout|timed out"):
            embeddb.connect(f"postgresql://u@127.0.0.1:{port}/db", connect_timeout=1)
        assert time.monotonic() - start < 5
    finally:
        listener.close()


def test_health_checks_do_not_keep_pooled_connections(pg_schema_url):
    db = embeddb.connect(pg_schema_url, max_connections=2, timeout=0.2)
    results = []
    threads = [threading.Thread(target=lambda: results.append(db.health())) for _ in range(5)]
    for thread in threads:
        thread.start()
        thread.join()
    assert [r["ok"] for r in results] == [True] * 5
    assert db.pool_stats()["in_use"] == 0
    db.close_all()


@pytest.mark.parametrize("schema, message", [("nosuch_zz_schema", "does not exist"),
                                             ("bad;name", "not a plain identifier")])
def test_postgres_schema_option_is_checked(pg_url, schema, message):
    sep = "&" if "?" in pg_url else "?"
    with pytest.raises(ConfigurationError, match=message):
        embeddb.connect(f"{pg_url}{sep}schema={schema}")


def test_deferred_transaction_reads_without_queueing_behind_a_writer(tmp_path):
    """``atomic()`` takes the write lock up front and waits for a writer; ``atomic("DEFERRED")``
    reads the last committed state at once."""
    import sqlite3
    import time

    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = embeddb.connect(url, busy_timeout=1)
    db.execute_sql("CREATE TABLE t (x INTEGER)")
    db.execute_sql("INSERT INTO t VALUES (1)")
    writer = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (2)")  # uncommitted, holding the write lock
    try:
        start = time.perf_counter()
        with db.atomic("DEFERRED"):
            seen = db.execute_sql("SELECT count(*) FROM t").fetchone()[0]
        assert seen == 1 and time.perf_counter() - start < 0.5
        start = time.perf_counter()
        with pytest.raises(embeddb.errors.OperationalError, match="locked"), db.atomic():
            pass
        assert time.perf_counter() - start >= 0.9  # it queued for the busy timeout
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        db.close()


def test_a_failed_single_statement_write_rolls_back_on_the_same_connection(db):
    """execute_write on an open connection (its direct path): the failed statement's transaction
    is rolled back there and then, so the connection's next write begins and commits as usual."""
    _make_table(db)
    db.connect(reuse_if_open=True)
    insert = f"INSERT INTO item VALUES ({db.param})"
    assert db.execute_write(insert, ("a",)) == 1
    with pytest.raises(IntegrityError):
        db.execute_write(insert, ("a",))
    assert not db.in_transaction()
    assert db.execute_write(insert, ("b",)) == 1
    assert not db.in_transaction()
    assert _count(db) == 2
