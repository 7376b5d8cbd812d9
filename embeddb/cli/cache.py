"""``embeddb cache clear`` / ``cache stats``: the cache tier of a database on this machine."""

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


@cache.command("stats")
@db_option
@json_option
def cache_stats(as_json: bool) -> None:
    """Hits, misses and hit ratio per tier, summed over the live monitored processes of the
    database (each publishes its counters with its query statistics)."""
    from .stats import live_view

    view = live_view(database(readonly=True))
    data = {"processes": len(view["processes"]), "cache": view["cache"],
            "skipped_files": view["skipped_files"]}
    if as_json:
        emit_json(data)
        return
    if view["cache"] is None:
        click.echo(f"No monitored process with a cache is publishing ({data['processes']} "
                   "monitored process(es) found).")
        return
    cache_view = view["cache"]
    click.echo(f"{cache_view['processes']} process(es) with a cache")
    for tier in ("l1", "l2"):
        counters = cache_view.get(tier) or {}
        if counters:
            click.echo(f"{tier}: {counters.get('hits', 0)} hits, {counters.get('misses', 0)} "
                       f"misses, hit ratio {counters.get('hit_ratio', 0.0)}, "
                       f"{counters.get('entries', 0)} entries")
    remote = cache_view.get("redis") or {}
    if remote:
        click.echo(f"redis: {remote.get('hits', 0)} hits, {remote.get('misses', 0)} misses, "
                   f"hit ratio {remote.get('hit_ratio', 0.0)}, {remote.get('errors', 0)} "
                   f"errors, p99 {remote.get('p99_us', 0.0)} us (slowest process)")
