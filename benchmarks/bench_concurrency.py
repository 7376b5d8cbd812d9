"""Several processes with several threads each on one SQLite file: 90 % repository reads by id,
10 % versioned read-modify-write updates, for a fixed time. embeddb (Repository.get /
Repository.update, retrying a ConflictError) vs the bare driver doing the same work (the same
pragmas and busy timeout, BEGIN IMMEDIATE, a version-checked UPDATE, rows converted to the same
Python values). Prints transactions/s of both, and for embeddb the "database is locked" errors
(target: zero) and whether every committed increment is in the table (no lost update).

Full: 4 processes x 8 threads for 60 s (the write-path issue's test); --quick: 2 x 4 for 3 s.
EMBEDDB_BENCH_WRITE_SHARE=0.5 runs a write-heavy mix instead.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime

import peewee

import embeddb
from embeddb.errors import ConflictError
from embeddb.models import VersionedModel
from embeddb.repository import Repository

from .harness import raw_sqlite, report, same_pragmas, size

PROCESSES = size(4, 2)
THREADS = size(8, 4)
SECONDS = size(60, 3)
ROWS = 1000
#: share of versioned writes (default 10 %); EMBEDDB_BENCH_WRITE_SHARE=0.5 for a write-heavy mix
WRITE_SHARE = float(os.environ.get("EMBEDDB_BENCH_WRITE_SHARE", "0.10"))


class Counter(VersionedModel):
    name = peewee.TextField()
    hits = peewee.IntegerField(default=0)

    class Meta:
        table_name = "counters"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _embeddb_thread(db: embeddb.Database, ids: list[uuid.UUID], stop: float,
                    out: dict) -> None:
    """One thread of the app: the process's one database object, a connection per thread."""
    repo = Repository(Counter, db)
    rng = random.Random()
    done = writes = locked = errors = 0
    while time.monotonic() < stop:
        pk = rng.choice(ids)
        try:
            if rng.random() < WRITE_SHARE:
                while True:
                    row = repo.get(pk)
                    try:
                        repo.update(row, hits=row.hits + 1)
                        break
                    except ConflictError:
                        continue  # another writer got there first: read again
                writes += 1
            else:
                repo.get(pk)
            done += 1
        except Exception as exc:  # counted: the target is zero
            if "locked" in str(exc):
                locked += 1
            else:
                errors += 1
    db.close()  # this thread's connection
    out.update(done=done, writes=writes, locked=locked, errors=errors)


def _raw_thread(path: str, ids: list[uuid.UUID], stop: float, out: dict) -> None:
    conn = raw_sqlite(path)  # embeddb's pragmas and busy timeout (checked in main)
    select = ("SELECT id, created_at, updated_at, version, name, hits FROM counters "
              "WHERE id = ?")
    rng = random.Random()
    done = writes = locked = errors = 0

    def get(pk: uuid.UUID) -> dict:
        row = conn.execute(select, (pk.hex,)).fetchone()
        return {"id": uuid.UUID(row[0]), "created_at": datetime.fromisoformat(row[1]),
                "updated_at": datetime.fromisoformat(row[2]), "version": row[3],
                "name": row[4], "hits": row[5]}

    while time.monotonic() < stop:
        pk = rng.choice(ids)
        try:
            if rng.random() < WRITE_SHARE:
                while True:
                    row = get(pk)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        changed = conn.execute(
                            "UPDATE counters SET hits = ?, updated_at = ?, version = version + 1 "
                            "WHERE id = ? AND version = ?",
                            (row["hits"] + 1, _stamp(datetime.now(UTC)), pk.hex,
                             row["version"])).rowcount
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    if changed:
                        break
                writes += 1
            else:
                get(pk)
            done += 1
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                locked += 1
            else:
                errors += 1
    conn.close()
    out.update(done=done, writes=writes, locked=locked, errors=errors)


def _process(kind: str, target: str, ids: list[str], start_at: float, results) -> None:
    keys = [uuid.UUID(i) for i in ids]
    while time.time() < start_at:
        time.sleep(0.005)
    stop = time.monotonic() + SECONDS
    outs: list[dict] = [{} for _ in range(THREADS)]
    if kind == "embeddb":
        db = embeddb.connect(target)
        db.bind([Counter])
        run, shared = _embeddb_thread, db
    else:
        run, shared = _raw_thread, target
    threads = [threading.Thread(target=run, args=(shared, keys, stop, out)) for out in outs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({k: sum(o.get(k, 0) for o in outs) for k in ("done", "writes", "locked",
                                                                "errors")})


def _run(kind: str, path: str, ids: list[str]) -> dict:
    target = f"sqlite:///{path}" if kind == "embeddb" else path
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + 2.0  # every process imported and ready before the clock starts
    procs = [ctx.Process(target=_process, args=(kind, target, ids, start_at, results))
             for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    totals = [results.get(timeout=SECONDS + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return {k: sum(t[k] for t in totals) for k in totals[0]}


def _fresh(path: str) -> None:
    db = embeddb.connect(f"sqlite:///{path}")
    db.bind([Counter])
    db.create_tables([Counter])
    Repository(Counter, db).bulk_create([{"name": f"c{i}"} for i in range(ROWS)])
    db.close()


def _ids(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    ids = [r[0] for r in conn.execute("SELECT id FROM counters")]
    conn.close()
    return ids


def _hits(path: str) -> int:
    conn = sqlite3.connect(path)
    (total,) = conn.execute("SELECT sum(hits) FROM counters").fetchone()
    conn.close()
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        counts = {}
        for kind in ("raw", "embeddb"):
            path = os.path.join(tmp, f"{kind}.db")
            _fresh(path)
            db, conn = embeddb.connect(f"sqlite:///{path}"), raw_sqlite(path)
            same_pragmas(db, conn)
            conn.close()
            db.close()
            counts[kind] = _run(kind, path, _ids(path))
            counts[kind]["hits"] = _hits(path)
        ours, raw = counts["embeddb"], counts["raw"]
        writes = round(WRITE_SHARE * 100)
        report(f"sqlite.concurrency_{PROCESSES}x{THREADS}_{SECONDS}s_{100 - writes}r_{writes}w",
               "tx/s",
               ours["done"] / SECONDS, raw["done"] / SECONDS, locked_errors=ours["locked"],
               other_errors=ours["errors"], raw_locked_errors=raw["locked"],
               lost_updates=ours["writes"] - ours["hits"],
               raw_lost_updates=raw["writes"] - raw["hits"],
               write_tx_per_s=ours["writes"] / SECONDS)


if __name__ == "__main__":
    main()
