"""``setup``: the main job — create the database, migrate it, seed it, say what is there."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import folders as folder_rule
from . import migrate, seed

if TYPE_CHECKING:  # it writes through repositories: peewee needs the engines themselves
    from .database import Database


@dataclass
class SetupResult:
    """What :func:`run` did and what the database holds afterwards."""

    backend: str
    location: str
    applied: list[str] = field(default_factory=list)
    version: int | None = None
    seeded: seed.SeedResult | None = None
    rows: dict[str, int] = field(default_factory=dict)
    backup: str | None = None
    seconds: float = 0.0
    migrations: str = ""
    seeds: str = ""


def run(
    db: Database,
    env: str = "dev",
    *,
    migrations: str | os.PathLike[str] | None = None,
    seeds: str | os.PathLike[str] | None = None,
    seed_value: int = seed.DEFAULT_SEED,
    force: bool = False,
    backup: bool = True,
    migrate_progress: migrate.runner.Progress | None = None,
    seed_progress: seed.Progress | None = None,
    parallel: bool | None = None,
) -> SetupResult:
    """Apply pending migrations, then seed set ``env``; safe and quick to run again.

    :raises MigrationError: a migration is malformed or fails (nothing of it is applied).
    :raises SeedError: the seed set is unknown, malformed or refused.
    """
    migrations, seeds = check(env, migrations=migrations, seeds=seeds, force=force,
                              entry=folder_rule.entry_of(db))
    started = time.perf_counter()
    info = db.info()
    result = SetupResult(info["backend"], info.get("path") or info["url"])
    result.migrations, result.seeds = str(migrations), str(seeds)
    applied = migrate.up(db, migrations, backup=backup, progress=migrate_progress)
    result.applied = [step.name for step in applied.steps]
    result.backup = applied.backup
    result.version = migrate.current_version(db)
    result.seeded = seed.run(db, env, directory=seeds, seed=seed_value, force=force,
                             progress=seed_progress, parallel=parallel, atomic=True)
    result.rows = table_rows(db)
    result.seconds = time.perf_counter() - started
    return result


def check(
    env: str = "dev",
    *,
    migrations: str | os.PathLike[str] | None = None,
    seeds: str | os.PathLike[str] | None = None,
    force: bool = False,
    entry: Any = None,
) -> tuple[Path, Path]:
    """Refuse what :func:`run` would refuse, before anything (even the database) is created:
    a missing migrations folder, an unknown or protected seed set. The folders to use.

    :raises MigrationError: the migrations folder does not exist.
    :raises SeedError: the seed set is unknown, malformed or refused.
    """
    migrations, seeds = folders(migrations, seeds, entry)
    migrate.files.resolve_directory(migrations)
    seed.check_allowed(env, force)
    seed.load(env, seeds)
    return migrations, seeds


def folders(migrations: Any = None, seeds: Any = None, entry: Any = None) -> tuple[Path, Path]:
    """The migrations and seeds folders to use: :func:`embeddb.folders.resolve`."""
    return folder_rule.resolve(migrations, seeds, entry)


def table_rows(db: Database) -> dict[str, int]:
    """Row count of every table (embeddb's bookkeeping and FTS internals left out)."""
    return seed.count_rows(db, [t for t in sorted(db.get_tables())
                                if not t.startswith("embeddb_") and "_fts" not in t])
