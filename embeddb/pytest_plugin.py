"""pytest plugin (registered through the ``pytest11`` entry point): fresh databases per test.

Fixtures:

- ``embeddb_db``: a database with every migration applied, new for each test.
- ``embeddb_seeded_db``: the same with the ``test`` seed set loaded.
- ``embeddb_template`` / ``embeddb_seeded_template``: the session-wide templates they copy.
- ``embeddb_queries``: every statement the test runs on its embeddb database (a
  :class:`~embeddb.monitor.QueryLog`), with ``embeddb_queries.assert_max_queries(n)``.

Each test is a unit of work for N+1 detection on those databases (their monitor is on):
``--embeddb-nplusone=warn`` (default) issues an ``NPlusOneWarning``, ``error`` fails the test
with ``NPlusOneError``, ``off`` leaves the databases unmonitored.

SQLite ``:memory:`` by default; PostgreSQL when ``--embeddb-url`` or $EMBEDDB_TEST_URL names
one. ini options: ``embeddb_migrations`` (default ``migrations``), ``embeddb_seeds`` (default
``seeds``), ``embeddb_models`` (``package.module:NAME``: models bound to each test database).
Under pytest-xdist each worker builds its own templates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from .monitor import QueryLog
from .schema import load_models
from .testing import Template

ENV_URL = "EMBEDDB_TEST_URL"
NPLUSONE_MODES = ("warn", "error", "off")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("embeddb")
    group.addoption("--embeddb-url", default=None, metavar="URL",
                    help=f"database for embeddb fixtures (default: ${ENV_URL} or SQLite memory)")
    group.addoption("--embeddb-nplusone", default="warn", choices=NPLUSONE_MODES,
                    help="N+1 queries in a test: warn (default), error (fail the test) or off")
    parser.addini("embeddb_migrations", "migrations folder for embeddb fixtures",
                  default="migrations")
    parser.addini("embeddb_seeds", "seed sets folder for embeddb fixtures", default="seeds")
    parser.addini("embeddb_models", "package.module:NAME of models to bind to test databases",
                  default="")


def _setting(config: pytest.Config, name: str) -> str:
    value = config.getini(name)
    if value and not os.path.isabs(value) and name != "embeddb_models":
        return str(config.rootpath / value)
    return value


def _template(config: pytest.Config, seed_set: str | None) -> Template:
    url = config.getoption("--embeddb-url") or os.environ.get(ENV_URL)
    return Template.create(url, _setting(config, "embeddb_migrations"), seed_set,
                           _setting(config, "embeddb_seeds"))


def _models(config: pytest.Config) -> list[Any]:
    spec = config.getini("embeddb_models")
    if not spec:
        return []
    return load_models(spec)


def _copies(template: Template, request: pytest.FixtureRequest) -> Iterator[Any]:
    config = request.config
    db = template.copy()
    models = _models(config)
    if models:
        db.bind(models)
    mode = config.getoption("--embeddb-nplusone")
    try:
        if mode == "off":
            yield db
        else:
            db.monitor.enable(strict=mode == "error", publish=False)
            with db.monitor.unit(request.node.nodeid):
                yield db
    finally:
        template.discard(db)


@pytest.fixture(scope="session")
def embeddb_template(pytestconfig: pytest.Config) -> Iterator[Template]:
    template = _template(pytestconfig, None)
    yield template
    template.close()


@pytest.fixture(scope="session")
def embeddb_seeded_template(pytestconfig: pytest.Config) -> Iterator[Template]:
    template = _template(pytestconfig, "test")
    yield template
    template.close()


@pytest.fixture
def embeddb_db(embeddb_template: Template, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh database with all migrations applied; nothing leaks between tests."""
    yield from _copies(embeddb_template, request)


@pytest.fixture
def embeddb_seeded_db(embeddb_seeded_template: Template,
                      request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh migrated database holding the ``test`` seed set."""
    yield from _copies(embeddb_seeded_template, request)


@pytest.fixture
def embeddb_queries(request: pytest.FixtureRequest) -> Iterator[QueryLog]:
    """Every statement the test runs on its embeddb database (``embeddb_seeded_db`` when the
    test uses it, else ``embeddb_db``): ``len(embeddb_queries)``, ``.statements``, and
    ``with embeddb_queries.assert_max_queries(3): ...`` to put a budget on a block."""
    name = "embeddb_seeded_db" if "embeddb_seeded_db" in request.fixturenames else "embeddb_db"
    db = request.getfixturevalue(name)
    if not db.monitor.enabled:
        db.monitor.enable(publish=False)
    with db.monitor.capture() as log:
        yield log
