"""Named locks: one holder of "nightly-report" at a time, across threads, processes and (on
PostgreSQL) machines, released by the OS or the server when the holder dies.

    with db.lock("nightly-report", timeout=5) as held:
        run_report(fencing_token=held.token)

Each acquisition gets a fencing token larger than every earlier one of that name, so a holder
that stalled past its turn can be told apart from the current one by whoever it writes to.

SQLite (and ``:memory:``): an exclusive ``flock`` on a file per name in ``<database>-locks/``
beside the database; the token is kept in that file, written and synced under the lock.
PostgreSQL: an advisory lock on the hashed name, held by a dedicated connection (``session``
scope, independent of the application's transactions) or by the current transaction
(``transaction`` scope, released at COMMIT/ROLLBACK); tokens come from a sequence, which a
rollback never takes back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import psycopg2

from .errors import ConfigurationError, ConnectionFailed, LockTimeout
from .ownership import foreign_owner
from .protocols import Database

if TYPE_CHECKING:
    from .database import PostgresEngine, SqliteEngine

#: The longest wait that makes sense (seconds): a day.
MAX_TIMEOUT = 86400.0
MAX_NAME = 200
SCOPES = ("session", "transaction")
_POLL_SECONDS = 0.01
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_memory_locks: dict[tuple[int, str], threading.Lock] = {}
_memory_tokens: dict[tuple[int, str], int] = {}
_memory_guard = threading.Lock()


@dataclass(frozen=True)
class HeldLock:
    """A lock someone holds, as ``embeddb locks`` lists it."""

    name: str
    pid: int | None  # the holder's process (PostgreSQL: its server process)
    token: int | None
    since: str | None  # UTC, ISO 8601
    scope: str = "session"


def check(name: str, timeout: float | None, scope: str = "session") -> float | None:
    """Validate a lock request; the timeout as a float (None: wait as long as it takes).

    :raises ConfigurationError: an empty or overlong name, a negative, non-numeric or huge
        timeout, or an unknown scope.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a lock needs a name, e.g. db.lock('nightly-report')")
    if len(name) > MAX_NAME:
        raise ConfigurationError(f"lock name is {len(name)} characters; at most {MAX_NAME}")
    if scope not in SCOPES:
        raise ConfigurationError(f"lock scope {scope!r}: use {' or '.join(SCOPES)}")
    return None if timeout is None else check_timeout(timeout)


def check_timeout(timeout: float) -> float:
    """``timeout`` if it is a usable wait for a lock, in seconds (0: do not wait).

    :raises ConfigurationError: negative, not a number, or over :data:`MAX_TIMEOUT`.
    """
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value <= MAX_TIMEOUT:
        raise ConfigurationError(
            f"lock timeout {timeout!r} must be between 0 and {MAX_TIMEOUT:g} seconds"
        )
    return value


def _timed_out(name: str, timeout: float | None) -> LockTimeout:
    return LockTimeout(f"lock {name!r} is held by another holder; gave up after {timeout:g} s")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- SQLite: a file per name --------------------------------------------------------------


def lock_directory(db: SqliteEngine) -> str:
    """``app.db`` -> ``app.db-locks/``."""
    return os.path.abspath(db.database) + "-locks"


def _lock_path(directory: str, name: str) -> str:
    slug = _UNSAFE.sub("_", name)[:60].strip("._") or "lock"
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return os.path.join(directory, f"{slug}-{digest}.lock")


class FileLock:
    """An exclusive ``flock`` on the name's file; ``token`` once held."""

    def __init__(self, db: SqliteEngine, name: str, timeout: float | None) -> None:
        self.db = db
        self.name = name
        self.timeout = timeout
        self.token: int | None = None
        self._fd: int | None = None
        self._memory: threading.Lock | None = None

    def acquire(self) -> Self:
        if self.db.is_memory:
            return self._acquire_in_memory()
        directory = lock_directory(self.db)
        owner = foreign_owner(os.path.abspath(self.db.database))
        try:
            os.makedirs(directory, exist_ok=True)
            if owner is not None:
                os.chown(directory, *owner)
            fd = os.open(_lock_path(directory, self.name), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the lock file for {self.name!r} in {directory}: "
                f"{exc.strerror}"
            ) from exc
        try:
            if owner is not None and os.fstat(fd).st_uid != owner[0]:
                os.fchown(fd, *owner)
            self._wait(fd)
            self.token = _read(fd).get("token", 0) + 1
            _write(fd, {"name": self.name, "token": self.token, "pid": os.getpid(),
                        "since": _now()})
        except BaseException:
            os.close(fd)  # also lets go of the flock, if it was had
            raise
        self._fd = fd
        return self

    def _wait(self, fd: int) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _timed_out(self.name, self.timeout) from None
                time.sleep(_POLL_SECONDS)

    def _acquire_in_memory(self) -> Self:
        key = (id(self.db), self.name)
        with _memory_guard:
            lock = _memory_locks.setdefault(key, threading.Lock())
        got = lock.acquire() if self.timeout is None else lock.acquire(timeout=self.timeout)
        if not got:
            raise _timed_out(self.name, self.timeout)
        with _memory_guard:
            self.token = _memory_tokens[key] = _memory_tokens.get(key, 0) + 1
        self._memory = lock
        return self

    def release(self) -> None:
        if self._memory is not None:
            lock, self._memory = self._memory, None
            lock.release()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                _write(fd, {"name": self.name, "token": self.token})  # keep the token
            finally:
                os.close(fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("token", 0), int) else {}


