"""``embeddb migrate ...``: thin commands over :mod:`embeddb.migrate`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from .. import migrate as api
from ..errors import EmbeddbError
from ..migrate.lock import MAX_LOCK_TIMEOUT
from ..migrate.status import CHANGED, FAILED
from .options import (
    all_option,
    database,
    db_option,
    each_database,
    emit_json,
    json_option,
    migrations_folder,
    report_failure,
)

_VERBS = {"applying": "Applying", "applied": "Applied", "reverting": "Reverting",
          "reverted": "Reverted"}


def migrations_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--migrations DIR`` (default: :func:`embeddb.folders.resolve`)."""
    return click.option(
        "--migrations",
        "directory",
        metavar="DIR",
        type=click.Path(file_okay=False),
        help="Migrations folder (default: $EMBEDDB_MIGRATIONS_DIR, ./migrations, or in an "
             "empty directory the bundled reference app's).",
    )(fn)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    return db_option(migrations_option(json_option(fn)))


def _run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--no-backup, --keep-backups and --lock-timeout: the options of every changing run."""
    fn = click.option(
        "--lock-timeout", type=click.FloatRange(0, MAX_LOCK_TIMEOUT), default=api.LOCK_TIMEOUT,
        show_default=True, metavar="SECONDS",
        help="How long to wait for another runner's migration lock (0: do not wait).",
    )(fn)
    fn = click.option(
        "--keep-backups", type=click.IntRange(min=1), metavar="N",
        help="Safety copies of this database to keep (default: [migrate] keep_backups in "
             "embeddb.toml, else 3).",
    )(fn)
    return click.option(
        "--no-backup", is_flag=True,
        help="Skip the safety copy (SQLite: a copy of the file; PostgreSQL: pg_dump).",
    )(fn)


@click.group()
def migrate() -> None:
    """Apply, revert and inspect the numbered migrations in a folder."""


def _ms(value: float | None) -> str:
    value = value or 0.0
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def _waiting(event: api.Event) -> str:
    holder = f"pid {event.pid}" if event.pid is not None else "another process"
    return f"Waiting for the migration lock held by {holder}..."


def migration_printer(as_json: bool) -> Callable[[api.Event], None] | None:
    if as_json:
        return None

    def show(event: api.Event) -> None:
        if event.kind == "waiting":
            click.echo(_waiting(event), err=True)
        elif event.kind == "backup":
            click.echo(f"Backup: {event.name}")
        elif event.duration_ms is None:
            click.echo(f"{_VERBS[event.kind]}: {event.name}")
        else:
            click.echo(f"{_VERBS[event.kind]}: {event.name} in {_ms(event.duration_ms)}")

    return show


class _Run:
    """What a run reported so far: printed as it happens, kept for a failure's report."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printer = migration_printer(as_json)
        self.done: list[dict[str, Any]] = []
        self.backup: str | None = None
        self.running: api.Event | None = None

    def __call__(self, event: api.Event) -> None:
        if self.printer is not None:
            self.printer(event)
        elif event.kind == "waiting":
            click.echo(_waiting(event), err=True)
        if event.kind == "backup":
            self.backup = event.name
        elif event.kind in ("applying", "reverting"):
            self.running = event
        elif event.kind in ("applied", "reverted"):
            self.running = None
            self.done.append({
                "version": event.version, "name": event.name,
                "direction": "up" if event.kind == "applied" else "down",
                "duration_ms": event.duration_ms,
            })

    def report(self, error: str) -> dict[str, Any]:
        return {
            "ok": False, "error": error, "steps": self.done,
            "names": [step["name"] for step in self.done],
            "failed": self.running.name if self.running else None,
            "backup": self.backup, "version": _version_now(),
        }


def _version_now() -> int | None:
    try:
        return api.current_version(database())
    except Exception:  # noqa: BLE001 - a report of a failure must not fail itself
        return None


