"""Maintenance: VACUUM, ANALYZE, optimize, WAL checkpoint, integrity checks and data cleanup.

Each task means what it should on the backend at hand (:func:`tasks_for`):

========== ============================================ ===================================================
task       SQLite                                       PostgreSQL
========== ============================================ ===================================================
vacuum     VACUUM: rebuild the file, return free pages   VACUUM (ANALYZE) of the schema's tables (or the db)
analyze    ANALYZE: refresh the planner's statistics     ANALYZE of the same tables
optimize   PRAGMA optimize: ANALYZE where it pays        VACUUM (ANALYZE): reclaim dead rows + statistics
checkpoint wal_checkpoint(TRUNCATE), WAL size before/after CHECKPOINT (superuser or pg_checkpoint)
integrity  integrity_check + foreign_key_check           invalid indexes, unvalidated constraints, amcheck
========== ============================================ ===================================================

``cleanup`` deletes what the app's retention policies (:mod:`embeddb.retention`) say is old, in
short batches so no write lock is held for long. Nothing here prints.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import retention
from .errors import ConnectionFailed, DatabaseError, MaintenanceError
from .protocols import Database

if TYPE_CHECKING:
    from .database import PostgresEngine, SqliteEngine
from .retention import Policy

#: rows deleted per transaction: short enough that writers never wait long for the lock
BATCH_SIZE = 1000
#: the largest batch accepted: one this big already holds the write lock for seconds
MAX_BATCH_SIZE = 1_000_000

#: rows examined per index by optimize's ANALYZE: good statistics at a bounded cost
_ANALYSIS_LIMIT = 1000


def tasks_for(db: Database) -> Any:
    """The object whose methods run VACUUM, ANALYZE, checkpoint... on ``db``'s backend.

    :raises MaintenanceError: no tasks are known for its dialect.
    """
    tasks = TASKS.get(db.dialect.name)
    if tasks is None:
        raise MaintenanceError(f"no maintenance tasks for {db.dialect.name!r} databases")
    return tasks


def vacuum(db: Database) -> dict[str, Any]:
    """Rebuild/reclaim storage; returns sizes before and after where the backend tells."""
    return tasks_for(db).vacuum(db)


def analyze(db: Database) -> dict[str, Any]:
    """Refresh the query planner's statistics."""
    return tasks_for(db).analyze(db)


def optimize(db: Database) -> dict[str, Any]:
    """The cheap periodic tune-up for the backend (see the module table)."""
    return tasks_for(db).optimize(db)


def checkpoint(db: Database) -> dict[str, Any]:
    """Write the WAL back into the database; reports the WAL size before and after.

    :raises MaintenanceError: the server refused (PostgreSQL needs superuser/pg_checkpoint).
    """
    return tasks_for(db).checkpoint(db)


def integrity(db: Database) -> dict[str, Any]:
    """Run the backend's consistency checks: ``{"ok": bool, "problems": [...], "checks": [...]}``."""
    return tasks_for(db).integrity(db)


# -- cleanup --------------------------------------------------------------------------------------


