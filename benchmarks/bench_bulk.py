"""Bulk insert at 10k, 100k and 1M rows: ``Repository.bulk_create`` fed a generator vs the bare
driver doing the same work, with each side's peak RSS.

The table is shaped like an app's (UUIDv7 id, two timestamps, three text columns, an int,
money and JSON, two indexes) in a WAL file. Both sides: embeddb's pragmas, a fresh file with
the same DDL (indexes in place during the load), one ``BEGIN IMMEDIATE`` transaction, 2,000
rows per ``executemany``, rows pulled from a generator (memory must stay flat), and inside the
timer the same Python work per row: a new UUIDv7, the batch's UTC time as text, money as minor
units, JSON dumped. Every (side, size) runs in a fresh process, so peak RSS is that load's
alone; sides alternate. Wall-clock rows/s is the figure; CPU-time rows/s (less sensitive to
other jobs on a shared machine) is printed too. Quick: 10k and 50k rows;
``EMBEDDB_BENCH_BULK_SIZES=1000000,1000000`` picks sizes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import peewee

import embeddb
from benchmarks.harness import QUICK, raw_sqlite, report, same_pragmas
from embeddb.ids import new_id
from embeddb.models import BaseModel, JSONField, MoneyField, utcnow
from embeddb.repository import Repository

SIZES = tuple(int(n) for n in os.environ.get("EMBEDDB_BENCH_BULK_SIZES", "").split(",") if n) or (
    (10_000, 50_000) if QUICK else (10_000, 100_000, 1_000_000))
BATCH = 2000
_to_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Bulk(BaseModel):
    name = peewee.TextField()
    category = peewee.TextField()
    status = peewee.TextField()
    qty = peewee.IntegerField()
    price = MoneyField(decimal_places=2)
    metadata = JSONField()

    class Meta:
        table_name = "bulk"
        indexes = ((("category", "status"), False), (("name",), False))


def _rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"name": f"svc-{i}", "category": f"cat-{i % 20}", "status": "active", "qty": i,
               "price": Decimal(i) / 100, "metadata": {"i": i, "tags": ["a", "b"]}}


def _raw_batches(n: int) -> Iterator[list[tuple[Any, ...]]]:
    """What an app on the bare driver does with the same rows: convert them, a batch at a
    time (one timestamp per batch, as bulk_create), in the table's column order."""
    batch: list[tuple[Any, ...]] = []
    now = utcnow().isoformat(" ", "microseconds")
    for row in _rows(n):
        batch.append((new_id().hex, now, now, row["name"], row["category"], row["status"],
                      row["qty"], int(row["price"].scaleb(2)), _to_json(row["metadata"])))
        if len(batch) == BATCH:
            yield batch
            batch = []
            now = utcnow().isoformat(" ", "microseconds")
    if batch:
        yield batch


def _embeddb_load(path: str, n: int) -> tuple[float, float]:
    db = embeddb.connect(f"sqlite:///{path}")
    db.bind([Bulk])
    repo = Repository(Bulk, db)
    start, cpu = time.perf_counter(), time.process_time()
    assert repo.bulk_create(_rows(n), batch_size=BATCH) == n
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    db.close()
    return elapsed


def _raw_load(path: str, n: int) -> tuple[float, float]:
    conn = raw_sqlite(path)
    columns = [f.column_name for f in Bulk._meta.sorted_fields]
    sql = (f'INSERT INTO "bulk" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)}) '
           f'VALUES ({", ".join("?" * len(columns))})')
    start, cpu = time.perf_counter(), time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    for batch in _raw_batches(n):
        conn.executemany(sql, batch)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    conn.close()
    return elapsed


def _prepare(path: str) -> None:
    """The empty table, created by embeddb for both sides (the same DDL and indexes); the raw
    connection's pragmas are checked equal to embeddb's."""
    db = embeddb.connect(f"sqlite:///{path}")
    db.bind([Bulk])
    db.create_tables([Bulk])
    probe = raw_sqlite(path)
    same_pragmas(db, probe)
    probe.close()
    db.close()


def _child(kind: str, path: str, n: int, results: Any) -> None:
    seconds, cpu = (_embeddb_load if kind == "embeddb" else _raw_load)(path, n)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results.put({"seconds": seconds, "cpu": cpu, "rss": rss})


def _run(kind: str, n: int, tmp: str) -> dict[str, float]:
    path = os.path.join(tmp, f"{kind}-{n}.db")
    _prepare(path)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, path, n, results))
    proc.start()
    out = results.get(timeout=3600)
    proc.join()
    conn = sqlite3.connect(path)
    (count,) = conn.execute('SELECT count(*) FROM "bulk"').fetchone()
    assert count == n, (kind, n, count)
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(SIZES):
            order = ("raw", "embeddb") if i % 2 == 0 else ("embeddb", "raw")
            runs = {kind: _run(kind, n, tmp) for kind in order}
            ours, raw = runs["embeddb"], runs["raw"]
            report(f"sqlite.bulk_insert_{n}", "rows/s", n / ours["seconds"], n / raw["seconds"],
                   rows=n, peak_rss_mb=round(ours["rss"], 1),
                   raw_peak_rss_mb=round(raw["rss"], 1), cpu_rows_per_s=n / ours["cpu"],
                   raw_cpu_rows_per_s=n / raw["cpu"], cpu_ratio=raw["cpu"] / ours["cpu"])


if __name__ == "__main__":
    main()
