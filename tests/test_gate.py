"""Writers' turns across processes (embeddb.gate): a write transaction holds an flock on
``<database>.write-lock`` that every embeddb process's writers wait for, given back at COMMIT,
ROLLBACK, a COMMIT sent as SQL, or the holder's death; a forked child never shares its parent's."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import time

import pytest
from dropped_privileges import as_user, needs_root, other_user, shared_directory

import embeddb
from embeddb.errors import OperationalError


def _url(path, timeout: float = 5) -> str:
    return f"sqlite:///{path}?busy_timeout={timeout}"


def _make(path) -> None:
    db = embeddb.connect(_url(path))
    db.execute_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    db.close()


def _file_lock_free(path) -> bool:
    """Whether another open file could take the write lock's flock right now."""
    fd = os.open(f"{os.path.realpath(path)}.write-lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_write_transaction_holds_the_file_lock_until_it_ends(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path))
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (1)")
        assert not _file_lock_free(path)
    assert _file_lock_free(path)
    with pytest.raises(ZeroDivisionError), db.atomic():
        db.execute_sql("INSERT INTO t VALUES (2)")
        assert not _file_lock_free(path)
        1 / 0  # noqa: B018
    assert _file_lock_free(path)  # the rollback gave it back
    assert db.execute_write("INSERT INTO t VALUES (3)") == 1  # the single-statement path
    assert _file_lock_free(path)
    with db.atomic("DEFERRED"):  # a reader takes no turn
        db.execute_sql("SELECT n FROM t").fetchall()
        assert _file_lock_free(path)
    assert [r[0] for r in db.execute_sql("SELECT n FROM t ORDER BY n")] == [1, 3]
    db.close()


def test_a_commit_sent_as_sql_gives_the_turn_back_at_once(tmp_path):
    """Other processes do not wait for this process's next writer to notice."""
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path))
    db.begin()  # a transaction run by hand
    db.execute_sql("INSERT INTO t VALUES (1)")
    assert not _file_lock_free(path)
    db.execute_sql("COMMIT")
    assert _file_lock_free(path)
    assert db.execute_write("INSERT INTO t VALUES (2)") == 1  # and this process's turn too
    assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 2
    db.close()


def _hold(url: str, ready, done) -> None:
    db = embeddb.connect(url)
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (100)")
        ready.set()
        done.wait(30)


def _write(url: str, n: int, out) -> None:
    db = embeddb.connect(url)
    started = time.monotonic()
    try:
        db.execute_write("INSERT INTO t VALUES (?)", (n,))
        out.put(("ok", time.monotonic() - started))
    except OperationalError as exc:
        out.put(("error", str(exc)))
    finally:
        db.close()


def test_another_process_waits_for_the_turn_then_writes(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    ctx = multiprocessing.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=_hold, args=(_url(path), ready, done))
    holder.start()
    assert ready.wait(30)
    blocked = ctx.Process(target=_write, args=(_url(path, 0.3), 1, out))
    blocked.start()
    kind, detail = out.get(timeout=30)
    blocked.join(30)
    assert kind == "error" and "other writers kept writing" in detail, detail
    waiting = ctx.Process(target=_write, args=(_url(path), 2, out))
    waiting.start()
    time.sleep(0.3)
    done.set()  # the holder commits: the waiting writer follows
    holder.join(30)
    kind, _took = out.get(timeout=30)
    waiting.join(30)
    assert kind == "ok", _took
    db = embeddb.connect(_url(path))
    assert [r[0] for r in db.execute_sql("SELECT n FROM t ORDER BY n")] == [2, 100]
    db.close()


def test_a_holder_killed_with_sigkill_frees_the_turn(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(_url(path), ready, done))
    holder.start()
    assert ready.wait(30)
    assert not _file_lock_free(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert _file_lock_free(path)  # the OS let go of it
    db = embeddb.connect(_url(path, 2))
    assert db.execute_write("INSERT INTO t VALUES (1)") == 1
    assert [r[0] for r in db.execute_sql("SELECT n FROM t")] == [1]  # the killed one's is gone
    db.close()


def _child_write(url: str, out) -> None:
    db = embeddb.connect(url)
    try:
        db.execute_write("INSERT INTO t VALUES (7)")
        out.put("written")
    except OperationalError as exc:
        out.put(str(exc))
    finally:
        db.close()


def test_a_forked_child_does_not_share_its_parents_turn(tmp_path):
    """An flock belongs to the open file, which a fork shares: the child opens its own, so it
    waits for the parent's transaction like any other process."""
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (1)")
        child = ctx.Process(target=_child_write, args=(_url(path, 0.3), out))
        child.start()
        seen = out.get(timeout=30)
        child.join(30)
    assert "other writers kept writing" in seen, seen
    assert _file_lock_free(path)  # the child's exit took nothing of the parent's
    child = ctx.Process(target=_child_write, args=(_url(path, 2), out))
    child.start()
    assert out.get(timeout=30) == "written"
    child.join(30)
    db.close()


def test_without_a_lock_file_writes_still_work(tmp_path):
    """When the lock file cannot be opened (here a directory is in its place; likewise a
    read-only folder), SQLite's own busy handler alone orders the writers."""
    path = tmp_path / "app.db"
    _make(path)
    os.mkdir(f"{os.path.realpath(path)}.write-lock")
    db = embeddb.connect(_url(path))
    with db.atomic():
        db.execute_sql("INSERT INTO t VALUES (1)")
    assert db.execute_write("INSERT INTO t VALUES (2)") == 1
    assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 2
    db.close()


def _write_as_owner(path: str) -> int:
    db = embeddb.connect(_url(path))
    try:
        return db.execute_write("INSERT INTO t VALUES (9)")
    finally:
        db.close()


@needs_root
def test_root_gives_the_lock_file_to_the_databases_owner():
    with shared_directory() as home:
        path = str(home / "app.db")
        _make(path)
        os.chmod(path, 0o644)
        os.chown(path, *other_user())
        db = embeddb.connect(_url(path))
        db.execute_write("INSERT INTO t VALUES (1)")
        db.close()
        st = os.stat(path + ".write-lock")
        assert (st.st_uid, st.st_gid) == other_user()
        assert as_user(_write_as_owner, path) == 1


def test_closing_mid_transaction_gives_the_turn_back(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path))
    db.begin()
    db.execute_sql("INSERT INTO t VALUES (1)")
    db.close()  # rolls back; the process may never write again
    assert _file_lock_free(path)
