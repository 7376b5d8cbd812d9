"""Concurrent read-modify-write on one SQLite file: exact totals, no "database is locked"."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

import embeddb
from embeddb.errors import OperationalError

THREADS = 8
INCREMENTS = 25


def _increment_many(url: str, start: threading.Event | None, errors: list) -> None:
    db = embeddb.connect(url)
    if start is not None:
        start.wait()
    for _ in range(INCREMENTS):
        try:
            with db.atomic():
                (value,) = db.execute_sql("SELECT n FROM counter WHERE id = 1").fetchone()
                db.execute_sql("UPDATE counter SET n = ? WHERE id = 1", (value + 1,))
        except Exception as exc:  # recorded, then asserted to be absent
            errors.append(repr(exc))
    db.close()


def _process_worker(url: str, start, results) -> None:
    errors: list = []
    go = threading.Event()
    threads = [threading.Thread(target=_increment_many, args=(url, go, errors))
               for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    go.set()
    for thread in threads:
        thread.join()
    results.put(errors)


@pytest.mark.slow
def test_processes_and_threads_increment_without_lost_updates(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    db.execute_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO counter VALUES (1, 0)")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(sqlite_file_url, start, results))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    local_errors: list = []
    local = [threading.Thread(target=_increment_many, args=(sqlite_file_url, None, local_errors))
             for _ in range(THREADS)]
    start.set()
    for thread in local:
        thread.start()
    errors = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    for thread in local:
        thread.join()
    all_errors = [e for chunk in errors for e in chunk] + local_errors
    assert all_errors == []
    expected = (4 * THREADS + THREADS) * INCREMENTS
    assert db.execute_sql("SELECT n FROM counter").fetchone()[0] == expected


def _open_many(paths: list[str], barrier, results) -> None:
    errors = []
    for path in paths:
        barrier.wait(timeout=60)
        try:
            db = embeddb.connect(f"sqlite:///{path}")
            db.execute_sql("SELECT 1").fetchone()
            db.close()
        except Exception as exc:  # recorded, then asserted to be absent
            errors.append(repr(exc))
    results.put(errors)


@pytest.mark.slow
def test_processes_opening_a_new_file_together_all_succeed(tmp_path):
    """Switching a new file to WAL mode races; SQLite refuses at once without retrying."""
    paths = [str(tmp_path / f"new{i}.db") for i in range(15)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_many, args=(paths, barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    errors = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [e for chunk in errors for e in chunk] == []


def test_writers_of_one_process_wait_in_line_and_readers_do_not(tmp_path):
    """A write transaction open in one thread: another thread's write waits on the process's
    own queue (and says so when its busy timeout ends), a reader is not held up at all, and the
    queued writer goes as soon as the first commits."""
    url = f"sqlite:///{tmp_path / 'q.db'}?busy_timeout=0.3"
    db = embeddb.connect(url)
    db.execute_sql("CREATE TABLE t (n INTEGER)")
    db.execute_sql("INSERT INTO t VALUES (0)")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.atomic():
            db.execute_sql("UPDATE t SET n = n + 1")
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    outcome: dict[str, object] = {}

    def write() -> None:
        try:
            with db.atomic():
                db.execute_sql("UPDATE t SET n = n + 10")
        except OperationalError as exc:
            outcome["error"] = str(exc)
        outcome["open"] = db.in_transaction()

    def read() -> None:
        started = time.monotonic()
        with db.atomic("DEFERRED"):
            outcome["read"] = db.execute_sql("SELECT n FROM t").fetchone()[0]
        outcome["read_took"] = time.monotonic() - started

    for target in (write, read):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join(10)
    assert "other writers kept writing" in outcome["error"]
    assert outcome["open"] is False
    assert outcome["read"] == 0 and outcome["read_took"] < 0.3  # the old row, at once
    late = threading.Thread(target=write)
    late.start()
    time.sleep(0.05)
    release.set()  # the holder commits; the queued writer follows
    holder.join(10)
    late.join(10)
    assert db.execute_sql("SELECT n FROM t").fetchone()[0] == 11
    db.close()


def test_single_statement_writes_wait_in_the_same_line(tmp_path):
    """execute_write (the pre-built single-row writes) skips peewee's transactions but not the
    process's writer queue: it waits behind a thread's open write transaction, and gives its
    place back after COMMIT and after a failed statement's ROLLBACK."""
    url = f"sqlite:///{tmp_path / 'w.db'}?busy_timeout=0.3"
    db = embeddb.connect(url)
    db.execute_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (1)")
            holding.set()
            release.wait(10)

    outcome: dict[str, object] = {}

    def write(n: int) -> None:
        db.connect(reuse_if_open=True)  # open: the direct path (a closed one takes atomic())
        try:
            outcome[n] = db.execute_write("INSERT INTO t VALUES (?)", (n,))
        except embeddb.EmbeddbError as exc:
            outcome[n] = exc
        finally:
            db.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    blocked = threading.Thread(target=write, args=(2,))
    blocked.start()
    blocked.join(10)
    assert isinstance(outcome[2], OperationalError)
    assert "other writers kept writing" in str(outcome[2])
    release.set()
    holder.join(10)
    for n in (3, 3, 4):  # the second 3 fails (primary key) and rolls back
        thread = threading.Thread(target=write, args=(n,))
        thread.start()
        thread.join(10)
    assert isinstance(outcome[3], embeddb.IntegrityError) and outcome[4] == 1
    with db.atomic():  # every place was given back: this thread gets the lock at once
        assert [r[0] for r in db.execute_sql("SELECT n FROM t ORDER BY n")] == [1, 3, 4]
    db.close()


def test_an_abandoned_write_transaction_does_not_block_the_process(tmp_path):
    """A thread that ends inside BEGIN, or a connection closed inside one, gives its turn back
    to the next writer instead of making every later write wait out its busy timeout."""
    url = f"sqlite:///{tmp_path / 'a.db'}?busy_timeout=2"
    db = embeddb.connect(url)
    db.execute_sql("CREATE TABLE t (n INTEGER)")

    def abandon() -> None:
        db.begin()
        db.execute_sql("INSERT INTO t VALUES (1)")  # never committed: the thread just ends

    thread = threading.Thread(target=abandon)
    thread.start()
    thread.join()
    started = time.monotonic()
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (2)")
    assert time.monotonic() - started < 1.0
    db.begin()
    db.execute_sql("INSERT INTO t VALUES (3)")
    db.close()  # closed inside a transaction: rolled back, and the turn is free again
    started = time.monotonic()
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (4)")
    assert time.monotonic() - started < 1.0
    assert [r[0] for r in db.execute_sql("SELECT n FROM t ORDER BY n").fetchall()] == [2, 4]
    db.begin()  # a nested BEGIN on the same thread fails at once, as SQLite says
    started = time.monotonic()
    with pytest.raises(OperationalError, match="within a transaction"):
        db.begin()
    assert time.monotonic() - started < 1.0
    db.rollback()
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (5)")
    db.close()


def test_a_transaction_ended_by_raw_sql_frees_the_turn(tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'r.db'}?busy_timeout=2")
    db.execute_sql("CREATE TABLE t (n INTEGER)")
    db.begin()
    db.execute_sql("INSERT INTO t VALUES (1)")
    db.execute_sql("COMMIT")  # not db.commit(): the engine never saw the end
    done: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (2)")
        done.append(time.monotonic() - started)
        db.close()

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(10)
    assert done and done[0] < 1.0
    assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 2
    db.close()
