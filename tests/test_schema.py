"""``embeddb schema check|dump`` on real migrated databases."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import embeddb
import embeddb.migrate
from embeddb import reference
from embeddb.cli import cli


def _migrated(url: str) -> None:
    db = embeddb.connect(url)
    embeddb.migrate.up(db, reference.MIGRATIONS, backup=False)
    db.close()


def test_check_ignores_sqlite_own_tables_after_analyze(sqlite_file_url):
    _migrated(sqlite_file_url)
    analyzed = CliRunner().invoke(cli, ["maintenance", "analyze", "--db", sqlite_file_url])
    assert analyzed.exit_code == 0, analyzed.output
    db = embeddb.connect(sqlite_file_url)
    assert "sqlite_stat1" in db.get_tables()
    db.close()
    result = CliRunner().invoke(cli, ["schema", "check", "--db", sqlite_file_url])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Schema matches the models."


def test_dump_to_a_missing_directory_names_the_path(sqlite_file_url, tmp_path):
    _migrated(sqlite_file_url)
    out = tmp_path / "missing" / "schema.sql"
    result = CliRunner().invoke(cli, ["schema", "dump", "--db", sqlite_file_url, "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: Could not open file '{out}': No such file or directory"
    assert not out.parent.exists()
    good = tmp_path / "schema.sql"
    result = CliRunner().invoke(cli, ["schema", "dump", "--db", sqlite_file_url, "--out", str(good)])
    assert result.exit_code == 0 and "CREATE TABLE" in Path(good).read_text()


def test_an_integer_primary_key_is_not_reported_nullable(sqlite_file_url):
    """SQLite's table_info says notnull=0 for ``INTEGER PRIMARY KEY`` (the rowid, never NULL),
    but a TEXT primary key without NOT NULL really accepts NULL and is still reported."""
    import peewee

    from embeddb.schema import check

    class Counter(peewee.Model):
        id = peewee.IntegerField(primary_key=True)
        hits = peewee.IntegerField()

        class Meta:
            table_name = "counter"

    class Label(peewee.Model):
        code = peewee.TextField(primary_key=True)

        class Meta:
            table_name = "label"

    db = embeddb.connect(sqlite_file_url)
    db.execute_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, hits INTEGER NOT NULL)")
    db.execute_sql("CREATE TABLE label (code TEXT PRIMARY KEY)")
    found = [(d.table, d.kind) for d in check(db, [Counter, Label])]
    db.close()
    assert found == [("label", "nullability")], found
