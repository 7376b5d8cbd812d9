"""SQLite table rebuilds in migrations: foreign keys off the SQLite way, nothing cascades away.

Every migration runs in a transaction, where SQLite ignores ``PRAGMA foreign_keys``; before
this was handled, ``DROP TABLE parent`` in a rebuild emptied every ON DELETE CASCADE child.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
import embeddb.reference
from embeddb import migrate
from embeddb.cli import cli
from embeddb.errors import MigrationError, MigrationFailed

SCHEMA = """\
-- migrate:up
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER NOT NULL REFERENCES parent(id) ON DELETE CASCADE
);
INSERT INTO parent VALUES (1, 'a'), (2, 'b');
INSERT INTO child VALUES (1, 1), (2, 1), (3, 2);
"""

REBUILD = """\
CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', note TEXT);
INSERT INTO parent_new (id, name) SELECT id, name FROM parent{where};
DROP TABLE parent;
ALTER TABLE parent_new RENAME TO parent;
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    (path / "0001_schema.sql").write_text(SCHEMA)
    return path


@pytest.fixture
def db(tmp_path: Path):
    database = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    yield database
    database.close()


def count(db, table: str) -> int:
    return db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


def enforced(db) -> bool:
    return db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def state(db) -> tuple:
    """Everything a failed migration must leave as it was."""
    schema = db.execute_sql("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
    history = db.execute_sql("SELECT version, status FROM embeddb_migrations").fetchall()
    data = [db.execute_sql(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("parent", "child")]
    return [tuple(r) for r in schema], [tuple(r) for r in history], data


def test_a_rebuild_without_foreign_keys_off_is_refused_and_keeps_every_child_row(db, folder):
    (folder / "0002_rebuild.sql").write_text("-- migrate:up\n" + REBUILD.format(where=""))
    migrate.up(db, folder, to=1, backup=False)
    before = state(db)
    with pytest.raises(MigrationFailed) as caught:
        migrate.up(db, folder, backup=False)
    message = str(caught.value)
    assert "0002_rebuild.sql line 4" in message
    assert "child.parent_id" in message and "PRAGMA foreign_keys = OFF" in message
    assert "rolled back" in message
    assert state(db) == before
    assert count(db, "child") == 3 and enforced(db)


@pytest.mark.parametrize("pragma", [
    "PRAGMA foreign_keys = OFF;",
    "pragma Foreign_Keys=off;",
    "PRAGMA foreign_keys = 0;",
    "PRAGMA foreign_keys = false;",
    "PRAGMA foreign_keys='OFF';",
    "PRAGMA foreign_keys(no);",
])
def test_foreign_keys_off_in_any_spelling_rebuilds_without_losing_rows(db, folder, pragma):
    (folder / "0002_rebuild.sql").write_text(
        f"-- migrate:up\n{pragma}\n{REBUILD.format(where='')}PRAGMA foreign_keys = ON;\n"
    )
    assert migrate.up(db, folder, backup=False).names == ["0001_schema", "0002_rebuild"]
    assert count(db, "child") == 3 and count(db, "parent") == 2
    assert enforced(db)  # on again for the application's next statement
    columns = [r[1] for r in db.execute_sql("PRAGMA table_info(parent)").fetchall()]
    assert columns == ["id", "name", "note"]
    # the children still point at the rebuilt table, and it is enforced
    assert db.execute_sql("PRAGMA foreign_key_list(child)").fetchone()[2] == "parent"
    with pytest.raises(embeddb.errors.IntegrityError):
        db.execute_sql("INSERT INTO child VALUES (9, 99)")


def test_a_rebuild_that_orphans_rows_rolls_back_naming_table_rowid_and_parent(db, folder):
    (folder / "0002_rebuild.sql").write_text(
        "-- migrate:up\nPRAGMA foreign_keys=OFF;\n" + REBUILD.format(where=" WHERE id = 1")
    )
    migrate.up(db, folder, to=1, backup=False)
    before = state(db)
    with pytest.raises(MigrationFailed) as caught:
        migrate.up(db, folder, backup=False)
    assert "child rowid 3 has no matching row in parent" in str(caught.value)
    assert "rolled back" in str(caught.value)
    assert state(db) == before  # bookkeeping included: 0002 is not recorded
    assert enforced(db)


def test_ctrl_c_in_a_rebuild_rolls_back_and_turns_foreign_keys_back_on(db, folder):
    (folder / "0002_rebuild.py").write_text(textwrap.dedent("""\
        import os, signal

        foreign_keys = False

        def up(db):
            db.execute_sql("CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute_sql("INSERT INTO parent_new SELECT id, name FROM parent")
            db.execute_sql("DROP TABLE parent")
            os.kill(os.getpid(), signal.SIGINT)  # the operator's Ctrl-C, mid-rebuild
            db.execute_sql("ALTER TABLE parent_new RENAME TO parent")
    """))
    migrate.up(db, folder, to=1, backup=False)
    before = state(db)
    with pytest.raises(KeyboardInterrupt):
        migrate.up(db, folder, backup=False)
    assert state(db) == before
    assert enforced(db)


def test_python_migration_flag_turns_foreign_keys_off_and_checks_them(db, folder):
    (folder / "0002_rebuild.py").write_text(textwrap.dedent(f"""\
        foreign_keys = False

        def up(db):
            for statement in {REBUILD.format(where='').split(';')[:-1]!r}:
                db.execute_sql(statement)
    """))
    migrate.up(db, folder, backup=False)
    assert count(db, "child") == 3 and enforced(db)

    (folder / "0003_orphans.py").write_text(textwrap.dedent("""\
        foreign_keys = False

        def up(db):
            db.execute_sql("DELETE FROM parent WHERE id = 2")
    """))
    with pytest.raises(MigrationFailed, match="child rowid 3 has no matching row in parent"):
        migrate.up(db, folder, backup=False)
    assert count(db, "parent") == 2 and migrate.current_version(db) == 2


def test_python_migration_without_the_flag_cannot_cascade(db, folder):
    (folder / "0002_drop.py").write_text("def up(db):\n    db.execute_sql('DROP TABLE parent')\n")
    migrate.up(db, folder, to=1, backup=False)
    refused = "dropping table parent .* child.parent_id .*foreign_keys = False"
    with pytest.raises(MigrationFailed, match=refused):
        migrate.up(db, folder, backup=False)
    assert count(db, "child") == 3


def test_down_parts_rebuild_the_same_way(db, folder):
    (folder / "0002_note.up.sql").write_text(
        "PRAGMA foreign_keys = OFF;\n" + REBUILD.format(where="")
    )
    (folder / "0002_note.down.sql").write_text(
        "PRAGMA foreign_keys = OFF;\n"
        "CREATE TABLE parent_old (id INTEGER PRIMARY KEY, name TEXT);\n"
        "INSERT INTO parent_old SELECT id, name FROM parent;\n"
        "DROP TABLE parent;\n"
        "ALTER TABLE parent_old RENAME TO parent;\n"
    )
    migrate.up(db, folder, backup=False)
    assert migrate.down(db, folder, backup=False).names == ["0002_note"]
    assert count(db, "child") == 3 and enforced(db)
    assert [r[1] for r in db.execute_sql("PRAGMA table_info(parent)")] == ["id", "name"]
    migrate.up(db, folder, backup=False)
    assert migrate.redo(db, folder, backup=False).names == ["0002_note", "0002_note"]
    assert count(db, "child") == 3


def test_a_down_part_that_drops_a_referenced_table_is_refused(db, folder):
    (folder / "0002_extra.up.sql").write_text("CREATE TABLE extra (id INTEGER PRIMARY KEY);")
    (folder / "0002_extra.down.sql").write_text("DROP TABLE parent;\nDROP TABLE extra;")
    migrate.up(db, folder, backup=False)
    with pytest.raises(MigrationFailed, match="0002_extra.down.sql line 1: dropping table parent"):
        migrate.down(db, folder, backup=False)
    assert count(db, "child") == 3 and migrate.current_version(db) == 2
    assert "extra" in db.get_tables()


def test_children_dropped_first_then_the_parent_is_fine(db, folder):
    (folder / "0001_schema.sql").write_text(SCHEMA + "-- migrate:down\nDROP TABLE child;\n"
                                            "DROP TABLE parent;\n")
    migrate.up(db, folder, backup=False)
    migrate.down(db, folder, backup=False)
    assert not {"parent", "child"} & set(db.get_tables())


@pytest.mark.parametrize("rename", [
    "ALTER TABLE parent RENAME TO parent_old;",
    'ALTER TABLE "parent" RENAME TO [parent_old];',
    "alter table main.[parent]\n  rename to parent_old;",
])
def test_renaming_a_referenced_table_away_is_refused(db, folder, rename):
    (folder / "0002_rename.sql").write_text(f"-- migrate:up\n{rename}\n")
    migrate.up(db, folder, to=1, backup=False)
    with pytest.raises(MigrationFailed, match="renaming table parent .* child.parent_id"):
        migrate.up(db, folder, backup=False)
    assert db.execute_sql("PRAGMA foreign_key_list(child)").fetchone()[2] == "parent"


@pytest.mark.parametrize("pragma, words", [
    ("PRAGMA journal_mode = DELETE;", "journal_mode"),
    ("PRAGMA synchronous = FULL;", "synchronous"),
    ("PRAGMA page_size = 8192;", "page_size"),
    ("PRAGMA main.auto_vacuum = INCREMENTAL;", "auto_vacuum"),
    ("PRAGMA foriegn_keys = OFF;", "unknown pragma 'foriegn_keys'"),
    ("PRAGMA foreign_keys = maybe;", "use ON or OFF"),
])
def test_a_pragma_that_would_be_lost_is_refused_before_anything_runs(db, folder, pragma, words):
    (folder / "0002_table.sql").write_text("-- migrate:up\nCREATE TABLE other (id INTEGER);\n")
    (folder / "0003_pragma.sql").write_text(f"-- migrate:up\nSELECT 1;\n{pragma}\n")
    with pytest.raises(MigrationError) as caught:
        migrate.up(db, folder, backup=False)
    assert words in str(caught.value) and "0003_pragma.sql line 3" in str(caught.value)
    if "unknown" not in words and "ON or OFF" not in words:
        assert "-- embeddb:no-transaction" in str(caught.value)
    assert migrate.current_version(db) is None  # not even 0001 ran
    assert "parent" not in db.get_tables()


def test_pragmas_outside_the_transaction_are_honoured(db, folder):
    (folder / "0002_pragma.sql").write_text(
        "-- embeddb:no-transaction\n-- migrate:up\nPRAGMA foreign_keys = OFF;\n"
        "PRAGMA user_version = 7;\nDELETE FROM parent WHERE id = 2;\n"
    )
    migrate.up(db, folder, backup=False)
    assert db.execute_sql("PRAGMA user_version").fetchone()[0] == 7
    assert count(db, "child") == 3  # no cascade: the script turned them off itself
    assert enforced(db)  # and the connection has them back


def test_foreign_keys_off_inside_the_scripts_own_transaction_is_refused(db, folder):
    (folder / "0002_own.sql").write_text(
        "-- migrate:up\nBEGIN;\nPRAGMA foreign_keys = OFF;\nDROP TABLE parent;\nCOMMIT;\n"
    )
    with pytest.raises(MigrationError, match="line 3: .*put it before the BEGIN"):
        migrate.up(db, folder, backup=False)
    assert migrate.current_version(db) is None


def test_own_transaction_with_foreign_keys_off_before_begin_works(db, folder):
    (folder / "0002_own.sql").write_text(
        "-- migrate:up\nPRAGMA foreign_keys = OFF;\nBEGIN;\n" + REBUILD.format(where="")
        + "COMMIT;\nPRAGMA foreign_keys = ON;\n"
    )
    migrate.up(db, folder, backup=False)
    assert count(db, "child") == 3 and enforced(db)


def test_own_transaction_that_orphans_rows_rolls_back_too(db, folder):
    """The foreign-key check runs before the script's own COMMIT as before embeddb's."""
    (folder / "0002_own.sql").write_text(
        "-- migrate:up\nPRAGMA foreign_keys = OFF;\nBEGIN;\n" + REBUILD.format(where=" WHERE id = 1")
        + "COMMIT;\nPRAGMA foreign_keys = ON;\n"
    )
    migrate.up(db, folder, to=1, backup=False)
    before = state(db)
    with pytest.raises(MigrationFailed) as caught:
        migrate.up(db, folder, backup=False)
    assert "child rowid 3 has no matching row in parent" in str(caught.value)
    assert "rolled back" in str(caught.value)
    assert state(db) == before and enforced(db)
    assert not db.connection().in_transaction


def test_own_transaction_down_part_that_orphans_rows_rolls_back(db, folder):
    (folder / "0002_note.up.sql").write_text("ALTER TABLE parent ADD COLUMN note TEXT;\n")
    (folder / "0002_note.down.sql").write_text(
        "PRAGMA foreign_keys = OFF;\nBEGIN;\n"
        "CREATE TABLE parent_old (id INTEGER PRIMARY KEY, name TEXT);\n"
        "INSERT INTO parent_old SELECT id, name FROM parent WHERE id = 1;\n"
        "DROP TABLE parent;\nALTER TABLE parent_old RENAME TO parent;\nCOMMIT;\n"
    )
    migrate.up(db, folder, backup=False)
    before = state(db)
    with pytest.raises(MigrationFailed, match="child rowid 3 has no matching row in parent"):
        migrate.down(db, folder, backup=False)
    assert state(db) == before and enforced(db)


def test_dry_run_reports_what_would_be_refused(tmp_path, folder):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    (folder / "0002_rebuild.sql").write_text("-- migrate:up\n" + REBUILD.format(where=""))
    (folder / "0003_wal.sql").write_text("-- migrate:up\nPRAGMA journal_mode = DELETE;\n")
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", url, "migrate", "up", "--to", "1", "--migrations",
                               str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["--db", url, "migrate", "up", "--dry-run", "--migrations",
                                 str(folder)])
    assert result.exit_code == 1
    assert "Problem: 0002_rebuild.sql line 4: drop of table parent, which child" in result.output
    assert "Problem: 0003_wal.sql line 2: PRAGMA journal_mode" in result.output
    as_json = runner.invoke(cli, ["--db", url, "migrate", "up", "--dry-run", "--json",
                                  "--migrations", str(folder)])
    assert as_json.exit_code == 1
    steps = json.loads(as_json.output)["steps"]
    assert [len(s["findings"]) for s in steps] == [1, 1]
    db = embeddb.connect(url)
    assert migrate.current_version(db) == 1 and count(db, "child") == 3
    db.close()


def test_dry_run_of_a_full_revert_knows_children_go_first(tmp_path):
    """Reverting everything drops children in earlier steps: no false alarm on the parents."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    folder = str(Path(embeddb.reference.__file__).parent / "migrations")
    runner = CliRunner()
    up = runner.invoke(cli, ["--db", url, "migrate", "up", "--migrations", folder])
    assert up.exit_code == 0, up.output
    result = runner.invoke(cli, ["--db", url, "migrate", "down", "--to", "0", "--dry-run",
                                 "--migrations", folder])
    assert result.exit_code == 0, result.output
    assert "Problem" not in result.output


# -- real-world schema files ----------------------------------------------------------------


def _northwind_like() -> str:
    """The shape of Northwind's SQLite ``create.sql``: foreign keys off first, bracketed names,
    CRLF line endings, blobs, a self-referencing table loaded before its parents exist, SELECTs
    and views in the script, ``foreign_keys=on`` half way."""
    picture = "X'" + bytes(range(256)).hex().upper() * 8 + "'"
    employees = [  # ReportsTo points at rows inserted later
        (1, "Davolio", 2), (2, "Fuller", None), (3, "Leverling", 2), (4, "Peacock", 5),
        (5, "Buchanan", 2),
    ]
    lines = [
        "-- DATABASE : Northwind-like", "", "PRAGMA foreign_keys=off;", "",
        "DROP TABLE IF EXISTS [Categories];",
        "CREATE TABLE [Categories]", "(      [CategoryID] INTEGER PRIMARY KEY AUTOINCREMENT,",
        "       [CategoryName] TEXT,", "       [Picture] BLOB", ");",
    ]
    lines += [f"INSERT INTO Categories VALUES(null,'Cat {i}',{picture});" for i in range(8)]
    lines += [
        "DROP TABLE IF EXISTS [Employees];",
        "CREATE TABLE [Employees]", "(   [EmployeeID] INTEGER PRIMARY KEY AUTOINCREMENT,",
        "    [LastName] TEXT,", "    [ReportsTo] INTEGER,",
        "    FOREIGN KEY ([ReportsTo]) REFERENCES [Employees] ([EmployeeID])",
        "        ON DELETE NO ACTION ON UPDATE NO ACTION", ");",
    ]
    lines += [f"INSERT INTO Employees VALUES({i},'{n}',{'NULL' if r is None else r});"
              for i, n, r in employees]
    lines += [
        "DROP TABLE IF EXISTS [Products];",
        "CREATE TABLE [Products](", "   [ProductID] INTEGER PRIMARY KEY AUTOINCREMENT,",
        "   [ProductName] TEXT NOT NULL,", "   [CategoryID] INTEGER,",
        "   FOREIGN KEY ([CategoryID]) REFERENCES [Categories] ([CategoryID])", ");",
    ]
    lines += [f"INSERT INTO Products VALUES({i},'Product {i}; \"quoted\"',{i % 8 + 1});"
              for i in range(1, 78)]
    lines += [
        "DROP TABLE IF EXISTS [Order Details];",
        "CREATE TABLE [Order Details](", "   [OrderID] INTEGER NOT NULL,",
        "   [ProductID] INTEGER NOT NULL,", "   PRIMARY KEY (\"OrderID\",\"ProductID\"),",
        "   FOREIGN KEY ([ProductID]) REFERENCES [Products] ([ProductID])", ");",
    ]
    lines += [f"INSERT INTO [Order Details] VALUES({o},{o % 77 + 1});" for o in range(1, 400)]
    lines += [
        "SELECT * FROM [Order Details];", "", "PRAGMA foreign_keys=on;", "",
        "--[Alphabetical list of products]",
        "DROP VIEW IF EXISTS [Alphabetical list of products];",
        "CREATE VIEW [Alphabetical list of products]", "AS",
        "SELECT Products.*, Categories.CategoryName", "FROM Categories",
        "   INNER JOIN Products ON Categories.CategoryID = Products.CategoryID;",
        "SELECT * FROM [Alphabetical list of products]; -- OK",
    ]
    return "\r\n".join(lines) + "\r\n"


def _chinook_like() -> str:
    """The shape of Chinook's ``Chinook_Sqlite.sql``: block comments, DROP TABLE IF EXISTS of
    tables that reference each other, tables referencing ones created later, indexes, data in
    dependency order with foreign keys on."""
    lines = [
        "/" + "*" * 60, "   Chinook-like database", "*" * 60 + "/",
        *[f"DROP TABLE IF EXISTS [{t}];" for t in ("Album", "Artist", "Track")],
        "CREATE TABLE [Album]", "(", "    [AlbumId] INTEGER  NOT NULL,",
        "    [Title] NVARCHAR(160)  NOT NULL,", "    [ArtistId] INTEGER  NOT NULL,",
        "    CONSTRAINT [PK_Album] PRIMARY KEY  ([AlbumId]),",
        "    FOREIGN KEY ([ArtistId]) REFERENCES [Artist] ([ArtistId])",
        "\t\tON DELETE NO ACTION ON UPDATE NO ACTION", ");",
        "CREATE TABLE [Artist]", "(", "    [ArtistId] INTEGER  NOT NULL,",
        "    [Name] NVARCHAR(120),", "    CONSTRAINT [PK_Artist] PRIMARY KEY  ([ArtistId])", ");",
        "CREATE TABLE [Track]", "(", "    [TrackId] INTEGER  NOT NULL,",
        "    [Name] NVARCHAR(200)  NOT NULL,", "    [AlbumId] INTEGER,",
        "    CONSTRAINT [PK_Track] PRIMARY KEY  ([TrackId]),",
        "    FOREIGN KEY ([AlbumId]) REFERENCES [Album] ([AlbumId])", ");",
        "CREATE INDEX [IFK_AlbumArtistId] ON [Album] ([ArtistId]);",
        "CREATE INDEX [IFK_TrackAlbumId] ON [Track] ([AlbumId]);",
    ]
    lines += [f"INSERT INTO [Artist] ([ArtistId], [Name]) VALUES ({i}, 'Artist {i} & Co');"
              for i in range(1, 276)]
    lines += [f"INSERT INTO [Album] ([AlbumId], [Title], [ArtistId]) VALUES "
              f"({i}, 'Album ''{i}''', {i % 275 + 1});" for i in range(1, 348)]
    lines += [f"INSERT INTO [Track] ([TrackId], [Name], [AlbumId]) VALUES ({i}, 'T{i}', "
              f"{i % 347 + 1});" for i in range(1, 1504)]
    return "\n".join(lines) + "\n"


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name <> 'embeddb_migrations'")]
    counts = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
              for name in names}
    conn.close()
    return counts


@pytest.mark.parametrize("make", [_northwind_like, _chinook_like])
def test_real_world_schema_files_apply_like_the_sqlite3_shell(tmp_path, make):
    script = make()
    source = tmp_path / "create.sql"
    source.write_bytes(script.encode())
    reference = tmp_path / "reference.db"
    # no fsync per autocommit INSERT: the row counts are the same, minutes faster
    shell = subprocess.run(["sqlite3", "-cmd", "PRAGMA journal_mode = MEMORY", "-cmd",
                            "PRAGMA synchronous = OFF", str(reference)],
                           input=script.encode(),
                           capture_output=True, timeout=60)
    assert shell.returncode == 0, shell.stderr
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_create.up.sql").write_bytes(script.encode())
    url = f"sqlite:///{tmp_path / 'app.db'}"
    result = CliRunner().invoke(cli, ["--db", url, "migrate", "up", "--migrations", str(folder)])
    assert result.exit_code == 0, result.output
    expected = _counts(reference)
    assert expected and all(expected.values())
    assert _counts(tmp_path / "app.db") == expected
    db = embeddb.connect(url)
    assert enforced(db)
    assert db.execute_sql("PRAGMA foreign_key_check").fetchall() == []
    db.close()


def test_northwind_like_file_fails_on_plain_sqlite_with_foreign_keys_on(tmp_path):
    """Why the handling is needed: SQLite with foreign keys on refuses the same file."""
    conn = sqlite3.connect(tmp_path / "plain.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
        conn.executescript("BEGIN;" + _northwind_like())
    conn.close()


def test_sigkill_mid_rebuild_leaves_the_old_table(tmp_path, folder):
    """A killed runner leaves the database as it was: SQLite rolls the journal back."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = embeddb.connect(url)
    migrate.up(db, folder, backup=False)
    db.close()
    (folder / "0002_rebuild.py").write_text(textwrap.dedent("""\
        import os, signal, sys

        foreign_keys = False

        def up(db):
            db.execute_sql("CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT)")
            db.execute_sql("INSERT INTO parent_new SELECT id, name FROM parent")
            db.execute_sql("DROP TABLE parent")
            sys.stdout.write("dropped\\n"); sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    runner = subprocess.run(
        [sys.executable, "-c", "from embeddb.cli import main; main()", "--db", url, "migrate",
         "up", "--no-backup", "--migrations", str(folder)],
        capture_output=True, text=True, timeout=60,
    )
    assert runner.returncode == -signal.SIGKILL and "dropped" in runner.stdout
    db = embeddb.connect(url)
    assert count(db, "parent") == 2 and count(db, "child") == 3
    assert migrate.current_version(db) == 1
    assert "parent_new" not in db.get_tables()
    db.close()


def _connection_settings(db) -> dict:
    return {name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
            for name in ("synchronous", "cache_size", "ignore_check_constraints",
                         "recursive_triggers", "query_only", "foreign_keys")}


@pytest.mark.parametrize("kind", ["in transaction", "no-transaction", "python", "rebuild"])
def test_settings_a_migration_changes_do_not_outlive_it(db, folder, kind):
    """The application keeps the connection: a migration's synchronous = OFF or
    ignore_check_constraints = ON must not stay with it."""
    before = _connection_settings(db)
    assert before["synchronous"] != 0 and before["ignore_check_constraints"] == 0
    pragmas = "PRAGMA ignore_check_constraints = ON;\nPRAGMA recursive_triggers = ON;\n"
    if kind == "in transaction":
        (folder / "0002_p.sql").write_text(f"-- migrate:up\n{pragmas}")
    elif kind == "no-transaction":
        (folder / "0002_p.sql").write_text(
            f"-- embeddb:no-transaction\n-- migrate:up\n{pragmas}PRAGMA synchronous = OFF;\n"
            "PRAGMA cache_size = -64;\n")
    elif kind == "python":
        (folder / "0002_p.py").write_text(textwrap.dedent("""\
            def up(db):
                db.execute_sql("PRAGMA ignore_check_constraints = ON")
                db.execute_sql("PRAGMA recursive_triggers = ON")
        """))
    else:
        (folder / "0002_p.sql").write_text(
            f"-- migrate:up\nPRAGMA foreign_keys = OFF;\n{pragmas}{REBUILD.format(where='')}")
    migrate.up(db, folder, backup=False)
    assert _connection_settings(db) == before
    with pytest.raises(embeddb.errors.IntegrityError):  # the application's CHECKs still hold
        db.execute_sql("CREATE TABLE checked (n INTEGER CHECK (n > 0))")
        db.execute_sql("INSERT INTO checked VALUES (-1)")
