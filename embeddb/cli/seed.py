"""``embeddb seed ENV`` and ``embeddb setup``: thin commands over :mod:`embeddb.seed` and
:mod:`embeddb.setup`."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import seed as seed_api
from .. import setup as setup_api
from .migrate import migration_printer, migrations_option
from .options import CliState, database, db_option, emit_json, json_option


def _seeds_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--seeds", "seeds_dir", metavar="DIR", type=click.Path(file_okay=False),
                        help="Seed sets folder (default: $EMBEDDB_SEEDS_DIR, ./seeds, or in an "
                             "empty directory the bundled reference app's).")(fn)


def _parallel_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--parallel/--no-parallel", default=None,
                        help="Generate rows in a worker process while writing (default: what "
                             "the seed set's PARALLEL says).")(fn)


def _seed_value_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--seed", "seed_value", type=int, default=seed_api.DEFAULT_SEED,
                        show_default=True, help="Generate this data set (same seed, same rows).")(fn)


class _Bar:
    """A progress bar per table on a terminal; silent otherwise (and under --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.table: str | None = None
        self.bar: Any = None

    def __call__(self, table: str, rows: int) -> None:
        if not self.enabled:
            return
        if table != self.table:
            self.close()
            self.table = table
            # The total is unknown (rows come from generators): an endless iterable makes click
            # show the running count instead of a fraction.
            self.bar = click.progressbar(itertools.repeat(None), label=f"seeding {table}",
                                         file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _summary(result: seed_api.SeedResult) -> dict[str, Any]:
    return {"env": result.env, "seed": result.seed, "written": result.written,
            "changed": result.changed, "deleted": result.deleted,
            "rows": result.counts, "seconds": round(result.seconds, 3)}


def _changes(result: seed_api.SeedResult) -> str:
    """"12 rows changed, 38,690 unchanged" (and what ``--fresh`` deleted first)."""
    changed = result.total_changed
    text = f"{changed:,} rows changed, {result.total - changed:,} unchanged"
    if result.deleted:
        text = f"{sum(result.deleted.values()):,} rows deleted first, " + text
    return text


@click.command()
@click.argument("env")
@db_option
@_seeds_option
@_seed_value_option
@json_option
@click.option("--fresh", is_flag=True,
              help="Empty the set's tables first (one transaction: the old rows or the new).")
@click.option("--atomic", is_flag=True,
              help="One transaction: all rows or none, holding the write lock throughout "
                   "(default: short transactions that let the app's writers in).")
@click.option("--force", is_flag=True, help="Allow the production set.")
@_parallel_option
def seed(env: str, seeds_dir: str | None, seed_value: int, as_json: bool, fresh: bool,
         atomic: bool, force: bool, parallel: bool | None) -> None:
    """Load seed set ENV (dev, test, staging, production) idempotently."""
    bar = _Bar(not as_json)
    try:
        entry = click.get_current_context().ensure_object(CliState).entry()
        _, folder = setup_api.folders(None, seeds_dir, entry)
        seed_api.check_allowed(env, force)
        if env not in seed_api.available(folder):  # before opening (and maybe creating) a database
            seed_api.load(env, folder)  # raises, naming the sets there are
        result = seed_api.run(database(), env, directory=folder, seed=seed_value, fresh=fresh,
                              force=force, progress=bar, parallel=parallel, atomic=atomic)
    finally:
        bar.close()
    if as_json:
        emit_json(_summary(result))
        return
    for table, written in result.written.items():
        click.echo(f"  {table:<18} {written:>8} rows given, {result.changed[table]:>8} changed, "
                   f"{result.counts[table]:>8} in table")
    rate = result.total / result.seconds if result.seconds else 0
    click.echo(f"Seeded {env} (seed {seed_value}): {_changes(result)}, in "
               f"{result.seconds:.2f}s ({rate:,.0f} rows/s)")


@click.command()
@db_option
@migrations_option
@_seeds_option
@_seed_value_option
@json_option
@click.option("--env", default="dev", show_default=True, help="Seed set to load.")
@click.option("--force", is_flag=True, help="Allow the production seed set.")
@click.option("--no-backup", is_flag=True, help="Skip the safety copy before migrating.")
@_parallel_option
def setup(directory: str | None, seeds_dir: str | None, seed_value: int, as_json: bool,
          env: str, force: bool, no_backup: bool, parallel: bool | None) -> None:
    """Create the database if needed, migrate it, seed it, and summarise."""
    entry = click.get_current_context().ensure_object(CliState).entry()
    setup_api.check(env, migrations=directory, seeds=seeds_dir, force=force,
                    entry=entry)  # before creating
    bar = _Bar(not as_json)
    try:
        result = setup_api.run(
            database(), env, migrations=directory, seeds=seeds_dir, seed_value=seed_value,
            force=force, backup=not no_backup, migrate_progress=migration_printer(as_json),
            seed_progress=bar, parallel=parallel)
    finally:
        bar.close()
    seeded = result.seeded
    assert seeded is not None  # setup always seeds
    if as_json:
        emit_json({"backend": result.backend, "location": result.location,
                   "applied": result.applied, "schema_version": result.version,
                   "migrations": result.migrations, "seeds": result.seeds,
                   "backup": result.backup, "seed": _summary(seeded),
                   "rows": result.rows, "seconds": round(result.seconds, 3)})
        return
    click.echo(f"backend         {result.backend}")
    click.echo(f"database        {result.location}")
    click.echo(f"schema version  {result.version}")
    click.echo(f"migrations      {len(result.applied)} applied now, from {result.migrations}")
    click.echo(f"seed            {env} (seed {seed_value}) from {result.seeds}, "
               f"{_changes(seeded)}")
    click.echo("rows:")
    for table, count in result.rows.items():
        click.echo(f"  {table:<18} {count:>8}")
    click.echo(f"done in {result.seconds:.2f}s")
