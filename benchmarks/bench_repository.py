"""Repository hot paths vs the raw driver, on the reference ``services``-like workload.

- get by primary key            (target <= 2.0x raw sqlite3, <= 1.3x raw psycopg2)
- bulk insert of 100k rows      (target >= 0.8x executemany, >= 0.7x execute_values)
- listing 1,000 rows as models  (target <= 3x raw fetchall)
- keyset page at the end of a 1M-row table vs the first page (target <= 1.5x)

The raw side gets the same Python values and converts them as an app using the driver
directly must (uuid -> hex, datetime -> ISO text, dict -> JSON).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import peewee
import psycopg2
import psycopg2.extras

import embeddb
from benchmarks.harness import once, per_op, pg_models, pg_url, report, size
from embeddb.ids import new_id
from embeddb.models import BaseModel, JSONField, MoneyField, UTCDateTimeField, utcnow
from embeddb.repository import Repository

ROWS = size(100_000, 10_000)
BIG = size(1_000_000, 50_000)
LOOKUPS = size(3_000, 500)


class Listing(BaseModel):
    name = peewee.TextField()
    category = peewee.TextField()
    price = MoneyField(decimal_places=6)
    status = peewee.TextField()
    metadata = JSONField()
    seen_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "listing"


def _rows(n: int) -> list[dict]:
    now = utcnow()
    return [
        {"id": new_id(), "name": f"svc-{i}", "category": f"cat-{i % 20}", "price": i,
         "status": "active", "metadata": {"i": i}, "seen_at": now, "created_at": now,
         "updated_at": now}
        for i in range(n)
    ]


def _stream_rows(n: int):
    now = utcnow()
    for i in range(n):
        yield {"name": f"svc-{i}", "category": f"cat-{i % 20}", "price": i, "status": "active",
               "metadata": {"i": i}, "seen_at": now}


def _raw_tuples(rows: list[dict]) -> list[tuple]:
    fields = Listing._meta.sorted_fields
    return [tuple(f.db_value(r[f.name]) for f in fields) for r in rows]


def _columns() -> list[str]:
    return [f.column_name for f in Listing._meta.sorted_fields]


def _bench(db, raw_conn, raw_insert, raw_get_sql: str, label: str) -> None:
    repo = Repository(Listing, db)
    rows = _rows(ROWS)

    def model_insert() -> None:
        Listing.delete().execute()
        repo.bulk_create(rows)

    t_raw = once(lambda: raw_insert(rows))
    t_ours = once(model_insert)
    report(f"{label}.repository.bulk_insert", "rows/s", ROWS / t_ours, ROWS / t_raw)

    cur = raw_conn.cursor()
    keys = [r["id"] for r in random.sample(rows, LOOKUPS)]
    it = iter(keys * 50)

    def raw_get() -> None:
        cur.execute(raw_get_sql, (next(it).hex,))
        cur.fetchone()

    t_raw = per_op(raw_get, LOOKUPS)
    it2 = iter(keys * 50)
    t_ours = per_op(lambda: repo.get(next(it2)), LOOKUPS)
    report(f"{label}.repository.get_by_id", "us/op", t_ours * 1e6, t_raw * 1e6)

    _cached_get(db, keys, t_ours, label)

    columns = ", ".join(_columns())

    def raw_list() -> None:
        cur.execute(f"SELECT {columns} FROM listing WHERE category = 'cat-3' ORDER BY id LIMIT 1000")
        cur.fetchall()

    t_raw = per_op(raw_list, 20)
    t_ours = per_op(lambda: repo.find(category="cat-3", limit=1000), 20)
    report(f"{label}.repository.list_1000", "ms/op", t_ours * 1e3, t_raw * 1e3)


def _cached_get(db, keys, uncached: float, label: str) -> None:
    """A repository get served by the cache's L1 vs the same get without a cache."""
    from embeddb.cache import Cache

    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp, db=db)
        repo = Repository(Listing, db, cache=cache)
        for key in keys:
            repo.get(key)
        it = iter(keys * 50)
        t_cached = per_op(lambda: repo.get(next(it)), len(keys))
        report(f"{label}.repository.get_by_id_cached_l1", "us/op", t_cached * 1e6,
               uncached * 1e6, speedup=uncached / t_cached)
        cache.close()


def _keyset(db, label: str) -> None:
    """First vs last keyset page of a BIG-row table, streamed in with bulk_create."""
    repo = Repository(Listing, db)
    Listing.delete().execute()
    repo.bulk_create(_stream_rows(BIG))  # a generator: memory stays flat
    first = repo.page_after(limit=50)
    last_id = Listing.select(Listing.id).order_by(Listing.id.desc()).offset(60).limit(1).scalar()
    cursor = repo._encode_cursor("id", Listing.id, Listing(id=last_id))
    t_first = per_op(lambda: repo.page_after(limit=50), 50)
    t_last = per_op(lambda: repo.page_after(cursor, limit=50), 50)
    assert first.items and repo.page_after(cursor, limit=50).items
    report(f"{label}.repository.keyset_last_vs_first_page", "us/op", t_last * 1e6,
           t_first * 1e6, rows=BIG)


def bench_sqlite() -> None:
    import sqlite3

    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'repo.db'}")
        db.bind([Listing])
        db.create_tables([Listing])
        raw_path = Path(tmp) / "raw.db"
        marks = ", ".join("?" * len(_columns()))

        def raw_insert(rows: list[dict]) -> None:
            raw = sqlite3.connect(raw_path, isolation_level=None)
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("DROP TABLE IF EXISTS listing")
            raw.execute(f"CREATE TABLE listing ({', '.join(_columns())})")
            raw.execute("BEGIN")
            raw.executemany(f"INSERT INTO listing VALUES ({marks})", _raw_tuples(rows))
            raw.execute("COMMIT")
            raw.close()

        raw_conn = sqlite3.connect(Path(tmp) / "repo.db")
        _bench(db, raw_conn, raw_insert, "SELECT * FROM listing WHERE id = ?", "sqlite")
        _keyset(db, "sqlite")


def bench_postgres(url: str) -> None:
    with pg_models(url, [Listing]) as (db, raw_conn):
        raw_conn.autocommit = True
        raw_conn.cursor().execute("CREATE TABLE raw_listing (LIKE listing)")

        def raw_insert(rows: list[dict]) -> None:
            with raw_conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("TRUNCATE raw_listing")
                psycopg2.extras.execute_values(
                    cur, "INSERT INTO raw_listing VALUES %s", _raw_tuples(rows), page_size=2000)
                cur.execute("COMMIT")

        _bench(db, raw_conn, raw_insert, "SELECT * FROM listing WHERE id = %s", "postgresql")
        _keyset(db, "postgresql")


def main() -> None:
    bench_sqlite()
    url = pg_url()
    if url:
        bench_postgres(url)


if __name__ == "__main__":
    main()
