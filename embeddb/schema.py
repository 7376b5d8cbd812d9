"""Compare models with a migrated database, and dump the database's schema as SQL.

``check`` catches the drift migrations and models accumulate: a column added in SQL but not in
the model, a nullability changed on one side, an index the repositories rely on that no
migration created. ``dump`` writes the schema for review in diffs, like dbmate's schema.sql.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import peewee

from .errors import ConfigurationError, DatabaseError
from .protocols import Database
from .url import scrub

_FAMILIES = (
    ("uuid", "uuid"),
    ("timestamp", "timestamp"),
    ("datetime", "timestamp"),
    ("json", "json"),
    ("bool", "boolean"),
    ("int", "integer"),
    ("serial", "integer"),
    ("char", "text"),
    ("text", "text"),
    ("clob", "text"),
    ("real", "number"),
    ("double", "number"),
    ("float", "number"),
    ("numeric", "number"),
    ("decimal", "number"),
    ("blob", "binary"),
    ("bytea", "binary"),
)


@dataclass(frozen=True)
class Difference:
    """One way the database differs from the models."""

    table: str
    kind: str  # missing-/extra-table, missing-/extra-column, type, nullability, missing-index
    detail: str

    def __str__(self) -> str:
        return f"{self.table}: {self.detail}"


def load_models(spec: str) -> list[Any]:
    """``package.module:NAME`` -> the list of models it names (NAME defaults to MODELS).

    :raises ConfigurationError: the module or attribute does not exist.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        models = getattr(importlib.import_module(module_name), attribute or "MODELS")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot load models from {spec!r}: {exc} (use package.module:NAME)"
        ) from None
    return list(models)


def type_family(sql_type: str) -> str:
    """Reduce a column type to what matters for compatibility (``varchar(40)`` -> ``text``)."""
    lowered = sql_type.lower()
    for marker, family in _FAMILIES:
        if marker in lowered:
            return family
    return lowered or "untyped"


def check(db: Database, models: Iterable[type[peewee.Model]]) -> list[Difference]:
    """Every difference between ``models`` and the tables of ``db``; empty when they agree."""
    models = list(models)
    tables = set(db.get_tables())
    differences: list[Difference] = []
    modelled = {m._meta.table_name for m in models}
    for table in sorted(tables - modelled):
        if not _internal(table, modelled):
            differences.append(Difference(table, "extra-table", "table is not in the models"))
    for model in models:
        table = model._meta.table_name
        if table not in tables:
            differences.append(Difference(table, "missing-table", "table does not exist"))
            continue
        differences += _check_columns(db, model, table)
        differences += _check_indexes(db, model, table)
    return differences


def _expected_type(db: Database, field: peewee.Field) -> str:
    field_type = field.field_type
    if isinstance(field, peewee.ForeignKeyField):
        field_type = field.rel_field.field_type
    return db.get_context_options()["field_types"].get(field_type, field_type)


def _check_columns(db: Database, model: type[peewee.Model], table: str) -> list[Difference]:
    columns = {c.name: c for c in db.get_columns(table)}
    differences = []
    for field in model._meta.sorted_fields:
        column = columns.pop(field.column_name, None)
        if column is None:
            differences.append(Difference(table, "missing-column",
                                          f"column {field.column_name} does not exist"))
            continue
        expected, actual = type_family(_expected_type(db, field)), type_family(column.data_type)
        if expected != actual:
            differences.append(Difference(
                table, "type", f"column {field.column_name} is {column.data_type} ({actual}), "
                f"model says {expected}"))
        nullable = field.null and not field.primary_key
        # SQLite reports an INTEGER PRIMARY KEY (the rowid) as nullable; it can never be NULL
        stored_null = column.null and not (
            column.primary_key and db.dialect.name == "sqlite"
            and column.data_type.upper() == "INTEGER")
        if bool(stored_null) != nullable:
            differences.append(Difference(
                table, "nullability", f"column {field.column_name} is "
                f"{'NULL' if column.null else 'NOT NULL'} in the database, model says "
                f"{'NULL' if nullable else 'NOT NULL'}"))
    allowed = set(getattr(model, "database_only_columns", ()))
    for name, column in columns.items():
        if name in allowed:
            continue
        detail = f"column {name} is not in the model"
        if not column.null and column.default is None:
            detail += " and is NOT NULL without a default: inserts through the model will fail"
        differences.append(Difference(table, "extra-column", detail))
    return differences


