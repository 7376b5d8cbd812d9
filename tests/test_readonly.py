"""Commands and connections that only read never create a database nor need write access."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, shared_directory

import embeddb
import embeddb.migrate
from embeddb import reference
from embeddb.cli import cli
from embeddb.errors import DatabaseNotFound, OperationalError

#: every command that must not create the database it is pointed at
NON_CREATING = [
    ["info"],
    ["migrate", "status"],
    ["migrate", "verify"],
    ["migrate", "repair"],
    ["migrate", "resolve", "1"],
    ["schema", "check"],
    ["schema", "dump"],
    ["maintenance", "integrity"],
    ["maintenance", "vacuum"],
    ["maintenance", "analyze"],
    ["maintenance", "optimize"],
    ["maintenance", "checkpoint"],
    ["maintenance", "cleanup"],
    ["maintenance", "cleanup", "--dry-run"],
    ["backup", "create"],
    ["backup", "list"],
    ["backup", "prune", "--keep", "1"],
    ["cache", "clear"],
    ["cache", "stats"],
    ["stats"],
    ["stats", "--tables"],
    ["explain", "SELECT 1"],
    ["doctor"],
    ["locks"],
    ["audit", "enable", "services"],
    ["audit", "disable", "services"],
    ["audit", "log"],
    ["outbox", "status"],
    ["outbox", "retry", "1"],
    ["outbox", "purge", "--delivered-older-than", "7d"],
    ["outbox", "purge", "--delivered-older-than", "7d", "--dry-run"],
]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args", NON_CREATING, ids=" ".join)
def test_a_mistyped_path_is_an_error_and_nothing_is_created(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(reference.MIGRATIONS, tmp_path / "migrations")
    before = _listing(tmp_path)
    result = CliRunner().invoke(cli, [*args, "--db", "sqlite:///typo.db"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no database at typo.db"), lines
    assert _listing(tmp_path) == before  # no file, -wal, -shm, lock, cache or backups dir


def test_the_default_database_is_not_created_by_info(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 1 and "no database at embeddb.db" in result.output
    assert list(tmp_path.iterdir()) == []


def test_commands_that_build_a_database_still_create_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["migrate", "up", "--db", "sqlite:///new.db",
                                      "--migrations", str(reference.MIGRATIONS)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new.db").is_file()
    info = CliRunner().invoke(cli, ["info", "--db", "sqlite:///new.db"])
    assert info.exit_code == 0 and "wal" in info.output


def test_connect_create_false_refuses_a_missing_file(tmp_path):
    path = tmp_path / "missing.db"
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(DatabaseNotFound, match=f"no database at {path}"):
            embeddb.connect(f"sqlite:///{path}", **kwargs)
    assert list(tmp_path.iterdir()) == []
    embeddb.connect(f"sqlite:///{path}").close()  # the default still creates it
    embeddb.connect(f"sqlite:///{path}", create=False).close()


def test_readonly_sqlite_reads_and_writes_nothing(tmp_path):
    path = tmp_path / "plain.db"
    import sqlite3

    conn = sqlite3.connect(path)  # a rollback-journal file made by another tool
    conn.execute("CREATE TABLE t (a)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    db = embeddb.connect(f"sqlite:///{path}", readonly=True)
    assert db.execute_sql("SELECT a FROM t").fetchall() == [(1,)]
    assert db.info()["settings"]["journal_mode"] == "delete"  # not switched to WAL
    with pytest.raises(OperationalError, match="readonly"):
        db.execute_sql("INSERT INTO t VALUES (2)")
    db.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.db"]


def test_readonly_sqlite_transactions_read_and_write_nothing(tmp_path):
    """A read-only engine's ``db.atomic()`` is a read transaction (one snapshot), not a
    refused BEGIN IMMEDIATE; a write inside it fails as SQLite says and leaves the data."""
    path = tmp_path / "app.db"
    writer = embeddb.connect(f"sqlite:///{path}")
    writer.execute_sql("CREATE TABLE t (a)")
    writer.execute_sql("INSERT INTO t VALUES (1)")
    ro = embeddb.connect(f"sqlite:///{path}", readonly=True)
    with ro.atomic():
        assert ro.execute_sql("SELECT a FROM t").fetchall() == [(1,)]
        writer.execute_sql("INSERT INTO t VALUES (2)")  # not seen: the block reads one snapshot
        assert ro.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 1
    with pytest.raises(OperationalError, match="readonly"), ro.atomic():
        ro.execute_sql("INSERT INTO t VALUES (3)")
    assert ro.execute_sql("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,)]
    ro.close()
    writer.close()


def test_readonly_postgres_refuses_writes(pg_schema_url):
    db = embeddb.connect(pg_schema_url, create=False)
    db.execute_sql("CREATE TABLE t (a int)")
    db.close()
    ro = embeddb.connect(pg_schema_url, readonly=True)
    assert ro.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 0
    with pytest.raises(embeddb.DatabaseError, match="read-only"):
        ro.execute_sql("INSERT INTO t VALUES (1)")
    ro.close()
    admin = psycopg2.connect(pg_schema_url.split("?")[0])
    schema = pg_schema_url.rsplit("schema=", 1)[1]
    with admin.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM "{schema}".t')
        assert cur.fetchone()[0] == 0
    admin.close()


def test_read_commands_on_postgres_work_read_only(pg_schema_url):
    url = pg_schema_url
    db = embeddb.connect(url)
    embeddb.migrate.up(db, reference.MIGRATIONS, backup=False)
    db.close()
    for args in (["info"], ["migrate", "status", "--migrations", str(reference.MIGRATIONS)],
                 ["schema", "check"], ["schema", "dump"], ["maintenance", "integrity"],
                 ["maintenance", "cleanup", "--dry-run"]):
        result = CliRunner().invoke(cli, [*args, "--db", url])
        assert result.exit_code == 0, (args, result.output)


def _read_commands(db_path: str, migrations: str, backups: str) -> list[tuple[int, str]]:
    url = f"sqlite:///{db_path}"
    runs = [
        ["info"],
        ["migrate", "status", "--migrations", migrations],
        ["migrate", "verify", "--migrations", migrations],
        ["schema", "check"],
        ["schema", "dump"],
        ["maintenance", "integrity"],
        ["backup", "create", "--dir", backups],
        ["backup", "list", "--dir", backups],
    ]
    return [(r.exit_code, r.output) for r in
            (CliRunner().invoke(cli, [*args, "--db", url]) for args in runs)]


@needs_root
def test_read_commands_work_on_a_file_the_user_cannot_write():
    with shared_directory() as home:
        data = home.parent / "data"  # root's, 0755: the other user can create nothing here
        data.mkdir(mode=0o755)
        migrations = data / "migrations"
        shutil.copytree(reference.MIGRATIONS, migrations)
        db_path = data / "app.db"
        db = embeddb.connect(f"sqlite:///{db_path}")
        embeddb.migrate.up(db, migrations, backup=False)
        db.close()
        os.chmod(db_path, 0o644)
        before = sorted(p.name for p in data.iterdir())
        assert "app.db-wal" not in before and "app.db-shm" not in before  # closed cleanly
        digest = hashlib.sha256(db_path.read_bytes()).hexdigest()
        results = as_user(_read_commands, str(db_path), str(migrations), str(home / "backups"))
        for code, output in results:
            assert code == 0, output
        assert "wal" in results[0][1]
        assert "Schema matches the models." in results[3][1]
        assert "CREATE TABLE" in results[4][1]
        assert "Backed up" in results[6][1] and "app-" in results[7][1]
        assert sorted(p.name for p in data.iterdir()) == before
        assert hashlib.sha256(db_path.read_bytes()).hexdigest() == digest


def test_backup_list_of_a_missing_database_points_to_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["backup", "list", "--db", "sqlite:///gone.db"])
    assert result.exit_code == 1 and "pass --dir DIR" in result.output
    (tmp_path / "backups").mkdir()
    result = CliRunner().invoke(cli, ["backup", "list", "--db", "sqlite:///gone.db",
                                      "--dir", "backups"])
    assert result.exit_code == 0 and result.output.strip() == "no backups"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backups"]


#: the commands that may create the database they are pointed at
CREATING = {"setup", "seed", "migrate up", "migrate down", "migrate redo", "backup restore",
            "copy"}  # (copy: its --to target; the --from source is opened read-only)
#: commands that open no database here (SQLite) or fail on their other input first
NOT_OPENING = {"migrate new", "outbox init", "backup verify", "outbox run", "audit upgrade"}


def test_every_command_is_classified():
    """A new command must say whether it may create a database (add it to a list above)."""
    import click

    def leaves(group: click.Group, prefix: str = ""):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # the top level loads its commands lazily
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                yield from leaves(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}"

    commands = set(leaves(cli))
    tested = {" ".join(args[:n]) for args in NON_CREATING for n in range(1, len(args) + 1)
              if " ".join(args[:n]) in commands}
    unclassified = commands - CREATING - NOT_OPENING - tested
    assert not unclassified