@contextmanager
def _reporting(run: _Run) -> Iterator[None]:
    """On failure, the JSON report (what did apply, what was running); on Ctrl-C, one line
    and exit 130. The error line itself comes from the command group."""
    ctx = click.get_current_context()
    try:
        yield
    except EmbeddbError as exc:
        if run.as_json:
            report_failure(run.report(" ".join(str(exc).split())))
        raise
    except KeyboardInterrupt:
        if run.as_json:
            report_failure(run.report("interrupted"))
        done = ", ".join(step["name"] for step in run.done) or "nothing"
        stopped = ""
        if run.running is not None:
            outcome = ("was rolled back" if run.running.transaction
                       else "stopped part-way (no transaction: check what it did)")
            stopped = f"{run.running.name} {outcome}; "
        click.echo(
            f"Interrupted: {stopped}completed before: {done} "
            "(see `embeddb migrate status`)", err=True,
        )
        ctx.exit(130)


def _finish(result: api.RunResult, as_json: bool) -> None:
    refused = any(step.findings for step in result.steps)  # a dry run's findings
    if as_json:
        emit_json({"ok": not refused, **dataclasses.asdict(result), "names": result.names})
        if refused:
            raise SystemExit(1)
        return
    for record in result.missing:
        click.echo(
            f"Warning: version {record.version} ({record.name}) is applied but its file is "
            "missing", err=True,
        )
    if result.dry_run:
        for step in result.steps:
            verb = "Would apply" if step.direction == "up" else "Would revert"
            note = "" if step.transaction else " (no transaction)"
            click.echo(f"{verb}: {step.name}{note}")
            for sql in step.statements:
                click.echo("    " + sql.replace("\n", "\n    "))
            for finding in step.findings:
                click.echo(f"Problem: {finding}", err=True)
    if not result.steps:
        click.echo(f"Nothing to do: the database is at version {result.version or 0}")
    elif not result.dry_run:
        click.echo(f"Version: {result.version or 0}")
    if refused:
        raise SystemExit(1)


@migrate.command()
@_common
@click.option("--to", type=int, metavar="VERSION", help="Stop after this version.")
@click.option(
    "--dry-run", is_flag=True,
    help="Print what would run and change nothing; exit 1 if something would be refused.",
)
@click.option(
    "--allow-out-of-order", is_flag=True,
    help="Apply pending versions older than the newest applied one.",
)
@_run_options
@all_option
def up(
    directory: str | None, as_json: bool, to: int | None, dry_run: bool,
    allow_out_of_order: bool, no_backup: bool, keep_backups: int | None, lock_timeout: float,
    all_databases: bool,
) -> None:
    """Apply pending migrations in order (--all: in every configured database, each from its
    own folder).

    A safety copy is taken first when something will run (see --no-backup); Ctrl-C rolls back
    the migration that is running and exits 130.
    """
    if all_databases and directory:
        raise click.UsageError("--all takes each database's own migrations folder: drop "
                               "--migrations")

    def body() -> None:
        run = _Run(as_json)
        with _reporting(run):
            result = api.up(
                database(), directory, to=to, dry_run=dry_run, backup=not no_backup,
                allow_out_of_order=allow_out_of_order, progress=run, lock_timeout=lock_timeout,
                keep_backups=keep_backups,
            )
        _finish(result, as_json)

    each_database(all_databases, as_json, body)


@migrate.command()
@_common
@click.option("--steps", type=int, metavar="N", help="How many to revert (default 1).")
@click.option(
    "--to", type=int, metavar="VERSION",
    help="Revert everything above VERSION, an applied version (0: all). Not with --steps.",
)
@click.option(
    "--dry-run", is_flag=True,
    help="Print what would run and change nothing; exit 1 if something would be refused.",
)
@_run_options
def down(
    directory: str | None, as_json: bool, steps: int | None, to: int | None, dry_run: bool,
    no_backup: bool, keep_backups: int | None, lock_timeout: float,
) -> None:
    """Revert the newest migration (or --steps N, or --to VERSION), after a safety copy."""
    run = _Run(as_json)
    with _reporting(run):
        result = api.down(
            database(), directory, steps, to, dry_run=dry_run, backup=not no_backup,
            progress=run, lock_timeout=lock_timeout, keep_backups=keep_backups,
        )
    _finish(result, as_json)


