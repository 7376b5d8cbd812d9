"""Retention: which backups ``prune`` deletes, and why.

The rules, applied to the backups of each source database separately, newest first:

- Only *good* backups count toward ``keep``: a backup recorded as failing verification, or whose
  file no longer matches its manifest (size, then sha256), never does.
- The newest good backup of a database is never deleted, whatever ``keep`` and ``older_than``
  say, nor the newest one that passed ``backup verify``; a database with no good backup at all
  loses nothing (there is nothing better to keep).
- ``keep`` counts every kind together (regular backups, pre-migration and pre-restore safety
  copies: each is a full copy of the database); ``kind`` limits a prune to one kind, and then
  only that kind is counted and touched.

Cost: a size check is always made. The sha256 of a backup is read only for the ones that are to
be kept *while something else of that database is deleted*, and not at all for a backup whose
``verify`` passed after its file was last modified. So a prune that deletes nothing reads no
backup, and one that does reads at most ``keep`` files per database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import BackupError, ConfigurationError
from . import catalog, files, manifest

#: What each kind of backup is, recognised by the name its writer gives it.
KINDS = ("regular", "premigrate", "prerestore")
#: ``database=`` for a prune of every database in the folder (None: the unnamed ones only)
ANY_DATABASE = "*"


kind_of = catalog.retention_kind


@dataclass
class _Candidate:
    entry: dict[str, Any]
    problem: str | None = None  # why it is not good; None while it looks good
    confirmed: bool = False  # its sha256 was checked (or trusted after a recent verify)

    @property
    def path(self) -> str:
        return self.entry["path"]


def prune(
    directory: str,
    keep: int | None = None,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    kind: str | None = None,
    source: str | None = None,
    missing_ok: bool = False,
    database: str | None = ANY_DATABASE,
) -> dict[str, Any]:
    """Delete old backups in ``directory`` by the module's rules; ``dry_run`` deletes nothing.

    ``kind``, ``source`` (a manifest's ``source``: the redacted URL) and ``database`` (its
    embeddb.toml name; None: only backups recording no name, those of the default database or
    one opened by URL; :data:`ANY_DATABASE`: every one) limit the prune to those backups; the
    others are neither counted nor touched. A database is its name when it has one (its URL
    may have changed), else its URL.

    ``keep``: the newest ``keep`` good backups of each database stay. ``older_than``: only
    backups older than this go. With both, the newest ``keep`` stay and the rest go once older.
    Leftovers of killed backups (orphan manifests, temp files of dead processes) go too.

    :returns: ``{"dry_run", "decisions": [{"path", "kind", "action", "reason"}], "removed",
        "kept", "leftovers", "warnings"}``; ``action`` is ``deleted``, ``would delete`` or
        ``kept``.
    :raises ConfigurationError: neither ``keep`` nor ``older_than``, keep < 0, unknown kind.
    :raises BackupError: ``directory`` does not exist (nothing to do with ``missing_ok``).
    """
    if keep is None and older_than is None:
        raise ConfigurationError("prune needs --keep N and/or --older-than AGE (e.g. 30d)")
    if keep is not None and keep < 0:
        raise ConfigurationError("--keep must be 0 or more")
    if kind is not None and kind not in KINDS:
        raise ConfigurationError(f"unknown backup kind {kind!r}: use one of {', '.join(KINDS)}")
    entries = [e for e in catalog.entries(directory, missing_ok)
               if kind in (None, e["kind"]) and source in (None, e["source"])
               and database in (ANY_DATABASE, e["database"])]
    cutoff = datetime.now(UTC) - older_than if older_than is not None else None
    groups: dict[Any, list[_Candidate]] = {}
    for entry in entries:  # newest first
        key = entry["database"] or entry["source"]
        groups.setdefault(key, []).append(_Candidate(entry, _cheap_problem(entry)))
    decisions: dict[str, tuple[str, str]] = {}
    warnings = []
    for source, group in groups.items():
        outcome = _settle(group, keep, cutoff, older_than, record=not dry_run)
        decisions.update(outcome)
        if all(c.problem for c in group):
            warnings.append(f"no good backup of {source}: nothing of it was deleted")
    leftovers = catalog.leftovers(directory)
    doomed = [e["path"] for e in entries if decisions[e["path"]][0] == "delete"]
    if not dry_run:
        for path in doomed:
            files.discard(path)
            files.discard(manifest.sidecar(path))
        for path in leftovers:
            files.discard(path)
    verb = "would delete" if dry_run else "deleted"
    return {
        "dry_run": dry_run,
        "kind": kind,
        "decisions": [
            {"path": e["path"], "kind": e["kind"], "source": e["source"],
             "action": verb if decisions[e["path"]][0] == "delete" else "kept",
             "reason": decisions[e["path"]][1]}
            for e in entries
        ],
        "removed": doomed,
        "kept": [e["path"] for e in entries if e["path"] not in set(doomed)],
        "leftovers": leftovers,
        "warnings": warnings,
    }


def _settle(
    group: list[_Candidate], keep: int | None, cutoff: datetime | None,
    older_than: timedelta | None, record: bool,
) -> dict[str, tuple[str, str]]:
    """Decide each backup of one database; checksum the keepers only if something goes."""
    while True:
        plan, protectors = _plan(group, keep, cutoff, older_than)
        if not any(action == "delete" for action, _ in plan.values()):
            return plan
        unconfirmed = [c for c in group if c.path in protectors and not c.confirmed]
        if not unconfirmed:
            return plan
        for candidate in unconfirmed:
            candidate.confirmed = True
            candidate.problem = _checksum_problem(candidate.entry, record)


def _plan(
    group: list[_Candidate], keep: int | None, cutoff: datetime | None,
    older_than: timedelta | None,
) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Each backup's (action, reason), and the good backups kept for what they are (by count
    or as the newest verified), on whose soundness deleting the others relies."""
    good = [c for c in group if c.problem is None]
    if not good:
        return {c.path: ("keep", f"{c.problem}; but no good backup of this database is left, "
                         "so nothing of it is deleted") for c in group}, set()
    count = max(keep, 1) if keep is not None else 1
    keepers = {c.path for c in good[:count]}
    verified = next((c for c in good if c.entry["manifest"]["verified"] is True), None)
    plan = {}
    for candidate in group:
        created = datetime.fromisoformat(candidate.entry["created_at"])
        if candidate.path in keepers:
            plan[candidate.path] = ("keep", "the newest good backup" if candidate is good[0]
                                    else f"among the newest {count} good backups")
        elif candidate is verified:
            plan[candidate.path] = ("keep", "the newest backup that passed backup verify")
        elif cutoff is not None and created >= cutoff:
            plan[candidate.path] = ("keep", f"younger than {_age(older_than)}")
        elif candidate.problem:
            plan[candidate.path] = ("delete", candidate.problem)
        elif keep is not None:
            reason = f"beyond the newest {count} good backup{'s' if count > 1 else ''}"
            if cutoff is not None:
                reason += f" and older than {_age(older_than)}"
            plan[candidate.path] = ("delete", reason)
        else:
            plan[candidate.path] = ("delete", f"older than {_age(older_than)}")
    return plan, keepers | ({verified.path} if verified else set())


