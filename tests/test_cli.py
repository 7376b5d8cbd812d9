"""The CLI skeleton: version, info, one-line errors, help for every command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import embeddb
from embeddb import __version__
from embeddb.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_info_human_and_json(runner, db_url):
    embeddb.connect(db_url).close()  # info only reads: the database must exist
    result = runner.invoke(cli, ["--db", db_url, "info"])
    assert result.exit_code == 0, result.output
    assert "backend" in result.output and "settings:" in result.output
    result = runner.invoke(cli, ["info", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["backend"] in ("sqlite", "postgresql")
    assert data["settings"]


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://h/db", "unknown database URL scheme"),
        ("not a url", "malformed database URL"),
        ("sqlite:////no/such/dir/app.db", "no database at /no/such/dir/app.db"),
        ("postgresql://u:topsecret@127.0.0.1:1/db?connect_timeout=2", "cannot connect"),
    ],
)
def test_bad_input_is_one_error_line(runner, url, fragment):
    result = runner.invoke(cli, ["--db", url, "info"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]
    assert "Traceback" not in result.output and "topsecret" not in result.output


def test_verbose_shows_the_traceback(runner):
    result = runner.invoke(cli, ["--verbose", "--db", "mysql://h/db", "info"])
    assert result.exit_code != 0
    assert result.exception is not None and "unknown database URL scheme" in str(result.exception)


@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_prints_a_real_traceback_and_quiet_runs_do_not(verbose):
    args = ["--verbose"] * verbose + ["--db", "mysql://h/db", "info"]
    proc = subprocess.run([sys.executable, "-c", "from embeddb.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    if verbose:
        assert proc.stderr.startswith("Traceback (most recent call last):")
        assert "ConfigurationError: unknown database URL scheme" in proc.stderr.splitlines()[-1]
    else:
        assert proc.stderr.startswith("Error: unknown database URL scheme")
        assert len(proc.stderr.splitlines()) == 1


def _commands(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the top level loads its commands lazily
        command = group.get_command(ctx, name)
        assert command is not None, name
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} ")


@pytest.mark.parametrize("path, command", list(_commands(cli)))
def test_every_command_has_help_and_is_in_the_readme(path, command):
    assert (command.help or "").strip(), f"embeddb {path} has no help text"
    assert f"embeddb {path}" in README, f"embeddb {path} is not in README.md"


def test_database_errors_stay_on_one_line(runner, cli_db_url, tmp_path):
    """PostgreSQL's messages carry "LINE 1:" and a caret line; the CLI prints one line."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_bad.up.sql").write_text("CREATE TABLE ok (x INTEGER);\nSELEC 1;\n")
    result = runner.invoke(cli, ["migrate", "up", "--db", cli_db_url, "--migrations",
                                 str(folder), "--no-backup"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "0001_bad" in errors[0] and "SELEC" in errors[0]
    assert result.output.strip().splitlines()[-1] == errors[0]


def test_info_names_the_settings_sqlite_reports_as_numbers(runner, sqlite_file_url):
    embeddb.connect(sqlite_file_url).close()
    result = runner.invoke(cli, ["info", "--db", sqlite_file_url])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()}
    assert lines["synchronous"] == ["NORMAL"] and lines["temp_store"] == ["MEMORY"]
    assert lines["access"] == ["read-only"]  # info only reads


def test_verbose_is_accepted_after_the_command_too(runner):
    for args in (["migrate", "status", "--verbose"], ["info", "-v"], ["backup", "list", "-v"]):
        result = runner.invoke(cli, [*args, "--db", "mysql://h/db"])
        assert result.exit_code != 0
        assert "unknown database URL scheme" in str(result.exception), (args, result.output)
        assert not isinstance(result.exception, SystemExit)  # raised: the traceback shows


def _interrupt(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``embeddb args``, wait for its READY line on stdout, then Ctrl-C it (SIGINT)."""
    proc = subprocess.Popen([sys.executable, "-c", "from embeddb.cli import main; main()", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    (tmp_path / "slow_models.py").write_text(
        "import sys, time\nprint('READY', flush=True)\ntime.sleep(60)\nMODELS = []\n")
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    db.close()
    done = _interrupt(["schema", "check", "--db", "sqlite:///app.db", "--models",
                       "slow_models:MODELS"], tmp_path, env)
    assert done.returncode == 130 and done.stderr.strip() == "Interrupted.", done.stderr

    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_slow.py").write_text(
        "import time\n\ndef up(db):\n    db.execute_sql('CREATE TABLE half (a)')\n"
        "    print('READY', flush=True)\n    time.sleep(60)\n")
    done = _interrupt(["migrate", "up", "--db", "sqlite:///app.db", "--no-backup", "--json"],
                      tmp_path, env)
    lines = done.stderr.strip().splitlines()  # migrate says what was rolled back
    assert done.returncode == 130 and len(lines) == 1 and lines[0].startswith("Interrupted")
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    assert not db.table_exists("half")  # rolled back
    db.close()


def _commands(group: click.Group, path: list[str], ctx: click.Context):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands(command, [*path, name], ctx)
        else:
            yield [*path, name], command


_JSON_COMMANDS = [
    (path, [p for p in command.params if isinstance(p, click.Argument) and p.required])
    for path, command in _commands(cli, [], click.Context(cli))
    if any(p.name == "as_json" for p in command.params)
]


@pytest.mark.parametrize("path,arguments", _JSON_COMMANDS,
                         ids=[" ".join(path) for path, _ in _JSON_COMMANDS])
def test_every_json_command_fails_as_a_json_document(path, arguments, tmp_path, monkeypatch):
    """A script reading --json output gets a document on failure too: {"ok": false, "error"}
    with the same message as the one-line Error: on stderr (a mistyped database path here)."""
    monkeypatch.chdir(tmp_path)
    args = ["x" for _ in arguments]
    result = CliRunner().invoke(
        cli, ["--db", f"sqlite:///{tmp_path / 'mistyped' / 'app.db'}", *path, *args, "--json"])
    document = json.loads(result.stdout)  # whatever happened, stdout is one JSON document
    if result.exit_code == 0:
        return  # needs no database (outbox init writes a migration)
    assert document["ok"] is False
    assert document["error"] and "\n" not in document["error"]
    if result.exit_code == 1:
        assert result.stderr == f"Error: {document['error']}\n"
    assert not (tmp_path / "mistyped").exists()
    assert len(_JSON_COMMANDS) >= 30  # the walk found the CLI's commands
