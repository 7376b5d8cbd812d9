"""Model layer vs raw driver: primary-key lookup and a bulk insert, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from pathlib import Path

import peewee
import psycopg2
import psycopg2.extras

import embeddb
from benchmarks.harness import once, per_op, pg_models, pg_url, report, size
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


def bench_sqlite() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'model.db'}")
        db.bind([Thing])
        db.create_tables([Thing])
        rows = _rows(ROWS)
        columns = ", ".join(f.column_name for f in Thing._meta.sorted_fields)
        marks = ", ".join("?" * len(Thing._meta.sorted_fields))

        def raw_insert() -> None:
            raw = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("DROP TABLE IF EXISTS thing")
            raw.execute(f"CREATE TABLE thing ({columns})")
            raw.execute("BEGIN")
            raw.executemany(f"INSERT INTO thing VALUES ({marks})", _as_tuples(rows))
            raw.execute("COMMIT")
            raw.close()

        def model_insert() -> None:
            Thing.delete().execute()
            _model_insert(db, rows)

        t_raw = once(raw_insert, repeat=3)
        t_model = once(model_insert, repeat=3)
        report("sqlite.bulk_insert.model", "rows/s", ROWS / t_model, ROWS / t_raw)

        ids = [r["id"] for r in random.sample(rows, LOOKUPS)]
        raw = sqlite3.connect(Path(tmp) / "model.db")
        keys = iter(ids * 1000)
        t_raw = per_op(lambda: raw.execute(
            "SELECT * FROM thing WHERE id = ?", (next(keys).hex,)).fetchone(), LOOKUPS)
        keys = iter(ids * 1000)
        t_model = per_op(lambda: Thing.get_by_id(next(keys)), LOOKUPS)
        report("sqlite.pk_lookup.model_get_by_id", "us/op", t_model * 1e6, t_raw * 1e6)


def bench_postgres(url: str) -> None:
    with pg_models(url, [Thing]) as (db, raw):
        rows = _rows(ROWS)
        raw.cursor().execute("CREATE TABLE raw_thing (LIKE thing)")
        raw.commit()

        def raw_insert() -> None:
            with raw.cursor() as cur:
                cur.execute("TRUNCATE raw_thing")
                psycopg2.extras.execute_values(
                    cur, "INSERT INTO raw_thing VALUES %s", _as_tuples(rows), page_size=1000)
            raw.commit()

        def model_insert() -> None:
            Thing.delete().execute()
            _model_insert(db, rows)

        t_raw = once(raw_insert, repeat=3)
        t_model = once(model_insert, repeat=3)
        report("postgresql.bulk_insert.model", "rows/s", ROWS / t_model, ROWS / t_raw)

        ids = [r["id"] for r in random.sample(rows, LOOKUPS)]
        cur = raw.cursor()
        keys = iter(ids * 1000)

        def raw_get() -> None:
            cur.execute("SELECT * FROM thing WHERE id = %s", (next(keys).hex,))
            cur.fetchone()

        t_raw = per_op(raw_get, LOOKUPS)
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
