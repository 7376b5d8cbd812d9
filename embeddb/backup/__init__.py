"""Online backups: create, verify, list, restore and prune, for SQLite and PostgreSQL.

SQLite files are snapshotted with the one-step online backup API (writers keep going), checked,
optionally gzip-compressed, and written durably; PostgreSQL goes through ``pg_dump -Fc`` /
``pg_restore``. Every backup carries a sidecar manifest (checksum, sizes, versions, schema
version) that ``verify`` and ``restore`` check before they trust the file.

Long operations report progress through ``progress(phase, done, total)``; nothing here prints.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

from .. import ownership
from ..errors import BackupCorrupt, BackupError, ConfigurationError
from ..protocols import Database
from . import catalog, manifest, postgres, retention, sqlite
from .catalog import parse_age
from .files import Progress, no_progress
from .manifest import Manifest

__all__ = [
    "Backup", "Manifest", "Progress", "check_origin", "create_backup", "default_directory", "file_prefix",
    "list_backups", "of_database",
    "parse_age", "prune_backups", "restore_backup", "verify_backup",
]

#: the manifest's ``format`` -> the driver that writes and reads such files
_DRIVERS: dict[str, ModuleType] = {sqlite.FORMAT: sqlite, postgres.FORMAT: postgres}
#: dialect name -> the driver that backs up that backend
BACKENDS: dict[str, ModuleType] = {"sqlite": sqlite, "postgresql": postgres}


@dataclass(frozen=True)
class Backup:
    """A backup written by :func:`create_backup`: where it is and what its manifest says."""

    path: str
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, **asdict(self.manifest)}


def _driver(fmt: str) -> ModuleType:
    try:
        return _DRIVERS[fmt]
    except KeyError:
        raise BackupError(f"unknown backup format {fmt!r}: written by a newer embeddb?") from None


def driver_for(db: Database) -> ModuleType:
    """The backup driver of ``db``'s backend (a module: ``FORMAT``, ``create``, ``restore``...).

    :raises ConfigurationError: no driver backs up its dialect.
    """
    try:
        return BACKENDS[db.dialect.name]
    except KeyError:
        raise ConfigurationError(
            f"backups are not supported on {db.dialect.name!r} databases"
        ) from None


def default_directory(db: Database) -> str:
    """Where backups of ``db`` go without --dir: the ``backups`` folder embeddb.toml gives its
    name, else ``backups/`` beside a SQLite file, else ./backups."""
    entry = getattr(db, "entry", None)
    if entry is not None and entry.backups:
        return os.path.abspath(entry.backups)
    return str(driver_for(db).default_directory(db))


def file_prefix(db: Database) -> str:
    """How backup files of ``db`` begin: its embeddb.toml name, else its file stem or
    PostgreSQL database (schema) name."""
    return getattr(db, "name", None) or str(driver_for(db).source_name(db))


def database_label(name: str | None) -> str:
    """How messages name a database: ``'users'``, or ``the default database``."""
    return repr(name) if name else "the default database"


def create_backup(
    db: Database,
    directory: str | None = None,
    out: str | None = None,
    compress: bool = False,
    progress: Progress = no_progress,
    force: bool = False,
) -> Backup:
    """Take a consistent backup of the live ``db`` while other connections keep writing.

    It goes to ``out``, or to a timestamped file in ``directory`` (default
    :func:`default_directory`), written to a temp name, fsynced and renamed, mode 0600 (given
    to the database file's owner when root backs up another user's database).
    ``compress`` gzips SQLite backups (pg_dump archives are compressed already). A SQLite
    snapshot that fails ``PRAGMA quick_check`` is refused unless ``force``; then the manifest
    records the failure (``source_check``) and ``prune`` never counts the backup as good.

    :raises SourceCorrupt: the SQLite database fails quick_check (and not ``force``).
    :raises BackupError: the target exists or cannot be written, there is nothing to back up,
        or the snapshot or dump failed.
    :raises ToolNotFound: pg_dump is not on PATH (PostgreSQL).
    """
    driver = driver_for(db)
    driver.check_source(db)
    if out:
        final = os.path.abspath(out)
        if os.path.lexists(final):
            raise BackupError(f"{out} already exists: choose another --out or remove it")
        folder = os.path.dirname(final)
        shown = f"the backup {out}"
    else:
        folder = os.path.abspath(directory or default_directory(db))
        shown = f"the backup directory {directory or folder}"
    owner = driver.file_owner(db)
    _make_directory(folder, shown, owner)
    if not out:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = os.path.join(folder, f"{file_prefix(db)}-{stamp}{driver.extension(compress)}")
    try:
        record = driver.create(db, final, compress, progress, force=force)
        ownership.give([final, manifest.sidecar(final)], owner)
    except OSError as exc:
        raise BackupError(f"cannot write the backup {out or final}: {exc.strerror}") from exc
    return Backup(final, record)


def _make_directory(folder: str, shown: str, owner: tuple[int, int] | None) -> None:
    """Create the backup directory (0700, given to ``owner``) unless it exists.

    :raises BackupError: it cannot be created, or a file is in the way; names ``shown`` (what
        the user asked for).
    """
    if os.path.isdir(folder):
        return
    missing = []
    parent = folder
    while parent and not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise BackupError(f"cannot write {shown}: {parent} is a file, not a directory")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        ownership.give(missing, owner)
    except OSError as exc:
        raise BackupError(f"cannot write {shown}: {exc.strerror} ({exc.filename})") from exc


def verify_backup(path: str, db: Database | None = None, progress: Progress = no_progress) -> dict[str, Any]:
    """Check a backup: size and sha256 against its manifest, then a trial restore.

    SQLite: ``integrity_check`` and ``foreign_key_check`` on the (decompressed) copy.
    PostgreSQL: ``pg_restore --list`` and a restore into a scratch database on ``db``'s server.
    The outcome is recorded in the manifest (``verified``, ``verified_at``).

    :raises BackupCorrupt: any check failed.
    :raises BackupError: the file or its manifest is missing.
    """
    record = manifest.read(path)
    driver = _driver(record.format)
    try:
        checks = driver.verify(path, record, progress, db)
    except BackupCorrupt as exc:
        manifest.record_verification(path, record, str(exc))
        raise
    manifest.record_verification(path, record, None)
    return {"path": os.path.abspath(path), "ok": True, "checks": checks, **asdict(record)}


def list_backups(directory: str, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The backups in ``directory``, newest first, with size, age, schema version, verified state.

    :raises BackupError: ``directory`` does not exist (an empty list with ``missing_ok``).
    """
    return catalog.entries(directory, missing_ok)


