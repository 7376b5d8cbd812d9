"""Single-row writes through the repository vs the raw driver, each in its own transaction.

- ``create``                          (target <= 1.3x raw sqlite3, <= 1.2x raw psycopg2)
- ``update(obj, **fields)``           (same targets)
- ``update(pk, **fields)``            (vs raw SELECT + UPDATE in one transaction)
- ``update_where(values, name=...)``  (one row found through an index)
- ``delete(pk)`` and soft ``delete(pk)``
- versioned ``update(obj, **fields)`` (vs raw UPDATE ... WHERE version = ?)
- ``restore(pk)`` of a soft-deleted row (vs raw UPDATE ... RETURNING, row turned into Python)
- ``upsert(values, ["id"])`` of an existing row (vs raw INSERT ... ON CONFLICT DO UPDATE ...
  RETURNING, the same statement, values converted in and the row converted out)

Table shaped like an app's: UUIDv7 id, two timestamps, three text columns, an int, money and
JSON, two indexes, 100k rows (soft-delete and versioned variants add their one column), in a
WAL file. The raw side does what an app using the driver directly must for the same result:
the same connection settings (sqlite3 with embeddb's pragmas; psycopg2 in autocommit with an
explicit BEGIN), its own file (or table) with the same DDL and rows, the same transaction
boundaries (``BEGIN IMMEDIATE`` on SQLite), and inside the timer the same Python work: a new
UUIDv7, the current UTC time as text (psycopg2: the datetime), money as minor units, JSON dumped,
and for ``update(pk)`` the fetched row turned into Python values. Rounds of the two sides
alternate, so load from other jobs hits both; both sides' tables are checked equal in shape
(row counts) afterwards.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import peewee

import embeddb
from benchmarks.harness import (
    as_utc,
    as_uuid,
    paired,
    pg_models,
    pg_url,
    raw_sqlite,
    report,
    same_pragmas,
    same_schema,
    size,
)
from embeddb.ids import new_id
from embeddb.models import BaseModel, JSONField, MoneyField, SoftDeleteModel, VersionedModel
from embeddb.repository import Repository

ROWS = size(100_000, 10_000)
NUMBER = size(1000, 150)  # writes per round; rounds alternate between the sides
PG_NUMBER = size(400, 60)
_to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_COLUMNS = ('"id", "created_at", "updated_at", "name", "category", "status", "qty", "price", '
            '"metadata"')


def _fields() -> dict[str, Any]:
    return {"name": peewee.TextField(), "category": peewee.TextField(),
            "status": peewee.TextField(), "qty": peewee.IntegerField(),
            "price": MoneyField(decimal_places=2), "metadata": JSONField()}


def _model(base: type[BaseModel], table: str) -> type[BaseModel]:
    class Meta:
        table_name = table
        indexes = ((("category", "status"), False), (("name",), False))

    return type(f"Write_{table}", (base,), {**_fields(), "Meta": Meta, "__module__": __name__})


Item = _model(BaseModel, "item")
SoftItem = _model(SoftDeleteModel, "soft_item")
VersionedItem = _model(VersionedModel, "versioned_item")
MODELS = [Item, SoftItem, VersionedItem]


def _seed(n: int) -> list[dict[str, Any]]:
    return [{"id": new_id(), "name": f"svc-{i}", "category": f"cat-{i % 20}",
             "status": "active", "qty": i, "price": Decimal(i) / 100,
             "metadata": {"i": i, "tags": ["a", "b"]}} for i in range(n)]


class Raw:
    """An app's single-row writes with the bare driver (``param``: ``?`` or ``%s``)."""

    def __init__(self, conn: Any, param: str, prefix: str, stamp: Callable[[datetime], Any]):
        self.conn = conn
        self.cur = conn.cursor()
        self.p = param
        self.prefix = prefix
        self.stamp = stamp  # datetime -> what the driver is given

    def tx(self, statements: list[tuple[str, tuple]]) -> Any:
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE" if self.p == "?" else "BEGIN")
        try:
            for sql, params in statements:
                cur.execute(sql, params)
            changed = cur.rowcount
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return changed

    def create(self, table: str, i: int) -> uuid.UUID:
        id_ = new_id()
        now = self.stamp(datetime.now(UTC))
        p = self.p
        self.tx([(f'INSERT INTO "{self.prefix}{table}" ("id", "created_at", "updated_at", '
                  f'"name", "category", "status", "qty", "price", "metadata") '
                  f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                  (id_.hex, now, now, f"new-{i}", "cat-1", "active", i,
                   int(Decimal("12.50").scaleb(2)), _to_json({"i": i, "tags": ["a"]})))])
        return id_

    def update(self, table: str, pk: Any, n: int) -> None:
        p = self.p
        self.tx([(f'UPDATE "{self.prefix}{table}" SET "price" = {p}, "status" = {p}, '
                  f'"updated_at" = {p} WHERE "id" = {p}',
                  (int(Decimal(n).scaleb(2)), "active", self.stamp(datetime.now(UTC)),
                   pk.hex))])

    def update_versioned(self, table: str, pk: Any, version: int, n: int) -> int:
        p = self.p
        changed = self.tx([(
            f'UPDATE "{self.prefix}{table}" SET "price" = {p}, "status" = {p}, '
            f'"updated_at" = {p}, "version" = "version" + 1 WHERE "id" = {p} AND "version" = {p}',
            (int(Decimal(n).scaleb(2)), "active", self.stamp(datetime.now(UTC)), pk.hex,
             version))])
        if changed != 1:
            raise RuntimeError("conflict")
        return version + 1

    def update_by_pk(self, table: str, pk: Any, n: int) -> tuple:
        """SELECT the row, UPDATE it, return it as Python values (what update(pk) returns)."""
        p, cur = self.p, self.cur
        cur.execute("BEGIN IMMEDIATE" if p == "?" else "BEGIN")
        cur.execute(f'SELECT "id", "created_at", "updated_at", "name", "category", "status", '
                    f'"qty", "price", "metadata" FROM "{self.prefix}{table}" WHERE "id" = {p}',
                    (pk.hex,))
        id_, created, _, name, category, _, qty, _, metadata = cur.fetchone()
        now = datetime.now(UTC)
        price = Decimal(n)
        cur.execute(f'UPDATE "{self.prefix}{table}" SET "price" = {p}, "status" = {p}, '
                    f'"updated_at" = {p} WHERE "id" = {p}',
                    (int(price.scaleb(2)), "active", self.stamp(now), pk.hex))
        cur.execute("COMMIT")
        return (as_uuid(id_), as_utc(created), now, name, category, "active", qty, price,
                json.loads(metadata) if isinstance(metadata, str) else metadata)

    def update_where(self, table: str, name: str, n: int) -> None:
        p = self.p
        self.tx([(f'UPDATE "{self.prefix}{table}" SET "qty" = {p}, "updated_at" = {p} '
                  f'WHERE "name" = {p}', (n, self.stamp(datetime.now(UTC)), name))])

    def delete(self, table: str, pk: Any) -> bool:
        return self.tx([(f'DELETE FROM "{self.prefix}{table}" WHERE "id" = {self.p}',
                         (pk.hex,))]) == 1

    def soft_delete(self, table: str, pk: Any) -> bool:
        now = self.stamp(datetime.now(UTC))
        p = self.p
        return self.tx([(f'UPDATE "{self.prefix}{table}" SET "deleted_at" = {p}, '
                         f'"updated_at" = {p} WHERE "id" = {p} AND "deleted_at" IS NULL',
                         (now, now, pk.hex))]) == 1

    def _one(self, sql: str, params: tuple) -> tuple:
        """One statement returning one row, in a transaction of its own."""
        cur = self.cur
        cur.execute("BEGIN IMMEDIATE" if self.p == "?" else "BEGIN")
        try:
            cur.execute(sql, params)
            row = cur.fetchone()
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return row

    @staticmethod
    def _python(row: tuple) -> tuple:
        id_, created, updated, name, category, status, qty, price, metadata = row[:9]
        return (as_uuid(id_), as_utc(created), as_utc(updated), name, category, status, qty,
                Decimal(price).scaleb(-2),
                json.loads(metadata) if isinstance(metadata, str) else metadata)

    def restore(self, table: str, pk: Any) -> tuple:
        """UPDATE a soft-deleted row back, RETURNING it as Python values."""
        p = self.p
        row = self._one(f'UPDATE "{self.prefix}{table}" SET "deleted_at" = NULL, '
                        f'"updated_at" = {p} WHERE "id" = {p} AND "deleted_at" IS NOT NULL '
                        f'RETURNING {_COLUMNS}, "deleted_at"',
                        (self.stamp(datetime.now(UTC)), pk.hex))
        return self._python(row)

    def upsert(self, table: str, pk: Any, n: int) -> tuple:
        """INSERT ... ON CONFLICT ("id") DO UPDATE of the changed fields, RETURNING the row."""
        p = self.p
        now = self.stamp(datetime.now(UTC))
        t = f'"{self.prefix}{table}"'
        differ = "IS NOT" if p == "?" else "IS DISTINCT FROM"
        fields = ("name", "category", "status", "qty", "price", "metadata")
        sets = ", ".join(f'"{c}" = excluded."{c}"' for c in (*fields, "updated_at"))
        changed = " OR ".join(f'{t}."{c}" {differ} excluded."{c}"' for c in fields)
        marks = ", ".join([p] * 9)
        row = self._one(
            f"INSERT INTO {t} ({_COLUMNS}) VALUES ({marks}) ON CONFLICT (\"id\") DO UPDATE "
            f"SET {sets} WHERE {changed} RETURNING {_COLUMNS}",
            (pk.hex, now, now, "svc-upsert", "cat-1", "active", n,
             int(Decimal("12.50").scaleb(2)), _to_json({"i": n, "tags": ["a"]})))
        return self._python(row)



