"""What every CLI command shares: the --db / --database / --all / --json options, opening the
database, output."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..url import redact

if TYPE_CHECKING:
    from ..config import NamedDatabase
    from ..database import Database


@dataclass
class CliState:
    """Settings from the top-level group, available to every command as ``ctx.obj``."""

    db_url: str | None = None
    #: ``--database NAME``: a database of embeddb.toml ([databases.NAME])
    db_name: str | None = None
    verbose: bool = False
    #: under ``--all``: what ``emit_json`` was given, kept for the combined report
    collected: list[Any] | None = None
    as_json: bool = False  # the command was given --json: a failure is a JSON document too
    json_asked: bool = False  # --json is among the arguments (parsed yet or not)
    failure_reported: bool = False  # the command printed its own JSON failure report
    _db: Database | None = None

    def target(self) -> str | None:
        """What ``connect`` is given: the name, the URL, or None (the default database)."""
        return self.db_name if self.db_name is not None else self.db_url

    def entry(self) -> NamedDatabase:
        """The embeddb.toml entry of the database chosen (its folders), without connecting.

        :raises ConfigurationError: ``--database`` names no configured database.
        """
        from ..config import database_entry

        return database_entry(self.target())

    def database(self, create: bool = True, readonly: bool = False) -> Database:
        """Connect once per invocation (by --database NAME, else the URL from --db, env,
        embeddb.toml or the default); ``create`` and ``readonly`` as in :func:`embeddb.connect`."""
        if self._db is None:
            from ..database import connect  # here: `embeddb --version` needs no engine

            self._db = connect(self.target(), create=create, readonly=readonly)
        return self._db

    def select(self, name: str) -> None:
        """Switch to the database ``name`` (``--all``), closing the one open."""
        self.close()
        self.db_name = name

    def close(self) -> None:
        if self._db is not None:
            close_all = getattr(self._db, "close_all", None)
            close_all() if close_all is not None else self._db.close()
            self._db = None


def _store_db(ctx: click.Context, _param: click.Parameter,
              values: tuple[str, ...]) -> tuple[str, ...]:
    from ..config import is_name

    state = ctx.ensure_object(CliState)
    for value in values:
        if is_name(value):  # it would open that name, with --db's URL rules (backup scope)
            raise click.BadParameter(
                f"{value!r} is a database name, not a URL: use --database {value}")
        if state.db_url is not None and state.db_url != value:
            raise click.UsageError(
                f"--db given twice ({redact(state.db_url)}, {redact(value)}): give one URL")
        state.db_url = value
        _exclusive(state)
    return values


def _store_name(ctx: click.Context, _param: click.Parameter,
                values: tuple[str, ...]) -> tuple[str, ...]:
    from ..config import is_name

    state = ctx.ensure_object(CliState)
    for value in values:
        if not is_name(value):
            raise click.BadParameter(
                f"{value!r} is not a database name (a letter, then letters, digits or _); "
                "a URL goes to --db")
        if state.db_name is not None and state.db_name != value:
            # several, before or after the command name: which was meant is not ours to guess
            raise click.UsageError(
                f"--database given twice ({state.db_name}, {value}): name one database "
                "(or use --all where the command has it)")
        state.db_name = value
        _exclusive(state)
    return values


def _exclusive(state: CliState) -> None:
    if state.db_url is not None and state.db_name is not None:
        raise click.UsageError(
            f"--db {redact(state.db_url)} and --database {state.db_name} exclude each other: "
            "give a URL or a name of embeddb.toml")


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--db URL`` and ``--database/-d NAME`` on a command (also accepted before the command
    name)."""
    fn = click.option(
        "--database",
        "-d",
        "db_name",
        metavar="NAME",
        multiple=True,  # so that a second, different name is refused, not silently used
        expose_value=False,
        callback=_store_name,
        is_eager=True,
        help="A database named in embeddb.toml ([databases.NAME]); not with --db.",
    )(fn)
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        multiple=True,
        expose_value=False,
        callback=_store_db,
        is_eager=True,
        help="Database URL (default: $EMBEDDB_DATABASE_URL, embeddb.toml, sqlite:///embeddb.db).",
    )(fn)


#: the exit code of a command stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED = 130


