"""The migration runner on every backend: files, atomicity, checksums, down/redo, variants."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import threading
import uuid
from pathlib import Path

import psycopg2
import pytest

import embeddb
from embeddb import migrate, schema
from embeddb.errors import (
    ChecksumMismatch,
    DatabaseError,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
)
from embeddb.migrate.backends import backend_for
from embeddb.migrate.files import checksum, discover
from embeddb.migrate.script import normalize


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """PostgreSQL safety dumps go to ./backups: keep them out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


def write(folder: Path, name: str, text: str, newline: str = "\n") -> Path:
    path = folder / name
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def tables(db) -> set[str]:
    return set(db.get_tables())


def rows(db, sql: str) -> list[tuple]:
    return [tuple(r) for r in db.execute_sql(sql).fetchall()]


def three(folder: Path) -> None:
    write(folder, "0001_users.up.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);")
    write(folder, "0001_users.down.sql", "DROP TABLE users;")
    write(folder, "0002_posts.sql", (
        "-- migrate:up\nCREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT);\n"
        "-- migrate:down\nDROP TABLE posts;\n"
    ))
    write(folder, "0003_tags.up.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    write(folder, "0003_tags.down.sql", "DROP TABLE tags;\n")


def test_up_applies_in_order_with_bookkeeping(db, folder):
    three(folder)
    assert migrate.current_version(db) is None
    events = []
    result = migrate.up(db, folder, progress=events.append)
    assert result.names == ["0001_users", "0002_posts", "0003_tags"]
    assert result.version == 3 == migrate.current_version(db)
    assert [e.kind for e in events if e.kind != "backup"] == ["applying", "applied"] * 3
    assert {"users", "posts", "tags", "embeddb_migrations"} <= tables(db)
    recorded = rows(db, "SELECT version, name, status FROM embeddb_migrations ORDER BY version")
    assert recorded == [(1, "0001_users", "applied"), (2, "0002_posts", "applied"),
                        (3, "0003_tags", "applied")]
    assert migrate.up(db, folder).names == []


def test_failure_in_the_middle_of_the_third_migration_leaves_no_trace(db, folder):
    three(folder)
    write(folder, "0003_tags.up.sql", (
        "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n"
        "INSERT INTO tags (id) VALUES (1);\n"
        "\n"
        "INSERT INTO no_such_table VALUES (1);\n"
        "CREATE TABLE after_error (x INTEGER);\n"
    ))
    with pytest.raises(MigrationFailed) as info:
        migrate.up(db, folder)
    message = str(info.value)
    assert "0003_tags.up.sql line 4" in message and "no_such_table" in message
    assert migrate.current_version(db) == 2
    assert "tags" not in tables(db) and "after_error" not in tables(db)
    assert rows(db, "SELECT version FROM embeddb_migrations WHERE version = 3") == []
    write(folder, "0003_tags.up.sql", "CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    assert migrate.up(db, folder).names == ["0003_tags"]
    assert migrate.current_version(db) == 3


def test_edited_applied_file_fails_up_and_verify_until_repaired(db, folder):
    three(folder)
    migrate.up(db, folder)
    path = folder / "0002_posts.sql"
    write(path.parent, path.name, path.read_text(), newline="\r\n")  # line endings only
    assert migrate.up(db, folder).names == []
    migrate.verify(db, folder)
    write(folder, "0002_posts.sql", path.read_text().replace("title TEXT", "title TEXT, x INT"))
    write(folder, "0004_more.up.sql", "CREATE TABLE more (id INTEGER);")
    for check in (migrate.up, migrate.verify):
        with pytest.raises(ChecksumMismatch) as info:
            check(db, folder)
        entry = next(e for e in migrate.status(db, folder) if e.version == 2)
        assert "0002_posts.sql" in str(info.value)
        assert entry.checksum in str(info.value) and entry.recorded_checksum in str(info.value)
    assert entry.state == "checksum changed"
    assert "more" not in tables(db)
    assert migrate.repair(db, folder) == ["0002_posts"]
    assert migrate.up(db, folder).names == ["0004_more"]
    migrate.verify(db, folder)


def test_deleted_applied_file_is_reported(db, folder):
    three(folder)
    migrate.up(db, folder)
    (folder / "0002_posts.sql").unlink()
    states = {e.version: e.state for e in migrate.status(db, folder)}
    assert states == {1: "applied", 2: "missing file", 3: "applied"}
    assert [r.version for r in migrate.up(db, folder).missing] == [2]
    with pytest.raises(MigrationError, match="0002_posts: missing file"):
        migrate.verify(db, folder)


def test_down_to_zero_leaves_only_the_bookkeeping_table(db, folder):
    three(folder)
    migrate.up(db, folder)
    result = migrate.down(db, folder, to=0)
    assert result.names == ["0003_tags", "0002_posts", "0001_users"]
    assert tables(db) == {"embeddb_migrations"}
    assert migrate.current_version(db) is None
    assert rows(db, "SELECT COUNT(*) FROM embeddb_migrations") == [(0,)]


def test_down_steps_to_and_redo(db, folder):
    three(folder)
    migrate.up(db, folder)
    assert migrate.down(db, folder).names == ["0003_tags"]
    assert migrate.current_version(db) == 2
    migrate.up(db, folder)
    assert migrate.down(db, folder, steps=2).names == ["0003_tags", "0002_posts"]
    migrate.up(db, folder)
    assert migrate.down(db, folder, to=1).names == ["0003_tags", "0002_posts"]
    migrate.up(db, folder)
    db.execute_sql("INSERT INTO tags (id) VALUES (7)")
    result = migrate.redo(db, folder)
    assert [(s.name, s.direction) for s in result.steps] == [
        ("0003_tags", "down"), ("0003_tags", "up")]
    assert rows(db, "SELECT COUNT(*) FROM tags") == [(0,)]
    assert migrate.current_version(db) == 3


def test_down_without_a_down_part_changes_nothing(db, folder):
    three(folder)
    (folder / "0002_posts.sql").write_text("-- migrate:up\nCREATE TABLE posts (id INTEGER);\n")
    migrate.up(db, folder)
    with pytest.raises(MigrationError, match="cannot revert 0002_posts: it has no down part"):
        migrate.down(db, folder, steps=2)
    assert migrate.current_version(db) == 3 and "tags" in tables(db)


def test_dry_run_and_to(db, folder):
    three(folder)
    result = migrate.up(db, folder, dry_run=True)
    assert result.dry_run and result.names == ["0001_users", "0002_posts", "0003_tags"]
    assert result.steps[0].statements == (
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);",)
    assert tables(db) == set() and result.version is None
    up_to_2 = migrate.up(db, folder, to=2)
    assert up_to_2.names == ["0001_users", "0002_posts"] and up_to_2.version == 2
    assert migrate.current_version(db) == 2
    assert migrate.down(db, folder, dry_run=True).names == ["0002_posts"]
    assert migrate.current_version(db) == 2
    with pytest.raises(MigrationError, match="no migration with version 9"):
        migrate.up(db, folder, to=9)


def test_out_of_order_is_refused_unless_allowed(db, folder):
    three(folder)
    (folder / "0002_posts.sql").rename(folder / "keep.txt")
    migrate.up(db, folder)
    (folder / "keep.txt").rename(folder / "0002_posts.sql")
    with pytest.raises(MigrationError, match="0002_posts is older than .* version 3"):
        migrate.up(db, folder)
    assert migrate.up(db, folder, allow_out_of_order=True).names == ["0002_posts"]


@pytest.mark.parametrize("files, fragment", [
    ({"0001_a.up.sql": "", "0001_b.up.sql": ""}, "duplicate version 1"),
    ({"0001_a.sql": "-- migrate:up\n", "0001_a.up.sql": ""}, "duplicate version 1"),
    ({"0002_b.down.sql": ""}, "0002_b.down.sql is a down migration without an up"),
    ({"create_users.sql": ""}, "cannot parse the file name create_users.sql"),
    ({"0001_a.mysql.up.sql": ""}, "unknown dialect 'mysql'"),
    ({"0001_a.sql": "CREATE TABLE a (x INT);"}, "no '-- migrate:up' line"),
])
def test_folder_problems_are_reported_before_anything_runs(db, folder, files, fragment):
    write(folder, "0000_first.up.sql", "CREATE TABLE first (x INTEGER);")
    for name, text in files.items():
        write(folder, name, text)
    with pytest.raises(MigrationError, match=fragment):
        migrate.up(db, folder)
    assert "first" not in tables(db)


def test_missing_folder_says_what_to_do(db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seeds").mkdir()  # a project, not an empty directory: no reference fallback
    with pytest.raises(MigrationError, match="no migrations folder at migrations: pass"):
        migrate.up(db)
    monkeypatch.setenv("EMBEDDB_MIGRATIONS_DIR", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    write(tmp_path / "env", "0001_x.up.sql", "CREATE TABLE x (a INTEGER);")
    assert migrate.up(db).names == ["0001_x"]


def test_dialect_variants_take_precedence(db, folder):
    write(folder, "0001_search.up.sql", "CREATE TABLE generic (x INTEGER);")
    write(folder, "0001_search.sqlite.up.sql", "CREATE TABLE on_sqlite (x INTEGER);")
    write(folder, "0001_search.postgres.up.sql", "CREATE TABLE on_postgres (x INTEGER);")
    write(folder, "0002_only_pg.postgres.up.sql", "CREATE TABLE only_pg (x INTEGER);")
    write(folder, "0003_common.up.sql", "CREATE TABLE common (x INTEGER);")
    migrate.up(db, folder)
    expected = {"on_sqlite", "common"} if db.backend == "sqlite" else {
        "on_postgres", "only_pg", "common"}
    assert tables(db) - {"embeddb_migrations"} == expected


def test_own_begin_commit_runs_as_written(db, folder):
    write(folder, "0001_own.up.sql", (
        "BEGIN;\nCREATE TABLE own (x INTEGER);\nINSERT INTO own VALUES (1);\nCOMMIT;\n"))
    write(folder, "0002_own_bad.up.sql", (
        "BEGIN;\nCREATE TABLE bad (x INTEGER);\nINSERT INTO nowhere VALUES (1);\nCOMMIT;\n"))
    with pytest.raises(MigrationFailed, match="0002_own_bad.up.sql line 3"):
        migrate.up(db, folder)
    assert rows(db, "SELECT x FROM own") == [(1,)]
    assert "bad" not in tables(db)
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "pending"]
    write(folder, "0002_own_bad.up.sql", "BEGIN;\nCREATE TABLE bad (x INTEGER);\nCOMMIT;\n")
    assert migrate.up(db, folder).names == ["0002_own_bad"]


def test_no_transaction_failure_is_recorded_and_blocks_until_resolved(db, folder):
    write(folder, "0001_nt.up.sql", (
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nINSERT INTO nowhere VALUES (1);"))
    write(folder, "0002_next.up.sql", "CREATE TABLE next_one (x INTEGER);")
    with pytest.raises(MigrationFailed, match="0001_nt.up.sql line 3.*stopped there"):
        migrate.up(db, folder)
    assert "nt" in tables(db)  # no transaction: the first statement stayed
    assert [e.state for e in migrate.status(db, folder)] == ["failed", "pending"]
    assert migrate.current_version(db) is None
    with pytest.raises(MigrationFailed):
        migrate.up(db, folder)  # the re-run fails again (nt exists); 0002 stays blocked
    assert "next_one" not in tables(db)
    with pytest.raises(MigrationError, match="marked failed"):
        migrate.down(db, folder)
    assert migrate.resolve(db, folder, 1) == "applied"
    assert migrate.up(db, folder).names == ["0002_next"]


def test_ctrl_c_in_a_no_transaction_migration_marks_it_failed(db, folder):
    """Its first statement committed on its own: the history must not call it pending."""
    write(folder, "0001_nt.py", (
        "import os, signal\n\ntransaction = False\n\n"
        "def up(db):\n"
        "    db.execute_sql('CREATE TABLE nt (x INTEGER)')\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
    ))
    write(folder, "0002_next.up.sql", "CREATE TABLE next_one (x INTEGER);")
    # Python's own handler, also where SIGINT came in ignored (a background job, mutmut's run)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            migrate.up(db, folder, backup=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "nt" in tables(db)
    assert [e.state for e in migrate.status(db, folder)] == ["failed", "pending"]


def test_failed_no_transaction_migration_rerun_that_succeeds_clears_it(db, folder):
    write(folder, "0001_nt.up.sql", (
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nINSERT INTO nowhere VALUES (1);"))
    with pytest.raises(MigrationFailed):
        migrate.up(db, folder)
    write(folder, "0001_nt.up.sql", "-- embeddb:no-transaction\nCREATE TABLE IF NOT EXISTS nt (x INTEGER);")
    assert migrate.up(db, folder).names == ["0001_nt"]
    assert [e.state for e in migrate.status(db, folder)] == ["applied"]
    with pytest.raises(MigrationError, match="not marked failed"):
        migrate.resolve(db, folder, 1)


def test_resolve_pending_makes_it_run_again(db, folder):
    write(folder, "0001_nt.up.sql", (
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nINSERT INTO nowhere VALUES (1);"))
    with pytest.raises(MigrationFailed):
        migrate.up(db, folder)
    db.execute_sql("DROP TABLE nt")
    assert migrate.resolve(db, folder, 1, applied=False) == "pending"
    assert [e.state for e in migrate.status(db, folder)] == ["pending"]


def test_thousand_row_insert_file(db, folder):
    values = "\n".join(f"INSERT INTO items (id, label) VALUES ({i}, 'item; {i}');"
                       for i in range(1000))
    write(folder, "0001_items.up.sql", "CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT);")
    write(folder, "0002_fill.up.sql", values)
    migrate.up(db, folder)
    assert rows(db, "SELECT COUNT(*), MAX(label) FROM items") == [(1000, "item; 999")]


def test_python_migration_and_its_error_line(db, folder):
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INTEGER);")
    write(folder, "0002_data.py", (
        "def up(db):\n"
        "    db.execute_sql('INSERT INTO t (x) VALUES (1)')\n"
        "    raise ValueError('bad data')\n\n"
        "def down(db):\n"
        "    db.execute_sql('DELETE FROM t')\n"
    ))
    with pytest.raises(MigrationFailed, match="0002_data.py line 3: ValueError: bad data"):
        migrate.up(db, folder)
    assert rows(db, "SELECT COUNT(*) FROM t") == [(0,)]
    write(folder, "0002_data.py", (
        "def up(db):\n    db.execute_sql('INSERT INTO t (x) VALUES (1)')\n\n"
        "def down(db):\n    db.execute_sql('DELETE FROM t')\n"
    ))
    assert migrate.up(db, folder).names == ["0002_data"]
    assert migrate.down(db, folder).names == ["0002_data"]
    assert rows(db, "SELECT COUNT(*) FROM t") == [(0,)]


def test_lock_held_elsewhere_times_out_with_a_clear_error(db, folder):
    three(folder)
    with backend_for(db).lock(db, 5), pytest.raises(MigrationLockTimeout, match="held"):
        migrate.up(db, folder, lock_timeout=0.2)
    assert migrate.up(db, folder).names == ["0001_users", "0002_posts", "0003_tags"]


def _apply_elsewhere(db, folder: Path, name: str) -> None:
    """Apply migration file ``name`` the way a runner that skipped the lock would: on another
    thread's connection, committed before this runner's own transaction starts."""

    def run() -> None:
        try:
            text = (folder / name).read_text()
            version, label = int(name[:4]), name.split(".")[0]
            with db.atomic():
                db.execute_sql(text)
                db.execute_sql(
                    "INSERT INTO embeddb_migrations (version, name, checksum, applied_at, "
                    f"duration_ms, status) VALUES ({', '.join([db.param] * 6)})",
                    (version, label, checksum(text), "2024-01-01T00:00:00+00:00", 1.0, "applied"),
                )
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
        finally:
            db.close()

    errors: list[Exception] = []
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert not errors, errors


def test_a_version_applied_meanwhile_without_the_lock_is_not_applied_again(db, folder):
    write(folder, "0001_hits.up.sql", "CREATE TABLE hits (n INTEGER);")
    write(folder, "0002_hit.up.sql", "INSERT INTO hits (n) VALUES (1);")  # would succeed twice
    write(folder, "0003_more.up.sql", "CREATE TABLE more_hits (n INTEGER);")  # would fail

    def behind_our_back(event: migrate.Event) -> None:
        if event.kind == "applying" and event.version > 1:
            _apply_elsewhere(db, folder, f"{event.name}.up.sql")

    result = migrate.up(db, folder, progress=behind_our_back)
    assert result.names == ["0001_hits"]
    assert result.version == 3
    assert rows(db, "SELECT COUNT(*) FROM hits") == [(1,)]
    assert [e.state for e in migrate.status(db, folder)] == ["applied"] * 3
    assert migrate.up(db, folder).names == []


def test_rerun_of_a_failed_version_does_not_overwrite_a_success_recorded_meanwhile(db, folder):
    write(folder, "0001_hits.up.sql", "CREATE TABLE hits (n INTEGER);")
    write(folder, "0002_nt.up.sql", (
        "-- embeddb:no-transaction\nCREATE TABLE nt (x INTEGER);\nINSERT INTO nowhere VALUES (1);"))
    with pytest.raises(MigrationFailed):
        migrate.up(db, folder)
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "failed"]
    write(folder, "0002_nt.up.sql", "INSERT INTO hits (n) VALUES (2);")

    def behind_our_back(event: migrate.Event) -> None:
        if event.kind == "applying":
            db.execute_sql("DELETE FROM embeddb_migrations WHERE version = 2")
            _apply_elsewhere(db, folder, "0002_nt.up.sql")

    assert migrate.up(db, folder, progress=behind_our_back).names == []
    assert rows(db, "SELECT n FROM hits") == [(2,)]
    assert [e.state for e in migrate.status(db, folder)] == ["applied", "applied"]


@pytest.mark.parametrize("raw", [
    b"CREATE TABLE a (x TEXT DEFAULT '\xc3\xa9');\nCREATE TABLE b (y INT);\n",
    b"\xef\xbb\xbfCREATE TABLE a (x TEXT DEFAULT '\xc3\xa9');\r\nCREATE TABLE b (y INT);\r\n",
    b"CREATE TABLE a (x TEXT DEFAULT '\xc3\xa9');\rCREATE TABLE b (y INT);\r",
    b"\xef\xbc\x81 is not a BOM;\r\n",  # starts with the BOM's first byte
])
def test_discovered_checksum_and_text_match_the_normalized_file(folder, raw):
    (folder / "0001_a.up.sql").write_bytes(raw)
    (folder / "0001_a.down.sql").write_bytes(raw)
    (folder / "0002_b.sql").write_bytes(b"-- migrate:up\r\n" + raw)
    (folder / "0003_c.py").write_bytes(b"\xef\xbb\xbfdef up(db):\r\n    pass\r")
    text = normalize(raw.decode())
    first, sections, python = discover(folder, ("sqlite",))
    assert first.up.sql == first.down.sql == text
    assert first.checksum == checksum(text) == hashlib.sha256(text.encode()).hexdigest()
    assert sections.checksum == checksum("\n" + raw.decode())  # a BOM mid-file stays
    assert python.checksum == checksum("def up(db):\n    pass\n")


def test_new_writes_the_next_numbered_pair(folder):
    write(folder, "0007_old.up.sql", "")
    up_path, down_path = migrate.new(folder, "Add Users!")
    assert (up_path.name, down_path.name) == ("0008_add_users.up.sql", "0008_add_users.down.sql")
    paths = migrate.new(folder, "search", dialect="sqlite")
    assert [p.name for p in paths] == ["0009_search.sqlite.up.sql", "0009_search.sqlite.down.sql"]
    assert migrate.new(folder.parent / "fresh", "x")[0].name == "0001_x.up.sql"
    with pytest.raises(MigrationError):
        migrate.new(folder, "!!!")


def test_up_refuses_inside_an_open_transaction(db, folder):
    three(folder)
    with db.atomic(), pytest.raises(MigrationError, match="inside an open transaction"):
        migrate.up(db, folder)


# -- SQLite only -------------------------------------------------------------------------


def test_sqlite_trigger_strings_comments_and_crlf(folder, tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'x.db'}")
    write(folder, "0001_schema.up.sql", (
        "-- leading comment; with a semicolon\n"
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT DEFAULT 'a;b', \"odd;name\" INT);\n"
        "CREATE TABLE log (note_id INTEGER, what TEXT); /* block; comment */\n"
        "CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN\n"
        "  INSERT INTO log VALUES (NEW.id, 'inserted; ok');\n"
        "  UPDATE notes SET body = body || ';' WHERE id = NEW.id;\n"
        "END;\n"
        "INSERT INTO notes (id) VALUES (1)\n"
        "-- trailing comment without a semicolon\n"
    ), newline="\r\n")
    migrate.up(db, folder)
    assert rows(db, "SELECT body FROM notes") == [("a;b;",)]
    assert rows(db, "SELECT note_id, what FROM log") == [(1, "inserted; ok")]


def test_sqlite_run_script_is_one_transaction_with_its_finish(tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'x.db'}")
    db.execute_sql("CREATE TABLE done (v INTEGER)")

    def finish() -> None:
        db.execute_sql("INSERT INTO done VALUES (1)")

    def boom() -> None:
        raise RuntimeError("boom")

    script = "-- one\nCREATE TABLE a (x INT);\nINSERT INTO a VALUES (1) /* two */;\n-- three\n"
    assert backend_for(db).run_script(db, script, finish)
    assert rows(db, "SELECT x FROM a") == [(1,)] and rows(db, "SELECT v FROM done") == [(1,)]
    with pytest.raises(DatabaseError, match="no_such"):
        backend_for(db).run_script(db, "CREATE TABLE b (x INT); INSERT INTO no_such VALUES (1);", finish)
    with pytest.raises(RuntimeError, match="boom"):
        backend_for(db).run_script(db, "CREATE TABLE c (x INT);", boom)
    with db.atomic():
        assert not backend_for(db).run_script(db, "CREATE TABLE d (x INT);", finish)
    db.query_hooks.append(lambda event: None)
    assert not backend_for(db).run_script(db, "CREATE TABLE d (x INT);", finish)
    assert tables(db) == {"a", "done"}
    assert rows(db, "SELECT v FROM done") == [(1,)]
    assert not db.in_transaction() and not db.connection().in_transaction
    db.close()


def test_sqlite_one_call_and_statement_by_statement_runs_agree(folder, tmp_path):
    write(folder, "0001_a.up.sql", (
        "CREATE TABLE a (x TEXT DEFAULT 'p;q');\nINSERT INTO a VALUES ('r; s');\n-- done\n"))
    write(folder, "0002_b.up.sql", "CREATE TABLE b (y INT);\n/* c; */ CREATE INDEX b_y ON b (y);")
    write(folder, "0002_b.down.sql", "DROP TABLE b;")
    outcomes, seen = [], []
    for observed in (False, True):
        db = embeddb.connect(f"sqlite:///{tmp_path / f'{observed}.db'}")
        if observed:  # query hooks must see every statement: they get the statement-by-statement run
            db.query_hooks.append(lambda event: seen.append(event.sql))
        migrate.up(db, folder)
        migrate.down(db, folder)
        outcomes.append((
            schema.dump(db), rows(db, "SELECT x FROM a"),
            rows(db, "SELECT version, name, checksum, status FROM embeddb_migrations"),
        ))
        db.close()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1:] == ([("r; s",)], [(1, "0001_a", checksum(
        "CREATE TABLE a (x TEXT DEFAULT 'p;q');\nINSERT INTO a VALUES ('r; s');\n-- done\n"),
        "applied")])
    assert {"INSERT INTO a VALUES ('r; s');", "CREATE INDEX b_y ON b (y);", "DROP TABLE b;"} <= set(seen)


def test_sqlite_no_transaction_pragma_and_vacuum(folder, tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'x.db'}")
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INTEGER);")
    write(folder, "0002_vacuum.up.sql", (
        "-- embeddb:no-transaction\nPRAGMA foreign_keys = OFF;\nVACUUM;\nPRAGMA foreign_keys = ON;"))
    assert migrate.up(db, folder).names == ["0001_t", "0002_vacuum"]
    assert migrate.current_version(db) == 2


def test_safety_backup_before_changing_a_file(folder, tmp_path):
    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}")
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (41);")
    write(folder, "0002_u.up.sql", "UPDATE t SET x = 42;")
    migrate.up(db, folder, to=1, backup=False)
    assert not (tmp_path / "backups").exists()
    result = migrate.up(db, folder)
    backup = Path(result.backup)
    assert backup.parent == tmp_path / "backups" and backup.name.startswith("app-premigrate-")
    copy = sqlite3.connect(backup)
    assert copy.execute("SELECT x FROM t").fetchall() == [(41,)]
    copy.close()
    assert sorted(p.name for p in backup.parent.iterdir()) == [
        backup.name, backup.name + ".manifest.json"]  # no .tmp left
    assert migrate.up(db, folder).backup is None  # nothing to apply, no copy


def test_a_new_empty_database_gets_no_safety_backup(folder, tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'new.db'}")
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INTEGER);")
    assert migrate.up(db, folder).backup is None
    assert not (tmp_path / "backups").exists()


def test_memory_database_skips_the_backup(folder):
    db = embeddb.connect("sqlite:///:memory:")
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INTEGER);")
    assert migrate.up(db, folder).backup is None


# -- PostgreSQL only -----------------------------------------------------------------------


@pytest.fixture
def pg(pg_schema_url):
    database = embeddb.connect(pg_schema_url)
    yield database
    database.close_all()


def test_postgres_dollar_quoted_function_and_trigger(pg, folder):
    write(folder, "0001_fn.up.sql", (
        "CREATE TABLE items (id SERIAL PRIMARY KEY, label TEXT, n INT DEFAULT 0);\n"
        "CREATE FUNCTION bump() RETURNS trigger AS $body$\n"
        "BEGIN\n  NEW.n := NEW.n + 1; -- comment; here\n  NEW.label := NEW.label || ';';\n"
        "  RETURN NEW;\nEND;\n$body$ LANGUAGE plpgsql;\n"
        "CREATE TRIGGER items_bump BEFORE INSERT ON items FOR EACH ROW EXECUTE FUNCTION bump();\n"
        "DO $$ BEGIN INSERT INTO items (label) VALUES ('it''s'); END $$;\n"
    ))
    write(folder, "0001_fn.down.sql", "DROP TABLE items;\nDROP FUNCTION bump();\n")
    migrate.up(pg, folder)
    assert rows(pg, "SELECT label, n FROM items") == [("it's;", 1)]
    migrate.down(pg, folder)
    assert tables(pg) == {"embeddb_migrations"}


def test_postgres_begin_atomic_function_body(pg, folder):
    """SQL-standard bodies (PostgreSQL 14+) hold ';' and CASE ... END inside BEGIN ATOMIC."""
    write(folder, "0001_fn.up.sql", (
        "CREATE TABLE n (x INT);\n"
        "CREATE FUNCTION sign_of(a INT) RETURNS INT LANGUAGE SQL\n"
        "BEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 WHEN a < 0 THEN -1 ELSE 0 END;\nEND;\n"
        "INSERT INTO n VALUES (sign_of(-5)), (sign_of(7));\n"
    ))
    result = migrate.up(pg, folder)
    assert result.steps[0].transaction is True  # the body's END is not transaction control
    assert rows(pg, "SELECT x FROM n ORDER BY x") == [(-1,), (1,)]


def test_postgres_failure_names_the_line_and_rolls_back_ddl(pg, folder):
    write(folder, "0001_a.up.sql", "CREATE TABLE a (x INT);\nCREATE INDEX a_x ON a (x);\nSELECT 1/0;")
    with pytest.raises(MigrationFailed, match="0001_a.up.sql line 3: division by zero"):
        migrate.up(pg, folder)
    assert tables(pg) == {"embeddb_migrations"}


@pytest.fixture
def pg_own_database(pg_url):
    """A database of its own: CREATE INDEX CONCURRENTLY waits for every older transaction in
    its database, whichever schema, so other tests' transactions must not be in it."""
    name = f"embeddb_cic_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_url.split("?")[0])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    database = embeddb.connect(pg_url.split("?")[0].rsplit("/", 1)[0] + "/" + name)
    try:
        yield database
    finally:
        database.close_all()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_postgres_create_index_concurrently_while_holding_the_lock(pg_own_database, folder):
    pg = pg_own_database
    write(folder, "0001_t.up.sql", "CREATE TABLE t (x INT); INSERT INTO t SELECT generate_series(1, 1000);")
    # lock_timeout turns a deadlock (CONCURRENTLY waiting on the lock holder) into an error.
    write(folder, "0002_idx.up.sql", (
        "-- embeddb:no-transaction\nSET lock_timeout = '10s';\n"
        "CREATE INDEX CONCURRENTLY t_x ON t (x);\nRESET lock_timeout;\n"))
    write(folder, "0002_idx.down.sql", "-- embeddb:no-transaction\nDROP INDEX CONCURRENTLY t_x;\n")
    assert migrate.up(pg, folder).names == ["0001_t", "0002_idx"]
    valid = rows(pg, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_x'::regclass")
    assert valid == [(True,)]
    assert migrate.down(pg, folder).names == ["0002_idx"]
    assert rows(pg, "SELECT to_regclass('t_x')") == [(None,)]


def test_plain_sqlite_scripts_take_the_one_call_path(tmp_path, folder, monkeypatch):
    """Only scripts without transaction words or parameter markers go in one call."""
    from embeddb.migrate.backends import SqliteBackend

    taken: list[str] = []
    original = SqliteBackend.run_script

    def spy(self, db, script, finish):
        done = original(self, db, script, finish)
        if done:
            taken.append(script.strip().splitlines()[0])
        return done

    monkeypatch.setattr(SqliteBackend, "run_script", spy)
    write(folder, "0001_plain.up.sql", "CREATE TABLE a (x INT);\nINSERT INTO a VALUES (1);\n")
    write(folder, "0002_words.up.sql", "CREATE TABLE b (x INT);\n"
          "CREATE TRIGGER b_t AFTER INSERT ON b BEGIN SELECT 1; END;\n")
    write(folder, "0003_marker.up.sql", "CREATE TABLE c (x TEXT DEFAULT 'a?b');\n")
    write(folder, "0004_plain.up.sql", "CREATE TABLE d (x INT);\n")
    db = embeddb.connect(f"sqlite:///{tmp_path / 'x.db'}")
    migrate.up(db, folder, backup=False)
    assert taken == ["CREATE TABLE a (x INT);", "CREATE TABLE d (x INT);"]
    assert {"a", "b", "c", "d"} <= tables(db)


def test_a_stray_parameter_marker_is_an_error_not_a_null(sqlite_file_url, folder):
    """executescript would store NULL for ``?``; the migration must fail the same way always."""
    write(folder, "0001_settings.up.sql",
          "CREATE TABLE settings (name TEXT, value TEXT);\n"
          "INSERT INTO settings VALUES ('mode', ?);\n")
    db = embeddb.connect(sqlite_file_url)
    with pytest.raises(MigrationFailed, match="0001_settings.*line 2.*bindings"):
        migrate.up(db, folder, backup=False)
    assert "settings" not in tables(db) and migrate.current_version(db) is None


def test_history_records_when_in_utc_and_how_long_in_milliseconds(db, folder):
    """applied_at is an aware UTC time; duration_ms the real run time, in ms to the µs."""
    from datetime import UTC, datetime, timedelta

    from embeddb.migrate import history

    write(folder, "0001_slow.py", "import time\n\ndef up(db):\n    time.sleep(0.05)\n")
    write(folder, "0002_t.up.sql", "CREATE TABLE t (x INTEGER);")
    write(folder, "0003_u.up.sql", "CREATE TABLE u (x INTEGER);")
    before = datetime.now(UTC) - timedelta(seconds=2)
    migrate.up(db, folder, backup=False)
    records = history.read(db)
    for record in records.values():
        applied = record.applied_at
        applied = applied if isinstance(applied, datetime) else datetime.fromisoformat(applied)
        assert applied.tzinfo is not None
        assert before <= applied <= datetime.now(UTC) + timedelta(seconds=2)
    assert 50 <= records[1].duration_ms < 60_000
    durations = [r.duration_ms for r in records.values()]
    assert all(round(d, 3) == d for d in durations)
    assert any(d != int(d) for d in durations)  # not whole milliseconds
