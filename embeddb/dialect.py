"""What differs between SQLite and PostgreSQL, in one place.

Code elsewhere asks ``db.dialect`` instead of testing the backend's name, so a third backend
means one more class here rather than ``if`` statements spread through the package.
"""

from __future__ import annotations

from typing import Any

from .config import SqliteSettings


class Dialect:
    """Base: the questions every backend answers."""

    name: str = ""
    #: peewee field type name -> column type, for embeddb's own field types.
    field_types: dict[str, str] = {}

    def describe(self, db: Any) -> dict[str, Any]:
        """The settings in effect on ``db`` (pragmas or server settings), for ``embeddb info``."""
        raise NotImplementedError

    # -- migrations (embeddb.migrate) --
    #: names accepted for this backend in variant files, e.g. 0003_search.sqlite.up.sql
    migration_variants: tuple[str, ...] = ()
    #: the bookkeeping table; one row per applied (or failed no-transaction) migration
    migrations_table_ddl: str = ""

    def split_script(self, text: str) -> list[Any]:
        """Cut a migration script into :class:`embeddb.migrate.script.Statement` objects."""
        raise NotImplementedError

    def migration_lock(self, db: Any, timeout: float) -> Any:
        """A context manager held while migrations run, so two runners never overlap."""
        raise NotImplementedError

    def safety_backup(self, db: Any) -> str | None:
        """Copy the database before migrations change it; the copy's path, or None."""
        return None

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    #: the manifest's ``format``: which embeddb.backup driver writes and reads the files
    backup_format: str = ""
    #: a hidden column naming one row in any table, for batched deletes by row range
    row_locator: str = ""

    def maintenance_tasks(self) -> Any:
        """The object whose methods run VACUUM, ANALYZE, checkpoint... on this backend."""
        raise NotImplementedError


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
        items: list[tuple[str, Any]] = [
            ("synchronous", settings.synchronous.upper()),
            ("foreign_keys", 1),
            ("busy_timeout", int(settings.busy_timeout * 1000)),
            ("cache_size", -settings.cache_size_kib),
            ("temp_store", "MEMORY"),
        ]
        if not memory:
            items += [
                ("mmap_size", settings.mmap_size),
                ("journal_size_limit", settings.journal_size_limit),
            ]
        return items

    def describe(self, db: Any) -> dict[str, Any]:
        values = {}
        for name in self._reported:
            row = db.execute_sql(f"PRAGMA {name}").fetchone()
            values[name] = row[0] if row else None  # e.g. mmap_size on an in-memory database
        return values

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

    def migration_lock(self, db: Any, timeout: float) -> Any:
        from .migrate.lock import SqliteMigrationLock

        return SqliteMigrationLock(db, timeout)

    def safety_backup(self, db: Any) -> str | None:
        from .migrate.safety import premigrate_backup

        return premigrate_backup(db)

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    backup_format = "sqlite3"
    row_locator = "rowid"

    def maintenance_tasks(self) -> Any:
        from .maintenance import SqliteTasks

        return SqliteTasks()


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

    def migration_lock(self, db: Any, timeout: float) -> Any:
        from .migrate.lock import PostgresMigrationLock

        return PostgresMigrationLock(db, timeout)

    # -- backup and maintenance (embeddb.backup, embeddb.maintenance) --
    backup_format = "pg_dump"
    row_locator = "ctid"

    def maintenance_tasks(self) -> Any:
        from .maintenance import PostgresTasks

        return PostgresTasks()


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()