def _internal(table: str, modelled: set[str]) -> bool:
    """embeddb's bookkeeping, SQLite's own tables (``sqlite_stat1`` after ANALYZE,
    ``sqlite_sequence``) and the full-text index tables that belong to a modelled table."""
    return (table.startswith(("embeddb_", "sqlite_"))
            or any(table.startswith(f"{t}_fts") for t in modelled))


def _expected_indexes(model: type[peewee.Model]) -> list[tuple[tuple[str, ...], bool]]:
    meta = model._meta
    expected: list[tuple[tuple[str, ...], bool]] = [
        ((f.column_name,), bool(f.unique))
        for f in meta.sorted_fields
        if (f.index or f.unique) and not f.primary_key
    ]
    for spec in meta.indexes:
        if isinstance(spec, tuple):
            names, unique = spec
            columns = tuple(meta.fields[n].column_name if n in meta.fields else n for n in names)
            expected.append((columns, bool(unique)))
    return expected


def _check_indexes(db: Database, model: type[peewee.Model], table: str) -> list[Difference]:
    present = [(tuple(i.columns), bool(i.unique)) for i in db.get_indexes(table)]
    differences = []
    for columns, unique in _expected_indexes(model):
        if not any(_covers(have, columns, unique) for have in present):
            kind = "unique index" if unique else "index"
            differences.append(Difference(
                table, "missing-index", f"no {kind} on ({', '.join(columns)})"))
    return differences


def _covers(have: tuple[tuple[str, ...], bool], columns: tuple[str, ...], unique: bool) -> bool:
    have_columns, have_unique = have
    if unique:
        return have_unique and have_columns == columns
    return have_columns[: len(columns)] == columns


def dump(db: Database) -> str:
    """The database's schema as SQL (tables, indexes, triggers, views), stable across runs.

    :raises ConfigurationError: no dump is known for the database's backend.
    """
    name = db.dialect.name
    if name not in _DUMPS:
        raise ConfigurationError(f"no schema dump for {name!r} databases")
    return _DUMPS[name](db)


def _sqlite_dump(db: Database) -> str:
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


def _fts_shadows(table: str) -> set[str]:
    """The tables FTS5 creates for virtual table ``table`` (recreated by its CREATE)."""
    return {f"{table}_{part}" for part in ("data", "idx", "content", "docsize", "config")}


def _postgres_dump(db: Database) -> str:
    """``pg_dump --schema-only`` of the database (its schema only, when the URL names one)."""
    import subprocess

    from .backup.postgres import client_env, tool

    args = [tool("pg_dump"), "--schema-only", "--no-owner", "--no-privileges"]
    if db.settings.schema:
        args += ["--schema", db.settings.schema]
    done = subprocess.run(args, env=client_env(db.url), capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise DatabaseError(f"pg_dump --schema-only failed: "
                            f"{scrub(done.stderr, db.url.password)}")
    # Keep only the schema itself, stable across runs: no comments, no SET preamble, and
    # no \restrict lines (pg_dump 15.14+ puts a random key in them).
    noise = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
    lines = [line for line in done.stdout.splitlines()
             if line and not line.startswith(noise)]
    return "\n".join(lines) + "\n"


#: dialect name -> how to dump that backend's schema
_DUMPS: dict[str, Callable[[Any], str]] = {"sqlite": _sqlite_dump, "postgresql": _postgres_dump}
