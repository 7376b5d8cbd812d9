"""Writers' turns across processes (embeddb.gate): a write transaction holds an flock on
``<database>.write-lock`` that every embeddb process's writers wait for, given back at COMMIT,
ROLLBACK, a COMMIT sent as SQL, or the holder's death; a forked child never shares its parent's."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time

import pytest
from dropped_privileges import as_user, needs_root, other_user, shared_directory

import embeddb
from embeddb.errors import OperationalError
from embeddb.gate import WriterGate


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
    umask = os.umask(0o022)
    try:
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (1)")
            assert not _file_lock_free(path)
    finally:
        os.umask(umask)
    assert os.stat(f"{path}.write-lock").st_mode & 0o777 == 0o644  # created by the write
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
    assert _standard_descriptors_in_a_forked_child() == "012"  # none was the lock's stand-in
    db.close()


def _standard_descriptors_in_a_forked_child() -> str:
    """Which of descriptors 0, 1, 2 are open in a child right after os.fork()."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            open_ones = ""
            for fd in (0, 1, 2):
                with contextlib.suppress(OSError):
                    os.fstat(fd)
                    open_ones += str(fd)
            os.write(write, open_ones.encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        return os.read(read, 16).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def _write_as_owner(path: str) -> int:
    db = embeddb.connect(_url(path))
    try:
        return db.execute_write("INSERT INTO t VALUES (9)")
    finally:
        db.close()


@needs_root
@pytest.mark.parametrize("group", ["theirs", "root"])
def test_root_gives_the_lock_file_to_the_databases_owner(group):
    owner = other_user() if group == "theirs" else (other_user()[0], 0)
    with shared_directory() as home:
        path = str(home / "app.db")
        _make(path)
        os.chmod(path, 0o644)
        os.chown(path, *owner)
        db = embeddb.connect(_url(path))
        db.execute_write("INSERT INTO t VALUES (1)")
        db.close()
        st = os.stat(path + ".write-lock")
        assert (st.st_uid, st.st_gid) == owner
        assert as_user(_write_as_owner, path) == 1


def test_closing_mid_transaction_gives_the_turn_back(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path))
    db.begin()
    db.execute_sql("INSERT INTO t VALUES (1)")
    db.close()  # rolls back; the process may never write again
    assert _file_lock_free(path)


def _hold_in_thread(db, holding: threading.Event, release: threading.Event) -> threading.Thread:
    def hold() -> None:
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (100)")
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(30)
    return thread


def test_a_waiting_writer_gives_up_at_its_busy_timeout_not_before_nor_long_after(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    holding, release = threading.Event(), threading.Event()
    holder = _hold_in_thread(embeddb.connect(_url(path)), holding, release)
    db = embeddb.connect(_url(path, 0.3))  # the same file: the same turn in this process
    started = time.monotonic()
    with pytest.raises(OperationalError, match="other writers kept writing"):
        db.execute_write("INSERT INTO t VALUES (1)")
    took = time.monotonic() - started
    release.set()
    holder.join(30)
    assert 0.3 <= took < 1.5, took
    db.close()


def _lock_file_descriptors(path) -> int:
    lock = f"{os.path.realpath(path)}.write-lock"
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{name}") == lock
    return count


def test_one_lock_file_opened_once_for_every_write_and_every_path_of_the_file(tmp_path):
    """Every embeddb database object of one file in a process, whatever path opened it (a
    symlink, a relative path), shares one turn and one descriptor of ``<real path>.write-lock``."""
    path = tmp_path / "app.db"
    _make(path)
    os.symlink(path, tmp_path / "link.db")
    dbs = [embeddb.connect(_url(path)), embeddb.connect(_url(path)),
           embeddb.connect(_url(tmp_path / "link.db"))]
    for n in range(20):
        db = dbs[n % 3]
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (?)", (n,))
            assert not _file_lock_free(path)
        db.execute_write("INSERT INTO t VALUES (?)", (200 + n,))
    assert _lock_file_descriptors(path) == 1
    assert not os.path.exists(tmp_path / "link.db.write-lock")
    holding, release = threading.Event(), threading.Event()
    holder = _hold_in_thread(dbs[0], holding, release)
    with pytest.raises(OperationalError, match="other writers kept writing"):
        embeddb.connect(_url(tmp_path / "link.db", 0.2)).execute_write("INSERT INTO t VALUES (1)")
    release.set()
    holder.join(30)
    for db in dbs:
        db.close()


@contextlib.contextmanager
def _file_lock_held(path):
    """The write lock's flock, held by another open file as another process would."""
    fd = os.open(f"{os.path.realpath(path)}.write-lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_writer_that_timed_out_on_another_process_can_close_and_write_again(tmp_path):
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path, 0.2))
    with _file_lock_held(path):
        with pytest.raises(OperationalError, match="other writers kept writing"):
            db.execute_write("INSERT INTO t VALUES (1)")
        db.close()
    assert db.execute_write("INSERT INTO t VALUES (2)") == 1
    db.close()
    assert _file_lock_free(path)


