"""``embeddb outbox init | run | status | retry | purge``: the transactional outbox."""

from __future__ import annotations

import dataclasses
import signal
import threading

import click

from .. import outbox as api
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
def outbox() -> None:
    """Deliver events written with outbox.publish() in the app's transactions."""


@outbox.command()
@db_option
@click.option("--migrations", "directory", metavar="DIR",
              help="Migrations folder to write into (default as for `embeddb migrate`).")
@json_option
def init(directory: str | None, as_json: bool) -> None:
    """Write the migration that creates the outbox table (then run `embeddb migrate up`)."""
    report_written(api.write_migration(migrations_folder(directory)), as_json)


@outbox.command()
@db_option
@click.option("--handler", "spec", required=True, metavar="MODULE:FUNCTION",
              help="The function each event is given to, e.g. app.events:send.")
@click.option("--once", is_flag=True, help="Stop when nothing is due instead of waiting.")
@click.option("--topic", "topics", multiple=True, help="Only these topics (repeatable).")
@click.option("--batch", type=click.IntRange(1, api.MAX_BATCH), default=100, show_default=True)
@click.option("--lease", type=click.FloatRange(0.1, 86400), default=30.0, show_default=True,
              help="Seconds a claimed batch stays this processor's.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=10, show_default=True)
@json_option
def run(spec: str, once: bool, topics: tuple[str, ...], batch: int, lease: float,
        max_attempts: int, as_json: bool) -> None:
    """Deliver pending events to the handler (until Ctrl-C or SIGTERM; --once: until none
    is due)."""
    handler = api.load_handler(spec)
    box = api.Outbox(database(create=False), lease=lease, max_attempts=max_attempts)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stats = box.run(handler, batch=batch, topics=topics or None, once=once, stop=stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        emit_json(dataclasses.asdict(stats))
        return
    click.echo(f"{stats.delivered} delivered, {stats.failed} to retry, {stats.dead} dead"
               + (f", {stats.lost_lease} delivered after losing the lease"
                  if stats.lost_lease else ""))


@outbox.command()
@db_option
@json_option
def status(as_json: bool) -> None:
    """Events per status and topic, the oldest pending one's age, the dead letters; exits 1
    when there are dead letters."""
    report = api.status(database(readonly=True))
    if as_json:
        emit_json(dataclasses.asdict(report))
    else:
        counts = report.counts
        click.echo(f"{counts['pending']} pending, {counts['delivered']} delivered, "
                   f"{counts['dead']} dead")
        if report.oldest_pending_age_s is not None:
            click.echo(f"Oldest pending: {report.oldest_pending_age_s:.0f} s old")
        for topic, by_status in report.topics.items():
            click.echo(f"  {topic}: " + ", ".join(f"{n} {s}" for s, n in by_status.items()))
        for dead in report.dead:
            click.echo(f"Dead: #{dead['id']} {dead['topic']} after {dead['attempts']} "
                       f"attempts: {dead['last_error']} (embeddb outbox retry {dead['id']})")
    if report.counts["dead"]:
        raise SystemExit(1)


@outbox.command()
@db_option
@click.argument("event_id", type=click.IntRange(1, 2**63 - 1))
def retry(event_id: int) -> None:
    """Make a dead event pending again (attempts start over)."""
    api.retry(database(create=False), event_id)
    click.echo(f"Event {event_id} is pending again.")


@outbox.command()
@db_option
@click.option("--delivered-older-than", "age", required=True, metavar="AGE",
              help="Delete delivered events older than AGE (7d, 12h, 0s).")
@click.option("--dry-run", is_flag=True, help="Count, delete nothing.")
@json_option
def purge(age: str, dry_run: bool, as_json: bool) -> None:
    """Delete delivered events (pending and dead ones are never touched)."""
    count = api.purge(database(create=False, readonly=dry_run), parse_age(age).total_seconds(),
                      dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": dry_run, "deleted" if not dry_run else "would_delete": count})
    else:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {count} delivered events")
