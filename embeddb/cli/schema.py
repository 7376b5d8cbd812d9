"""``embeddb schema check|dump``: models vs the migrated database, and the schema as SQL."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from .. import schema as schema_api
from ..errors import ConfigurationError
from .options import database, db_option, emit_json, json_option

DEFAULT_MODELS = "embeddb.reference.models:MODELS"


def load_models(spec: str) -> list[Any]:
    """``package.module:NAME`` -> the list of models it names.

    :raises ConfigurationError: the module or attribute does not exist.
    """
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        models = getattr(module, attribute or "MODELS")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"cannot load models from {spec!r}: {exc} (use --models package.module:NAME)"
        ) from None
    return list(models)


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
    differences = schema_api.check(database(), load_models(models_spec))
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
    sql = schema_api.dump(database())
    if out is None:
        click.echo(sql, nl=False)
        return
    out.write_text(sql)
    click.echo(f"Wrote {out}")
