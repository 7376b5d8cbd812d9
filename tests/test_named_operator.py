"""Named databases as an operator uses them: a default [database] beside named ones sharing
folders, commands aimed at one database never touching another's backups or data."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from embeddb.cli import cli

APP_UP = "CREATE TABLE things (id INTEGER PRIMARY KEY, v TEXT);\n"
USERS_UP = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
PAYMENTS_UP = "CREATE TABLE payments (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL);\n"


def _migration(folder: Path, name: str, up: str, down: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.up.sql").write_text(up)
    (folder / f"{name}.down.sql").write_text(down)


@pytest.fixture
def project(tmp_path, project_dir):
    """A default [database] app.db and named users / payments, all three SQLite files in one
    directory, so every backup lands in the one shared ./backups folder."""
    (tmp_path / "embeddb.toml").write_text(
        '[database]\nurl = "sqlite:///app.db"\n\n'
        '[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "db/users"\n\n'
        '[databases.payments]\nurl = "sqlite:///payments.db"\nmigrations = "db/payments"\n')
    _migration(tmp_path / "migrations", "0001_things", APP_UP, "DROP TABLE things;\n")
    _migration(tmp_path / "db/users", "0001_users", USERS_UP, "DROP TABLE users;\n")
    _migration(tmp_path / "db/payments", "0001_payments", PAYMENTS_UP, "DROP TABLE payments;\n")
    assert run("migrate", "up", "--all", "--no-backup").exit_code == 0
    return tmp_path


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args))


def _backups(project: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in (project / "backups").glob(f"{prefix}-*")
                  if not p.name.endswith(".json"))


def test_pruning_the_default_database_leaves_named_databases_backups_alone(project):
    for _ in range(3):
        assert run("-d", "payments", "backup", "create").exit_code == 0
    assert run("backup", "create").exit_code == 0
    before = _backups(project, "payments")
    assert len(before) == 3
    result = run("backup", "prune", "--keep", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["removed"] == []
    assert _backups(project, "payments") == before
    result = run("--db", "sqlite:///payments.db", "backup", "prune", "--keep", "2")
    assert result.exit_code == 0, result.output
    assert _backups(project, "payments") == before[-2:]  # payments' URL: payments' backups
    assert run("-d", "payments", "backup", "prune", "--keep", "1").exit_code == 0
    assert _backups(project, "payments") == before[-1:]


def test_the_default_database_lists_and_checks_only_its_own_backups(project):
    assert run("-d", "payments", "backup", "create").exit_code == 0
    listed = json.loads(run("backup", "list", "--json").output)
    assert listed == []
    doctor = json.loads(run("doctor", "--json").output)
    check = next(c for c in doctor["checks"] if c["name"] == "backups")
    assert check["status"] == "WARN" and "no backup" in check["message"], check
    assert run("backup", "create").exit_code == 0
    listed = json.loads(run("backup", "list", "--json").output)
    assert [e["file"].split("-")[0] for e in listed] == ["app"]
    folder = json.loads(run("backup", "list", "--dir", "backups", "--json").output)
    assert sorted(e["file"].split("-")[0] for e in folder) == ["app", "payments"]


def _interrupt(project: Path, started: Path, *args: str) -> tuple[int, str, str]:
    """Run ``embeddb ARGS`` in a real process, SIGINT it once ``started`` exists."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", "from embeddb.cli import main; main()", *args], cwd=project,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert started.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out, err


def test_ctrl_c_under_all_json_prints_one_document_naming_what_ran(project):
    started = project / "started"
    (project / "db/payments/0002_slow.py").write_text(
        "import pathlib, time\n\n"
        "def up(db):\n    db.execute_sql('CREATE TABLE slow (x INTEGER)')\n"
        f"    pathlib.Path({str(started)!r}).write_text('1')\n    time.sleep(30)\n\n"
        "def down(db):\n    db.execute_sql('DROP TABLE slow')\n")
    code, out, err = _interrupt(project, started, "migrate", "up", "--all", "--json",
                                "--no-backup")
    assert code == 130, (out, err)
    report = json.loads(out)  # one document, not nothing
    assert report["ok"] is False and report["interrupted"] is True
    assert [(d["database"], d["ok"], d["error"]) for d in report["databases"]] == [
        ("default", True, None), ("users", True, None), ("payments", False, "interrupted")]
    assert report["databases"][2]["result"]["failed"] == "0002_slow"
    assert report["not_run"] == []


