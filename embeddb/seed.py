"""Seeding: environment-specific data sets applied idempotently.

A seed set is a Python file ``<directory>/<env>.py`` defining ``build(seed: int)``, which returns
``[(Model, rows), ...]`` in foreign-key order, rows being dicts (a generator keeps memory flat).
Rows are upserted by id: running a set twice changes nothing, and the production set refuses to
run without ``force``. How long the write lock is held depends on what is promised:

- by default the rows go in short transactions (each holds SQLite's write lock for at most
  about :data:`LOCK_BOUND` seconds), so the application's writers wait a moment and succeed
  while a long seed runs; an interrupted seed leaves the rows it got to (nothing is deleted),
  and running it again finishes the job;
- ``fresh`` (and ``atomic``) run in one transaction: ``--fresh`` empties the set's tables first
  in that same transaction, so an interrupted or failed run leaves the old rows, never empty
  tables, at the price of holding the write lock for the whole load.

A set whose rows are pure data made from the seed (its generators read no database, open no
files, need no live objects) may say so with ``PARALLEL = True``: on Linux its rows are then
generated and converted in a forked worker process while this one writes them.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import folders
from .dialect import quote
from .errors import EmbeddbError
from .repository import Repository, UpsertBatch

if TYPE_CHECKING:  # it writes through repositories: peewee needs the engines themselves
    from .database import Database

ENV_DIR = folders.SEEDS_ENV
DEFAULT_DIR = folders.SEEDS_DEFAULT
#: Sets that write to a live system: they run only when forced.
PROTECTED = frozenset({"production", "prod"})
#: The seed used when none is given, so that a set's data is the same on every machine.
DEFAULT_SEED = 1
#: Rows per INSERT batch: small enough for the writer and the worker to overlap well.
BATCH_ROWS = 1000
#: seconds a seed outside one transaction holds the write lock at most (about: one batch more)
LOCK_BOUND = 1.0
#: the pause after each of those transactions, so a writer polling for the lock gets it
_WRITER_GAP = 0.1
#: Bytes of prepared batches the worker may have in flight (the pipe's buffer).
PIPE_BYTES = 1 << 20

Progress = Callable[[str, int], None]


class SeedError(EmbeddbError):
    """A seed set is missing, malformed, or refused to run."""


@dataclass
class SeedResult:
    """What a seed run did per table: rows the set gave, rows that changed (inserted, or
    updated because a value differed; with ``fresh``, every row), rows deleted first, and how
    many the table holds now."""

    env: str
    seed: int
    written: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.written.values())

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


def directory_of(directory: str | os.PathLike[str] | None, db: Any = None) -> Path:
    """The seeds folder by :func:`embeddb.folders.resolve`'s rule: the argument, the folder
    embeddb.toml gives ``db``'s name, $EMBEDDB_SEEDS_DIR, ./seeds, or in an empty directory the
    reference app's."""
    return folders.seeds(directory, folders.entry_of(db))


