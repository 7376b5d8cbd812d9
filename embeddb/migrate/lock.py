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
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from typing import Any, Self

import psycopg2

from ..errors import ConnectionFailed, MigrationLockTimeout

_POLL_SECONDS = 0.02
_memory_guard = threading.Lock()


def _timeout_error(where: str, timeout: float) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"another migration runner held the lock on {where} for {timeout:g} s: wait for it to "
        "finish (or stop it), then run the command again"
    )


class SqliteMigrationLock:
    """``flock`` on ``<database>.migrate-lock``; a per-database thread lock for ``:memory:``."""

    def __init__(self, db: Any, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._fd: int | None = None
        self._thread_lock: threading.Lock | None = None

    def __enter__(self) -> Self:
        if self.db.is_memory:
            with _memory_guard:
                self._thread_lock = self.db.__dict__.setdefault(
                    "_embeddb_migration_lock", threading.Lock()
                )
            if not self._thread_lock.acquire(timeout=self.timeout):
                raise _timeout_error("the in-memory database", self.timeout)
            return self
        path = os.path.abspath(self.db.database) + ".migrate-lock"
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = None
                    raise _timeout_error(path, self.timeout) from None
                time.sleep(_POLL_SECONDS)

    def __exit__(self, *exc: object) -> None:
        if self._thread_lock is not None:
            self._thread_lock.release()
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class PostgresMigrationLock:
    """``pg_advisory_lock`` on a dedicated connection, keyed by the current schema."""

    def __init__(self, db: Any, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self._conn: Any = None

    def __enter__(self) -> Self:
        try:
            self._conn = psycopg2.connect(database=self.db.database, **self.db.connect_params)
        except psycopg2.Error as exc:
            raise ConnectionFailed(
                f"cannot open the migration lock connection to {self.db.url.redacted()}: "
                f"{' '.join(str(exc).split())}"
            ) from None
        self._conn.autocommit = True
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
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{self.timeout}s",))
            try:
                cur.execute("SELECT pg_advisory_lock(%s)", (self.key,))
            except psycopg2.errors.LockNotAvailable:
                raise _timeout_error(f"schema {schema}", self.timeout) from None

    def __exit__(self, *exc: object) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            self._conn.close()  # ending the session releases the lock in any case


def _lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key for ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)