def _version(name: str) -> int | None:
    import embeddb
    from embeddb import migrate

    db = embeddb.connect(name)
    try:
        return migrate.current_version(db)
    finally:
        db.close()


@pytest.mark.parametrize("args", [
    ["-d", "users", "migrate", "down", "-d", "payments", "--no-backup"],
    ["-d", "users", "-d", "payments", "migrate", "down", "--no-backup"],
    ["migrate", "down", "-d", "users", "--database", "payments", "--no-backup"],
    ["--db", "sqlite:///users.db", "migrate", "down", "--db", "sqlite:///payments.db",
     "--no-backup"],
])
def test_two_different_databases_named_at_once_are_a_usage_error(project, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "twice" in result.output
    assert (_version("users"), _version("payments")) == (1, 1)  # neither reverted


def test_the_same_database_named_twice_is_fine(project):
    result = run("-d", "users", "migrate", "status", "-d", "users", "--json")
    assert result.exit_code == 0, result.output
    assert [e["name"] for e in json.loads(result.output)] == ["0001_users"]


@pytest.mark.parametrize("command", ["down", "redo"])
def test_down_refuses_a_folder_whose_migration_is_not_the_one_applied(project, command):
    """Another database's folder (or the default one, by --db URL) has a version 1 too: its
    down part must not run here, whatever it would drop."""
    import sqlite3

    _migration(project / "db/other", "0001_accounts",
               "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);\n",
               "DROP TABLE users;\n")
    users = sqlite3.connect(project / "users.db")
    users.execute("INSERT INTO users (name) VALUES ('alice')")
    users.commit()
    users.close()
    result = run("-d", "users", "migrate", command, "--migrations", "db/other", "--no-backup",
                 "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert "0001_accounts.up.sql changed after it was applied" in report["error"]
    assert "nothing was changed" in report["error"]
    users = sqlite3.connect(project / "users.db")
    assert users.execute("SELECT name FROM users").fetchall() == [("alice",)]
    users.close()
    assert _version("users") == 1
    assert run("-d", "users", "migrate", command, "--no-backup").exit_code == 0  # its own


def test_names_that_differ_only_in_case_are_refused(project, monkeypatch):
    """$EMBEDDB_DATABASE_URL_USERS (and backup file names on a case-insensitive disk) would
    be shared by users and Users: one of them would be the other's database."""
    (project / "embeddb.toml").write_text(
        '[databases.users]\nurl = "sqlite:///users.db"\n\n'
        '[databases.Users]\nurl = "sqlite:///other.db"\n')
    monkeypatch.setenv("EMBEDDB_DATABASE_URL_USERS", "sqlite:///users.db")
    result = run("-d", "Users", "migrate", "up", "--migrations", "db/payments", "--no-backup")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: " + str(project / "embeddb.toml") + ": database names 'users' and 'Users' "
        "differ only in case (they share $EMBEDDB_DATABASE_URL_USERS and backup file names): "
        "rename one"]
    import sqlite3

    users = sqlite3.connect(project / "users.db")
    assert users.execute("SELECT version FROM embeddb_migrations").fetchall() == [(1,)]
    users.close()
    assert not (project / "other.db").exists()


def test_after_a_rename_the_old_backups_are_pointed_at_not_lost(project):
    made = json.loads(run("-d", "users", "backup", "create", "--json").output)["path"]
    toml = project / "embeddb.toml"
    toml.write_text(toml.read_text().replace("[databases.users]", "[databases.members]"))
    result = run("-d", "members", "backup", "list")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "no backups", f"(1 backup(s) of 'users' in {project / 'backups'}: `embeddb backup "
        f"list --dir {project / 'backups'}` shows them)"]
    result = run("-d", "members", "backup", "restore", made, "--yes")
    assert result.exit_code == 1
    assert "(the same URL: renamed in embeddb.toml?): pass --force" in result.output
    assert run("-d", "members", "backup", "prune", "--keep", "0").exit_code == 0
    assert Path(made).exists()  # pruning the new name never deletes the old name's backups
    result = run("-d", "members", "backup", "restore", made, "--yes", "--force")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args", [
    ["migrate", "status", "-d", "./users", "--json"],
    ["migrate", "status", "-d", "sqlite:///users.db", "--json"],
    ["--db", "sqlite:///users.db", "-d", "users", "migrate", "status", "--json"],
    ["-d", "users", "migrate", "status", "-d", "payments", "--json"],
    ["-d", "users", "-d", "payments", "backup", "list", "--json"],
    ["backup", "prune", "--keep", "-1", "--json"],
    ["doctor", "-d", "users", "--all", "--json"],
])
def test_a_usage_error_is_one_json_document_whatever_the_option_order(project, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["error"], document
    assert document["error"] in " ".join(result.stderr.split())


COPIES_BACK_UP = '''
import os
from embeddb import backup, migrate


def test_backups_of_a_copy(embeddb_dbs):
    payments = embeddb_dbs["payments"]
    payments.execute_sql("INSERT INTO payments (cents) VALUES (5)")
    safety = migrate.down(payments).backup
    migrate.up(payments)
    made = backup.create_backup(payments).path
    with open(os.environ["COPIES_LOG"], "w") as log:
        log.write(f"{safety}\\n{made}\\n")
'''


def test_a_test_copy_never_backs_up_into_the_projects_backups(plugin_suite, pg_url, monkeypatch):
    """A PostgreSQL copy of payments is named payments: its safety copies and backups in the
    project's folder would count against the real payments' (pruned) and be restorable into
    it without --force."""
    suite = plugin_suite(COPIES_BACK_UP)
    _migration(suite.path / "db/payments", "0001_payments", PAYMENTS_UP.replace(
        "INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"), "DROP TABLE payments;\n")
    (suite.path / "embeddb.toml").write_text(
        f'[databases.payments]\nurl = "{pg_url}"\nmigrations = "db/payments"\n')
    log = suite.path / "copies.log"
    monkeypatch.setenv("COPIES_LOG", str(log))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    written = log.read_text().split()
    assert len(written) == 2
    for path in written:  # in the inner session's temporary directory
        assert Path(path).is_relative_to(suite.path / "runpytest-0"), path
    assert not (suite.path / "backups").exists()


def test_a_written_migration_says_how_to_apply_it_to_that_database(project):
    result = run("-d", "payments", "outbox", "init")
    assert result.exit_code == 0, result.output
    assert "Wrote db/payments/0002_embeddb_outbox" in result.output
    assert result.output.splitlines()[-1] == "Next: embeddb -d payments migrate up"


def test_two_names_for_one_database_are_refused(project):
    """A [databases.orders] copied from users with its url left unchanged: orders' migrations
    would be applied to users.db (and --all would migrate it twice, from two folders)."""
    toml = project / "embeddb.toml"
    toml.write_text(toml.read_text() + '\n[databases.orders]\nurl = "sqlite:///./users.db"\n'
                    'migrations = "db/payments"\n')
    result = run("-d", "orders", "migrate", "up", "--no-backup")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {toml}: users and orders are the same database (sqlite:///users.db, "
        "sqlite:///./users.db): give each name a database of its own\n")
    assert run("migrate", "up", "--all", "--no-backup").exit_code == 1
    assert _version("sqlite:///users.db") == 1
    import sqlite3

    users = sqlite3.connect(project / "users.db")
    assert users.execute("SELECT name FROM embeddb_migrations").fetchall() == [("0001_users",)]
    users.close()


@pytest.mark.parametrize("first, second, same", [
    ("postgresql://a@h:5432/app", "postgresql://b:pw@h/app?max_connections=3", True),
    ("postgresql://a@h/app?schema=users", "postgresql://a@h/app?schema=payments", False),
    ("postgresql://a@h/app?schema=public", "postgresql://a@h/app", True),
    ("postgresql://a@h/app", "postgresql://a@h:5433/app", False),
    ("postgresql://a@h/app", "postgresql://a@h/other", False),
    ("sqlite:///:memory:", "sqlite:///:memory:", False),  # a new one per connect
    ("sqlite:///a.db", "sqlite:///sub/../a.db", True),
])
def test_what_counts_as_the_same_database(project, first, second, same):
    from embeddb import config
    from embeddb.errors import ConfigurationError

    (project / "embeddb.toml").write_text(
        f'[databases.one]\nurl = "{first}"\n[databases.two]\nurl = "{second}"\n')
    if same:
        with pytest.raises(ConfigurationError, match="one and two are the same database"):
            config.named_databases()
    else:
        assert list(config.named_databases()) == ["one", "two"]


def test_a_set_but_empty_url_override_is_an_error_not_the_files_url(project, monkeypatch):
    """As for $EMBEDDB_DATABASE_URL: an empty override (a CI secret that did not arrive) must
    not quietly fall back to the url in embeddb.toml (perhaps production's)."""
    monkeypatch.setenv("EMBEDDB_DATABASE_URL_PAYMENTS", "")
    (project / "db/payments/0002_more.up.sql").write_text("CREATE TABLE more (x INTEGER);\n")
    result = run("-d", "payments", "migrate", "up", "--no-backup")
    assert result.exit_code == 1
    assert result.output == ("Error: $EMBEDDB_DATABASE_URL_PAYMENTS is set but empty: unset it "
                             "or give a URL\n")
    assert _version("sqlite:///payments.db") == 1


COPY_BACKS_UP = '''
import os
from embeddb import backup, migrate


def test_backups_of_a_copy(embeddb_db):
    safety = migrate.down(embeddb_db).backup
    made = backup.create_backup(embeddb_db).path
    with open(os.environ["COPIES_LOG"], "w") as log:
        log.write(f"{safety}\\n{made}\\n")
'''


def test_an_embeddb_db_copy_never_backs_up_into_the_projects_backups(plugin_suite, pg_url,
                                                                      monkeypatch):
    """Its backups record no name, as the default database's do: in ./backups they would be
    restorable into it without --force."""
    suite = plugin_suite(COPY_BACKS_UP)
    log = suite.path / "copies.log"
    monkeypatch.setenv("COPIES_LOG", str(log))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--embeddb-url", pg_url)
    result.assert_outcomes(passed=1)
    written = log.read_text().split()
    assert len(written) == 2
    for path in written:
        assert Path(path).is_relative_to(suite.path / "runpytest-0"), path
    assert not (suite.path / "backups").exists()


def test_a_name_in_another_case_is_refused_with_the_configured_spelling(project):
    result = run("-d", "Users", "migrate", "down", "--no-backup")
    assert result.exit_code == 1
    assert result.output == ("Error: no database named 'Users' in embeddb.toml: did you mean "
                             "'users'? (names are case-sensitive)\n")
    assert _version("users") == 1


def test_all_refuses_a_default_database_that_the_environment_points_at_a_named_one(
        project, monkeypatch):
    monkeypatch.setenv("EMBEDDB_DATABASE_URL", "sqlite:///users.db")  # left from a session
    (project / "migrations/0002_more.up.sql").write_text("CREATE TABLE more (x INTEGER);\n")
    result = run("migrate", "up", "--all", "--no-backup")
    assert result.exit_code == 1
    assert "$EMBEDDB_DATABASE_URL (the default database) and users are the same database" \
        in result.output
    import sqlite3

    users = sqlite3.connect(project / "users.db")
    assert "more" not in [r[0] for r in users.execute("SELECT name FROM sqlite_master")]
    users.close()


def test_a_name_given_to_db_is_refused_pointing_at_database(project):
    for _ in range(2):
        assert run("-d", "users", "backup", "create").exit_code == 0
    result = run("--db", "users", "backup", "prune", "--keep", "1", "--json")
    assert result.exit_code == 2
    assert "'users' is a database name, not a URL: use --database users" in \
        json.loads(result.stdout)["error"]
    assert len(_backups(project, "users")) == 2


MISSING_FOLDER = '''
def test_orders(embeddb_dbs):
    embeddb_dbs["orders"]
'''


def test_embeddb_dbs_names_the_toml_entry_when_its_migrations_folder_is_missing(plugin_suite):
    suite = plugin_suite(MISSING_FOLDER)
    (suite.path / "embeddb.toml").write_text('[databases.orders]\nurl = "sqlite:///o.db"\n')
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=0, failed=1)
    result.stdout.fnmatch_lines([
        "*no migrations folder at *migrations/orders for [[]databases.orders] of *embeddb.toml: "
        "create it or set its migrations = *"])


