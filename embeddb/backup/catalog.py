"""The backups in a directory: listing them newest first, and what killed backups left behind."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BackupError, ConfigurationError
from . import files, manifest


def retention_kind(path: str) -> str:
    """``premigrate`` (taken by ``migrate``), ``prerestore`` (by ``restore``) or ``regular``."""
    name = os.path.basename(path)
    if "-premigrate-" in name:
        return "premigrate"
    if ".pre-restore-" in name:
        return "prerestore"
    return "regular"


_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}" + re.escape(files.TEMP_SUFFIX) + "$")


#: A manifest without its data is a killed backup only after this long: a running one writes
#: its manifest a moment before it renames the data into place.
ORPHAN_AGE = 600.0


def entries(directory: str, missing_ok: bool = False) -> list[dict[str, Any]]:
    """Every complete backup in ``directory`` (data file and manifest), newest first.

    ``file`` is the name on disk (the manifest's ``file`` is the name it was written under).

    :raises BackupError: ``directory`` does not exist (unless ``missing_ok``) or is no directory.
    """
    if not os.path.isdir(directory):
        if missing_ok and not os.path.exists(directory):
            return []
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise BackupError(f"backup directory {directory} {what}: pass --dir DIR")
    now = datetime.now(UTC)
    found: list[dict[str, Any]] = []
    for name in os.listdir(directory):
        if not name.endswith(manifest.SUFFIX):
            continue
        path = os.path.join(directory, name[: -len(manifest.SUFFIX)])
        if not os.path.isfile(path):
            continue  # a manifest whose data never arrived: a killed backup (prune removes it)
        try:
            record = manifest.read(path)
        except BackupError:
            continue
        created = datetime.fromisoformat(record.created_at)
        found.append({
            "path": path,
            "file": os.path.basename(path),
            "kind": retention_kind(path),
            "format": record.format,
            "created_at": record.created_at,
            "age_seconds": round((now - created).total_seconds(), 1),
            "size": record.size,
            "compression": record.compression,
            "schema_version": record.schema_version,
            "verified": record.verified,
            "verified_at": record.verified_at,
            "source": record.source,
            "database": record.database,
            "manifest": asdict(record),
        })
    found.sort(key=lambda e: e["created_at"], reverse=True)
    return found


def leftovers(directory: str) -> list[str]:
    """Remains of killed backups: old orphan manifests and temp files of dead processes."""
    if not os.path.isdir(directory):
        return []
    found: list[str] = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if (name.endswith(manifest.SUFFIX) and not os.path.exists(path[: -len(manifest.SUFFIX)])
                and _older_than(path, ORPHAN_AGE)):  # younger: a backup about to rename its data
            found.append(path)
        match = _TEMP.match(name)
        if match and not files.alive(int(match.group(1))):
            found.append(path)
    return found


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except OSError:
        return False


#: the longest age accepted: a cutoff further back than this is a typo (and ``now - age``
#: would leave the range of dates)
MAX_AGE = timedelta(days=36500)


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``2w`` or ``90s`` as a timedelta, at most :data:`MAX_AGE`.

    :raises ConfigurationError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ConfigurationError(f"age {text!r} not understood: use e.g. 90s, 45m, 12h, 30d, 2w")
    seconds = float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    if seconds > MAX_AGE.total_seconds():
        raise ConfigurationError(f"age {text!r} is too long: at most {MAX_AGE.days}d (100 years)")
    return timedelta(seconds=seconds)
