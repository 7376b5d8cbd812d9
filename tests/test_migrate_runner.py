"""The runner's promises that mutation testing found unguarded: redo under the lock with its
options, what a dry run reports step by step, and the messages of failing Python migrations."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

import embeddb
from embeddb import migrate
from embeddb.errors import ConfigurationError, MigrationFailed, MigrationLockTimeout
from embeddb.migrate import Step
from embeddb.migrate.backends import backend_for


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PostgreSQL safety dumps go to ./backups


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    (path / "0001_users.sql").write_text(
        "-- migrate:up\nCREATE TABLE users (id INTEGER PRIMARY KEY);\n"
        "-- migrate:down\nDROP TABLE users;\n")
    (path / "0002_posts.sql").write_text(
        "-- migrate:up\nCREATE TABLE posts (id INTEGER PRIMARY KEY);\n"
        "-- migrate:down\nDROP TABLE posts;\n")
    return path


def _premigrate_copies(tmp_path: Path) -> list[str]:
    return [n for n in os.listdir(tmp_path / "backups") if "-premigrate-" in n and n.endswith(".db")]


def test_redo_waits_for_the_lock_and_reports_the_wait(db, folder):
    migrate.up(db, folder, backup=False)
    with backend_for(db).lock(db, 5), pytest.raises(MigrationLockTimeout):
        migrate.redo(db, folder, backup=False, lock_timeout=0.2)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with backend_for(db).lock(db, 5):
            held.set()
            release.wait(20)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(20)
    kinds = []

    def progress(event: migrate.Event) -> None:
        kinds.append(event.kind)
        if event.kind == "waiting":
            threading.Timer(0.3, release.set).start()

    try:
        result = migrate.redo(db, folder, backup=False, lock_timeout=20, progress=progress)
    finally:
        release.set()
        thread.join(20)
    assert result.names == ["0002_posts", "0002_posts"]
    assert kinds == ["waiting", "reverting", "reverted", "applying", "applied"]


def test_redo_keeps_as_many_safety_copies_as_asked_and_checks_the_number(
    sqlite_file_url, folder, tmp_path
):
    db = embeddb.connect(sqlite_file_url)
    migrate.up(db, folder)
    for _ in range(3):
        migrate.redo(db, folder)
    assert len(_premigrate_copies(tmp_path)) == 3
    assert migrate.redo(db, folder, keep_backups=1).backup is not None
    assert len(_premigrate_copies(tmp_path)) == 1
    with pytest.raises(ConfigurationError, match="keep_backups must be"):
        migrate.redo(db, folder, keep_backups=-1)
    db.close()


def test_redo_lists_applied_versions_whose_file_is_gone(db, folder):
    migrate.up(db, folder, backup=False)
    (folder / "0001_users.sql").unlink()
    result = migrate.redo(db, folder, backup=False)
    assert result.names == ["0002_posts", "0002_posts"]
    assert [(r.version, r.name) for r in result.missing] == [(1, "0001_users")]


def test_redo_of_a_python_migration_runs_its_down_then_its_up(db, folder):
    (folder / "0003_seed.py").write_text(
        "def up(db):\n    db.execute_sql('INSERT INTO users (id) VALUES (7)')\n\n"
        "def down(db):\n    db.execute_sql('DELETE FROM users WHERE id = 7')\n")
    migrate.up(db, folder, backup=False)
    db.execute_sql("INSERT INTO users (id) VALUES (8)")
    result = migrate.redo(db, folder, backup=False)
    assert [(s.name, s.direction) for s in result.steps] == [
        ("0003_seed", "down"), ("0003_seed", "up")]
    assert [r[0] for r in db.execute_sql("SELECT id FROM users ORDER BY id").fetchall()] == [7, 8]


def test_a_dry_run_step_says_what_would_run_and_how(db, folder):
    (folder / "0003_seed.py").write_text("def up(db):\n    pass\n")
    (folder / "0004_loose.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE loose (x INTEGER);\n")
    result = migrate.up(db, folder, dry_run=True)
    assert result.steps == [
        Step(1, "0001_users", "up", 0.0, ("CREATE TABLE users (id INTEGER PRIMARY KEY);",)),
        Step(2, "0002_posts", "up", 0.0, ("CREATE TABLE posts (id INTEGER PRIMARY KEY);",)),
        Step(3, "0003_seed", "up", 0.0, ("up(db) in 0003_seed.py",)),
        Step(4, "0004_loose", "up", 0.0, ("CREATE TABLE loose (x INTEGER);",), False),
    ]
    assert all(type(s.duration_ms) is float and type(s.transaction) is bool for s in result.steps)


PARENT_AND_CHILDREN = """\
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id)
    ON DELETE CASCADE);
