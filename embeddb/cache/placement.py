"""Where a database's cache lives by default, and whose its files are, per backend.

Chosen by ``db.dialect.name``: a third backend adds one entry to :data:`PLACEMENTS`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import TYPE_CHECKING, Any

from ..ownership import foreign_owner
from ..protocols import Database
from . import generations

if TYPE_CHECKING:
    from ..database import PostgresEngine, SqliteEngine


class SqlitePlacement:
    @staticmethod
    def directory(db: SqliteEngine) -> str | None:
        """``app.db`` -> ``app.db-cache/`` beside it; ``:memory:`` has no L2 (no other process
        can see the database, so there is nothing to share)."""
        return None if db.is_memory else os.path.abspath(db.database) + "-cache"

    @staticmethod
    def owner(db: SqliteEngine) -> tuple[int, int] | None:
        """The database file's owner when root uses another user's database."""
        return None if db.is_memory else foreign_owner(os.path.abspath(db.database))

    @staticmethod
    def shared_name(db: SqliteEngine, directory: str | None) -> str | None:
        """``app.db-<hash>`` of this kernel's boot id and the file's name in its directory's
        (device, inode), wherever ``directory=`` puts the cache; None for ``:memory:``, which no
        other process can see, so none may share its values.

        Every process and container on this kernel finds that directory inode through any path
        or mount, even after the cache directory was recreated, while another machine's file has
        another boot id (a hostname differs between containers, an id kept in the cache directory
        changes with it: both would split the file's processes, whose Redis entries would then
        miss each other's invalidations).
        """
        if db.is_memory:
            return None
        path = os.path.realpath(db.database)
        folder, name = os.path.split(path)
        try:
            st = os.stat(folder)
        except OSError:
            return None  # neither can SQLite open the file
        boot = generations.boot_id()
        machine = socket.gethostname() if boot == generations.NO_BOOT_ID else boot.decode()
        identity = f"{machine}:{st.st_dev}:{st.st_ino}/{name}"
        return f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


class PostgresPlacement:
    @staticmethod
    def directory(db: PostgresEngine) -> str | None:
        """A folder per server, database and schema under ``$XDG_CACHE_HOME/embeddb`` (default
        ``~/.cache/embeddb``): shared by this machine's processes only."""
        url = db.url
        identity = f"{url.host}:{url.port}/{url.database}/{db.settings.schema or ''}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        return os.path.join(root, "embeddb", f"pg-{digest}")

    @staticmethod
    def owner(db: PostgresEngine) -> tuple[int, int] | None:
        return None

    @staticmethod
    def shared_name(db: PostgresEngine, directory: str | None) -> str | None:
        """``pg-<hash>`` of the server, database and schema: the same on every machine, whatever
        folder each keeps its L2 in."""
        return os.path.basename(PostgresPlacement.directory(db) or "")


#: dialect name -> where that backend's caches live
PLACEMENTS: dict[str, Any] = {
    "sqlite": SqlitePlacement, "postgresql": PostgresPlacement,
}


def default_directory(db: Database | None) -> str | None:
    """Where the cache's L2 and generation counters live by default (None: no L2, also for a
    database embeddb does not know)."""
    placement = PLACEMENTS.get(getattr(getattr(db, "dialect", None), "name", ""))
    return placement.directory(db) if placement is not None else None


def owner(db: Database | None) -> tuple[int, int] | None:
    """``(uid, gid)`` to give the cache's files when root uses another user's database, so its
    owner can still use the cache (None: keep this process's)."""
    placement = PLACEMENTS.get(getattr(getattr(db, "dialect", None), "name", ""))
    return placement.owner(db) if placement is not None else None


def redis_prefix(db: Database | None, directory: str | None) -> str | None:
    """What the Redis keys of a cache of ``db`` start with when ``redis_prefix=`` is not given:
    caches with the same prefix share entries and invalidations. None: the database is private
    to this process and gets no Redis tier."""
    placement = PLACEMENTS.get(getattr(getattr(db, "dialect", None), "name", ""))
    name = placement.shared_name(db, directory) if placement is not None \
        else os.path.basename(directory or "")
    return None if name is None else f"embeddb:{name}:"
