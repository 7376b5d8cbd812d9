"""``embeddb migrate ...`` through click's CliRunner, on a SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from embeddb.cli import cli



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
