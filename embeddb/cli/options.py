"""What every CLI command shares: the --db / --json options, opening the database, output."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..database import Database


@dataclass
class CliState:
    """Settings from the top-level group, available to every command as ``ctx.obj``."""

    db_url: str | None = None
    verbose: bool = False
    _db: Database | None = None

    def database(self, create: bool = True, readonly: bool = False) -> Database:
        """Connect once per invocation (URL from --db, env, embeddb.toml or the default);
        ``create`` and ``readonly`` as in :func:`embeddb.connect`."""
        if self._db is None:
            from ..database import connect  # here: `embeddb --version` needs no engine

            self._db = connect(self.db_url, create=create, readonly=readonly)
        return self._db


def _store_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        ctx.ensure_object(CliState).db_url = value
    return value


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--db URL`` on a command (also accepted before the command name)."""
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        expose_value=False,
        callback=_store_db,
        is_eager=True,
        help="Database URL (default: $EMBEDDB_DATABASE_URL, embeddb.toml, sqlite:///embeddb.db).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print one JSON document instead of the human layout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def database(create: bool = True, readonly: bool = False) -> Database:
    """The database for the running command: commands that only read pass ``readonly=True``,
    those that change an existing database ``create=False``; only the commands that build a
    database (migrate up/down/redo, seed, setup, backup restore) keep the default."""
    return click.get_current_context().ensure_object(CliState).database(create, readonly)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def report_written(paths: list[Any], as_json: bool) -> None:
    """What a command that generates a migration prints: the files, then what to run next."""
    if as_json:
        emit_json({"written": [str(p) for p in paths]})
        return
    for path in paths:
        click.echo(f"Wrote {path}")
    click.echo("Next: embeddb migrate up")
