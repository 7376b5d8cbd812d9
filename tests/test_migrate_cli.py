"""``embeddb migrate ...`` through click's CliRunner, on a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import embeddb
from embeddb import migrate
from embeddb.cli import cli
from embeddb.migrate.backends import backend_for


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """PostgreSQL safety dumps go to ./backups: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "migrations"
    path.mkdir()
    (path / "0001_create_users.up.sql").write_text("CREATE TABLE users (id INTEGER);")
    (path / "0001_create_users.down.sql").write_text("DROP TABLE users;")
    (path / "0002_add_posts.up.sql").write_text("CREATE TABLE posts (id INTEGER);")
    (path / "0002_add_posts.down.sql").write_text("DROP TABLE posts;")
    return path


def run(runner, url, folder, *args):
    return runner.invoke(cli, ["--db", url, "migrate", *args, "--migrations", str(folder)])


def test_up_prints_each_migration_and_its_duration(runner, url, folder):
    result = run(runner, url, folder, "up")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Applying: 0001_create_users" in lines and "Applying: 0002_add_posts" in lines
    assert any(re.fullmatch(r"Applied: 0001_create_users in [\d.]+ms", line) for line in lines)
    assert lines[-1] == "Version: 2"
    assert not lines[0].startswith("Backup: ")  # a new, empty database has nothing to save
    again = run(runner, url, folder, "up")
    assert again.output.strip() == "Nothing to do: the database is at version 2"


def test_status_json_verify_down_redo(runner, url, folder):
    run(runner, url, folder, "up", "--to", "1", "--no-backup")
    status = json.loads(run(runner, url, folder, "status", "--json").output)
    assert [(e["version"], e["state"]) for e in status] == [(1, "applied"), (2, "pending")]
    human = run(runner, url, folder, "status").output
    assert "applied" in human and "pending" in human and "0002_add_posts" in human
    assert run(runner, url, folder, "verify").output.startswith("OK: 1 applied")
    dry = run(runner, url, folder, "up", "--dry-run")
    assert "Would apply: 0002_add_posts" in dry.output and "CREATE TABLE posts" in dry.output
    run(runner, url, folder, "up", "--no-backup")
    redo = run(runner, url, folder, "redo", "--no-backup")
    assert "Reverted: 0002_add_posts" in redo.output and "Applied: 0002_add_posts" in redo.output
    down = run(runner, url, folder, "down", "--to", "0", "--json", "--no-backup")
    assert json.loads(down.output)["names"] == ["0002_add_posts", "0001_create_users"]


def test_failure_is_one_error_line_and_exit_1(runner, url, folder):
    (folder / "0003_bad.up.sql").write_text("CREATE TABLE fine (x INTEGER);\nSELECT * FROM missing;")
    result = run(runner, url, folder, "up", "--no-backup")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "0003_bad.up.sql line 2" in errors[0]
    assert "Traceback" not in result.output
    (folder / "0001_create_users.up.sql").write_text("CREATE TABLE users (id BIGINT);")
    verify = run(runner, url, folder, "verify")
    assert verify.exit_code == 1 and "0001_create_users.up.sql changed" in verify.output
    assert "Repaired: 0001_create_users" in run(runner, url, folder, "repair").output


def test_resolve_and_new(runner, url, folder):
    (folder / "0003_nt.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nSELECT * FROM missing;")
    assert run(runner, url, folder, "up", "--no-backup").exit_code == 1
    assert "failed" in run(runner, url, folder, "status").output
    assert run(runner, url, folder, "resolve", "3").output.strip() == "Version 3 is now applied"
    created = run(runner, url, folder, "new", "add search", "--dialect", "postgres")
    assert "0004_add_search.postgres.up.sql" in created.output
    assert (folder / "0004_add_search.postgres.down.sql").exists()


