"""The safety copy of a SQLite file taken before migrations change it."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

from ..errors import MigrationError


def premigrate_backup(db: Any) -> str | None:
    """Copy the database to ``<db dir>/backups/<name>-premigrate-<UTC time>.db``; return the path.

    SQLite's online backup API in one step (a stepped backup restarts on every concurrent commit
    and may never finish); written under a temporary name, fsynced, then renamed, so a crash never
    leaves a half-written file that looks like a backup. ``:memory:`` is not copied (None).

    :raises MigrationError: the copy could not be written.
    """
    if db.is_memory:
        return None
    source_path = os.path.abspath(db.database)
    folder = os.path.join(os.path.dirname(source_path), "backups")
    stem = os.path.splitext(os.path.basename(source_path))[0]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = os.path.join(folder, f"{stem}-premigrate-{stamp}.db")
    temporary = target + ".tmp"
    try:
        os.makedirs(folder, exist_ok=True)
        _copy(source_path, temporary)
        os.replace(temporary, target)
        _fsync_directory(folder)
    except (OSError, sqlite3.Error) as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise MigrationError(
            f"could not write the safety backup to {folder}: {exc} "
            "(free space or fix permissions, or pass --no-backup)"
        ) from exc
    return target


def _copy(source_path: str, target: str) -> None:
    source = sqlite3.connect(source_path)
    destination = sqlite3.connect(target)
    try:
        source.backup(destination)
    finally:
        destination.close()
        source.close()
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_directory(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
