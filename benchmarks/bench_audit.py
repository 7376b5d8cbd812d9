"""A single-row update in its own transaction on an audited table vs the same on an unaudited
one, through embeddb on both sides (the "raw" column is the unaudited update): the price of
auditing is the trigger plus handing the actor to the transaction. Target: at most 2x.

Two shapes: the update an app makes (``Repository.update`` on a versioned, services-shaped
table with a UUIDv7 key, timestamps and two indexes), and the worst case for the ratio (one
bare UPDATE statement on a four-column table with no index, where the audit row's pages are
most of the commit's work)."""

from __future__ import annotations

import os
import tempfile

import peewee

import embeddb
from embeddb import audit
from embeddb.models import JSONField, MoneyField, UTCDateTimeField, VersionedModel
from embeddb.repository import Repository

from .harness import paired, pg_scratch_schema, pg_url, report, size

ROWS = 1000
#: (calls per round, rounds): the two sides take turns, so a burst of load from other jobs
#: on a shared machine hits both alike
ROUNDS = (size(200, 50), size(15, 4))
DDL = "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL, " \
      "password_hash TEXT)"


def measure(db, label: str) -> None:
    for table in ("plain", "audited"):
        db.execute_sql(DDL.format(t=table))
        with db.atomic():
            for i in range(ROWS):
                db.execute_sql(f"INSERT INTO {table} VALUES ({i}, 'svc {i}', 1, 'x')")
    for statement in audit.enable_sql(db, "audited", exclude=["password_hash"])[
            audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    mark = db.param
    counter = iter(range(10**9))

    def update(table: str) -> None:
        with db.atomic():
            db.execute_sql(f"UPDATE {table} SET price = price + 1 WHERE id = {mark}",
                           (next(counter) % ROWS,))

    def audited() -> None:
        with audit.context(actor="bench", request_id="r"):
            update("audited")

    audited_s, plain_s = paired(audited, lambda: update("plain"), *ROUNDS)
    logged = db.execute_sql("SELECT count(*) FROM embeddb_audit").fetchone()[0]
    number = ROUNDS[0] * ROUNDS[1]
    assert logged >= number, logged  # every audited update was recorded
    report(f"update one row, audited vs unaudited ({label})", "us", audited_s * 1e6,
           plain_s * 1e6)


def _listing(table: str) -> type[VersionedModel]:
    class Meta:
        table_name = table
        indexes = ((("category", "status"), False), (("name",), False))

    return type(f"Listing_{table}", (VersionedModel,), {
        "name": peewee.TextField(), "category": peewee.TextField(), "status": peewee.TextField(),
        "price": MoneyField(decimal_places=6), "metadata": JSONField(default=dict),
        "seen_at": UTCDateTimeField(null=True), "Meta": Meta, "__module__": __name__})


def measure_repository(db, label: str) -> None:
    models = [_listing("listing_plain"), _listing("listing_audited")]
    db.bind(models)
    db.create_tables(models)
    rows = {}
    for model in models:
        repo = Repository(model, db)
        repo.bulk_create([{"name": f"svc {i}", "category": f"c{i % 10}", "status": "active",
                           "price": i, "metadata": {"i": i}} for i in range(ROWS)])
        rows[model] = list(model.select())
    for statement in audit.enable_sql(db, "listing_audited")[audit._driver(db).DRIVER]:
        db.execute_sql(statement)
    counter = iter(range(10**9))

    def update(model) -> None:
        n = next(counter)
        objs = rows[model]
        objs[n % ROWS] = Repository(model, db).update(objs[n % ROWS], price=n, status="active")

    def audited() -> None:
        with audit.context(actor="bench", request_id="r"):
            update(models[1])

    audited_s, plain_s = paired(audited, lambda: update(models[0]), *ROUNDS)
    number = ROUNDS[0] * ROUNDS[1]
    logged = db.execute_sql("SELECT count(*) FROM embeddb_audit WHERE table_name = "
                            "'listing_audited' AND actor = 'bench'").fetchone()[0]
    assert logged >= number, logged  # every audited update was recorded and signed
    report(f"repository update, audited vs unaudited ({label})", "us", audited_s * 1e6,
           plain_s * 1e6)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{os.path.join(tmp, 'bench.db')}")
        measure(db, "sqlite file")
        measure_repository(db, "sqlite file")
        db.close()
    url = pg_url()
    if url is not None:
        scratch, drop = pg_scratch_schema(url)
        db = embeddb.connect(scratch)
        try:
            measure(db, "postgresql")
            measure_repository(db, "postgresql")
        finally:
            db.close_all()
            drop()


if __name__ == "__main__":
    main()
