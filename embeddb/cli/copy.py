"""``embeddb copy --from URL --to URL``: every row of one database into another (e.g. a SQLite
file into PostgreSQL), verified, in one transaction on the target."""

from __future__ import annotations

import time

import click

from .options import CliState, db_option, emit_json, json_option


@click.command(name="copy")
@click.option("--from", "source", metavar="URL",
              help="The database to copy (a URL or an embeddb.toml name; default: the one "
                   "--db / --database / embeddb.toml choose).")
@click.option("--to", "target", required=True, metavar="URL",
              help="The database to copy into, a URL or an embeddb.toml name (its tables "
                   "must be empty unless --force).")
@click.option("--migrations", metavar="DIR",
              help="The app's migrations folder: applied to the target first. Without it "
                   "the target must already be at the source's migration version.")
@click.option("--force", is_flag=True, help="Add the rows to a target whose tables have rows.")
@click.option("--batch-size", type=int, default=2000, show_default=True,
              help="Rows read and written per batch (memory is bounded by it).")
@db_option
@json_option
def copy(source: str | None, target: str, migrations: str | None, force: bool, batch_size: int,
         as_json: bool) -> None:
    """Copy every table's rows from --from to --to: the target's migrations first (or the
    same version required), streamed in batches from one snapshot of the source, row counts
    checked before one commit. Interrupted (even killed), the target keeps none of the rows:
    run the same command again.

    Example: embeddb copy --from sqlite:///app.db --to postgresql://app@db/app --migrations migrations
    """
    from ..transfer import copy as copy_database

    chosen = click.get_current_context().ensure_object(CliState).target()
    if source is not None and chosen is not None:
        raise click.UsageError("--from and --db / --database both name the source: give one")

    shown: dict[str, float] = {}

    def progress(table: str, rows: int) -> None:  # a table's first batch, then each second
        now = time.monotonic()
        if not as_json and now - shown.get(table, -1.0) >= 1.0:
            shown[table] = now
            click.echo(f"copying {table}: {rows} rows so far", err=True)

    # (with --json a failure is {"ok": false, "error": ...}: the command group prints it)
    result = copy_database(source or chosen, target, migrations=migrations, force=force,
                           batch_size=batch_size, progress=progress)
    if as_json:
        emit_json(result.as_dict())
        return
    for name in result.migrated:
        click.echo(f"Migrated target: {name}")
    for table, rows in result.tables.items():
        click.echo(f"{table}: {rows} rows")
    if result.skipped:
        click.echo(f"Not copied (the source backend's own tables): {', '.join(result.skipped)}")
    click.echo(f"Copied {result.rows} rows in {len(result.tables)} tables from {result.source} "
               f"to {result.target} in {result.seconds:.1f} s (counts verified)")