def _write(fd: int, data: dict[str, Any]) -> None:
    """Replace the file's content and sync it: a token must never go back after a crash."""
    payload = json.dumps(data).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, payload, 0)
    os.fsync(fd)


def held_files(db: SqliteEngine) -> list[HeldLock]:
    """The named locks held on a SQLite file, by any process on this machine."""
    if db.is_memory:
        return []
    directory = lock_directory(db)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in names:
        if not entry.endswith(".lock"):
            continue
        try:
            fd = os.open(os.path.join(directory, entry), os.O_RDONLY)
        except OSError:
            continue
        try:
            try:  # a shared lock is had only when nobody holds it exclusively
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue
            except BlockingIOError:
                pass
            data = _read(fd)
            found.append(HeldLock(str(data.get("name", entry)), data.get("pid"),
                                  data.get("token"), data.get("since")))
        finally:
            os.close(fd)
    return found


# -- PostgreSQL: advisory locks -----------------------------------------------------------

_TOKENS_DDL = "CREATE SEQUENCE IF NOT EXISTS embeddb_lock_tokens"
_NAMES_DDL = (
    "CREATE TABLE IF NOT EXISTS embeddb_lock_names "
    "(key BIGINT PRIMARY KEY, name TEXT NOT NULL, token BIGINT NOT NULL)"
)
_APPLICATION = "embeddb-lock pid "


