"""``embeddb audit enable | disable | log``: the audit log of writes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import click

from .. import audit as api
from ..backup import parse_age
from .options import (
    database,
    db_option,
    emit_json,
    json_option,
    migrations_folder,
    report_written,
)


@click.group()
def audit() -> None:
    """Record every write to chosen tables (database triggers), and read the record."""


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


@audit.command()
@db_option
@click.argument("table")
@click.option("--columns", metavar="A,B", help="Audit only these columns (default: all).")
@click.option("--exclude", metavar="A,B", help="Never record these columns (secrets).")
@click.option("--migrations", "directory", metavar="DIR",
              help="Migrations folder to write into (default as for `embeddb migrate`).")
@json_option
def enable(table: str, columns: str | None, exclude: str | None, directory: str | None,
           as_json: bool) -> None:
    """Write the migration that starts auditing TABLE (both backends; then migrate up)."""
    paths = api.write_migration(database(readonly=True), table, columns=_names(columns),
                                exclude=_names(exclude) or [], directory=migrations_folder(directory))
    report_written(paths, as_json)


@audit.command()
@db_option
@click.argument("table")
@click.option("--migrations", "directory", metavar="DIR",
              help="Migrations folder to write into (default as for `embeddb migrate`).")
@json_option
def disable(table: str, directory: str | None, as_json: bool) -> None:
    """Write the migration that stops auditing TABLE (the log itself stays)."""
    paths = api.write_migration(database(readonly=True), table, enable=False,
                                directory=migrations_folder(directory))
    report_written(paths, as_json)


@audit.command()
@db_option
@click.option("--migrations", "directory", metavar="DIR",
              help="Migrations folder to write into (default as for `embeddb migrate`).")
@json_option
def upgrade(directory: str | None, as_json: bool) -> None:
    """Write the migration that rebuilds an audit log made by an earlier embeddb in the
    current, cheaper shape (every row kept; `audit enable` does it too when it sees one)."""
    report_written(api.write_upgrade(migrations_folder(directory)), as_json)


@audit.command()
@db_option
@click.option("--table", help="Only this table.")
@click.option("--id", "pk", help="Only this row (needs --table); oldest first.")
@click.option("--actor", help="Only writes by this actor.")
@click.option("--since", metavar="AGE", help="Only writes newer than AGE (1d, 12h).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@json_option
def log(table: str | None, pk: str | None, actor: str | None, since: str | None, limit: int,
        as_json: bool) -> None:
    """Show audited writes (newest first, or one row's history oldest first)."""
    db = database(readonly=True)
    if pk is not None:
        if table is None:
            raise click.UsageError("--id needs --table")
        found = api.history(db, table, pk, limit)
    else:
        start = (datetime.now(UTC) - parse_age(since)) if since else None
        found = api.changes(db, actor=actor, since=start, table=table, limit=limit)
    if as_json:
        emit_json({"changes": [dataclasses.asdict(c) for c in found]})
        return
    if not found:
        click.echo("No audited writes match.")
    for change in found:
        what = change.new if change.action != "DELETE" else change.old
        click.echo(f"{change.at:%Y-%m-%d %H:%M:%S} {change.action:6} {change.table} "
                   f"{change.pk} by {change.actor or 'unknown'}: "
                   + (f"{change.old} -> {change.new}" if change.action == "UPDATE" else f"{what}"))
