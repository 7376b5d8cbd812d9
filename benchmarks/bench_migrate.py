"""Applying N small migrations with embeddb.migrate.up vs the same SQL run directly by the driver.

The raw side reads each file and runs its statements in one transaction per file (what a
minimal hand-written runner does, without bookkeeping, checksums, lock or validation), on a
connection with the same pragmas embeddb sets (``BEGIN IMMEDIATE`` on SQLite, as embeddb). On
both sides the connection is opened (and the new file switched to WAL) before the timer starts;
the timer covers reading the files and running them. Both end with the same tables, checked.
Target: ratio (embeddb / raw) <= 1.5.

Both SQLite sides end with ``PRAGMA wal_checkpoint(TRUNCATE)``: the bookkeeping rows add one
page per commit to the WAL, which pushes embeddb's run past the 1,000-page auto-checkpoint
while the raw run stays just under it; without the final checkpoint the comparison measures
that threshold (one fsync) rather than the runner. ``no_final_checkpoint`` reports it anyway.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg2

import embeddb
from benchmarks.harness import pg_scratch_schema, pg_url, raw_sqlite, report, same_pragmas, size
from embeddb import migrate

COUNT = size(200, 50)
ROUNDS = size(5, 3)


def write_folder(folder: Path, count: int) -> None:
    for i in range(1, count + 1):
        (folder / f"{i:04d}_table_{i}.up.sql").write_text(
            f"CREATE TABLE t_{i} (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
            f"CREATE INDEX t_{i}_name ON t_{i} (name);\n"
            f"INSERT INTO t_{i} (id, name) VALUES (1, 'row; {i}');\n"
        )
        (folder / f"{i:04d}_table_{i}.down.sql").write_text(f"DROP TABLE t_{i};\n")


def raw_files(folder: Path) -> list[list[str]]:
    scripts = []
    for path in sorted(folder.glob("*.up.sql")):
        text = path.read_text()
        scripts.append([s.strip() + ";" for s in text.split(";\n") if s.strip()])
    return scripts


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def _tables(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 't\\_%' ESCAPE '\\' ORDER BY name")]


def run_ours(path: Path, folder: Path, checkpoint: bool) -> float:
    db = embeddb.connect(f"sqlite:///{path}")
    db.connect()  # opens the file and switches it to WAL, outside the timer as on the raw side
    start = time.perf_counter()
    result = migrate.up(db, folder, backup=False)
    if checkpoint:
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    elapsed = time.perf_counter() - start
    assert len(result.steps) == COUNT
    db.close()
    return elapsed


def run_raw(path: Path, folder: Path, checkpoint: bool) -> float:
    conn = raw_sqlite(path)
    start = time.perf_counter()
    for statements in raw_files(folder):
        conn.execute("BEGIN IMMEDIATE")
        for sql in statements:
            conn.execute(sql)
        conn.execute("COMMIT")
    if checkpoint:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def _check_equal(ours: Path, raw: Path) -> None:
    """Both runs made the same tables, with embeddb's pragmas on both connections."""
    db = embeddb.connect(f"sqlite:///{ours}")
    conn = raw_sqlite(raw)
    same_pragmas(db, conn)
    assert _tables(db.connection()) == _tables(conn) and len(_tables(conn)) == COUNT * 2
    conn.close()
    db.close()


def bench_sqlite(folder: Path, work: Path) -> None:
    ours, raw, backup, ours_plain, raw_plain = [], [], [], [], []
    for round_ in range(ROUNDS):
        ours.append(run_ours(work / f"ours{round_}.db", folder, checkpoint=True))
        raw.append(run_raw(work / f"raw{round_}.db", folder, checkpoint=True))
        ours_plain.append(run_ours(work / f"ours_plain{round_}.db", folder, checkpoint=False))
        raw_plain.append(run_raw(work / f"raw_plain{round_}.db", folder, checkpoint=False))
        _check_equal(work / f"ours{round_}.db", work / f"raw{round_}.db")

        path = work / f"backup{round_}.db"
        db = embeddb.connect(f"sqlite:///{path}")
        db.execute_sql("CREATE TABLE app_data (x INTEGER)")  # a new database is not backed up
        db.execute_sql("INSERT INTO app_data VALUES (1)")  # (connected before the timer)
        start = time.perf_counter()
        result = migrate.up(db, folder)
        backup.append(time.perf_counter() - start)
        assert result.backup is not None
        db.close()
    report(f"migrate up {COUNT} migrations (sqlite file)", "ms",
           embeddb=median(ours) * 1000, raw=median(raw) * 1000,
           with_safety_backup_ms=median(backup) * 1000,
           no_final_checkpoint_embeddb_ms=median(ours_plain) * 1000,
           no_final_checkpoint_raw_ms=median(raw_plain) * 1000)


def bench_postgres(folder: Path, url: str) -> None:
    ours, raw = [], []
    for _ in range(ROUNDS):
        scratch, drop = pg_scratch_schema(url)
        db = embeddb.connect(scratch)
        db.connect()  # connected before the timer, as the raw side
        start = time.perf_counter()
        migrate.up(db, folder, backup=False)  # an empty schema is not backed up anyway
        ours.append(time.perf_counter() - start)
        ours_tables = _pg_tables(db.connection(), scratch.rsplit("schema=", 1)[1])
        db.close_all()
        drop()

        scratch, drop = pg_scratch_schema(url)
        schema = scratch.rsplit("schema=", 1)[1]
        conn = psycopg2.connect(url.split("?")[0], options=f"-c search_path={schema}")
        start = time.perf_counter()
        with conn.cursor() as cur:
            for statements in raw_files(folder):
                for sql in statements:
                    cur.execute(sql)
                conn.commit()
        raw.append(time.perf_counter() - start)
        assert _pg_tables(conn, schema) == ours_tables and len(ours_tables) == COUNT
        conn.close()
        drop()
    report(f"migrate up {COUNT} migrations (postgresql)", "ms",
           embeddb=median(ours) * 1000, raw=median(raw) * 1000)


def _pg_tables(conn, schema: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename "
                    "LIKE 't\\_%%' ORDER BY tablename", (schema,))
        return [r[0] for r in cur.fetchall()]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_migrate_"))
    try:
        folder = work / "migrations"
        folder.mkdir()
        write_folder(folder, COUNT)
        bench_sqlite(folder, work)
        url = pg_url()
        if url:
            bench_postgres(folder, url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
