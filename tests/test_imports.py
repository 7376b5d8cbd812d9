"""What importing embeddb and running a CLI command loads: only what is used (fresh interpreters).

peewee 4.5 itself imports psycopg2 (and psycopg2.extras) when it is imported, so the checks
that embeddb adds no driver import run with psycopg2 made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: never loaded by ``import embeddb``: the engine, its PostgreSQL pool, cache, backup, migrate
HEAVY = ("embeddb.database", "playhouse.pool", "diskcache", "embeddb.cache", "embeddb.backup",
         "embeddb.migrate", "embeddb.repository", "embeddb.seed", "embeddb.cli")


def _loaded(code: str, block_psycopg2: bool = False) -> set[str]:
    prelude = "import sys\n"
    if block_psycopg2:
        prelude += "sys.modules['psycopg2'] = None\nsys.modules['psycopg'] = None\n"
    script = prelude + code + "\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", "import json\n" + script],
                          capture_output=True, text=True, check=True)
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _under(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in prefixes or m.startswith(tuple(f"{p}." for p in prefixes)))


def test_import_embeddb_loads_no_engine_driver_cache_backup_or_migrate_code():
    loaded = _loaded("import embeddb\nassert embeddb.__version__", block_psycopg2=True)
    assert _under(loaded, HEAVY) == []


def test_the_engine_is_loaded_on_first_use_and_sqlite_needs_no_driver():
    loaded = _loaded("import embeddb\ndb = embeddb.connect('sqlite:///:memory:')\n"
                     "assert isinstance(db, embeddb.SqliteEngine)", block_psycopg2=True)
    assert "embeddb.database" in loaded
    assert _under(loaded, ("diskcache", "embeddb.backup", "embeddb.migrate")) == []


def test_unknown_attributes_still_fail():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import embeddb

        embeddb.nope  # noqa: B018


@pytest.mark.parametrize("args, allowed", [
    (["--version"], ()),
    (["--db", "sqlite:///:memory:", "info"], ("embeddb.database", "playhouse.pool")),
])
def test_the_cli_loads_only_the_command_it_runs(args, allowed):
    loaded = _loaded(f"from embeddb.cli import main\ntry:\n    main({args!r})\n"
                     "except SystemExit as exc:\n    assert not exc.code, exc.code")
    commands = sorted(m for m in loaded if m.startswith("embeddb.cli.") and m != "embeddb.cli.options")
    assert commands == (["embeddb.cli.info"] if "info" in args else [])
    heavy = [m for m in _under(loaded, HEAVY[:-1]) if m not in allowed]
    assert heavy == []


def test_every_command_still_resolves():
    import click

    from embeddb.cli import COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert any(p.name == "verbose" for p in _leaf_params(command))


def _leaf_params(command):
    import click

    if isinstance(command, click.Group):
        return [p for sub in command.commands.values() for p in _leaf_params(sub)]
    return command.params
