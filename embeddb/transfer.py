"""Copy every row of one database into another, e.g. from a SQLite file to PostgreSQL when an
app outgrows one file (``embeddb copy --from URL --to URL``).

The target's schema comes from the app's migrations folder (run on the target first) or must
already be there at the source's migration version; the rows are streamed a batch at a time
(memory bounded by ``batch_size``) from one consistent snapshot of the source into **one**
transaction on the target, so an interruption, a kill included, leaves the target's tables
as they were (empty) and the copy is simply run again. Row counts are checked per table before
the commit. Values are turned into what the target stores for the same field (UUIDs, UTC
timestamps, booleans) so the same models read them back. A table the target's own triggers
fill as the rows arrive (SQLite's full-text map) is left to them, its count checked too.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from .database import Database, connect
from .errors import EmbeddbError
from .migrate import TABLE as MIGRATIONS_TABLE
from .migrate import current_version
from .migrate import up as migrate_up

#: rows per batch read from the source and written to the target
BATCH_SIZE = 2000
#: bookkeeping that belongs to each database itself, never copied (the target's migration
#: history is written by running the migrations there; locks are runtime state)
_NOT_COPIED = frozenset({MIGRATIONS_TABLE, "embeddb_lock_names", "embeddb_lock_tokens"})

Progress = Callable[[str, int], None]


class CopyError(EmbeddbError):
    """A copy cannot start or did not verify: the target's rows are left as they were."""


@dataclass
class CopyResult:
    """What :func:`copy` did: rows per table (verified equal on both sides)."""

    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)
    migrated: list[str] = field(default_factory=list)  # migrations run on the target first
    version: int | None = None  # the migration version both databases are at
    #: the source backend's own tables and columns (e.g. full-text helpers)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, "source": self.source, "target": self.target,
                "tables": self.tables, "rows": self.rows, "migrated": self.migrated,
                "skipped": self.skipped,
                "version": self.version, "seconds": round(self.seconds, 3)}


