"""The audit log on SQLite: triggers with the audited columns spelled out; the actor and request
id are written onto the transaction's audit rows just before its COMMIT.

Why it is shaped like this (each measured with a single-row update, see bench_audit):

- The triggers write NULL for the actor: a trigger cannot read a connection's temp objects, and
  reading a context table costs two subqueries per row. Instead the engine notes the highest
  audit id when the transaction takes the write lock and, before COMMIT, signs every row above
  it (SQLite runs one write transaction at a time, so they are all this transaction's; the
  pages are already dirty). A deferred transaction needs no lock at BEGIN: see
  :func:`push_context`. (``embeddb_audit_context`` is no longer written; the triggers of audit
  migrations written before the rows were signed at COMMIT still read it.)
- ``embeddb_audit`` has no NOT NULL or CHECK constraint: a constraint that may abort makes every
  audited statement keep a statement journal (a copy of each page it touches), about a fifth of
  the cost of an audited update. Only the triggers write the table; what they write is never
  NULL.
- An UPDATE stores the changed columns only, each as ``,"name":value`` text joined by one
  ``printf`` (NULL for an unchanged one) rather than a ``json_object`` of every column: the
  unchanged columns cost a comparison each, and the row is a third the size, so the log's
  pages fill (and each commit writes new ones) a third as often. An INSERT or DELETE stores
  the whole image, built the same way (json_object takes at most 63 columns). Logs written
  before this kept an UPDATE's whole before and after images; :mod:`embeddb.audit` reports
  the changed columns of both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Set as AbstractSet
from typing import Any

from ..dialect import quote
from ..errors import DatabaseError, OperationalError
from ..protocols import Database

DRIVER = "sqlite"

INSTALL = (
    "CREATE TABLE IF NOT EXISTS embeddb_audit (\n"
    "    id         INTEGER PRIMARY KEY,\n"
    "    table_name TEXT,\n"
    "    row_pk     TEXT,\n"
    "    action     TEXT,  -- INSERT, UPDATE or DELETE\n"
    "    old_values TEXT,\n"
    "    new_values TEXT,\n"
    "    actor      TEXT,\n"
    "    request_id TEXT,\n"
    "    at         TEXT\n"
    ")",
    "CREATE INDEX IF NOT EXISTS embeddb_audit_row ON embeddb_audit (table_name, row_pk, id)",
    "CREATE TABLE IF NOT EXISTS embeddb_audit_context (actor TEXT, request_id TEXT)",
)
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_COLUMNS = "id, table_name, row_pk, action, old_values, new_values, actor, request_id, at"
#: Rebuild ``embeddb_audit`` in the current shape, keeping every row and its id: a log made
#: by an earlier embeddb has NOT NULL / CHECK constraints (each audited statement then keeps
#: a statement journal), AUTOINCREMENT and an index on the actor (a page more per write).
#: Plain statements that do the same on a log of any shape, or none (the generated
#: migration may run on databases other than the one it was written from).
UPGRADE = (
    INSTALL[0],
    f"CREATE TABLE embeddb_audit_upgrade AS SELECT {_COLUMNS} FROM embeddb_audit",
    "DROP TABLE embeddb_audit",
    INSTALL[0],
    f"INSERT INTO embeddb_audit ({_COLUMNS}) SELECT {_COLUMNS} FROM embeddb_audit_upgrade "
    "ORDER BY id",
    "DROP TABLE embeddb_audit_upgrade",
)


def outdated(db: Database) -> bool:
    """Whether this database's ``embeddb_audit`` has a shape :data:`UPGRADE` replaces."""
    rows = db.execute_sql("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = "
                          "'embeddb_audit' AND sql IS NOT NULL").fetchall()
    return any(
        (kind == "table" and any(word in sql.upper() for word in (
            "NOT NULL", "CHECK", "AUTOINCREMENT", "UNIQUE", "DEFAULT", "REFERENCES")))
        or (kind == "index" and name != "embeddb_audit_row") for kind, name, sql in rows)


