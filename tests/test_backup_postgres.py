"""PostgreSQL backups through the real pg_dump / pg_restore / psql against the test server.

Each test works in its own schema (``?schema=``), so the backup covers that schema only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner

import embeddb
from embeddb.backup import create_backup, manifest, restore_backup, verify_backup
from embeddb.cli import cli
from embeddb.errors import BackupCorrupt, BackupError, ConfigurationError, ToolNotFound
from embeddb.migrate import history

pytestmark = pytest.mark.postgres


@pytest.fixture
def shop(pg_schema_url: str):
    db = embeddb.connect(pg_schema_url)
    db.execute_sql("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT)")
    db.execute_sql("CREATE TABLE orders (id SERIAL PRIMARY KEY, "
                   "user_id INTEGER NOT NULL REFERENCES users, total BIGINT NOT NULL)")
    for i in range(1, 51):
        db.execute_sql("INSERT INTO users (name, email) VALUES (%s, %s)",
                       (f"user {i}", None if i % 2 else f"u{i}@x.test"))
        db.execute_sql("INSERT INTO orders (user_id, total) VALUES (%s, %s)", (i, i * 3))
    yield db
    db.close_all()


def _hashes(db) -> dict[str, str]:
    result = {}
    for table in ("users", "orders"):
        digest = hashlib.sha256()
        for row in db.execute_sql(f"SELECT * FROM {table} ORDER BY id").fetchall():
            digest.update(repr(row).encode())
        result[table] = digest.hexdigest()
    return result


def test_round_trip_verify_and_restore(shop, tmp_path: Path, capfd) -> None:
    db = shop
    history.ensure(db)
    db.execute_sql("INSERT INTO embeddb_migrations VALUES (7, 'm', 'c', now(), 1, 'applied')")
    at_backup = _hashes(db)
    backup = create_backup(db, directory=str(tmp_path))
    m = backup.manifest
    assert m.format == "pg_dump" and m.schema == db.settings.schema and m.schema_version == 7
    assert m.tool_version.startswith("pg_dump") and os.stat(backup.path).st_mode & 0o777 == 0o600

    checks = verify_backup(backup.path, db)["checks"]
    assert checks["scratch_restore"] == "ok" and checks["tables"] == 3

    db.execute_sql("DELETE FROM orders WHERE id > 5")
    db.execute_sql("CREATE TABLE later (x int)")
    result = restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
    assert _hashes(db) == at_backup
    assert not db.table_exists("later")
    assert os.path.exists(result["safety_copy"])
    assert manifest.read(result["safety_copy"]).format == "pg_dump"
    # the library never prints: not even the client tools' output (the dump's SELECTs)
    assert capfd.readouterr() == ("", "")


def test_corrupt_dump_is_refused_and_data_untouched(shop, tmp_path: Path) -> None:
    db = shop
    backup = create_backup(db, directory=str(tmp_path))
    db.execute_sql("INSERT INTO users (name) VALUES ('after')")
    before = _hashes(db)
    with open(backup.path, "r+b") as fh:
        fh.seek(os.path.getsize(backup.path) // 2)
        fh.write(b"\x00\xff\x00\xff")
    with pytest.raises(BackupCorrupt, match="checksum"):
        verify_backup(backup.path, db)
    with pytest.raises(BackupCorrupt):
        restore_backup(db, backup.path)
    assert _hashes(db) == before


def test_garbage_archive_with_matching_manifest_fails_pg_restore_list(shop, tmp_path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    Path(backup.path).write_bytes(b"not a dump" * 100)
    record = manifest.read(backup.path)
    record.size = record.data_size = os.path.getsize(backup.path)
    record.sha256 = record.data_sha256 = manifest.files.sha256_file(backup.path)
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt, match="pg_dump archive"):
        verify_backup(backup.path, shop)


def test_missing_pg_dump_names_the_binary(shop, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no client tools
    with pytest.raises(ToolNotFound, match="pg_dump not found on PATH"):
        create_backup(shop, directory=str(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    result = CliRunner().invoke(cli, ["--db", shop.url.raw, "backup", "create",
                                      "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "Error: pg_dump not found on PATH" in result.output


def test_schema_mismatch_refused(shop, pg_url: str, tmp_path: Path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    whole = embeddb.connect(pg_url)
    try:
        with pytest.raises(ConfigurationError) as refused:
            restore_backup(whole, backup.path)
        assert str(refused.value) == (
            f"the backup holds schema {shop.settings.schema!r} but the URL names the whole "
            "database: restore through a URL with the same ?schema=")
        record = manifest.read(backup.path)
        record.schema = None  # as a whole-database backup says
        manifest.write(backup.path, record)
        with pytest.raises(ConfigurationError) as refused:
            restore_backup(shop, backup.path)
        assert str(refused.value).startswith(
            f"the backup holds the whole database but the URL names schema "
            f"{shop.settings.schema!r}: ")
    finally:
        whole.close_all()


def test_cli_create_and_verify(shop, tmp_path: Path) -> None:
    runner = CliRunner()
    url = shop.url.raw
    created = runner.invoke(cli, ["--db", url, "backup", "create", "--dir", str(tmp_path),
                                  "--json"])
    assert created.exit_code == 0, created.output
    path = json.loads(created.output)["path"]
    verified = runner.invoke(cli, ["--db", url, "backup", "verify", path, "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["ok"] is True


def test_scratch_databases_are_dropped(shop, pg_url: str, tmp_path: Path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    scratch = verify_backup(backup.path, shop)["checks"]["scratch_database"]
    assert scratch.startswith("embeddb_verify_")
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (scratch,))
            leftover = cur.fetchone()[0]
    finally:
        conn.close()
    assert leftover == 0


@pytest.fixture
def whole_database(pg_url: str):
    """A database of its own (no ?schema=): the whole-database backup and restore path."""
    import uuid

    name = f"embeddb_whole_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(pg_url.split("?")[0])
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    base = pg_url.split("?")[0].rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_whole_database_round_trip_and_refusal_while_in_use(whole_database, tmp_path) -> None:
    db = embeddb.connect(whole_database)
    db.execute_sql("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT NOT NULL)")
    db.execute_sql("CREATE TABLE orders (id SERIAL PRIMARY KEY, "
                   "user_id INTEGER NOT NULL REFERENCES users, total BIGINT NOT NULL)")
    for i in range(1, 21):
        db.execute_sql("INSERT INTO users (name) VALUES (%s)", (f"user {i}",))
        db.execute_sql("INSERT INTO orders (user_id, total) VALUES (%s, %s)", (i, i))
    at_backup = _hashes(db)
    backup = create_backup(db, directory=str(tmp_path))
    assert backup.manifest.schema is None
    db.execute_sql("DELETE FROM orders")
    db.execute_sql("CREATE TABLE later (x int)")

    other = psycopg2.connect(whole_database)  # another session: the restore must refuse
    try:
        with pytest.raises(embeddb.errors.DatabaseInUse) as refused:
            restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
        assert str(refused.value) == (
            f"1 other session(s) are connected to {db.url.database}: stop the application and "
            "retry (or restore one schema with ?schema=)")
    finally:
        other.close()
    assert db.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 0  # untouched

    restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
    assert _hashes(db) == at_backup
    assert not db.table_exists("later")
    # the reset drops user schemas only: PostgreSQL's own catalog views stay
    assert db.execute_sql("SELECT count(*) FROM information_schema.tables "
                          "WHERE table_name = 'users'").fetchone()[0] == 1
    db.close_all()


def test_whole_database_restore_of_a_changed_public_schema(whole_database, tmp_path) -> None:
    """A public schema given another owner is in the dump: the reset must not create it too."""
    db = embeddb.connect(whole_database)
    db.execute_sql("ALTER SCHEMA public OWNER TO CURRENT_USER")
    db.execute_sql("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT NOT NULL)")
    db.execute_sql("INSERT INTO users (name) VALUES ('kept')")
    backup = create_backup(db, directory=str(tmp_path))
    db.execute_sql("DELETE FROM users")
    db.execute_sql("ALTER SCHEMA public OWNER TO pg_database_owner")
    restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
    assert db.execute_sql("SELECT name FROM users").fetchall() == [("kept",)]
    owner = db.execute_sql("SELECT nspowner::regrole::text FROM pg_namespace "
                           "WHERE nspname = 'public'").fetchone()[0]
    assert owner == db.url.user
    db.close_all()


# -- prune, verify and failed restores on the real server (issue 11) ------------------------------


def _flip_byte(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)[0]
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte ^ 0xFF]))


def test_prune_keeps_the_good_dump_when_the_newer_one_is_damaged(shop, tmp_path: Path) -> None:
    from embeddb.backup import prune_backups

    older = create_backup(shop, directory=str(tmp_path)).path
    newer = create_backup(shop, directory=str(tmp_path)).path
    _flip_byte(newer)
    result = prune_backups(str(tmp_path), keep=1)
    assert result["removed"] == [newer] and result["kept"] == [older]
    assert "fails its checksum" in result["decisions"][0]["reason"]
    assert verify_backup(older, shop)["ok"] is True


def test_prune_counts_pre_restore_dumps_with_regular_ones(shop, tmp_path: Path) -> None:
    from embeddb.backup import prune_backups

    first = create_backup(shop, directory=str(tmp_path)).path
    second = create_backup(shop, directory=str(tmp_path)).path
    safety = restore_backup(shop, second, safety_dir=str(tmp_path))["safety_copy"]
    kinds = {d["path"]: d["kind"] for d in prune_backups(str(tmp_path), keep=3, dry_run=True)[
        "decisions"]}
    assert kinds == {first: "regular", second: "regular", safety: "prerestore"}
    result = prune_backups(str(tmp_path), keep=1)
    # the pre-restore dump is the newest; the restored one passed verification during restore
    assert result["removed"] == [first] and result["kept"] == [safety, second]


def test_verify_checks_the_data_checksum_of_a_dump(shop, tmp_path: Path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    record = manifest.read(backup.path)
    record.data_sha256 = "f" * 64
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt, match="data checksum"):
        verify_backup(backup.path, shop)


def test_failed_restore_names_the_dump_and_changes_nothing(shop, tmp_path: Path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    shop.execute_sql("INSERT INTO users (name) VALUES ('after')")
    before = _hashes(shop)
    _flip_byte(backup.path)
    result = CliRunner().invoke(cli, ["--db", shop.url.raw, "backup", "restore", backup.path,
                                      "--yes"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {backup.path} fails its checksum")
    assert ".tmp" not in result.output and len(result.output.splitlines()) == 1
    assert _hashes(shop) == before


def test_unwritable_safety_dir_is_one_error_naming_it(shop, tmp_path: Path) -> None:
    backup = create_backup(shop, directory=str(tmp_path))
    shop.execute_sql("DELETE FROM orders")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["--db", shop.url.raw, "backup", "restore", backup.path,
                                      "--yes", "--safety-dir", str(blocker / "safety")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot keep the safety copy in {blocker / 'safety'}")
    assert shop.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 0  # untouched


def test_schema_restore_leaves_other_schemas_untouched(shop, pg_url: str, tmp_path: Path) -> None:
    neighbour = f"n_{os.urandom(6).hex()}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{neighbour}"')
        cur.execute(f'CREATE TABLE "{neighbour}".users (id INT PRIMARY KEY, name TEXT)')
        cur.execute(f'INSERT INTO "{neighbour}".users VALUES (1, \'stays\')')
    try:
        backup = create_backup(shop, directory=str(tmp_path))
        with admin.cursor() as cur:  # changed after the backup: a restore must not undo it
            cur.execute(f'INSERT INTO "{neighbour}".users VALUES (2, \'added later\')')
        shop.execute_sql("DELETE FROM orders")
        restore_backup(shop, backup.path, safety_dir=str(tmp_path / "safety"))
        assert shop.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 50
        with admin.cursor() as cur:
            cur.execute(f'SELECT id, name FROM "{neighbour}".users ORDER BY id')
            assert cur.fetchall() == [(1, "stays"), (2, "added later")]
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{neighbour}" CASCADE')
        admin.close()


SPY = """#!/bin/sh
printf '%s\\n' "$0 $*" >> "$SPY_LOG"
env | grep '^PG' | sort >> "$SPY_LOG"
exec {real} "$@"
"""


def test_connection_settings_reach_the_client_tools_only_through_pg_variables(
    shop, tmp_path: Path, monkeypatch
) -> None:
    """ps shows every process's command line: host, port, user, database and above all the
    password must travel in PG* variables."""
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pg_dump", "pg_restore", "psql"):
        spy = bin_dir / name
        spy.write_text(SPY.format(real=shutil.which(name)))
        spy.chmod(0o755)
    log = tmp_path / "spy.log"
    monkeypatch.setenv("SPY_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    url = shop.url.raw.replace("postgres@", "postgres:s3cret-pw@", 1)
    db = embeddb.connect(url)
    try:
        backup = create_backup(db, directory=str(tmp_path / "b"))
        db.execute_sql("DELETE FROM orders")
        restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
    finally:
        db.close_all()
    lines = log.read_text().splitlines()
    commands = [line for line in lines if line.startswith(str(bin_dir))]
    assert {Path(c.split()[0]).name for c in commands} == {"pg_dump", "pg_restore", "psql"}
    for command in commands:
        for secret in ("s3cret-pw", "127.0.0.1", "5432", "postgres", "--host", "--port",
                       "--username", "-h ", "-U ", "-d "):
            assert secret not in command, command
        words = command.split()  # only verify's private scratch database is named there
        assert all(words[i + 1].startswith("embeddb_verify_")
                   for i, word in enumerate(words) if word == "--dbname"), command
    assert "PGPASSWORD=s3cret-pw" in lines and "PGHOST=127.0.0.1" in lines
    assert "PGUSER=postgres" in lines and "PGPORT=5432" in lines


CUT_SHORT = r"""#!/bin/sh
# pg_restore that dies half-way through writing the SQL script (a crash, a read error)
case " $* " in
  *" --file - "*) {real} "$@" | awk '{{ print }} /^\);$/ {{ exit }}'
                 echo "DO \$\$ BEGIN RAISE WARNING 'noise from the script'; END \$\$;"
                 echo "pg_restore: error: could not read input file: Input/output error" >&2
                 exit 1 ;;
  *) exec {real} "$@" ;;
