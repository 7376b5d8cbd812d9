"""The pytest plugin, used from throwaway test files the way an app's suite would use it."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from embeddb.testing import Template

ROOT = Path(__file__).parent.parent

SUITE = '''
import threading

import embeddb

USER = "INSERT INTO users (id, wallet_address, chain_id, created_at, updated_at) " \\
       "VALUES ('{id}', '0xfeed{n}', 1, '2026-01-01 00:00:00.000000+00:00', " \\
       "'2026-01-01 00:00:00.000000+00:00')"


def users(db):
    return db.execute_sql("SELECT count(*) FROM users").fetchone()[0]


def test_first_writes(embeddb_db):
    embeddb_db.execute_sql(USER.format(id="a" * 32, n=1))
    assert users(embeddb_db) == 1


def test_second_sees_nothing_of_the_first(embeddb_db):
    assert users(embeddb_db) == 0
    assert embeddb.migrate.current_version(embeddb_db) == 6


def test_seeded_has_the_test_set(embeddb_seeded_db):
    assert users(embeddb_seeded_db) == 3
    embeddb_seeded_db.execute_sql("DELETE FROM ratings")


def test_seeded_again_is_untouched(embeddb_seeded_db):
    assert embeddb_seeded_db.execute_sql("SELECT count(*) FROM ratings").fetchone()[0] == 1


def test_a_thread_sees_the_same_database(embeddb_db):
    embeddb_db.execute_sql(USER.format(id="b" * 32, n=2))
    seen = []
    thread = threading.Thread(target=lambda: seen.append(users(embeddb_db)))
    thread.start()
    thread.join()
    assert seen == [1]


def test_models_are_bound(embeddb_seeded_db):
    from embeddb.reference.models import User
    assert User.select().count() == 3
'''


@pytest.fixture
def suite(plugin_suite):
    return plugin_suite(SUITE)


def test_plugin_fixtures_on_sqlite(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


def test_plugin_fixtures_on_postgres(suite, pg_url):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--embeddb-url", pg_url)
    result.assert_outcomes(passed=6)


WORKERS = """
import os

import pytest


@pytest.mark.parametrize("n", range(3))
def test_record_worker(embeddb_db, n):
    embeddb_db.execute_sql(
        "INSERT INTO users (id, wallet_address, chain_id, created_at, updated_at) "
        f"VALUES ('{n:032d}', '0xfeed{n}', 1, '2026-01-01 00:00:00+00:00', "
        "'2026-01-01 00:00:00+00:00')")
    assert embeddb_db.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 1
    with open(os.environ["WORKER_LOG"], "a") as log:
        log.write(f"{os.environ['PYTEST_XDIST_WORKER']} {embeddb_db.database}\\n")
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_plugin_under_xdist(suite, request, backend, monkeypatch):
    """Two workers, each with its own templates: every test still gets a clean database.

    ``--dist each`` runs every test on both workers, so both are used whatever xdist's
    scheduler would have done (the default split once gave one worker everything)."""
    args = ["-p", "no:cacheprovider", "-n", "2", "--dist", "each"]
    if backend == "postgresql":
        args += ["--embeddb-url", request.getfixturevalue("pg_url")]
    log = suite.path / "workers.log"
    monkeypatch.setenv("WORKER_LOG", str(log))
    suite.makepyfile(test_workers=WORKERS)
    result = suite.runpytest_subprocess(*args, "test_workers.py")
    result.assert_outcomes(passed=2 * 3)
    runs = [line.split() for line in log.read_text().splitlines()]
    assert sorted(worker for worker, _ in runs) == ["gw0"] * 3 + ["gw1"] * 3
    if backend == "postgresql":  # one database per test, each dropped after it
        names = {name for _, name in runs}
        assert len(names) == 6 and all(name.startswith("embeddb_t_") for name in names)
        conn = psycopg2.connect(request.getfixturevalue("pg_url"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                            (sorted(names),))
                assert cur.fetchall() == []
        finally:
            conn.close()


def test_plugin_reports_a_broken_migration(pytester):
    folder = pytester.mkdir("bad_migrations")
    (folder / "0001_broken.up.sql").write_text("CREATE TABLE t (x INTEGER);\nNOT SQL AT ALL;\n")
    pytester.makeini(f"[pytest]\nembeddb_migrations = {folder}\n")
    pytester.makepyfile("def test_x(embeddb_db):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*0001_broken*"])


def test_copies_are_independent():
    template = Template.create(None, ROOT / "migrations")
    first = template.copy()
    first.execute_sql("DELETE FROM embeddb_migrations")
    second = template.copy()
    assert second.execute_sql("SELECT count(*) FROM embeddb_migrations").fetchone()[0] == 6
    template.discard(first)
    template.discard(second)
    template.close()


