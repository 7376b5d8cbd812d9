"""Table and index sizes, WAL size and free space, for ``embeddb stats --tables``."""

from __future__ import annotations

import os
from typing import Any


def sizes(db: Any) -> dict[str, Any]:
    """``{"tables": [{name, rows, rows_estimated, table_bytes, index_bytes}], ...}``, the
    biggest table first, plus the database's WAL and free-page figures."""
    if db.dialect.name == "sqlite":
        return _sqlite(db)
    return _postgres(db)


def _sqlite(db: Any) -> dict[str, Any]:
    page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
    names = [r[0] for r in db.execute_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name").fetchall()]
    owners = dict(db.execute_sql(
        "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')").fetchall())
    table_bytes = {n: 0 for n in names}
    index_bytes = {n: 0 for n in names}
    try:  # the dbstat virtual table, where SQLite was compiled with it
        rows = db.execute_sql("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        method = "dbstat"
    except Exception:  # noqa: BLE001 - not compiled in: page counts are unknown per table
        rows, method = [], "unavailable"
    for name, size in rows:
        owner = owners.get(name, name)
        if owner in table_bytes:
            (table_bytes if name == owner else index_bytes)[owner] += size or 0
    tables = []
    for name in names:
        count = db.execute_sql(f'SELECT count(*) FROM "{name}"').fetchone()[0]
        tables.append({"name": name, "rows": count, "rows_estimated": False,
                       "table_bytes": table_bytes[name] if method == "dbstat" else None,
                       "index_bytes": index_bytes[name] if method == "dbstat" else None})
    tables.sort(key=lambda t: (t["table_bytes"] or 0, t["rows"]), reverse=True)
    wal = f"{db.database}-wal"
    free = db.execute_sql("PRAGMA freelist_count").fetchone()[0]
    pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
    return {
        "tables": tables,
        "sizes_from": method,
        "database_bytes": pages * page_size,
        "wal_bytes": os.path.getsize(wal) if not db.is_memory and os.path.exists(wal) else 0,
        "free_pages": free,
        "free_bytes": free * page_size,
    }


def _postgres(db: Any) -> dict[str, Any]:
    rows = db.execute_sql(
        "SELECT c.relname, c.reltuples::bigint, pg_relation_size(c.oid), "
        "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() "
        "ORDER BY pg_total_relation_size(c.oid) DESC, c.relname").fetchall()
    tables = []
    for name, estimate, table_bytes, index_bytes, _total in rows:
        exact = estimate < 0  # never analyzed: count it
        count = db.execute_sql(f'SELECT count(*) FROM "{name}"').fetchone()[0] if exact \
            else estimate
        tables.append({"name": name, "rows": count, "rows_estimated": not exact,
                       "table_bytes": table_bytes, "index_bytes": index_bytes})
    database_bytes = db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"tables": tables, "sizes_from": "pg_total_relation_size",
            "database_bytes": database_bytes, "wal_bytes": None, "free_pages": None,
            "free_bytes": None}
