"""Migrations: a folder of numbered SQL (or Python) files applied in order, on both backends.

Each migration runs in one transaction together with its row in the bookkeeping table
``embeddb_migrations``, so a failure leaves no trace and a fixed file simply applies next time::

    import embeddb, embeddb.migrate

    db = embeddb.connect("sqlite:///app.db")
    result = embeddb.migrate.up(db, "migrations")
    print(result.names, result.backup)
"""

from .files import new
from .history import TABLE, current_version
from .runner import LOCK_TIMEOUT, Event, RunResult, Step, down, redo, up
from .safety import KEEP_BACKUPS
from .status import Entry, repair, resolve, status, verify

__all__ = [
    "KEEP_BACKUPS",
    "LOCK_TIMEOUT",
    "TABLE",
    "Entry",
    "Event",
    "RunResult",
    "Step",
    "current_version",
    "down",
    "new",
    "redo",
    "repair",
    "resolve",
    "status",
    "up",
    "verify",
]