def copy(
    source: str | None,
    target: str,
    *,
    migrations: str | os.PathLike[str] | None = None,
    force: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy every table's rows from the database ``source`` to ``target`` (URLs or names of
    embeddb.toml, as :func:`embeddb.connect` takes them; ``source`` None: the default one).

    ``migrations``: the app's migrations folder, applied to the target first (without it the
    target must already be at the source's version). A target whose tables hold rows is
    refused unless ``force`` (the rows are then added to them). ``progress(table, rows)`` is
    called after each batch.

    :raises CopyError: the target is not empty, a table or column is missing there, the
        versions differ, or the counts did not match (nothing was committed).
    """
    if batch_size < 1:
        raise CopyError(f"batch size must be 1 or more (got {batch_size})")
    start = time.perf_counter()
    src = connect(source, readonly=True)
    dst = connect(target)
    try:
        result = CopyResult(src.url.redacted(), dst.url.redacted())
        if migrations is not None:
            result.migrated = migrate_up(dst, migrations, backup=False).names
        result.version = _same_version(src, dst)
        reader, writer = _side(src), _side(dst)
        tables = _tables_to_copy(reader, writer, result.version, result.skipped)
        if not force:
            _refuse_rows(dst, tables)
        counts = _copy_rows(src, dst, reader, writer, tables, batch_size, progress)
        result.tables = counts
    finally:
        src.close()
        dst.close()
    result.seconds = time.perf_counter() - start
    return result


def _same_version(src: Database, dst: Database) -> int | None:
    ours, theirs = current_version(src), current_version(dst)
    if ours != theirs:
        def spell(version: int | None) -> str:
            return "has no migrations applied" if version is None else f"is at version {version}"

        raise CopyError(
            f"the source {spell(ours)} and the target {spell(theirs)}: run the same "
            f"migrations on the target first (pass --migrations DIR)")
    return ours


def _tables_to_copy(reader: _Side, writer: _Side, version: int | None,
                    skipped: list[str]) -> list[tuple[str, list[str]]]:
    """(table, columns) of the source, parents before the tables that refer to them; the
    source's tables that only its backend's migrations make go to ``skipped``."""
    wanted = [t for t in reader.tables() if t not in _NOT_COPIED]
    present = set(writer.tables())
    missing = [t for t in wanted if t not in present]
    if missing and (reader.db.dialect.name == writer.db.dialect.name or version is None
                    or len(missing) == len(wanted)):
        raise CopyError(
            f"the target has no table {', '.join(missing)}: run the app's migrations on it "
            f"(pass --migrations DIR) before copying")
    # at the same migration version on another backend: tables of the source's dialect
    # variant only (e.g. SQLite's full-text helpers), which the target does its own way
    skipped.extend(missing)
    wanted = [t for t in wanted if t in present]
    other_backend = reader.db.dialect.name != writer.db.dialect.name and version is not None
    plan = []
    for table in _parents_first(wanted, writer):
        known, insertable = writer.columns(table, every=True), set(writer.columns(table))
        columns = []
        for column in reader.columns(table):
            if column in insertable:
                columns.append(column)
            elif column not in known:  # (a generated column the target computes is known)
                if not other_backend:
                    raise CopyError(f"table {table} of the target has no column {column}: "
                                    f"are both databases at the same migration?")
                skipped.append(f"{table}.{column}")
        plan.append((table, columns))
    return plan


def _parents_first(tables: list[str], writer: _Side) -> list[str]:
    order: list[str] = []
    visiting: set[str] = set()

    def visit(table: str) -> None:
        if table in order or table in visiting:
            return  # done, or a cycle (SQLite defers the check; PostgreSQL says which key)
        visiting.add(table)
        for parent in writer.parents(table):
            if parent in tables and parent != table:
                visit(parent)
        visiting.discard(table)
        order.append(table)

    for table in tables:
        visit(table)
    return order


def _refuse_rows(dst: Database, tables: list[tuple[str, list[str]]]) -> None:
    for table, _columns in tables:
        if dst.execute_sql(f"SELECT 1 FROM {_q(table)} LIMIT 1").fetchone():
            raise CopyError(
                f"the target's table {table} already has rows: copy into an empty database, "
                f"or pass --force to add the source's rows to them")


def _copy_rows(src: Database, dst: Database, reader: _Side, writer: _Side,
               tables: list[tuple[str, list[str]]], batch_size: int,
               progress: Progress | None) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(db: Database, table: str) -> int:
        return int(db.execute_sql(f"SELECT count(*) FROM {_q(table)}").fetchone()[0])

    with reader.snapshot(), dst.atomic():
        writer.prepare_load()
        before = {table: count(dst, table) for table, _columns in tables}
        for table, columns in tables:
            expected = count(src, table)
            filled = count(dst, table) - before[table]
            if filled:  # written by the target's own triggers (e.g. a full-text map)
                if filled != expected:
                    raise CopyError(
                        f"table {table}: the target's triggers wrote {filled} rows into it "
                        f"while the source has {expected}: nothing was committed")
                counts[table] = expected
                continue
            convert = writer.converter(table, columns)
            copied = 0
            for batch in reader.batches(table, columns, batch_size):
                rows = [convert(row) for row in batch]
                dst.insert_rows(table, columns, rows)
                copied += len(rows)
                if progress is not None:
                    progress(table, copied)
            arrived = count(dst, table) - before[table]
            if copied != expected or arrived != expected:
                raise CopyError(
                    f"table {table}: the source has {expected} rows but {arrived} "
                    f"arrived: nothing was committed")
            writer.after_load(table, columns)
            counts[table] = expected
    return counts


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- what differs by backend ---------------------------------------------------------------


class _Side:
    """One database's catalog, snapshot, streaming reads and value conversion."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def tables(self) -> list[str]:
        raise NotImplementedError

    def columns(self, table: str, every: bool = False) -> list[str]:
        """The columns a row is written with (``every``: generated ones too)."""
        raise NotImplementedError

    def parents(self, table: str) -> list[str]:
        raise NotImplementedError

    def snapshot(self) -> Any:
        """A read transaction: every table read from one point in time."""
        raise NotImplementedError

    def batches(self, table: str, columns: list[str], size: int) -> Iterator[list[tuple]]:
        raise NotImplementedError

    def converter(self, table: str, columns: list[str]) -> Callable[[tuple], tuple]:
        """Source row -> the values this database stores for the same fields."""
        raise NotImplementedError

    def prepare_load(self) -> None:
        """Inside the load's transaction, before its first row: check foreign keys at commit
        where possible; parse values as the source's fields meant them."""

    def after_load(self, table: str, columns: list[str]) -> None:
        """Inside the load's transaction, once ``table`` is loaded."""


def _side(db: Database) -> _Side:
    return _SIDES[db.dialect.name](db)


class _Snapshot:
    def __init__(self, begin: Callable[[], None], end: Callable[[], None]) -> None:
        self._begin, self._end = begin, end

    def __enter__(self) -> None:
        self._begin()

    def __exit__(self, *exc: object) -> None:
        self._end()