def test_a_backup_of_a_named_database_opened_by_url_records_its_name(project):
    """Made with --db URL of users' file, it is users' backup: restoring it into the default
    database needs --force, as for one made with -d users."""
    made = json.loads(run("--db", "sqlite:///users.db", "backup", "create", "--json").output)
    assert made["database"] == "users"
    result = run("backup", "restore", made["path"], "--yes")
    assert result.exit_code == 1
    assert "is a backup of 'users' (sqlite:///users.db), not of the default database" \
        in result.output
    import sqlite3

    app = sqlite3.connect(project / "app.db")
    assert "users" not in [r[0] for r in app.execute("SELECT name FROM sqlite_master")]
    app.close()
    assert run("-d", "users", "backup", "restore", made["path"], "--yes").exit_code == 0
    made = json.loads(run("--db", "sqlite:///app.db", "backup", "create", "--json").output)
    assert made["database"] is None  # the default database is not a name


def test_safety_copies_taken_by_url_are_kept_per_name(project):
    _migration(project / "db/users", "0002_a", "CREATE TABLE a (x INTEGER);\n",
               "DROP TABLE a;\n")
    assert run("-d", "users", "migrate", "up").exit_code == 0
    assert run("-d", "users", "migrate", "down").exit_code == 0
    assert len([p for p in _backups(project, "users") if "-premigrate-" in p]) == 2
    result = run("--db", "sqlite:///users.db", "migrate", "up", "--migrations", "db/users",
                 "--keep-backups", "1")
    assert result.exit_code == 0, result.output
    copies = [p for p in _backups(project, "users") if "-premigrate-" in p]
    assert len(copies) == 1, copies


