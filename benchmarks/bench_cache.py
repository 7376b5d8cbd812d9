"""Cache hits vs a raw sqlite3 primary-key lookup on the same file, in the same run.

Targets (issue 5): L1 hit <= 0.25x raw, L2 hit <= 2x raw, cached row get (L1 hit) >= 4x faster
than an uncached one (here: peewee's ``get_by_id``; the repository get once it exists).

The raw side is what an app without the cache does to get the same value: a sqlite3
connection with embeddb's pragmas (page cache, mmap) reads the row by primary key and turns it
into the same dict the cache returns (UUID id, aware UTC datetimes); the two are checked equal.
``raw_fetch_only_us`` is that lookup without the conversion, for reference.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee

import embeddb
from benchmarks.harness import (
    as_utc,
    as_uuid,
    per_op,
    percentiles,
    raw_sqlite,
    report,
    same_pragmas,
    size,
)
from embeddb.cache import Cache, CacheInvalidation
from embeddb.ids import new_id
from embeddb.models import BaseModel

ROWS = size(100_000, 10_000)
KEYS = size(2_000, 500)
LOOKUPS = size(20_000, 3_000)


class Thing(CacheInvalidation, BaseModel):
    name = peewee.TextField()
    qty = peewee.IntegerField()


def _fill(db: Any) -> list:
    db.bind([Thing])
    db.create_tables([Thing])
    ids = [new_id() for _ in range(ROWS)]
    now = "2024-01-01 00:00:00.000000+00:00"
    with db.atomic():
        db.connection().executemany(
            "INSERT INTO thing (id, created_at, updated_at, name, qty) VALUES (?, ?, ?, ?, ?)",
            [(i.hex, now, now, f"thing-{n}", n) for n, i in enumerate(ids)],
        )
    return ids


def _samples(fn: Callable[[Any], Any], args: list) -> dict[str, float]:
    """p50/p99 in µs of single calls (each timed on its own, so they include ~0.05 µs of timer)."""
    clock = time.perf_counter_ns
    times = []
    for arg in args:
        start = clock()
        fn(arg)
        times.append((clock() - start) / 1000)
    return percentiles(times)


def _per_call(fn: Callable[[Any], Any], args: list) -> float:
    """Median µs per call over rounds cycling through ``args``."""
    it = iter(args * 50)
    return per_op(lambda: fn(next(it)), number=len(args), repeat=5) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.db"
        db = embeddb.connect(f"sqlite:///{path}")
        ids = _fill(db)
        keys = random.Random(1).sample(ids, KEYS)
        lookups = [random.Random(2).choice(keys) for _ in range(LOOKUPS)]

        raw = raw_sqlite(path)
        same_pragmas(db, raw)
        sql = "SELECT id, created_at, updated_at, name, qty FROM thing WHERE id = ?"

        def raw_get(key: Any) -> tuple[Any, ...]:
            """The row as Python values, in the shape the cache keeps it (a tuple in field order)."""
            id_, created, updated, name, qty = raw.execute(sql, (key.hex,)).fetchone()
            return (as_uuid(id_), as_utc(created), as_utc(updated), name, qty)

        def raw_fetch(key: Any) -> Any:
            return raw.execute(sql, (key.hex,)).fetchone()

        cache = Cache.for_database(db, directory=Path(tmp) / "cache-dir")
        for k in keys:
            cache.get_row(Thing, k)
        l2_only = Cache(Path(tmp) / "cache-dir", l1_size=0)
        full_keys = [f"thing:{k.hex}" for k in lookups]

        def l1_get(key: str) -> Any:
            return cache.get(key)

        def l2_get(key: str) -> Any:
            return l2_only.get(key)

        assert l1_get(full_keys[0]) == raw_get(lookups[0]) == l2_get(full_keys[0])

        raw_us = _per_call(raw_get, lookups)
        fetch_us = _per_call(raw_fetch, lookups)
        l1_us = _per_call(l1_get, full_keys)
        l2_us = _per_call(l2_get, full_keys)
        row_us = _per_call(lambda k: cache.get_row(Thing, k), lookups)
        orm_us = _per_call(lambda k: Thing.get_by_id(k), lookups[: LOOKUPS // 10])
        raw_p = {**_samples(raw_get, lookups), "fetch_only": fetch_us}
        report(
            "cache L1 hit vs sqlite3 pk lookup", "us/op", l1_us, raw_us,
            target="<=0.25", **_prefixed("l1", _samples(l1_get, full_keys)),
            **_prefixed("raw", raw_p),
        )
        report(
            "cache L2 hit vs sqlite3 pk lookup", "us/op", l2_us, raw_us,
            target="<=2", **_prefixed("l2", _samples(l2_get, full_keys)),
            **_prefixed("raw", raw_p),
        )
        report(
            "cached get_row (L1) vs peewee get_by_id", "us/op", row_us, orm_us,
            target="<=0.25", **_prefixed("row", _samples(lambda k: cache.get_row(Thing, k),
                                                         lookups)),
        )
        l2_only.close()
        cache.close()
        raw.close()
        db.close()


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}_us": round(v, 3) for k, v in values.items()}


if __name__ == "__main__":
    main()