@migrate.command()
@_common
@_run_options
def redo(
    directory: str | None, as_json: bool, no_backup: bool, keep_backups: int | None,
    lock_timeout: float,
) -> None:
    """Revert the newest migration and apply it again, after a safety copy."""
    run = _Run(as_json)
    with _reporting(run):
        result = api.redo(
            database(), directory, backup=not no_backup, progress=run,
            lock_timeout=lock_timeout, keep_backups=keep_backups,
        )
    _finish(result, as_json)


@migrate.command()
@_common
@all_option
def status(directory: str | None, as_json: bool, all_databases: bool) -> None:
    """List every version: applied (when, how long), pending, failed, changed or missing
    (--all: of every configured database).

    Exit status: 0 when nothing is wrong (pending versions included), 1 when a version is
    marked failed or an applied file's checksum changed (or on an error).
    """
    if all_databases and directory:
        raise click.UsageError("--all takes each database's own migrations folder: drop "
                               "--migrations")

    def body() -> None:
        entries = api.status(database(readonly=True), directory)
        if as_json:
            emit_json([dataclasses.asdict(e) for e in entries])
        else:
            if not entries:
                click.echo("No migrations.")
            for e in entries:
                when = f"  {e.applied_at}  {_ms(e.duration_ms)}" if e.applied_at else ""
                click.echo(f"{e.state:<17} {e.name}{when}")
        if any(e.state in (FAILED, CHANGED) for e in entries):
            click.get_current_context().exit(1)

    each_database(all_databases, as_json, body)


@migrate.command()
@_common
@all_option
def verify(directory: str | None, as_json: bool, all_databases: bool) -> None:
    """Fail if an applied file was edited or deleted, or a migration is marked failed
    (--all: in every configured database)."""
    if all_databases and directory:
        raise click.UsageError("--all takes each database's own migrations folder: drop "
                               "--migrations")

    def body() -> None:
        entries = api.verify(database(readonly=True), directory)
        applied = sum(1 for e in entries if e.state == "applied")
        if as_json:
            emit_json({"ok": True, "applied": applied})
        else:
            click.echo(f"OK: {applied} applied migration(s) match their files")

    each_database(all_databases, as_json, body)


@migrate.command()
@_common
def repair(directory: str | None, as_json: bool) -> None:
    """Accept the current content of edited applied files (record their new checksums)."""
    repaired = api.repair(database(create=False), directory)
    if as_json:
        emit_json({"repaired": repaired})
        return
    for name in repaired:
        click.echo(f"Repaired: {name}")
    if not repaired:
        click.echo("Nothing to repair: every applied file matches its checksum")


@migrate.command()
@_common
@click.argument("version", type=int)
@click.option(
    "--pending", is_flag=True,
    help="You undid its partial work: make it pending again (default: mark it applied).",
)
def resolve(directory: str | None, as_json: bool, version: int, pending: bool) -> None:
    """Settle a failed no-transaction migration you fixed by hand."""
    state = api.resolve(database(create=False), directory, version, applied=not pending)
    if as_json:
        emit_json({"version": version, "state": state})
    else:
        click.echo(f"Version {version} is now {state}")


@migrate.command()
@db_option
@migrations_option
@click.argument("name")
@click.option(
    "--dialect", type=click.Choice(["sqlite", "postgres"]),
    help="Write a variant used only on that backend.",
)
def new(directory: str | None, name: str, dialect: str | None) -> None:
    """Write the next-numbered NAME.up.sql / NAME.down.sql pair."""
    for path in api.new(migrations_folder(directory), name, dialect):
        click.echo(f"Created: {path}")