def _fresh(tmp_path: Path) -> Path:
    """The project's files without migrating anything: users.db does not exist yet."""
    (tmp_path / "embeddb.toml").write_text(
        '[database]\nurl = "sqlite:///app.db"\n\n'
        '[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "db/users"\n\n'
        '[databases.payments]\nurl = "sqlite:///payments.db"\nmigrations = "db/payments"\n')
    stamps = "created_at TEXT, updated_at TEXT);\n"  # BaseModel's, which seeds fill in
    _migration(tmp_path / "migrations", "0001_things", APP_UP.replace(");\n", ", " + stamps),
               "DROP TABLE things;\n")
    _migration(tmp_path / "db/users", "0001_users", USERS_UP.replace(");\n", ", " + stamps),
               "DROP TABLE users;\n")
    _migration(tmp_path / "db/payments", "0001_payments", PAYMENTS_UP, "DROP TABLE payments;\n")
    for folder, table, field in (("seeds/users", "users", "name"), ("seeds", "things", "v")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "dev.py").write_text(
            "import peewee\nfrom embeddb.models import BaseModel\n\n"
            f"class Row(BaseModel):\n    id = peewee.IntegerField(primary_key=True)\n"
            f"    {field} = peewee.TextField()\n"
            f"    class Meta:\n        table_name = {table!r}\n\n"
            f"def build(seed):\n    return [(Row, [{{'id': 1, {field!r}: 'x'}}])]\n")
    return tmp_path


