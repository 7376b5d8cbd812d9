"""What every benchmark module uses: timing, the PostgreSQL URL, and the result line.

A benchmark module is ``benchmarks/bench_<topic>.py`` with ``main()``; it prints one JSON line
per result through :func:`report`. ``python -m benchmarks`` runs each module in its own process
(so peak RSS is per module) and prints a table of all results at the end.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

QUICK = os.environ.get("EMBEDDB_BENCH_QUICK") == "1"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def size(full: int, quick: int) -> int:
    """``full`` normally, ``quick`` under --quick."""
    return quick if QUICK else full


def per_op(fn: Callable[[], Any], number: int, repeat: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeat`` rounds of ``number`` calls."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - start) / number)
    return statistics.median(rounds)


def paired(ours: Callable[[], Any], theirs: Callable[[], Any], number: int,
           repeat: int = 5) -> tuple[float, float]:
    """Median seconds per call of each of two functions, rounds of ``number`` calls taking
    turns, so a burst of load from other jobs hits both sides alike."""
    rounds: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, times in ((ours, rounds[0]), (theirs, rounds[1])):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times.append((time.perf_counter() - start) / number)
    return statistics.median(rounds[0]), statistics.median(rounds[1])


def once(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Median seconds of one call of ``fn`` (for bulk operations), over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of a list of durations."""
    ordered = sorted(samples)
    return {
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def report(name: str, unit: str, embeddb: float, raw: float, **extra: Any) -> dict[str, Any]:
    """Print one result line: ``{"name", "unit", "embeddb", "raw", "ratio", ...}``.

    ``ratio`` is embeddb / raw: below 1 means embeddb is faster for time units; for rate units
    (rows/s) above 1 means faster.
    """
    result = {
        "name": name,
        "unit": unit,
        "embeddb": _round(embeddb),
        "raw": _round(raw),
        "ratio": round(embeddb / raw, 3) if raw else None,
        "peak_rss_mb": peak_rss_mb(),
        **{k: _round(v) for k, v in extra.items()},
    }
    print(json.dumps(result), flush=True)
    return result


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


#: The PRAGMAs embeddb sets on every connection to a SQLite file (its default settings). Raw
#: sqlite3 sides open their connections through :func:`raw_sqlite`, so a comparison measures
#: the engine's work, not a different page cache, mmap or fsync policy.
SQLITE_PRAGMAS = (
    ("journal_mode", "WAL"), ("synchronous", "NORMAL"), ("foreign_keys", "ON"),
    ("cache_size", -64 * 1024), ("mmap_size", 256 * 1024 * 1024), ("temp_store", "MEMORY"),
    ("journal_size_limit", 64 * 1024 * 1024),
)
_COMPARED_PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "cache_size", "mmap_size",
                     "temp_store", "journal_size_limit")


def raw_sqlite(path: Any) -> sqlite3.Connection:
    """A bare sqlite3 connection to ``path`` tuned like embeddb's: autocommit (explicit BEGIN,
    as peewee does), the same busy timeout and :data:`SQLITE_PRAGMAS`."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    for name, value in SQLITE_PRAGMAS:
        conn.execute(f"PRAGMA {name}={value}").fetchall()
    return conn


def same_pragmas(db: Any, raw: sqlite3.Connection) -> None:
    """Fail unless the embeddb database ``db`` and the raw connection run with equal PRAGMAs."""
    ours = {n: db.execute_sql(f"PRAGMA {n}").fetchone()[0] for n in _COMPARED_PRAGMAS}
    theirs = {n: raw.execute(f"PRAGMA {n}").fetchone()[0] for n in _COMPARED_PRAGMAS}
    assert ours == theirs, f"pragmas differ: embeddb {ours}, raw {theirs}"


def same_schema(db: Any, raw: sqlite3.Connection, table: str) -> None:
    """Create ``table`` on the raw connection with embeddb's exact DDL (types, primary key and
    indexes), so both sides maintain the same b-trees."""
    for (sql,) in db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY type = 'index'", (table,)).fetchall():
        raw.execute(sql)


def as_uuid(value: Any) -> uuid.UUID:
    """What a raw side does with an id column: sqlite3 gives hex text; psycopg2 gives a UUID
    once ``register_uuid()`` ran (peewee runs it at import), else text."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def as_utc(value: Any) -> datetime | None:
    """What a raw side does with a timestamp column: sqlite3 gives ISO-8601 text, psycopg2 an
    aware datetime in the session's time zone; both become an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return value.astimezone(UTC)


def pg_url() -> str | None:
    """The PostgreSQL URL to benchmark against, or None (with a note) when none answers."""
    import psycopg2

    url = os.environ.get("EMBEDDB_BENCH_PG_URL") or os.environ.get(
        "EMBEDDB_TEST_PG_URL", DEFAULT_PG_URL
    )
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.Error as exc:
        print(f"# skipping PostgreSQL: {url} not reachable ({exc})".strip(), file=sys.stderr)
        return None
    return url


def pg_scratch_schema(url: str) -> tuple[str, Callable[[], None]]:
    """Create a scratch schema; return a URL using it and a function that drops it."""
    import uuid

    import psycopg2

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        admin.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()

    sep = "&" if "?" in url else "?"
    return f"{url}{sep}schema={schema}", drop


@contextmanager
def pg_models(url: str, models: list[Any]) -> Iterator[tuple[Any, Any]]:
    """An embeddb database on a scratch schema with ``models``' tables, and a raw psycopg2
    connection to the same schema; everything is dropped afterwards."""
    import psycopg2

    import embeddb

    scratch, drop = pg_scratch_schema(url)
    schema = scratch.rsplit("schema=", 1)[1]
    db = raw = None
    try:
        db = embeddb.connect(scratch)
        db.bind(models)
        db.create_tables(models)
        raw = psycopg2.connect(url, options=f"-c search_path={schema}")
        raw.autocommit = True  # as peewee's connections: each statement commits unless BEGIN
        db.connect(reuse_if_open=True)
        yield db, raw
    finally:
        if raw is not None:
            raw.close()
        if db is not None:
            if not db.is_closed():
                db.close()
            db.close_all()
        drop()
