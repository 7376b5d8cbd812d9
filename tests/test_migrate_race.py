"""Two runner processes started together on one database never apply anything twice."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

import embeddb
from embeddb import migrate
from embeddb.errors import MigrationLockTimeout

pytestmark = pytest.mark.slow

SLOW = {
    # long enough that the second runner arrives while the first is still migrating
    "sqlite": "CREATE TABLE big AS WITH RECURSIVE c(x) AS "
              "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) SELECT x FROM c;",
    "postgresql": "SELECT pg_sleep(0.3);",
}


def _run(url: str, folder: str, barrier, results) -> None:
    try:
        db = embeddb.connect(url)
        barrier.wait(timeout=60)
        results.put(("ok", migrate.up(db, folder, backup=False, lock_timeout=30).names))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(("error", repr(exc)))


def _race(url: str, folder: Path) -> list[tuple[str, list[str]]]:
    # spawn, not fork: a child forked while another thread of pytest holds a lock can hang
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=_run, args=(url, str(folder), barrier, results))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    try:
        return [results.get(timeout=90) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def race_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    return request.getfixturevalue("pg_schema_url")


def test_two_processes_started_together_apply_each_migration_once(race_url, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    backend = "sqlite" if race_url.startswith("sqlite") else "postgresql"
    (folder / "0001_hits.up.sql").write_text("CREATE TABLE hits (n INTEGER);")
    (folder / "0002_slow.up.sql").write_text(SLOW[backend])
    (folder / "0003_count.up.sql").write_text("INSERT INTO hits (n) VALUES (1);")
    outcome = _race(race_url, folder)
    assert [status for status, _ in outcome] == ["ok", "ok"], outcome
    applied = sorted(name for _, names in outcome for name in names)
    assert applied == ["0001_hits", "0002_slow", "0003_count"]
    assert sorted(len(names) for _, names in outcome) == [0, 3]  # the second found nothing
    db = embeddb.connect(race_url)
    try:
        assert db.execute_sql("SELECT COUNT(*) FROM hits").fetchone()[0] == 1
        assert migrate.current_version(db) == 3
    finally:
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()


def test_two_processes_never_run_a_self_committing_migration_twice(race_url, tmp_path):
    """A no-transaction migration commits statement by statement: no bookkeeping primary key
    can stop a second runner from repeating it, only the migration lock can."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    backend = "sqlite" if race_url.startswith("sqlite") else "postgresql"
    (folder / "0001_hits.up.sql").write_text("CREATE TABLE hits (n INTEGER);")
    (folder / "0002_slow_insert.up.sql").write_text(
        "-- embeddb:no-transaction\n"
        "INSERT INTO hits (n) VALUES (2);\n"
        f"{SLOW[backend].replace('TABLE big', 'TABLE IF NOT EXISTS big')}\n"
    )
    outcome = _race(race_url, folder)
    assert [status for status, _ in outcome] == ["ok", "ok"], outcome
    assert sorted(len(names) for _, names in outcome) == [0, 2]
    db = embeddb.connect(race_url)
    try:
        assert db.execute_sql("SELECT n FROM hits").fetchall() == [(2,)]
        assert migrate.current_version(db) == 2
    finally:
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()


HOLDER = """
import sys
import embeddb
from embeddb.migrate.backends import backend_for
db = embeddb.connect(sys.argv[1])
with backend_for(db).lock(db, 30):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_runner_waits_for_the_lock_another_process_holds(race_url, tmp_path):
    """The race tests above catch a missing lock only when the runners' timing overlaps; a
    process that holds the lock while this one runs shows it every time."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_hits.up.sql").write_text("CREATE TABLE hits (n INTEGER);")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, race_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    db = embeddb.connect(race_url)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(MigrationLockTimeout):
            migrate.up(db, str(folder), backup=False, lock_timeout=0.5)
        assert migrate.current_version(db) is None
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
        assert migrate.up(db, str(folder), backup=False, lock_timeout=5).names == ["0001_hits"]
    finally:
        if holder.poll() is None:
            holder.kill()
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()
