"""Retention the app declares: which old rows of its own tables ``maintenance cleanup`` deletes.

A policy says "delete rows of TABLE whose COLUMN (a UTC timestamp) is older than AGE", with an
optional extra SQL condition. Apps declare theirs in code (a list of :class:`Policy`) or in a
``retention.toml`` file::

    [[policy]]
    name = "expired sessions"
    table = "sessions"
    column = "expires_at"          # past its expiry: older than 0s

    [[policy]]
    name = "old tool executions"
    table = "tool_executions"
    column = "created_at"
    older_than = "90d"
    where = "status <> 'running'"  # optional, plain SQL

The file is ``[maintenance] retention = "path"`` in ``embeddb.toml``, else ``retention.toml``
beside the migrations folder (so the reference application, whose migrations ship with
embeddb, ships its policies the same way). Rows go in short transactions of ``batch_size``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .errors import DatabaseError, MaintenanceError
from .models import UTCDateTimeField
from .protocols import Database

FILE = "retention.toml"
#: the longest retention accepted (100 years): further back leaves the range of dates
MAX_AGE = timedelta(days=36500)
_KEYS = {"name", "table", "column", "older_than", "where"}
_REQUIRED = ("name", "table", "column")
_stamp = UTCDateTimeField().db_value

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Policy:
    """Delete rows of ``table`` whose ``column`` is more than ``older_than`` in the past (and
    that match ``where``, an SQL condition, when given)."""

    name: str
    table: str
    column: str
    older_than: timedelta = timedelta(0)
    where: str | None = None

    def __post_init__(self) -> None:
        for key in _REQUIRED:
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise MaintenanceError(f"retention policy {self.name!r}: {key} must be text")
        if not isinstance(self.older_than, timedelta) or not (
                timedelta(0) <= self.older_than <= MAX_AGE):
            raise MaintenanceError(f"retention policy {self.name!r}: older_than must be "
                                   f"between 0 and {MAX_AGE.days} days")


def load(path: str | os.PathLike[str]) -> list[Policy]:
    """The policies of a ``retention.toml``.

    :raises MaintenanceError: unreadable, an unknown or missing key, a bad age, a repeated name.
    """
    from .backup.catalog import parse_age

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MaintenanceError(f"cannot read {path}: {exc}") from exc
    extra = set(data) - {"policy"}
    entries = data.get("policy", [])
    if extra or not isinstance(entries, list):
        raise MaintenanceError(f"{path}: expected only [[policy]] tables"
                               + (f", found {', '.join(sorted(extra))}" if extra else ""))
    policies = []
    for number, entry in enumerate(entries, 1):
        unknown = set(entry) - _KEYS
        missing = [k for k in _REQUIRED if k not in entry]
        if unknown or missing:
            problem = (f"unknown key {sorted(unknown)[0]!r}" if unknown
                       else f"missing {missing[0]!r}")
            raise MaintenanceError(f"{path}: policy {number}: {problem}; keys: "
                                   f"{', '.join(sorted(_KEYS))}")
        try:
            age = parse_age(entry.get("older_than", "0s"))
        except Exception as exc:  # noqa: BLE001 - one message for any bad age
            raise MaintenanceError(f"{path}: policy {entry['name']!r}: {exc}") from exc
        policies.append(Policy(entry["name"], entry["table"], entry["column"], age,
                               entry.get("where")))
    names = [p.name for p in policies]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise MaintenanceError(f"{path}: policy name {repeated[0]!r} is used twice")
    return policies


def declared(path: str | os.PathLike[str] | None = None, entry: Any = None) -> list[Policy]:
    """The app's policies: from ``path``, else embeddb.toml's ``[maintenance] retention``, else
    ``retention.toml`` beside the migrations folder.

    :raises MaintenanceError: none is declared anywhere (saying where to put them).
    """
    if path is None:
        from .config import CONFIG_FILE, load_config_file

        configured = load_config_file(Path(CONFIG_FILE)).get("maintenance", {}).get("retention")
        if configured is not None:
            path = configured
    if path is None:
        from .folders import migrations

        beside = migrations(None, entry).parent / FILE
        if not beside.is_file():
            raise MaintenanceError(
                f"no retention policies declared: write {beside} ([[policy]] name, table, "
                f"column, older_than) or set [maintenance] retention in embeddb.toml")
        path = beside
    return load(path)


def run(
    db: Database,
    policies: list[Policy],
    *,
    now: datetime | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Apply ``policies``: every policy is checked against the database before any row goes,
    then each deletes ``batch_size`` rows per transaction (``dry_run``: only counts). Policies
    on tables that do not exist are skipped.

    :returns: ``{"dry_run", "deleted": {name: n}, "skipped": [name], "cutoffs": {name: iso}}``
    """
    now = now or datetime.now(UTC)
    result: dict[str, Any] = {"dry_run": dry_run, "deleted": {}, "skipped": [], "cutoffs": {}}
    due = []
    for policy in policies:
        cutoff = now - policy.older_than
        result["cutoffs"][policy.name] = cutoff.isoformat()
        if not db.table_exists(policy.table):
            result["skipped"].append(policy.name)
            continue
        condition = _condition(db, policy)
        _check(db, policy, condition, cutoff)
        due.append((policy, condition, cutoff))
    deleted_any = False
    for policy, condition, cutoff in due:
        count = _apply(db, policy, condition, cutoff, batch_size, dry_run, progress)
        result["deleted"][policy.name] = count
        deleted_any = deleted_any or (count > 0 and not dry_run)
    if deleted_any:
        from .cache.tiered import forget

        forget(db)  # cached rows of those tables may be gone
    return result


def _condition(db: Database, policy: Policy) -> str:
    from .dialect import quote

    sql = f"{quote(policy.column)} < {db.param}"
    return f"{sql} AND ({policy.where})" if policy.where else sql


def _check(db: Database, policy: Policy, condition: str, cutoff: datetime) -> None:
    from .dialect import quote

    # checked by name: SQLite would read an unknown "column" as a string literal
    columns = [c.name for c in db.get_columns(policy.table)]
    if policy.column not in columns:
        raise MaintenanceError(
            f"retention policy {policy.name!r} does not fit table {policy.table}: it has no "
            f"column {policy.column!r} (columns: {', '.join(columns)}); nothing was deleted")
    try:
        db.execute_sql(f"SELECT 1 FROM {quote(policy.table)} WHERE {condition} LIMIT 0",
                       (_stamp(cutoff),)).fetchall()
    except DatabaseError as exc:
        raise MaintenanceError(
            f"retention policy {policy.name!r} does not fit table {policy.table}: "
            f"{' '.join(str(exc).split())}; nothing was deleted") from exc


def _apply(db: Database, policy: Policy, condition: str, cutoff: datetime, batch_size: int,
           dry_run: bool, progress: Progress | None) -> int:
    from .dialect import quote

    table, stamp = quote(policy.table), _stamp(cutoff)
    if dry_run:
        return db.execute_sql(f"SELECT count(*) FROM {table} WHERE {condition}",
                              (stamp,)).fetchone()[0]
    row = db.dialect.row_locator
    total = 0
    while True:
        with db.atomic():
            deleted = db.execute_sql(
                f"DELETE FROM {table} WHERE {row} IN (SELECT {row} FROM {table} "
                f"WHERE {condition} LIMIT {int(batch_size)})", (stamp,)).rowcount
        total += deleted
        if progress is not None:
            progress(policy.name, total)
        if deleted < batch_size:
            return total