class _Interrupted(BaseException):
    pass


def test_a_writer_interrupted_while_waiting_for_another_process_gives_its_turn_back(tmp_path):
    """e.g. Ctrl-C: the exception leaves, the turn is this process's other writers' again."""
    assert threading.current_thread() is threading.main_thread()  # where signals are handled
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path, 30))
    main = threading.get_ident()

    def interrupt_once_waiting() -> None:
        deadline = time.monotonic() + 30
        while _lock_file_descriptors(path) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # opened by the writer right before it polls the flock
        signal.pthread_kill(main, signal.SIGUSR1)

    def raise_interrupted(signum, frame):
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        with _file_lock_held(path):
            interrupter = threading.Thread(target=interrupt_once_waiting)
            interrupter.start()
            started = time.monotonic()
            with pytest.raises(_Interrupted):
                db.execute_write("INSERT INTO t VALUES (1)")
            interrupter.join(30)
            assert time.monotonic() - started < 20  # interrupted, not timed out
    finally:
        signal.signal(signal.SIGUSR1, previous)
    db.close()
    other = embeddb.connect(_url(path, 2))
    assert other.execute_write("INSERT INTO t VALUES (2)") == 1
    assert db.execute_write("INSERT INTO t VALUES (3)") == 1
    assert [r[0] for r in other.execute_sql("SELECT n FROM t ORDER BY n")] == [2, 3]
    other.close()
    db.close()


def test_a_turn_taken_but_not_yet_begun_is_not_taken_from_a_live_holder(tmp_path):
    """Between the turn and its BEGIN (which may wait on a writer without embeddb), the holder
    is not in a transaction yet; a waiting writer must not mistake it for one that ended."""
    path = tmp_path / "app.db"
    _make(path)
    gate = WriterGate(os.path.realpath(path))
    mine, theirs = sqlite3.connect(path, check_same_thread=False), sqlite3.connect(path)
    took, release = threading.Event(), threading.Event()

    def take() -> None:
        assert gate.enter(mine, 5) is True
        took.set()
        release.wait(30)
        gate.leave(mine)

    holder = threading.Thread(target=take)
    holder.start()
    assert took.wait(30)
    assert gate.enter(theirs, 0.3) is False
    assert not _file_lock_free(path)
    release.set()
    holder.join(30)
    assert gate.enter(theirs, 5) is True
    gate.leave(theirs)
    assert _file_lock_free(path)
    mine.close()
    theirs.close()
    gate.after_fork()  # (closes the lock file)


def test_a_thread_that_ended_in_a_transaction_kept_alive_by_a_cycle_frees_sqlites_lock(tmp_path):
    """The ended thread's frame stays in a reference cycle (a traceback it kept): taking its
    turn back collects it, so its connection rolls back instead of holding SQLite's lock."""
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path, 1))

    def abandon() -> None:
        db.begin()
        cursor = db.execute_sql("INSERT INTO t VALUES (1)")
        try:
            raise ValueError
        except ValueError:
            kept = sys.exc_info()[2]  # frame -> traceback -> frame
        assert cursor is not None and kept is not None

    gc.disable()  # only the gate's own collection may free it
    try:
        thread = threading.Thread(target=abandon)
        thread.start()
        thread.join(30)
        with db.atomic():
            db.execute_sql("INSERT INTO t VALUES (2)")
    finally:
        gc.enable()
    assert [r[0] for r in db.execute_sql("SELECT n FROM t")] == [2]
    db.close()