def lock_key(name: str) -> int:
    """The advisory-lock key of ``name``: a signed 64-bit hash."""
    digest = hashlib.sha256(f"embeddb.lock:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """``pg_advisory_lock`` on the name's key, with a fencing token from a sequence."""

    def __init__(self, db: PostgresEngine, name: str, timeout: float | None, scope: str) -> None:
        self.db = db
        self.name = name
        self.timeout = timeout
        self.scope = scope
        self.key = lock_key(name)
        self.token: int | None = None
        self._conn: Any = None

    def acquire(self) -> Self:
        if self.scope == "transaction":
            if not self.db.in_transaction():
                raise ConfigurationError(
                    f"a transaction-scoped lock ({self.name!r}) needs an open transaction: "
                    "take it inside `with db.atomic():`"
                )
            _ensure_objects(self.db, name=(self.key, self.name))
            conn = self.db.connection()
            with conn.cursor() as cur:
                # a lock timeout is an error, which would abort the caller's transaction
                cur.execute("SAVEPOINT embeddb_lock")
                try:
                    self._wait(cur, "pg_advisory_xact_lock", local=True)
                except BaseException:
                    cur.execute("ROLLBACK TO SAVEPOINT embeddb_lock")
                    raise
                finally:
                    cur.execute("RELEASE SAVEPOINT embeddb_lock")
                cur.execute("SELECT nextval('embeddb_lock_tokens')")  # never rolled back
                self.token = cur.fetchone()[0]
            return self
        self._conn = lock_connection(self.db, "lock", _APPLICATION)
        try:
            _ensure_objects(self.db, self._conn)
            with self._conn.cursor() as cur:
                self._wait(cur, "pg_advisory_lock", local=False)
                self.token = self._token(cur)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        return self

    def _wait(self, cur: Any, function: str, local: bool) -> None:
        try_function = function.replace("pg_advisory", "pg_try_advisory")
        cur.execute(f"SELECT {try_function}(%s)", (self.key,))
        if cur.fetchone()[0]:
            return
        if self.timeout is not None and self.timeout <= 0:
            raise _timed_out(self.name, self.timeout)  # lock_timeout 0 would wait for ever
        wait = "0" if self.timeout is None else f"{max(1, round(self.timeout * 1000))}ms"
        cur.execute("SELECT set_config('lock_timeout', %s, %s)", (wait, local))
        try:
            cur.execute(f"SELECT {function}(%s)", (self.key,))
        except psycopg2.errors.LockNotAvailable:
            raise _timed_out(self.name, self.timeout) from None
        finally:
            if not local:
                cur.execute("SELECT set_config('lock_timeout', '0', false)")

    def _token(self, cur: Any) -> int:
        cur.execute(
            "INSERT INTO embeddb_lock_names (key, name, token) "
            "VALUES (%s, %s, nextval('embeddb_lock_tokens')) "
            "ON CONFLICT (key) DO UPDATE SET token = excluded.token RETURNING token",
            (self.key, self.name),
        )
        return cur.fetchone()[0]

    def release(self) -> None:
        if self._conn is None:
            return  # transaction scope: the COMMIT or ROLLBACK lets go
        conn, self._conn = self._conn, None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        finally:
            conn.close()


def lock_connection(db: PostgresEngine, purpose: str, application: str) -> Any:
    """A dedicated autocommit connection to ``db``'s database that holds advisory locks,
    named ``<application><pid>`` so waiters can tell who holds them.

    :raises ConnectionFailed: the server refused it (the message names the redacted URL).
    """
    params = {**db.connect_params, "application_name": f"{application}{os.getpid()}"}
    try:
        conn = psycopg2.connect(database=db.database, **params)
    except psycopg2.Error as exc:
        raise ConnectionFailed(
            f"cannot open the {purpose} connection to {db.url.redacted()}: "
            f"{' '.join(str(exc).split())}"
        ) from None
    conn.autocommit = True
    return conn


def _ensure_objects(db: PostgresEngine, conn: Any = None, name: tuple[int, str] | None = None) -> None:
    """The token sequence and the name table, created once per database object, on an
    autocommit connection (never inside the caller's transaction); and ``name`` (key, name)
    recorded there, so other sessions can list a transaction-scoped lock by name."""
    known: set[int] = db.__dict__.setdefault("_embeddb_lock_names", set())
    if db.__dict__.get("_embeddb_lock_objects") and (name is None or name[0] in known):
        return
    own = conn is None
    if own:
        conn = lock_connection(db, "lock", _APPLICATION)
    try:
        with conn.cursor() as cur:
            for ddl in (_TOKENS_DDL, _NAMES_DDL):
                try:
                    cur.execute(ddl)
                except (psycopg2.errors.UniqueViolation, psycopg2.errors.DuplicateObject,
                        psycopg2.errors.DuplicateTable):
                    pass  # created at the same moment by another holder: it exists now
            if name is not None:
                cur.execute(
                    "INSERT INTO embeddb_lock_names (key, name, token) VALUES (%s, %s, 0) "
                    "ON CONFLICT (key) DO NOTHING", name,
                )
                known.add(name[0])
    finally:
        if own:
            conn.close()
    db.__dict__["_embeddb_lock_objects"] = True


def held_advisory(db: PostgresEngine) -> list[HeldLock]:
    """The named locks held in this database, by any client of the server."""
    rows = db.execute_sql(
        "SELECT n.name, l.pid, n.token, a.backend_start, a.xact_start, a.application_name "
        "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
        "JOIN embeddb_lock_names AS n "
        "  ON (n.key >> 32) & 4294967295 = l.classid::bigint "
        " AND n.key & 4294967295 = l.objid::bigint "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "ORDER BY n.name"
    ).fetchall() if _names_table_exists(db) else []
    found = []
    for name, pid, token, backend_start, xact_start, application in rows:
        session = (application or "").startswith(_APPLICATION)
        started = backend_start if session else xact_start
        found.append(HeldLock(
            name, pid, token if session else None,  # a transaction's token is its own
            started.strftime("%Y-%m-%dT%H:%M:%SZ") if started is not None else None,
            "session" if session else "transaction",
        ))
    return found


def _names_table_exists(db: PostgresEngine) -> bool:
    return db.execute_sql("SELECT to_regclass('embeddb_lock_names')").fetchone()[0] is not None


# -- the public face ----------------------------------------------------------------------


class Lock:
    """A named lock, taken by ``with`` (or :meth:`acquire`) and given back on exit."""

    def __init__(
        self, db: Database, name: str, timeout: float | None = None, scope: str = "session"
    ) -> None:
        self.name = name
        self.timeout = check(name, timeout, scope)
        self._impl: FileLock | AdvisoryLock = _backend(db).lock(db, name, self.timeout, scope)

    @property
    def token(self) -> int | None:
        """The fencing token of this acquisition (None until acquired)."""
        return self._impl.token

    def acquire(self) -> Self:
        """Wait for the lock (up to ``timeout`` seconds; None: as long as it takes).

        :raises LockTimeout: someone else held it for the whole wait.
        """
        self._impl.acquire()
        return self

    def release(self) -> None:
        self._impl.release()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def held(db: Database) -> list[HeldLock]:
    """Every named lock currently held on ``db`` (where the backend can tell)."""
    return _backend(db).held(db)


# -- backends, by dialect name --------------------------------------------------------------


class _FileLocks:
    """SQLite: a ``flock`` on a file per name beside the database (a thread lock for
    ``:memory:``); SQLite has no lock that ends with a transaction."""

    @staticmethod
    def lock(db: SqliteEngine, name: str, timeout: float | None, scope: str) -> FileLock:
        if scope != "session":
            raise ConfigurationError(
                f"lock {name!r}: SQLite has no transaction-scoped locks; use the default "
                "(the lock is held until the `with` block ends)"
            )
        return FileLock(db, name, timeout)

    held = staticmethod(held_files)


class _AdvisoryLocks:
    """PostgreSQL: advisory locks, session- or transaction-scoped."""

    lock = AdvisoryLock
    held = staticmethod(held_advisory)


#: dialect name -> the named locks of that backend
BACKENDS: dict[str, Any] = {"sqlite": _FileLocks, "postgresql": _AdvisoryLocks}


def _backend(db: Database) -> Any:
    try:
        return BACKENDS[db.dialect.name]
    except KeyError:
        raise ConfigurationError(f"named locks are not supported on {db.dialect.name!r}") from None