def all_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--all``: run over every database of embeddb.toml (see :func:`each_database`)."""
    return click.option(
        "--all", "all_databases", is_flag=True,
        help="Run over every database embeddb.toml configures, each reported separately; "
             "go on past a failure, exit 1 if any failed.")(fn)


def each_database(all_databases: bool, as_json: bool, body: Callable[[], None]) -> None:
    """Run ``body`` once, or with ``all_databases`` once per configured database (the default
    ``[database]`` first, as ``default``, when embeddb.toml has one; then each
    ``[databases.NAME]``), going on past failures. Human output: each database's own output
    under a ``== NAME ==`` line, then a summary; ``--json``: one document
    ``{"ok", "databases": [{"database", "ok", "error", "result"}]}``. Exit 1 if any failed.
    Ctrl-C stops the run (exit 130); under ``--json`` the document then also has
    ``"interrupted": true`` and ``not_run`` (the databases not reached).

    :raises click.UsageError: ``--all`` with ``--db`` or ``--database``.
    :raises ConfigurationError: embeddb.toml configures no database to run over.
    """
    if not all_databases:
        body()
        return
    from ..config import configured_names
    from ..errors import EmbeddbError

    ctx = click.get_current_context()
    state = ctx.ensure_object(CliState)
    if state.db_url is not None or state.db_name is not None:
        raise click.UsageError("--all runs over every configured database: drop --db / --database")
    names = configured_names()
    reports: list[dict[str, Any]] = []
    for name in names:
        state.select(name)
        if not as_json:
            click.echo(f"== {name} ==")
        state.collected = []
        state.failure_reported = False
        error: str | None = None
        try:
            body()
        except (KeyboardInterrupt, click.exceptions.Exit) as exc:
            interrupted = isinstance(exc, KeyboardInterrupt) or exc.exit_code == INTERRUPTED
            if interrupted:  # Ctrl-C stops the whole run: report what ran, then stop
                reports.append(_report(name, "interrupted", state.collected))
                state.collected = None
                if as_json:
                    emit_json({"ok": False, "interrupted": True, "databases": reports,
                               "not_run": names[len(reports):]})
                    state.failure_reported = True
                raise
            assert isinstance(exc, click.exceptions.Exit)
            if exc.exit_code:
                error = f"exit status {exc.exit_code}"
        except SystemExit as exc:
            if exc.code:
                error = f"exit status {exc.code}"
        except EmbeddbError as exc:
            error = " ".join(str(exc).split())
            if not as_json:
                click.echo(f"Error: {error}", err=True)
        finally:
            collected, state.collected = state.collected, None
            state.close()
        reports.append(_report(name, error, collected))
    failed = [r["database"] for r in reports if not r["ok"]]
    if as_json:
        emit_json({"ok": not failed, "databases": reports})
    else:
        summary = f"{len(names) - len(failed)} of {len(names)} database(s) OK"
        click.echo(f"== {summary}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        ctx.exit(1)


def _report(name: str, error: str | None, collected: list[Any] | None) -> dict[str, Any]:
    """One database's entry of an ``--all --json`` document."""
    return {"database": name, "ok": error is None, "error": error,
            "result": collected[-1] if collected else None}


def _store_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(CliState).as_json = True
    return value


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print one JSON document instead of the human layout; on failure
    ``{"ok": false, "error": ...}`` (the command group prints it, see :func:`report_failure`)."""
    return click.option("--json", "as_json", is_flag=True, callback=_store_json,
                        help="Print JSON for scripts (also on failure).")(fn)


def database(create: bool = True, readonly: bool = False) -> Database:
    """The database for the running command: commands that only read pass ``readonly=True``,
    those that change an existing database ``create=False``; only the commands that build a
    database (migrate up/down/redo, seed, setup, backup restore) keep the default."""
    return click.get_current_context().ensure_object(CliState).database(create, readonly)


def migrations_folder(directory: str | None) -> str | None:
    """``--migrations DIR``, else the folder embeddb.toml gives the database chosen (for the
    commands that write migrations without opening the database)."""
    if directory:
        return directory
    return click.get_current_context().ensure_object(CliState).entry().migrations


def seeds_folder(directory: str | None) -> str | None:
    """``--seeds DIR``, else the folder embeddb.toml gives the database chosen."""
    if directory:
        return directory
    return click.get_current_context().ensure_object(CliState).entry().seeds


def emit_json(data: Any) -> None:
    state = click.get_current_context().find_object(CliState)
    if state is not None and state.collected is not None:  # under --all: one report at the end
        state.collected.append(data)
        return
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=False))


def report_failure(data: dict[str, Any]) -> None:
    """Print a command's own JSON account of its failure (``"ok": false`` and more), instead
    of the group's plain ``{"ok": false, "error": ...}``."""
    emit_json(data)
    click.get_current_context().ensure_object(CliState).failure_reported = True


def report_written(paths: list[Any], as_json: bool) -> None:
    """What a command that generates a migration prints: the files, then what to run next."""
    if as_json:
        emit_json({"written": [str(p) for p in paths]})
        return
    for path in paths:
        click.echo(f"Wrote {path}")
    state = click.get_current_context().ensure_object(CliState)
    chosen = f"-d {state.db_name} " if state.db_name else ""  # else it migrates the default one
    click.echo(f"Next: embeddb {chosen}migrate up")