def test_a_holder_that_ends_or_closes_through_the_driver_gives_its_turn_back(tmp_path):
    """A live thread that committed or closed on the sqlite3 connection itself (not through
    embeddb) no longer holds the turn: the next writer takes it back at once."""
    path = tmp_path / "app.db"
    _make(path)
    db = embeddb.connect(_url(path, 2))
    for n, end in ((1, "commit"), (2, "close")):
        ended, release = threading.Event(), threading.Event()

        def hold(n=n, end=end, ended=ended, release=release) -> None:
            db.begin()
            db.execute_sql("INSERT INTO t VALUES (?)", (n,))
            getattr(db.connection(), end)()
            ended.set()
            release.wait(30)
            db.close()

        holder = threading.Thread(target=hold)
        holder.start()
        assert ended.wait(30)
        started = time.monotonic()
        assert db.execute_write("INSERT INTO t VALUES (?)", (10 + n,)) == 1
        assert time.monotonic() - started < 1.5  # not its busy timeout
        release.set()
        holder.join(30)
    assert [r[0] for r in db.execute_sql("SELECT n FROM t ORDER BY n")] == [1, 11, 12]
    db.close()


def _fork_and_hold(url: str, out) -> None:
    db = embeddb.connect(url)
    db.begin()
    db.execute_sql("INSERT INTO t VALUES (100)")
    if os.fork() == 0:  # a worker forked mid-transaction: it lives on after its parent
        out.put(os.getpid())  # (fork() returned here: the at-fork reset has run)
        time.sleep(60)  # until the test kills it
        os._exit(0)
    time.sleep(60)  # until the test kills it


def test_a_forked_child_does_not_keep_its_dead_parents_file_lock(tmp_path):
    """The child closes its inherited descriptor of the lock file: otherwise the open file,
    and the flock on it, would outlive a parent killed inside a transaction."""
    path = tmp_path / "app.db"
    _make(path)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    holder = ctx.Process(target=_fork_and_hold, args=(_url(path), out))
    holder.start()
    child = out.get(timeout=30)
    try:
        assert not _file_lock_free(path)
        os.kill(holder.pid, signal.SIGKILL)
        _wait_until_dead(holder.pid)  # (join() would wait for the child too: it has the pipe)
        assert _file_lock_free(path)  # while the child still runs
        os.kill(child, 0)
        db = embeddb.connect(_url(path, 2))
        assert db.execute_write("INSERT INTO t VALUES (1)") == 1
        db.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        holder.join(30)


def _wait_until_dead(pid: int) -> None:
    """Until ``pid`` is a zombie: the kernel has closed all its files."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} still running")


def _report_unraisable(seen, out) -> None:
    out.put(list(seen))


def test_forking_reports_no_error_whatever_state_the_lock_files_are_in(tmp_path, monkeypatch):
    """The child's reset runs for every gate of the process: one never written through (no
    lock file opened), one whose lock file cannot be opened, one holding its descriptor."""
    for name in ("idle.db", "dir.db", "open.db"):
        _make(tmp_path / name)
    os.mkdir(f"{os.path.realpath(tmp_path / 'dir.db')}.write-lock")
    dbs = [embeddb.connect(_url(tmp_path / name)) for name in ("idle.db", "dir.db", "open.db")]
    for db in dbs[1:]:
        db.execute_write("INSERT INTO t VALUES (1)")
    seen: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(repr(u.exc_value)))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_report_unraisable, args=(seen, out))
    child.start()
    assert out.get(timeout=30) == []
    child.join(30)
    for db in dbs:
        db.close()


def test_a_failed_commit_keeps_the_turn_while_its_transaction_stays_open(tmp_path):
    """SQLite keeps the transaction open when COMMIT fails (here a deferred foreign key): the
    turn stays with it until the rollback, or another process could write in between."""
    path = tmp_path / "app.db"
    db = embeddb.connect(_url(path))
    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
                   " DEFERRABLE INITIALLY DEFERRED)")
    db.begin()
    db.execute_sql("INSERT INTO child VALUES (1)")
    with pytest.raises(embeddb.IntegrityError):
        db.commit()
    assert db.connection().in_transaction
    assert not _file_lock_free(path)
    db.rollback()
    assert _file_lock_free(path)
    assert db.execute_sql("SELECT count(*) FROM child").fetchone()[0] == 0
    db.close()
