"""Concurrent read-modify-write on one SQLite file: exact totals, no "database is locked"."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

import embeddb

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
