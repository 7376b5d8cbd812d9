"""The live SQLite file during a restore: who has it open, its exclusive lock, folding its WAL,
keeping it as a safety copy, and renaming the replacement into place (owner and mode kept)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from .. import ownership
from ..errors import BackupError, DatabaseInUse
from . import files, manifest

# A restore waits this long for a writer's transaction to end before calling the database busy.
_LOCK_WAIT = 0.2
_SIDE_FILES = ("-wal", "-shm", "-journal")


def has_content(conn: sqlite3.Connection) -> bool:
    """Whether the database holds any schema (an empty file has nothing worth a safety copy)."""
    return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0


def refuse_if_open(target: str) -> None:
    """:raises DatabaseInUse: a process (this one included) has ``target`` open."""
    pids = _processes_with_open(target)
    if not pids:
        return
    who = "this process" if pids == [os.getpid()] else f"process(es) {', '.join(map(str, pids))}"
    raise DatabaseInUse(
        f"{target} is open in {who}: stop the application (close its connections) and retry"
    )


def _processes_with_open(target: str) -> list[int]:
    """PIDs holding ``target`` open, from /proc (Linux; elsewhere the lock check still runs)."""
    try:
        wanted = os.stat(target)
        entries = os.listdir("/proc")
    except OSError:
        return []
    pids = []
    for entry in entries:
        if entry.isdigit() and _has_open(f"/proc/{entry}/fd", wanted):
            pids.append(int(entry))
    return sorted(pids)


def _has_open(fd_dir: str, wanted: os.stat_result) -> bool:
    try:
        for fd in os.listdir(fd_dir):
            st = os.stat(os.path.join(fd_dir, fd))
            if st.st_ino == wanted.st_ino and st.st_dev == wanted.st_dev:
                return True
    except OSError:  # not ours to inspect, or the process/fd went away
        return False
    return False


@contextmanager
def exclusive(target: str) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's exclusive lock on ``target``: it fails while any other connection reads."""
    conn = sqlite3.connect(target, timeout=_LOCK_WAIT, isolation_level=None)
    try:
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")  # in EXCLUSIVE locking mode the lock stays after COMMIT
        except sqlite3.OperationalError as exc:
            raise DatabaseInUse(
                f"{target} is in use by another connection ({exc}): stop the application "
                "(close its connections) and retry"
            ) from exc
        yield conn
    finally:
        conn.close()


def fold_wal(conn: sqlite3.Connection) -> None:
    """Fold the WAL into the main file and leave WAL mode, so the file alone is the database:
    no -wal of the old data can be left beside the new file, and closing this connection later
    deletes no -wal that a new opener may have created."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("COMMIT")


def safety_copy(target: str, safety_dir: str | None) -> str:
    """Keep the current file as ``<db>.pre-restore-<time>`` (a hard link where possible).

    :raises BackupError: the safety directory cannot be created or written.
    """
    directory = safety_dir or os.path.dirname(target)
    stamp = manifest.now_iso().replace(":", "").replace("-", "").replace("+0000", "Z")
    safety = os.path.join(directory, f"{os.path.basename(target)}.pre-restore-{stamp}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            os.link(target, safety)  # the old inode lives on under this name: no copy needed
        except OSError:
            _copy_file(target, safety)
        files.fsync_path(directory)
    except OSError as exc:
        raise BackupError(
            f"cannot keep the safety copy in {directory}: {exc.strerror} (nothing was restored; "
            "pass --safety-dir DIR)"
        ) from exc
    return safety


def _copy_file(source: str, final: str) -> None:
    with files.staged(final) as temp:
        with open(source, "rb") as src, os.fdopen(files.create_private(temp), "wb") as out:
            files.copy_stream(src, out, "safety copy", None, files.no_progress)
        ownership.like(temp, os.stat(source))
        files.commit(temp, final)


def install(staging: str, target: str, model: os.stat_result | None) -> None:
    """Rename the checked copy over ``target``, dressed as the file it replaces (``model``)."""
    if model is not None:
        ownership.like(staging, model)
    else:
        os.chmod(staging, ownership.default_mode())
    # Side files now can only be strays (the old data's WAL was folded in under the lock): gone
    # before the rename, so none can ever be applied to the new file.
    for suffix in _SIDE_FILES:
        files.discard(target + suffix)
    files.commit(staging, target)
