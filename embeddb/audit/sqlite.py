"""The audit log on SQLite: triggers with the changed columns spelled out, and the context a
writer's transaction carries in the table ``embeddb_audit_context``.

A trigger cannot read a connection's temp objects, so the context is a row of a real table,
written inside the writer's transaction and deleted before its COMMIT (SQLite runs one write
transaction at a time: the row a trigger sees is its own transaction's, or none). A rolled back
or killed transaction takes its row with it.
"""

from __future__ import annotations

from typing import Any

from ..dialect import quote
from ..errors import DatabaseError
from ..protocols import Database

DRIVER = "sqlite"

INSTALL = (
    "CREATE TABLE IF NOT EXISTS embeddb_audit (\n"
    "    id         INTEGER PRIMARY KEY,\n"
    "    table_name TEXT NOT NULL,\n"
    "    row_pk     TEXT NOT NULL,\n"
    "    action     TEXT NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),\n"
    "    old_values TEXT,\n"
    "    new_values TEXT,\n"
    "    actor      TEXT,\n"
    "    request_id TEXT,\n"
    "    at         TEXT NOT NULL\n"
    ")",
    "CREATE INDEX IF NOT EXISTS embeddb_audit_row ON embeddb_audit (table_name, row_pk, id)",
    "CREATE TABLE IF NOT EXISTS embeddb_audit_context (actor TEXT, request_id TEXT)",
)
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_ACTOR = "(SELECT actor FROM embeddb_audit_context LIMIT 1)"
_REQUEST = "(SELECT request_id FROM embeddb_audit_context LIMIT 1)"


def table_columns(db: Database, table: str) -> tuple[list[str], list[str]]:
    """``(columns, primary-key columns)`` of ``table`` (empty lists if it does not exist)."""
    rows = db.execute_sql(f"PRAGMA table_info({quote(table)})").fetchall()
    columns = [r[1] for r in rows]
    pk = [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
    return columns, pk or (["rowid"] if columns else [])


def triggers(table: str, pk: list[str], columns: list[str]) -> list[str]:
    """CREATE TRIGGER statements recording every write to ``table`` (``columns`` only)."""
    name = table.replace('"', "")

    def values(row: str, changed_only: bool) -> str:
        whole = "json_object(" + ", ".join(f"{_literal(c)}, {row}.{quote(c)}" for c in columns) + ")"
        if not changed_only:
            return whole
        # drop the unchanged columns (a path that names no key removes nothing)
        unchanged = ", ".join(
            f"CASE WHEN OLD.{quote(c)} IS NEW.{quote(c)} THEN {_literal(_path(c))} "
            "ELSE '$.\"\"' END" for c in columns)
        return f"json_remove({whole}, {unchanged})"

    def key(row: str) -> str:
        if len(pk) == 1:
            return f"CAST({row}.{quote(pk[0])} AS TEXT)"
        return "json_array(" + ", ".join(f"{row}.{quote(c)}" for c in pk) + ")"

    def record(action: str, row: str, old: str, new: str) -> str:
        return (
            f"INSERT INTO embeddb_audit (table_name, row_pk, action, old_values, new_values, "
            f"actor, request_id, at) VALUES ({_literal(table)}, {key(row)}, '{action}', {old}, "
            f"{new}, "
            f"{_ACTOR}, {_REQUEST}, {_NOW});"
        )

    changed = " OR ".join(f"OLD.{quote(c)} IS NOT NEW.{quote(c)}" for c in columns)
    t = quote(table)
    return [
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_insert')} AFTER INSERT ON {t} BEGIN\n"
        f"    {record('INSERT', 'NEW', 'NULL', values('NEW', False))}\nEND",
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_update')} AFTER UPDATE ON {t}\n"
        f"WHEN {changed} BEGIN\n"
        f"    {record('UPDATE', 'NEW', values('OLD', True), values('NEW', True))}\nEND",
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_delete')} AFTER DELETE ON {t} BEGIN\n"
        f"    {record('DELETE', 'OLD', values('OLD', False), 'NULL')}\nEND",
    ]


def _path(column: str) -> str:
    return '$."' + column.replace('"', '\\"') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def drop_triggers(table: str) -> list[str]:
    name = table.replace('"', "")
    return [f"DROP TRIGGER IF EXISTS {quote(f'embeddb_audit_{name}_{action}')}"
            for action in ("insert", "update", "delete")]


def push_context(db: Database, found: tuple[str | None, str | None],
                 lock_type: str | None) -> tuple[Any, ...] | None:
    """Hand the context to the transaction just begun.

    Holding the write lock from BEGIN (IMMEDIATE, embeddb's default), every audit row with an
    id above today's highest is this transaction's: they get the actor just before COMMIT, on
    pages the triggers already dirtied (no extra write). A deferred transaction has no lock
    yet, so it writes a context row the triggers read (which takes the lock) and deletes it
    before COMMIT.
    """
    actor, request_id = found
    if actor is None and request_id is None:
        return None
    try:
        if (lock_type or getattr(db, "_lock_type", None) or "").upper() in (
                "IMMEDIATE", "EXCLUSIVE"):
            mark = db.execute_fast("SELECT max(id) FROM embeddb_audit").fetchone()[0]
            return ("mark", mark or 0, actor, request_id)
        db.execute_sql("INSERT INTO embeddb_audit_context (actor, request_id) VALUES (?, ?)",
                       (actor, request_id))
    except DatabaseError:
        return None  # auditing is not installed in this database: nothing to carry
    return ("row",)


def finish_context(db: Database, pending: tuple[Any, ...]) -> None:
    """Before COMMIT: sign this transaction's audit rows, or remove the context row so the
    next transaction (maybe another program's) cannot see it."""
    if pending[0] == "mark":
        _, mark, actor, request_id = pending
        db.execute_fast("UPDATE embeddb_audit SET actor = ?, request_id = ? WHERE id > ?",
                        (actor, request_id, mark))
    else:
        db.execute_sql("DELETE FROM embeddb_audit_context")


def stamp(moment: Any) -> str:
    """A UTC datetime as the triggers write it (ISO 8601 text sorts in time order)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
