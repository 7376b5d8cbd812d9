"""Fresh, migrated databases for tests, fast: migrate once into a template, copy it per test.

- SQLite: the template is an in-memory database; each copy is a new ``:memory:`` database
  filled by SQLite's backup API (tens of microseconds for the reference schema, instead of
  milliseconds to run its DDL again).
- PostgreSQL: the template is a database; each copy is ``CREATE DATABASE ... TEMPLATE``,
  dropped after the test.

The pytest plugin (:mod:`embeddb.pytest_plugin`) wraps these as fixtures.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import psycopg2

from . import config, migrate, seed
from .database import Database, PostgresEngine, SqliteEngine, connect
from .errors import ConfigurationError
from .url import DatabaseURL, parse


class Template:
    """A migrated (optionally seeded) database that hands out independent copies."""

    def copy(self) -> Database:
        """A new database with the template's schema and data; close it with :meth:`discard`."""
        raise NotImplementedError

    def discard(self, db: Database) -> None:
        """Release a copy (and, on PostgreSQL, drop it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the template itself."""

    @staticmethod
    def create(
        url: str | None = None,
        migrations: str | os.PathLike[str] | None = None,
        seed_set: str | None = None,
        seeds: str | os.PathLike[str] | None = None,
    ) -> Template:
        """A template on ``url`` (default: SQLite in memory) with ``migrations`` applied and
        seed set ``seed_set`` loaded from ``seeds`` (none by default)."""
        parsed = parse(url or "sqlite:///:memory:")
        if parsed.backend == "sqlite":
            return SqliteTemplate(migrations, seed_set, seeds)
        return PostgresTemplate(parsed, migrations, seed_set, seeds)


def _prepare(db: Database, migrations: Any, seed_set: str | None, seeds: Any) -> None:
    if migrations is not None:
        if not Path(migrations).is_dir():
            raise ConfigurationError(
                f"no migrations folder at {migrations}: set the embeddb_migrations ini option "
                "(pytest.ini / pyproject.toml) to your migrations folder")
        migrate.up(db, migrations, backup=False)
    if seed_set:
        seed.run(db, seed_set, directory=seeds)


class SqliteTemplate(Template):
    def __init__(self, migrations: Any = None, seed_set: str | None = None,
                 seeds: Any = None) -> None:
        self._settings = config.SqliteSettings()
        self._url = parse("sqlite:///:memory:")
        self.db = SqliteEngine(self._url, self._settings)
        _prepare(self.db, migrations, seed_set, seeds)
        self.db.close()

    def copy(self) -> SqliteEngine:
        db = SqliteEngine(self._url, self._settings)
        source, target = self.db._anchor, db._anchor
        assert source is not None and target is not None  # in-memory engines hold one
        source.backup(target)
        return db

    def discard(self, db: Database) -> None:
        if not db.is_closed():
            db.close()
        assert isinstance(db, SqliteEngine) and db._anchor is not None
        db._anchor.close()

    def close(self) -> None:
        self.discard(self.db)


class PostgresTemplate(Template):
    def __init__(self, url: DatabaseURL, migrations: Any = None, seed_set: str | None = None,
                 seeds: Any = None) -> None:
        self.url = url
        self.name = f"embeddb_tpl_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{self.name}"')
        try:
            db = _postgres(self._url_for(self.name))
            _prepare(db, migrations, seed_set, seeds)
            db.close_all()
        except BaseException:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
            raise

    def _url_for(self, database: str) -> str:
        """The URL with another database name; a ``schema`` option is dropped, since a new
        database has only ``public``."""
        base, _, query = self.url.raw.partition("?")
        options = "&".join(p for p in query.split("&") if p and not p.startswith("schema="))
        return f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{options}" if options else "")

    def _admin(self, sql: str) -> None:
        conn = psycopg2.connect(**self.url.connect_params(), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def copy(self) -> PostgresEngine:
        name = f"embeddb_t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return _postgres(self._url_for(name))

    def discard(self, db: Database) -> None:
        assert isinstance(db, PostgresEngine)
        db.close_all()
        self._admin(f'DROP DATABASE IF EXISTS "{db.database}" WITH (FORCE)')

    def close(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _postgres(url: str) -> PostgresEngine:
    db = connect(url)
    assert isinstance(db, PostgresEngine)  # a postgresql:// URL
    return db
