"""What migrations need from each backend, chosen by the database's dialect name.

Like playhouse's ``SchemaMigrator.from_database`` and dbmate's drivers: :func:`backend_for`
picks the class registered for ``db.dialect.name`` in :data:`BACKENDS`, so a third backend is
one more class (and one more entry) here, not ``if`` statements in the runner.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..errors import ConfigurationError, DatabaseError, MigrationError
from ..protocols import Database
from .foreign_keys import SqliteForeignKeys
from .lock import OnWait, PostgresMigrationLock, SqliteMigrationLock
from .script import Statement, split_postgres, split_sqlite

if TYPE_CHECKING:
    from ..database import PostgresEngine, SqliteEngine


#: what the names of :mod:`embeddb.audit`'s triggers start with
AUDIT_TRIGGERS = "embeddb_audit_"


class MigrationBackend:
    """Base: the questions the migration runner and the bookkeeping ask of a backend."""

    #: names accepted for this backend in variant files, e.g. 0003_search.sqlite.up.sql
    variants: tuple[str, ...] = ()
    #: column types of the bookkeeping table: (version, applied_at, duration_ms)
    bookkeeping_types: tuple[str, str, str] = ("BIGINT", "TEXT", "DOUBLE PRECISION")

    def lock(self, db: Database, timeout: float, on_wait: OnWait | None = None) -> Any:
        """A context manager held while migrations run, so two runners never overlap.

        ``on_wait(pid)`` is called once if another runner holds it (its process id, when known)
        before waiting up to ``timeout`` seconds.
        """
        raise NotImplementedError

    def split_script(self, text: str) -> list[Statement]:
        """Cut a migration script into statements."""
        raise NotImplementedError

    def unfinished(self, script: str) -> Statement | None:
        """The last statement of a script that ends inside a string, a comment or a trigger
        body, when the backend can tell before running it (None: none found)."""
        return None

    def run_script(self, db: Database, script: str, finish: Callable[[], None]) -> bool:
        """Run a migration script that has no transaction control of its own, then
        ``finish`` (the bookkeeping), in one transaction and as few driver calls as the backend
        allows. False when there is no such path here: the caller then runs the script
        statement by statement.

        :raises DatabaseError: a statement failed and the transaction was rolled back; which
            one is not known: running the script statement by statement tells. An error raised
            by ``finish`` propagates as it is, after the same rollback.
        """
        return False

    def foreign_keys(self, db: Database) -> SqliteForeignKeys | None:
        """What migrations need to rebuild tables with foreign keys off; None where tables
        are changed in place and pragmas do not exist."""
        return None

    #: whether the audit triggers write their table's name as text (a renamed table's
    #: triggers then log it under the old name)
    audit_names_the_table = False
    #: ``(table, trigger)`` of every audit trigger; the tables (of the migrated schema)
    _audit_sql = ""
    _tables_sql = ""

    def audit_triggers(self, db: Database) -> dict[str, set[str]]:
        """Table -> the names of its audit triggers, for the tables that have some."""
        found: dict[str, set[str]] = {}
        for table, name in db.execute_sql(self._audit_sql, (AUDIT_TRIGGERS + "%",)).fetchall():
            found.setdefault(table, set()).add(name)
        return found

    def tables(self, db: Database) -> set[str]:
        """The names of the tables there are."""
        return {row[0] for row in db.execute_sql(self._tables_sql).fetchall()}


class SqliteBackend(MigrationBackend):
    variants = ("sqlite",)
    bookkeeping_types = ("INTEGER", "TEXT", "REAL")

    def lock(self, db: Database, timeout: float, on_wait: OnWait | None = None) -> SqliteMigrationLock:
        return SqliteMigrationLock(cast("SqliteEngine", db), timeout, on_wait)

    def split_script(self, text: str) -> list[Statement]:
        return split_sqlite(text)

    def unfinished(self, script: str) -> Statement | None:
        """SQLite's own tokenizer (``sqlite3.complete_statement``) on the whole script, which
        spares cutting the scripts that are fine (nearly all)."""
        if sqlite3.complete_statement(script + "\n;"):
            return None
        statements = self.split_script(script)
        return statements[-1] if statements else None

    def run_script(self, db: Database, script: str, finish: Callable[[], None]) -> bool:
        """``executescript("BEGIN IMMEDIATE;" + script)``, then ``finish`` and COMMIT.

        SQLite's own parser cuts the statements, and none of them enters the connection's
        statement cache (they never run again; caching them would evict the application's
        statements). On 200 small migrations this is 15-20% faster than one ``execute`` per
        statement. ``executescript`` commits an open transaction first: hence the BEGIN inside
        the script, and no use of this path inside a transaction. Nor when the database is
        observed: query hooks and the debug log then see each statement of the
        statement-by-statement run.
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

    def foreign_keys(self, db: Database) -> SqliteForeignKeys:
        return SqliteForeignKeys(db)

    audit_names_the_table = True
    # names folded as SQLite compares them: a migration may spell a table in another case
    _audit_sql = ("SELECT lower(tbl_name), name FROM sqlite_master WHERE type = 'trigger' "
                  "AND name LIKE ?")
    _tables_sql = "SELECT lower(name) FROM sqlite_master WHERE type = 'table'"


class PostgresBackend(MigrationBackend):
    variants = ("postgres", "postgresql")
    bookkeeping_types = ("BIGINT", "TIMESTAMPTZ", "DOUBLE PRECISION")

    def lock(
        self, db: Database, timeout: float, on_wait: OnWait | None = None
    ) -> PostgresMigrationLock:
        return PostgresMigrationLock(cast("PostgresEngine", db), timeout, on_wait)

    def split_script(self, text: str) -> list[Statement]:
        return split_postgres(text)

    _audit_sql = ("SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = "
                  "t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT "
                  "t.tgisinternal AND t.tgname LIKE %s AND n.nspname = current_schema()")
    _tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"


#: dialect name -> the migration backend for it
BACKENDS: dict[str, MigrationBackend] = {"sqlite": SqliteBackend(), "postgresql": PostgresBackend()}


def backend_for(db: Database) -> MigrationBackend:
    """The migration backend of ``db``.

    :raises ConfigurationError: no backend is registered for its dialect.
    """
    name = db.dialect.name
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigurationError(
            f"migrations do not support {name!r} databases (known: {', '.join(BACKENDS)})"
        ) from None
