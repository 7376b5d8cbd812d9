"""What protects a database around a migration run: refused targets, the safety copy on both
backends and how many are kept, and the lock wait (reported, bounded, validated)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import embeddb
from embeddb import migrate
from embeddb.backup import create_backup, list_backups
from embeddb.errors import ConfigurationError, MigrationError, MigrationFailed, MigrationLockTimeout
from embeddb.migrate.backends import backend_for


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """PostgreSQL safety dumps go to ./backups: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    (path / "0001_users.up.sql").write_text("CREATE TABLE users (id INTEGER PRIMARY KEY);")
    (path / "0001_users.down.sql").write_text("DROP TABLE users;")
    (path / "0002_posts.up.sql").write_text("CREATE TABLE posts (id INTEGER PRIMARY KEY);")
    (path / "0002_posts.down.sql").write_text("DROP TABLE posts;")
    (path / "0003_tags.up.sql").write_text("CREATE TABLE tags (id INTEGER PRIMARY KEY);")
    (path / "0003_tags.down.sql").write_text("DROP TABLE tags;")
    return path


def _backups(tmp_path: Path) -> list[str]:
    return [e["file"] for e in list_backups(str(tmp_path / "backups"), missing_ok=True)]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"to": -3}, r"--to must be 0 \(revert everything\) or an applied version \(got -3\)"),
    ({"to": 5}, r"--to 5 is not an applied version \(applied: 1, 2, 3\)"),
    ({"to": 1, "steps": 2}, "pass --steps or --to, not both"),
    ({"steps": 0}, r"--steps must be 1 or more \(got 0\)"),
])
def test_down_refuses_bad_targets_and_changes_nothing(db, folder, tmp_path, kwargs, fragment):
    migrate.up(db, folder)
    before = set(db.get_tables())
    with pytest.raises(MigrationError, match=fragment) as info:
        migrate.down(db, folder, **kwargs)
    assert "nothing was changed" in str(info.value)
    assert set(db.get_tables()) == before and migrate.current_version(db) == 3
    assert _backups(tmp_path) == []  # not even a safety copy
    assert migrate.down(db, folder, to=2).names == ["0003_tags"]  # an applied version


@pytest.fixture
def pg(pg_schema_url):
    database = embeddb.connect(pg_schema_url)
    yield database
    database.close_all()


def _dumped_rows(path: str) -> str:
    """The data section of a pg_dump archive, as SQL text (read by the real pg_restore)."""
    return subprocess.run(["pg_restore", "--data-only", "-f", "-", path], capture_output=True,
                          text=True, check=True).stdout


def test_postgres_up_down_and_redo_take_a_pg_dump_first(pg, folder, tmp_path):
    migrate.up(pg, folder, to=1)  # nothing of its own yet: no dump
    assert _backups(tmp_path) == []
    pg.execute_sql("INSERT INTO users (id) VALUES (4242)")
    events = []
    up = migrate.up(pg, folder, progress=events.append)
    assert up.backup and up.backup.endswith(".dump") and "-premigrate-" in up.backup
    assert Path(up.backup).parent == tmp_path / "backups"
    assert [e.kind for e in events][0] == "backup"
    assert "4242" in _dumped_rows(up.backup)
    down = migrate.down(pg, folder)
    redo = migrate.redo(pg, folder)
    assert down.backup and redo.backup and len({up.backup, down.backup, redo.backup}) == 3
    assert "4242" in _dumped_rows(down.backup)
    assert migrate.down(pg, folder, backup=False).backup is None
    assert len(_backups(tmp_path)) == 3
    entry = list_backups(str(tmp_path / "backups"))[0]
    assert entry["kind"] == "premigrate" and entry["format"] == "pg_dump"


