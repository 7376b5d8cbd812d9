"""Repository hot paths vs the raw driver, on the reference ``services``-like workload.

- get by primary key            (target <= 2.0x raw sqlite3, <= 1.3x raw psycopg2)
- bulk insert of 100k rows      (target >= 0.8x executemany, >= 0.7x execute_values)
- listing 1,000 rows as models  (target <= 3x raw fetchall)
- keyset page at the end of a 1M-row table vs the first page (target <= 1.5x)

The raw side does what an app using the driver directly must: the same connection settings
(sqlite3 with embeddb's pragmas; psycopg2 in autocommit), a table with the same DDL (primary
key included), the same SQL (columns, WHERE, ORDER BY, LIMIT as parameters), the same
transaction boundaries, and the same conversions both ways inside the timer (uuid <-> hex,
datetime <-> ISO text, Decimal <-> minor units, dict <-> JSON). Each comparison checks that both
sides return equal values. Keyset and cached-get figures compare embeddb with itself. Gets and
listings alternate rounds of the two sides (``harness.paired``), so load from other jobs hits
both alike.
"""

from __future__ import annotations

import json
import random
import tempfile
from decimal import Decimal
from pathlib import Path

import peewee
import psycopg2
import psycopg2.extras

import embeddb
from benchmarks.harness import (
    as_utc,
    as_uuid,
    once,
    paired,
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


def _raw_listing(row: tuple) -> tuple:
    """A raw ``listing`` row as the Python values the model holds."""
    id_, created, updated, name, category, price, status, metadata, seen = row
    if isinstance(metadata, str):  # sqlite3: JSON text (psycopg2 parses jsonb itself)
        metadata = json.loads(metadata)
    return (as_uuid(id_), as_utc(created), as_utc(updated), name, category,
            Decimal(price).scaleb(-6), status, metadata, as_utc(seen))


def _values(obj: Listing) -> tuple:
    return tuple(getattr(obj, f.name) for f in Listing._meta.sorted_fields)


def _bench(db, raw_conn, raw_insert, param: str, label: str) -> None:
    repo = Repository(Listing, db)
    rows = _rows(ROWS)

    def model_insert() -> None:
        Listing.delete().execute()
        repo.bulk_create(rows)

    t_raw = once(lambda: raw_insert(rows))
    t_ours = once(model_insert)
    report(f"{label}.repository.bulk_insert", "rows/s", ROWS / t_ours, ROWS / t_raw)

    cur = raw_conn.cursor()
    columns = ", ".join(f'"{c}"' for c in _columns())
    get_sql = f'SELECT {columns} FROM "listing" WHERE "id" = {param}'
    keys = [r["id"] for r in random.sample(rows, LOOKUPS)]

    def raw_get(key) -> tuple:
        cur.execute(get_sql, (key.hex,))
        return _raw_listing(cur.fetchone())

    assert raw_get(keys[0]) == _values(repo.get(keys[0]))
    it = iter(keys * 50)
    it2 = iter(keys * 50)
    t_ours, t_raw = paired(lambda: repo.get(next(it2)), lambda: raw_get(next(it)), LOOKUPS)
    report(f"{label}.repository.get_by_id", "us/op", t_ours * 1e6, t_raw * 1e6)

    _cached_get(db, keys, t_ours, label)

    list_sql = (f'SELECT {columns} FROM "listing" WHERE "category" = {param} '
                f'ORDER BY "id" ASC LIMIT {param}')

    def raw_list() -> list[tuple]:
        cur.execute(list_sql, ("cat-3", 1000))
        return [_raw_listing(row) for row in cur.fetchall()]

    found = raw_list()
    assert len(found) == min(1000, ROWS // 20)
    assert found == [_values(o) for o in repo.find(category="cat-3", limit=1000)]
    t_ours, t_raw = paired(lambda: repo.find(category="cat-3", limit=1000), raw_list, 20)
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
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'repo.db'}")
        db.bind([Listing])
        db.create_tables([Listing])
        loader = raw_sqlite(Path(tmp) / "raw.db")
        same_pragmas(db, loader)
        same_schema(db, loader, "listing")
        columns = ", ".join(f'"{c}"' for c in _columns())
        marks = ", ".join("?" * len(_columns()))

        def raw_insert(rows: list[dict]) -> None:
            # as bulk_create: one BEGIN IMMEDIATE transaction into the emptied table
            loader.execute('DELETE FROM "listing"')
            loader.execute("BEGIN IMMEDIATE")
            loader.executemany(f'INSERT INTO "listing" ({columns}) VALUES ({marks})',
                               _raw_tuples(rows))
            loader.execute("COMMIT")

        raw_conn = raw_sqlite(Path(tmp) / "repo.db")
        same_pragmas(db, raw_conn)
        _bench(db, raw_conn, raw_insert, "?", "sqlite")
        compare = 'SELECT * FROM "listing" ORDER BY "id"'
        assert loader.execute(compare).fetchall() == raw_conn.execute(compare).fetchall()
        loader.close()
        _keyset(db, "sqlite")
        raw_conn.close()


def bench_postgres(url: str) -> None:
    with pg_models(url, [Listing]) as (db, raw_conn):
        raw_conn.cursor().execute("CREATE TABLE raw_listing (LIKE listing INCLUDING ALL)")
        columns = ", ".join(f'"{c}"' for c in _columns())

        def raw_insert(rows: list[dict]) -> None:
            # as bulk_create: one transaction into the emptied table, 2,000 rows a statement
            with raw_conn.cursor() as cur:
                cur.execute("DELETE FROM raw_listing")
                cur.execute("BEGIN")
                psycopg2.extras.execute_values(
                    cur, f"INSERT INTO raw_listing ({columns}) VALUES %s", _raw_tuples(rows),
                    page_size=2000)
                cur.execute("COMMIT")

        _bench(db, raw_conn, raw_insert, "%s", "postgresql")
        with raw_conn.cursor() as cur:
            cur.execute("SELECT * FROM raw_listing ORDER BY id")
            theirs = cur.fetchall()
            cur.execute("SELECT * FROM listing ORDER BY id")
            assert theirs == cur.fetchall()
        _keyset(db, "postgresql")


def main() -> None:
    bench_sqlite()
    url = pg_url()
    if url:
        bench_postgres(url)


if __name__ == "__main__":
    main()
