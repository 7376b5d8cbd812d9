"""``embeddb locks``: the named locks held on a database right now."""

from __future__ import annotations

import dataclasses

import click

from ..locks import held
from .options import database, db_option, emit_json, json_option


@click.command()
@db_option
@json_option
def locks(as_json: bool) -> None:
    """List the named locks (``db.lock(name)``) held now: name, holder pid, token, since.

    SQLite: held by any process on this machine. PostgreSQL: by any client of the server.
    """
    found = held(database(readonly=True))
    if as_json:
        emit_json({"locks": [dataclasses.asdict(lock) for lock in found]})
        return
    if not found:
        click.echo("No named locks are held.")
        return
    for lock in found:
        token = "" if lock.token is None else f", token {lock.token}"
        click.echo(f"{lock.name}: held by pid {lock.pid} since {lock.since} "
                   f"({lock.scope}{token})")
