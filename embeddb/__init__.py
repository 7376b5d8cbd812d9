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

__version__ = "0.1.0"

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
