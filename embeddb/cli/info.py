"""``embeddb info``: what database this is and how it is configured."""

from __future__ import annotations

import click

from .options import database, db_option, emit_json, json_option


@click.command()
@db_option
@json_option
def info(as_json: bool) -> None:
    """Show the backend, version, location and the settings in effect."""
    data = database(readonly=True).info()
    if as_json:
        emit_json(data)
        return
    width = 10
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for name, setting in value.items():
                click.echo(f"  {name:<{width + 14}} {setting}")
        else:
            click.echo(f"{key:<{width}} {value}")