def _bench(db: Any, raw: Raw, seeds: dict[type, list[dict[str, Any]]], label: str,
           number: int) -> None:
    repos = {m: Repository(m, db) for m in MODELS}
    item, soft, versioned = repos[Item], repos[SoftItem], repos[VersionedItem]
    counter = iter(range(10**9))

    def one(name: str, ours: Callable[[], Any], theirs: Callable[[], Any], **extra: Any) -> None:
        t_ours, t_raw = paired(ours, theirs, number)
        report(f"{label}.writes.{name}", "us/op", t_ours * 1e6, t_raw * 1e6, **extra)

    one("create", lambda: item.create(name=f"new-{next(counter)}", category="cat-1",
                                      status="active", qty=1, price=Decimal("12.50"),
                                      metadata={"i": 1, "tags": ["a"]}),
        lambda: raw.create("item", next(counter)))

    ids = [r["id"] for r in seeds[Item]]
    objs = item.get_many(ids[:number])
    spot = iter(range(10**9))

    def ours_update() -> None:
        n = next(spot)
        item.update(objs[n % len(objs)], price=Decimal(n), status="active")

    one("update_obj", ours_update,
        lambda: raw.update("item", ids[next(spot) % len(objs)], next(counter)))

    one("update_pk", lambda: item.update(ids[next(spot) % ROWS], price=Decimal(next(counter)),
                                         status="active"),
        lambda: raw.update_by_pk("item", ids[next(spot) % ROWS], next(counter)))

    names = [r["name"] for r in seeds[Item]]
    one("update_where", lambda: item.update_where({"qty": next(counter)},
                                                  name=names[next(spot) % ROWS]),
        lambda: raw.update_where("item", names[next(spot) % ROWS], next(counter)))

    vobjs = versioned.get_many([r["id"] for r in seeds[VersionedItem]][:number])
    raw_versions = {o.id: o.version for o in vobjs}

    def ours_versioned() -> None:
        n = next(spot) % len(vobjs)
        vobjs[n] = versioned.update(vobjs[n], price=Decimal(next(counter)), status="active")

    def raw_versioned() -> None:
        pk = vobjs[next(spot) % len(vobjs)].id
        raw_versions[pk] = raw.update_versioned("versioned_item", pk, raw_versions[pk],
                                                next(counter))

    one("update_versioned_obj", ours_versioned, raw_versioned)

    # Deletes take distinct rows from the far end of the seed, so both sides delete real rows.
    doomed = iter(reversed(ids))
    raw_doomed = iter(reversed(ids))
    one("delete", lambda: item.delete(next(doomed)) or _missing(),
        lambda: raw.delete("item", next(raw_doomed)) or _missing())
    soft_ids = [r["id"] for r in seeds[SoftItem]]
    doomed, raw_doomed = iter(soft_ids), iter(soft_ids)
    one("soft_delete", lambda: soft.delete(next(doomed)) or _missing(),
        lambda: raw.soft_delete("soft_item", next(raw_doomed)) or _missing())
    back, raw_back = iter(soft_ids), iter(soft_ids)  # the rows soft_delete just deleted
    one("restore", lambda: soft.restore(next(back)),
        lambda: raw.restore("soft_item", next(raw_back)))

    # Upserts of existing rows (the conflict path: UPDATE of what changed, row returned).
    def ours_upsert() -> None:
        n = next(counter)
        item.upsert({"id": ids[next(spot) % ROWS], "name": "svc-upsert", "category": "cat-1",
                     "status": "active", "qty": n, "price": Decimal("12.50"),
                     "metadata": {"i": n, "tags": ["a"]}}, ["id"])

    one("upsert", ours_upsert, lambda: raw.upsert("item", ids[next(spot) % ROWS],
                                                  next(counter)))


