"""The migration lock as a runner meets it: a wait that ends when the holder lets go, the wait
reported once with the holder's pid, the timeout message, and the lock file itself."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from embeddb import migrate
from embeddb.errors import MigrationLockTimeout
from embeddb.migrate.backends import backend_for


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PostgreSQL safety dumps go to ./backups


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    (path / "0001_users.up.sql").write_text("CREATE TABLE users (id INTEGER PRIMARY KEY);")
    (path / "0002_posts.up.sql").write_text("CREATE TABLE posts (id INTEGER PRIMARY KEY);")
    return path


def _where(db) -> str:
    if db.backend == "postgresql":
        return f"schema {db.execute_sql('SELECT current_schema()').fetchone()[0]}"
    if db.is_memory:
        return "the in-memory database"
    return os.path.abspath(db.database) + ".migrate-lock"


def test_a_runner_waits_until_the_holder_lets_go_and_reports_the_wait_once(db, folder):
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with backend_for(db).lock(db, 5):
            held.set()
            release.wait(20)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(20)
    events = []

    def progress(event: migrate.Event) -> None:
        events.append(event)
        if event.kind == "waiting":
            threading.Timer(0.3, release.set).start()

    try:
        result = migrate.up(db, folder, backup=False, lock_timeout=20, progress=progress)
    finally:
        release.set()
        thread.join(20)
    assert result.names == ["0001_users", "0002_posts"]
    waits = [e for e in events if e.kind == "waiting"]
    assert len(waits) == 1 and waits[0].pid == os.getpid()


def test_the_timeout_names_the_lock_and_the_wait(db, folder):
    with backend_for(db).lock(db, 5):
        with pytest.raises(MigrationLockTimeout) as info:
            migrate.up(db, folder, backup=False, lock_timeout=0.2)
    assert str(info.value) == (
        f"another migration runner held the lock on {_where(db)} for 0.2 s: wait for it to "
        "finish (or stop it), then run the command again"
    )
    assert migrate.current_version(db) is None  # not even the history table was made


def test_the_lock_file_sits_beside_the_database_and_is_emptied_after_the_run(
    sqlite_file_url, folder, tmp_path
):
    import embeddb

    db = embeddb.connect(sqlite_file_url)
    lock = Path(db.database + ".migrate-lock")
    seen = []
    migrate.up(db, folder, backup=False, progress=lambda e: seen.append(lock.read_text()))
    assert set(seen) == {f"{os.getpid()}\n"}  # the holder's pid while it runs
    assert lock.read_bytes() == b""
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_holder_that_wrote_no_pid_is_waited_for_as_unknown(cli_db_url, folder):
    """The holder may not have written its pid yet (or is another tool): the wait is reported
    with pid None, never a crash."""
    import fcntl

    import psycopg2

    import embeddb
    from embeddb.migrate.lock import _lock_key

    db = embeddb.connect(cli_db_url)  # a file or a schema: the holder can be outside
    if db.backend == "postgresql":
        holder = psycopg2.connect(database=db.database, **db.connect_params)
        holder.autocommit = True
        with holder.cursor() as cur:
            cur.execute("SELECT current_schema()")
            key = _lock_key(f"embeddb_migrations:{cur.fetchone()[0]}")
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
        release = holder.close
    else:
        fd = os.open(db.database + ".migrate-lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, file left empty
        release = lambda: os.close(fd)  # noqa: E731
    events = []
    try:
        with pytest.raises(MigrationLockTimeout):
            migrate.up(db, folder, backup=False, lock_timeout=0.3, progress=events.append)
    finally:
        release()
        db.close_all() if db.backend == "postgresql" else db.close()
    assert [(e.kind, e.pid) for e in events] == [("waiting", None)]


def test_postgres_lock_is_held_in_the_migrated_database(pg_schema_url, folder):
    """Advisory locks are per database: taken anywhere else, runners on two databases with the
    same schema name would wait for each other, and two on this one would not."""
    import embeddb

    db = embeddb.connect(pg_schema_url)
    held = []

    def progress(event: migrate.Event) -> None:
        if event.kind == "applying":
            held.append(db.execute_sql(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (f"embeddb-migrate pid {os.getpid()}",)).fetchone()[0])

    try:
        migrate.up(db, folder, backup=False, progress=progress)
    finally:
        db.close_all()
    assert held == [1, 1]