def cleanup(
    db: Database,
    policies: list[Policy] | None = None,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Delete the rows the app's retention policies say are old (:mod:`embeddb.retention`).

    ``policies`` None: the declared ones (``retention.toml`` beside the migrations folder, or
    ``[maintenance] retention`` in embeddb.toml). Rows go ``batch_size`` at a time, each batch
    its own short transaction; ``dry_run`` only counts. Policies whose table does not exist are
    skipped and listed under ``skipped``.

    :returns: ``{"dry_run", "deleted": {policy: n}, "skipped": [policy, ...], "cutoffs": {...}}``
    """
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise MaintenanceError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    if policies is None:
        policies = retention.declared(None, getattr(db, "entry", None))
    return retention.run(db, policies, now=now,
                         batch_size=batch_size, dry_run=dry_run, progress=progress)


# -- per backend ----------------------------------------------------------------------------------

#: SQLite's result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB
_DAMAGED = (11, 26)


_SQLITE_CHECKS = ("PRAGMA integrity_check (pages, b-trees, indexes, NOT NULL, CHECK)",
                  "PRAGMA foreign_key_check")


def damage_report(exc: BaseException) -> dict[str, Any] | None:
    """The failed :func:`integrity` report for a SQLite file too damaged to open or read
    (``exc`` raised by opening or querying it); None when ``exc`` is no sign of damage."""
    damage = corruption(exc)
    if damage is None:
        return None
    return {"task": "integrity", "ok": False,
            "problems": [f"the database cannot be read: {damage}"], "checks": list(_SQLITE_CHECKS)}


def corruption(exc: BaseException | None) -> str | None:
    """SQLite's message when ``exc`` (or its cause) says the file is damaged, else None."""
    while exc is not None:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _DAMAGED:
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None



class SqliteTasks:
    """What each maintenance task means on SQLite."""

    def vacuum(self, db: SqliteEngine) -> dict[str, Any]:
        before = self._size(db)
        db.execute_sql("VACUUM")
        return {"task": "vacuum", "size_before": before, "size_after": self._size(db)}

    def analyze(self, db: SqliteEngine) -> dict[str, Any]:
        db.execute_sql("ANALYZE")
        return {"task": "analyze", "statement": "ANALYZE"}

    def optimize(self, db: SqliteEngine) -> dict[str, Any]:
        # analysis_limit bounds the cost of each table's ANALYZE (approximate statistics).
        db.execute_sql(f"PRAGMA analysis_limit={_ANALYSIS_LIMIT}")
        # 0x10002: look at every table, not only those this connection queried (3.46+).
        db.execute_sql("PRAGMA optimize=0x10002")
        statements = ["PRAGMA optimize=0x10002"]
        if sqlite3.sqlite_version_info < (3, 46, 0):
            # Older SQLite only considers tables this connection used: a CLI connection has
            # used none, so refresh all statistics, bounded by analysis_limit.
            db.execute_sql("ANALYZE")
            statements.append(f"ANALYZE (analysis_limit={_ANALYSIS_LIMIT})")
        return {"task": "optimize", "statements": statements}

    def checkpoint(self, db: SqliteEngine) -> dict[str, Any]:
        if db.is_memory:
            return {"task": "checkpoint", "skipped": "an in-memory database has no WAL"}
        wal = os.path.abspath(db.database) + "-wal"
        before = _file_size(wal)
        busy, frames, done = db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return {
            "task": "checkpoint", "wal_bytes_before": before, "wal_bytes_after": _file_size(wal),
            "frames": frames, "checkpointed": done,
            # busy=1: a reader or writer kept part of the WAL in use; run it again when quieter
            "complete": busy == 0,
        }

    def integrity(self, db: SqliteEngine) -> dict[str, Any]:
        """Damage that stops SQLite from reading the file at all (a wrecked header or schema
        page, a truncated file, not a database) is reported as a problem, not raised."""
        problems: list[str] = []
        try:
            problems += [r[0] for r in db.execute_sql("PRAGMA integrity_check").fetchall()
                         if r[0] != "ok"]
            for table, rowid, parent, _ in db.execute_sql("PRAGMA foreign_key_check").fetchall():
                problems.append(
                    f"foreign key violation: {table} rowid {rowid} -> missing {parent} row")
        except (DatabaseError, ConnectionFailed, sqlite3.DatabaseError) as exc:
            report = damage_report(exc)
            if report is None:
                raise
            return report
        return {"task": "integrity", "ok": not problems, "problems": problems,
                "checks": list(_SQLITE_CHECKS)}

    @staticmethod
    def _size(db: SqliteEngine) -> int:
        pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
        return pages * db.execute_sql("PRAGMA page_size").fetchone()[0]


class PostgresTasks:
    """What each maintenance task means on PostgreSQL (scoped to the URL's schema if any)."""

    def vacuum(self, db: PostgresEngine) -> dict[str, Any]:
        return self._vacuum(db, "vacuum", "VACUUM (ANALYZE)")

    def analyze(self, db: PostgresEngine) -> dict[str, Any]:
        tables = self._tables(db)
        if tables or db.settings.schema is None:
            db.execute_sql("ANALYZE " + ", ".join(tables))
        return {"task": "analyze", "statement": "ANALYZE", "tables": len(tables)}

    def optimize(self, db: PostgresEngine) -> dict[str, Any]:
        return self._vacuum(db, "optimize", "VACUUM (ANALYZE)")

    def checkpoint(self, db: PostgresEngine) -> dict[str, Any]:
        before = self._wal_size(db)
        try:
            db.execute_sql("CHECKPOINT")
        except DatabaseError as exc:
            raise MaintenanceError(
                "CHECKPOINT needs a superuser or the pg_checkpoint role; the server also "
                f"checkpoints on its own every checkpoint_timeout ({exc})"
            ) from exc
        return {"task": "checkpoint", "wal_bytes_before": before,
                "wal_bytes_after": self._wal_size(db), "complete": True}

    def integrity(self, db: PostgresEngine) -> dict[str, Any]:
        scope = self._scope_sql(db)
        problems = [f"invalid index {name} (rebuild it: REINDEX INDEX {name})" for (name,) in
                    db.execute_sql(
                        "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        f"WHERE NOT i.indisvalid AND {scope}").fetchall()]
        problems += [f"constraint {name} on {table} is NOT VALID (VALIDATE CONSTRAINT it)"
                     for name, table in db.execute_sql(
                         "SELECT k.conname, k.conrelid::regclass::text FROM pg_constraint k "
                         "JOIN pg_namespace n ON n.oid = k.connamespace "
                         f"WHERE NOT k.convalidated AND {scope}").fetchall()]
        checks = ["invalid indexes (pg_index.indisvalid)", "unvalidated constraints"]
        if db.execute_sql("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone():
            problems += self._amcheck(db, scope)
            checks.append("amcheck bt_index_check on every B-tree index")
        else:
            checks.append("B-tree structure NOT checked: amcheck is not installed "
                          "(CREATE EXTENSION amcheck, as a superuser, enables it)")
        return {"task": "integrity", "ok": not problems, "problems": problems, "checks": checks}

    def _amcheck(self, db: PostgresEngine, scope: str) -> list[str]:
        rows = db.execute_sql(
            "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            f"WHERE a.amname = 'btree' AND i.indisvalid AND c.relpersistence <> 't' AND {scope}"
        ).fetchall()
        problems = []
        for (index,) in rows:
            try:
                db.execute_sql("SELECT bt_index_check(%s::regclass)", (index,))
            except DatabaseError as exc:
                problems.append(f"index {index}: {exc}".strip())
        return problems

    def _vacuum(self, db: PostgresEngine, task: str, statement: str) -> dict[str, Any]:
        tables = self._tables(db)
        before = self._size(db)
        if tables or db.settings.schema is None:
            db.execute_sql(f"{statement} " + ", ".join(tables))
        return {"task": task, "statement": statement, "tables": len(tables),
                "size_before": before, "size_after": self._size(db)}

    @staticmethod
    def _scope_sql(db: PostgresEngine) -> str:
        # %% because psycopg2 interpolates every statement peewee sends
        if db.settings.schema is not None:
            return "n.nspname = current_schema()"
        return ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%%'")

    def _tables(self, db: PostgresEngine) -> list[str]:
        if db.settings.schema is None:
            return []  # no list: VACUUM/ANALYZE then cover the whole database
        rows = db.execute_sql(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'm') AND n.nspname = current_schema() ORDER BY 1"
        ).fetchall()
        return [name for (name,) in rows]

    def _size(self, db: PostgresEngine) -> int:
        if db.settings.schema is None:
            return db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
        return db.execute_sql(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'm') AND n.nspname = current_schema()"
        ).fetchone()[0]

    @staticmethod
    def _wal_size(db: PostgresEngine) -> int | None:
        try:
            return int(db.execute_sql("SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()")
                       .fetchone()[0])
        except DatabaseError:  # needs superuser or pg_monitor: report unknown
            return None


#: dialect name -> the maintenance tasks of that backend
TASKS: dict[str, Any] = {
    "sqlite": SqliteTasks(), "postgresql": PostgresTasks(),
}


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0