def _missing() -> None:
    raise AssertionError("a delete found no row")


def _load(db: Any, seeds: dict[type, list[dict[str, Any]]]) -> None:
    for model, rows in seeds.items():
        Repository(model, db).bulk_create(rows)


def _check(db: Any, count: Callable[[str], int], prefix: str) -> None:
    for model in MODELS:
        table = model._meta.table_name
        ours = db.execute_sql(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        assert ours == count(prefix + table), (table, ours, count(prefix + table))


def bench_sqlite(seeds: dict[type, list[dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'embeddb.db'}")
        db.bind(MODELS)
        db.create_tables(MODELS)
        _load(db, seeds)
        conn = raw_sqlite(Path(tmp) / "raw.db")
        same_pragmas(db, conn)
        for model in MODELS:
            same_schema(db, conn, model._meta.table_name)
        conn.execute("ATTACH DATABASE ? AS seeded", (str(Path(tmp) / "embeddb.db"),))
        for model in MODELS:
            table = model._meta.table_name
            conn.execute(f'INSERT INTO main."{table}" SELECT * FROM seeded."{table}"')
        conn.execute("DETACH DATABASE seeded")
        db.connect(reuse_if_open=True)
        _bench(db, Raw(conn, "?", "", lambda d: d.isoformat(" ", "microseconds")),
               seeds, "sqlite", NUMBER)
        _check(db, lambda t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0], "")
        conn.close()
        db.close()


def bench_postgres(url: str, seeds: dict[type, list[dict[str, Any]]]) -> None:
    with pg_models(url, MODELS) as (db, conn):
        _load(db, seeds)
        cur = conn.cursor()
        for model in MODELS:
            table = model._meta.table_name
            cur.execute(f'CREATE TABLE "raw_{table}" (LIKE "{table}" INCLUDING ALL)')
            cur.execute(f'INSERT INTO "raw_{table}" SELECT * FROM "{table}"')
            cur.execute(f'ANALYZE "raw_{table}"; ANALYZE "{table}"')

        def count(table: str) -> int:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            return cur.fetchone()[0]

        _bench(db, Raw(conn, "%s", "raw_", lambda d: d), seeds, "postgresql", PG_NUMBER)
        _check(db, count, "raw_")


def main() -> None:
    seeds = {model: _seed(ROWS) for model in MODELS}
    bench_sqlite(seeds)
    url = pg_url()
    if url:
        bench_postgres(url, seeds)


if __name__ == "__main__":
    main()
