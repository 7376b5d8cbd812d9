"""The audit log: every INSERT / UPDATE / DELETE on an audited table, recorded by database
triggers in the same transaction as the change (raw SQL and other programs included), with the
changed columns' old and new values, the actor, the request id and the UTC time.

    with audit.context(actor="user:42", request_id=request.id):   # around the request's work
        services.update(service, price=10)

    audit.history(db, "services", service.id)      # oldest first
    audit.changes(db, actor="user:42", since=yesterday)

Tables opt in through a migration that ``embeddb audit enable TABLE`` writes (both backends);
``--exclude password_hash`` keeps a column's values out of the log entirely. The context
(contextvars: thread and asyncio safe) is handed to each transaction that begins inside it;
a write outside any context records the actor as None (unknown), never a stale one.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError, EmbeddbError
from ..protocols import Database
from . import postgres, sqlite

_DRIVERS: dict[str, ModuleType] = {"sqlite": sqlite, "postgresql": postgres}
_current: ContextVar[tuple[str | None, str | None] | None] = ContextVar(
    "embeddb_audit_context", default=None)
MAX_CONTEXT = 500


class AuditError(EmbeddbError):
    """Auditing cannot do what was asked (unknown table or column, no audit table yet)."""


@dataclass(frozen=True)
class Change:
    """One audited write."""

    id: int
    table: str
    pk: str
    action: str  # INSERT, UPDATE or DELETE
    old: dict[str, Any] | None  # the changed columns before (None for INSERT)
    new: dict[str, Any] | None  # and after (None for DELETE)
    actor: str | None  # None: written outside any audit.context
    request_id: str | None
    at: datetime  # UTC


def _driver(db: Database) -> ModuleType:
    return _DRIVERS[db.dialect.name]


class context:  # noqa: N801 - used as a function: ``with audit.context(actor=...)``
    """Who is writing, for every transaction that begins inside the block.

    Enter it before the transaction (a request's middleware): a transaction already open
    keeps what it began with. A class rather than a generator: it wraps every audited request,
    and a generator-based context manager costs several times more to enter and leave.
    """

    __slots__ = ("_value", "_token")

    def __init__(self, actor: str | None = None, request_id: str | None = None) -> None:
        if actor is not None:
            _check("actor", actor)
        if request_id is not None:
            _check("request_id", request_id)
        self._value = (actor, request_id)

    def __enter__(self) -> None:
        self._token = _current.set(self._value)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def _check(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) > MAX_CONTEXT:
        raise ConfigurationError(f"audit {name} must be text of at most {MAX_CONTEXT} characters")


def current() -> tuple[str | None, str | None] | None:
    """The ``(actor, request_id)`` in effect here, or None."""
    return _current.get()


def on_begin(db: Database, lock_type: str | None = None, cursor: Any = None) -> Any:
    """Called by the engine right after BEGIN: hand the context to the transaction. What it
    returns (None: nothing) goes to :func:`before_commit`. ``cursor``: the engine's driver
    cursor on the transaction's connection, for its single-statement write path (its driver
    errors are the engine's to translate)."""
    found = _current.get()
    if found is None:
        return None
    return _DRIVERS[db.dialect.name].push_context(db, found, lock_type, cursor)


def before_commit(db: Database, pending: Any, cursor: Any = None) -> None:
    """Called by the engine before COMMIT with what :func:`on_begin` returned (and the
    cursor it was given)."""
    _DRIVERS[db.dialect.name].finish_context(db, pending, cursor)


# -- enabling -----------------------------------------------------------------------------


def _plan(db: Database, table: str, columns: list[str] | None,
          exclude: list[str]) -> tuple[list[str], list[str]]:
    driver = _driver(db)
    present, pk = driver.table_columns(db, table)
    if not present:
        raise AuditError(f"no table {table!r} in {db.url.redacted()}: create it (embeddb "
                         "migrate up) before enabling its audit log")
    unknown = [c for c in [*(columns or []), *exclude] if c not in present]
    if unknown:
        raise AuditError(f"{table} has no column {', '.join(map(repr, unknown))}; its columns: "
                         f"{', '.join(present)}")
    kept = [c for c in (columns or present) if c not in exclude]
    if not kept:
        raise AuditError(f"nothing left to audit in {table}: every column is excluded")
    return pk, kept


def enable_sql(db: Database, table: str, columns: list[str] | None = None,
               exclude: list[str] | None = None) -> dict[str, list[str]]:
    """The up statements, per backend (``sqlite``, ``postgres``), that audit ``table``.

    The columns are read from ``db``; both backends get triggers for the same columns. If
    ``db``'s audit log was made by an earlier embeddb in a shape that costs more per write,
    the statements first rebuild it (as :func:`upgrade_sql`).
    """
    pk, kept = _plan(db, table, columns, exclude or [])
    text = _driver(db).text_columns(db, table)
    outdated = _driver(db).outdated(db)
    return {
        driver.DRIVER: [*(driver.UPGRADE if outdated else ()), *driver.INSTALL,
                        *driver.drop_triggers(table), *driver.triggers(table, pk, kept, text)]
        for driver in (sqlite, postgres)
    }


def upgrade_sql() -> dict[str, list[str]]:
    """The statements, per backend, that rebuild an audit log made by an earlier embeddb in
    the current shape, keeping every row (on SQLite a copy of the whole log: constraints on
    it made each audited write keep a statement journal). Harmless on a current log."""
    return {driver.DRIVER: [*driver.UPGRADE, *driver.INSTALL] for driver in (sqlite, postgres)}


def write_migration(db: Database, table: str, *, enable: bool = True,
                    columns: list[str] | None = None, exclude: list[str] | None = None,
                    directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the next migration that enables (or disables) auditing of ``table``; the files."""
    from ..migrate.files import write_generated

    up = enable_sql(db, table, columns, exclude) if enable else {
        d.DRIVER: d.drop_triggers(table) for d in (sqlite, postgres)}
    down = ({d.DRIVER: d.drop_triggers(table) for d in (sqlite, postgres)} if enable
            else enable_sql(db, table, columns, exclude))
    slug = "".join(ch if ch.isalnum() else "_" for ch in table.lower())
    return write_generated(directory, f"audit_{'enable' if enable else 'disable'}_{slug}", {
        f"{variant}.{direction}.sql": ";\n\n".join(parts[variant]) + ";\n"
        for variant in ("sqlite", "postgres") for direction, parts in (("up", up), ("down", down))
    })


def write_upgrade(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the next migration that rebuilds the audit log in its current shape
    (:func:`upgrade_sql`; undoing it leaves the log as it is); the files."""
    from ..migrate.files import write_generated

    up = upgrade_sql()
    return write_generated(directory, "audit_upgrade", {
        f"{variant}.{direction}.sql": text for variant in ("sqlite", "postgres")
        for direction, text in (("up", ";\n\n".join(up[variant]) + ";\n"),
                                ("down", "-- the upgraded log stays as it is\n"))})


# -- reading ------------------------------------------------------------------------------


def history(db: Database, table: str, pk: Any, limit: int = 1000) -> list[Change]:
    """Every audited write to one row, oldest first."""
    return _query(db, "table_name = {p} AND row_pk = {p}", [table, str(pk)], limit, "ASC")


def changes(db: Database, *, actor: str | None = None, since: datetime | None = None,
            table: str | None = None, limit: int = 1000) -> list[Change]:
    """Audited writes, newest first, filtered by actor, time and table."""
    where, params = ["1 = 1"], []
    if actor is not None:
        where.append("actor = {p}")
        params.append(actor)
    if table is not None:
        where.append("table_name = {p}")
        params.append(table)
    if since is not None:
        if since.tzinfo is None:
            raise ConfigurationError("since must be timezone-aware (e.g. datetime.now(UTC))")
        where.append("at >= {p}")
        params.append(_driver(db).stamp(since.astimezone(UTC)))
    return _query(db, " AND ".join(where), params, limit, "DESC")


def _query(db: Database, where: str, params: list[Any], limit: int, order: str) -> list[Change]:
    if not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
        raise ConfigurationError(f"limit={limit!r}: must be 1 to 1000000")
    sql = (f"SELECT id, table_name, row_pk, action, old_values, new_values, actor, request_id, "
           f"at FROM embeddb_audit WHERE {where.format(p=db.param)} ORDER BY id {order} "
           f"LIMIT {limit}")
    try:
        rows = db.execute_sql(sql, params).fetchall()
    except EmbeddbError as exc:
        if "embeddb_audit" in str(exc):
            raise AuditError(f"{db.url.redacted()} has no audit log yet: enable it with "
                             "`embeddb audit enable TABLE`") from exc
        raise
    return [Change(id_, t, pk, action, *_changed(action, _json(old), _json(new)), actor,
                   request, _time(at))
            for id_, t, pk, action, old, new, actor, request, at in rows]


def _changed(action: str, old: Any, new: Any) -> tuple[Any, Any]:
    """An UPDATE's changed columns only (SQLite triggers of earlier releases stored the
    whole before and after images)."""
    if action != "UPDATE" or not isinstance(old, dict) or not isinstance(new, dict):
        return old, new
    keys = [k for k in {**old, **new} if k not in old or k not in new or old[k] != new[k]]
    return {k: old[k] for k in keys if k in old}, {k: new[k] for k in keys if k in new}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
