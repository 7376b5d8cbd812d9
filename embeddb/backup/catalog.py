"""The backups in a directory: listing them newest first, and pruning by count or age."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BackupError, ConfigurationError
from . import files, manifest

_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}" + re.escape(files.TEMP_SUFFIX) + "$")


#: A manifest without its data is a killed backup only after this long: a running one writes
#: its manifest a moment before it renames the data into place.
ORPHAN_AGE = 600.0


def entries(directory: str) -> list[dict[str, Any]]:
    """Every complete backup in ``directory`` (data file and manifest), newest first."""
    if not os.path.isdir(directory):
        return []
    now = datetime.now(UTC)
    found = []
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
            "file": record.file,
            "format": record.format,
            "created_at": record.created_at,
            "age_seconds": round((now - created).total_seconds(), 1),
            "size": record.size,
            "compression": record.compression,
            "schema_version": record.schema_version,
            "verified": record.verified,
            "verified_at": record.verified_at,
            "source": record.source,
            "manifest": asdict(record),
        })
    found.sort(key=lambda e: e["created_at"], reverse=True)
    return found


def prune(
    directory: str,
    keep: int | None = None,
    older_than: timedelta | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Remove old backups: all but the newest ``keep``, and/or those older than ``older_than``.

    With both, the newest ``keep`` always stay and the rest go only when older than the age.
    Leftovers of killed backups (orphan manifests, temp files of dead processes) go too.

    :raises ConfigurationError: neither ``keep`` nor ``older_than`` was given, or keep < 0.
    """
    if keep is None and older_than is None:
        raise ConfigurationError("prune needs --keep N and/or --older-than AGE (e.g. 30d)")
    if keep is not None and keep < 0:
        raise ConfigurationError("--keep must be 0 or more")
    backups = entries(directory)
    candidates = _beyond_keep(backups, keep) if keep is not None else backups
    if older_than is not None:
        cutoff = datetime.now(UTC) - older_than
        candidates = [e for e in candidates if datetime.fromisoformat(e["created_at"]) < cutoff]
    leftovers = _leftovers(directory)
    if not dry_run:
        for entry in candidates:
            files.discard(entry["path"])
            files.discard(manifest.sidecar(entry["path"]))
        for path in leftovers:
            files.discard(path)
    doomed = {e["path"] for e in candidates}
    return {
        "dry_run": dry_run,
        "removed": [e["path"] for e in candidates],
        "kept": [e["path"] for e in backups if e["path"] not in doomed],
        "leftovers": leftovers,
    }


def _beyond_keep(backups: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """All but the newest ``keep`` of each kind: per source database, with pre-migration
    safety copies counted apart, so one database's backups never push out another's."""
    groups: dict[tuple[Any, bool], list[dict[str, Any]]] = {}
    for entry in backups:  # newest first
        key = (entry.get("source"), "-premigrate-" in os.path.basename(entry["path"]))
        groups.setdefault(key, []).append(entry)
    doomed = {id(e) for group in groups.values() for e in group[keep:]}
    return [e for e in backups if id(e) in doomed]


def _leftovers(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        return []
    found = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if (name.endswith(manifest.SUFFIX) and not os.path.exists(path[: -len(manifest.SUFFIX)])
                and _older_than(path, ORPHAN_AGE)):  # younger: a backup about to rename its data
            found.append(path)
        match = _TEMP.match(name)
        if match and not _alive(int(match.group(1))):
            found.append(path)
    return found


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.path.getmtime(path) > seconds
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``45m``, ``2w`` or ``90s`` as a timedelta.

    :raises ConfigurationError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ConfigurationError(f"age {text!r} not understood: use e.g. 90s, 45m, 12h, 30d, 2w")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
    return timedelta(**{unit: float(match[1])})
