"""The bookkeeping table ``embeddb_migrations`` and the lock over it: which versions ran, when,
and with what content.

One row per applied migration (``status='applied'``) or per no-transaction migration that failed
half-way (``status='failed'``), which blocks later migrations until it is re-run or resolved.
This module is its one owner (table name, DDL, reads and writes, the migration lock), as
dbmate's driver is; the runner plans and executes, and :mod:`.status` reads and corrects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import MigrationError
from ..protocols import Database, Queryable
from .backends import backend_for
from .lock import OnWait, check_timeout

TABLE = "embeddb_migrations"
#: How long a second runner waits for the first before giving up (seconds).
LOCK_TIMEOUT = 60.0
APPLIED = "applied"
FAILED = "failed"


@dataclass(frozen=True)
class Record:
    """One row of the bookkeeping table."""

    version: int
    name: str
    checksum: str
    applied_at: str
    duration_ms: float
    status: str


_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "version {version} PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
    "applied_at {applied_at} NOT NULL, duration_ms {duration} NOT NULL, "
    f"status TEXT NOT NULL CHECK (status IN ('{APPLIED}', '{FAILED}')))"
)
_STATUS = f"SELECT status FROM {TABLE} WHERE version = {{p}}"
_INSERT = (
    f"INSERT INTO {TABLE} (version, name, checksum, applied_at, duration_ms, status) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
)
_DELETE_WITH_STATUS = f"DELETE FROM {TABLE} WHERE version = {{p}} AND status = {{p}}"
_by_param: dict[tuple[str, str], str] = {}


def _sql(db: Database, template: str) -> str:
    """``template`` with the driver's placeholder (? or %s), formatted once per style."""
    key = (template, db.param)
    sql = _by_param.get(key)
    if sql is None:
        sql = _by_param[key] = template.format(p=db.param)
    return sql


def exists(db: Queryable) -> bool:
    """Whether the bookkeeping table exists (in the current schema on PostgreSQL)."""
    return db.table_exists(TABLE)


def ensure(db: Database) -> None:
    """Create the bookkeeping table if it is missing."""
    version, applied_at, duration = backend_for(db).bookkeeping_types
    db.execute_sql(_DDL.format(version=version, applied_at=applied_at, duration=duration))


def lock(db: Database, timeout: float, on_wait: OnWait | None = None) -> Any:
    """The migration lock of ``db`` (a context manager), so two runners never overlap.

    ``on_wait(pid)`` is called once if another runner holds it, before waiting up to
    ``timeout`` seconds.
    """
    return backend_for(db).lock(db, timeout, on_wait)


@contextmanager
def session(
    db: Database, lock_timeout: float, locked: bool, on_wait: OnWait | None = None
) -> Iterator[dict[int, Record]]:
    """Connect if needed and yield the records; with ``locked``, under the migration lock and
    with the table created if missing (the records then cannot change under the caller).

    :raises MigrationError: ``db`` is inside a transaction.
    :raises MigrationLockTimeout: another runner held the lock for ``lock_timeout`` seconds.
    """
    check_timeout(lock_timeout)
    if db.in_transaction():
        raise MigrationError("migrations cannot run inside an open transaction: commit it first")
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        if not locked:
            yield read(db)
            return
        with lock(db, lock_timeout, on_wait):
            ensure(db)
            yield read(db)
    finally:
        if opened and not db.is_closed():
            db.close()


def read(db: Database) -> dict[int, Record]:
    """Every row, by version (an empty dict when the table does not exist)."""
    if not exists(db):
        return {}
    return _rows(db)


def _rows(db: Database) -> dict[int, Record]:
    cursor = db.execute_sql(
        f"SELECT version, name, checksum, applied_at, duration_ms, status FROM {TABLE} "
        "ORDER BY version"
    )
    records = {}
    for version, name, checksum, applied_at, duration_ms, status in cursor.fetchall():
        if isinstance(applied_at, datetime):
            applied_at = applied_at.astimezone(UTC).isoformat()
        records[int(version)] = Record(
            int(version), name, checksum, applied_at, float(duration_ms), status
        )
    return records


def status_of(db: Database, version: int) -> str | None:
    """The status of one version (None: not recorded)."""
    row = db.execute_fast(_sql(db, _STATUS), (version,)).fetchone()
    return row[0] if row else None


def current_version(db: Queryable) -> int | None:
    """The highest applied version; None when the table is missing or has no applied row.

    This is what backups stamp into their manifest.
    """
    return newest_applied(db) if exists(db) else None


def newest_applied(db: Queryable) -> int | None:
    """:func:`current_version` of a database whose table is known to exist (no catalog query)."""
    row = db.execute_sql(
        f"SELECT MAX(version) FROM {TABLE} WHERE status = {db.param}", (APPLIED,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def write(
    db: Database,
    version: int,
    name: str,
    checksum: str,
    duration_ms: float,
    status: str = APPLIED,
    replacing: str | None = None,
) -> None:
    """Insert the row of ``version``.

    ``replacing`` is the status of the row this one takes the place of, deleted first; a row
    in any other state stays, and the INSERT then fails on the primary key. That is what stops
    a re-run of a failed migration from overwriting a row another runner wrote meanwhile.
    """
    if replacing is not None:
        db.execute_fast(_sql(db, _DELETE_WITH_STATUS), (version, replacing))
    row = (version, name, checksum, datetime.now(UTC).isoformat(), round(duration_ms, 3), status)
    db.execute_fast(_sql(db, _INSERT), row)


def delete(db: Database, version: int) -> None:
    """Forget ``version`` (after its down part ran, or on ``resolve --pending``)."""
    db.execute_sql(f"DELETE FROM {TABLE} WHERE version = {db.param}", (version,))


def set_checksum(db: Database, version: int, name: str, checksum: str) -> None:
    """Accept an edited file's content as the applied one (``migrate repair``)."""
    p = db.param
    db.execute_sql(
        f"UPDATE {TABLE} SET checksum = {p}, name = {p} WHERE version = {p}",
        (checksum, name, version),
    )


def mark_applied(db: Database, version: int) -> None:
    """Turn a failed row into an applied one (``migrate resolve``)."""
    p = db.param
    db.execute_sql(
        f"UPDATE {TABLE} SET status = {p} WHERE version = {p}", (APPLIED, version)
    )
