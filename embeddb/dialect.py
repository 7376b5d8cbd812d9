"""What differs between SQLite and PostgreSQL in SQL text, in one place.

Column types, quoting, the upsert clause, bulk inserts, full-text search, the outbox's DDL and
the settings ``embeddb info`` reports. This module is a leaf: it knows no feature. A feature
whose *behaviour* differs per backend (migrations, backups, maintenance, named locks, the
cache's location) picks its own backend class by ``db.dialect.name`` (e.g.
:func:`embeddb.migrate.backends.backend_for`), so a third backend is one more class here and
one more per feature, rather than ``if`` statements spread through the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from .config import SqliteSettings

if TYPE_CHECKING:
    from .protocols import Database


class Dialect:
    """Base: the questions every backend answers."""

    name: str = ""
    #: peewee field type name -> column type, for embeddb's own field types.
    field_types: dict[str, str] = {}

    def describe(self, db: Database) -> dict[str, Any]:
        """The settings in effect on ``db`` (pragmas or server settings), for ``embeddb info``."""
        raise NotImplementedError

    # -- repositories (embeddb.repository) --
    def insert_rows(
        self, cursor: Any, table: str, columns: list[str], rows: list[tuple], suffix: str = ""
    ) -> None:
        """INSERT many rows in as few round trips as the driver allows (``suffix``: ON CONFLICT)."""
        raise NotImplementedError

    def distinct_from(self, left: str, right: str) -> str:
        """A NULL-safe "values differ" test."""
        raise NotImplementedError

    def rebuildable_indexes(self, db: Database, table: str) -> list[tuple[str, str]]:
        """``(name, CREATE statement)`` of the indexes a bulk load into empty ``table`` may
        drop and build afterwards, inside the load's transaction (none by default).

        Only plain, non-unique indexes: unique ones enforce the data and serve ON CONFLICT.
        """
        return []

    def upsert_clause(
        self, table: str, targets: list[str], update: list[str], bump: str | None = None
    ) -> str:
        """ON CONFLICT clause that updates ``update`` only when a value really changed (and
        then increments the ``bump`` column, a row version).

        Leaving unchanged rows alone (``updated_at`` too) makes repeated upserts no-ops.
        """
        key = ", ".join(quote(c) for c in targets)
        if not update:
            return f"ON CONFLICT ({key}) DO NOTHING"
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in [*update, "updated_at"])
        if bump:
            sets += f", {quote(bump)} = {quote(table)}.{quote(bump)} + 1"
        changed = " OR ".join(
            self.distinct_from(f"{quote(table)}.{quote(c)}", f"excluded.{quote(c)}")
            for c in update
        )
        return f"ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {changed}"

    def search_terms(self, words: list[str]) -> str:
        """The full-text query for ``words`` (already reduced to letters and digits): every word
        must match the start of a word, so "forecast" finds "forecasts" and typing can stop
        anywhere."""
        raise NotImplementedError

    def search_query(
        self, table: str, fts_key: str, columns: str, where: str, terms: str, limit: int
    ) -> tuple[str, tuple[Any, ...]]:
        """SQL and parameters of a ranked full-text search over ``table`` (alias ``t``).

        SQLite searches the FTS5 table ``<table>_fts`` whose ``fts_key`` column holds the row's
        id; PostgreSQL the table's ``search_vector`` column.
        """
        raise NotImplementedError

    #: names one row in ``DELETE ... WHERE <it> IN (SELECT <it> ... LIMIT n)`` batches
    row_locator: str = "rowid"

    # -- the outbox (embeddb.outbox) --
    #: the statements that create ``embeddb_outbox`` and its indexes
    outbox_ddl: tuple[str, ...] = ()
    #: the payload column as JSON text
    outbox_payload: str = "payload"
    #: appended to the claim's SELECT so concurrent processors pass over each other's rows
    skip_locked: str = ""

    def outbox_key_lock(self, db: Database, key: str) -> None:
        """Make publishers of one key commit in the order of their event ids, so a processor
        never sees a later event of that key before an earlier one (nothing to do where
        writers are serialized anyway)."""


class SqliteDialect(Dialect):
    name = "sqlite"
    field_types = {
        "JSON": "TEXT",  # a JSON column name would give NUMERIC affinity and mangle '123'
        "TIMESTAMPTZ": "TEXT",  # ISO-8601 UTC text sorts in time order
        "MONEY_MINOR": "INTEGER",
    }
    _reported = (
        "journal_mode", "synchronous", "foreign_keys", "busy_timeout", "cache_size",
        "mmap_size", "temp_store", "journal_size_limit", "page_size", "page_count",
    )

    def pragmas(self, settings: SqliteSettings, memory: bool) -> list[tuple[str, Any]]:
        """The PRAGMAs run on each new connection (journal_mode is handled on its own)."""
        # The busy timeout is set by sqlite3.connect(timeout=...); each PRAGMA costs ~25-60 us
        # on a new connection, which matters for per-test in-memory databases.
        items: list[tuple[str, Any]] = [("foreign_keys", 1), ("temp_store", "MEMORY")]
        if not memory:  # the rest concern disk I/O and the page cache of a file
            items += [
                ("synchronous", settings.synchronous.upper()),
                ("cache_size", -settings.cache_size_kib),
                ("mmap_size", settings.mmap_size),
                ("journal_size_limit", settings.journal_size_limit),
            ]
        return items

    #: PRAGMAs that answer with a number standing for a name
    _named = {"synchronous": ("OFF", "NORMAL", "FULL", "EXTRA"),
              "temp_store": ("DEFAULT", "FILE", "MEMORY")}

    def describe(self, db: Database) -> dict[str, Any]:
        values = {}
        for name in self._reported:
            row = db.execute_sql(f"PRAGMA {name}").fetchone()
            value = row[0] if row else None  # e.g. mmap_size on an in-memory database
            names = self._named.get(name, ())
            values[name] = names[value] if isinstance(value, int) and 0 <= value < len(names) else value
        if getattr(db, "immutable", False):  # SQLite then ignores the WAL: ask the file header
            values["journal_mode"] = cast(Any, db).file_journal_mode()  # a SqliteEngine
        return values

    # -- repositories (embeddb.repository) --
    def insert_rows(
        self, cursor: Any, table: str, columns: list[str], rows: list[tuple], suffix: str = ""
    ) -> None:
        marks = ", ".join("?" * len(columns))
        names = ", ".join(quote(c) for c in columns)
        cursor.executemany(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks}) {suffix}", rows)

    def distinct_from(self, left: str, right: str) -> str:
        return f"{left} IS NOT {right}"

    def rebuildable_indexes(self, db: Database, table: str) -> list[tuple[str, str]]:
        """SQLite builds an index from sorted data several times faster than it maintains it
        row by row, and its DDL is transactional, so a failed load restores the indexes.
        (PostgreSQL keeps the default: DROP INDEX would lock readers out for the whole load.)"""
        return db.execute_sql(
            "SELECT m.name, m.sql FROM pragma_index_list(?) AS l "
            "JOIN sqlite_master AS m ON m.type = 'index' AND m.name = l.name "
            "WHERE l.origin = 'c' AND NOT l.\"unique\" AND m.sql IS NOT NULL", (table,)
        ).fetchall()

    def search_terms(self, words: list[str]) -> str:
        # Each word quoted as an FTS5 string: operators typed by a user stay plain words.
        return " ".join(f'"{w}"*' for w in words)

    def search_query(
        self, table: str, fts_key: str, columns: str, where: str, terms: str, limit: int
    ) -> tuple[str, tuple[Any, ...]]:
        fts = quote(f"{table}_fts")
        sql = (
            f"SELECT {columns} FROM {fts} JOIN {quote(table)} t ON t.id = {fts}.{quote(fts_key)} "
            f"WHERE {fts} MATCH ? AND {where} ORDER BY bm25({fts}, 0.0, 10.0, 1.0), t.id LIMIT ?"
        )
        return sql, (terms, limit)

    # -- the outbox (embeddb.outbox): SQLite serializes writers, so ids follow commits --
    outbox_ddl = (
        "CREATE TABLE embeddb_outbox (\n"
        "    id           INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "    uid          TEXT NOT NULL UNIQUE,\n"
        "    topic        TEXT NOT NULL,\n"
        "    key          TEXT,\n"
        "    payload      TEXT NOT NULL,\n"
        "    status       TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),\n"
        "    attempts     INTEGER NOT NULL DEFAULT 0,\n"
        "    available_at REAL NOT NULL,\n"
        "    lease_owner  TEXT,\n"
        "    lease_until  REAL,\n"
        "    last_error   TEXT,\n"
        "    created_at   REAL NOT NULL,\n"
        "    delivered_at REAL\n"
        ")",
        "CREATE INDEX embeddb_outbox_due ON embeddb_outbox (status, available_at, id)",
        "CREATE INDEX embeddb_outbox_key ON embeddb_outbox (key, id) WHERE status = 'pending'",
    )


class PostgresDialect(Dialect):
    name = "postgresql"
    field_types = {
        "JSON": "JSONB",
        "TIMESTAMPTZ": "TIMESTAMPTZ",
        "MONEY_MINOR": "BIGINT",
    }
    _reported = (
        "server_version", "server_encoding", "TimeZone", "search_path",
        "default_transaction_isolation", "statement_timeout", "max_connections",
    )

    def describe(self, db: Database) -> dict[str, Any]:
        return {name: db.execute_sql(f'SHOW "{name}"').fetchone()[0] for name in self._reported}

    # -- repositories (embeddb.repository) --
    def insert_rows(
        self, cursor: Any, table: str, columns: list[str], rows: list[tuple], suffix: str = ""
    ) -> None:
        from psycopg2.extras import execute_values

        names = ", ".join(quote(c) for c in columns)
        sql = f"INSERT INTO {quote(table)} ({names}) VALUES %s {suffix}"
        execute_values(cursor, sql, rows, page_size=max(1, len(rows)))

    def distinct_from(self, left: str, right: str) -> str:
        return f"{left} IS DISTINCT FROM {right}"

    def search_terms(self, words: list[str]) -> str:
        return " & ".join(f"{w}:*" for w in words)

    def search_query(
        self, table: str, fts_key: str, columns: str, where: str, terms: str, limit: int
    ) -> tuple[str, tuple[Any, ...]]:
        query = "to_tsquery('simple', %s)"
        sql = (
            f"SELECT {columns} FROM {quote(table)} t WHERE t.search_vector @@ {query} "
            f"AND {where} ORDER BY ts_rank(t.search_vector, {query}) DESC, t.id LIMIT %s"
        )
        return sql, (terms, terms, limit)

    # -- the outbox (embeddb.outbox) --
    outbox_ddl = (
        "CREATE TABLE embeddb_outbox (\n"
        "    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
        "    uid          UUID NOT NULL UNIQUE,\n"
        "    topic        TEXT NOT NULL,\n"
        "    key          TEXT,\n"
        "    payload      JSONB NOT NULL,\n"
        "    status       TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),\n"
        "    attempts     INTEGER NOT NULL DEFAULT 0,\n"
        "    available_at DOUBLE PRECISION NOT NULL,\n"
        "    lease_owner  TEXT,\n"
        "    lease_until  DOUBLE PRECISION,\n"
        "    last_error   TEXT,\n"
        "    created_at   DOUBLE PRECISION NOT NULL,\n"
        "    delivered_at DOUBLE PRECISION\n"
        ")",
        "CREATE INDEX embeddb_outbox_due ON embeddb_outbox (status, available_at, id)",
        "CREATE INDEX embeddb_outbox_key ON embeddb_outbox (key, id) WHERE status = 'pending'",
    )
    row_locator = "ctid"
    outbox_payload = "payload::text"
    skip_locked = " FOR UPDATE OF e SKIP LOCKED"

    def outbox_key_lock(self, db: Database, key: str) -> None:
        """Concurrent publishers take ids in one order and may commit in another; a lock on
        the key until commit keeps a key's events committing in id order."""
        db.execute_sql("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       (f"embeddb.outbox:{key}",))


def quote(name: str) -> str:
    """An SQL identifier, quoted (both backends use double quotes)."""
    return '"' + name.replace('"', '""') + '"'


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()