def _sqlite_value(value: Any) -> Any:
    """A value read from PostgreSQL as embeddb's fields store it in SQLite."""
    kind = type(value)
    if value is None or kind in (str, int, float, bytes, bool):
        return value
    if kind is uuid.UUID:
        return value.hex
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, memoryview):
        return bytes(value)
    return str(value)


class _SqliteSide(_Side):
    def tables(self) -> list[str]:
        return [r[0] for r in self.db.execute_sql(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()]

    def columns(self, table: str, every: bool = False) -> list[str]:
        return [r[0] for r in self.db.execute_sql(
            "SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0 OR ? ORDER BY cid",
            (table, every)).fetchall()]

    def parents(self, table: str) -> list[str]:
        return [r[0] for r in self.db.execute_sql(
            'SELECT DISTINCT "table" FROM pragma_foreign_key_list(?)', (table,)).fetchall()]

    def snapshot(self) -> _Snapshot:
        conn = self.db.connection()
        return _Snapshot(lambda: conn.execute("BEGIN DEFERRED"),
                         lambda: conn.execute("ROLLBACK"))

    def batches(self, table: str, columns: list[str], size: int) -> Iterator[list[tuple]]:
        names = ", ".join(_q(c) for c in columns)
        cursor = self.db.connection().execute(f"SELECT {names} FROM {_q(table)}")
        while batch := cursor.fetchmany(size):
            yield batch

    def converter(self, table: str, columns: list[str]) -> Callable[[tuple], tuple]:
        return lambda row: tuple(_sqlite_value(v) for v in row)

    def prepare_load(self) -> None:
        self.db.execute_sql("PRAGMA defer_foreign_keys = ON")


class _PostgresSide(_Side):
    def tables(self) -> list[str]:
        return [r[0] for r in self.db.execute_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()]

    def _types(self, table: str, every: bool = False) -> dict[str, str]:
        return dict(self.db.execute_sql(
            "SELECT column_name, data_type FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = %s AND (%s OR (is_generated "
            "= 'NEVER' AND coalesce(identity_generation, '') <> 'ALWAYS')) "
            "ORDER BY ordinal_position", (table, every)).fetchall())

    def columns(self, table: str, every: bool = False) -> list[str]:
        return list(self._types(table, every))

    def parents(self, table: str) -> list[str]:
        return [r[0] for r in self.db.execute_sql(
            "SELECT DISTINCT cf.relname FROM pg_constraint c JOIN pg_class ct ON "
            "ct.oid = c.conrelid JOIN pg_class cf ON cf.oid = c.confrelid WHERE "
            "c.contype = 'f' AND ct.relname = %s AND ct.relnamespace = "
            "current_schema()::regnamespace", (table,)).fetchall()]

    def snapshot(self) -> _Snapshot:
        conn = self.db.connection()

        def begin() -> None:
            conn.autocommit = False
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)

        def end() -> None:
            conn.rollback()
            conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT")
            conn.autocommit = True

        return _Snapshot(begin, end)

    def batches(self, table: str, columns: list[str], size: int) -> Iterator[list[tuple]]:
        names = ", ".join(_q(c) for c in columns)
        with self.db.connection().cursor(name=f"embeddb_copy_{uuid.uuid4().hex}") as cursor:
            cursor.itersize = size
            cursor.execute(f"SELECT {names} FROM {_q(table)}")
            while batch := cursor.fetchmany(size):
                yield batch

    def converter(self, table: str, columns: list[str]) -> Callable[[tuple], tuple]:
        types = self._types(table)
        flags = [types.get(c) == "boolean" for c in columns]
        if not any(flags):
            return tuple
        # SQLite stores booleans as 0/1: PostgreSQL takes no integer for a boolean column
        return lambda row: tuple(bool(v) if b and type(v) is int else v
                                 for v, b in zip(row, flags))

    def prepare_load(self) -> None:
        # SQLite's timestamp text without an offset is UTC to UTCDateTimeField; the server
        # would read it in the session's TimeZone (PGTZ, the role's or server's setting)
        self.db.execute_sql("SET LOCAL TIME ZONE 'UTC'")

    def after_load(self, table: str, columns: list[str]) -> None:
        # serial / identity columns: the sequence continues after the copied values
        for column in columns:
            (sequence,) = self.db.execute_sql(
                "SELECT pg_get_serial_sequence(%s, %s)", (_q(table), column)).fetchone()
            if sequence:
                self.db.execute_sql(
                    f"SELECT setval(%s, COALESCE(MAX({_q(column)}), 1), "
                    f"MAX({_q(column)}) IS NOT NULL) FROM {_q(table)}", (sequence,))


_SIDES: dict[str, type[_Side]] = {"sqlite": _SqliteSide, "postgresql": _PostgresSide}
