"""The manifest that travels with every backup, as a sidecar ``<backup>.manifest.json``.

It says what the file is (format, compression, source, versions, schema version), how to check it
(size and sha256 of the file, and of the uncompressed data) and whether it was verified.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from ..errors import BackupCorrupt, BackupError
from ..protocols import Queryable
from . import files
from .files import Progress

SUFFIX = ".manifest.json"
#: bumped when a field changes meaning; readers refuse manifests newer than they understand
MANIFEST_VERSION = 1


@dataclass
class Manifest:
    """Everything recorded about one backup file."""

    format: str  # "sqlite3" or "pg_dump"
    file: str  # the backup's file name (the sidecar sits beside it)
    created_at: str  # ISO-8601 UTC
    source: str  # the database URL, password redacted
    engine_version: str  # embeddb
    database_version: str  # SQLite library or PostgreSQL server version
    tool_version: str | None  # pg_dump's version; None for SQLite
    schema_version: int | None  # latest applied migration, None when never migrated
    compression: str | None  # "gzip" or None (pg_dump -Fc compresses on its own)
    size: int  # bytes of the file as stored
    sha256: str  # of the file as stored
    data_size: int  # bytes once decompressed
    data_sha256: str  # of the decompressed data
    page_count: int | None = None
    page_size: int | None = None
    schema: str | None = None  # the PostgreSQL schema dumped, None for the whole database
    verified_at: str | None = None
    verified: bool | None = None  # None: never verified
    verify_error: str | None = None
    # PRAGMA quick_check of the snapshot: "ok", or what failed (written only with --force);
    # None for PostgreSQL and for backups of embeddb versions that did not check
    source_check: str | None = None
    # the embeddb.toml name of the database backed up (``[databases.NAME]``); None for the
    # default database, one opened by URL, and backups of embeddb versions before names
    database: str | None = None
    manifest_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def sidecar(backup_path: str) -> str:
    """Where the manifest of ``backup_path`` lives."""
    return backup_path + SUFFIX


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def write(backup_path: str, manifest: Manifest) -> None:
    """Write the sidecar durably (temp file, fsync, rename)."""
    files.write_bytes(sidecar(backup_path), manifest.to_json().encode())


def read(backup_path: str) -> Manifest:
    """Read the manifest of ``backup_path``.

    :raises BackupError: the backup or its manifest is missing.
    :raises BackupCorrupt: the manifest is not valid JSON or lacks fields.
    """
    if not os.path.isfile(backup_path):
        raise BackupError(f"no backup file at {backup_path}: check the path (embeddb backup list)")
    path = sidecar(backup_path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise BackupError(
            f"{backup_path} has no manifest ({os.path.basename(path)}): it was not written by "
            "embeddb backup create or the sidecar was lost; its checksum cannot be checked"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupCorrupt(f"cannot read the manifest {path}: {exc}") from exc
    return _from_dict(path, data)


def _from_dict(path: str, data: Any) -> Manifest:
    known = {f.name for f in fields(Manifest)}
    if not isinstance(data, dict):
        raise BackupCorrupt(f"manifest {path} is not a JSON object")
    if data.get("manifest_version", 0) > MANIFEST_VERSION:
        raise BackupError(f"manifest {path} is from a newer embeddb: upgrade embeddb to read it")
    try:
        return Manifest(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise BackupCorrupt(f"manifest {path} is incomplete: {exc}") from exc


def record_verification(backup_path: str, manifest: Manifest, error: str | None) -> None:
    """Store the outcome of a verification in the sidecar (best effort: read-only dirs skip it)."""
    manifest.verified_at = now_iso()
    manifest.verified = error is None
    manifest.verify_error = error
    try:
        write(backup_path, manifest)
    except OSError:
        pass


def schema_version_of(db: Queryable) -> int | None:
    """The latest applied migration of ``db`` (None when never migrated)."""
    try:
        from ..migrate.history import current_version
    except ImportError:  # a build without the migration runner
        return None
    return current_version(db)


def check_file(path: str, record: Manifest, progress: Progress) -> None:
    """Compare the size and sha256 of ``path`` with its manifest; an uncompressed file is its
    own data, so ``data_size`` and ``data_sha256`` must match it too.

    :raises BackupCorrupt: they differ (the file was truncated or altered, or the manifest was).
    """
    size = os.path.getsize(path)
    if size != record.size:
        raise BackupCorrupt(
            f"{path} is {size} bytes but its manifest says {record.size}: the file was "
            "truncated or altered after it was written; use another backup"
        )
    sha = files.sha256_file(path, "checksum", progress)
    if sha != record.sha256:
        raise BackupCorrupt(
            f"{path} fails its checksum (sha256 {sha[:16]}..., manifest {record.sha256[:16]}...): "
            "the file was damaged after it was written; use another backup"
        )
    if record.compression is None and (sha, size) != (record.data_sha256, record.data_size):
        raise BackupCorrupt(
            f"{path} does not match the data checksum in its manifest (data_sha256 "
            f"{record.data_sha256[:16]}..., file {sha[:16]}...): the file or its manifest was "
            "altered; use another backup"
        )
