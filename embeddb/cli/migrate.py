"""``embeddb migrate ...``: thin commands over :mod:`embeddb.migrate`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from .. import migrate as api
from .options import database, db_option, emit_json, json_option

_VERBS = {"applying": "Applying", "applied": "Applied", "reverting": "Reverting",
          "reverted": "Reverted"}


def migrations_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--migrations DIR`` (default $EMBEDDB_MIGRATIONS_DIR or ./migrations)."""
    return click.option(
        "--migrations",
        "directory",
        metavar="DIR",
        type=click.Path(file_okay=False),
        help="Migrations folder (default: $EMBEDDB_MIGRATIONS_DIR or ./migrations).",
    )(fn)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    return db_option(migrations_option(json_option(fn)))


def _no_backup(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--no-backup", is_flag=True, help="Skip the safety copy of a SQLite file."
    )(fn)


@click.group()
def migrate() -> None:
    """Apply, revert and inspect the numbered migrations in a folder."""


def _ms(value: float | None) -> str:
    value = value or 0.0
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"


def migration_printer(as_json: bool) -> Callable[[api.Event], None] | None:
    if as_json:
        return None

    def show(event: api.Event) -> None:
        if event.kind == "backup":
            click.echo(f"Backup: {event.name}")
        elif event.duration_ms is None:
            click.echo(f"{_VERBS[event.kind]}: {event.name}")
        else:
            click.echo(f"{_VERBS[event.kind]}: {event.name} in {_ms(event.duration_ms)}")

    return show


def _finish(result: api.RunResult, as_json: bool) -> None:
    if as_json:
        emit_json({**dataclasses.asdict(result), "names": result.names})
        if any(step.findings for step in result.steps):
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
    if any(step.findings for step in result.steps):
        raise SystemExit(1)  # a dry run that found what would stop the real one


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
@_no_backup
def up(
    directory: str | None, as_json: bool, to: int | None, dry_run: bool,
    allow_out_of_order: bool, no_backup: bool,
) -> None:
    """Apply pending migrations in order."""
    result = api.up(
        database(), directory, to=to, dry_run=dry_run, backup=not no_backup,
        allow_out_of_order=allow_out_of_order, progress=migration_printer(as_json),
    )
    _finish(result, as_json)


@migrate.command()
@_common
@click.option("--steps", type=int, default=1, show_default=True, help="How many to revert.")
@click.option("--to", type=int, metavar="VERSION", help="Revert everything above VERSION (0: all).")
@click.option(
    "--dry-run", is_flag=True,
    help="Print what would run and change nothing; exit 1 if something would be refused.",
)
@_no_backup
def down(
    directory: str | None, as_json: bool, steps: int, to: int | None, dry_run: bool,
    no_backup: bool,
) -> None:
    """Revert the newest migration (or --steps N, or --to VERSION)."""
    result = api.down(
        database(), directory, steps, to, dry_run=dry_run, backup=not no_backup,
        progress=migration_printer(as_json),
    )
    _finish(result, as_json)


@migrate.command()
@_common
@_no_backup
def redo(directory: str | None, as_json: bool, no_backup: bool) -> None:
    """Revert the newest migration and apply it again."""
    result = api.redo(database(), directory, backup=not no_backup, progress=migration_printer(as_json))
    _finish(result, as_json)


@migrate.command()
@_common
def status(directory: str | None, as_json: bool) -> None:
    """List every version: applied (when, how long), pending, failed, changed or missing."""
    entries = api.status(database(), directory)
    if as_json:
        emit_json([dataclasses.asdict(e) for e in entries])
        return
    if not entries:
        click.echo("No migrations.")
    for e in entries:
        when = f"  {e.applied_at}  {_ms(e.duration_ms)}" if e.applied_at else ""
        click.echo(f"{e.state:<17} {e.name}{when}")


@migrate.command()
@_common
def verify(directory: str | None, as_json: bool) -> None:
    """Fail if an applied file was edited or deleted, or a migration is marked failed."""
    entries = api.verify(database(), directory)
    applied = sum(1 for e in entries if e.state == "applied")
    if as_json:
        emit_json({"ok": True, "applied": applied})
    else:
        click.echo(f"OK: {applied} applied migration(s) match their files")


@migrate.command()
@_common
def repair(directory: str | None, as_json: bool) -> None:
    """Accept the current content of edited applied files (record their new checksums)."""
    repaired = api.repair(database(), directory)
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
    state = api.resolve(database(), directory, version, applied=not pending)
    if as_json:
        emit_json({"version": version, "state": state})
    else:
        click.echo(f"Version {version} is now {state}")


@migrate.command()
@migrations_option
@click.argument("name")
@click.option(
    "--dialect", type=click.Choice(["sqlite", "postgres"]),
    help="Write a variant used only on that backend.",
)
def new(directory: str | None, name: str, dialect: str | None) -> None:
    """Write the next-numbered NAME.up.sql / NAME.down.sql pair."""
    for path in api.new(directory, name, dialect):
        click.echo(f"Created: {path}")
