"""The query monitor on real databases: what it sees, what it counts, the slow log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import embeddb
from embeddb import migrate, seed
from embeddb.database import MonitoredSqliteEngine, SqliteEngine
from embeddb.errors import ConfigurationError, IntegrityError
from embeddb.monitor import normalize

ROOT = Path(__file__).parent.parent
HERE = os.path.abspath(__file__)


@pytest.fixture
def mdb(db_url):
    db = embeddb.connect(db_url, monitor=True)
    key = "INTEGER PRIMARY KEY" if db.backend == "sqlite" else "SERIAL PRIMARY KEY"
    db.execute_sql(f"CREATE TABLE items (id {key}, name TEXT UNIQUE, api_token TEXT)")
    db.monitor.reset()
    yield db
    db.close()


def mark(db) -> str:
    return "?" if db.backend == "sqlite" else "%s"


def entry(db, statement: str) -> dict:
    found = [s for s in db.monitor.stats()["statements"] if s["statement"] == statement]
    assert found, [s["statement"] for s in db.monitor.stats()["statements"]]
    return found[0]


# -- switching it on ------------------------------------------------------------------------

def test_off_by_default_and_nothing_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_MONITOR", raising=False)
    db = embeddb.connect("sqlite:///:memory:")
    assert type(db) is SqliteEngine and not db.monitor.enabled
    db.execute_sql("SELECT 1").fetchall()
    assert db.monitor.stats()["statements"] == []


@pytest.mark.parametrize("how", ["argument", "url", "env", "toml", "strict"])
def test_switched_on_every_documented_way(how, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_MONITOR", raising=False)
    url, kwargs = "sqlite:///:memory:", {}
    if how == "argument":
        kwargs["monitor"] = True
    elif how == "url":
        url += "?monitor=1"
    elif how == "env":
        monkeypatch.setenv("EMBEDDB_MONITOR", "1")
    elif how == "toml":
        (tmp_path / "embeddb.toml").write_text("[monitor]\nenabled = true\nslow_ms = 5\n")
    else:
        kwargs["monitor"] = "strict"
    db = embeddb.connect(url, **kwargs)
    assert isinstance(db, MonitoredSqliteEngine) and db.monitor.enabled
    assert db.monitor.detector.strict == (how == "strict")
    if how == "toml":
        assert db.monitor.slow.threshold == 0.005
    db.execute_sql("SELECT 1").fetchall()
    assert entry(db, "SELECT ?")["calls"] == 1


def test_an_explicit_false_beats_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMBEDDB_MONITOR", "1")
    assert not embeddb.connect("sqlite:///:memory:", monitor=False).monitor.enabled


def test_bad_values_are_reported_with_the_value(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="'sometimes'"):
        embeddb.connect("sqlite:///:memory:", monitor="sometimes")
    (tmp_path / "embeddb.toml").write_text("[monitor]\nslow_ms = -1\n")
    with pytest.raises(ConfigurationError, match="slow_ms"):
        embeddb.connect("sqlite:///:memory:", monitor=True)


def test_disable_goes_back_to_the_plain_class():
    db = embeddb.connect("sqlite:///:memory:", monitor=True)
    db.monitor.disable()
    assert type(db) is SqliteEngine
    db.execute_sql("SELECT 1")
    assert db.monitor.stats()["statements"] == []


# -- what it sees -----------------------------------------------------------------------------

def test_transaction_control_is_seen(mdb):
    m = mark(mdb)
    with mdb.atomic():
        mdb.execute_sql(f"INSERT INTO items (name) VALUES ({m})", ("a",))
        with mdb.atomic():
            mdb.execute_sql(f"INSERT INTO items (name) VALUES ({m})", ("b",))
    with pytest.raises(IntegrityError):
        with mdb.atomic():
            mdb.execute_sql(f"INSERT INTO items (name) VALUES ({m})", ("a",))
    seen = {s["statement"]: s for s in mdb.monitor.stats()["statements"]}
    assert seen["BEGIN"]["calls"] == 2
    assert seen["COMMIT"]["calls"] == 1
    assert seen["ROLLBACK"]["calls"] == 1
    assert seen["SAVEPOINT ?"]["calls"] == 1
    assert seen["RELEASE SAVEPOINT ?"]["calls"] == 1
    insert = seen["INSERT INTO items (name) VALUES (?)"]
    assert (insert["calls"], insert["errors"], insert["rows"]) == (3, 1, 2)


def test_hot_paths_are_seen(mdb):
    m = mark(mdb)
    mdb.execute_many(f"INSERT INTO items (name) VALUES ({m})", [("x",), ("y",), ("z",)])
    mdb.insert_rows("items", ["name"], [("p",), ("q",)])
    assert mdb.fetch_one(f"SELECT name FROM items WHERE name = {m}", ("x",)) == ("x",)
    mdb.execute_fast(f"UPDATE items SET api_token = {m} WHERE name = {m}", ("t", "y"))
    assert entry(mdb, "INSERT INTO items (name) VALUES (?)")["rows"] == 3
    assert entry(mdb, "INSERT INTO items (? rows)")["rows"] == 2
    assert entry(mdb, "SELECT name FROM items WHERE name = ?")["rows"] == 1
    assert entry(mdb, "UPDATE items SET api_token = ? WHERE name = ?")["rows"] == 1
    mdb.monitor.reset()
    mdb.execute_write(f"UPDATE items SET api_token = {m} WHERE name = {m}", ("u", "z"))
    assert entry(mdb, "UPDATE items SET api_token = ? WHERE name = ?")["rows"] == 1
    assert entry(mdb, "BEGIN")["calls"] == 1 and entry(mdb, "COMMIT")["calls"] == 1


def test_rows_of_a_select_are_counted_however_they_are_fetched(mdb):
    mdb.insert_rows("items", ["name"], [(f"n{i}",) for i in range(7)])
    sql = "SELECT name FROM items ORDER BY name"
    assert len(mdb.execute_sql(sql).fetchall()) == 7
    assert len(list(mdb.execute_sql(sql))) == 7
    cursor = mdb.execute_sql(sql)
    assert cursor.fetchone() and len(cursor.fetchmany(2)) == 2
    # SQLite counts the rows as they are fetched; psycopg2 receives them all at execute
    assert entry(mdb, sql)["rows"] == (17 if mdb.backend == "sqlite" else 21)


def test_migrations_and_seeds_are_seen(db_url):
    db = embeddb.connect(db_url, monitor=True)
    migrate.up(db, ROOT / "migrations", backup=False)
    seed.run(db, "test", directory=ROOT / "seeds")
    statements = [s["statement"] for s in db.monitor.stats()["statements"]]
    assert any(s.upper().startswith("CREATE TABLE") and "users" in s for s in statements)
    assert any(s.startswith("INSERT INTO") and "users" in s for s in statements)
    db.close()


def test_normalization_folds_literals_and_lists():
    assert normalize("SELECT * FROM t WHERE id IN (?, ?, ?)") == \
        normalize("select * from t where id in (%s)".replace("select * from t where id in",
                                                             "SELECT * FROM t WHERE id IN"))
    assert normalize("SELECT a FROM t1 WHERE b = 'it''s' AND c > 2.5 LIMIT 10") == \
        "SELECT a FROM t1 WHERE b = ? AND c > ? LIMIT ?"
    assert normalize("INSERT INTO t (a, b) VALUES (?, ?), (?, ?);") == \
        "INSERT INTO t (a, b) VALUES (?)"


def test_in_lists_of_any_length_are_one_statement(mdb):
    m = mark(mdb)
    for n in (1, 3, 5):
        mdb.execute_sql(f"SELECT id FROM items WHERE id IN ({', '.join([m] * n)})",
                        tuple(range(n))).fetchall()
    assert entry(mdb, "SELECT id FROM items WHERE id IN (?)")["calls"] == 3


def test_timings_are_consistent(mdb):
    for i in range(50):
        mdb.execute_sql(f"SELECT {i}").fetchall()
    stats = entry(mdb, "SELECT ?")
    assert stats["calls"] == 50
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"] <= stats["total_ms"]
    # Both figures are rounded to 0.1 µs, so a fast statement's mean may differ by that much.
    assert stats["mean_ms"] == pytest.approx(stats["total_ms"] / 50, rel=0.01, abs=5e-5)
    assert stats["first_seen"] <= stats["last_seen"]


def test_distinct_statements_are_bounded():
    db = embeddb.connect("sqlite:///:memory:", monitor=True)
    db.monitor.table.capacity = 5
    for i in range(20):
        db.execute_sql(f"SELECT {i} AS c{i}").fetchall()
    stats = db.monitor.stats()["statements"]
    assert len(stats) == 6
    other = [s for s in stats if s["fingerprint"] == "other"][0]
    assert other["calls"] == 15


def test_reset_forgets(mdb):
    mdb.execute_sql("SELECT 1").fetchall()
    mdb.monitor.reset()
    assert mdb.monitor.stats()["totals"]["calls"] == 0


# -- the slow log ---------------------------------------------------------------------------

def slow_sql(db) -> str:
    if db.backend == "sqlite":
        return ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                "WHERE x < 3000000) SELECT count(*) FROM c")
    return "SELECT pg_sleep(0.15)"


def test_a_slow_statement_is_logged_with_its_call_site(mdb, caplog):
    mdb.execute_sql("SELECT 1").fetchall()
    with caplog.at_level(logging.WARNING, logger="embeddb.slow"):
        mdb.execute_sql(slow_sql(mdb)).fetchall()
    slow = mdb.monitor.slow_queries()
    assert len(slow) == 1  # the fast one is not there
    assert slow[0]["duration_ms"] >= 100 and slow[0]["sql"] == slow_sql(mdb)
    assert slow[0]["rows"] == 1
    assert slow[0]["call_site"].startswith(f"{HERE}:")
    assert "test_a_slow_statement_is_logged" in slow[0]["call_site"]
    assert [r.name for r in caplog.records] == ["embeddb.slow"]
    assert mdb.monitor.stats()["totals"]["slow"] == 1


def test_secrets_are_masked_in_the_slow_log(mdb, caplog):
    m = mark(mdb)
    mdb.monitor.slow.threshold = 0.0
    with caplog.at_level(logging.WARNING, logger="embeddb.slow"):
        mdb.execute_sql(f"INSERT INTO items (name, api_token) VALUES ({m}, {m})",
                        ("visible", "s3cr3t-value"))
        mdb.execute_sql(f"SELECT id FROM items WHERE api_token = {m} AND name = {m}",
                        ("s3cr3t-value", "visible")).fetchall()
    insert, select = reversed(mdb.monitor.slow_queries(2))
    assert insert["params"] == ["***", "***"]  # a statement naming a secret: every value masked
    assert select["params"] == ["***", "***"]
    assert "s3cr3t" not in caplog.text and "items" in caplog.text
    mdb.execute_sql(f"SELECT id FROM items WHERE name = {m}", ("visible",)).fetchall()
    assert mdb.monitor.slow_queries(1)[0]["params"] == ["visible"]


def test_a_slow_entry_keeps_at_most_50_parameters(mdb):
    m = mark(mdb)
    mdb.monitor.slow.threshold = 0.0
    mdb.execute_sql(f"SELECT id FROM items WHERE id IN ({', '.join([m] * 120)})",
                    tuple(range(120))).fetchall()
    params = mdb.monitor.slow_queries(1)[0]["params"]
    assert params == [*range(50), "... 70 more"]


def _secret_statements(m: str) -> list[tuple[str, tuple]]:
    many = ", ".join([m] * 100)
    return [
        (f"SELECT id FROM items WHERE api_token BETWEEN {m} AND {m}", ("s3cr3t-a", "s3cr3t-b")),
        (f"SELECT id FROM items WHERE lower(api_token) = lower({m})", ("s3cr3t-lower",)),
        (f"SELECT id FROM items WHERE {m} = api_token", ("s3cr3t-left",)),
        ("SELECT id FROM items WHERE api_token = 's3cr3t-inline'", ()),
        (f"SELECT id FROM items WHERE name = {m} AND api_token IN ({many})",
         ("visible", *[f"s3cr3t-{i}" for i in range(100)])),
        (f'INSERT INTO "items" ("name", "api_token") VALUES ({m}, {m}) ON CONFLICT ("name") '
         f'DO UPDATE SET "api_token" = {m}', ("upserted", "s3cr3t-new", "s3cr3t-upd")),
    ]


def test_no_clause_shape_leaks_a_secret(mdb, caplog):
    from embeddb.errors import QueryBudgetExceeded
    from embeddb.monitor.publish import snapshot_of

    m = mark(mdb)
    mdb.monitor.slow.threshold = 0.0
    with caplog.at_level(logging.WARNING, logger="embeddb.slow"):
        with pytest.raises(QueryBudgetExceeded) as budget:
            with mdb.monitor.assert_max_queries(0) as log:
                for sql, params in _secret_statements(m):
                    cursor = mdb.execute_sql(sql, params)
                    if cursor.description:
                        cursor.fetchall()
                mdb.execute_sql("INSERT INTO items (name, api_token) VALUES ('taken-s3cr3t', 'x')")
                with pytest.raises(IntegrityError):  # PostgreSQL: DETAIL: Key (name)=(taken-...)
                    mdb.execute_sql(
                        "INSERT INTO items (name, api_token) VALUES ('taken-s3cr3t', 'x')")
    published = json.dumps(snapshot_of(mdb.monitor), default=str)
    for text in (published, caplog.text, str(budget.value), repr(mdb.monitor.slow_queries()),
                 repr([q.error for q in log.queries])):
        assert "s3cr3t" not in text
    assert "***" in published and "items" in published and "LINE" not in repr(log.queries)
    assert [q.error for q in log.queries if q.error]  # the failure is still reported


def test_published_examples_carry_no_literals(mdb):
    mdb.execute_sql("SELECT id FROM items WHERE name = 'some customer' AND id > 41").fetchall()
    example = entry(mdb, "SELECT id FROM items WHERE name = ? AND id > ?")["example"]
    assert example["sql"] == "SELECT id FROM items WHERE name = ? AND id > ?"


def test_the_ring_buffer_keeps_the_newest(mdb):
    mdb.monitor.slow.threshold = 0.0
    for i in range(300):
        mdb.execute_sql(f"SELECT {i}").fetchall()
    newest = mdb.monitor.slow_queries(3)
    assert [e["sql"] for e in newest] == ["SELECT 299", "SELECT 298", "SELECT 297"]
    assert len(mdb.monitor.slow_queries()) == 200


def test_monitoring_from_the_environment_in_a_real_process(tmp_path):
    script = ("import embeddb; db = embeddb.connect('sqlite:///:memory:'); "
              "db.execute_sql('SELECT 1').fetchall(); "
              "print(db.monitor.stats()['totals']['calls'])")
    env = {**os.environ, "EMBEDDB_MONITOR": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


# -- pool and health ----------------------------------------------------------------------------

def test_pool_stats_count_checkouts_waits_and_connections(pg_schema_url):
    import threading

    db = embeddb.connect(pg_schema_url + "&max_connections=1&timeout=5", monitor=True)
    db.connect()
    held, started = threading.Event(), threading.Event()

    def second():
        started.set()
        db.connect()  # waits for the only connection
        db.close()
        held.set()

    thread = threading.Thread(target=second)
    thread.start()
    started.wait()
    while db.pool_stats()["waiting"] == 0:  # the other thread is inside connect()
        pass
    stats = db.pool_stats()
    assert (stats["in_use"], stats["max"], stats["waiting"]) == (1, 1, 1)
    db.close()
    thread.join()
    assert held.is_set()
    stats = db.pool_stats()
    assert stats["checkouts"] == 2 and stats["waiting"] == 0
    assert stats["checkout_wait_p95_ms"] > 0
    assert stats["opened"] == 0  # both reused the connection connect() had checked
    db.close_all()
    assert db.pool_stats()["closed"] == 1
    db.connect()
    db.close()
    assert db.pool_stats()["opened"] == 1
    db.close_all()


def test_pool_stats_without_monitoring_and_on_sqlite(pg_schema_url):
    plain = embeddb.connect(pg_schema_url)
    assert set(plain.pool_stats()) == {"in_use", "idle", "max", "reclaimed"}
    plain.close_all()
    lite = embeddb.connect("sqlite:///:memory:")
    assert lite.pool_stats() == {"pooled": False, "in_use": 0}


def test_health_reports_latency(db_url):
    db = embeddb.connect(db_url, monitor=True)
    health = db.health()
    assert health["ok"] and health["latency_ms"] > 0
    db.close()