esac
"""


def test_replay_cut_short_rolls_back_and_keeps_the_live_data(
    shop, tmp_path: Path, monkeypatch
) -> None:
    """The SQL stream ends early, at a statement boundary (pg_restore died after the first
    CREATE TABLE): psql must not commit what it got."""
    import shutil

    backup = create_backup(shop, directory=str(tmp_path))
    shop.execute_sql("INSERT INTO users (name) VALUES ('after the backup')")
    before = _hashes(shop)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spy = bin_dir / "pg_restore"
    spy.write_text(CUT_SHORT.format(real=shutil.which("pg_restore")))
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(BackupError, match="rolled back") as failed:
        restore_backup(shop, backup.path, safety_dir=str(tmp_path / "safety"))
    assert _hashes(shop) == before
    # the reason is pg_restore's, not psql's notices about the objects it dropped
    assert "could not read input file: Input/output error" in str(failed.value)
    assert "NOTICE" not in str(failed.value)


BAD_STATEMENT = r"""#!/bin/sh
# pg_restore whose script holds a statement the server refuses, after the first CREATE TABLE
case " $* " in
  *" --file - "*) echo "pg_restore: warning: noise from the producer" >&2
                 {real} "$@" |
                 awk '{{ print }} /^\);$/ && !done {{ print "SELECT no_such_fn();"; done = 1 }}' ;;
  *) exec {real} "$@" ;;
