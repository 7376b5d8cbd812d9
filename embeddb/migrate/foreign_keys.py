"""SQLite table rebuilds inside migrations: foreign keys off the SQLite way, pragmas never lost.

SQLite changes a table by rebuilding it: create the new table, copy, ``DROP TABLE`` the old,
rename (its "generalized ALTER TABLE" procedure). That needs ``PRAGMA foreign_keys=OFF``, which
SQLite ignores inside a transaction, and every migration runs inside one. Left as it is, the
DROP's implicit DELETE cascades into every child table. So a migration that turns foreign keys
off gets them off on its connection *before* its transaction begins; ``PRAGMA foreign_key_check``
runs before its COMMIT (a violation rolls everything back), and the connection's setting comes
back afterwards whatever happened.

The same applies to any pragma SQLite ignores or refuses in a transaction: it is refused before
anything runs rather than dropped without a word. And a ``DROP TABLE`` (or a rename away) of a
table other tables still reference, with foreign keys on, is refused as the statement comes up.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import MigrationError, MigrationFailed
from ..protocols import Database
from .script import Statement

#: Settings SQLite silently ignores (or rejects) while a transaction is open.
_NOT_IN_TRANSACTION = {
    "journal_mode": "is not changed while a transaction is open",
    "synchronous": "cannot change inside a transaction",
    "auto_vacuum": "only takes effect through a VACUUM, which cannot run in a transaction",
    "page_size": "only takes effect through a VACUUM, which cannot run in a transaction",
    "encoding": "only takes effect on an empty database",
}
_OFF = {"0", "off", "false", "no"}
_ON = {"1", "on", "true", "yes"}
_IDENT = r'(?:"(?:[^"]|"")*"|\[[^\]]*\]|`(?:[^`]|``)*`|[A-Za-z_][\w$]*)'
_PRAGMA = re.compile(
    rf"PRAGMA\s+(?:(?P<schema>{_IDENT})\s*\.\s*)?(?P<name>{_IDENT})\s*"
    r"(?:=\s*(?P<value>[^;]*?)|\(\s*(?P<arg>[^;]*?)\s*\))?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_DROP_TABLE = re.compile(
    rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:{_IDENT}\s*\.\s*)?(?P<table>{_IDENT})",
    re.IGNORECASE,
)
_RENAME_TABLE = re.compile(
    rf"ALTER\s+TABLE\s+(?:{_IDENT}\s*\.\s*)?(?P<table>{_IDENT})\s+RENAME\s+TO\s+",
    re.IGNORECASE,
)
_REBUILD_HOWTO = (
    "to change a table SQLite's way, start the file with PRAGMA foreign_keys = OFF: embeddb "
    "then turns foreign keys off before the migration's transaction, and checks them "
    "(PRAGMA foreign_key_check) before it commits"
)


def may_need_rules(text: str) -> bool:
    """Whether ``text`` may hold a PRAGMA, a DROP TABLE or a table rename; False is certain.
    A quick test that spares splitting most scripts."""
    upper = text.upper()
    return "PRAGMA" in upper or "DROP" in upper or "RENAME" in upper


def unquote(identifier: str) -> str:
    """``[Order Details]`` / ``"users"`` / ```t``` -> the bare name."""
    if identifier[:1] in "\"`" and identifier[-1:] == identifier[:1]:
        quote = identifier[0]
        return identifier[1:-1].replace(quote * 2, quote)
    if identifier[:1] == "[" and identifier[-1:] == "]":
        return identifier[1:-1]
    return identifier


@dataclass(frozen=True)
class Rules:
    """How one migration part must run on SQLite."""

    foreign_keys_off: bool = False  # turn them off before BEGIN, check before COMMIT
    guarded: bool = False  # has DROP TABLE / RENAME TO: check each as it comes up
    pragmas: bool = False  # runs a PRAGMA: the connection's foreign keys are put back after
    #: its own BEGIN ... COMMIT, with foreign keys turned off before that BEGIN by the script
    #: itself: checked before the script's COMMIT
    checked_by_own_commit: bool = False

    @property
    def plain(self) -> bool:
        return not (self.foreign_keys_off or self.guarded or self.pragmas
                    or self.checked_by_own_commit)


PLAIN = Rules()


def examine(
    where: Callable[[Statement], str],
    statements: Sequence[Statement],
    transaction: bool,
    known_pragmas: frozenset[str],
) -> Rules:
    """The rules for a part's statements; refuses a pragma that would not take effect.

    ``where(statement)`` names the statement's file and line for messages. ``transaction`` is
    whether embeddb wraps the part in its own transaction (a part with its own BEGIN/COMMIT, or
    a no-transaction one, is in a transaction only between its BEGIN and COMMIT).

    :raises MigrationError: a pragma SQLite would ignore or refuse at that point, or an unknown
        pragma (SQLite ignores those too).
    """
    off = guarded = pragmas = own_off = False
    own = transaction and any(s.controls_transaction for s in statements)
    inside = transaction and not own
    for statement in statements:
        keyword = statement.keyword
        if own and keyword in ("BEGIN", "START"):
            inside = True
        elif own and keyword in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            inside = False
        elif keyword == "PRAGMA":
            pragmas = True
            off = _pragma(where(statement), statement.sql, inside, own, known_pragmas) or off
            own_off = own_off or (own and not inside
                                  and foreign_keys_setting(statement) is False)
        elif keyword in ("DROP", "ALTER") and (
            _DROP_TABLE.match(statement.sql) or _RENAME_TABLE.match(statement.sql)
        ):
            guarded = True
    return Rules(foreign_keys_off=off and transaction and not own, guarded=guarded,
                 pragmas=pragmas, checked_by_own_commit=own_off)


def _pragma(where: str, sql: str, inside: bool, own: bool, known: frozenset[str]) -> bool:
    """Check one PRAGMA; True when it turns foreign keys off."""
    match = _PRAGMA.match(sql)
    if match is None:
        return False  # SQLite will report its own syntax error when it runs
    name = unquote(match.group("name")).lower()
    value = match.group("value") if match.group("value") is not None else match.group("arg")
    if known and name not in known:
        raise MigrationError(
            f"{where}: unknown pragma {name!r} (SQLite would ignore it without a word): "
            "check its spelling"
        )
    if value is None or not inside:
        return False
    setting = unquote(value.strip().strip("'")).lower()
    if name == "foreign_keys":
        if setting in _OFF:
            if own:
                raise MigrationError(
                    f"{where}: PRAGMA foreign_keys = {value.strip()} is ignored inside the "
                    "script's own BEGIN ... COMMIT: put it before the BEGIN"
                )
            return True
        if setting in _ON:
            return False  # embeddb turns them back on after the migration anyway
        raise MigrationError(f"{where}: PRAGMA foreign_keys = {value.strip()}: use ON or OFF")
    reason = _NOT_IN_TRANSACTION.get(name)
    if reason is not None:
        raise MigrationError(
            f"{where}: PRAGMA {name} {reason}, and this migration runs in one: move it to a "
            "migration of its own whose first line is `-- embeddb:no-transaction`"
        )
    return False


def dropped_or_renamed(statement: Statement) -> tuple[str, str] | None:
    """``("drop" | "rename", table)`` when the statement drops or renames a table."""
    if statement.keyword == "DROP":
        match = _DROP_TABLE.match(statement.sql)
        return ("drop", unquote(match.group("table"))) if match else None
    if statement.keyword == "ALTER":
        match = _RENAME_TABLE.match(statement.sql)
        return ("rename", unquote(match.group("table"))) if match else None
    return None


def foreign_keys_setting(statement: Statement) -> bool | None:
    """True / False when ``statement`` is ``PRAGMA foreign_keys = ON`` / ``OFF``, else None."""
    if statement.keyword != "PRAGMA":
        return None
    match = _PRAGMA.match(statement.sql)
    if match is None or unquote(match.group("name")).lower() != "foreign_keys":
        return None
    value = match.group("value") if match.group("value") is not None else match.group("arg")
    setting = unquote((value or "").strip().strip("'")).lower()
    return True if setting in _ON else False if setting in _OFF else None


#: Settings of one SQLite connection that a migration may change for its own needs and that
#: must not outlive it: the application keeps using the connection (synchronous = OFF left
#: behind would cost it durability, ignore_check_constraints its CHECKs).
CONNECTION_PRAGMAS = (
    "synchronous", "cache_size", "mmap_size", "journal_size_limit", "temp_store", "busy_timeout",
    "query_only", "recursive_triggers", "secure_delete", "cell_size_check", "automatic_index",
    "ignore_check_constraints", "defer_foreign_keys", "reverse_unordered_selects",
    "trusted_schema", "case_sensitive_like",
)


class SqliteForeignKeys:
    """The foreign-key questions a migration asks of one SQLite connection, and its settings
    kept across a migration part that runs PRAGMAs or Python."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def known_pragmas(self) -> frozenset[str]:
        """Every pragma this SQLite knows (empty if it was built without that list)."""
        try:
            return frozenset(r[0] for r in self.db.execute_sql("PRAGMA pragma_list").fetchall())
        except Exception:  # noqa: BLE001 - built without introspection pragmas: no check
            return frozenset()

    def enforced(self) -> bool:
        row = self.db.execute_sql("PRAGMA foreign_keys").fetchone()
        return bool(row and row[0])

    def referencing(self, table: str) -> list[tuple[str, str]]:
        """``(child table, column)`` of every *other* table whose foreign key names ``table``."""
        return [tuple(r) for r in self.db.execute_sql(
            "SELECT m.name, f.\"from\" FROM sqlite_schema AS m "
            "JOIN pragma_foreign_key_list(m.name) AS f "
            "WHERE m.type = 'table' AND lower(f.\"table\") = lower(?) "
            "AND lower(m.name) <> lower(?) ORDER BY m.name, f.id",
            (table, table),
        ).fetchall()]

    def violations(self, limit: int = 5) -> list[tuple[str, int | None, str]]:
        """``(table, rowid, parent table)`` of the first rows whose parent is missing."""
        found = []
        cursor = self.db.execute_sql("PRAGMA foreign_key_check")
        for row in cursor:
            found.append((row[0], row[1], row[2]))
            if len(found) >= limit:
                break
        cursor.close()
        return found

    @contextmanager
    def off(self) -> Iterator[None]:
        """Foreign keys off on this connection for the block (it must start outside a
        transaction), back to what they were afterwards: on success, failure and Ctrl-C."""
        conn = self.db.connection()
        if conn.in_transaction:
            raise MigrationError(
                "foreign keys can only be turned off outside a transaction: commit it first"
            )
        was_on = self.enforced()
        settings = self._settings()
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            yield
        finally:
            if conn.in_transaction:  # the block's own rollback failed: a pragma would be ignored
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA foreign_keys = {'ON' if was_on else 'OFF'}")
            self._put_back(settings)

    def _settings(self) -> dict[str, Any]:
        values = {}
        for name in CONNECTION_PRAGMAS:
            row = self.db.connection().execute(f"PRAGMA {name}").fetchone()
            if row is not None:  # case_sensitive_like and others answer nothing: not kept
                values[name] = row[0]
        return values

    def _put_back(self, settings: dict[str, Any]) -> None:
        conn = self.db.connection()
        if conn.in_transaction:
            return  # a script left its own transaction open: pragmas would be ignored now
        for name, value in settings.items():
            row = conn.execute(f"PRAGMA {name}").fetchone()
            if row is not None and row[0] != value:
                conn.execute(f"PRAGMA {name} = {int(value)}")

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Whatever a script that runs outside embeddb's transaction does to the setting, it
        is back to what it was afterwards."""
        was_on = self.enforced()
        settings = self._settings()
        try:
            yield
        finally:
            conn = self.db.connection()
            if not conn.in_transaction:
                conn.execute(f"PRAGMA foreign_keys = {'ON' if was_on else 'OFF'}")
            self._put_back(settings)

    def check_drop(self, where: str, statement: Statement, outcome: str) -> None:
        """Refuse a DROP TABLE / rename away of a table that other tables reference, while
        foreign keys are enforced: the DROP's implicit DELETE would cascade into (or fail on)
        their rows, and a rename would repoint their foreign keys to the old name."""
        target = dropped_or_renamed(statement)
        if target is None or not self.enforced():
            return
        action, table = target
        children = self.referencing(table)
        if not children:
            return
        names = ", ".join(sorted({f"{child}.{column}" for child, column in children}))
        verb = "dropping" if action == "drop" else "renaming"
        consequence = (
            "its implicit DELETE would cascade into or fail on their rows"
            if action == "drop" else "their foreign keys would follow it to the new name"
        )
        raise MigrationFailed(
            f"{where}: {verb} table {table} while foreign keys are on, but {names} "
            f"reference{'s' if len(children) == 1 else ''} it: {consequence}; {outcome}. "
            f"{_REBUILD_HOWTO[0].upper()}{_REBUILD_HOWTO[1:]}"
        )

    @contextmanager
    def guarded(self, outcome: str) -> Iterator[None]:
        """For code embeddb cannot read, a Python migration: with foreign keys on, refuse a
        ``DROP TABLE`` of a table that other tables reference as SQLite prepares it (an
        authorizer), whichever way the code reaches the connection.

        Who references whom is read once before the code runs; a child the code drops first
        no longer counts.
        """
        if not self.enforced():
            yield
            return
        children: dict[str, set[tuple[str, str]]] = {}
        for child, parent, column in self.db.execute_sql(
            "SELECT m.name, f.\"table\", f.\"from\" FROM sqlite_schema AS m "
            "JOIN pragma_foreign_key_list(m.name) AS f WHERE m.type = 'table'"
        ).fetchall():
            if child.lower() != parent.lower():
                children.setdefault(parent.lower(), set()).add((child, column))
        refused: list[str] = []

        def authorize(action: int, table: str | None, *_: Any) -> int:
            if action != sqlite3.SQLITE_DROP_TABLE or table is None:
                return sqlite3.SQLITE_OK
            referencing = children.get(table.lower())
            if referencing:
                names = ", ".join(sorted(f"{c}.{col}" for c, col in referencing))
                refused.append(
                    f"dropping table {table} while foreign keys are on, but {names} "
                    f"reference it: its implicit DELETE would cascade into or fail on their rows"
                )
                return sqlite3.SQLITE_DENY
            for dependants in children.values():
                dependants -= {d for d in dependants if d[0].lower() == table.lower()}
            return sqlite3.SQLITE_OK

        conn = self.db.connection()
        conn.set_authorizer(authorize)
        try:
            yield
        except MigrationFailed as exc:
            if refused:
                raise MigrationFailed(
                    f"{refused[0]}; {outcome}. Set `foreign_keys = False` at the top of the "
                    "module to rebuild a table SQLite's way: embeddb then turns foreign keys "
                    "off before the migration's transaction and checks them before it commits"
                ) from exc
            raise
        finally:
            conn.set_authorizer(None)

    def check_violations(self, label: str) -> None:
        """Before COMMIT of a migration that ran with foreign keys off."""
        found = self.violations()
        if not found:
            return
        shown = "; ".join(
            f"{table} rowid {rowid} has no matching row in {parent}"
            for table, rowid, parent in found
        )
        raise MigrationFailed(
            f"{label} broke foreign keys ({shown}{'; ...' if len(found) >= 5 else ''}): "
            "it was rolled back"
        )