def test_plugin_reports_a_missing_migrations_folder(pytester):
    pytester.makeini("[pytest]\nembeddb_migrations = no_such_folder\n")
    pytester.makepyfile("def test_x(embeddb_db):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no migrations folder at*no_such_folder*embeddb_migrations*"])


NAMED = '''
import os

import pytest

import embeddb


def count(db, table):
    return db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.parametrize("n", range(2))
def test_both_databases_fresh_and_migrated_from_their_folders(embeddb_dbs, n):
    users, payments = embeddb_dbs["users"], embeddb_dbs["payments"]
    assert sorted(embeddb_dbs) == ["payments", "users"]
    assert count(users, "users") == 0 and count(payments, "payments") == 0
    assert "payments" not in users.get_tables() and "users" not in payments.get_tables()
    states = {e.state for e in embeddb.migrate.status(users)}  # the reference app's folder
    assert states == {"applied"} and embeddb.migrate.current_version(users) >= 5
    assert embeddb.migrate.current_version(payments) == 1
    assert users.name == "users" and payments.name == "payments"
    payments.execute_sql("INSERT INTO payments (cents) VALUES (100)")
    assert embeddb_dbs["payments"] is payments
    with open(os.environ["NAMED_LOG"], "a") as log:
        log.write(f"{payments.dialect.name} {payments.database}\\n")


def test_an_unknown_name(embeddb_dbs):
    with pytest.raises(KeyError, match="no database named 'orders'.*configured: users, payments"):
        embeddb_dbs["orders"]


def test_only_what_a_test_uses_is_made(embeddb_dbs):
    assert embeddb_dbs["users"].get_tables()
'''


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_plugin_named_databases(plugin_suite, request, backend, monkeypatch):
    """``embeddb_dbs``: every named database of embeddb.toml, fresh per test, each migrated
    from its own folder; the PostgreSQL one a database per test, dropped afterwards."""
    suite = plugin_suite(NAMED)
    folder = suite.mkdir("payments_migrations")
    (folder / "0001_payments.sqlite.up.sql").write_text(
        "CREATE TABLE payments (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL);\n")
    (folder / "0001_payments.postgres.up.sql").write_text(
        "CREATE TABLE payments (id BIGSERIAL PRIMARY KEY, cents BIGINT NOT NULL);\n")
    if backend == "postgresql":
        payments_url = request.getfixturevalue("pg_url")
    else:  # configured on a server nobody runs: $EMBEDDB_TEST_URL_PAYMENTS puts it on SQLite
        payments_url = "postgresql://nobody@127.0.0.1:9/payments"
        monkeypatch.setenv("EMBEDDB_TEST_URL_PAYMENTS", "sqlite:///:memory:")
    (suite.path / "embeddb.toml").write_text(
        f'[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "{ROOT / "migrations"}"\n'
        f'[databases.payments]\nurl = "{payments_url}"\nmigrations = "payments_migrations"\n')
    log = suite.path / "named.log"
    monkeypatch.setenv("NAMED_LOG", str(log))
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [dialect for dialect, _ in runs] == [backend] * 2
    assert not (suite.path / "users.db").exists() and not (suite.path / "payments.db").exists()
    if backend == "postgresql":
        names = [name for _, name in runs]
        assert len(set(names)) == 2 and all(n.startswith("embeddb_t_") for n in names)
        conn = psycopg2.connect(request.getfixturevalue("pg_url"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'embeddb_t%%' "
                            "AND datname = ANY(%s)", (names,))
                assert cur.fetchall() == []
        finally:
            conn.close()


def test_an_empty_test_url_of_a_named_database_is_an_error(plugin_suite, monkeypatch):
    """$EMBEDDB_TEST_URL_<NAME> set but empty is a mistake, not "use embeddb.toml's url"
    (which is the app's database: here a server nobody runs)."""
    suite = plugin_suite(NAMED)
    (suite.mkdir("payments_migrations") / "0001_payments.up.sql").write_text(
        "CREATE TABLE payments (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL);\n")
    (suite.path / "embeddb.toml").write_text(
        f'[databases.users]\nurl = "sqlite:///users.db"\nmigrations = "{ROOT / "migrations"}"\n'
        '[databases.payments]\nurl = "postgresql://nobody@127.0.0.1:9/payments"\n'
        'migrations = "payments_migrations"\n')
    monkeypatch.setenv("NAMED_LOG", str(suite.path / "named.log"))
    monkeypatch.setenv("EMBEDDB_TEST_URL_PAYMENTS", " ")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*$EMBEDDB_TEST_URL_PAYMENTS is set but empty: unset it or "
                                 "give a URL*"])
    assert result.ret != 0
