"""What differs between SQLite and PostgreSQL, in one place.

Code elsewhere asks ``db.dialect`` instead of testing the backend's name, so a third backend
means one more class here rather than ``if`` statements spread through the package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .config import SqliteSettings
from .errors import ConfigurationError, DatabaseError, MigrationError


class Dialect:
    """Base: the questions every backend answers."""

    name: str = ""
    #: peewee field type name -> column type, for embeddb's own field types.
    field_types: dict[str, str] = {}

    def describe(self, db: Any) -> dict[str, Any]:
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

    def rebuildable_indexes(self, db: Any, table: str) -> list[tuple[str, str]]:
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

    # -- schema (embeddb.schema) --
    def schema_sql(self, db: Any) -> str:
        """The schema of ``db`` as SQL, for review in diffs."""
        raise NotImplementedError

    # -- migrations (embeddb.migrate) --
    #: names accepted for this backend in variant files, e.g. 0003_search.sqlite.up.sql
    migration_variants: tuple[str, ...] = ()
    #: the bookkeeping table; one row per applied (or failed no-transaction) migration
    migrations_table_ddl: str = ""

    def split_script(self, text: str) -> list[Any]:
        """Cut a migration script into :class:`embeddb.migrate.script.Statement` objects."""
        raise NotImplementedError

    def unfinished(self, script: str) -> Any:
        """The last statement of a script that ends inside a string, a comment or a trigger
        body, when the backend can tell before running it (None: none found)."""
        return None

    def migration_lock(
        self, db: Any, timeout: float, on_wait: Callable[[int | None], None] | None = None
    ) -> Any:
        """A context manager held while migrations run, so two runners never overlap.

        ``on_wait(pid)`` is called once if another runner holds it (its process id, when known)
        before waiting up to ``timeout`` seconds.
        """
        raise NotImplementedError

    def run_script(self, db: Any, script: str, finish: Callable[[], None]) -> bool:
        """Run a migration script that has no transaction control of its own, then
        ``finish`` (the bookkeeping), in one transaction and as few driver calls as the backend
        allows. False when there is no such path here: the caller then runs the script
        statement by statement.

        :raises DatabaseError: a statement failed and the transaction was rolled back; which
            one is not known: running the script statement by statement tells. An error raised
            by ``finish`` propagates as it is, after the same rollback.
        """
        return False

    def safety_backup(self, db: Any) -> str | None:
        """Copy the database before migrations change it; the copy's path, or None."""
        return None

    def foreign_keys(self, db: Any) -> Any:
        """What migrations need to rebuild tables with foreign keys off
        (:class:`embeddb.migrate.foreign_keys.SqliteForeignKeys`); None where tables are
        changed in place and pragmas do not exist."""
        return None

    #: names one row in ``DELETE ... WHERE <it> IN (SELECT <it> ... LIMIT n)`` batches
    row_locator: str = "rowid"

    # -- the outbox (embeddb.outbox) --
    #: the statements that create ``embeddb_outbox`` and its indexes
    outbox_ddl: tuple[str, ...] = ()
    #: the payload column as JSON text
    outbox_payload: str = "payload"
    #: appended to the claim's SELECT so concurrent processors pass over each other's rows
    skip_locked: str = ""

    def outbox_key_lock(self, db: Any, key: str) -> None:
        """Make publishers of one key commit in the order of their event ids, so a processor
        never sees a later event of that key before an earlier one (nothing to do where
        writers are serialized anyway)."""

    # -- named locks (embeddb.locks) --
    def named_lock(self, db: Any, name: str, timeout: float | None, scope: str) -> Any:
        """The backend's lock for ``name`` (not yet acquired)."""
        raise NotImplementedError

    def held_locks(self, db: Any) -> list[Any]:
        """The named locks held now, as :class:`embeddb.locks.HeldLock` objects."""
        return []

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    #: the manifest's ``format``: which embeddb.backup driver writes and reads the files
    backup_format: str = ""


    def maintenance_tasks(self) -> Any:
        """The object whose methods run VACUUM, ANALYZE, checkpoint... on this backend."""
        raise NotImplementedError

    # -- cache tier (embeddb.cache) --
    def cache_directory(self, db: Any) -> str | None:
        """Where the cache's L2 and generation counters live by default (None: no L2)."""
        return None

    def cache_owner(self, db: Any) -> tuple[int, int] | None:
        """``(uid, gid)`` to give the cache's files when root uses another user's database,
        so its owner can still use the cache (None: keep this process's)."""
        return None


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

    def describe(self, db: Any) -> dict[str, Any]:
        values = {}
        for name in self._reported:
            row = db.execute_sql(f"PRAGMA {name}").fetchone()
            value = row[0] if row else None  # e.g. mmap_size on an in-memory database
            names = self._named.get(name, ())
            values[name] = names[value] if isinstance(value, int) and 0 <= value < len(names) else value
        if getattr(db, "immutable", False):  # SQLite then ignores the WAL: ask the file header
            values["journal_mode"] = db.file_journal_mode()
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

    def rebuildable_indexes(self, db: Any, table: str) -> list[tuple[str, str]]:
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

    # -- schema (embeddb.schema) --
    def schema_sql(self, db: Any) -> str:
        rows = db.execute_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY "
            # replayable: every table before the indexes, views and triggers that use it
            "CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, name"
        ).fetchall()
        virtual = {name for kind, name, _, sql in rows if sql.upper().startswith("CREATE VIRTUAL")}
        statements = [
            f"{sql};" for kind, name, _, sql in rows
            # FTS5 creates its own shadow tables; dumping them would break a replay.
            if not (kind == "table" and any(name in _fts_shadows(v) for v in virtual))
        ]
        return "\n\n".join(statements) + "\n"

    # -- migrations (embeddb.migrate) --
    migration_variants = ("sqlite",)
    migrations_table_ddl = (
        "CREATE TABLE IF NOT EXISTS embeddb_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
        "applied_at TEXT NOT NULL, duration_ms REAL NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('applied', 'failed')))"
    )

    def split_script(self, text: str) -> list[Any]:
        from .migrate.script import split_sqlite

        return split_sqlite(text)

    def unfinished(self, script: str) -> Any:
        """SQLite's own tokenizer (``sqlite3.complete_statement``) on the whole script, which
        spares cutting the scripts that are fine (nearly all)."""
        if sqlite3.complete_statement(script + "\n;"):
            return None
        statements = self.split_script(script)
        return statements[-1] if statements else None

    def migration_lock(
        self, db: Any, timeout: float, on_wait: Callable[[int | None], None] | None = None
    ) -> Any:
        from .migrate.lock import SqliteMigrationLock

        return SqliteMigrationLock(db, timeout, on_wait)

    def run_script(self, db: Any, script: str, finish: Callable[[], None]) -> bool:
        """``executescript("BEGIN IMMEDIATE;" + script)``, then ``finish`` and COMMIT.

        SQLite's own parser cuts the statements, and none of them enters the connection's
        statement cache (they never run again; caching them would evict the application's
        statements). On 200 small migrations this is 15-20% faster than one ``execute`` per
        statement. ``executescript``
        commits an open transaction first: hence the BEGIN inside the script, and no use of
        this path inside a transaction. Nor when the database is observed: query hooks and
        the debug log then see each statement of the statement-by-statement run.
        """
        if db.observed:
            return False
        conn = db.connection()
        if conn.in_transaction:
            return False
        try:
            conn.executescript("BEGIN IMMEDIATE;" + script)
            if not conn.in_transaction:  # the caller passes no script with COMMIT/END/ROLLBACK
                raise MigrationError("the script ended the migration's transaction itself")
            finish()
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as failed:
                raise DatabaseError(f"{exc}; then ROLLBACK failed: {failed}") from exc
            if isinstance(exc, sqlite3.Error):
                raise DatabaseError(str(exc)) from exc
            raise
        return True

    def foreign_keys(self, db: Any) -> Any:
        from .migrate.foreign_keys import SqliteForeignKeys

        return SqliteForeignKeys(db)

    def safety_backup(self, db: Any) -> str | None:
        from .migrate.safety import premigrate_backup

        return premigrate_backup(db)

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

    # -- named locks (embeddb.locks) --
    def named_lock(self, db: Any, name: str, timeout: float | None, scope: str) -> Any:
        """A ``flock`` on a file per name beside the database (a thread lock for
        ``:memory:``); SQLite has no lock that ends with a transaction."""
        from .locks import FileLock

        if scope != "session":
            raise ConfigurationError(
                f"lock {name!r}: SQLite has no transaction-scoped locks; use the default "
                "(the lock is held until the `with` block ends)"
            )
        return FileLock(db, name, timeout)

    def held_locks(self, db: Any) -> list[Any]:
        from .locks import held_files

        return held_files(db)

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    backup_format = "sqlite3"


    def maintenance_tasks(self) -> Any:
        from .maintenance import SqliteTasks

        return SqliteTasks()

    # -- cache tier (embeddb.cache) --
    def cache_directory(self, db: Any) -> str | None:
        """``app.db`` -> ``app.db-cache/`` beside it; ``:memory:`` has no L2 (no other process
        can see the database, so there is nothing to share)."""
        if db.is_memory:
            return None
        import os

        return os.path.abspath(db.database) + "-cache"

    def cache_owner(self, db: Any) -> tuple[int, int] | None:
        if db.is_memory:
            return None
        import os

        from .backup.ownership import foreign_owner

        return foreign_owner(os.path.abspath(db.database))


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

    def describe(self, db: Any) -> dict[str, Any]:
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

    # -- schema (embeddb.schema) --
    def schema_sql(self, db: Any) -> str:
        import subprocess

        from .backup.postgres import client_env, tool

        args = [tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges"]
        if db.settings.schema:
            args += ["--schema", db.settings.schema]
        done = subprocess.run(args, env=client_env(db.url), capture_output=True, text=True,
                              check=False)
        if done.returncode:
            from .url import scrub

            raise DatabaseError(f"pg_dump --schema-only failed: "
                                f"{scrub(done.stderr, db.url.password)}")
        # Keep only the schema itself, stable across runs: no comments, no SET preamble, and
        # no \restrict lines (pg_dump 15.14+ puts a random key in them).
        noise = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
        lines = [line for line in done.stdout.splitlines()
                 if line and not line.startswith(noise)]
        return "\n".join(lines) + "\n"

    # -- migrations (embeddb.migrate) --
    migration_variants = ("postgres", "postgresql")
    migrations_table_ddl = (
        "CREATE TABLE IF NOT EXISTS embeddb_migrations ("
        "version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, "
        "applied_at TIMESTAMPTZ NOT NULL, duration_ms DOUBLE PRECISION NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('applied', 'failed')))"
    )

    def split_script(self, text: str) -> list[Any]:
        from .migrate.script import split_postgres

        return split_postgres(text)

    def migration_lock(
        self, db: Any, timeout: float, on_wait: Callable[[int | None], None] | None = None
    ) -> Any:
        from .migrate.lock import PostgresMigrationLock

        return PostgresMigrationLock(db, timeout, on_wait)

    def safety_backup(self, db: Any) -> str | None:
        """A ``pg_dump -Fc`` to ./backups, as ``embeddb backup create`` writes it."""
        from .migrate.safety import premigrate_backup

        return premigrate_backup(db)

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

    def outbox_key_lock(self, db: Any, key: str) -> None:
        """Concurrent publishers take ids in one order and may commit in another; a lock on
        the key until commit keeps a key's events committing in id order."""
        db.execute_sql("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       (f"embeddb.outbox:{key}",))

    # -- named locks (embeddb.locks) --
    def named_lock(self, db: Any, name: str, timeout: float | None, scope: str) -> Any:
        from .locks import AdvisoryLock

        return AdvisoryLock(db, name, timeout, scope)

    def held_locks(self, db: Any) -> list[Any]:
        from .locks import held_advisory

        return held_advisory(db)

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    backup_format = "pg_dump"


    def maintenance_tasks(self) -> Any:
        from .maintenance import PostgresTasks

        return PostgresTasks()

    # -- cache tier (embeddb.cache) --
    def cache_directory(self, db: Any) -> str | None:
        """A folder per server, database and schema under ``$XDG_CACHE_HOME/embeddb`` (default
        ``~/.cache/embeddb``): shared by this machine's processes only."""
        import hashlib
        import os

        url = db.url
        identity = f"{url.host}:{url.port}/{url.database}/{db.settings.schema or ''}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return os.path.join(root, "embeddb", f"pg-{digest}")


def _fts_shadows(table: str) -> set[str]:
    """The tables FTS5 creates for virtual table ``table`` (recreated by its CREATE)."""
    return {f"{table}_{part}" for part in ("data", "idx", "content", "docsize", "config")}


def quote(name: str) -> str:
    """An SQL identifier, quoted (both backends use double quotes)."""
    return '"' + name.replace('"', '""') + '"'


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()
