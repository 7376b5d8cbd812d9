"""embeddb: a SQLite-first embedded persistence engine with a pluggable PostgreSQL backend.

The engine (:mod:`embeddb.database`: connection pool, dialects, audit hooks) is imported on
first use of ``connect`` or an engine class, so ``import embeddb`` (and ``embeddb --version``)
stays about as cheap as importing peewee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    ConflictError,
    ConnectionFailed,
    DatabaseError,
    DatabaseNotFound,
    EmbeddbError,
    IntegrityError,
    NotFoundError,
    PoolExhausted,
)
from .version import __version__

if TYPE_CHECKING:
    from .database import Database, PostgresEngine, SqliteEngine, connect

_ENGINE = frozenset({"Database", "PostgresEngine", "SqliteEngine", "connect"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from . import database

        return getattr(database, name)
    raise AttributeError(f"module 'embeddb' has no attribute {name!r}")

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "ConnectionFailed",
    "Database",
    "DatabaseError",
    "DatabaseNotFound",
    "EmbeddbError",
    "IntegrityError",
    "NotFoundError",
    "PoolExhausted",
    "PostgresEngine",
    "SqliteEngine",
    "connect",
    "__version__",
]