def table_columns(db: Database, table: str) -> tuple[list[str], list[str]]:
    """``(columns, primary-key columns)`` of ``table`` (empty lists if it does not exist)."""
    rows = db.execute_sql(f"PRAGMA table_info({quote(table)})").fetchall()
    columns = [r[1] for r in rows]
    pk = [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
    return columns, pk or (["rowid"] if columns else [])


def text_columns(db: Database, table: str) -> set[str]:
    """The columns of ``table`` with TEXT affinity (SQLite's rule on the declared type): they
    hold no REAL (a number is stored as text), so their trigger values need less care."""
    return {r[1] for r in db.execute_sql(f"PRAGMA table_info({quote(table)})").fetchall()
            if any(word in (r[2] or "").upper() for word in ("CHAR", "CLOB", "TEXT"))
            and "INT" not in (r[2] or "").upper()}


def triggers(table: str, pk: list[str], columns: list[str], text: AbstractSet[str] = frozenset()
             ) -> list[str]:
    """CREATE TRIGGER statements recording every write to ``table`` (``columns`` only;
    ``text``: those of TEXT affinity, see :func:`text_columns`)."""
    name = table.replace('"', "")

    def differs(c: str) -> str:
        """As stored: a column's collation (NOCASE, RTRIM) would call 'a' and 'A ' equal."""
        return f"OLD.{quote(c)} IS NOT NEW.{quote(c)} COLLATE BINARY"

    def values(row: str, changed_only: bool = False) -> str:
        """A JSON object of ``row``'s columns (only those the UPDATE changed): text parts
        ``,"name":value`` joined (a column left out is NULL), the first comma cut. Unlike
        json_object it takes any number of columns, and an unchanged column costs one
        comparison."""
        parts = []
        for c in columns:
            part = f"{_literal(',' + json.dumps(c) + ':')} || {_value(f'{row}.{quote(c)}', c in text)}"
            parts.append(f"CASE WHEN {differs(c)} THEN {part} END" if changed_only else part)
        return f"'{{' || substr({_joined(parts)}, 2) || '}}'"

    def key(row: str) -> str:
        if len(pk) == 1:
            return f"CAST({row}.{quote(pk[0])} AS TEXT)"
        return "json_array(" + ", ".join(f"{row}.{quote(c)}" for c in pk) + ")"

    def record(action: str, row: str, old: str, new: str) -> str:
        return (
            f"INSERT INTO embeddb_audit (table_name, row_pk, action, old_values, new_values, "
            f"actor, request_id, at) VALUES ({_literal(table)}, {key(row)}, '{action}', {old}, "
            f"{new}, NULL, NULL, {_NOW});"
        )

    changed = _either([differs(c) for c in columns])
    t = quote(table)
    return [
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_insert')} AFTER INSERT ON {t} BEGIN\n"
        f"    {record('INSERT', 'NEW', 'NULL', values('NEW'))}\nEND",
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_update')} AFTER UPDATE ON {t}\n"
        f"WHEN {changed} BEGIN\n"
        f"    {record('UPDATE', 'NEW', values('OLD', True), values('NEW', True))}\nEND",
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}_delete')} AFTER DELETE ON {t} BEGIN\n"
        f"    {record('DELETE', 'OLD', values('OLD'), 'NULL')}\nEND",
    ]


def _value(column: str, text: bool = False) -> str:
    """``column`` as JSON text that records it exactly (a column of a table that is not
    STRICT may hold any type): a BLOB as the text ``\\x`` + hex (PostgreSQL's JSON form of
    bytea; JSON has no bytes), a REAL that is not a small integer with 21 significant digits
    (SQLite's JSON writes 15, so a smaller change would vanish; SQLite 3.40's shorter
    renderings, and its parse that would check them, are off in the last digit for some
    values; this one gave back each of 400k random doubles), an infinity as ``"Infinity"``
    (JSON has none; PostgreSQL's form too).

    Comparisons rather than ``typeof()``: a function call per column cost as much as the
    JSON itself. Only a blob sorts at or above ``x''``; only a number below ``''``; a number
    that is not an integer is a REAL, and so may be a large one. A TEXT column holds no
    number (``text``).
    """
    blob = f"WHEN {column} >= x'' THEN json_quote('\\x' || lower(hex({column}))) "
    if text:
        return f"CASE {blob}ELSE json_quote({column}) END"
    real = (f"CASE WHEN {column} > 1.7976931348623157e308 THEN '\"Infinity\"' "
            f"WHEN {column} < -1.7976931348623157e308 THEN '\"-Infinity\"' "
            f"ELSE printf('%!.20e', {column}) END")
    return (f"CASE {blob}WHEN {column} < '' AND ({column} <> CAST({column} AS INTEGER) OR "
            f"(({column} >= 1e15 OR {column} <= -1e15) AND typeof({column}) = 'real')) THEN {real} "
            f"ELSE json_quote({column}) END")


