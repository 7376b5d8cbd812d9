"""The audit log on PostgreSQL: one generic trigger function (``to_jsonb`` of the old and new
rows), and the context as transaction-local settings (``set_config(..., is_local => true)``),
which end with the transaction, so a pooled connection never hands one request's actor to the
next."""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from typing import Any

from ..dialect import quote
from ..protocols import Database

DRIVER = "postgres"

INSTALL = (
    "CREATE TABLE IF NOT EXISTS embeddb_audit (\n"
    "    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
    "    table_name TEXT NOT NULL,\n"
    "    row_pk     TEXT NOT NULL,\n"
    "    action     TEXT NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),\n"
    "    old_values JSONB,\n"
    "    new_values JSONB,\n"
    "    actor      TEXT,\n"
    "    request_id TEXT,\n"
    "    at         TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()\n"
    ")",
    "CREATE INDEX IF NOT EXISTS embeddb_audit_row ON embeddb_audit (table_name, row_pk, id)",
    "CREATE INDEX IF NOT EXISTS embeddb_audit_actor ON embeddb_audit (actor, id)",
    """CREATE OR REPLACE FUNCTION embeddb_audit_row() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    pk      jsonb := TG_ARGV[0]::jsonb;   -- primary-key columns
    kept    jsonb := TG_ARGV[1]::jsonb;   -- audited columns
    old_row jsonb;
    new_row jsonb;
    old_v   jsonb;
    new_v   jsonb;
    key_row jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT jsonb_object_agg(k, v) INTO old_row FROM jsonb_each(to_jsonb(OLD)) AS e(k, v)
         WHERE kept ? k;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT jsonb_object_agg(k, v) INTO new_row FROM jsonb_each(to_jsonb(NEW)) AS e(k, v)
         WHERE kept ? k;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(k, v) INTO new_v FROM jsonb_each(new_row) AS e(k, v)
         WHERE old_row -> k IS DISTINCT FROM v;
        IF new_v IS NULL THEN
            RETURN NULL;  -- nothing audited changed
        END IF;
        SELECT jsonb_object_agg(k, old_row -> k) INTO old_v FROM jsonb_object_keys(new_v) AS k;
    ELSE
        old_v := old_row;
        new_v := new_row;
    END IF;
    key_row := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    INSERT INTO embeddb_audit (table_name, row_pk, action, old_values, new_values, actor,
                               request_id)
    VALUES (TG_TABLE_NAME,
            CASE WHEN jsonb_array_length(pk) = 1 THEN key_row ->> (pk ->> 0)
                 ELSE (SELECT jsonb_agg(key_row -> c)::text FROM jsonb_array_elements_text(pk) c)
            END,
            TG_OP, old_v, new_v,
            nullif(current_setting('embeddb.audit_actor', true), ''),
            nullif(current_setting('embeddb.audit_request_id', true), ''));
    RETURN NULL;
END
$fn$""",
)


#: nothing to rebuild: PostgreSQL's constraints cost no statement journal
UPGRADE: tuple[str, ...] = ()


def outdated(db: Database) -> bool:
    """Never: see :data:`UPGRADE`."""
    return False


def table_columns(db: Database, table: str) -> tuple[list[str], list[str]]:
    """``(columns, primary-key columns)`` of ``table`` in the current schema."""
    columns = [r[0] for r in db.execute_sql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()]
    pk = [r[0] for r in db.execute_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)", (quote(table),)).fetchall()]
    return columns, pk


def text_columns(db: Database, table: str) -> set[str]:
    """None known: SQLite's triggers written from a PostgreSQL database take care of every
    column (its declared types are not SQLite's)."""
    return set()


def triggers(table: str, pk: list[str], columns: list[str], text: AbstractSet[str] = frozenset()
             ) -> list[str]:
    name = table.replace('"', "")
    args = ", ".join("'" + json.dumps(v).replace("'", "''") + "'" for v in (pk, columns))
    return [
        f"CREATE TRIGGER {quote(f'embeddb_audit_{name}')} AFTER INSERT OR UPDATE OR DELETE "
        f"ON {quote(table)} FOR EACH ROW EXECUTE FUNCTION embeddb_audit_row({args})"
    ]


def drop_triggers(table: str) -> list[str]:
    name = table.replace('"', "")
    return [f"DROP TRIGGER IF EXISTS {quote(f'embeddb_audit_{name}')} ON {quote(table)}"]


def push_context(db: Database, found: tuple[str | None, str | None], lock_type: Any,
                 cursor: Any = None) -> None:
    actor, request_id = found
    (db.execute_fast if cursor is None else cursor.execute)(
        "SELECT set_config('embeddb.audit_actor', %s, true), "
        "set_config('embeddb.audit_request_id', %s, true)", (actor or "", request_id or ""))
    return None  # transaction-local: ends with the transaction by itself


def finish_context(db: Database, pending: Any, cursor: Any = None) -> None:
    """Never called: :func:`push_context` leaves nothing to finish."""


def stamp(moment: Any) -> Any:
    return moment  # a timestamptz column takes the datetime itself
