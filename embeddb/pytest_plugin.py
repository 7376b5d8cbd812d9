"""pytest plugin (registered through the ``pytest11`` entry point): fresh databases per test.

Fixtures:

- ``embeddb_db``: a database with every migration applied, new for each test.
- ``embeddb_seeded_db``: the same with the ``test`` seed set loaded.
- ``embeddb_template`` / ``embeddb_seeded_template``: the session-wide templates they copy.

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

from .schema import load_models
from .testing import Template

ENV_URL = "EMBEDDB_TEST_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("embeddb")
    group.addoption("--embeddb-url", default=None, metavar="URL",
                    help=f"database for embeddb fixtures (default: ${ENV_URL} or SQLite memory)")
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


def _copies(template: Template, config: pytest.Config) -> Iterator[Any]:
    db = template.copy()
    models = _models(config)
    if models:
        db.bind(models)
    try:
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
def embeddb_db(embeddb_template: Template, pytestconfig: pytest.Config) -> Iterator[Any]:
    """A fresh database with all migrations applied; nothing leaks between tests."""
    yield from _copies(embeddb_template, pytestconfig)


@pytest.fixture
def embeddb_seeded_db(embeddb_seeded_template: Template,
                      pytestconfig: pytest.Config) -> Iterator[Any]:
    """A fresh migrated database holding the ``test`` seed set."""
    yield from _copies(embeddb_seeded_template, pytestconfig)