esac
"""


def test_replay_stopped_by_an_error_rolls_back_and_says_why(
    shop, tmp_path: Path, monkeypatch
) -> None:
    """psql stops at the first failing statement (ON_ERROR_STOP): nothing of the replay is
    kept, and the error is the server's, not a side effect of pg_restore being stopped."""
    import shutil

    backup = create_backup(shop, directory=str(tmp_path))
    shop.execute_sql("INSERT INTO users (name) VALUES ('after the backup')")
    before = _hashes(shop)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spy = bin_dir / "pg_restore"
    spy.write_text(BAD_STATEMENT.format(real=shutil.which("pg_restore")))
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    psqlrc = tmp_path / "psqlrc"  # a user's psqlrc must not undo ON_ERROR_STOP
    psqlrc.write_text("\\set ON_ERROR_STOP off\n")
    monkeypatch.setenv("PSQLRC", str(psqlrc))
    with pytest.raises(BackupError, match="rolled back") as failed:
        restore_backup(shop, backup.path, safety_dir=str(tmp_path / "safety"))
    assert _hashes(shop) == before
    assert "function no_such_fn() does not exist" in str(failed.value)
    assert "NOTICE" not in str(failed.value) and "\n" not in str(failed.value)
    # where psql read it (a line of the stream embeddb feeds it) means nothing to the user
    assert "rolled back: ERROR: function no_such_fn()" in str(failed.value)
    assert "<stdin>" not in str(failed.value)


