"""The runner's promises that mutation testing found unguarded: redo under the lock with its
options, what a dry run reports step by step, and the messages of failing Python migrations."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import embeddb
from embeddb import migrate
from embeddb.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DatabaseError,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
)
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


#: what redo and down do to ``folder`` once both are applied
REVERTS = pytest.mark.parametrize("run, names, kinds", [
    (migrate.redo, ["0002_posts", "0002_posts"], ["reverting", "reverted", "applying", "applied"]),
    (migrate.down, ["0002_posts"], ["reverting", "reverted"]),
], ids=["redo", "down"])


@REVERTS
def test_redo_and_down_wait_for_the_lock_and_report_the_wait(db, folder, run, names, kinds):
    migrate.up(db, folder, backup=False)
    with backend_for(db).lock(db, 5), pytest.raises(MigrationLockTimeout):
        run(db, folder, backup=False, lock_timeout=0.2)
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with backend_for(db).lock(db, 5):
            held.set()
            release.wait(20)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(20)
    seen = []

    def progress(event: migrate.Event) -> None:
        seen.append(event.kind)
        if event.kind == "waiting":
            threading.Timer(0.3, release.set).start()

    try:
        result = run(db, folder, backup=False, lock_timeout=20, progress=progress)
    finally:
        release.set()
        thread.join(20)
    assert result.names == names
    assert seen == ["waiting", *kinds]


@REVERTS
def test_redo_and_down_keep_as_many_safety_copies_as_asked_and_check_the_number(
    sqlite_file_url, folder, tmp_path, run, names, kinds
):
    db = embeddb.connect(sqlite_file_url)
    for _ in range(4):
        migrate.up(db, folder)
        migrate.redo(db, folder)
    assert len(_premigrate_copies(tmp_path)) == 3
    migrate.up(db, folder)
    events: list[migrate.Event] = []
    result = run(db, folder, keep_backups=1, progress=events.append)
    assert result.backup is not None and os.path.exists(result.backup)
    assert events[0] == migrate.Event("backup", 0, result.backup)
    assert _premigrate_copies(tmp_path) == [os.path.basename(result.backup)]
    migrate.up(db, folder)
    with pytest.raises(ConfigurationError, match="keep_backups must be"):
        run(db, folder, keep_backups=-1)
    db.close()


@REVERTS
def test_redo_and_down_list_applied_versions_whose_file_is_gone(db, folder, run, names, kinds):
    migrate.up(db, folder, backup=False)
    (folder / "0001_users.sql").unlink()
    result = run(db, folder, backup=False)
    assert result.names == names
    assert [(r.version, r.name) for r in result.missing] == [(1, "0001_users")]
    assert result.version == (2 if run is migrate.redo else 1)


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
    assert result.dry_run is True


def test_a_dry_run_down_says_what_would_be_reverted(db, folder):
    (folder / "0003_seed.py").write_text("def up(db):\n    pass\n\ndef down(db):\n    pass\n")
    migrate.up(db, folder, backup=False)
    result = migrate.down(db, folder, steps=2, dry_run=True)
    assert result.dry_run is True and result.version == 3
    assert result.steps == [
        Step(3, "0003_seed", "down", 0.0, ("down(db) in 0003_seed.py",)),
        Step(2, "0002_posts", "down", 0.0, ("DROP TABLE posts;",)),
    ]
    assert migrate.current_version(db) == 3


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


def test_up_reports_each_step_and_how_it_ran(db, folder):
    (folder / "0003_loose.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE loose (x INTEGER);\n")
    (folder / "0004_data.py").write_text("def up(db):\n    pass\n")
    events: list[migrate.Event] = []
    result = migrate.up(db, folder, backup=False, progress=events.append)
    applied = [e for e in events if e.kind == "applied"]
    assert [(e.version, e.name, e.transaction) for e in applied] == [
        (1, "0001_users", True), (2, "0002_posts", True), (3, "0003_loose", False),
        (4, "0004_data", True)]
    assert all(type(e.duration_ms) is float and e.duration_ms > 0 for e in applied)
    assert result.steps == [Step(e.version, e.name, "up", e.duration_ms, (), e.transaction)
                            for e in applied]
    assert result.version == 4


def test_a_failed_row_another_runner_wrote_meanwhile_is_not_overwritten(db, folder):
    """Only a re-run of a version this run saw failed replaces its row."""

    def behind_our_back(event: migrate.Event) -> None:
        if event.kind == "applying" and event.version == 2:
            db.execute_sql(
                "INSERT INTO embeddb_migrations (version, name, checksum, applied_at, "
                f"duration_ms, status) VALUES ({', '.join([db.param] * 6)})",
                (2, "0002_posts", "elsewhere", "2024-01-01T00:00:00+00:00", 1.0, "failed"))

    with pytest.raises(DatabaseError):
        migrate.up(db, folder, backup=False, progress=behind_our_back)
    assert _history(db, 2)[2:4] == ("elsewhere", "failed")
    assert "posts" not in db.get_tables()


def test_a_python_migration_outside_a_transaction_is_recorded_when_it_succeeds(db, folder):
    (folder / "0003_data.py").write_text(
        "transaction = False\n\n"
        "def up(db):\n    db.execute_sql('INSERT INTO users (id) VALUES (1)')\n")
    assert migrate.up(db, folder, backup=False).names == ["0001_users", "0002_posts", "0003_data"]
    assert [e.state for e in migrate.status(db, folder)] == ["applied"] * 3


# -- reverting -------------------------------------------------------------------------------


def test_down_reports_each_revert_and_how_it_ran(db, folder):
    (folder / "0003_loose.up.sql").write_text("CREATE TABLE loose (x INTEGER);\n")
    (folder / "0003_loose.down.sql").write_text(
        "-- embeddb:no-transaction\nDROP TABLE loose;\n")
    migrate.up(db, folder, backup=False)
    events: list[migrate.Event] = []
    result = migrate.down(db, folder, steps=2, backup=False, progress=events.append)
    assert [(e.kind, e.version, e.name, e.transaction) for e in events] == [
        ("reverting", 3, "0003_loose", False), ("reverted", 3, "0003_loose", False),
        ("reverting", 2, "0002_posts", True), ("reverted", 2, "0002_posts", True)]
    assert all(e.duration_ms is None for e in events[::2])
    durations = [e.duration_ms for e in events[1::2]]
    assert all(type(d) is float and d > 0 for d in durations)
    assert result.steps == [Step(3, "0003_loose", "down", durations[0], (), False),
                            Step(2, "0002_posts", "down", durations[1], (), True)]
    assert result.version == 1


def test_a_down_part_that_drops_a_referenced_table_is_refused_as_a_down(sqlite_db, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_parent.sql").write_text(
        "-- migrate:up\nCREATE TABLE parent (id INTEGER PRIMARY KEY);\n"
        "-- migrate:down\nDROP TABLE parent;\n")
    migrate.up(sqlite_db, folder, backup=False)
    sqlite_db.execute_sql("CREATE TABLE child (id INTEGER REFERENCES parent(id))")
    with pytest.raises(MigrationFailed) as info:
        migrate.down(sqlite_db, folder, backup=False)
    assert str(info.value).startswith(
        "0001_parent.sql line 4: dropping table parent while foreign keys are on, but child.id "
        "references it: its implicit DELETE would cascade into or fail on their rows; "
        "0001_parent down was rolled back.")
    assert migrate.current_version(sqlite_db) == 1


def _history(db, version: int) -> tuple:
    return tuple(db.execute_sql(
        "SELECT version, name, checksum, status, duration_ms FROM embeddb_migrations "
        f"WHERE version = {version}").fetchone())


def test_a_no_transaction_down_that_fails_after_a_commit_is_marked_failed(db, folder):
    (folder / "0003_loose.up.sql").write_text("CREATE TABLE loose (x INTEGER);\n")
    (folder / "0003_loose.down.sql").write_text(
        "-- embeddb:no-transaction\nDROP TABLE loose;\nINSERT INTO nowhere VALUES (1);\n")
    migrate.up(db, folder, backup=False)
    version, name, recorded, _, _ = _history(db, 3)
    with pytest.raises(MigrationFailed) as info:
        migrate.down(db, folder, backup=False)
    message = str(info.value)
    assert message.startswith("0003_loose.down.sql line 3: ") and "nowhere" in message
    assert message.endswith("; 0003_loose down stopped there")
    assert "loose" not in db.get_tables()
    *row, duration = _history(db, 3)
    assert row == [3, "0003_loose", recorded, "failed"] and duration > 0
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "failed"]


# -- scripts outside embeddb's transaction ------------------------------------------------------


def test_a_no_transaction_script_failing_at_its_first_statement_is_not_marked(db, folder):
    (folder / "0003_loose.up.sql").write_text(
        "-- embeddb:no-transaction\nINSERT INTO nowhere VALUES (1);\nCREATE TABLE loose (x INT);\n")
    with pytest.raises(MigrationFailed, match="line 2: .*; 0003_loose up stopped there"):
        migrate.up(db, folder, backup=False)
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "pending"]


def test_ctrl_c_during_the_first_no_transaction_statement_marks_it_failed(db, folder):
    """The statement may have taken effect before the interrupt was seen."""
    slow = ("SELECT pg_sleep(2)" if db.backend == "postgresql" else
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000000) "
            "SELECT count(*) FROM n")
    (folder / "0003_slow.up.sql").write_text(f"-- embeddb:no-transaction\n{slow};\n")

    def progress(event: migrate.Event) -> None:
        if event.kind == "applying" and event.version == 3:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            migrate.up(db, folder, backup=False, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "failed"]


@pytest.mark.parametrize("end", ["COMMIT", "END"])
def test_a_script_with_its_own_transaction_is_recorded_once(db, folder, end):
    (folder / "0003_own.up.sql").write_text(
        f"BEGIN;\nCREATE TABLE own (x INTEGER);\nINSERT INTO own VALUES (1);\n{end};\n")
    assert migrate.up(db, folder, backup=False).names[-1] == "0003_own"
    assert [e.state for e in migrate.status(db, folder)] == ["applied"] * 3
    assert db.execute_sql("SELECT count(*) FROM embeddb_migrations").fetchone()[0] == 3
    assert db.execute_sql("SELECT x FROM own").fetchall() == [(1,)]


def _rolled_back_then_failing(rollback: str) -> str:
    return (f"BEGIN;\nINSERT INTO users (id) VALUES (1);\n{rollback};\n"
            "CREATE TABLE kept (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n")


def _check_rolled_back_then_failing(db, folder) -> None:
    with pytest.raises(MigrationFailed, match="0003_own.up.sql line 5: .*nowhere"):
        migrate.up(db, folder, backup=False)
    assert "kept" in db.get_tables()  # committed on its own after the ROLLBACK
    assert db.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 0
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "failed"]


def test_a_script_that_rolls_back_its_own_transaction_then_fails_is_marked_failed(db, folder):
    (folder / "0003_own.up.sql").write_text(_rolled_back_then_failing("ROLLBACK"))
    _check_rolled_back_then_failing(db, folder)


@pytest.fixture
def pg(pg_schema_url):
    database = embeddb.connect(pg_schema_url)
    yield database
    database.close_all()


def test_postgres_abort_ends_a_script_transaction_like_rollback(pg, folder):
    (folder / "0003_own.up.sql").write_text(_rolled_back_then_failing("ABORT"))
    _check_rolled_back_then_failing(pg, folder)


@pytest.mark.parametrize("begin, end", [
    ("BEGIN", "COMMIT"), ("START TRANSACTION", "COMMIT"), ("BEGIN", "END")])
def test_postgres_own_transaction_commits_together_with_its_bookkeeping(pg, folder, begin, end):
    """The history row is written inside the script's transaction, just before its COMMIT:
    a trigger on the history table sees a setting the script made local to that transaction."""
    migrate.up(pg, folder, backup=False)
    pg.execute_sql("CREATE TABLE seen (setting TEXT)")
    pg.execute_sql(
        "CREATE FUNCTION remember() RETURNS trigger AS $$ BEGIN "
        "INSERT INTO seen VALUES (coalesce(current_setting('embeddb_test.inside', true), '')); "
        "RETURN NEW; END $$ LANGUAGE plpgsql")
    pg.execute_sql("CREATE TRIGGER remember AFTER INSERT ON embeddb_migrations "
                   "FOR EACH ROW EXECUTE FUNCTION remember()")
    (folder / "0003_own.up.sql").write_text(
        f"{begin};\nSET LOCAL embeddb_test.inside = 'yes';\nCREATE TABLE own (x INTEGER);\n{end};\n")
    assert migrate.up(pg, folder, backup=False).names == ["0003_own"]
    assert pg.execute_sql("SELECT setting FROM seen").fetchall() == [("yes",)]
    assert [e.state for e in migrate.status(pg, folder)] == ["applied"] * 3


# -- the cache -------------------------------------------------------------------------------------


def test_up_down_and_redo_each_drop_what_the_cache_holds(sqlite_file_url, tmp_path):
    """Raw SQL is not seen by the model layer: the runner clears the cache itself."""
    import peewee

    from embeddb.cache import Cache
    from embeddb.models import BaseModel
    from embeddb.repository import Repository

    class Gizmo(BaseModel):
        cache_family = "services"
        name = peewee.TextField()

    db = embeddb.connect(sqlite_file_url)
    db.bind([Gizmo])
    db.create_tables([Gizmo])
    folder = tmp_path / "renames"
    folder.mkdir()
    (folder / "0001_rename.sql").write_text(
        "-- migrate:up\nUPDATE gizmo SET name = 'up';\n"
        "-- migrate:down\nUPDATE gizmo SET name = 'down';\n")
    repo = Repository(Gizmo, db, cache=Cache.for_database(db))
    try:
        gizmo = repo.create(name="made")
        for run, expected in ((migrate.up, "up"), (migrate.redo, "up"), (migrate.down, "down")):
            repo.update(gizmo.id, name="cached")
            assert repo.get(gizmo.id).name == "cached"
            db.execute_sql("UPDATE gizmo SET name = 'unseen'")
            assert repo.get(gizmo.id).name == "cached"  # raw SQL: still the cached row
            run(db, folder, backup=False)
            assert repo.get(gizmo.id).name == expected, run.__name__
    finally:
        repo.cache.close()
        db.close()




# -- what down refuses, and how it runs a down part ------------------------------------------------


def test_down_refusals_say_what_to_do(db, folder):
    for kwargs, message in [
        ({}, "no applied migration to revert"),
        ({"to": 1}, "--to 1 is not an applied version (applied: none); pass 0 to revert "
                    "everything; nothing was changed"),
        ({"to": -1}, "--to must be 0 (revert everything) or an applied version (got -1); "
                     "nothing was changed"),
    ]:
        with pytest.raises(MigrationError) as info:
            migrate.down(db, folder, backup=False, **kwargs)
        assert str(info.value) == message
    migrate.up(db, folder, backup=False)
    assert migrate.down(db, folder, to=2, backup=False).names == []  # nothing above 2
    (folder / "0002_posts.sql").write_text("-- migrate:up\nCREATE TABLE posts (id INTEGER);\n")
    with pytest.raises(MigrationError) as info:
        migrate.down(db, folder, backup=False)
    assert str(info.value) == (
        "cannot revert 0002_posts: it has no down part (add 0002_posts.down.sql or a "
        "'-- migrate:down' section); nothing was changed")
    (folder / "0002_posts.sql").unlink()
    with pytest.raises(MigrationError) as info:
        migrate.down(db, folder, backup=False)
    assert str(info.value) == "cannot revert version 2 (0002_posts): its file is missing"
    assert migrate.current_version(db) == 2


def test_down_of_a_migration_edited_since_it_was_applied_is_refused(db, folder):
    migrate.up(db, folder, backup=False)
    recorded = _history(db, 2)[2]
    (folder / "0002_posts.sql").write_text(
        "-- migrate:up\nCREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT);\n"
        "-- migrate:down\nDROP TABLE posts;\n")
    with pytest.raises(ChecksumMismatch) as info:
        migrate.down(db, folder, backup=False)
    now = next(e for e in migrate.status(db, folder) if e.version == 2).checksum
    assert str(info.value) == (
        f"0002_posts.sql changed after it was applied (recorded checksum {recorded}, file now "
        f"{now}): its down part may not undo what was applied (is this the database's own "
        "migrations folder?); restore the file, or run `embeddb migrate repair` to accept it; "
        "nothing was changed")
    (folder / "0001_users.sql").write_text(
        "-- migrate:up\nCREATE TABLE users (id INTEGER);\n-- migrate:down\nDROP TABLE users;\n")
    with pytest.raises(ChecksumMismatch) as info:
        migrate.down(db, folder, to=0, backup=False)
    assert f"file now {now}); 0001_users.sql changed after it was applied" in str(info.value)
    assert "posts" in db.get_tables()


def test_a_down_part_that_fails_half_way_leaves_everything_as_it_was(db, folder):
    (folder / "0003_tags.sql").write_text(
        "-- migrate:up\nCREATE TABLE tags (id INTEGER);\n"
        "-- migrate:down\nDROP TABLE tags;\nINSERT INTO nowhere VALUES (1);\n")
    migrate.up(db, folder, backup=False)
    with pytest.raises(MigrationFailed, match="0003_tags.sql line 5: .*0003_tags down was rolled"):
        migrate.down(db, folder, backup=False)
    assert "tags" in db.get_tables()
    assert [e.state for e in migrate.status(db, folder)] == ["applied"] * 3


def test_a_failing_python_down_names_its_line(db, folder):
    (folder / "0003_data.py").write_text(
        "def up(db):\n    pass\n\n\ndef down(db):\n    raise ValueError('no way back')\n")
    migrate.up(db, folder, backup=False)
    with pytest.raises(MigrationFailed) as info:
        migrate.down(db, folder, backup=False)
    assert str(info.value) == (
        "0003_data.py line 6: ValueError: no way back; 0003_data down was rolled back")


def test_a_down_part_with_its_own_transaction_runs_as_written(db, folder):
    (folder / "0003_tags.sql").write_text(
        "-- migrate:up\nCREATE TABLE tags (id INTEGER);\n"
        "-- migrate:down\nBEGIN;\nDROP TABLE tags;\nCOMMIT;\n")
    migrate.up(db, folder, backup=False)
    assert migrate.down(db, folder, backup=False).names == ["0003_tags"]
    assert "tags" not in db.get_tables()
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied", "pending"]


def test_a_no_transaction_part_that_drops_a_referenced_table_is_refused(sqlite_db, tmp_path):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_parent.up.sql").write_text("CREATE TABLE parent (id INTEGER PRIMARY KEY);\n")
    (folder / "0001_parent.down.sql").write_text("-- embeddb:no-transaction\nDROP TABLE parent;\n")
    (folder / "0002_drop.up.sql").write_text("-- embeddb:no-transaction\n\nDROP TABLE parent;\n")
    migrate.up(sqlite_db, folder, to=1, backup=False)
    sqlite_db.execute_sql("CREATE TABLE child (id INTEGER REFERENCES parent(id) ON DELETE CASCADE)")
    sqlite_db.execute_sql("INSERT INTO parent VALUES (1)")
    sqlite_db.execute_sql("INSERT INTO child VALUES (1)")
    with pytest.raises(MigrationFailed, match="line 3: dropping table parent while foreign keys"):
        migrate.up(sqlite_db, folder, backup=False)
    with pytest.raises(MigrationFailed, match="line 2: dropping table parent while foreign keys"):
        migrate.down(sqlite_db, folder, backup=False)
    assert sqlite_db.execute_sql("SELECT count(*) FROM child").fetchone()[0] == 1


def test_a_no_transaction_version_applied_meanwhile_is_not_run_again(db, folder):
    (folder / "0003_loose.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE loose (x INTEGER);\n")

    def behind_our_back(event: migrate.Event) -> None:
        if event.kind == "applying" and event.version == 3:
            db.execute_sql("CREATE TABLE loose (x INTEGER)")
            db.execute_sql(
                "INSERT INTO embeddb_migrations (version, name, checksum, applied_at, "
                f"duration_ms, status) VALUES ({', '.join([db.param] * 6)})",
                (3, "0003_loose", "elsewhere", "2024-01-01T00:00:00+00:00", 1.0, "applied"))

    result = migrate.up(db, folder, backup=False, progress=behind_our_back)
    assert result.names == ["0001_users", "0002_posts"] and result.version == 3
    assert _history(db, 3)[2:4] == ("elsewhere", "applied")


@pytest.mark.parametrize("length", [285, 286])  # the error text: 300 and 301 characters
def test_long_error_texts_and_statements_are_cut_to_one_readable_line(sqlite_db, folder, length):
    name = "t" * length
    statement = f"INSERT INTO {name} VALUES (1);"
    (folder / "0003_long.up.sql").write_text(statement + "\n")
    with pytest.raises(MigrationFailed) as info:
        migrate.up(sqlite_db, folder, backup=False)
    error = f"no such table: {name}"
    shown = error if len(error) <= 300 else error[:297] + "..."
    assert str(info.value) == (
        f"0003_long.up.sql line 1: {shown} (statement: {statement[:117]}...); "
        "0003_long up was rolled back")


# -- what up refuses ------------------------------------------------------------------------------


def test_up_to_zero_runs_nothing_and_version_zero_is_a_version(db, folder):
    assert migrate.up(db, folder, to=0, backup=False).names == []
    (folder / "0000_first.up.sql").write_text("CREATE TABLE first (x INTEGER);\n")
    assert migrate.up(db, folder, to=0, backup=False).names == ["0000_first"]
    assert migrate.up(db, folder, backup=False).names == ["0001_users", "0002_posts"]


def test_up_refusals_say_what_to_do(db, folder):
    (folder / "0010_last.up.sql").write_text("CREATE TABLE last (x INTEGER);\n")
    migrate.up(db, folder, backup=False)
    for late in ("0003_a", "0004_b"):
        (folder / f"{late}.up.sql").write_text(f"CREATE TABLE t{late[-1]} (x INTEGER);\n")
        with pytest.raises(MigrationError) as info:
            migrate.up(db, folder, backup=False)
    assert str(info.value) == (
        "0003_a, 0004_b are older than the newest applied version 10: renumber the file(s) "
        "above it, or pass --allow-out-of-order")
    (folder / "0004_b.up.sql").unlink()
    with pytest.raises(MigrationError, match="^0003_a is older than the newest applied version"):
        migrate.up(db, folder, backup=False)
    (folder / "0003_a.up.sql").unlink()
    checksums = {e.version: e.recorded_checksum for e in migrate.status(db, folder)}
    for name in ("0001_users", "0002_posts"):
        path = folder / f"{name}.sql"
        path.write_text(path.read_text().replace("PRIMARY KEY);", "PRIMARY KEY, x INT);"))
    now = {e.version: e.checksum for e in migrate.status(db, folder)}
    with pytest.raises(ChecksumMismatch) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value) == (
        f"0001_users.sql changed after it was applied (recorded checksum {checksums[1]}, file now "
        f"{now[1]}); 0002_posts.sql changed after it was applied (recorded checksum "
        f"{checksums[2]}, file now {now[2]}): restore the file(s), or run `embeddb migrate "
        "repair` to accept the new content")


def test_a_failed_no_transaction_migration_whose_file_is_gone_blocks_up(db, folder):
    (folder / "0003_nt.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n")
    with pytest.raises(MigrationFailed):
        migrate.up(db, folder, backup=False)
    (folder / "0003_nt.up.sql").unlink()
    (folder / "0004_next.up.sql").write_text("CREATE TABLE next_one (x INTEGER);\n")
    with pytest.raises(MigrationError) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value) == (
        "version 3 (0003_nt) failed outside a transaction and its file is gone: restore it, or "
        "run `embeddb migrate resolve 3`")
    assert "next_one" not in db.get_tables()


# -- checked before anything changes ------------------------------------------------------------


@REVERTS
def test_an_unfinished_down_script_is_refused_before_the_safety_copy(
    sqlite_file_url, folder, tmp_path, run, names, kinds
):
    db = embeddb.connect(sqlite_file_url)
    unfinished = "SELECT 'never closed" + " and on" * 20 + ";"
    (folder / "0002_posts.sql").write_text(
        "-- migrate:up\nCREATE TABLE posts (id INTEGER PRIMARY KEY);\n"
        f"-- migrate:down\nDROP TABLE posts;\n{unfinished}\n")
    migrate.up(db, folder, backup=False)
    with pytest.raises(MigrationFailed) as info:
        run(db, folder)
    assert str(info.value) == (
        "0002_posts.sql line 5: the script ends inside a string, a comment or a trigger body "
        f"(statement: {unfinished[:117]}...); nothing was changed")
    assert not (tmp_path / "backups").exists()
    assert "posts" in db.get_tables()
    db.close()


def test_a_python_migration_that_deletes_its_own_up_is_refused_before_anything_runs(db, folder):
    (folder / "0003_data.py").write_text("def up(db):\n    pass\n\n\ndel up\n")
    with pytest.raises(MigrationFailed) as info:
        migrate.up(db, folder, backup=False)
    assert str(info.value) == "0003_data.py defines no up(db) function; nothing was changed"
    assert migrate.current_version(db) is None


def test_up_refuses_a_negative_to_and_ignores_keep_backups_without_a_copy(db, folder, tmp_path):
    with pytest.raises(MigrationError) as info:
        migrate.up(db, folder, to=-1)
    assert str(info.value) == "--to must be a version of 0 or more (got -1); nothing was changed"
    (tmp_path / "embeddb.toml").write_text("[migrate]\nkeep_backups = 0\n")
    assert migrate.up(db, folder, backup=False).names == ["0001_users", "0002_posts"]
    with pytest.raises(ConfigurationError, match="keep_backups must be"):
        migrate.down(db, folder)
