"""pytest plugin (registered through the ``pytest11`` entry point): fresh databases per test.

Fixtures:

- ``embeddb_db``: a database with every migration applied, new for each test.
- ``embeddb_seeded_db``: the same with the ``test`` seed set loaded.
- ``embeddb_template`` / ``embeddb_seeded_template``: the session-wide templates they copy.
- ``embeddb_dbs``: fresh copies of the databases embeddb.toml names (``[databases.NAME]``),
  ``embeddb_dbs["users"]``, each migrated from its own folder and made on first use in the test
  (a SQLite one in memory, a PostgreSQL one as a database of its own on the configured server,
  or on ``$EMBEDDB_TEST_URL_<NAME>``'s, dropped after the test). Their backups and safety
  copies go to a temporary directory, never the project's backups. Models are not bound to them:
  use repositories (``Repository(User, embeddb_dbs["users"])``).
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
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from . import config
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


#: the entry of an ``embeddb_db`` copy: no name, as the default database (folders as usual)
_UNNAMED = config.NamedDatabase(None, "")


_SCRATCH = pytest.StashKey[Path]()


def _scratch(request: pytest.FixtureRequest) -> Path:
    """The session's folder for the backups of ``embeddb_db`` copies, made on first use."""
    stash = request.config.stash
    if _SCRATCH not in stash:
        stash[_SCRATCH] = request.getfixturevalue("tmp_path_factory").mktemp("embeddb_backups")
    return stash[_SCRATCH]


def _copies(template: Template, request: pytest.FixtureRequest) -> Iterator[Any]:
    config = request.config
    db = template.copy()
    # backups and safety copies go to a scratch folder, never the project's (they record no
    # name, as the default database's: there they would be restorable into it)
    db.entry = replace(db.entry or _UNNAMED, url=db.url.raw, backups=str(_scratch(request)))
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


class NamedTemplates:
    """One template per database of the project's embeddb.toml, built the first time a test
    asks for that database."""

    def __init__(self, root: Path, backups: Path) -> None:
        self.root = root
        #: where the copies' backups go (a copy has the real database's name: its backups and
        #: safety copies in the project's folder would be pruned with, and restorable into,
        #: the real one's)
        self.backups = backups
        self.entries = config.named_databases(root)
        self.templates: dict[str, Template] = {}

    def entry(self, name: str) -> config.NamedDatabase:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.entries) or "none"
            raise KeyError(f"no database named {name!r} in {self.root / config.CONFIG_FILE} "
                           f"(configured: {known})") from None

    def template(self, name: str) -> Template:
        found = self.templates.get(name)
        if found is None:
            entry = self.entry(name)
            variable = f"{ENV_URL}_{name.upper()}"  # tests only: the entry's url is the app's
            url = os.environ.get(variable, entry.url)
            if not url.strip():  # as for $EMBEDDB_DATABASE_URL_<NAME>: not "use the file's url"
                raise config.ConfigurationError(
                    f"${variable} is set but empty: unset it or give a URL")
            migrations = self._path(entry.migrations)
            if migrations is not None and not os.path.isdir(migrations):
                # not the embeddb_migrations ini option Template.create would point at
                raise config.ConfigurationError(
                    f"no migrations folder at {migrations} for [databases.{name}] of "
                    f"{self.root / config.CONFIG_FILE}: create it or set its migrations = ...")
            found = self.templates[name] = Template.create(
                url, migrations, None, self._path(entry.seeds))
        return found

    def _path(self, folder: str | None) -> str | None:
        if folder is None or os.path.isabs(folder):
            return folder
        return str(self.root / folder)

    def close(self) -> None:
        for template in self.templates.values():
            template.close()


class NamedCopies(Mapping[str, Any]):
    """``embeddb_dbs``: this test's copy of each named database, made on first access."""

    def __init__(self, templates: NamedTemplates, request: pytest.FixtureRequest) -> None:
        self._templates = templates
        self._request = request
        self._copies: dict[str, tuple[Template, Any]] = {}
        self._units = ExitStack()

    def __getitem__(self, name: str) -> Any:
        if name not in self._copies:
            template = self._templates.template(name)
            db = template.copy()
            self._copies[name] = (template, db)
            entry = self._templates.entry(name)
            db.entry = replace(entry, url=db.url.raw, migrations=self._templates._path(
                entry.migrations), seeds=self._templates._path(entry.seeds),
                backups=str(self._templates.backups / name))
            mode = self._request.config.getoption("--embeddb-nplusone")
            if mode != "off":
                db.monitor.enable(strict=mode == "error", publish=False)
                self._units.enter_context(db.monitor.unit(self._request.node.nodeid))
        return self._copies[name][1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._templates.entries)

    def __len__(self) -> int:
        return len(self._templates.entries)

    def close(self) -> None:
        try:
            self._units.close()
        finally:
            for template, db in self._copies.values():
                template.discard(db)
            self._copies.clear()


@pytest.fixture(scope="session")
def embeddb_named_templates(pytestconfig: pytest.Config,
                            tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamedTemplates]:
    templates = NamedTemplates(pytestconfig.rootpath, tmp_path_factory.mktemp("embeddb_backups"))
    yield templates
    templates.close()


@pytest.fixture
def embeddb_dbs(embeddb_named_templates: NamedTemplates,
                request: pytest.FixtureRequest) -> Iterator[NamedCopies]:
    """Fresh copies of the databases of embeddb.toml, by name: ``embeddb_dbs["users"]``."""
    copies = NamedCopies(embeddb_named_templates, request)
    try:
        yield copies
    finally:
        copies.close()