def available(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """The names of the seed sets in ``directory``."""
    folder = directory_of(directory)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def load(env: str, directory: str | os.PathLike[str] | None = None) -> Callable[[int], Any]:
    """The ``build`` function of seed set ``env``.

    :raises SeedError: no such set, or the file does not define ``build(seed)``.
    """
    folder = directory_of(directory)
    path = folder / f"{env}.py"
    if not env.isidentifier() or not path.is_file():
        known = ", ".join(available(folder)) or "none"
        raise SeedError(
            f"no seed set {env!r} in {folder}/ (available: {known}); pass --seeds DIR"
        )
    spec = importlib.util.spec_from_file_location(f"embeddb_seed_{env}", path)
    if spec is None or spec.loader is None:
        raise SeedError(f"{path}: not a Python file that can be loaded")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise SeedError(f"{path}: {type(exc).__name__}: {exc}") from exc
    build = getattr(module, "build", None)
    if not callable(build):
        raise SeedError(f"{path} must define build(seed) returning [(Model, rows), ...]")
    return build


def check_allowed(env: str, force: bool) -> None:
    """:raises SeedError: ``env`` is a protected set (production) and ``force`` is not given."""
    if env in PROTECTED and not force:
        raise SeedError(f"refusing to seed {env!r} without --force: it writes to a live system")


def run(
    db: Database,
    env: str,
    *,
    directory: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
    fresh: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    parallel: bool | None = None,
    atomic: bool = False,
    lock_bound: float = LOCK_BOUND,
) -> SeedResult:
    """Apply seed set ``env`` to ``db`` (already migrated).

    By default in short transactions of at most about ``lock_bound`` seconds each, so other
    writers are never locked out for long; an interrupt leaves part of the new rows, and a
    re-run completes them. ``atomic`` (implied by ``fresh``) makes it one transaction.
    ``fresh`` first empties the set's tables, in that transaction: after an interrupt or a
    failure at any point the tables hold their old rows, or (once committed) the new ones.
    ``parallel`` prepares the rows in a forked process while this one writes them (on Linux,
    in a process with no other thread; elsewhere everything runs here); None (the default)
    follows the set's ``PARALLEL`` flag.

    :raises SeedError: unknown set, a protected set without ``force``, or a malformed set.
    :raises IntegrityError: the data breaks a constraint (nothing is written).
    """
    check_allowed(env, force)
    if not isinstance(lock_bound, (int, float)) or not 0.01 <= lock_bound <= 3600:
        raise SeedError(f"lock_bound={lock_bound!r}: must be 0.01 to 3600 seconds")
    build = load(env, directory_of(directory, db))
    if parallel is None:
        parallel = build.__globals__.get("PARALLEL") is True
    started = time.perf_counter()
    result = SeedResult(env, seed)
    try:
        tables = list(build(seed))
    except Exception as exc:
        raise SeedError(f"seed set {env!r}: build({seed}) failed: {type(exc).__name__}: {exc}") \
            from exc
    existing = set(db.get_tables())
    missing = [m._meta.table_name for m, _ in tables if m._meta.table_name not in existing]
    if missing:
        raise SeedError(f"seed set {env!r} needs table(s) {', '.join(missing)}, which do not "
                        "exist: run `embeddb migrate up` first (or `embeddb setup`)")
    with db.bind_ctx([model for model, _rows in tables]):
        try:
            _write(db, tables, result, progress, parallel, fresh,
                   None if (atomic or fresh) else lock_bound)
        except EmbeddbError:
            raise
        except Exception as exc:  # a row generator failed: nothing was written
            raise SeedError(f"seed set {env!r}: {type(exc).__name__}: {exc}") from exc
    result.counts = count_rows(db, [model._meta.table_name for model, _rows in tables])
    result.seconds = time.perf_counter() - started
    return result


def count_rows(db: Database, tables: Iterable[str]) -> dict[str, int]:
    """Rows in each of ``tables`` (soft-deleted rows included)."""
    return {name: db.execute_sql(f"SELECT count(*) FROM {quote(name)}").fetchone()[0]
            for name in tables}


def _write(
    db: Database, tables: list[Any], result: SeedResult, progress: Progress | None, parallel: bool,
    fresh: bool, bound: float | None,
) -> None:
    """Upsert every table of the set by id (after emptying them, with ``fresh``): all in one
    transaction when ``bound`` is None (an interrupt or failure at any point leaves the old
    rows), else in transactions of about ``bound`` seconds each."""
    worker = _Worker(db, tables, result.env) if parallel and _can_fork() else None
    try:
        with db.atomic() if bound is None else contextlib.nullcontext():
            if fresh:
                for model, _rows in reversed(tables):
                    result.deleted[model._meta.table_name] = _empty(db, model)
            for model, rows in tables:
                name = model._meta.table_name
                repo = Repository(model, db)
                batches = (worker.batches() if worker is not None
                           else repo.upsert_batches(rows, ["id"], batch_size=BATCH_ROWS))
                # dropped indexes would show, and stay dropped after a kill, between commits
                with _indexes_built_after(db, name) if bound is None else contextlib.nullcontext():
                    result.written[name], result.changed[name] = _insert(
                        db, repo, _reported(batches, name, progress), bound)
    finally:
        if worker is not None:
            worker.close()


def _insert(db: Database, repo: Repository, batches: Iterable[UpsertBatch],
            bound: float | None = None) -> tuple[int, int]:
    """Write ``batches``; rows given and rows changed. ``bound`` None: straight into the seed's
    transaction; else each transaction is committed once it has run ``bound`` seconds, so the
    write lock is never held much longer.

    Not :meth:`Repository.write_batches`, whose own ``atomic()`` would be a SAVEPOINT here. On
    SQLite a savepoint open over a load that outgrows the page cache makes the end of every
    row's statement costlier (time in ``sqlite3PagerSavepoint``, most likely releasing the
    statement's part of the in-memory sub-journal): each 10k rows took 38-74 s instead of ~1 s
    and ``seed staging`` never finished. Without the savepoint it stays ~1 s per 10k.
    """
    table = repo.model._meta.table_name
    given = changed = 0
    remaining = iter(batches)
    finished = False
    while not finished:
        finished = True
        with db.atomic() if bound is not None else contextlib.nullcontext():
            started = time.monotonic()
            for batch in remaining:
                changed += max(0, db.insert_rows(table, repo._insert_columns, batch.rows,
                                                 batch.clause))
                given += len(batch.rows)
                if bound is not None and time.monotonic() - started >= bound:
                    finished = False  # commit, let waiting writers in, go on
                    break
        repo._invalidate(every_row=True)  # once committed
        if not finished:
            # A waiting writer's busy handler polls every 100 ms at most: without a pause the
            # next BEGIN IMMEDIATE would take the lock again before it looks
            time.sleep(_WRITER_GAP)
    return given, changed


def _empty(db: Database, model: Any) -> int:
    """Delete every row of ``model``'s table (foreign-key actions apply); the rows deleted."""
    deleted = db.execute_sql(f"DELETE FROM {quote(model._meta.table_name)}").rowcount
    Repository(model, db)._invalidate(every_row=True)
    return max(0, deleted)


@contextlib.contextmanager
def _indexes_built_after(db: Database, table: str) -> Iterator[None]:
    """Into an empty table, load first and build its plain indexes afterwards (on SQLite,
    ~25% faster for the dev set). Runs inside the seed's transaction: if the load fails, the
    rollback brings the indexes back with the rest."""
    empty = db.execute_sql(f"SELECT 1 FROM {quote(table)} LIMIT 1").fetchone() is None
    indexes = db.dialect.rebuildable_indexes(db, table) if empty else []
    for name, _create in indexes:
        db.execute_sql(f"DROP INDEX {quote(name)}")
    yield
    for _name, create in indexes:
        db.execute_sql(create)


def _reported(batches: Iterable[UpsertBatch], table: str,
              progress: Progress | None) -> Iterator[UpsertBatch]:
    """Pass batches through, reporting each one's rows as progress."""
    for batch in batches:
        yield batch
        if progress is not None:
            progress(table, len(batch.rows))


def _can_fork() -> bool:
    """Forking is safe only where it is cheap and no other thread may hold a lock the child
    would need (Linux; macOS system libraries are not fork-safe). The monitor's publisher
    threads do not count: the child gets fresh locks for what they touch."""
    others = [t for t in threading.enumerate() if t is not threading.current_thread()
              and not getattr(t, "embeddb_fork_safe", False)]
    return sys.platform == "linux" and not others


_END = pickle.dumps(None)  # what the worker sends after a table's last batch


class _Failed:
    """What the worker sends instead of a batch when preparing rows raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Worker:
    """Prepares the set's batches (generating the rows and converting them to database
    values) in a forked child while this process writes them.

    The two halves cost about the same, so with a second core a seed takes little more than
    its writes. The set's generators must not use the database (see the module docstring):
    the child never touches a connection. Batches go through a pipe, whose buffer bounds
    memory, and each table ends with None.
    """

    def __init__(self, db: Database, tables: list[Any], env: str) -> None:
        import fcntl  # Linux only, like the worker itself

        receive, send = multiprocessing.Pipe(duplex=False)
        # With the default 64 KiB the child stalls whenever the parent builds an index.
        with contextlib.suppress(OSError):  # capped by /proc/sys/fs/pipe-max-size
            fcntl.fcntl(send.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        state = random.getstate()  # the child's global random would be reseeded
        # A Ctrl-C between fork and the child's SIG_IGN would run the caller's code twice.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid == 0:  # pragma: no cover - the child; coverage cannot see it
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                gc.freeze()  # never collect (so close) a connection the parent left as garbage
                random.setstate(state)
                receive.close()
                _prepare(db, tables, env, send)
            finally:
                os._exit(0)  # no atexit handlers, no flushing of the parent's buffers
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        send.close()
        self.pid, self.receive = pid, receive

    def batches(self) -> Iterator[UpsertBatch]:
        """The next table's batches."""
        while True:
            try:
                message = self.receive.recv()
            except EOFError:
                raise SeedError("the process preparing the seed rows exited unexpectedly; "
                                "nothing was written (parallel=False / --no-parallel runs "
                                "everything in this process)") from None
            if message is None:
                return
            if isinstance(message, _Failed):
                raise message.error
            yield message

    def close(self) -> None:
        """Stop the child (it may still be preparing if a write failed) and reap it.

        An application that reaps children itself (SIGCHLD ignored or handled) may have done
        so already: then the pid may belong to another process and is left alone.
        """
        self.receive.close()
        try:
            if os.waitpid(self.pid, os.WNOHANG) == (0, 0):  # still running
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _prepare(db: Database, tables: list[Any], env: str, send: Any) -> None:
    """The child's work: every table's batches, then None, or the error that stopped it."""
    try:
        for model, rows in tables:
            repo = Repository(model, db)
            for batch in repo.upsert_batches(rows, ["id"], batch_size=BATCH_ROWS):
                try:
                    data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:
                    raise SeedError(
                        f"seed set {env!r}: rows of {model._meta.table_name} cannot be sent to "
                        f"the worker process ({type(exc).__name__}: {exc}); set PARALLEL = "
                        "False in the set or pass --no-parallel") from None
                send.send_bytes(data)
            send.send_bytes(_END)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # the error cannot cross the pipe as itself: send its text
            exc = SeedError(f"seed set {env!r}: {type(exc).__name__}: {exc}")
        send.send(_Failed(exc))
