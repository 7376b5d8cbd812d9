"""Seeding and per-test setup.

- ``embeddb seed dev`` into an empty SQLite file: rows/s, vs raw ``executemany`` of the same
  rows (already converted) in the same run (target: >= 50k rows/s).
- ``embeddb seed staging`` (~387k rows, ten times dev) into an empty SQLite file with default
  settings, in its own process: rows/s and that process's peak RSS, then a second run on top of
  the filled file (target: the dev set's rate, >= 40k rows/s; the re-run not 10x slower).
- Per-test database setup for the reference schema: a copy of the migrated template (what the
  pytest plugin does) vs running the migrations each time.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import embeddb
import embeddb.migrate
import embeddb.seed
from benchmarks.harness import per_op, report
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
        result = embeddb.seed.run(db, "dev", directory=SEEDS)
        ours = result.total / result.seconds
        again = embeddb.seed.run(db, "dev", directory=SEEDS)

        raw_path = Path(tmp) / "raw.db"
        template = embeddb.connect(f"sqlite:///{raw_path}")
        embeddb.migrate.up(template, MIGRATIONS, backup=False)
        template.close()
        prepared = []
        for model, rows in marketplace(embeddb.seed.DEFAULT_SEED):
            repo = Repository(model, db)
            prepared.append((model._meta.table_name, repo._insert_columns,
                             repo._row_tuples(list(rows))))
        raw = sqlite3.connect(raw_path, isolation_level=None)
        raw.execute("PRAGMA foreign_keys=ON")
        raw.execute("PRAGMA synchronous=NORMAL")
        start = time.perf_counter()
        raw.execute("BEGIN")
        for table, columns, rows in prepared:
            marks = ", ".join("?" * len(columns))
            raw.executemany(f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({marks})',
                            rows)
        raw.execute("COMMIT")
        raw_rate = result.total / (time.perf_counter() - start)
        report("sqlite.seed.dev_into_empty_db", "rows/s", ours, raw_rate, rows=result.total,
               rerun_rows_per_s=again.total / again.seconds)


def bench_seed_staging() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'staging.db'}"
        embeddb.migrate.up(embeddb.connect(url), MIGRATIONS, backup=False)
        command = [sys.executable, "-c", "from embeddb.cli import main; main()", "seed",
                   "staging", "--db", url, "--seeds", str(SEEDS), "--json"]
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
