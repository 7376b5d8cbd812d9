"""Several named databases in one app: embeddb.toml's [databases.NAME], connect("users"),
--database / -d on every command, --all, per-database backups and mixed backends."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import embeddb
from embeddb import config
from embeddb.cli import cli
from embeddb.errors import ConfigurationError

USERS_UP = "CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL);\n"
PAYMENTS_UP = "CREATE TABLE payments (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL);\n"


def _migration(folder: Path, name: str, up: str, down: str, variant: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    middle = f".{variant}" if variant else ""
    (folder / f"{name}{middle}.up.sql").write_text(up)
    (folder / f"{name}{middle}.down.sql").write_text(down)


@pytest.fixture
def project(tmp_path, project_dir):
    """A working directory whose embeddb.toml names two SQLite databases, users and payments,
    each with its own migrations folder (payments also its own backups folder)."""
    (tmp_path / "embeddb.toml").write_text(
        '[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "db/users"\n\n'
        '[databases.payments]\nurl = "sqlite:///payments.db"\nmigrations = "db/payments"\n'
        'backups = "backups/payments"\n')
    _migration(tmp_path / "db/users", "0001_users", USERS_UP, "DROP TABLE users;\n")
    _migration(tmp_path / "db/payments", "0001_payments", PAYMENTS_UP, "DROP TABLE payments;\n")
    return tmp_path


def _tables(name: str) -> list[str]:
    db = embeddb.connect(name)
    try:
        return db.get_tables()
    finally:
        db.close()


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args))


# -- embeddb.toml ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ('[databases.users]\nmigrations = "db/users"\n', r"\[databases.users\] has no url"),
    ('[databases."9lives"]\nurl = "sqlite:///a.db"\n', r"database name '9lives' is not usable"),
    ('[databases."a-b"]\nurl = "sqlite:///a.db"\n', r"database name 'a-b' is not usable"),
    ('[databases.users]\nurl = "sqlite:///a.db"\nmigration = "db"\n',
     r"unknown key 'migration' in \[databases.users\]; known: url, migrations, seeds, backups"),
    ('[databases.users]\nurl = ""\n', r"\[databases.users\] url must be a non-empty string"),
    ('[databases.users]\nurl = 5\n', r"\[databases.users\] url must be a non-empty string"),
    ('[databases]\nusers = "sqlite:///a.db"\n', r"\[databases.users\] must be a table"),
    ('[databases.default]\nurl = "sqlite:///a.db"\n', r"\[databases.default\] is reserved"),
    ('[database]\nurl = "sqlite:///a.db"\nbackup = "b"\n', r"unknown key 'backup' in \[database\]"),
])
def test_a_malformed_databases_table_is_a_one_line_error(project, text, message):
    (project / "embeddb.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=message) as caught:
        config.named_databases()
    assert "\n" not in str(caught.value)
    result = run("-d", "users", "info")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert not (project / "a.db").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=70))
def test_any_name_is_accepted_only_as_a_plain_identifier_or_refused_in_one_line(name):
    """A name becomes part of file and environment variable names: anything but a letter
    followed by letters, digits and _ is refused, in one line, before anything is opened."""
    tables = {name: {"url": "sqlite:///:memory:"}}
    try:
        config._check_databases(Path("embeddb.toml"), tables)
    except ConfigurationError as exc:
        assert "\n" not in str(exc) and (name == "default" or not config.is_name(name))
    else:
        assert config.is_name(name) and name.isascii() and name != "default"
        assert "/" not in name and "." not in name and len(name) <= 63


def test_connect_by_name_opens_that_database_and_its_folders(project):
    users = embeddb.connect("users")
    payments = embeddb.connect("payments")
    assert (users.name, payments.name) == ("users", "payments")
    assert users.database == "users.db" and payments.database == "payments.db"
    embeddb.migrate.up(users, backup=False)  # its own folder, with no argument
    embeddb.migrate.up(payments, backup=False)
    assert users.get_tables() == ["embeddb_migrations", "users"]
    assert "payments" in payments.get_tables() and "users" not in payments.get_tables()
    assert embeddb.backup.default_directory(payments) == str(project / "backups/payments")
    assert embeddb.backup.default_directory(users) == str(project / "backups")
    for db in (users, payments):
        db.close()


def test_a_name_not_configured_is_an_error_listing_the_names_not_a_file(project):
    with pytest.raises(ConfigurationError, match=r"no database named 'orders' in embeddb.toml "
                                                 r"\(configured: users, payments\)"):
        embeddb.connect("orders")
    assert not (project / "orders").exists() and not (project / "orders.db").exists()
    os.remove(project / "embeddb.toml")
    with pytest.raises(ConfigurationError, match=r"configured: none: no embeddb.toml in"):
        embeddb.connect("orders")


def test_a_url_and_the_default_database_work_as_before(project):
    with pytest.raises(ConfigurationError, match=r"names databases \(users, payments\) but no "
                                                 r"default one"):
        embeddb.connect()
    assert not (project / "embeddb.db").exists()
    db = embeddb.connect("sqlite:///other.db")
    assert db.name is None and db.database == "other.db"
    db.close()
    text = (project / "embeddb.toml").read_text()
    (project / "embeddb.toml").write_text('[database]\nurl = "sqlite:///main.db"\n\n' + text)
    for db in (embeddb.connect(), embeddb.connect("default")):
        assert db.name is None and db.database == "main.db"
        db.close()


def test_an_environment_variable_overrides_one_databases_url(project, monkeypatch):
    monkeypatch.setenv("EMBEDDB_DATABASE_URL_PAYMENTS", f"sqlite:///{project / 'moved.db'}")
    db = embeddb.connect("payments")
    assert db.database == str(project / "moved.db") and db.name == "payments"
    db.close()


# -- every command takes --database / -d ----------------------------------------------------------

def _leaf_commands() -> list[tuple[list[str], click.Command]]:
    ctx = click.Context(cli)
    found = []

    def walk(group: click.Group, path: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            if isinstance(command, click.Group):
                walk(command, [*path, name])
            else:
                found.append(([*path, name], command))

    walk(cli, [])
    return found


#: commands that read something else before the database, so -d nosuch is not their first error
_READ_FIRST = {
    ("backup", "verify"): "reads the backup's manifest first (a SQLite backup needs no database)",
    ("outbox", "run"): "loads the handler first",
}
_VALUES = {"--delivered-older-than": "1d", "--handler": "no_module:handle", "--to": "x"}


@pytest.mark.parametrize("path, command", _leaf_commands(), ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_every_command_takes_database_d(project, path, command):
    args = []
    for param in command.params:
        if param.required and isinstance(param, click.Argument):
            args.append("1" if isinstance(param.type, click.types.IntParamType) else "x")
        elif param.required:
            args += [param.opts[-1], _VALUES[param.opts[-1]]]
    for flag in ("-d", "--database"):
        result = run(*path, flag, "nosuch", *args)
        assert "No such option" not in result.output
        if tuple(path) not in _READ_FIRST:
            assert result.exit_code == 1, result.output
            assert result.output == ("Error: no database named 'nosuch' in embeddb.toml "
                                     "(configured: users, payments): add [databases.nosuch] "
                                     "url = ... or pass a URL\n")
    result = run("-d", "nosuch", *path, *args)  # before the command name too
    if tuple(path) not in _READ_FIRST:
        assert "no database named 'nosuch'" in result.output
    assert not (project / "nosuch").exists() and not (project / "x").exists()


def test_db_and_database_together_are_a_usage_error(project):
    for args in (["--db", "sqlite:///a.db", "-d", "users", "info"],
                 ["-d", "users", "info", "--db", "sqlite:///a.db"]):
        result = run(*args)
        assert result.exit_code == 2
        assert "--db sqlite:///a.db and --database users exclude each other" in result.output
    assert not (project / "a.db").exists() and not (project / "users.db").exists()
    assert run("-d", "sqlite:///a.db", "info").exit_code == 2  # a URL is not a name


def test_d_names_the_database_for_migrate_seed_and_info(project):
    seeds = project / "seeds/users"
    seeds.mkdir(parents=True)
    (seeds / "dev.py").write_text(
        "import peewee\nfrom embeddb.models import BaseModel\n\n"
        "class User(BaseModel):\n    name = peewee.TextField()\n"
        "    class Meta:\n        table_name = 'users'\n\n"
        "def build(seed):\n    return [(User, [{'id': 'a' * 32, 'name': 'ada'}])]\n")
    _migration(project / "db/users", "0002_stamps",
               "ALTER TABLE users ADD COLUMN created_at TEXT;\n"
               "ALTER TABLE users ADD COLUMN updated_at TEXT;\n", "")
    assert run("-d", "users", "migrate", "up").exit_code == 0
    result = run("seed", "dev", "-d", "users", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == {"users": 1}
    assert not (project / "payments.db").exists()
    info = json.loads(run("info", "--database", "users", "--json").output)
    assert info["path"].endswith("users.db") and info["name"] == "users"
    result = run("migrate", "new", "add_email", "-d", "payments")
    assert result.exit_code == 0 and "db/payments/0002_add_email.up.sql" in result.output


# -- --all ----------------------------------------------------------------------------------------

def test_all_goes_on_past_a_failing_database_and_exits_non_zero(project):
    (project / "embeddb.toml").write_text(
        '[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "db/users"\n\n'
        '[databases.broken]\nurl = "sqlite:///broken.db"\nmigrations = "db/broken"\n\n'
        '[databases.payments]\nurl = "sqlite:///payments.db"\nmigrations = "db/payments"\n')
    _migration(project / "db/broken", "0001_bad", "CREATE TABLE t (x);\nNOT SQL;\n", "")
    result = run("migrate", "up", "--all", "--no-backup", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert [(d["database"], d["ok"]) for d in report["databases"]] == [
        ("users", True), ("broken", False), ("payments", True)]
    users, broken, payments = report["databases"]
    assert users["result"]["names"] == ["0001_users"] and users["error"] is None
    assert "0001_bad" in broken["error"] and broken["result"]["failed"] == "0001_bad"
    assert payments["result"]["names"] == ["0001_payments"]
    assert "payments" in sqlite3.connect(project / "payments.db").execute(
        "SELECT group_concat(name) FROM sqlite_master").fetchone()[0]

    result = run("migrate", "status", "--all")  # human: each under its name, then a summary
    assert result.exit_code == 0  # pending (broken's 0001) is not a failure
    lines = result.output.splitlines()
    assert lines[0] == "== users ==" and "== broken ==" in lines and "== payments ==" in lines
    assert lines[-1] == "== 3 of 3 database(s) OK"

    result = run("doctor", "--all", "--no-verify", "--json")
    report = json.loads(result.output)
    assert [d["database"] for d in report["databases"]] == ["users", "broken", "payments"]
    assert all("checks" in d["result"] for d in report["databases"])

    os.remove(project / "broken.db")
    os.mkdir(project / "broken.db")  # now it cannot be opened at all
    result = run("backup", "create", "--all")
    assert result.exit_code == 1
    assert "== 2 of 3 database(s) OK; failed: broken" in result.output
    assert "Error: SQLite path 'broken.db' is a directory" in result.output
    assert len(list((project / "backups").glob("users-*.sqlite3"))) == 1
    assert len(list((project / "backups").glob("payments-*.sqlite3"))) == 1


def test_all_includes_the_default_database_first(project):
    text = (project / "embeddb.toml").read_text()
    (project / "embeddb.toml").write_text(
        '[database]\nurl = "sqlite:///main.db"\nmigrations = "db/main"\n\n' + text)
    _migration(project / "db/main", "0001_main", "CREATE TABLE main (id INTEGER);\n", "")
    report = json.loads(run("migrate", "up", "--all", "--no-backup", "--json").output)
    assert [(d["database"], d["result"]["names"]) for d in report["databases"]] == [
        ("default", ["0001_main"]), ("users", ["0001_users"]), ("payments", ["0001_payments"])]
    status = json.loads(run("migrate", "status", "-d", "default", "--json").output)
    assert [e["name"] for e in status] == ["0001_main"]


def test_all_refuses_a_single_database_option(project):
    for args in (["-d", "users", "migrate", "up", "--all"],
                 ["migrate", "status", "--all", "--migrations", "db"],
                 ["backup", "create", "--all", "--out", "x.bak"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
    (project / "embeddb.toml").write_text("")
    result = run("doctor", "--all")
    assert result.exit_code == 1 and "configures no database" in result.output


def test_the_checks_migrate_verify_and_maintenance_integrity_take_all(project):
    assert run("migrate", "up", "--all", "--no-backup").exit_code == 0
    result = run("migrate", "verify", "--all", "--json")
    assert result.exit_code == 0, result.output
    assert [(d["database"], d["ok"], d["result"]) for d in json.loads(result.output)["databases"]
            ] == [("users", True, {"ok": True, "applied": 1}),
                  ("payments", True, {"ok": True, "applied": 1})]
    result = run("maintenance", "integrity", "--all", "--json")
    assert result.exit_code == 0, result.output
    assert [(d["database"], d["result"]["ok"]) for d in json.loads(result.output)["databases"]
            ] == [("users", True), ("payments", True)]

    (project / "db/users/0001_users.up.sql").write_text(USERS_UP + "-- edited after applying\n")
    result = run("migrate", "verify", "--all")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "== users ==" and lines[1].startswith("Error: ") and "0001_users" in lines[1]
    assert lines[2:] == ["== payments ==", "OK: 1 applied migration(s) match their files",
                         "== 1 of 2 database(s) OK; failed: users"]
    os.remove(project / "payments.db")
    os.mkdir(project / "payments.db")  # cannot be opened at all
    result = run("maintenance", "integrity", "--all", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [(d["database"], d["ok"]) for d in report["databases"]] == [("users", True),
                                                                       ("payments", False)]
    assert "is a directory" in report["databases"][1]["error"]
    assert run("-d", "users", "migrate", "verify", "--all").exit_code == 2
    assert run("migrate", "verify", "--all", "--migrations", "db").exit_code == 2


# -- backups per database -------------------------------------------------------------------------

def test_backups_are_named_recorded_and_pruned_per_database(project):
    assert run("migrate", "up", "--all", "--no-backup").exit_code == 0
    (project / "embeddb.toml").write_text(
        (project / "embeddb.toml").read_text().replace('backups = "backups/payments"\n', ""))
    for _ in range(2):
        assert run("backup", "create", "--all").exit_code == 0
    listed = json.loads(run("backup", "list", "--dir", "backups", "--json").output)
    assert sorted((e["database"], e["file"].split("-")[0]) for e in listed) == [
        ("payments", "payments")] * 2 + [("users", "users")] * 2  # one shared folder
    listed = json.loads(run("-d", "users", "backup", "list", "--json").output)
    assert [e["database"] for e in listed] == ["users", "users"]
    result = run("-d", "users", "backup", "prune", "--keep", "1", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["removed"]) == 1
    left = json.loads(run("backup", "list", "--dir", "backups", "--json").output)
    assert sorted(e["database"] for e in left) == ["payments", "payments", "users"]
    doctor = json.loads(run("doctor", "-d", "users", "--json").output)
    backups = next(c for c in doctor["checks"] if c["name"] == "backups")
    assert backups["status"] == "OK" and "users-" in backups["message"]


def test_restore_refuses_a_backup_of_another_database_unless_forced(project):
    assert run("migrate", "up", "--all", "--no-backup").exit_code == 0
    created = json.loads(run("-d", "payments", "backup", "create", "--json").output)
    assert created["database"] == "payments" and created["source"] == "sqlite:///payments.db"
    path = created["path"]
    assert json.loads(Path(path + ".manifest.json").read_text())["database"] == "payments"
    result = run("-d", "users", "backup", "restore", path, "--yes")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path} is a backup of 'payments' (sqlite:///payments.db), not of 'users' "
        "(sqlite:///users.db): pass --force to restore it anyway\n")
    assert "payments" not in _tables("users")  # untouched
    result = run("--db", "sqlite:///users.db", "backup", "restore", path, "--yes")
    assert "not of 'users' (sqlite:///users.db)" in result.output and result.exit_code == 1
    result = run("--db", "sqlite:///payments.db", "backup", "restore", path, "--yes")
    assert result.exit_code == 0, result.output  # payments' URL is payments
    assert run("-d", "payments", "backup", "restore", path, "--yes").exit_code == 0
    result = run("-d", "users", "backup", "restore", path, "--yes", "--force")
    assert result.exit_code == 0, result.output
    assert "payments" in _tables("users")


# -- mixed backends -------------------------------------------------------------------------------

def test_mixed_backends_each_with_its_own_folder_and_dialect_variants(project, pg_schema_url):
    (project / "embeddb.toml").write_text(
        '[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "db/users"\n\n'
        f'[databases.payments]\nurl = "{pg_schema_url}"\nmigrations = "db/payments"\n')
    for name in os.listdir(project / "db/payments"):
        os.remove(project / "db/payments" / name)
    _migration(project / "db/payments", "0001_payments",
               "CREATE TABLE payments (id BIGSERIAL PRIMARY KEY, cents BIGINT NOT NULL);\n",
               "DROP TABLE payments;\n", "postgres")
    _migration(project / "db/payments", "0001_payments", PAYMENTS_UP, "DROP TABLE payments;\n",
               "sqlite")
    result = run("migrate", "up", "--all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [d["result"]["names"] for d in report["databases"]] == [["0001_users"],
                                                                    ["0001_payments"]]
    users, payments = embeddb.connect("users"), embeddb.connect("payments")
    assert (users.dialect.name, payments.dialect.name) == ("sqlite", "postgresql")
    column = payments.execute_sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'payments' "
        "AND column_name = 'id' AND table_schema = current_schema()").fetchone()
    assert column == ("bigint",)  # the postgres variant ran
    payments.close_all()
    users.close()
    status = json.loads(run("migrate", "status", "--all", "--json").output)
    assert [[e["state"] for e in d["result"]] for d in status["databases"]] == [["applied"],
                                                                                ["applied"]]
    result = run("backup", "create", "--all", "--json")
    assert result.exit_code == 0, result.output
    made = {d["database"]: d["result"] for d in json.loads(result.output)["databases"]}
    assert (made["users"]["format"], made["payments"]["format"]) == ("sqlite3", "pg_dump")
    assert os.path.basename(made["payments"]["path"]).startswith("payments-")
    result = run("-d", "payments", "backup", "restore", made["users"]["path"], "--yes")
    assert result.exit_code == 1 and "sqlite3 backup and cannot be restored" in result.output


# -- no silent cross-database work ----------------------------------------------------------------

def test_a_model_of_one_database_is_refused_on_another(project):
    import peewee

    from embeddb.models import BaseModel
    from embeddb.repository import Repository

    class Payment(BaseModel):
        cents = peewee.IntegerField()

        class Meta:
            table_name = "payments"
            database_name = "payments"

    class Account(BaseModel):
        name = peewee.TextField()

        class Meta:
            table_name = "users"

    class Ledger(Repository[Account]):
        related = (Payment,)

    users, payments = embeddb.connect("users"), embeddb.connect("payments")
    try:
        Repository(Payment, payments)
        with pytest.raises(ConfigurationError, match=r"Payment declares database 'payments', "
                                                     r"not 'users'.*never joins across"):
            Repository(Payment, users)
        with pytest.raises(ConfigurationError, match="Payment declares database 'payments'"):
            Ledger(Account, users)  # a join across the two would read the wrong file
        users.bind([Account])
        Repository(Account, users)
        with pytest.raises(ConfigurationError, match=r"Account is bound to database 'users', "
                                                     r"not 'payments'"):
            Repository(Account, payments)
        for url in ("sqlite:///:memory:", "sqlite:///main.db"):  # no configured database
            other = embeddb.connect(url)
            try:
                with pytest.raises(ConfigurationError, match=r"Account is bound to database "
                                                             r"'users', not 'default'"):
                    Repository(Account, other)
                with pytest.raises(ConfigurationError, match=r"Payment declares database "
                                                             r"'payments', not 'default'"):
                    Repository(Payment, other)
            finally:
                other.close()
        by_url = embeddb.connect("sqlite:///payments.db")  # payments' file: payments
        Repository(Payment, by_url)
        with pytest.raises(ConfigurationError, match="Account is bound to database 'users', "
                                                     "not 'payments'"):
            Repository(Account, by_url)
        by_url.close()
        again = embeddb.connect(f"sqlite:///{project / 'users.db'}")  # another connection
        Repository(Account, again)
        again.close()
    finally:
        users.close()
        payments.close()


def test_ctrl_c_under_all_stops_the_whole_run(project):
    """A real SIGINT while the first database migrates: that migration rolls back, the next
    database is not touched, and the exit code is 130 (not a failure to go on past)."""
    import signal
    import subprocess
    import sys
    import time

    started = project / "started"
    for name in os.listdir(project / "db/users"):
        os.remove(project / "db/users" / name)
    (project / "db/users/0001_slow.py").write_text(
        "import pathlib, time\n\n"
        "def up(db):\n    db.execute_sql('CREATE TABLE slow (x INTEGER)')\n"
        f"    pathlib.Path({str(started)!r}).write_text('1')\n    time.sleep(30)\n\n"
        "def down(db):\n    db.execute_sql('DROP TABLE slow')\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from embeddb.cli import main; main()", "migrate", "up", "--all",
         "--no-backup"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert started.exists(), proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, (out, err)
    assert "== payments ==" not in out and "Interrupted" in err
    assert not (project / "payments.db").exists()
    users = sqlite3.connect(project / "users.db")
    assert users.execute("SELECT count(*) FROM sqlite_master WHERE name = 'slow'").fetchone() == (0,)
