"""The safety copy of a database taken before migrations change it, and how many are kept.

SQLite: a regular :mod:`embeddb.backup` copy to ``backups/<name>-premigrate-<UTC time>.db``
beside the file. PostgreSQL: a ``pg_dump -Fc`` to ``./backups/<schema or database>-premigrate-
<UTC time>.dump``. Each run keeps only the newest few copies of that database (``keep``), so
retries of a failing migration do not fill the disk.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from ..config import CONFIG_FILE, load_config_file, name_of
from ..errors import BackupError, ConfigurationError, MigrationError
from ..protocols import Database

#: Safety copies kept per database when neither ``keep_backups=`` nor embeddb.toml says.
KEEP_BACKUPS = 3


def keep_setting(keep: int | None = None, cwd: str | os.PathLike[str] | None = None) -> int:
    """How many safety copies to keep: ``keep``, else ``[migrate] keep_backups`` in
    embeddb.toml, else :data:`KEEP_BACKUPS`.

    :raises ConfigurationError: the value is not a whole number of 1 or more.
    """
    where = "keep_backups"
    if keep is None:
        config = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE)
        keep = config.get("migrate", {}).get("keep_backups", KEEP_BACKUPS)
        where = f"{CONFIG_FILE}: [migrate] keep_backups"
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ConfigurationError(f"{where} must be a whole number of 1 or more (got {keep!r})")
    return keep


def premigrate_backup(db: Database) -> str | None:
    """Back the database up before migrations change it; the path.

    A regular backup with its manifest, so ``embeddb backup list`` shows it and ``embeddb
    backup restore`` takes it back. Nothing is copied for ``:memory:`` or for a database with
    no tables of its own yet (None).

    :raises MigrationError: the copy could not be written (pg_dump missing or failing, disk
        full, permissions).
    """
    if getattr(db, "is_memory", False) or not any(
        not t.startswith("embeddb_") for t in db.get_tables()
    ):
        return None
    from ..backup import create_backup, default_directory, driver_for, file_prefix

    driver = driver_for(db)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{file_prefix(db)}-premigrate-{stamp}{driver.SAFETY_SUFFIX}"
    target = os.path.join(default_directory(db), name)
    try:
        return create_backup(db, out=target).path
    except (BackupError, ConfigurationError, OSError) as exc:
        raise MigrationError(
            f"could not write the safety backup {target}: {exc} "
            "(free space or fix permissions, or pass --no-backup)"
        ) from exc


def keep_newest(db: Database, path: str, keep: int) -> None:
    """Of ``db``'s pre-migration copies in the folder of ``path`` (just written), keep the
    newest ``keep``; other kinds of backup there are neither counted nor touched."""
    from ..backup import prune_backups

    try:
        name = getattr(db, "name", None) or name_of(db.url.raw)  # as the copy records it
        prune_backups(os.path.dirname(path), keep=keep, kind="premigrate",
                      source=None if name else db.url.redacted(), database=name,
                      missing_ok=True)
    except (BackupError, OSError):
        pass  # the new copy is written; an older one that cannot go stays for `backup prune`
