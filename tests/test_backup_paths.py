"""Backup commands on wrong or unwritable paths: one ``Error:`` line naming the user's path (never
an internal temp file), nothing invented, and listings that show what is really on disk."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, other_user, shared_directory

import embeddb
from embeddb.backup import create_backup, list_backups, manifest, restore_backup
from embeddb.cli import cli
from embeddb.errors import BackupError, ConfigurationError


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute_sql("INSERT INTO t (v) VALUES ('kept')")
    db.close()
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_error_line(result, *names: str) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
    assert "unexpected" not in result.output and ".tmp" not in result.output
    for name in names:
        assert name in result.output
    return result.output


def test_create_under_a_regular_file_names_the_users_path(app: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    url = f"sqlite:///{app}"
    out = _one_error_line(_run("--db", url, "backup", "create", "--dir", str(blocker / "b")),
                          str(blocker / "b"))
    assert out == (f"Error: cannot write the backup directory {blocker / 'b'}: {blocker} is a "
                   "file, not a directory\n")
    _one_error_line(_run("--db", url, "backup", "create", "--out", str(blocker / "x.sqlite3")),
                    str(blocker / "x.sqlite3"))
    assert blocker.read_text() == "a file"


def _create_into(url: str, directory: str) -> str:
    result = CliRunner().invoke(cli, ["--db", url, "backup", "create", "--dir", directory])
    return f"{result.exit_code} {result.output}"


@needs_root
def test_create_into_a_read_only_directory_as_its_user() -> None:
    with shared_directory() as home:
        live = home / "app.db"
        db = embeddb.connect(f"sqlite:///{live}")
        db.execute_sql("CREATE TABLE t (x)")
        db.close()
        os.chown(live, *other_user())
        locked = home / "locked"
        locked.mkdir(mode=0o555)  # root's: the other user may enter but not write
        outcome = as_user(_create_into, f"sqlite:///{live}", str(locked))
        code, message = outcome.split(" ", 1)
        assert code == "1"
        assert message.startswith(f"Error: cannot write the backup {locked}/app-")
        assert message.endswith(": Permission denied\n") and ".tmp" not in message
        assert list(locked.iterdir()) == []


def test_list_shows_the_names_on_disk_and_refuses_a_missing_dir(app: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{app}"
    folder = tmp_path / "b"
    made = create_backup(embeddb.connect(url), directory=str(folder)).path
    renamed = folder / "before-upgrade.sqlite3"
    os.rename(made, renamed)
    os.rename(manifest.sidecar(made), manifest.sidecar(str(renamed)))
    listed = json.loads(_run("--db", url, "backup", "list", "--dir", str(folder), "--json").stdout)
    assert [e["file"] for e in listed] == ["before-upgrade.sqlite3"]  # main: the old name
    human = _run("--db", url, "backup", "list", "--dir", str(folder))
    assert human.output.splitlines()[1].endswith("regular     before-upgrade.sqlite3")

    _one_error_line(_run("--db", url, "backup", "list", "--dir", str(tmp_path / "missing")),
                    str(tmp_path / "missing"))
    with pytest.raises(BackupError, match="does not exist"):
        list_backups(str(tmp_path / "missing"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    new_db = fresh / "new.db"
    embeddb.connect(f"sqlite:///{new_db}").close()
    default = _run("--db", f"sqlite:///{new_db}", "backup", "list")  # no backups/ yet: fine
    assert default.exit_code == 0 and default.output == "no backups\n"


def test_failed_restore_names_the_backup_not_a_temp_file(app: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{app}"
    backup = create_backup(embeddb.connect(url), directory=str(tmp_path / "b"))
    with open(backup.path, "r+b") as fh:  # damage behind a matching checksum
        fh.seek(backup.manifest.page_size)  # the b-tree page of table t
        fh.write(b"\xff" * 64)
    record = manifest.read(backup.path)
    record.sha256 = record.data_sha256 = manifest.files.sha256_file(backup.path)
    manifest.write(backup.path, record)
    before = app.read_bytes()
    out = _one_error_line(_run("--db", url, "backup", "restore", backup.path, "--yes"), backup.path)
    assert out.startswith(f"Error: {backup.path} ")
    assert app.read_bytes() == before
    assert sorted(p.name for p in app.parent.iterdir()) == ["app.db", "b"]


def test_restore_onto_a_missing_database_keeps_no_empty_safety_copy(app: Path, tmp_path: Path) -> None:
    backup = create_backup(embeddb.connect(f"sqlite:///{app}"), directory=str(tmp_path / "b"))
    target_dir = tmp_path / "elsewhere"
    target_dir.mkdir()
    target = target_dir / "restored.db"
    result = _run("--db", f"sqlite:///{target}", "backup", "restore", backup.path, "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["safety_copy"] is None
    assert [p.name for p in target_dir.iterdir() if "pre-restore" in p.name] == []
    assert embeddb.connect(f"sqlite:///{target}").execute_sql("SELECT v FROM t").fetchall() == [
        ("kept",)]
    human = _run("--db", f"sqlite:///{tmp_path / 'other.db'}", "backup", "restore", backup.path,
                 "--yes")
    assert "no previous data to keep" in human.output and "None" not in human.output


def test_memory_database_has_nothing_to_back_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run("--db", "sqlite:///:memory:", "backup", "create")
    assert _one_error_line(result, "nothing to back up", "sqlite:///:memory:") == (
        "Error: sqlite:///:memory: is an empty in-memory database: nothing to back up (it lives "
        "only inside the process that made it; back up a file database)\n")
    assert list(tmp_path.iterdir()) == []  # not even an empty backups/ directory


def test_restore_beside_an_unwritable_directory_names_the_database(app: Path, tmp_path: Path) -> None:
    backup = create_backup(embeddb.connect(f"sqlite:///{app}"), directory=str(tmp_path / "b"))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = _run("--db", f"sqlite:///{app}", "backup", "restore", backup.path, "--yes",
                  "--safety-dir", str(blocker / "safety"))
    _one_error_line(result, str(blocker / "safety"))
    shutil.rmtree(tmp_path / "b")


def test_restore_into_a_missing_file_gets_sqlites_default_mode(app: Path, tmp_path: Path) -> None:
    backup = create_backup(embeddb.connect(f"sqlite:///{app}"), directory=str(tmp_path / "b"))
    target = tmp_path / "new.db"
    db = embeddb.connect(f"sqlite:///{target}")
    db.close()
    for path in tmp_path.glob("new.db*"):
        path.unlink()  # the library call may meet a path with no file at all
    result = restore_backup(db, backup.path)
    assert result["safety_copy"] is None
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask  # not the backup's private 0600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new.db")) == ["new.db"]


def _restore_error(url: str, backup: str, lock: str | None = None) -> str:
    """Restore as the current user; with ``lock``, that directory (the user's own) is made
    read-only once the database is open (its -wal and -shm made)."""
    db = embeddb.connect(url)
    db.execute_sql("SELECT count(*) FROM sqlite_master")
    try:
        if lock:
            os.chmod(lock, 0o555)
        restore_backup(db, backup)
    except BackupError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if lock:
            os.chmod(lock, 0o755)
    return "restored"


@needs_root
def test_restore_names_an_unreadable_backup_or_an_unwritable_database_directory() -> None:
    """The two OS errors of staging a restore, as the database's user: a backup it cannot read
    is named as the backup; a directory where it cannot stage the copy names the database."""
    with shared_directory() as home:
        live = home / "app.db"
        db = embeddb.connect(f"sqlite:///{live}")
        db.execute_sql("CREATE TABLE t (x)")
        db.close()
        os.chown(live, *other_user())
        backup = create_backup(embeddb.connect(f"sqlite:///{live}"), directory=str(home / "b"))
        for path in (backup.path, manifest.sidecar(backup.path)):
            os.chown(path, 0, 0)  # root's (a backup of another user's database is theirs)
        os.chmod(manifest.sidecar(backup.path), 0o644)  # the manifest readable, the data not
        before = live.read_bytes()
        assert as_user(_restore_error, f"sqlite:///{live}", backup.path) == (
            f"BackupError: cannot read the backup {backup.path}: Permission denied")

        os.chmod(backup.path, 0o644)
        locked = home / "locked"
        locked.mkdir()
        inside = locked / "app.db"
        shutil.copy(live, inside)
        for path in (locked, inside):
            os.chown(path, *other_user())
        assert as_user(_restore_error, f"sqlite:///{inside}", backup.path, str(locked)) == (
            f"BackupError: cannot restore {backup.path} into {inside}: Permission denied "
            "(the copy is staged beside it)")
        assert live.read_bytes() == before and inside.read_bytes() == before
        assert [p.name for p in locked.iterdir() if p.name.endswith(".tmp")] == []


def test_restore_into_a_memory_database_is_refused_with_what_to_do(app: Path, tmp_path: Path) -> None:
    backup = create_backup(embeddb.connect(f"sqlite:///{app}"), directory=str(tmp_path / "b"))
    with pytest.raises(ConfigurationError) as caught:
        restore_backup(embeddb.connect("sqlite:///:memory:"), backup.path)
    assert str(caught.value) == ("cannot restore into an in-memory database: restore into a file "
                                 "(--db sqlite:///x.db)")
