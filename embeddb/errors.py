"""The exception hierarchy: every error embeddb raises derives from :class:`EmbeddbError`.

Driver and peewee errors are translated once, where they cross into embeddb (the database
classes), and keep the original as ``__cause__``. The query errors also subclass peewee's own
classes so code written against peewee (``except peewee.IntegrityError``) keeps working.
"""

from __future__ import annotations

import peewee


class EmbeddbError(Exception):
    """Root of every error embeddb raises; the CLI prints it as one ``Error:`` line."""


class ConfigurationError(EmbeddbError):
    """A URL, option or config file is wrong; the message says what to change."""


class ConnectionFailed(EmbeddbError):
    """The database could not be opened or the server did not answer."""


class DatabaseNotFound(ConnectionFailed):
    """``connect(create=False)`` or ``readonly=True`` named a SQLite file that does not exist."""


class PoolExhausted(ConnectionFailed):
    """Every pooled connection stayed in use for the whole wait timeout."""


class DatabaseError(EmbeddbError, peewee.DatabaseError):
    """A statement failed in the database."""


class IntegrityError(DatabaseError, peewee.IntegrityError):
    """A constraint (UNIQUE, NOT NULL, CHECK, FOREIGN KEY) rejected a write."""


class OperationalError(DatabaseError, peewee.OperationalError):
    """The database could not run a statement (locked, missing table, disk full...)."""


class ProgrammingError(DatabaseError, peewee.ProgrammingError):
    """The SQL itself is wrong (syntax, unknown column)."""


class DataError(DatabaseError, peewee.DataError):
    """A value does not fit its column (out of range, wrong type)."""


class NotFoundError(EmbeddbError, LookupError):
    """The row asked for does not exist (or is soft-deleted)."""


class ConflictError(EmbeddbError):
    """An optimistic-concurrency check failed: the row changed since it was read."""


class MigrationError(EmbeddbError):
    """The migrations folder or the bookkeeping table is not in a state migrations can run from."""


class MigrationFailed(MigrationError):
    """A migration's statement failed; the message names the file, the line and the cause."""


class ChecksumMismatch(MigrationError):
    """An applied migration file was edited afterwards (``migrate repair`` accepts the edit)."""


class MigrationLockTimeout(MigrationError):
    """Another runner held the migration lock for the whole wait."""


class LockTimeout(EmbeddbError):
    """A named lock (``db.lock(name)``) stayed held by someone else for the whole wait."""


class BackupError(EmbeddbError):
    """A backup could not be written, read, verified or restored."""


class BackupCorrupt(BackupError):
    """A backup fails its checksum or integrity checks: it must not be restored."""


class DatabaseInUse(BackupError):
    """A restore was refused because other connections or processes have the database open."""


class ToolNotFound(ConfigurationError):
    """An external program embeddb needs (pg_dump, pg_restore, psql) is not on PATH."""


class MaintenanceError(EmbeddbError):
    """A maintenance task could not run (missing privilege, unsupported on this database)."""


class InvalidQueryError(EmbeddbError, ValueError):
    """A caller-supplied field name, operator, ordering or cursor is not valid for the model."""


class CacheError(EmbeddbError):
    """The cache tier was misused (a broken L2 is never an error: reads fall back to the loader)."""


class CacheValueError(CacheError, TypeError):
    """A value cannot be cached, e.g. a live model instance: cache its data (a dict) instead."""


_TRANSLATIONS: tuple[tuple[type[Exception], type[DatabaseError]], ...] = (
    (peewee.IntegrityError, IntegrityError),
    (peewee.OperationalError, OperationalError),
    (peewee.ProgrammingError, ProgrammingError),
    (peewee.DataError, DataError),
    (peewee.DatabaseError, DatabaseError),
    (peewee.InterfaceError, OperationalError),  # e.g. "connection already closed"
)


def translate(exc: Exception, redact: str | None = None) -> Exception:
    """Return the embeddb error for a peewee/driver error (``exc`` itself if already ours)."""
    if isinstance(exc, EmbeddbError):
        return exc
    message = str(exc).replace(redact, "***") if redact else str(exc)
    for source, target in _TRANSLATIONS:
        if isinstance(exc, source):
            return target(message)
    return exc


# -- backup safety (issue 11: prune, restore ownership, corruption reports) --


class SourceCorrupt(BackupError):
    """The database to back up fails ``PRAGMA quick_check``: no backup is written without force."""


class NPlusOneError(EmbeddbError):
    """Strict monitoring saw one SELECT repeated with different parameters in a unit of work."""


class QueryBudgetExceeded(EmbeddbError, AssertionError):
    """More statements ran inside ``assert_max_queries(n)`` than its budget allows."""


class MonitorError(EmbeddbError):
    """The statistics the monitored processes publish cannot be read (e.g. their folder)."""