@pytest.mark.parametrize("dependent", ["view", "foreign key", "enum column"])
def test_schema_restore_refuses_while_other_schemas_depend_on_it(
    shop, pg_url: str, tmp_path: Path, dependent: str
) -> None:
    """The replay drops the schema with CASCADE: another schema's view, foreign key or enum-typed
    column (with its data) would go with it."""
    schema = shop.settings.schema
    if dependent == "enum column":
        shop.execute_sql("CREATE TYPE mood AS ENUM ('ok', 'bad')")
    backup = create_backup(shop, directory=str(tmp_path))
    neighbour = f"n_{os.urandom(6).hex()}"
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    ddl = {
        "view": f'CREATE VIEW "{neighbour}".big AS SELECT * FROM "{schema}".orders WHERE total > 9',
        "foreign key":
            f'CREATE TABLE "{neighbour}".notes (user_id INT REFERENCES "{schema}".users)',
        "enum column": f'CREATE TABLE "{neighbour}".notes (id INT, m "{schema}".mood)',
    }[dependent]
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{neighbour}"')
        cur.execute(ddl)
        if dependent == "foreign key":
            cur.execute(f'INSERT INTO "{neighbour}".notes VALUES (1)')
        elif dependent == "enum column":
            cur.execute(f'INSERT INTO "{neighbour}".notes VALUES (1, %s)', ("ok",))
    try:
        shop.execute_sql("DELETE FROM orders")
        with pytest.raises(BackupError, match=f"depend on schema '{schema}' .*{neighbour}"):
            restore_backup(shop, backup.path, safety_dir=str(tmp_path / "safety"))
        assert shop.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 0  # untouched
        result = CliRunner().invoke(cli, ["--db", shop.url.raw, "backup", "restore", backup.path,
                                          "--yes", "--safety-dir", str(tmp_path / "safety")])
        assert result.exit_code == 1 and len(result.output.splitlines()) == 1
        assert result.output.startswith(f"Error: other schemas depend on schema '{schema}'")
        assert shop.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 0
        with admin.cursor() as cur:
            relation = "big" if dependent == "view" else "notes"
            cur.execute(f'SELECT count(*) FROM "{neighbour}".{relation}')
            assert cur.fetchone()[0] == (0 if dependent == "view" else 1)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{neighbour}" CASCADE')
        admin.close()


