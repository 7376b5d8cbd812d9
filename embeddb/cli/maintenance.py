"""``embeddb maintenance vacuum | analyze | optimize | checkpoint | integrity | cleanup``."""

from __future__ import annotations

from typing import Any

import click

from .. import maintenance as tasks
from .. import retention
from ..errors import ConnectionFailed
from .options import all_option, database, db_option, each_database, emit_json, json_option


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    for key, value in result.items():
        if isinstance(value, list):
            click.echo(f"{key}:")
            for item in value:
                click.echo(f"  {item}")
        elif isinstance(value, dict):
            click.echo(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            click.echo(f"{key}: {value}")


@click.group()
def maintenance() -> None:
    """VACUUM, ANALYZE, optimize, WAL checkpoint, integrity checks and data cleanup."""


@maintenance.command()
@db_option
@json_option
def vacuum(as_json: bool) -> None:
    """SQLite: VACUUM (rebuild, free pages back). PostgreSQL: VACUUM (ANALYZE)."""
    _show(tasks.vacuum(database(create=False)), as_json)


@maintenance.command()
@db_option
@json_option
def analyze(as_json: bool) -> None:
    """Refresh the query planner's statistics (ANALYZE)."""
    _show(tasks.analyze(database(create=False)), as_json)


@maintenance.command()
@db_option
@json_option
def optimize(as_json: bool) -> None:
    """SQLite: PRAGMA optimize. PostgreSQL: VACUUM (ANALYZE)."""
    _show(tasks.optimize(database(create=False)), as_json)


@maintenance.command()
@db_option
@json_option
def checkpoint(as_json: bool) -> None:
    """Write the WAL back into the database; shows the WAL size before and after."""
    _show(tasks.checkpoint(database(create=False)), as_json)


@maintenance.command()
@db_option
@json_option
@all_option
@click.pass_context
def integrity(ctx: click.Context, as_json: bool, all_databases: bool) -> None:
    """Check the database's consistency; exits 1 on any problem (also when it cannot be read;
    --all: every configured database)."""

    def body() -> None:
        result: dict[str, Any] | None
        try:
            result = tasks.integrity(database(readonly=True))
        except ConnectionFailed as exc:  # a file too damaged to open is a finding, not a crash
            result = tasks.damage_report(exc)
            if result is None:
                raise
        _show(result, as_json)
        if not result["ok"]:
            if not as_json:
                click.echo(f"Error: {len(result['problems'])} integrity problem(s)", err=True)
            ctx.exit(1)

    each_database(all_databases, as_json, body)


@maintenance.command()
@db_option
@json_option
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--batch-size", type=click.IntRange(min=1, max=tasks.MAX_BATCH_SIZE),
              default=tasks.BATCH_SIZE,
              show_default=True, help="Rows deleted per transaction.")
@click.option("--policies", "path", metavar="FILE",
              help="A retention.toml to apply (default: [maintenance] retention in "
                   "embeddb.toml, else retention.toml beside the migrations folder).")
def cleanup(dry_run: bool, batch_size: int, path: str | None, as_json: bool) -> None:
    """Delete the rows the app's retention policies say are old, in short batches."""
    db = database(create=False, readonly=dry_run)  # a mistyped --db is named first
    result = tasks.cleanup(
        db,
        retention.declared(path),
        batch_size=batch_size,
        dry_run=dry_run,
    )
    _show(result, as_json)
