"""``embeddb schema check|dump``: models vs the migrated database, and the schema as SQL."""

from __future__ import annotations

from pathlib import Path

import click

from .. import schema as schema_api
from .options import database, db_option, emit_json, json_option

DEFAULT_MODELS = "embeddb.reference.models:MODELS"


@click.group()
def schema() -> None:
    """Compare models with the database, or dump its schema."""


@schema.command()
@db_option
@json_option
@click.option("--models", "models_spec", default=DEFAULT_MODELS, show_default=True,
              metavar="MODULE:NAME", help="The list of peewee models to compare.")
def check(as_json: bool, models_spec: str) -> None:
    """Exit 1 naming each difference between the models and the database."""
    differences = schema_api.check(database(readonly=True), schema_api.load_models(models_spec))
    if as_json:
        emit_json([d.__dict__ for d in differences])
    elif not differences:
        click.echo("Schema matches the models.")
    for difference in differences if not as_json else []:
        click.echo(f"  {difference}")
    if differences:
        if not as_json:
            click.echo(f"{len(differences)} difference(s)", err=True)
        raise SystemExit(1)


@schema.command()
@db_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
def dump(out: Path | None) -> None:
    """Print the database schema as SQL (tables, indexes, triggers)."""
    sql = schema_api.dump(database(readonly=True))
    if out is None:
        click.echo(sql, nl=False)
        return
    try:
        out.write_text(sql)
    except OSError as exc:
        raise click.FileError(str(out), exc.strerror) from None
    click.echo(f"Wrote {out}")
