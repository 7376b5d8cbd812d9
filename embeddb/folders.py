"""Where the migrations and seed sets are: one rule for every command and library function.

Each folder is the one asked for, else ``$EMBEDDB_MIGRATIONS_DIR`` / ``$EMBEDDB_SEEDS_DIR``,
else ``./migrations`` / ``./seeds``. When none of these is given and neither ``./migrations``
nor ``./seeds`` exists (an empty directory), both are the reference application installed
with embeddb, so ``embeddb setup`` and every command after it work anywhere on the same
folders; a project with only one of the two folders never gets the reference one mixed in.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MIGRATIONS_ENV = "EMBEDDB_MIGRATIONS_DIR"
SEEDS_ENV = "EMBEDDB_SEEDS_DIR"
#: the reference application installed with embeddb (found by path: the engine never imports it)
BUNDLED = Path(__file__).parent / "reference"
MIGRATIONS_DEFAULT = "migrations"
SEEDS_DEFAULT = "seeds"

Folder = str | os.PathLike[str] | None


def resolve(migrations: Folder = None, seeds: Folder = None,
            entry: Any = None) -> tuple[Path, Path]:
    """The migrations and seeds folders to use (the module's rule); neither need exist.

    ``entry`` (a :class:`embeddb.config.NamedDatabase`, e.g. ``db.entry``) puts the folders
    embeddb.toml gives that database between the argument and the environment variables: a
    named database always uses its own (``migrations/NAME`` unless configured).
    """
    migrations = migrations or getattr(entry, "migrations", None)
    seeds = seeds or getattr(entry, "seeds", None)
    given = (migrations or os.environ.get(MIGRATIONS_ENV), seeds or os.environ.get(SEEDS_ENV))
    if not any(given) and not Path(MIGRATIONS_DEFAULT).is_dir() \
            and not Path(SEEDS_DEFAULT).is_dir():
        return BUNDLED / "migrations", BUNDLED / "seeds"
    return Path(given[0] or MIGRATIONS_DEFAULT), Path(given[1] or SEEDS_DEFAULT)


def migrations(directory: Folder = None, entry: Any = None) -> Path:
    """The migrations folder for ``directory`` (None: the module's rule)."""
    return resolve(directory, None, entry)[0]


def seeds(directory: Folder = None, entry: Any = None) -> Path:
    """The seeds folder for ``directory`` (None: the module's rule)."""
    return resolve(None, directory, entry)[1]


def entry_of(db: Any) -> Any:
    """The embeddb.toml entry ``db`` was opened by: by name, or by a URL that is a configured
    database's (an entry without a name for any other URL; None: not embeddb's database)."""
    return getattr(db, "entry", None)
