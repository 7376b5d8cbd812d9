"""The migration lock: two runners on one database never overlap, the second waits (bounded).

PostgreSQL: a session-level advisory lock held on a dedicated autocommit connection. It holds no
transaction and no snapshot, so ``CREATE INDEX CONCURRENTLY`` run by the lock holder (which
waits for every older transaction to finish) does not wait for it. A transaction-level advisory
lock or a locked row would keep a transaction open for the whole run and deadlock with it.

SQLite: an exclusive ``flock`` on a lock file beside the database (never on the database file
itself, whose POSIX locks a close() of another descriptor would drop). Even a runner that bypassed
the lock could not apply a transactional migration twice: it commits together with its
bookkeeping row, whose INSERT fails on the primary key if that version was recorded meanwhile.
A migration that commits on its own (no-transaction, or its own COMMIT) relies on the lock.

The holder's process id is recorded (in the lock file; in the lock connection's
``application_name`` on PostgreSQL) so a waiting runner can say whom it waits for. A lock file
created by root beside another user's database is given to that user, who must be able to
open it on the next run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import psycopg2

from ..errors import MigrationLockTimeout
from ..locks import MAX_TIMEOUT, check_timeout, lock_connection
from ..ownership import foreign_owner

if TYPE_CHECKING:
    from ..database import PostgresEngine, SqliteEngine

__all__ = ["MAX_LOCK_TIMEOUT", "PostgresMigrationLock", "SqliteMigrationLock", "check_timeout"]

MAX_LOCK_TIMEOUT = MAX_TIMEOUT
_POLL_SECONDS = 0.02
_APPLICATION = "embeddb-migrate pid "
_memory_guard = threading.Lock()

OnWait = Callable[[int | None], None]


def _timeout_error(where: str, timeout: float) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"another migration runner held the lock on {where} for {timeout:g} s: wait for it to "
        "finish (or stop it), then run the command again"
    )


class SqliteMigrationLock:
    """``flock`` on ``<database>.migrate-lock``; a per-database thread lock for ``:memory:``."""

    def __init__(self, db: SqliteEngine, timeout: float, on_wait: OnWait | None = None) -> None:
        self.db = db
        self.timeout = timeout
        self.on_wait = on_wait
        self._fd: int | None = None
        self._thread_lock: threading.Lock | None = None

    def __enter__(self) -> Self:
        if self.db.is_memory:
            with _memory_guard:
                self._thread_lock = self.db.__dict__.setdefault(
                    "_embeddb_migration_lock", threading.Lock()
                )
            if not self._thread_lock.acquire(blocking=False):
                if self.on_wait is not None:
                    self.on_wait(os.getpid())
                if not self._thread_lock.acquire(timeout=self.timeout):
                    raise _timeout_error("the in-memory database", self.timeout)
            return self
        database = os.path.abspath(self.db.database)
        path = database + ".migrate-lock"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _give_to(self._fd, foreign_owner(database))
            self._wait(path)
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        return self

    def _wait(self, path: str) -> None:
        fd = self._fd
        assert fd is not None  # opened by __enter__
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not told and self.on_wait is not None:
                    self.on_wait(_pid_in(fd))
                told = True
                if time.monotonic() >= deadline:
                    raise _timeout_error(path, self.timeout) from None
                time.sleep(_POLL_SECONDS)

    def __exit__(self, *exc: object) -> None:
        if self._thread_lock is not None:
            self._thread_lock.release()
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = None


def _give_to(fd: int, owner: tuple[int, int] | None) -> None:
    """Hand the lock file to the database's owner (root running against another user's file),
    also when an older run left it root-owned."""
    if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
        os.fchown(fd, *owner)


def _pid_in(fd: int) -> int | None:
    """The holder's process id, as it wrote it into the lock file (None: not yet written)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class PostgresMigrationLock:
    """``pg_advisory_lock`` on a dedicated connection, keyed by the current schema."""

    def __init__(self, db: PostgresEngine, timeout: float, on_wait: OnWait | None = None) -> None:
        self.db = db
        self.timeout = timeout
        self.on_wait = on_wait
        self._conn: Any = None

    def __enter__(self) -> Self:
        self._conn = lock_connection(self.db, "migration lock", _APPLICATION)
        try:
            self._acquire()
        except BaseException:
            self._conn.close()
            raise
        return self

    def _acquire(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute("SELECT current_schema()")
            schema = cur.fetchone()[0] or "public"
            self.key = _lock_key(f"embeddb_migrations:{schema}")
            cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            if cur.fetchone()[0]:
                return
            if self.on_wait is not None:
                self.on_wait(self._holder(cur))
            if self.timeout <= 0:  # lock_timeout 0 would mean "wait for ever"
                raise _timeout_error(f"schema {schema}", self.timeout)
            wait = f"{max(1, round(self.timeout * 1000))}ms"
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (wait,))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            except psycopg2.errors.LockNotAvailable:
                raise _timeout_error(f"schema {schema}", self.timeout) from None

    def _holder(self, cur: Any) -> int | None:
        """The process id of the embeddb runner holding the lock (None: not one, or gone)."""
        cur.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %s AND l.objid::bigint = %s",
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
        )
        row = cur.fetchone()
        name = row[0] if row else ""
        rest = name[len(_APPLICATION):] if name.startswith(_APPLICATION) else ""
        return int(rest) if rest.isdigit() else None

    def __exit__(self, *exc: object) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            self._conn.close()  # ending the session releases the lock in any case


def _lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key for ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