def test_sqlite_down_and_redo_take_a_copy_too(sqlite_file_url, folder, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    migrate.up(db, folder)
    db.execute_sql("INSERT INTO tags (id) VALUES (4242)")
    down = migrate.down(db, folder)  # drops tags: the copy still holds it and its row
    redo = migrate.redo(db, folder)  # reverts and re-applies posts
    assert down.backup != redo.backup

    def tables_and_tags(path: str):
        import sqlite3

        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            tags = conn.execute("SELECT id FROM tags").fetchall() if "tags" in names else None
            return names - {"embeddb_migrations"}, tags
        finally:
            conn.close()

    assert tables_and_tags(down.backup) == ({"users", "posts", "tags"}, [(4242,)])
    assert tables_and_tags(redo.backup) == ({"users", "posts"}, None)


def _failing_retries(db, folder: Path, times: int, **kwargs) -> None:
    for _ in range(times):
        with pytest.raises(MigrationFailed):
            migrate.up(db, folder, **kwargs)


def test_only_the_newest_safety_copies_are_kept(sqlite_file_url, folder, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    migrate.up(db, folder, backup=False)
    regular = create_backup(db).path  # another kind: never counted nor touched
    (folder / "0004_bad.up.sql").write_text("CREATE TABLE bad (x INTEGER);\nSELECT * FROM nope;")
    _failing_retries(db, folder, 5)
    names = _backups(tmp_path)
    premigrate = [n for n in names if "-premigrate-" in n]
    assert len(premigrate) == 3 and os.path.basename(regular) in names  # main: 5 copies
    _failing_retries(db, folder, 1, keep_backups=1)
    assert len([n for n in _backups(tmp_path) if "-premigrate-" in n]) == 1
    (tmp_path / "embeddb.toml").write_text("[migrate]\nkeep_backups = 2\n")
    _failing_retries(db, folder, 3)
    assert len([n for n in _backups(tmp_path) if "-premigrate-" in n]) == 2
    (tmp_path / "embeddb.toml").write_text("[migrate]\nkeep_backups = 0\n")
    with pytest.raises(ConfigurationError, match=r"\[migrate\] keep_backups must be .* \(got 0\)"):
        migrate.up(db, folder)
    with pytest.raises(ConfigurationError, match="keep_backups must be"):
        migrate.up(db, folder, keep_backups=-1)


def test_no_copy_when_a_migration_file_cannot_be_loaded(sqlite_file_url, folder, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    migrate.up(db, folder, to=1, backup=False)
    (folder / "0004_data.py").write_text(
        "import no_such_module_for_embeddb\n\ndef up(db):\n    pass\n")
    with pytest.raises(MigrationFailed, match="cannot load 0004_data.py: ModuleNotFoundError"):
        migrate.up(db, folder)
    assert _backups(tmp_path) == []  # main: a copy per attempt, though nothing could run
    assert migrate.current_version(db) == 1  # 0002 and 0003 did not run either
    (folder / "0004_data.py").unlink()
    copy = migrate.up(db, folder).backup
    assert [os.path.basename(copy)] == _backups(tmp_path)  # one copy, of version 1
    assert sqlite3.connect(copy).execute(
        "SELECT max(version) FROM embeddb_migrations").fetchone()[0] == 1


@pytest.mark.parametrize("timeout", [-1, float("nan"), 10**9])
def test_lock_timeout_out_of_range_is_refused(db, folder, timeout):
    with pytest.raises(ConfigurationError, match="lock timeout .* between 0 and 86400"):
        migrate.up(db, folder, lock_timeout=timeout)
    assert "users" not in db.get_tables()


def test_a_waiting_runner_reports_the_holder_and_zero_means_no_wait(db, folder):
    """The holder here is this process (its own lock connection / lock file descriptor)."""
    events = []
    with backend_for(db).lock(db, 5):
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout):
            migrate.up(db, folder, lock_timeout=0, progress=events.append)
        assert time.monotonic() - started < 2  # PostgreSQL on main: lock_timeout=0s, no limit
    waits = [e for e in events if e.kind == "waiting"]
    assert len(waits) == 1 and waits[0].pid == os.getpid()
    assert "users" not in db.get_tables()


def test_no_copy_and_nothing_run_when_a_sqlite_script_is_unfinished(sqlite_file_url, folder,
                                                                     tmp_path):
    db = embeddb.connect(sqlite_file_url)
    migrate.up(db, folder, to=1, backup=False)
    (folder / "0004_trigger.up.sql").write_text(
        "CREATE TABLE audit (x TEXT);\n"
        "CREATE TRIGGER t AFTER INSERT ON users BEGIN\n"
        "  INSERT INTO audit VALUES ('it''s');\n")  # no END
    with pytest.raises(MigrationFailed, match="0004_trigger.up.sql line 2: the script ends "
                                              "inside a string, a comment or a trigger body"):
        migrate.up(db, folder)
    assert _backups(tmp_path) == [] and migrate.current_version(db) == 1  # main: 3, one copy
    (folder / "0004_trigger.up.sql").write_text(
        "CREATE TABLE audit (x TEXT);\n"
        "CREATE TRIGGER t AFTER INSERT ON users BEGIN\n"
        "  INSERT INTO audit VALUES ('it''s');\nEND; -- done\n")
    assert migrate.up(db, folder).names == ["0002_posts", "0003_tags", "0004_trigger"]
