"""Seeding and per-test setup.

- ``embeddb seed dev`` into an empty SQLite file: rows/s, vs the bare driver doing the same
  work in the same run (generate, convert, the same upsert statement, embeddb's pragmas and
  index strategy, one transaction; target: >= 50k rows/s). The set generates its rows in a
  forked worker (``PARALLEL = True``), which the raw side does not: ``serial_rows_per_s`` is
  embeddb generating in-process like the raw side. embeddb's figure also holds its own checks
  (tables exist) and the row counts it returns.
- ``embeddb seed staging`` (~387k rows, ten times dev) into an empty SQLite file with default
  settings, in its own process: rows/s and that process's peak RSS, then a second run on top of
  the filled file (target: the dev set's rate, >= 40k rows/s; the re-run not 10x slower).
- Per-test database setup for the reference schema: a copy of the migrated template (what the
  pytest plugin does) vs running the migrations each time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import embeddb
import embeddb.migrate
import embeddb.seed
from benchmarks.harness import per_op, raw_sqlite, report, same_pragmas
from embeddb.reference.fixtures import marketplace
from embeddb.repository import Repository
from embeddb.testing import Template

ROOT = Path(__file__).parent.parent
MIGRATIONS = ROOT / "migrations"
SEEDS = ROOT / "seeds"


def bench_seed() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'seed.db'}")
        embeddb.migrate.up(db, MIGRATIONS, backup=False)
        # one transaction, like the raw side below; the default (short transactions that let
        # the app's writers in) is measured on its own as online_rows_per_s
        result = embeddb.seed.run(db, "dev", directory=SEEDS, atomic=True)
        ours = result.total / result.seconds
        again = embeddb.seed.run(db, "dev", directory=SEEDS, atomic=True)
        serial_db = embeddb.connect(f"sqlite:///{Path(tmp) / 'serial.db'}")
        embeddb.migrate.up(serial_db, MIGRATIONS, backup=False)
        serial = embeddb.seed.run(serial_db, "dev", directory=SEEDS, atomic=True, parallel=False)
        serial_db.close()
        online_db = embeddb.connect(f"sqlite:///{Path(tmp) / 'online.db'}")
        embeddb.migrate.up(online_db, MIGRATIONS, backup=False)
        online = embeddb.seed.run(online_db, "dev", directory=SEEDS)
        online_db.close()

        raw_path = Path(tmp) / "raw.db"
        template = embeddb.connect(f"sqlite:///{raw_path}")
        embeddb.migrate.up(template, MIGRATIONS, backup=False)
        template.close()
        raw_rate = result.total / _raw_seed(raw_path, db)
        raw_db = embeddb.connect(f"sqlite:///{raw_path}")
        assert embeddb.seed.count_rows(raw_db, result.counts) == result.counts  # the same load
        raw_db.close()
        report("sqlite.seed.dev_into_empty_db", "rows/s", ours, raw_rate, rows=result.total,
               serial_rows_per_s=serial.total / serial.seconds,
               rerun_rows_per_s=again.total / again.seconds,
               online_rows_per_s=online.total / online.seconds)


def _raw_seed(path: Path, db: embeddb.Database) -> float:
    """Seconds the bare driver takes for the same work as ``seed --atomic`` into empty tables:
    generate the rows, convert them (embeddb's conversion, which an app would have to write),
    and load each table with embeddb's pragmas, its statement (the same ON CONFLICT upsert by
    id, 1,000 rows an ``executemany``) and its strategy (plain indexes dropped, rows inserted,
    indexes built again), all in one transaction."""
    repos = {model: Repository(model, db) for model, _rows in marketplace(0)}
    raw = raw_sqlite(path)
    same_pragmas(db, raw)
    start = time.perf_counter()
    raw.execute("BEGIN IMMEDIATE")
    for model, rows in marketplace(embeddb.seed.DEFAULT_SEED):
        repo = repos[model]
        table = model._meta.table_name
        indexes = raw.execute(
            "SELECT m.name, m.sql FROM pragma_index_list(?) AS l JOIN sqlite_master AS m "
            "ON m.type = 'index' AND m.name = l.name WHERE l.origin = 'c' AND NOT l.\"unique\" "
            "AND m.sql IS NOT NULL", (table,)).fetchall()
        for name, _sql in indexes:
            raw.execute(f'DROP INDEX "{name}"')
        columns = repo._insert_columns
        insert = (f'INSERT INTO "{table}" ({", ".join(columns)}) '
                  f'VALUES ({", ".join("?" * len(columns))})')
        for batch in repo.upsert_batches(rows, ["id"], batch_size=embeddb.seed.BATCH_ROWS):
            raw.executemany(f"{insert} {batch.clause}", batch.rows)
        for _name, sql in indexes:
            raw.execute(sql)
    raw.execute("COMMIT")
    seconds = time.perf_counter() - start
    raw.close()
    return seconds


def bench_seed_staging() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'staging.db'}"
        embeddb.migrate.up(embeddb.connect(url), MIGRATIONS, backup=False)
        command = [sys.executable, "-c", "from embeddb.cli import main; main()", "seed",
                   "staging", "--db", url, "--seeds", str(SEEDS), "--json", "--atomic"]
        runs = []
        for _ in range(2):
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout))
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows = sum(runs[0]["written"].values())
        first, second = (rows / run["seconds"] for run in runs)
        report("sqlite.seed.staging_into_empty_db", "rows/s", first, first, rows=rows,
               rerun_rows_per_s=second, child_peak_rss_mb=round(rss, 1))


def bench_test_setup() -> None:
    template = Template.create(None, MIGRATIONS)

    def copy() -> None:
        db = template.copy()
        db.execute_sql("SELECT count(*) FROM users").fetchone()
        template.discard(db)

    def migrate_each_time() -> None:
        db = embeddb.connect("sqlite:///:memory:")
        embeddb.migrate.up(db, MIGRATIONS, backup=False)
        db.execute_sql("SELECT count(*) FROM users").fetchone()

    t_copy = per_op(copy, 200)
    t_migrate = per_op(migrate_each_time, 20)
    report("sqlite.pytest.per_test_setup_template_vs_migrate", "us/op", t_copy * 1e6,
           t_migrate * 1e6)
    template.close()


def main() -> None:
    bench_seed()
    bench_seed_staging()
    bench_test_setup()


if __name__ == "__main__":
    main()
