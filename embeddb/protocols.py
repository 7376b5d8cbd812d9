"""What the engine offers the features built on it: the :class:`Database` protocol.

``embeddb.Database`` (the union of :class:`~embeddb.database.SqliteEngine` and
:class:`~embeddb.database.PostgresEngine`) is what ``connect`` returns; this protocol is what a
feature may rely on whatever the backend, so a function typed with it works on both (and on a
third). Code that needs one backend's extras (``is_memory``, ``raw_connection``, the pool) is
typed with that engine class instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # a leaf at run time: any module may import it
    from .dialect import Dialect
    from .url import DatabaseURL


class Queryable(Protocol):
    """Anything that runs SQL and can tell its tables: an embeddb database, or a bare peewee
    database over a file (a backup's snapshot)."""

    @property
    def param(self) -> str:
        """The driver's parameter placeholder: ``?`` or ``%s``."""

    def execute_sql(self, sql: str, params: Any = None) -> Any: ...

    def table_exists(self, table_name: Any, schema: str | None = None) -> bool: ...


@runtime_checkable
class Database(Protocol):
    """An open embeddb database, on any backend."""

    @property
    def dialect(self) -> Dialect:
        """What differs in SQL text; ``dialect.name`` picks each feature's backend class."""

    @property
    def url(self) -> DatabaseURL: ...

    @property
    def param(self) -> str:
        """The driver's parameter placeholder: ``?`` or ``%s``."""

    @property
    def database(self) -> Any:
        """The file path (SQLite) or database name (PostgreSQL), as the driver sees it."""

    @property
    def settings(self) -> Any:
        """The backend's settings (``config.SqliteSettings`` or ``config.PostgresSettings``)."""

    def execute_sql(self, sql: str, params: Any = None) -> Any: ...

    def execute_fast(self, sql: str, params: Any = ()) -> Any: ...

    def fetch_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None: ...

    def execute_many(self, sql: str, rows: list[tuple[Any, ...]]) -> int: ...

    def insert_rows(
        self, table: str, columns: list[str], rows: list[tuple[Any, ...]], suffix: str = ""
    ) -> int: ...

    def atomic(self, *args: Any, **kwargs: Any) -> Any: ...

    def after_commit(self, fn: Callable[[], Any]) -> Callable[[], Any]: ...

    def in_transaction(self) -> bool: ...

    def lock(self, name: str, timeout: float | None = None, scope: str = "session") -> Any: ...

    @property
    def observed(self) -> bool: ...

    def table_exists(self, table_name: Any, schema: str | None = None) -> bool: ...

    def get_tables(self, schema: str | None = None) -> list[str]: ...

    def connect(self, reuse_if_open: bool = False) -> bool: ...

    def connection(self) -> Any: ...

    def close(self) -> bool: ...

    def is_closed(self) -> bool: ...

    def info(self) -> dict[str, Any]: ...

    # peewee's introspection and binding, offered by every peewee database
    def get_columns(self, table: str, schema: str | None = None) -> list[Any]: ...

    def get_indexes(self, table: str, schema: str | None = None) -> list[Any]: ...

    def get_context_options(self) -> dict[str, Any]: ...

    def bind(self, models: Any, bind_refs: bool = True, bind_backrefs: bool = True) -> None: ...

    def bind_ctx(self, models: Any, bind_refs: bool = True, bind_backrefs: bool = True) -> Any: ...
