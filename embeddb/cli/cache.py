"""``embeddb cache clear``: drop everything cached for a database on this machine."""

from __future__ import annotations

import click

from ..cache.tiered import forget, shared
from .options import database, db_option, emit_json, json_option


@click.group()
def cache() -> None:
    """Manage the cache tier of a database."""


@cache.command()
@db_option
@json_option
def clear(as_json: bool) -> None:
    """Invalidate every cached entry of the database, in every process on this machine
    (after editing data by hand or with another tool)."""
    db = database(create=False)
    present = shared(db)
    directory = present.directory if present is not None else None
    forget(db)
    if as_json:
        emit_json({"cleared": present is not None, "directory": directory})
    elif present is None:
        click.echo("No cache in use for this database on this machine.")
    else:
        click.echo(f"Cleared the cache in {directory or 'this process'}.")