FAILING_DUMP = """#!/bin/sh
echo "pg_dump: error: server refused password $PGPASSWORD for user $PGUSER" >&2
exit 1
"""


def test_failed_pg_dump_is_an_error_without_the_password(shop, tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spy = bin_dir / "pg_dump"
    spy.write_text(FAILING_DUMP)
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    db = embeddb.connect(shop.url.raw.replace("postgres@", "postgres:s3cret-pw@", 1))
    try:
        with pytest.raises(BackupError) as failed:
            create_backup(db, directory=str(tmp_path / "b"))
    finally:
        db.close_all()
    assert str(failed.value).startswith("pg_dump failed (exit 1): pg_dump: error: server refused")
    assert "s3cret-pw" not in str(failed.value)
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


FAILING_REPLAY = r"""#!/bin/sh
case " $* " in
  *" --file - "*) echo "pg_restore: error: cannot go on with password $PGPASSWORD" >&2
                 exit 1 ;;
  *) exec {real} "$@" ;;
esac
"""


def test_failed_replay_is_an_error_without_the_password(shop, tmp_path: Path, monkeypatch) -> None:
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    spy = bin_dir / "pg_restore"
    spy.write_text(FAILING_REPLAY.format(real=shutil.which("pg_restore")))
    spy.chmod(0o755)
    db = embeddb.connect(shop.url.raw.replace("postgres@", "postgres:s3cret-pw@", 1))
    try:
        backup = create_backup(db, directory=str(tmp_path / "b"))
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        with pytest.raises(BackupError) as failed:
            restore_backup(db, backup.path, safety_dir=str(tmp_path / "safety"))
    finally:
        db.close_all()
    assert str(failed.value).startswith("restore failed and was rolled back: pg_restore: error:")
    assert "s3cret-pw" not in str(failed.value)
