"""embeddb: a SQLite-first embedded persistence engine with a pluggable PostgreSQL backend."""

from .database import Database, PostgresEngine, SqliteEngine, connect
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
