"""A single-row UPDATE in its own transaction on an audited table vs the same on an unaudited
one, through embeddb on both sides (the "raw" column is the unaudited update): the price of
auditing is the trigger plus handing the actor to the transaction. Target: at most 2x."""

from __future__ import annotations

import os
import tempfile

import embeddb
from embeddb import audit

from .harness import per_op, pg_scratch_schema, pg_url, report, size

ROWS = 1000
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

    number = size(2000, 200)
    plain_s = per_op(lambda: update("plain"), number)
    audited_s = per_op(audited, number)
    logged = db.execute_sql("SELECT count(*) FROM embeddb_audit").fetchone()[0]
    assert logged >= number, logged  # every audited update was recorded
    report(f"update one row, audited vs unaudited ({label})", "us", audited_s * 1e6,
           plain_s * 1e6)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{os.path.join(tmp, 'bench.db')}")
        measure(db, "sqlite file")
        db.close()
    url = pg_url()
    if url is not None:
        scratch, drop = pg_scratch_schema(url)
        db = embeddb.connect(scratch)
        try:
            measure(db, "postgresql")
        finally:
            db.close_all()
            drop()


if __name__ == "__main__":
    main()
