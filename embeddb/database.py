"""The database classes embeddb hands out, and :func:`connect` which builds them from a URL.

Both are peewee databases (models, queries and ``atomic()`` work as in peewee) with what an
embedded engine needs on top: tuned connections, write transactions that take the lock up front,
after-commit callbacks that respect savepoints, errors translated into :mod:`embeddb.errors`,
and ``info()`` / ``health()`` / ``pool_stats()`` for operators.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from . import audit, config, dialect
from .errors import (
    ConfigurationError,
    ConnectionFailed,
    DatabaseNotFound,
    OperationalError,
    PoolExhausted,
    translate,
)
from .gate import WriterGate, closed, writer_gate
from .url import DatabaseURL, parse, scrub

if TYPE_CHECKING:
    from .monitor import Monitor

_peewee_logger = logging.getLogger("peewee")
#: the logger's own memo of isEnabledFor (emptied by logging whenever a level changes): a
#: False found here spares hot paths the call; anything else asks the logger
_peewee_levels: dict[int, bool] = getattr(_peewee_logger, "_cache", {})
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_logger = logging.getLogger("embeddb")
#: turns DB-API errors into peewee's classes
_driver_errors = peewee.__exception_wrapper__  # type: ignore[attr-defined]
#: SQLITE_READONLY_DIRECTORY: a read-only WAL database whose -shm file cannot be created
_READONLY_DIRECTORY = 1544


class _TrackedSavepoint(peewee._savepoint):
    """A savepoint that forgets the after-commit callbacks registered inside it on rollback.

    peewee 4.5 keeps them and runs them when the outer transaction commits, which would announce
    work that was rolled back.
    """

    def __enter__(self) -> _TrackedSavepoint:
        self._mark = len(self.db._state.commit_callbacks)
        return super().__enter__()

    def rollback(self, begin: bool = True) -> None:
        super().rollback(begin)
        del self.db._state.commit_callbacks[self._mark:]


if TYPE_CHECKING:  # the engines mix Engine into a peewee database class
    _PeeweeDatabase = peewee.Database
else:
    _PeeweeDatabase = object


def _driver_error(exc: Exception, redact: str | None) -> Exception:
    """The embeddb error for a DB-API error, as ``with _driver_errors:`` and
    :func:`~embeddb.errors.translate` would make it."""
    try:
        _driver_errors.__exit__(type(exc), exc, exc.__traceback__)
    except peewee.PeeweeException as wrapped:
        return translate(wrapped, redact)
    return exc


class Engine(_PeeweeDatabase):
    """What both embeddb database classes add to peewee's (mixed in before the peewee class)."""

    dialect: dialect.Dialect
    url: DatabaseURL
    settings: Any  # the backend's config.SqliteSettings or config.PostgresSettings
    _state: Any  # peewee's per-thread connection state (not in its stubs)
    #: the embeddb.toml entry it was opened by (its name and folders), also when opened by the
    #: URL of a ``[databases.NAME]``; another URL gets an entry without a name
    entry: config.NamedDatabase | None = None

    @property
    def name(self) -> str | None:
        """Its embeddb.toml name (``connect("users")``, or ``connect`` by users' URL); None for
        the default database or a URL embeddb.toml does not name."""
        return self.entry.name if self.entry is not None else None

    def savepoint(self) -> _TrackedSavepoint:
        return _TrackedSavepoint(self)

    def lock(self, name: str, timeout: float | None = None, scope: str = "session") -> Any:
        """A named lock (:class:`embeddb.locks.Lock`): ``with db.lock("nightly-report",
        timeout=5) as held: ... held.token``. ``timeout`` None waits as long as it takes."""
        from .locks import Lock

        return Lock(self, name, timeout, scope)

    def after_commit(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """Run ``fn`` once the outermost transaction commits (at once outside a transaction).

        It never runs if that transaction, or the savepoint it was registered in, rolls back.
        """
        return super().after_commit(fn)

    def _run_commit_callbacks(self) -> None:
        """Run every after-commit callback even if one raises: the transaction is committed,
        so an error here must not look like a failed commit (peewee would then try to roll
        back and drop the remaining callbacks). Errors are logged to the "embeddb" logger."""
        callbacks = self._state.commit_callbacks
        todo, callbacks[:] = list(callbacks), []
        for fn in todo:
            try:
                fn()
            except Exception:
                _logger.exception("after-commit callback %r failed", fn)

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)
        except peewee.PeeweeException as exc:
            raise translate(exc, self.url.password) from exc

    def begin(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().begin(*args, **kwargs)
        except peewee.PeeweeException as exc:
            raise translate(exc, self.url.password) from exc
        self._state.audit_pending = None  # never a mark left by an abandoned transaction
        if audit.current() is not None:  # who is writing, for the audit triggers
            try:
                self._state.audit_pending = audit.on_begin(self, args[0] if args else
                                                           kwargs.get("lock_type"))
            except BaseException:
                super().rollback()  # the caller never got the transaction: leave none open
                raise

    def commit(self) -> None:
        pending = getattr(self._state, "audit_pending", None)
        if pending is not None:
            self._state.audit_pending = None
            audit.before_commit(self, pending)
        try:
            super().commit()
        except peewee.PeeweeException as exc:
            raise translate(exc, self.url.password) from exc

    def rollback(self) -> None:
        self._state.audit_pending = None  # the rollback takes the audit rows with it
        try:
            super().rollback()
        except peewee.PeeweeException as exc:
            conn = self._state.conn
            if isinstance(exc, peewee.InterfaceError) and getattr(conn, "closed", False):
                # the server ended the connection (killed, restarted), and its transaction
                # with it: nothing is left to undo, and the error that ended it is the one
                # to see (peewee's atomic() would raise this one in its place)
                return
            raise translate(exc, self.url.password) from exc

    @property
    def observed(self) -> bool:
        """Whether each statement must go through :meth:`execute_sql`, where query hooks
        (monitoring) and peewee's debug log see it."""
        return bool(self.query_hooks) or _peewee_logger.isEnabledFor(logging.DEBUG)

    def execute_fast(self, sql: str, params: Any = ()) -> Any:
        """:meth:`execute_sql` for hot paths (lookups by key, migration statements).

        Skips peewee's per-call bookkeeping unless the database is :attr:`observed`, in which
        case it goes through :meth:`execute_sql` like everything else.
        """
        state = self._state
        if state.closed or self.observed:
            return self.execute_sql(sql, params)
        cursor = state.conn.cursor()
        try:
            with _driver_errors:
                cursor.execute(sql, params)
        except peewee.PeeweeException as exc:
            raise translate(exc, self.url.password) from exc
        return cursor

    def execute_write(self, sql: str, params: Any = (), fetch: bool = False) -> Any:
        """Run one write statement in a transaction of its own (in a savepoint when one is
        open): the rows it returns when ``fetch`` (RETURNING), else how many rows it changed.

        The hot path of single-row writes: standing alone and unobserved, it sends BEGIN
        (IMMEDIATE on SQLite), the statement and COMMIT straight to the driver, skipping
        peewee's transaction objects (taking this process's writer turn and handing an audit
        context over as :meth:`begin` and :meth:`commit` do); otherwise ``atomic()``.
        """
        state = self._state
        conn = state.conn
        begin = self._begin_statement
        if (begin is None or conn is None or state.transactions or self.query_hooks or (
                _peewee_levels.get(logging.DEBUG) is not False
                and _peewee_logger.isEnabledFor(logging.DEBUG))):
            return self._write_in_atomic(sql, params, fetch)
        cursor = getattr(state, "write_cursor", None)
        if cursor is None or cursor.connection is not conn:
            cursor = state.write_cursor = conn.cursor()  # reused: a cursor costs ~1.5 µs
        gate = self._default_gate
        took: bool | None = False
        if gate is not None:  # as begin() does: this process's writers wait in line
            took = gate.enter(conn, self.settings.busy_timeout)
            if took is False:
                raise self._turn_timeout()
        try:
            cursor.execute(begin)  # (no begun mark: this transaction ends right here)
            try:
                # as begin()/commit() do: who is writing, for the audit triggers
                signing = (audit.on_begin(self, None, cursor) if audit.current() is not None
                           else None)
                cursor.execute(sql, params)
                result = cursor.fetchall() if fetch else cursor.rowcount
                if signing is not None:
                    audit.before_commit(self, signing, cursor)
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):  # the first error is the one to see
                    cursor.execute("ROLLBACK")
                raise
        except Exception as exc:
            error = _driver_error(exc, self.url.password)
            if error is exc:
                raise
            raise error from exc
        finally:
            if took:
                gate.leave(conn)  # type: ignore[union-attr]
        return result

    #: what :meth:`begin` sends with no arguments (None: not a plain statement)
    _begin_statement: str | None = None
    #: the writer turn a transaction begun without a lock type waits for (None: none)
    _default_gate: WriterGate | None = None
    #: the error when no writer turn came within the busy timeout (defined by the engine
    #: that has writer turns, SqliteEngine)
    _turn_timeout: Callable[[], OperationalError]

    def _write_in_atomic(self, sql: str, params: Any = (), fetch: bool = False) -> Any:
        """:meth:`execute_write` through ``atomic()``, where query hooks, the monitor and
        peewee's debug log see BEGIN, the statement and COMMIT (a savepoint when nested)."""
        with self.atomic():
            cursor = self.execute_sql(sql, params)
            return cursor.fetchall() if fetch else cursor.rowcount

    def _gated(self, lock_type: str | None) -> bool:
        """Whether a transaction begun with ``lock_type`` (None: the default) first waits
        its turn behind this process's other writers (:meth:`_enter_gate`)."""
        return False

    def _enter_gate(self) -> bool:
        """Wait for this process's turn to write, before BEGIN; whether this call took it.
        Nothing to wait for here (PostgreSQL queues writers by row); SqliteEngine queues
        them per file."""
        return False

    def _gate_begun(self) -> None:
        """The transaction of the turn :meth:`_enter_gate` took has begun."""

    def _leave_gate(self) -> None:
        """Give back the turn :meth:`_enter_gate` took, after COMMIT or ROLLBACK (a no-op
        when none was taken)."""

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row of a prepared statement: the hot path for lookups by key."""
        return self.execute_fast(sql, params).fetchone()

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """Run one statement for many parameter rows; the total number of rows changed."""
        return self._batch(lambda cursor: cursor.executemany(sql, rows), sql, len(rows))

    def insert_rows(
        self, table: str, columns: list[str], rows: list[tuple[Any, ...]], suffix: str = ""
    ) -> int:
        """INSERT ``rows`` into ``table`` the fastest way the driver has (``suffix``: e.g. an
        ON CONFLICT clause); the number of rows changed."""
        return self._batch(
            lambda cursor: self.dialect.insert_rows(cursor, table, columns, rows, suffix),
            f"INSERT INTO {table} ({len(rows)} rows) {suffix}".strip(),
            len(rows),
        )

    def _batch(self, run: Callable[[Any], None], label: str, count: int) -> int:
        start = time.perf_counter()
        error: Exception | None = None
        try:
            cursor = self.cursor()
            with _driver_errors:
                run(cursor)
            return cursor.rowcount
        except peewee.PeeweeException as exc:
            error = translate(exc, self.url.password)
            raise error from exc
        finally:
            for hook in self.query_hooks:  # monitoring sees a batch as one statement
                hook(peewee.QueryEvent(label, (count,), time.perf_counter() - start, error))

    @property
    def backend(self) -> str:
        return self.dialect.name

    def switch_monitoring(self, monitor: Monitor | None) -> None:
        """Switch to the monitored class reporting to ``monitor`` (None: the plain class);
        what :meth:`Monitor.enable` / ``disable`` call."""
        set_monitoring(self, monitor)

    @property
    def monitor(self) -> Monitor:
        """The query monitor (see the monitoring section at the end of this module)."""
        return monitor_of(self)

    def health(self) -> dict[str, Any]:
        """Run a trivial query and report whether it worked and how long it took."""
        start = time.perf_counter()
        opened = self.is_closed()
        try:
            self.execute_sql("SELECT 1").fetchone()
        except Exception as exc:  # a health check reports failures instead of raising them
            return {"ok": False, "error": str(translate(exc, self.url.password))}
        finally:
            if opened and not self.is_closed() and not self.in_transaction():
                self.close()  # give a pooled connection back: checks must not hold one
        return {"ok": True, "latency_ms": round((time.perf_counter() - start) * 1000, 3)}

    def info(self) -> dict[str, Any]:
        """Backend, version, location and the settings in effect, for ``embeddb info``
        (``name``: its embeddb.toml name, None when opened by URL or as the default)."""
        return {
            "name": self.name,
            "backend": self.backend,
            "url": self.url.redacted(),
            **self._location(),
            "settings": self.dialect.describe(self),
        }

    def _location(self) -> dict[str, Any]:
        raise NotImplementedError


class SqliteEngine(Engine, peewee.SqliteDatabase):
    """SQLite tuned for an embedded app: WAL, NORMAL sync, foreign keys, BEGIN IMMEDIATE.

    ``:memory:`` gives one database per object, shared by every thread that uses it (SQLite's
    named in-memory VFS), instead of sqlite3's one empty database per connection.

    ``create=False`` refuses a file that does not exist instead of creating it; ``readonly``
    (which implies it) opens the file with SQLite's ``mode=ro``: nothing is ever written, not
    even the switch to WAL, and a file the user may read but not write works.
    """

    dialect = dialect.SQLITE
    _add_conn_hooks: Callable[[sqlite3.Connection], None]  # peewee's (not in its stubs)
    _lock_type: str | None  # peewee's default for BEGIN (not in its stubs)

    def __init__(
        self, url: DatabaseURL, settings: config.SqliteSettings, *, create: bool = True,
        readonly: bool = False,
    ) -> None:
        self.url = url
        self.settings = settings
        self.readonly = readonly and not url.is_memory
        self._immutable = False
        memory = url.is_memory
        self._anchor: sqlite3.Connection | None = None
        if memory:
            name = f"file:/embeddb-{uuid.uuid4().hex}?vfs=memdb"
            params: dict[str, Any] = {"uri": True}
        else:
            name = _check_sqlite_path(url.path or "", create and not readonly, self.readonly)
            params = {}
        super().__init__(
            name,
            pragmas=self.dialect.pragmas(settings, memory),
            timeout=settings.busy_timeout,
            lock_type="DEFERRED" if self.readonly else "IMMEDIATE",  # read-only: no write lock
            field_types=self.dialect.field_types,
            **params,
        )
        if memory:
            # The in-memory database lives while one connection to it is open.
            self._anchor = sqlite3.connect(name, uri=True, check_same_thread=False)
        #: this process's write transactions on this file go through it one at a time
        self._gate = None if self.readonly else writer_gate(name if memory else self.database,
                                                                 memory)
        self._begin_statement = f"BEGIN {self._lock_type}" if self._lock_type else "BEGIN"
        self._default_gate = self._gate if self._gated(None) else None

    # -- write transactions queue in the process -----------------------------------------------
    # Writers wait for their turn (embeddb.gate: a thread lock, then a file lock across
    # processes) before BEGIN IMMEDIATE, instead of in SQLite's busy handler, whose growing
    # sleeps miss most moments the lock is free. Readers take no part.

    def begin(self, lock_type: str | None = None) -> None:
        took = False
        try:
            if self._gated(lock_type):
                took = self._enter_gate()
            super().begin(lock_type)
            if took:
                self._gate_begun()
        except BaseException:
            if took:
                self._leave_gate()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if not self._driver_in_transaction():  # a failed COMMIT keeps it open: and the turn
                self._leave_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            if not self._driver_in_transaction():
                self._leave_gate()

    def _driver_in_transaction(self) -> bool:
        conn = self._state.conn
        return conn is not None and not closed(conn) and conn.in_transaction

    def _gated(self, lock_type: str | None) -> bool:
        kind = (lock_type or self._lock_type or "").upper()
        return self._gate is not None and kind in ("IMMEDIATE", "EXCLUSIVE")

    def _enter_gate(self) -> bool:
        timeout = self.settings.busy_timeout
        assert self._gate is not None  # _gated() checked
        took = self._gate.enter(self._state.conn or self.connection(), timeout)
        if took is False:
            raise self._turn_timeout()
        return bool(took)

    def _turn_timeout(self) -> OperationalError:
        return OperationalError(
            f"database is locked: other writers kept writing to {self.url.path} for the "
            f"whole busy timeout ({self.settings.busy_timeout:g} s)")

    def _gate_begun(self) -> None:
        if self._gate is not None:
            self._gate.begun(self._state.conn)

    def _leave_gate(self) -> None:
        conn = self._state.conn
        if self._gate is not None and conn is not None:
            self._gate.leave(conn)

    def _close(self, conn: Any) -> None:
        if self._gate is not None:
            self._gate.leave(conn)  # closed mid-transaction: other processes need not wait
        super()._close(conn)  # type: ignore[misc]

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        cursor = super().execute_sql(sql, params)
        if self._gate is not None and self._state.conn is not None:
            self._gate.leave_if_ended(self._state.conn)  # a COMMIT or ROLLBACK sent as SQL
        return cursor

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        # the hot path of every read by key: the driver's own execute, no peewee context
        # manager around it (a driver error is wrapped only once it happened)
        conn = self._state.conn
        if conn is None or self.query_hooks or (
                _peewee_levels.get(logging.DEBUG) is not False
                and _peewee_logger.isEnabledFor(logging.DEBUG)):
            return super().fetch_one(sql, params)
        try:
            return conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _driver_error(exc, self.url.password) from exc

    @property
    def is_memory(self) -> bool:
        return self._anchor is not None

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                conn = self.raw_connection(isolation_level=None)
                try:
                    self._add_conn_hooks(conn)
                except Exception:
                    conn.close()
                    raise
                return conn
            return super()._connect()  # type: ignore[misc]
        except sqlite3.Error as exc:
            raise ConnectionFailed(f"cannot open SQLite database {self.url.path}: {exc}") from exc

    def raw_connection(self, **kwargs: Any) -> sqlite3.Connection:
        """A new plain sqlite3 connection to the same file, opened the same way (read-only
        when this database is), with the busy timeout; ``kwargs`` go to ``sqlite3.connect``.

        Read-only, a file this user may write is opened as usual with ``PRAGMA query_only``
        (so closing the last connection still folds the WAL back and removes -wal/-shm),
        any other with ``mode=ro``. A user who cannot write the directory cannot create the
        ``-shm`` file a WAL database needs when no other connection has it open; with no
        ``-wal`` file either, every commit is in the main file, which is then read as
        immutable (without locks: a writer starting meanwhile is not seen).
        """
        kwargs.setdefault("timeout", self.settings.busy_timeout)
        if self.is_memory:
            return sqlite3.connect(self.database, uri=True, **kwargs)
        if not self.readonly:
            return sqlite3.connect(self.database, **kwargs)
        if os.access(self.database, os.W_OK):
            conn = sqlite3.connect(self.database, **kwargs)
            conn.execute("PRAGMA query_only = 1")
            return conn
        base = f"file:{quote(os.path.abspath(self.database))}?mode=ro"
        if not self._immutable:
            conn = sqlite3.connect(base, uri=True, **kwargs)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.Error as exc:
                conn.close()
                wal = os.path.abspath(self.database) + "-wal"
                if getattr(exc, "sqlite_errorcode", None) != _READONLY_DIRECTORY or \
                        os.path.exists(wal):
                    raise
            self._immutable = True
        return sqlite3.connect(base + "&immutable=1", uri=True, **kwargs)

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        if not self.is_memory and not self.readonly:
            mode = self._switch_to_wal(conn)
            if mode.lower() != "wal":
                raise ConnectionFailed(
                    f"{self.url.path}: SQLite refused WAL mode (got {mode!r}); "
                    "is the file on a network filesystem?"
                )
        super()._set_pragmas(conn)  # type: ignore[misc]

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode (a no-op when it already is); the mode SQLite reports.

        Switching a new file takes an exclusive lock, and SQLite answers "database is locked"
        at once, without the busy handler, when several processes open a new file together;
        so retry with backoff for up to the busy timeout.
        """
        deadline = time.monotonic() + self.settings.busy_timeout
        pause = 0.001
        while True:
            try:
                # fetchall() finishes the statement, so it holds no read lock afterwards.
                return conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def pool_stats(self) -> dict[str, Any]:
        """SQLite has no pool: one connection per thread; whether this thread's is open."""
        return {"pooled": False, "in_use": int(not self.is_closed())}

    @property
    def immutable(self) -> bool:
        """Whether this read-only database is read as immutable (see :meth:`raw_connection`)."""
        return self._immutable

    def file_journal_mode(self) -> str:
        """``wal`` or ``delete``, from the file header (bytes 18-19 are 2 in WAL mode)."""
        with open(self.database, "rb") as fh:
            header = fh.read(20)
        return "wal" if header[18:20] == b"\x02\x02" else "delete"

    def _location(self) -> dict[str, Any]:
        path = ":memory:" if self.is_memory else os.path.abspath(self.database)
        access = "read-only" if self.readonly else "read-write"
        if self.immutable:
            access += " (immutable: the directory is not writable and no WAL is open)"
        return {"path": path, "access": access, "version": sqlite3.sqlite_version}


