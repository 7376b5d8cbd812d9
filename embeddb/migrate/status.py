"""Reading and correcting the bookkeeping table: status, verify, repair, resolve."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ChecksumMismatch, MigrationError
from ..protocols import Database
from . import history
from .backends import backend_for
from .files import discover, resolve_directory
from .history import APPLIED, FAILED, LOCK_TIMEOUT

PENDING = "pending"
CHANGED = "checksum changed"
MISSING = "missing file"


@dataclass(frozen=True)
class Entry:
    """One version as ``status`` reports it."""

    version: int
    name: str
    state: str  # applied, pending, failed, checksum changed, missing file
    applied_at: str | None = None
    duration_ms: float | None = None
    checksum: str | None = None  # of the file now
    recorded_checksum: str | None = None  # as applied
    file: str | None = None


def status(db: Database, directory: str | os.PathLike[str] | None = None) -> list[Entry]:
    """Every version in the folder or the table, in order, with its state.

    :raises MigrationError: the folder is malformed.
    """
    migrations = discover(resolve_directory(directory, db), backend_for(db).variants)
    records = history.read(db)
    entries = {}
    for m in migrations:
        record = records.get(m.version)
        state = PENDING
        if record is not None:
            state = record.status
            if state == APPLIED and record.checksum != m.checksum:
                state = CHANGED
        entries[m.version] = Entry(
            m.version, m.label, state,
            record.applied_at if record else None, record.duration_ms if record else None,
            m.checksum, record.checksum if record else None, m.up.path.name,
        )
    for version, record in records.items():
        if version not in entries:
            entries[version] = Entry(
                version, record.name, MISSING, record.applied_at, record.duration_ms,
                None, record.checksum, None,
            )
    return [entries[v] for v in sorted(entries)]


def verify(db: Database, directory: str | os.PathLike[str] | None = None) -> list[Entry]:
    """Check that every applied file is unchanged and present; return the status on success.

    :raises ChecksumMismatch: an applied file was edited (names the file and both checksums).
    :raises MigrationError: an applied file is missing, or a migration is marked failed.
    """
    entries = status(db, directory)
    changed = [e for e in entries if e.state == CHANGED]
    if changed:
        raise ChecksumMismatch("; ".join(
            f"{e.file} changed after it was applied (recorded checksum {e.recorded_checksum}, "
            f"file now {e.checksum})" for e in changed
        ) + ": restore the file(s), or run `embeddb migrate repair` to accept the new content")
    problems = [f"{e.name}: {e.state}" for e in entries if e.state in (MISSING, FAILED)]
    if problems:
        raise MigrationError(
            "; ".join(problems) + " (restore missing files; re-run or resolve failed versions)"
        )
    return entries


def repair(
    db: Database,
    directory: str | os.PathLike[str] | None = None,
    *,
    lock_timeout: float = LOCK_TIMEOUT,
) -> list[str]:
    """Accept the current content of edited applied files: record their new checksums.

    Returns the names of the migrations whose checksum was updated.
    """
    migrations = discover(resolve_directory(directory, db), backend_for(db).variants)
    repaired = []
    with history.session(db, lock_timeout, locked=True) as records, db.atomic():
        for m in migrations:
            record = records.get(m.version)
            if record is not None and record.checksum != m.checksum:
                history.set_checksum(db, m.version, m.label, m.checksum)
                repaired.append(m.label)
    return repaired


def resolve(
    db: Database,
    directory: str | os.PathLike[str] | None = None,
    version: int = 0,
    *,
    applied: bool = True,
    lock_timeout: float = LOCK_TIMEOUT,
) -> str:
    """Settle a failed no-transaction migration by hand.

    ``applied=True``: you finished its work yourself; it is marked applied with the file's
    current checksum. ``applied=False``: you undid its partial work; it becomes pending again.
    Returns the new state.

    :raises MigrationError: ``version`` is not marked failed.
    """
    migrations = {
        m.version: m
        for m in discover(resolve_directory(directory, db), backend_for(db).variants)
    }
    with history.session(db, lock_timeout, locked=True) as records, db.atomic():
        record = records.get(version)
        if record is None or record.status != FAILED:
            state = "not applied" if record is None else record.status
            raise MigrationError(f"version {version} is not marked failed (it is {state})")
        if not applied:
            history.delete(db, version)
            return PENDING
        migration = migrations.get(version)
        history.mark_applied(db, version)
        if migration is not None:
            history.set_checksum(db, version, migration.label, migration.checksum)
        return APPLIED
