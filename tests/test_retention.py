"""Retention the app declares: `maintenance cleanup` on an app with its own schema cleans
exactly what its policies name, and the engine never imports the reference application."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
from embeddb import maintenance, migrate, retention
from embeddb.cli import cli
from embeddb.errors import MaintenanceError

APP_SCHEMA = """\
CREATE TABLE carts (id INTEGER PRIMARY KEY, abandoned_at TIMESTAMPTZ);
CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, at TIMESTAMPTZ NOT NULL);
CREATE TABLE invoices (id INTEGER PRIMARY KEY, issued_at TIMESTAMPTZ NOT NULL);
"""
POLICIES = """\
[[policy]]
name = "abandoned carts"
table = "carts"
column = "abandoned_at"
older_than = "7d"

[[policy]]
name = "old debug events"
table = "events"
column = "at"
older_than = "30d"
where = "kind = 'debug'"
"""


def _stamp(moment: datetime) -> str:
    return embeddb.models.UTCDateTimeField().db_value(moment)


@pytest.fixture
def app(tmp_path, cli_db_url, monkeypatch):
    """An app of its own: migrations, a retention.toml beside them, old and new rows."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_app.up.sql").write_text(APP_SCHEMA)
    (tmp_path / "retention.toml").write_text(POLICIES)
    db = embeddb.connect(cli_db_url)
    migrate.up(db, "migrations", backup=False)
    now = datetime.now(UTC)
    days = [1, 6, 8, 40, None]
    for n, age in enumerate(days):
        at = None if age is None else _stamp(now - timedelta(days=age))
        db.execute_sql(f"INSERT INTO carts VALUES ({n}, {db.param})", (at,))
    for n, (kind, age) in enumerate([("debug", 10), ("debug", 31), ("debug", 90),
                                     ("audit", 90), ("audit", 1)]):
        db.execute_sql(f"INSERT INTO events VALUES ({n}, {db.param}, {db.param})",
                       (kind, _stamp(now - timedelta(days=age))))
    db.execute_sql(f"INSERT INTO invoices VALUES (1, {db.param})",
                   (_stamp(now - timedelta(days=4000)),))
    yield db
    db.close()


def _ids(db, table: str) -> list[int]:
    return [r[0] for r in db.execute_sql(f"SELECT id FROM {table} ORDER BY id").fetchall()]


def test_cleanup_on_an_app_with_its_own_schema_cleans_exactly_its_policies(app):
    dry = maintenance.cleanup(app, dry_run=True)
    assert dry["deleted"] == {"abandoned carts": 2, "old debug events": 2}
    assert _ids(app, "carts") == [0, 1, 2, 3, 4]  # a dry run deletes nothing
    done = maintenance.cleanup(app, batch_size=1)
    assert done["deleted"] == {"abandoned carts": 2, "old debug events": 2}
    assert _ids(app, "carts") == [0, 1, 4]  # NULL: never abandoned, kept
    assert _ids(app, "events") == [0, 3, 4]  # audit events and recent debug ones kept
    assert _ids(app, "invoices") == [1]  # no policy: untouched, however old


def test_the_cli_uses_the_declared_policies(app, cli_db_url):
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "maintenance", "cleanup", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["deleted"] == {"abandoned carts": 2, "old debug events": 2}


def test_embeddb_toml_names_the_policies_file(app, tmp_path):
    (tmp_path / "retention.toml").unlink()
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "keep.toml").write_text(POLICIES.split("\n\n")[0] + "\n")
    (tmp_path / "embeddb.toml").write_text('[maintenance]\nretention = "ops/keep.toml"\n')
    assert maintenance.cleanup(app)["deleted"] == {"abandoned carts": 2}


def test_policies_in_code(app):
    policy = retention.Policy("all carts", "carts", "abandoned_at", timedelta(0))
    assert maintenance.cleanup(app, [policy])["deleted"] == {"all carts": 4}


def test_nothing_declared_says_where_to_declare(tmp_path, monkeypatch, sqlite_file_url):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "migrations").mkdir()
    db = embeddb.connect(sqlite_file_url)
    with pytest.raises(MaintenanceError, match="no retention policies declared: write .*"
                                               "retention.toml"):
        maintenance.cleanup(db)
    db.close()


@pytest.mark.parametrize("text, words", [
    ('[[policy]]\nname = "x"\ntable = "carts"\n', "missing 'column'"),
    ('[[policy]]\nname = "x"\ntable = "carts"\ncolumn = "a"\nolder = "1d"\n',
     "unknown key 'older'"),
    ('[[policy]]\nname = "x"\ntable = "carts"\ncolumn = "a"\nolder_than = "forever"\n',
     "age 'forever' not understood"),
    ('[[policy]]\nname = "x"\ntable = "t"\ncolumn = "a"\n[[policy]]\nname = "x"\n'
     'table = "t"\ncolumn = "b"\n', "name 'x' is used twice"),
    ('[policies]\nx = 1\n', "expected only .*policy.* tables, found policies"),
    ("[[policy\n", "cannot read"),
])
def test_bad_policy_files_are_refused_in_one_line(tmp_path, text, words):
    path = tmp_path / "retention.toml"
    path.write_text(text)
    with pytest.raises(MaintenanceError, match=words) as caught:
        retention.load(path)
    assert "\n" not in str(caught.value)


def test_a_policy_that_does_not_fit_its_table_deletes_nothing_at_all(app):
    good = retention.Policy("carts", "carts", "abandoned_at", timedelta(days=7))
    wrong = retention.Policy("events", "events", "no_such_column", timedelta(days=1))
    with pytest.raises(MaintenanceError, match="'events' does not fit table events"):
        maintenance.cleanup(app, [good, wrong])
    assert _ids(app, "carts") == [0, 1, 2, 3, 4]  # checked before anything was deleted


def test_the_engine_never_imports_the_reference_application():
    package = Path(embeddb.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        if "reference" in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = "." * node.level + (node.module or "")
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            if any("reference" in name.split(".") for name in names):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}")
    assert offenders == []
