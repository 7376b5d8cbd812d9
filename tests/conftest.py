"""Shared fixtures: a fresh database per test on every backend.

PostgreSQL tests use the server named by $EMBEDDB_TEST_PG_URL (default: the local server on
127.0.0.1:5432). Each test gets its own schema, dropped afterwards, so runs never collide. Without
a server the tests skip with the reason; with CI=true a missing server fails them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

import embeddb

pytest_plugins = ["pytester"]

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite_file", "sqlite_memory", "postgresql"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL server URL for tests; skips (or fails in CI) when none answers."""
    url = os.environ.get("EMBEDDB_TEST_PG_URL", DEFAULT_PG_URL)
    try:
        psycopg2.connect(url.split("?")[0], connect_timeout=3).close()
    except psycopg2.Error as exc:
        reason = f"PostgreSQL not reachable at {url} (set EMBEDDB_TEST_PG_URL): {exc}".strip()
        if _in_ci():
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg_url else "?"
    try:
        yield f"{pg_url}{sep}schema={schema}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL for a fresh, empty database: SQLite file, SQLite :memory:, or a PostgreSQL schema."""
    if request.param == "sqlite_file":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if request.param == "sqlite_memory":
        return "sqlite:///:memory:"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture(params=["sqlite_file", "postgresql"])
def cli_db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database URL a second connection (e.g. a CLI run) sees the same data through:
    a SQLite file or a PostgreSQL schema (a new :memory: connection would be empty)."""
    if request.param == "sqlite_file":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def db(db_url: str) -> Iterator[embeddb.Database]:
    """A connected, empty database on each backend."""
    database = embeddb.connect(db_url)
    yield database
    if not database.is_closed():
        database.close()
    if isinstance(database, embeddb.PostgresEngine):
        database.close_all()


@pytest.fixture
def plugin_suite(pytester):
    """``make(source)``: a throwaway project whose ``test_app.py`` is ``source``, using the
    embeddb pytest plugin on the reference application's migrations, seeds and models."""
    root = Path(__file__).parent.parent

    def make(source: str) -> pytest.Pytester:
        pytester.makeini(
            "[pytest]\n"
            f"embeddb_migrations = {root / 'migrations'}\n"
            f"embeddb_seeds = {root / 'seeds'}\n"
            "embeddb_models = embeddb.reference.models:MODELS\n"
        )
        pytester.makepyfile(test_app=source)
        return pytester

    return make


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory of a project of the test's own: embeddb.toml and
    the folders are read from there, no $EMBEDDB_DATABASE_URL / _MIGRATIONS_DIR / _SEEDS_DIR
    of the outer environment in the way."""
    monkeypatch.chdir(tmp_path)
    for name in ("EMBEDDB_DATABASE_URL", "EMBEDDB_MIGRATIONS_DIR", "EMBEDDB_SEEDS_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def sqlite_file_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis server for tests ($EMBEDDB_TEST_REDIS_URL); skips (fails in CI) when
    redis-py is missing or nobody answers. Tests keep to their own key prefix (``redis_prefix``)."""
    url = os.environ.get("EMBEDDB_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except ImportError:
        reason = "redis-py is not installed (pip install -e '.[test]')"
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server is a skip reason
        reason = f"Redis not reachable at {url} (set EMBEDDB_TEST_REDIS_URL): {exc}"
    else:
        return url
    if _in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted afterwards."""
    import redis

    prefix = f"embeddb-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