def _tables_of(path: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if not r[0].startswith(("sqlite_", "embeddb_", "_embeddb"))}
    finally:
        conn.close()


@pytest.fixture
def fresh(tmp_path, project_dir):
    return _fresh(tmp_path)


@pytest.mark.parametrize("spelling", ["sqlite:///users.db", "absolute"])
def test_migrate_up_by_the_url_of_a_named_database_uses_its_migrations(fresh, spelling):
    """--db with users' file runs users' migrations (db/users), not the default ./migrations,
    however the path is spelled; seeds are users' too."""
    url = f"sqlite:///{fresh / 'users.db'}" if spelling == "absolute" else spelling
    result = run("--db", url, "migrate", "up", "--no-backup", "--json")
    assert result.exit_code == 0, result.output
    assert _tables_of(fresh / "users.db") == {"users"}
    assert not (fresh / "app.db").exists()
    result = run("--db", url, "seed", "dev", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == {"users": 1}  # seeds/users/dev.py


def test_a_url_that_is_no_configured_database_keeps_the_default_folders(fresh):
    result = run("--db", "sqlite:///other.db", "migrate", "up", "--no-backup")
    assert result.exit_code == 0, result.output
    assert _tables_of(fresh / "other.db") == {"things"}
    assert not (fresh / "users.db").exists()


def test_library_migrate_up_on_connect_by_the_url_of_a_named_database(fresh):
    import embeddb
    from embeddb import migrate

    db = embeddb.connect("sqlite:///users.db")
    try:
        assert db.name == "users" and db.entry.migrations == "db/users"
        assert db.url.raw == "sqlite:///users.db"  # the URL given, not the file's spelling
        migrate.up(db, backup=False)
    finally:
        db.close()
    assert _tables_of(fresh / "users.db") == {"users"}
    other = embeddb.connect("sqlite:///other.db")
    try:
        assert other.name is None and other.entry.migrations is None
        migrate.up(other, backup=False)
    finally:
        other.close()
    assert _tables_of(fresh / "other.db") == {"things"}


def test_backup_list_by_the_url_of_a_named_database_sees_its_backups(project):
    """A backup made through --db users' URL records users: list / prune through that URL
    are users' backups too (they saw only the default database's)."""
    made = json.loads(run("--db", "sqlite:///users.db", "backup", "create", "--json").output)
    assert run("backup", "create").exit_code == 0
    listed = json.loads(run("--db", "sqlite:///users.db", "backup", "list", "--json").output)
    assert [Path(b["path"]).name for b in listed] == [Path(made["path"]).name]
    default = json.loads(run("backup", "list", "--json").output)
    assert made["path"] not in [b["path"] for b in default]


def test_a_model_bound_to_a_named_database_is_refused_on_the_default_one(project):
    """It ran silently on app.db (the check compared names only when both had one)."""
    import peewee

    import embeddb
    from embeddb.errors import ConfigurationError
    from embeddb.models import BaseModel
    from embeddb.repository import Repository

    class Thing(BaseModel):
        v = peewee.TextField(null=True)

        class Meta:
            table_name = "things"

    users, app = embeddb.connect("users"), embeddb.connect()
    try:
        assert app.name is None
        users.bind([Thing])
        with pytest.raises(ConfigurationError, match=r"^Thing is bound to database 'users', not "
                                                     r"'default': use a repository on 'users'"):
            Repository(Thing, app)
        app.bind([Thing])  # bound to the default database itself: runs there
        assert Repository(Thing, app).count() == 0
        assert Repository(Thing, users).db is users  # bound to no name: it runs on users
    finally:
        users.close()
        app.close()


def test_the_url_of_a_named_postgresql_database_opens_that_entry(tmp_path, monkeypatch, pg_url):
    """The same server, database and schema spelled otherwise (no port: 5432) is payments."""
    import embeddb
    from embeddb.url import parse

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_DATABASE_URL", raising=False)
    monkeypatch.delenv("EMBEDDB_DATABASE_URL_PAYMENTS", raising=False)
    parsed = parse(pg_url)
    assert (parsed.port or 5432) == 5432 and not parsed.options.get("schema")
    (tmp_path / "embeddb.toml").write_text(
        f'[databases.payments]\nurl = "{pg_url}"\nmigrations = "db/payments"\n')
    other = pg_url.replace(":5432/", "/") if ":5432/" in pg_url else pg_url
    db = embeddb.connect(other)
    try:
        assert db.name == "payments" and db.entry.migrations == "db/payments"
        assert db.url.raw == other
    finally:
        db.close_all()
    from embeddb import config

    elsewhere = config.database_entry(other + ("&" if "?" in other else "?") + "schema=x")
    assert elsewhere.name is None and elsewhere.migrations is None  # another schema


def test_the_url_of_the_default_database_uses_its_own_folders(tmp_path, project_dir):
    """[database] with folders of its own: opened by its URL (--db, however spelled, or
    connect(url)), it migrates from those folders, not ./migrations."""
    import embeddb

    (tmp_path / "embeddb.toml").write_text(
        '[database]\nurl = "sqlite:///app.db"\nmigrations = "db/app"\n')
    _migration(tmp_path / "db/app", "0001_things", APP_UP, "DROP TABLE things;\n")
    _migration(tmp_path / "migrations", "0001_users", USERS_UP, "DROP TABLE users;\n")
    result = run("--db", f"sqlite:///{tmp_path / 'app.db'}", "migrate", "up", "--no-backup")
    assert result.exit_code == 0, result.output
    assert _tables_of(tmp_path / "app.db") == {"things"}
    db = embeddb.connect("sqlite:///app.db")
    try:
        assert db.name is None and db.entry.migrations == "db/app"
    finally:
        db.close()
    other = embeddb.connect("sqlite:///other.db")
    try:
        assert other.entry.migrations is None  # not [database]'s file: no folders of its own
    finally:
        other.close()


def test_the_environment_url_of_a_named_database_uses_its_folders(fresh, monkeypatch):
    """$EMBEDDB_DATABASE_URL exported with users' file: `embeddb migrate up` (no --db / -d)
    runs users' migrations there, not the default ./migrations."""
    import embeddb

    monkeypatch.setenv("EMBEDDB_DATABASE_URL", "sqlite:///users.db")
    result = run("migrate", "up", "--no-backup")
    assert result.exit_code == 0, result.output
    assert _tables_of(fresh / "users.db") == {"users"}
    db = embeddb.connect()
    try:
        assert db.name == "users" and db.entry.migrations == "db/users"
    finally:
        db.close()