def restore_backup(
    db: Database, path: str, safety_dir: str | None = None, progress: Progress = no_progress,
    force: bool = False,
) -> dict[str, Any]:
    """Replace ``db``'s data with the backup at ``path``, after verifying it.

    A damaged backup is refused before anything is touched. The current data is kept as a
    safety copy (in ``safety_dir``, default beside the database / ./backups). SQLite: the file is
    swapped atomically with its -wal/-shm, under an exclusive lock, and refused while other
    connections or processes have it open. PostgreSQL: replayed in one transaction.

    :raises BackupCorrupt: the backup failed verification; the live database is unchanged.
    :raises DatabaseInUse: the database is in use.
    A backup records the embeddb.toml name of the database it was made of; one made of
    another database (``users`` into ``payments``, or a named one into the default one) is
    refused unless ``force``.

    :raises ConfigurationError: the backup is of another kind than ``db``, or (without
        ``force``) of another database.
    """
    record = manifest.read(path)
    check_origin(db, path, force, record)
    entry = getattr(db, "entry", None)
    if safety_dir is None and entry is not None and entry.backups:
        safety_dir = default_directory(db)
    try:
        result = _driver(record.format).restore(db, path, record, safety_dir, progress)
    except BackupCorrupt as exc:
        manifest.record_verification(path, record, str(exc))
        raise
    manifest.record_verification(path, record, None)
    from ..cache.tiered import forget  # only a restore needs the cache tier

    forget(db)  # cached rows describe the replaced contents
    return result


def check_origin(db: Database, path: str, force: bool = False,
                 record: Manifest | None = None) -> None:
    """Refuse to restore into ``db`` a backup of another backend, or (unless ``force``) one
    made of another database: the embeddb.toml name recorded in its manifest is not ``db``'s.

    :raises ConfigurationError: another backend; another database (naming both).
    :raises BackupError: no backup or manifest at ``path``.
    """
    record = record or manifest.read(path)
    if record.format != driver_for(db).FORMAT:
        raise ConfigurationError(
            f"{path} is a {record.format} backup and cannot be restored into a "
            f"{db.dialect.name} database"
        )
    target = getattr(db, "name", None)
    if record.database != target and not force:
        renamed = " (the same URL: renamed in embeddb.toml?)" \
            if record.source == db.url.redacted() else ""
        raise ConfigurationError(
            f"{path} is a backup of {database_label(record.database)} ({record.source}), not "
            f"of {database_label(target)} ({db.url.redacted()}){renamed}: pass --force to "
            "restore it anyway")


def prune_backups(
    directory: str,
    keep: int | None = None,
    older_than: timedelta | str | None = None,
    dry_run: bool = False,
    kind: str | None = None,
    source: str | None = None,
    missing_ok: bool = False,
    database: str | None = retention.ANY_DATABASE,
) -> dict[str, Any]:
    """Delete old backups; ``dry_run`` only says what would go and why.

    Per database: the newest ``keep`` *good* backups stay (every kind counted together), the
    newest good one always stays, and with ``older_than`` only older ones go. ``kind``
    (``regular``, ``premigrate``, ``prerestore``) limits the prune to that kind, ``source`` (a
    manifest's ``source``, e.g. ``db.url.redacted()``) or ``database`` (``db.name``: None is
    the backups that record no name, so a default database's prune never touches a named
    database's backups in a shared folder) to one database. The rules and their cost
    are in :mod:`embeddb.backup.retention`.

    :raises ConfigurationError: neither ``keep`` nor ``older_than``, an unreadable age or kind.
    :raises BackupError: ``directory`` does not exist (nothing to do with ``missing_ok``).
    """
    if isinstance(older_than, str):
        older_than = parse_age(older_than)
    return retention.prune(directory, keep, older_than, dry_run, kind, source, missing_ok,
                           database)


def of_database(db: Database, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of :func:`list_backups` made of ``db``: those recording its name, or none
    when it has none (a backup folder may be shared by the default and named databases)."""
    name = getattr(db, "name", None)
    return [e for e in entries if e["database"] == name]
