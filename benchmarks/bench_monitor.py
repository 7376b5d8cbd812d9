"""What the query monitor costs: the same repository reads with monitoring off and on.

- get by primary key    (target: on <= 1.10x off)
- listing 1,000 rows    (target: on <= 1.05x off)
- what the monitor adds to one statement, against a raw sqlite3 execute + fetchone of it

"raw" in each line is the same read with monitoring off, so the ratio is the monitor's cost.
Off and on alternate in several rounds on the same database (the best round of each counts),
so a noisy neighbour on the machine hits both sides alike.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import embeddb
from benchmarks.bench_repository import Listing, _rows
from benchmarks.harness import per_op, pg_models, pg_url, report, size
from embeddb.repository import Repository

ROWS = size(100_000, 10_000)
LOOKUPS = size(3_000, 1_000)
ROUNDS = 5


def _alternate(db, fn, number: int) -> tuple[float, float]:
    """Best seconds per call of ``fn`` with monitoring off, then on, over ROUNDS rounds."""
    off, on = [], []
    for _ in range(ROUNDS):
        db.monitor.disable()
        off.append(per_op(fn, number, repeat=3))
        db.monitor.enable()
        on.append(per_op(fn, number, repeat=3))
    db.monitor.disable()
    return min(off), min(on)


def _bench(db, label: str) -> None:
    repo = Repository(Listing, db)
    rows = _rows(ROWS)
    repo.bulk_create(rows)
    keys = [r["id"] for r in random.sample(rows, LOOKUPS)]
    it = iter(keys * 200)
    t_off, t_on = _alternate(db, lambda: repo.get(next(it)), LOOKUPS)
    report(f"{label}.monitor.get_by_id_on_vs_off", "us/op", t_on * 1e6, t_off * 1e6)
    assert db.monitor.stats()["totals"]["calls"] >= LOOKUPS  # the monitor really saw them

    t_off, t_on = _alternate(db, lambda: repo.find(category="cat-3", limit=1000), 10)
    report(f"{label}.monitor.list_1000_on_vs_off", "ms/op", t_on * 1e3, t_off * 1e3)


def bench_record() -> None:
    """The monitor's own work per statement (fingerprint lookup, counters, samples), alone."""
    import sqlite3

    db = embeddb.connect("sqlite:///:memory:", monitor=True)
    sql = 'SELECT "id", "name" FROM "listing" WHERE "id" = ?'
    t_record = per_op(lambda: db.monitor.record(sql, ("k",), 1e-5, 1), 20_000)
    raw = sqlite3.connect(":memory:")
    raw.execute('CREATE TABLE listing (id TEXT PRIMARY KEY, name TEXT)')
    t_raw = per_op(lambda: raw.execute(sql, ("k",)).fetchone(), 20_000)
    report("monitor.record_per_statement", "us/op", t_record * 1e6, t_raw * 1e6)


def bench_sqlite() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'monitor.db'}")
        db.bind([Listing])
        db.create_tables([Listing])
        _bench(db, "sqlite")
        db.close()


def bench_postgres(url: str) -> None:
    with pg_models(url, [Listing]) as (db, _raw):
        _bench(db, "postgresql")


def main() -> None:
    bench_record()
    bench_sqlite()
    url = pg_url()
    if url:
        bench_postgres(url)


if __name__ == "__main__":
    main()