def _check_sqlite_path(path: str, create: bool = True, readonly: bool = False) -> str:
    if not create and not os.path.exists(path):
        raise DatabaseNotFound(
            f"no database at {path}: check the path (a database is created only where it "
            "is opened for writing, e.g. by `embeddb setup` or `embeddb migrate up`)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"directory {directory} does not exist: create it or point the URL elsewhere"
        )
    if os.path.exists(path):
        wanted, what = (os.R_OK, "readable") if readonly else (
            os.R_OK | os.W_OK, "readable and writable")
        if not os.access(path, wanted):
            raise ConfigurationError(f"{path} is not {what} by this user")
    elif not os.access(directory, os.W_OK):
        raise ConfigurationError(f"directory {directory} is not writable by this user")
    return path


class PostgresEngine(Engine, PooledPostgresqlDatabase):
    """PostgreSQL through a pool of connections, checked on checkout."""

    dialect = dialect.POSTGRES

    def __init__(
        self, url: DatabaseURL, settings: config.PostgresSettings, *, readonly: bool = False
    ) -> None:
        self.url = url
        self.settings = settings
        self.readonly = readonly
        params = url.connect_params()
        params.pop("dbname")  # peewee takes the database name on its own
        params["connect_timeout"] = settings.connect_timeout
        server_options = []
        if settings.schema:
            if not _SCHEMA_NAME.fullmatch(settings.schema):
                raise ConfigurationError(
                    f"schema={settings.schema!r} is not a plain identifier "
                    "(letters, digits, _ and $; not starting with a digit)")
            server_options.append(f'-c search_path="{settings.schema}"')  # quoted: keeps its case
        if readonly:  # the server itself refuses every write of these connections
            server_options.append("-c default_transaction_read_only=on")
        if server_options:
            params["options"] = " ".join(server_options)
        #: connection id -> the thread that checked it out (see _reclaim_from_ended_threads)
        self._owners: dict[int, threading.Thread] = {}
        self._reclaimed = 0
        super().__init__(
            url.database,
            max_connections=settings.max_connections,
            stale_timeout=settings.stale_timeout,
            timeout=settings.timeout,
            field_types=self.dialect.field_types,
            **params,
        )
        self._begin_statement = None if self._isolation_level else "BEGIN"

    def connect(self, reuse_if_open: bool = False) -> bool:
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded as exc:
            raise PoolExhausted(
                f"all {self.settings.max_connections} pooled connections stayed busy for "
                f"{self.settings.timeout} s: raise max_connections or release connections"
            ) from exc

    def _connect(self) -> Any:
        import psycopg2  # here: a SQLite-only app need not have the driver

        with self._pool_lock:
            if len(self._in_use) >= self._max_connections:
                self._reclaim_from_ended_threads()
            try:
                conn = super()._connect()
            except psycopg2.Error as exc:
                raise ConnectionFailed(
                    f"cannot connect to PostgreSQL at {self.url.redacted()}: "
                    f"{scrub(str(exc), self.url.password)}"
                ) from None
            self._owners[id(conn)] = threading.current_thread()
            return conn

    def _reclaim_from_ended_threads(self) -> None:
        """Close the connections still checked out by threads that have ended (a thread that
        never called ``close()``), so they do not hold the pool's places for ever; the server
        rolls back whatever they left open. Called with the pool lock held, when it is full."""
        for key, owner in list(self._owners.items()):
            held = self._in_use.get(key)
            if held is None:
                del self._owners[key]  # back in the pool, or closed
            elif not owner.is_alive():
                del self._in_use[key], self._owners[key]
                self._close_raw(held.connection)
                self._reclaimed += 1

    def _initialize_connection(self, conn: Any) -> None:
        # jsonb comes back as text, as on SQLite, so JSONField decodes one way on both backends
        # (a top-level JSON string would otherwise be indistinguishable from its encoding).
        import psycopg2.extras

        psycopg2.extras.register_default_jsonb(conn, loads=str)
        super()._initialize_connection(conn)

    def check_schema(self) -> None:
        """:raises ConfigurationError: the URL's ``schema`` does not exist on the server."""
        schema = self.settings.schema
        if schema and not self.execute_sql(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            raise ConfigurationError(
                f"schema {schema!r} does not exist in database {self.database}: "
                f"create it (CREATE SCHEMA \"{schema}\") or fix the URL")

    def pool_stats(self) -> dict[str, Any]:
        """Connections checked out, idle in the pool, the pool's maximum, and how many were
        taken back from threads that ended without releasing them; with monitoring on also
        threads waiting, checkouts, checkout wait p95, connections opened and closed."""
        with self._pool_lock:
            found: dict[str, Any] = {
                "in_use": len(self._in_use),
                "idle": len(self._connections),
                "max": self._max_connections,
                "reclaimed": self._reclaimed,
            }
        counters = getattr(self, "_pool_counters", None)
        if counters is not None:
            found.update(counters.as_dict())
        return found

    def _location(self) -> dict[str, Any]:
        version = self.server_version  # e.g. 150019 for 15.19
        return {
            "host": self.url.host,
            "port": self.url.port,
            "database": self.database,
            "schema": self.settings.schema,
            "version": f"{version // 10000}.{version % 10000}" if version else None,
            "pool": self.pool_stats(),
        }


Database = SqliteEngine | PostgresEngine


def connect(
    url: str | None = None, *, create: bool = True, readonly: bool = False, **options: Any
) -> Database:
    """Open the database named by ``url`` (or $EMBEDDB_DATABASE_URL, embeddb.toml, the default).

    ``url`` may be a name of embeddb.toml instead (``connect("users")`` opens
    ``[databases.users]``); a name it does not configure is a ConfigurationError listing the
    configured ones, never a file of that name.

    A SQLite file that does not exist is created, unless ``create=False``. ``readonly=True``
    (implies ``create=False``) is for tools that only look: SQLite opens the file with
    ``mode=ro`` (so it works for a user who may read but not write it, and changes nothing,
    not even the journal mode); PostgreSQL connections get ``default_transaction_read_only``.
    A PostgreSQL database is never created by connecting, whatever ``create`` says.

    ``options`` override the tuning defaults in :mod:`embeddb.config` (e.g. ``synchronous="FULL"``,
    ``busy_timeout=10``, ``max_connections=5``). A connection is opened once to check the database
    is reachable, so a bad URL fails here and not at the first query.

    :raises DatabaseNotFound: ``create=False`` or ``readonly`` and the SQLite file is missing.
    :raises ConfigurationError: unknown scheme, malformed URL, unknown option, unusable path, a
        $EMBEDDB_REDIS_URL or embeddb.toml [cache] redis_url that is not a Redis URL.
    :raises ConnectionFailed: the file cannot be opened or the server does not answer.
    """
    entry = config.database_entry(url)
    config.redis_url_from_environment()  # a bad one fails here, not after a write's commit
    parsed = parse(entry.url)
    query = dict(parsed.options)
    monitoring = config.monitor_settings(options.pop("monitor", None), query.pop("monitor", None))
    db: Database
    if parsed.backend == "sqlite":
        settings = config.build_settings(config.SqliteSettings, query, options)
        db = SqliteEngine(parsed, settings, create=create, readonly=readonly)
    else:
        settings = config.build_settings(config.PostgresSettings, query, options)
        db = PostgresEngine(parsed, settings, readonly=readonly)
    try:
        db.connect(reuse_if_open=True)
        db.execute_sql("SELECT 1").fetchone()
        if isinstance(db, PostgresEngine):
            db.check_schema()
    except peewee.PeeweeException as exc:
        raise ConnectionFailed(f"cannot use {parsed.redacted()}: {translate(exc)}") from exc
    finally:
        if not db.is_closed():
            db.close()
    db.entry = entry
    if monitoring.enabled:
        monitor_of(db, monitoring).enable()
    return db



# ---- monitoring (embeddb.monitor) ---------------------------------------------------------
# A database with monitoring on is switched to a subclass of its class that times every
# statement, BEGIN / COMMIT / ROLLBACK and the hot paths included. A database without it runs
# none of this code: its hot paths keep their benchmark figures.

def monitor_of(db: Engine, settings: config.MonitorSettings | None = None) -> Monitor:
    """``db``'s monitor, created (off) on first use."""
    found = db.__dict__.get("_monitor_object")
    if found is None:
        from .monitor import Monitor

        found = db.__dict__["_monitor_object"] = Monitor(db, settings)
    return found


def set_monitoring(db: Engine, monitor: Monitor | None) -> None:
    """Switch ``db`` to its monitored class with ``monitor`` (None: back to the plain class)."""
    plain = _PLAIN.get(type(db), type(db))
    if monitor is None:
        db.__class__ = plain
        db.__dict__.pop("_monitor", None)
        return
    db.__dict__["_monitor"] = monitor
    monitored = _MONITORED.get(plain)
    if monitored is None:  # an app's own subclass of an engine class
        monitored = _MONITORED[plain] = type(f"Monitored{plain.__name__}", (_Monitored, plain), {})
        _PLAIN[monitored] = plain
    db.__class__ = monitored


class _Monitored:
    """Mixed in before an engine class: every statement reports to ``self._monitor``."""

    _monitor: Monitor

    @property
    def observed(self) -> bool:
        return True  # e.g. migrations then run statement by statement, each one seen

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        start = time.perf_counter()
        try:
            cursor = super().execute_sql(sql, params)  # type: ignore[misc]
        except Exception as exc:
            self._monitor.record(sql, params, time.perf_counter() - start, 0, exc)
            raise
        return self._monitor.executed(sql, params, time.perf_counter() - start, cursor)

    def _run(self, sql: str, params: Any) -> Any:
        cursor = self.cursor()  # type: ignore[attr-defined]
        try:
            with _driver_errors:
                cursor.execute(sql, params)
        except peewee.PeeweeException as exc:
            raise translate(exc, self.url.password) from exc  # type: ignore[attr-defined]
        return cursor

    #: always through atomic(): BEGIN, the statement and COMMIT are each seen (and timed)
    execute_write = Engine._write_in_atomic

    def execute_fast(self, sql: str, params: Any = ()) -> Any:
        if self.query_hooks or _peewee_logger.isEnabledFor(logging.DEBUG):  # type: ignore
            return self.execute_sql(sql, params)
        start = time.perf_counter()
        try:
            cursor = self._run(sql, params)
        except Exception as exc:
            self._monitor.record(sql, params, time.perf_counter() - start, 0, exc)
            raise
        return self._monitor.executed(sql, params, time.perf_counter() - start, cursor)

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self.query_hooks or _peewee_logger.isEnabledFor(logging.DEBUG):  # type: ignore
            return self.execute_sql(sql, params).fetchone()
        start = time.perf_counter()
        try:
            row = self._run(sql, params).fetchone()
        except Exception as exc:
            self._monitor.record(sql, params, time.perf_counter() - start, 0, exc)
            raise
        self._monitor.record(sql, params, time.perf_counter() - start, int(row is not None))
        return row

    def _batch(self, run: Callable[[Any], None], label: str, count: int) -> int:
        start = time.perf_counter()
        try:
            changed = super()._batch(run, label, count)  # type: ignore[misc]
        except Exception as exc:
            self._monitor.record(label, None, time.perf_counter() - start, 0, exc)
            raise
        self._monitor.record(label, None, time.perf_counter() - start,
                             changed if changed >= 0 else count)
        return changed

    def _control(self, statement: str, step: Callable[[], None]) -> None:
        start = time.perf_counter()
        try:
            step()
        except Exception as exc:
            self._monitor.record(statement, None, time.perf_counter() - start, 0, exc)
            raise
        self._monitor.record(statement, None, time.perf_counter() - start, 0)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self._control("BEGIN", lambda: super(_Monitored, self).begin(*args, **kwargs))  # type: ignore[misc]
        self._monitor.transaction_began()

    def commit(self) -> None:
        try:
            self._control("COMMIT", super().commit)  # type: ignore[misc]
        finally:
            self._monitor.transaction_ended()

    def rollback(self) -> None:
        try:
            self._control("ROLLBACK", super().rollback)  # type: ignore[misc]
        finally:
            self._monitor.transaction_ended()


class MonitoredSqliteEngine(_Monitored, SqliteEngine):
    """A :class:`SqliteEngine` whose monitor is on."""


class MonitoredPostgresEngine(_Monitored, PostgresEngine):
    """A :class:`PostgresEngine` whose monitor is on; its pool counts checkouts too."""

    @property
    def _pool_counters(self) -> Any:
        return self._monitor.pool

    def connect(self, reuse_if_open: bool = False) -> bool:
        counters = self._monitor.pool
        counters.enter()
        start, ok = time.perf_counter(), False
        try:
            opened = super().connect(reuse_if_open)
            ok = bool(opened)
            return opened
        finally:
            counters.leave(time.perf_counter() - start, ok)

    def _connect(self) -> Any:
        idle = {id(conn) for _ts, _n, conn in self._connections}
        conn = super()._connect()
        if id(conn) not in idle:
            self._monitor.pool.opened += 1
        return conn

    def _close_raw(self, conn: Any) -> None:
        self._monitor.pool.closed += 1
        super()._close_raw(conn)


_MONITORED: dict[type, type] = {
    SqliteEngine: MonitoredSqliteEngine, PostgresEngine: MonitoredPostgresEngine,
}
_PLAIN: dict[type, type] = {monitored: plain for plain, monitored in _MONITORED.items()}
