"""The safety copy of a SQLite file taken before migrations change it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from ..errors import BackupError, MigrationError


def premigrate_backup(db: Any) -> str | None:
    """Back the database up to ``<db dir>/backups/<name>-premigrate-<UTC time>.db``; the path.

    A regular :mod:`embeddb.backup` backup (one-step online copy, written durably, with its
    manifest), so ``embeddb backup list`` shows it and ``embeddb backup restore`` takes it back.
    Nothing is copied for ``:memory:`` or for a database with no tables of its own yet (None).

    :raises MigrationError: the copy could not be written.
    """
    if db.is_memory or not any(not t.startswith("embeddb_") for t in db.get_tables()):
        return None
    from ..backup import create_backup, default_directory

    stem = os.path.splitext(os.path.basename(db.database))[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = os.path.join(default_directory(db), f"{stem}-premigrate-{stamp}.db")
    try:
        return create_backup(db, out=target).path
    except (BackupError, OSError) as exc:
        raise MigrationError(
            f"could not write the safety backup {target}: {exc} "
            "(free space or fix permissions, or pass --no-backup)"
        ) from exc