def _joined(parts: list[str]) -> str:
    """The SQL text values ``parts`` joined, NULL ones left out: one ``printf('%s%s...')``
    builds the string once (each ``||`` copies it), nested past SQLite's 127 arguments."""
    if len(parts) > 100:
        parts = [_joined(parts[i:i + 100]) for i in range(0, len(parts), 100)]
    return f"printf('{'%s' * len(parts)}', {', '.join(parts)})"


def _either(conditions: list[str]) -> str:
    """``conditions`` joined with OR, in groups: a chain of ORs nests one level per term, and
    SQLite refuses an expression nested 1,000 deep (a table of 1,000 columns)."""
    if len(conditions) > 100:
        conditions = [f"({_either(conditions[i:i + 100])})"
                      for i in range(0, len(conditions), 100)]
    return " OR ".join(conditions)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def drop_triggers(table: str) -> list[str]:
    name = table.replace('"', "")
    return [f"DROP TRIGGER IF EXISTS {quote(f'embeddb_audit_{name}_{action}')}"
            for action in ("insert", "update", "delete")]


#: where this transaction's audit rows will start, and the signing of them (see
#: :func:`push_context`)
_MARK = "SELECT max(id) FROM embeddb_audit"
_SIGN = "UPDATE embeddb_audit SET actor = ?, request_id = ? WHERE id > ?"


def push_context(db: Database, found: tuple[str | None, str | None],
                 lock_type: str | None, cursor: sqlite3.Cursor | None = None
                 ) -> tuple[Any, ...] | None:
    """Note where this transaction's audit rows will start.

    Every audit row above the mark is this transaction's: a transaction begun IMMEDIATE
    (embeddb's default) or EXCLUSIVE holds the write lock already; a deferred one has its
    snapshot from reading the mark, and SQLite lets it write only if no other transaction
    committed since (else "database is locked"), so it takes no lock here: it may only read,
    beside a writer or in a read-only engine. :func:`finish_context` signs the rows.
    ``cursor``: the engine's own, on the transaction's connection, for its single-statement
    write path (the driver's errors are the caller's to translate).
    """
    actor, request_id = found
    if actor is None and request_id is None:
        return None
    try:
        mark = (_run(db, _MARK) if cursor is None else cursor.execute(_MARK)).fetchone()[0]
    except (DatabaseError, sqlite3.OperationalError) as exc:
        if "no such table" in str(exc):
            return None  # auditing is not installed in this database: nothing to carry
        raise
    conn = _connection(db) if cursor is None else cursor.connection
    return (mark or 0, actor, request_id, conn.total_changes, conn)


def finish_context(db: Database, pending: tuple[Any, ...],
                   cursor: sqlite3.Cursor | None = None) -> None:
    """Before COMMIT: sign this transaction's audit rows. A transaction that changed no row
    (the connection's count of changed rows, triggers' included, stands still) wrote no
    audit row: it runs nothing, and a deferred one stays a reader."""
    mark, actor, request_id, changed, conn = pending
    if conn.total_changes != changed:
        if cursor is None:
            _run(db, _SIGN, (actor, request_id, mark))
        else:
            cursor.execute(_SIGN, (actor, request_id, mark))


def _connection(db: Database) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = db._state.conn  # type: ignore[attr-defined]
    return conn or db.connection()


def _run(db: Database, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
    """One statement straight on the driver, on a cursor kept with the connection: these two
    run in every audited transaction, and the engine's own path (and a new cursor each time)
    costs a third of their time on bookkeeping they do not need (unless the database is
    observed: monitoring sees every statement)."""
    if db.observed:
        return db.execute_sql(sql, params)
    state: Any = db._state  # type: ignore[attr-defined]  # the engine's per-thread state
    cursor = getattr(state, "audit_cursor", None)
    if cursor is None or cursor.connection is not state.conn:
        cursor = state.audit_cursor = _connection(db).cursor()
    try:
        return cursor.execute(sql, params)
    except sqlite3.OperationalError as exc:
        raise OperationalError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise DatabaseError(str(exc)) from exc


def stamp(moment: Any) -> str:
    """A UTC datetime as the triggers write it (ISO 8601 text sorts in time order)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