CREATE TABLE pet (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id));
INSERT INTO parent VALUES (1, 'a');
INSERT INTO child VALUES (1, 1);
"""


@pytest.fixture
def sqlite_db(sqlite_file_url):
    database = embeddb.connect(sqlite_file_url)
    yield database
    database.close()


@pytest.fixture
def parents(tmp_path: Path) -> Path:
    path = tmp_path / "parents"
    path.mkdir()
    (path / "0001_schema.up.sql").write_text(PARENT_AND_CHILDREN)
    return path


def test_a_dry_run_names_every_table_that_references_a_dropped_one(sqlite_db, parents):
    (parents / "0002_drop.up.sql").write_text("\nDROP TABLE parent;\n")
    migrate.up(sqlite_db, parents, to=1, backup=False)
    [step] = migrate.up(sqlite_db, parents, dry_run=True).steps
    assert step.findings == (
        "0002_drop.up.sql line 2: drop of table parent, which child, pet reference(s), while "
        "foreign keys are on: would be refused (start the file with PRAGMA foreign_keys = OFF "
        "to rebuild a table)",
    )


REBUILD = (
    "CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '');\n"
    "INSERT INTO parent_new (id, name) SELECT id, coalesce(name, '') FROM parent;\n"
    "DROP TABLE parent;\nALTER TABLE parent_new RENAME TO parent;\n"
)


@pytest.mark.parametrize("script, findings", [
    # the README's recipe: embeddb turns foreign keys off before its transaction
    ("PRAGMA foreign_keys = OFF;\n" + REBUILD + "PRAGMA foreign_keys = ON;\n", 0),
    ("PRAGMA foreign_keys = OFF;\nBEGIN;\n" + REBUILD + "COMMIT;\nPRAGMA foreign_keys = ON;\n", 0),
    ("-- embeddb:no-transaction\nPRAGMA foreign_keys = off;\n" + REBUILD, 0),
    ("-- embeddb:no-transaction\nPRAGMA foreign_keys = OFF;\nPRAGMA foreign_keys = 1;\n"
     + REBUILD, 1),
], ids=["embeddb-transaction", "own-transaction", "no-transaction", "back-on-before"])
def test_a_dry_run_of_a_rebuild_with_foreign_keys_off_finds_what_the_run_would(
    sqlite_db, parents, script, findings
):
    (parents / "0002_rebuild.up.sql").write_text(script)
    migrate.up(sqlite_db, parents, to=1, backup=False)
    [step] = migrate.up(sqlite_db, parents, dry_run=True).steps
    assert len(step.findings) == findings
    if findings:
        with pytest.raises(MigrationFailed, match="dropping table parent while foreign keys"):
            migrate.up(sqlite_db, parents, backup=False)
    else:
        assert migrate.up(sqlite_db, parents, backup=False).names == ["0002_rebuild"]
        assert sqlite_db.execute_sql("SELECT count(*) FROM child").fetchone()[0] == 1


def test_a_dry_run_on_a_connection_without_foreign_keys_finds_nothing(sqlite_db, parents):
    (parents / "0002_drop.up.sql").write_text("DROP TABLE parent;\n")
    migrate.up(sqlite_db, parents, to=1, backup=False)
    sqlite_db.execute_sql("PRAGMA foreign_keys = OFF")
    [step] = migrate.up(sqlite_db, parents, dry_run=True).steps
    assert step.findings == ()
    assert migrate.up(sqlite_db, parents, backup=False).names == ["0002_drop"]


FAILING = (
    "def up(db):\n    db.execute_sql('INSERT INTO users (id) VALUES (1)')\n    raise ValueError('bad')\n"
)


def test_a_failing_python_migration_says_it_was_rolled_back(db, folder):
    (folder / "0003_data.py").write_text(FAILING)
    with pytest.raises(MigrationFailed) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value) == "0003_data.py line 3: ValueError: bad; 0003_data up was rolled back"
    assert db.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 0


def test_a_failing_python_migration_outside_a_transaction_stopped_there(db, folder):
    (folder / "0003_data.py").write_text("transaction = False\n\n" + FAILING)
    with pytest.raises(MigrationFailed) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value) == "0003_data.py line 5: ValueError: bad; 0003_data up stopped there"
    assert db.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 1
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "failed"]


def test_a_python_migration_whose_up_is_defined_elsewhere_fails_without_a_line(db, folder):
    (folder / "0003_data.py").write_text(
        "def up(db):\n    pass\n\n\nfrom json import loads as up  # noqa\n")
    with pytest.raises(MigrationFailed) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value).startswith("0003_data.py: TypeError: the JSON object must be ")
