"""``embeddb doctor``: what is wrong with a database and what to do, one check a line.

Each check gives OK, WARN or FAIL with a message and, unless OK, the fix. Checks only look:
nothing is written to the database (backups are verified as ``embeddb backup verify`` does).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .cache.placement import default_directory
from .errors import DatabaseError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
#: a newer backup than this is expected of a database in use
BACKUP_AGE = 24 * 3600
#: a transaction open this long holds locks and old row versions: worth a look
LONG_TRANSACTION = 300.0
#: a WAL this many times the journal size limit means checkpoints cannot finish
WAL_FACTOR = 4
#: frames behind the last checkpoint past which readers are starving checkpoints (SQLite
#: checkpoints on its own every 1000)
STARVED_FRAMES = 3000


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Options:
    """What the checks need besides the database."""

    migrations: Any = None
    backups: str | None = None
    verify_backup: bool = True
    long_transaction: float = LONG_TRANSACTION


def run(db: Any, options: Options | None = None) -> list[Check]:
    """Every check that applies to ``db``'s backend, in a fixed order; a check that breaks
    reports FAIL with its error instead of stopping the others."""
    options = options or Options()
    checks: list[Check] = []
    for check in _CHECKS[db.dialect.name]:
        try:
            checks.extend(check(db, options))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the rest
            checks.append(Check(check.__name__.removeprefix("_"), FAIL,
                                f"the check itself failed: {' '.join(str(exc).split())}",
                                "rerun with --verbose"))
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


# -- SQLite --------------------------------------------------------------------------------

def _pragmas(db: Any, _options: Options) -> list[Check]:
    settings = db.dialect.describe(db)
    wanted = {"journal_mode": ("wal",), "synchronous": ("NORMAL", "FULL", "EXTRA"),
              "foreign_keys": (1,)}
    wrong = [f"{k}={settings.get(k)!r} (want {' or '.join(map(str, v))})"
             for k, v in wanted.items()
             if str(settings.get(k)).lower() not in {str(x).lower() for x in v}]
    if db.is_memory:
        wrong = [w for w in wrong if not w.startswith("journal_mode")]
    if wrong:
        return [Check("pragmas", WARN, "; ".join(wrong),
                      "open the database through embeddb.connect(), which sets them")]
    return [Check("pragmas", OK, "WAL, synchronous and foreign keys as recommended")]


_RESTORE = "restore the newest verified backup (embeddb backup restore BACKUP_FILE)"


def _integrity(db: Any, _options: Options) -> list[Check]:
    try:
        rows = [r[0] for r in db.execute_sql("PRAGMA quick_check").fetchall()]
    # too damaged to walk; the error may come from the fetch, which the engine leaves untranslated
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        return [Check("quick_check", FAIL, f"corrupt: {' '.join(str(exc).split())}", _RESTORE)]
    if rows == ["ok"]:
        return [Check("quick_check", OK, "no corruption found")]
    return [Check("quick_check", FAIL, f"{len(rows)} problem(s): {rows[0]}", _RESTORE)]


def _wal(db: Any, _options: Options) -> list[Check]:
    if db.is_memory:
        return []
    path = f"{db.database}-wal"
    size = os.path.getsize(path) if os.path.exists(path) else 0
    behind = _frames_not_checkpointed(f"{db.database}-shm")
    if behind is not None and behind > STARVED_FRAMES:
        return [Check("wal", WARN, f"WAL is {size} bytes and {behind} frames behind the last "
                      "checkpoint: a reader holding an old snapshot (an open read transaction) "
                      "keeps checkpoints from finishing",
                      "end long-lived read transactions, then run embeddb maintenance "
                      "checkpoint")]
    limit = db.settings.journal_size_limit
    if size > WAL_FACTOR * limit:
        return [Check("wal", WARN, f"WAL is {size} bytes, {size // max(limit, 1)}x the "
                      f"journal size limit: a long-lived reader keeps checkpoints from "
                      f"finishing", "end long reads, then run embeddb maintenance checkpoint")]
    return [Check("wal", OK, f"WAL is {size} bytes" + (
        f", {behind} frames not yet checkpointed" if behind else ""))]


def _frames_not_checkpointed(shm: str) -> int | None:
    """WAL frames written but not yet copied into the database (the wal-index in ``-shm``:
    mxFrame at byte 16 of its header, nBackfill at byte 96), read without taking any lock;
    None when there is no readable wal-index. SQLite checkpoints every 1000 pages on its own,
    so a count well past that means a checkpoint could not get past some reader."""
    try:
        with open(shm, "rb") as fh:
            header = fh.read(136)
    except OSError:
        return None
    if len(header) < 136:
        return None
    version, _, _, initialized = struct.unpack_from("=IIIB", header, 0)
    if version != 3007000 or not initialized:
        return None
    (max_frame,) = struct.unpack_from("=I", header, 16)
    (backfilled,) = struct.unpack_from("=I", header, 96)
    return max(0, max_frame - backfilled)


def _disk(db: Any, _options: Options) -> list[Check]:
    if getattr(db, "is_memory", False):
        return []
    path = os.path.abspath(db.database)
    size = os.path.getsize(path) + sum(
        os.path.getsize(path + s) for s in ("-wal", "-shm") if os.path.exists(path + s))
    free = shutil.disk_usage(os.path.dirname(path)).free
    message = f"{free} bytes free beside a {size}-byte database"
    if free < size:
        return [Check("disk", FAIL, message + ": not even one backup or VACUUM fits",
                      "free disk space or move the database")]
    if free < 2 * size:
        return [Check("disk", WARN, message + ": a backup plus a VACUUM will not fit",
                      "free disk space")]
    return [Check("disk", OK, message)]


# -- both backends -------------------------------------------------------------------------

def _migrations(db: Any, options: Options) -> list[Check]:
    from . import migrate
    from .errors import MigrationError

    try:
        entries = migrate.status(db, options.migrations)
    except MigrationError as exc:
        return [Check("migrations", WARN, str(exc), "pass --migrations DIR")]
    by_state: dict[str, list[str]] = {}
    for entry in entries:
        by_state.setdefault(entry.state, []).append(entry.name)
    checks = []
    if by_state.get("failed"):
        checks.append(Check("migrations", FAIL, f"failed: {', '.join(by_state['failed'])}",
                            "fix the file, then embeddb migrate up (or migrate repair)"))
    if by_state.get("checksum changed"):
        checks.append(Check("migrations", FAIL, "edited after they were applied: "
                            f"{', '.join(by_state['checksum changed'])}",
                            "restore the applied text, or add a new migration for the change"))
    if by_state.get("pending"):
        checks.append(Check("migrations", WARN, f"pending: {', '.join(by_state['pending'])}",
                            "embeddb migrate up"))
    if by_state.get("missing file"):
        checks.append(Check("migrations", WARN, "applied but no file: "
                            f"{', '.join(by_state['missing file'])}",
                            "restore the files in the migrations folder"))
    return checks or [Check("migrations", OK, f"{len(entries)} applied, none pending")]


def _backups(db: Any, options: Options) -> list[Check]:
    from .backup import default_directory, list_backups, of_database, verify_backup
    from .errors import BackupError

    directory = options.backups or default_directory(db)
    found = of_database(db, list_backups(directory, missing_ok=True)) \
        if not db.url.is_memory else []
    if not found:
        return [Check("backups", WARN, f"no backup in {directory}", "embeddb backup create")]
    newest = found[0]
    hours = newest["age_seconds"] / 3600
    checks = []
    if newest["age_seconds"] > BACKUP_AGE:
        checks.append(Check("backups", WARN, f"newest backup is {hours:.0f} h old",
                            "embeddb backup create (and schedule it)"))
    if options.verify_backup:
        try:
            verify_backup(newest["path"], db)
        except BackupError as exc:
            return checks + [Check("backups", FAIL, f"newest backup {newest['file']} does not "
                                   f"verify: {exc}", "embeddb backup create, then find out "
                                   "what damaged the old one")]
    what = "verifies" if options.verify_backup else "(not verified)"
    return checks or [Check("backups", OK, f"newest {newest['file']}, {hours:.1f} h old, {what}")]


def _cache_directory(db: Any, _options: Options) -> list[Check]:
    directory = default_directory(db)
    if directory is None or not os.path.isdir(directory):
        return [Check("cache", OK, "no cache directory in use")]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [Check("cache", FAIL, f"{directory} is not writable by this user: caches "
                      "serve every read from the database", f"chown or chmod {directory}")]
    mode = os.stat(directory).st_mode & 0o777
    if mode & 0o077:
        return [Check("cache", WARN, f"{directory} is readable by others (mode {mode:o}); "
                      "diskcache unpickles what it finds there", f"chmod 700 {directory}")]
    return [Check("cache", OK, f"{directory} private and writable")]


def _foreign_key_indexes(db: Any, _options: Options) -> list[Check]:
    missing = db.dialect.name == "sqlite" and _sqlite_unindexed(db) or \
        db.dialect.name != "sqlite" and _postgres_unindexed(db)
    if not missing:
        return [Check("fk_indexes", OK, "every foreign key has an index")]
    fixes = "; ".join(
        f'CREATE INDEX "idx_{t}_{"_".join(c)}" ON "{t}" ({", ".join(chr(34) + x + chr(34) for x in c)})'
        for t, c in missing)
    names = ", ".join(f"{t}({', '.join(c)})" for t, c in missing)
    return [Check("fk_indexes", WARN, f"foreign keys without an index (deletes of the parent "
                  f"scan the child): {names}", fixes)]


def _leading(indexes: list[tuple[str, ...]], columns: tuple[str, ...]) -> bool:
    return any(index[:len(columns)] == columns for index in indexes)


def _sqlite_unindexed(db: Any) -> list[tuple[str, tuple[str, ...]]]:
    from .monitor.explain import SqlitePlanner

    planner = SqlitePlanner(db)
    missing = []
    for (table,) in db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall():
        keys: dict[int, list[str]] = {}
        for row in db.execute_sql(f'PRAGMA foreign_key_list("{table}")').fetchall():
            keys.setdefault(row[0], []).append(row[3])
        if not keys:
            continue
        _columns, indexes = planner.columns(table)
        missing += [(table, tuple(c)) for c in keys.values() if not _leading(indexes, tuple(c))]
    return missing


def _postgres_unindexed(db: Any) -> list[tuple[str, tuple[str, ...]]]:
    from .monitor.explain import PostgresPlanner

    planner = PostgresPlanner(db)
    rows = db.execute_sql(
        "SELECT c.conrelid::regclass::text, array(SELECT a.attname FROM unnest(c.conkey) "
        "WITH ORDINALITY AS k(n, o) JOIN pg_attribute a ON a.attrelid = c.conrelid "
        "AND a.attnum = k.n ORDER BY k.o) FROM pg_constraint c "
        "JOIN pg_namespace s ON s.oid = c.connamespace "
        "WHERE c.contype = 'f' AND s.nspname = current_schema() ORDER BY 1").fetchall()
    missing = []
    for table, columns in rows:
        table = table.strip('"').split(".")[-1].strip('"')
        _cols, indexes = planner.columns(table)
        if not _leading(indexes, tuple(columns)):
            missing.append((table, tuple(columns)))
    return missing


# -- PostgreSQL ----------------------------------------------------------------------------

def _connections(db: Any, _options: Options) -> list[Check]:
    used, limit = db.execute_sql(
        "SELECT (SELECT count(*) FROM pg_stat_activity), "
        "current_setting('max_connections')::int").fetchone()
    message = f"{used} of max_connections {limit} in use (pool max {db.settings.max_connections})"
    if used >= 0.95 * limit:
        return [Check("connections", FAIL, message, "raise max_connections or pool less")]
    if used >= 0.8 * limit:
        return [Check("connections", WARN, message, "lower the pools' max_connections")]
    return [Check("connections", OK, message)]


def _long_transactions(db: Any, options: Options) -> list[Check]:
    rows = db.execute_sql(
        "SELECT pid, extract(epoch FROM now() - xact_start), state, left(query, 80) "
        "FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
        "AND datname = current_database() AND now() - xact_start > make_interval(secs => %s) "
        "ORDER BY xact_start", (options.long_transaction,)).fetchall()
    if not rows:
        return [Check("long_transactions", OK,
                      f"no transaction open longer than {options.long_transaction:.0f} s")]
    listed = "; ".join(f"pid {pid} {age:.0f} s {state}: {query}" for pid, age, state, query
                       in rows[:5])
    return [Check("long_transactions", WARN, f"{len(rows)} long transaction(s): {listed}",
                  "commit or end them (SELECT pg_terminate_backend(pid) as a last resort)")]


#: scans of a table before an index of it that none of them used is worth a warning
USED_TABLE = 1000


def _unused_indexes(db: Any, _options: Options) -> list[Check]:
    rows = db.execute_sql(
        "SELECT s.relname, s.indexrelname, pg_relation_size(s.indexrelid) "
        "FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid "
        "JOIN pg_stat_user_tables t ON t.relid = s.relid "
        "WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary "
        "AND s.schemaname = current_schema() "
        "AND coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0) >= %s ORDER BY 3 DESC",
        (USED_TABLE,)).fetchall()
    if not rows:
        return [Check("unused_indexes", OK, "no unused index on a busy table")]
    listed = ", ".join(f"{index} on {table} ({size} bytes)" for table, index, size in rows[:10])
    return [Check("unused_indexes", WARN, f"never used since the statistics were reset, "
                  f"though their tables were scanned {USED_TABLE}+ times: {listed}",
                  "if the workload seen is representative: "
                  + "; ".join(f'DROP INDEX "{index}"' for _t, index, _s in rows[:10]))]


def _pg_stat_statements(db: Any, _options: Options) -> list[Check]:
    if not db.execute_sql(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone():
        return [Check("pg_stat_statements", OK, "not installed: embeddb's monitor sees this "
                      "app's statements only (for every client: shared_preload_libraries = "
                      "'pg_stat_statements', then CREATE EXTENSION pg_stat_statements)")]
    row = db.execute_sql(
        "SELECT left(query, 80), calls, round(mean_exec_time::numeric, 2) "
        "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) ORDER BY mean_exec_time DESC LIMIT 1").fetchone()
    if row is None:
        return [Check("pg_stat_statements", OK, "installed, nothing recorded yet")]
    return [Check("pg_stat_statements", OK,
                  f"installed; slowest on average: {row[0]} ({row[1]} calls, {row[2]} ms)")]


_Checker = Callable[[Any, Options], list[Check]]
_CHECKS: dict[str, list[_Checker]] = {
    "sqlite": [_pragmas, _integrity, _wal, _migrations, _backups, _cache_directory, _disk,
               _foreign_key_indexes],
    "postgresql": [_migrations, _backups, _cache_directory, _connections, _long_transactions,
                   _foreign_key_indexes, _unused_indexes, _pg_stat_statements],
}

