"""One rule for the migrations and seeds folders, used by every command and the library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
import embeddb.seed
import embeddb.setup
from embeddb import folders, reference
from embeddb.cli import cli
from embeddb.errors import MigrationError


@pytest.fixture
def empty_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in (folders.MIGRATIONS_ENV, folders.SEEDS_ENV, "EMBEDDB_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--db", "sqlite:///app.db"])
    assert result.exit_code == 0, result.output
    return result.output


def test_commands_after_setup_in_an_empty_directory_use_the_same_folders(empty_dir):
    done = json.loads(_run("setup", "--env", "test", "--json"))
    assert done["migrations"] == str(reference.MIGRATIONS)
    status = json.loads(_run("migrate", "status", "--json"))
    assert status and {e["state"] for e in status} == {"applied"}
    assert json.loads(_run("migrate", "up", "--json"))["steps"] == []
    _run("migrate", "verify")
    _run("seed", "test")
    db = embeddb.connect("sqlite:///app.db")
    assert embeddb.seed.run(db, "test").env == "test"  # the library follows the rule too
    db.close()
    assert not (empty_dir / "migrations").exists() and not (empty_dir / "seeds").exists()


def test_a_project_folder_is_never_mixed_with_the_reference(empty_dir):
    assert folders.resolve() == (reference.MIGRATIONS, reference.SEEDS)
    assert folders.migrations() == reference.MIGRATIONS
    (empty_dir / "seeds").mkdir()  # a project with its own seeds and no migrations yet
    assert folders.resolve() == (Path("migrations"), Path("seeds"))
    db = embeddb.connect("sqlite:///app.db")
    with pytest.raises(MigrationError, match="no migrations folder at migrations"):
        embeddb.migrate.status(db)
    db.close()


def test_setup_with_an_unknown_env_creates_no_database(empty_dir):
    result = CliRunner().invoke(cli, ["setup", "--env", "nope", "--db", "sqlite:///app.db"])
    assert result.exit_code == 1 and "no seed set 'nope'" in result.output
    result = CliRunner().invoke(cli, ["setup", "--migrations", "missing", "--db",
                                      "sqlite:///app.db"])
    assert result.exit_code == 1 and "no migrations folder at missing" in result.output
    assert list(empty_dir.iterdir()) == []
