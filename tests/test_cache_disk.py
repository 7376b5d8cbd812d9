"""L2 hits read diskcache's table directly: what diskcache's get() would honour, they honour."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import threading

import pytest

from embeddb.cache import Cache

FORK = multiprocessing.get_context("fork")
WAIT = 20


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def writer(cache_dir):
    c = Cache(cache_dir)
    yield c
    c.close()


@pytest.fixture
def reader(cache_dir, writer):
    c = Cache(cache_dir, l1_size=0)  # every read goes to L2
    yield c
    c.close()


def _table(cache_dir: str, sql: str, *params: object) -> list[tuple]:
    con = sqlite3.connect(os.path.join(cache_dir, "l2", "cache.db"))
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_values_kept_in_files_are_read(writer, reader, cache_dir):
    big = {"name": "x" * 100_000, "n": 1}
    writer.set("big", big)
    [(filename,)] = _table(cache_dir, "SELECT filename FROM Cache WHERE filename IS NOT NULL")
    assert os.path.exists(os.path.join(cache_dir, "l2", filename))
    assert reader.get("big") == big
    assert reader.stats()["l2"]["hits"] == 1


def test_expired_entries_are_misses(writer, reader):
    writer.set("gone", "v", ttl=0)
    writer.set("kept", "v", ttl=60)
    assert reader.get("gone") is None
    assert reader.get("kept") == "v"
    stats = reader.stats()["l2"]
    assert (stats["hits"], stats["misses"], stats["errors"]) == (1, 1, 0)


def test_hits_write_nothing(writer, reader, cache_dir):
    # diskcache's get() updates nothing either, under the eviction policy the L2 keeps.
    assert reader.l2._cache.eviction_policy == "least-recently-stored"
    writer.set("k", "v")
    before = _table(cache_dir, "SELECT access_time, access_count FROM Cache")
    for _ in range(3):
        assert reader.get("k") == "v"
    assert _table(cache_dir, "SELECT access_time, access_count FROM Cache") == before


def test_reads_use_diskcache_settings(writer, reader):
    writer.set("k", "v")
    assert reader.get("k") == "v"
    con, settings = reader.l2._local.con, reader.l2._cache
    assert con.execute("PRAGMA mmap_size").fetchone()[0] == settings.sqlite_mmap_size
    assert con.execute("PRAGMA cache_size").fetchone()[0] == settings.sqlite_cache_size


def test_removed_database_file_is_a_counted_miss(writer, reader, cache_dir):
    writer.set("k", "v")
    path = os.path.join(cache_dir, "l2", "cache.db")
    os.remove(path)
    assert reader.get_or_set("k", lambda: "loaded") == "loaded"
    assert reader.stats()["l2"]["errors"] == 2
    assert not os.path.exists(path)  # the read did not create an empty database


def test_each_thread_reads_on_its_own_connection(writer, reader):
    for n in range(20):
        writer.set(n, n)
    start, results = threading.Barrier(8), []

    def read() -> None:
        start.wait(WAIT)
        results.append([reader.get(n) for n in range(20)])

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == [list(range(20))] * 8
    assert reader.stats()["l2"]["errors"] == 0


def _forked_reader(reader, out):
    out.put(hasattr(reader.l2._local, "con"))  # the parent's connection was left behind
    out.put(reader.get("k"))
    out.put(reader.stats()["l2"]["hits"])


def test_a_forked_child_opens_its_own_connection(writer, reader):
    writer.set("k", "v")
    assert reader.get("k") == "v"
    out = FORK.Queue()
    child = FORK.Process(target=_forked_reader, args=(reader, out))
    child.start()
    assert [out.get(timeout=WAIT) for _ in range(3)] == [False, "v", 2]
    child.join(WAIT)
    assert child.exitcode == 0
    assert reader.get("k") == "v"


def test_a_read_nested_inside_a_read_gets_its_own_statement(writer, reader):
    # Code can run in the middle of a read on the same thread (a signal handler, a finalizer);
    # a profile hook makes that happen deterministically, right before the row is fetched.
    writer.set("outer", "v1")
    writer.set("inner", "v2")
    nested = []

    def hook(frame, event, arg):
        if event == "c_call" and getattr(arg, "__name__", "") == "fetchone" and not nested:
            nested.append(None)  # first: the nested read calls fetchone too
            nested[0] = reader.get("inner")

    sys.setprofile(hook)
    try:
        outer = reader.get("outer")
    finally:
        sys.setprofile(None)
    assert (outer, nested) == ("v1", ["v2"])