def _cheap_problem(entry: dict[str, Any]) -> str | None:
    """Why a backup is not good, from its manifest and file size alone."""
    record = entry["manifest"]
    if record["verified"] is False:
        return f"failed verification ({record['verify_error']})"
    if record.get("source_check") not in (None, "ok"):
        return f"taken with --force from a damaged database ({record['source_check']})"
    try:
        size = os.path.getsize(entry["path"])
    except OSError as exc:
        return f"cannot read the file ({exc.strerror})"
    if size != record["size"]:
        return f"the file is {size} bytes but its manifest says {record['size']}"
    return None


def _checksum_problem(entry: dict[str, Any], record: bool) -> str | None:
    """Why a backup's bytes do not match its manifest (None: they do, or a verify vouches)."""
    if _verified_since_written(entry):
        return None
    try:
        manifest.check_file(entry["path"], manifest.read(entry["path"]), files.no_progress)
    except BackupError as exc:
        if record:
            manifest.record_verification(entry["path"], manifest.read(entry["path"]), str(exc))
        return f"failed verification ({exc})"
    return None


def _verified_since_written(entry: dict[str, Any]) -> bool:
    verified_at = entry["manifest"]["verified_at"]
    if entry["manifest"]["verified"] is not True or not verified_at:
        return False
    try:
        modified = os.path.getmtime(entry["path"])
    except OSError:
        return False
    return modified < datetime.fromisoformat(verified_at).timestamp()


def _age(age: timedelta | None) -> str:
    seconds = age.total_seconds() if age is not None else 0
    for size, unit in ((604800, "w"), (86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"
