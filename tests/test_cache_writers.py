"""Writers with no cache of their own: no filesystem work per write, and still no stale entry in
another process's cache (README, Cache: "with or without a cache of its own")."""

from __future__ import annotations

import os
import threading
import time

import peewee
import pytest

import embeddb
from embeddb.cache import Cache, placement, tiered
from embeddb.models import BaseModel
from embeddb.repository import Repository


class Memo(BaseModel):
    body = peewee.TextField()


@pytest.fixture
def stats_of(monkeypatch):
    """Paths os.stat is called with (os.path.isdir/exists go through it), from now on."""
    seen: list[str] = []
    real = os.stat

    def stat(path, *args, **kwargs):
        seen.append(os.fspath(path) if not isinstance(path, int) else "")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    return seen


@pytest.mark.parametrize("url", ["file", "memory"])
def test_writes_without_a_cache_do_no_filesystem_work(url, tmp_path, stats_of):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}" if url == "file" else
                         "sqlite:///:memory:")
    db.bind([Memo])
    db.create_tables([Memo])
    repo = Repository(Memo, db)
    directory = placement.default_directory(db)
    stats_of.clear()
    start = time.monotonic()
    for i in range(50):
        memo = repo.create(body=str(i))
        repo.update(memo, body="x")
        repo.update(memo.id, body="y")
        repo.update_where({"body": "z"}, body="y")
        repo.delete(memo.id)
    looked = [p for p in stats_of if directory and p.startswith(directory)]
    allowed = 1 + int((time.monotonic() - start) / tiered.RECHECK) if url == "file" else 0
    assert len(looked) <= allowed, looked  # 250 writes: one look per RECHECK seconds at most
    assert directory is None or not os.path.exists(directory)  # nothing was created
    assert tiered.registered(db) is None
    db.close()


def test_a_cache_made_after_a_writer_looked_never_serves_an_old_value(sqlite_file_url):
    """The README's promise from the first read: once the writer's update has returned, the
    reader sees it, though the writer looked for a cache before this one existed (and so did
    not invalidate it)."""
    writer_db = embeddb.connect(sqlite_file_url)  # two engines: two processes' views of a file
    reader_db = embeddb.connect(sqlite_file_url)
    for db in (writer_db, reader_db):
        db.bind([Memo])
    writer_db.create_tables([Memo])
    writer = Repository(Memo, writer_db)
    memo = writer.create(body="a")  # the writer looks: nobody caches the file yet
    updated = threading.Event()
    seen: list[str] = []
    made: list[Cache] = []

    def read() -> None:
        started = time.monotonic()
        cache = Cache.for_database(reader_db)  # a new directory: usable only after GRACE
        made.append(cache)
        seen.append(f"{time.monotonic() - started:.2f}")
        reader = Repository(Memo, reader_db, cache=cache)
        seen.append(reader.get(memo.id).body)
        updated.wait(10)
        seen.append(reader.get(memo.id).body)

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.1)
    writer.update(memo, body="b")  # too soon after its look: it does not see the new cache
    updated.set()
    thread.join(10)
    assert float(seen[0]) >= tiered.GRACE - 0.15  # the cache waited for the writers
    assert seen[1:] == ["b", "b"]
    cache = made[0]
    reader = Repository(Memo, reader_db, cache=cache)
    assert reader.get(memo.id).body == "b"
    assert cache.stats()["l1"]["hits"] >= 1  # entries are kept at once once it is usable
    writer.update(memo, body="c")  # its RECHECK is over: it looks, finds the cache, invalidates
    assert reader.get(memo.id).body == "c"
    cache.close()


def test_a_removed_cache_directory_is_not_served_before_writers_looked_again(sqlite_file_url):
    """The directory is removed under a reader; a writer with no cache looks while it is
    missing; the reader re-creates it at its next read. Until the writer has looked again
    (GRACE), nothing the reader loads may be served: the writer's update is not told."""
    import shutil

    from embeddb.cache import generations

    writer_db = embeddb.connect(sqlite_file_url)
    reader_db = embeddb.connect(sqlite_file_url)
    for db in (writer_db, reader_db):
        db.bind([Memo])
    writer_db.create_tables([Memo])
    cache = Cache.for_database(reader_db)
    try:
        reader = Repository(Memo, reader_db, cache=cache)
        writer = Repository(Memo, writer_db)
        shutil.rmtree(placement.default_directory(reader_db))
        time.sleep(generations.RECHECK_SECONDS + 0.05)  # the reader's next read checks the file
        memo = writer.create(body="a")  # the writer looks: no directory
        assert reader.get(memo.id).body == "a"  # re-creates the directory and its counters
        writer.update(memo, body="b")  # within the writer's RECHECK: nobody is told
        assert reader.get(memo.id).body == "b"
        time.sleep(tiered.GRACE)
        assert reader.get(memo.id).body == "b"
        writer.update(memo, body="c")  # it looks again, finds the directory, invalidates
        assert reader.get(memo.id).body == "c"
        assert reader.get(memo.id).body == "c" and cache.stats()["l1"]["hits"] >= 1
    finally:
        cache.close()


@pytest.mark.parametrize("url", ["file", "memory"])
def test_a_cache_made_in_this_process_hears_of_the_next_write(url, tmp_path):
    """A writer that found no cache skips looking again for a while (on :memory: for good);
    a cache made meanwhile in the same process for its database still hears of each write."""
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}" if url == "file" else
                         "sqlite:///:memory:")
    db.bind([Memo])
    db.create_tables([Memo])
    writer = Repository(Memo, db)  # no cache of its own
    memo = writer.create(body="a")
    writer.update(memo.id, body="b")  # looked: nothing to tell, and remembers it
    cache = Cache.for_database(db, directory=tmp_path / "made-now")
    assert cache.get_row(Memo, memo.id)["body"] == "b"  # cached
    writer.update(memo.id, body="c")
    assert cache.get_row(Memo, memo.id)["body"] == "c"
    writer.update_where({"body": "d"}, body="c")
    assert cache.get_row(Memo, memo.id)["body"] == "d"
    cache.close()
    db.close()


def test_a_row_cached_before_its_directory_was_removed_is_not_served_after_it(sqlite_file_url):
    """The reader caches a row; the directory is removed; a writer with no cache changes the
    row unseen. Once the re-created directory is usable, the reader must not serve the row it
    cached against the old counters (its write count matched the new file's)."""
    import shutil

    from embeddb.cache import generations

    writer_db = embeddb.connect(sqlite_file_url)
    reader_db = embeddb.connect(sqlite_file_url)
    for db in (writer_db, reader_db):
        db.bind([Memo])
    writer_db.create_tables([Memo])
    writer = Repository(Memo, writer_db)
    memo = writer.create(body="a")
    cache = Cache.for_database(reader_db)
    try:
        reader = Repository(Memo, reader_db, cache=cache)
        assert reader.get(memo.id).body == "a"
        assert reader.get(memo.id).body == "a" and cache.stats()["l1"]["hits"] == 1
        shutil.rmtree(placement.default_directory(reader_db))
        time.sleep(generations.RECHECK_SECONDS + 0.05)
        writer.update(memo, body="b")  # looks: no directory, tells nobody
        assert reader.get(memo.id).body == "b"  # re-created: young, served from the database
        time.sleep(tiered.GRACE + 0.05)
        assert reader.get(memo.id).body == "b"  # the entry cached before the removal is gone
    finally:
        cache.close()