def test_missing_folder_is_an_error_line(runner, tmp_path):
    result = runner.invoke(cli, ["--db", f"sqlite:///{tmp_path / 'a.db'}", "migrate", "up",
                                 "--migrations", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: no migrations folder at")


def test_status_exit_code_says_whether_something_is_wrong(runner, url, folder):
    embeddb.connect(url).close()  # status only reads: it never creates the database
    assert run(runner, url, folder, "status").exit_code == 0  # merely pending
    run(runner, url, folder, "up", "--no-backup")
    assert run(runner, url, folder, "status").exit_code == 0
    (folder / "0001_create_users.up.sql").write_text("CREATE TABLE users (id BIGINT);")
    changed = run(runner, url, folder, "status", "--json")
    assert changed.exit_code == 1  # main: 0
    assert json.loads(changed.stdout)[0]["state"] == "checksum changed"
    run(runner, url, folder, "repair")
    (folder / "0003_nt.up.sql").write_text(
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nSELECT * FROM missing;")
    run(runner, url, folder, "up", "--no-backup")
    failed = run(runner, url, folder, "status")
    assert failed.exit_code == 1 and "failed" in failed.output
    help_text = " ".join(runner.invoke(cli, ["migrate", "status", "--help"]).output.split())
    assert "Exit status: 0" in help_text and "1 when a version" in help_text


def test_json_report_on_failure_says_what_applied(runner, url, folder):
    (folder / "0003_bad.up.sql").write_text("CREATE TABLE fine (x INTEGER);\nSELECT * FROM nope;")
    result = run(runner, url, folder, "up", "--json", "--no-backup")
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # main: nothing on stdout
    assert report["ok"] is False and "0003_bad.up.sql line 2" in report["error"]
    assert report["names"] == ["0001_create_users", "0002_add_posts"]
    assert report["failed"] == "0003_bad" and report["version"] == 2
    assert [s["direction"] for s in report["steps"]] == ["up", "up"]
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    refused = run(runner, url, folder, "down", "--to", "-3", "--json")
    assert refused.exit_code == 1 and json.loads(refused.stdout)["names"] == []
    assert "--to must be 0" in json.loads(refused.stdout)["error"]
    ok = run(runner, url, folder, "down", "--steps", "1", "--json", "--no-backup")
    assert json.loads(ok.stdout)["ok"] is True


def test_down_to_with_steps_and_negative_to_are_refused(runner, url, folder):
    run(runner, url, folder, "up", "--no-backup")
    for args in (["--to", "-3"], ["--to", "1", "--steps", "1"], ["--to", "7"]):
        result = run(runner, url, folder, "down", *args)
        assert result.exit_code == 1, args
        assert result.output.count("\n") == 1 and "nothing was changed" in result.output, args
    status = json.loads(run(runner, url, folder, "status", "--json").stdout)
    assert [e["state"] for e in status] == ["applied", "applied"]


@pytest.mark.parametrize("value", ["-1", "100000", "soon"])
def test_lock_timeout_is_validated(runner, url, folder, value):
    result = run(runner, url, folder, "up", "--lock-timeout", value)
    assert result.exit_code == 2 and "--lock-timeout" in result.output


EMBEDDB = [sys.executable, "-c", "from embeddb.cli import main; main()"]


def _spawn(url: str, folder, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*EMBEDDB, "--db", url, "migrate", *args, "--migrations", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_second_runner_says_whom_it_waits_for(url, folder):
    db = embeddb.connect(url)
    try:
        with backend_for(db).lock(db, 5):  # held by this process
            proc = _spawn(url, folder, "up", "--lock-timeout", "1")
            out, err = proc.communicate(timeout=60)
    finally:
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()
    assert proc.returncode == 1
    lines = err.splitlines()
    assert lines[0] == f"Waiting for the migration lock held by pid {os.getpid()}..."  # main: silent
    assert lines[1].startswith("Error: another migration runner held the lock") and len(lines) == 2
    done = _spawn(url, folder, "up", "--no-backup", "--lock-timeout", "0")
    assert done.communicate(timeout=60)[0].splitlines()[-1] == "Version: 2"


def test_ctrl_c_rolls_back_the_running_migration_and_exits_130(url, folder, tmp_path):
    marker = tmp_path / "started"
    (folder / "0003_slow.py").write_text(
        "import time\n\n"
        "def up(db):\n"
        "    db.execute_sql('CREATE TABLE half (x INTEGER)')\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    time.sleep(60)\n"
    )
    proc = _spawn(url, folder, "up", "--no-backup")
    deadline = time.monotonic() + 30
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)  # main: 1 and "Aborted!"
    assert err.splitlines() == [
        "Interrupted: 0003_slow was rolled back; completed before: 0001_create_users, "
        "0002_add_posts (see `embeddb migrate status`)"]
    db = embeddb.connect(url)
    try:
        assert migrate.current_version(db) == 2 and "half" not in db.get_tables()
    finally:
        db.close()
        if hasattr(db, "close_all"):
            db.close_all()


def test_keep_backups_option_prunes_the_safety_copies(runner, tmp_path, folder):
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    run(runner, url, folder, "up", "--no-backup")
    (folder / "0003_bad.up.sql").write_text("SELECT * FROM nope;")
    for _ in range(3):
        assert run(runner, url, folder, "up", "--keep-backups", "2").exit_code == 1
    copies = [p for p in (tmp_path / "backups").iterdir() if p.name.endswith(".db")]
    assert len(copies) == 2
    refused = run(runner, url, folder, "up", "--keep-backups", "0")
    assert refused.exit_code == 2 and "--keep-backups" in refused.output
