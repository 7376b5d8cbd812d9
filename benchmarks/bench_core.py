"""Model layer vs raw driver: primary-key lookup and a bulk insert, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import tempfile
import uuid
from pathlib import Path

import peewee
import psycopg2
import psycopg2.extras

import embeddb
from benchmarks.harness import (
    as_utc,
    as_uuid,
    once,
    per_op,
    pg_models,
    pg_url,
    raw_sqlite,
    report,
    same_pragmas,
    same_schema,
    size,
)
from embeddb.ids import new_id
from embeddb.models import BaseModel, UTCDateTimeField, utcnow

ROWS = size(100_000, 10_000)
LOOKUPS = size(2_000, 300)


class Thing(BaseModel):
    name = peewee.TextField()
    qty = peewee.IntegerField()
    seen_at = UTCDateTimeField()


def _rows(n: int) -> list[dict]:
    now = utcnow()
    return [{"id": new_id(), "name": f"thing-{i}", "qty": i, "seen_at": now} for i in range(n)]


def _as_tuples(rows: list[dict]) -> list[tuple]:
    fields = Thing._meta.sorted_fields
    return [tuple(f.db_value(r.get(f.name, utcnow())) for f in fields) for r in rows]


def _model_insert(db, rows: list[dict]) -> None:
    with db.atomic():
        for start in range(0, len(rows), 1000):
            Thing.insert_many(rows[start:start + 1000]).execute()


def _raw_thing(row: tuple) -> tuple:
    """A raw ``thing`` row as the Python values the model holds: UUID id, aware UTC datetimes."""
    id_, created, updated, name, qty, seen = row
    return (as_uuid(id_), as_utc(created), as_utc(updated), name, qty, as_utc(seen))


def _model_values(obj: Thing) -> tuple:
    return tuple(getattr(obj, f.name) for f in Thing._meta.sorted_fields)


def bench_sqlite() -> None:
    """Raw side: a sqlite3 connection with embeddb's pragmas, a table made with the model's
    DDL (same primary key); the insert empties it and loads the rows, converted inside the timer,
    in one BEGIN IMMEDIATE transaction; the lookup reads the model's file and converts the row."""
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'model.db'}")
        db.bind([Thing])
        db.create_tables([Thing])
        raw = raw_sqlite(Path(tmp) / "raw.db")
        same_pragmas(db, raw)
        same_schema(db, raw, "thing")
        rows = _rows(ROWS)
        columns = ", ".join(f.column_name for f in Thing._meta.sorted_fields)
        marks = ", ".join("?" * len(Thing._meta.sorted_fields))

        def raw_insert() -> None:
            raw.execute("DELETE FROM thing")
            raw.execute("BEGIN IMMEDIATE")
            raw.executemany(f"INSERT INTO thing ({columns}) VALUES ({marks})", _as_tuples(rows))
            raw.execute("COMMIT")

        def model_insert() -> None:
            Thing.delete().execute()
            _model_insert(db, rows)

        t_raw = once(raw_insert, repeat=3)
        t_model = once(model_insert, repeat=3)
        compare = "SELECT id, name, qty, seen_at FROM thing ORDER BY id"
        assert raw.execute(compare).fetchall() == db.execute_sql(compare).fetchall()
        report("sqlite.bulk_insert.model", "rows/s", ROWS / t_model, ROWS / t_raw)
        raw.close()

        ids = [r["id"] for r in random.sample(rows, LOOKUPS)]
        raw = raw_sqlite(Path(tmp) / "model.db")
        same_pragmas(db, raw)
        get_sql = f"SELECT {columns} FROM thing WHERE id = ?"
        assert _raw_thing(raw.execute(get_sql, (ids[0].hex,)).fetchone()) == _model_values(
            Thing.get_by_id(ids[0]))
        keys = iter(ids * 1000)
        t_raw = per_op(lambda: _raw_thing(raw.execute(get_sql, (next(keys).hex,)).fetchone()),
                       LOOKUPS)
        keys = iter(ids * 1000)
        t_model = per_op(lambda: Thing.get_by_id(next(keys)), LOOKUPS)
        report("sqlite.pk_lookup.model_get_by_id", "us/op", t_model * 1e6, t_raw * 1e6)
        raw.close()


def bench_postgres(url: str) -> None:
    """Raw side: psycopg2 in autocommit (as peewee), a copy of the model's table with its
    primary key (LIKE ... INCLUDING ALL); the insert empties it (DELETE, as the model side) and
    loads the converted rows in one transaction; the lookup converts the row like the model."""
    with pg_models(url, [Thing]) as (db, raw):
        rows = _rows(ROWS)
        raw.cursor().execute("CREATE TABLE raw_thing (LIKE thing INCLUDING ALL)")
        columns = ", ".join(f.column_name for f in Thing._meta.sorted_fields)

        def raw_insert() -> None:
            with raw.cursor() as cur:
                cur.execute("DELETE FROM raw_thing")
                cur.execute("BEGIN")
                psycopg2.extras.execute_values(
                    cur, f"INSERT INTO raw_thing ({columns}) VALUES %s", _as_tuples(rows),
                    page_size=1000)
                cur.execute("COMMIT")

        def model_insert() -> None:
            Thing.delete().execute()
            _model_insert(db, rows)

        t_raw = once(raw_insert, repeat=3)
        t_model = once(model_insert, repeat=3)
        cur = raw.cursor()
        compare = "SELECT id, name, qty, seen_at FROM {} ORDER BY id"
        cur.execute(compare.format("raw_thing"))
        raw_rows = cur.fetchall()
        cur.execute(compare.format("thing"))
        assert raw_rows == cur.fetchall()
        report("postgresql.bulk_insert.model", "rows/s", ROWS / t_model, ROWS / t_raw)

        ids = [r["id"] for r in random.sample(rows, LOOKUPS)]
        get_sql = f"SELECT {columns} FROM thing WHERE id = %s"

        def raw_get(key: uuid.UUID) -> tuple:
            cur.execute(get_sql, (key.hex,))
            return _raw_thing(cur.fetchone())

        assert raw_get(ids[0]) == _model_values(Thing.get_by_id(ids[0]))
        keys = iter(ids * 1000)
        t_raw = per_op(lambda: raw_get(next(keys)), LOOKUPS)
        keys = iter(ids * 1000)
        t_model = per_op(lambda: Thing.get_by_id(next(keys)), LOOKUPS)
        report("postgresql.pk_lookup.model_get_by_id", "us/op", t_model * 1e6, t_raw * 1e6)


def main() -> None:
    bench_sqlite()
    url = pg_url()
    if url:
        bench_postgres(url)


if __name__ == "__main__":
    main()
