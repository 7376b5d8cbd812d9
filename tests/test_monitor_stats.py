"""Cross-process statistics: real app processes publish, `embeddb stats` sums them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, shared_directory
from prometheus_client.parser import text_string_to_metric_families

import embeddb
from embeddb.cli import cli
from embeddb.cli.stats import advice_for
from embeddb.monitor import publish

APP = r'''
import sys
import embeddb
from embeddb.cache import Cache

url, runs = sys.argv[1], int(sys.argv[2])
db = embeddb.connect(url, monitor=True)
mark = "?" if db.backend == "sqlite" else "%s"
for i in range(runs):
    db.execute_sql(f"SELECT x FROM t WHERE id = {mark}", (i,)).fetchall()
db.execute_sql(f"SELECT id FROM t WHERE x = {mark} ORDER BY id", (3,)).fetchall()
cache = Cache.for_database(db)
cache.get_or_set("answer", lambda: 42)
cache.get_or_set("answer", lambda: 42)
assert db.monitor.publish()
print("ready", flush=True)
sys.stdin.readline()
'''


@pytest.fixture
def app_db(cli_db_url):
    db = embeddb.connect(cli_db_url)
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
    yield db
    db.close()


@pytest.fixture
def start_app(tmp_path, cli_db_url):
    script = tmp_path / "app.py"
    script.write_text(APP)
    started = []

    def start(runs: int) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), cli_db_url, str(runs)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=tmp_path)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stats(url: str, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["--db", url, "stats", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def calls_of(view: dict, prefix: str) -> int:
    return sum(s["calls"] for s in view["statements"] if s["statement"].startswith(prefix))


def test_stats_sum_live_processes_and_forget_dead_ones(app_db, start_app, cli_db_url):
    first, second = start_app(5), start_app(7)
    view = stats(cli_db_url)
    assert sorted(p["pid"] for p in view["processes"]) == sorted([first.pid, second.pid])
    assert calls_of(view, "SELECT x FROM t WHERE id = ?") == 12

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    view = stats(cli_db_url)
    assert [p["pid"] for p in view["processes"]] == [second.pid]
    assert calls_of(view, "SELECT x FROM t WHERE id = ?") == 7
    directory = publish.directory_of(app_db)
    assert sorted(os.listdir(directory)) == [f"{view['processes'][0]['host']}-{second.pid}.json"]

    second.communicate("\n")  # a clean exit: its file stays until a reader sees it is dead
    assert stats(cli_db_url)["processes"] == []
    assert os.listdir(directory) == []


def test_cache_stats_are_summed(app_db, start_app, cli_db_url):
    start_app(1), start_app(1)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "cache", "stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["processes"] == 2 and data["cache"]["processes"] == 2
    assert data["cache"]["l1"]["hits"] == 2
    # the second process found the value its sibling stored in the shared L2: one load in all
    assert data["cache"]["loads"]["loads"] == 1 and data["cache"]["l2"]["hits"] == 1
    text = CliRunner().invoke(cli, ["--db", cli_db_url, "cache", "stats"]).output
    assert "l1: 2 hits" in text


REDIS_APP = r'''
import sys
import embeddb
from embeddb.cache import Cache

url, directory, redis_url, prefix = sys.argv[1:5]
db = embeddb.connect(url, monitor=True)
cache = Cache.for_database(db, directory, redis_url=redis_url, redis_prefix=prefix)
cache.get_or_set("answer", lambda: 42)
assert db.monitor.publish()
print("ready", flush=True)
sys.stdin.readline()
cache.close()
'''


def test_cache_stats_sum_the_redis_tier(app_db, tmp_path, cli_db_url, redis_url, redis_prefix):
    """Two processes with caches of their own (as on two machines) share Redis: the first
    loads and stores the value, the second finds it there."""
    script = tmp_path / "redis_app.py"
    script.write_text(REDIS_APP)
    started = []
    try:
        for name in ("first", "second"):
            proc = subprocess.Popen(
                [sys.executable, str(script), cli_db_url, str(tmp_path / name), redis_url,
                 redis_prefix], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=tmp_path)
            started.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        result = CliRunner().invoke(cli, ["--db", cli_db_url, "cache", "stats", "--json"])
        assert result.exit_code == 0, result.output
        redis_tier = json.loads(result.stdout)["cache"]["redis"]
        assert (redis_tier["hits"], redis_tier["misses"], redis_tier["sets"]) == (1, 1, 1)
        assert redis_tier["hit_ratio"] == 0.5 and redis_tier["errors"] == 0
        assert redis_tier["p99_us"] >= redis_tier["p50_us"] > 0
        text = CliRunner().invoke(cli, ["--db", cli_db_url, "cache", "stats"]).output
        assert "redis: 1 hits, 1 misses, hit ratio 0.5, 0 errors, p99 " in text and " us (slowest" in text
        result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--prometheus"])
        families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
        hits = {s.labels["tier"]: s.value for s in families["embeddb_cache_hits"].samples}
        assert hits["redis"] == 1
    finally:
        for proc in started:
            proc.communicate("\n", timeout=30)


def test_prometheus_output_parses(app_db, start_app, cli_db_url):
    start_app(3)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--prometheus"])
    assert result.exit_code == 0, result.output
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    calls = families["embeddb_statement_calls"].samples
    select = [s for s in calls if s.labels["statement"] == "SELECT x FROM t WHERE id = ?"]
    assert len(select) == 1 and select[0].value == 3
    assert select[0].labels["database"] == app_db.url.redacted()
    assert len(select[0].labels["fingerprint"]) == 16
    hits = families["embeddb_cache_hits"].samples
    assert {s.labels["tier"]: s.value for s in hits}["l1"] == 1
    assert [s.value for s in families["embeddb_processes"].samples] == [1]


def test_human_output_and_tables(app_db, start_app, cli_db_url):
    app_db.execute_sql("CREATE INDEX t_x ON t (x)")
    app_db.execute_sql("INSERT INTO t (id, x) VALUES (1, 1), (2, 2)")
    start_app(4)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--tables"])
    assert result.exit_code == 0, result.output
    assert "1 process(es)" in result.output
    assert "SELECT x FROM t WHERE id = ?" in result.output
    row = [line for line in result.output.splitlines() if line.startswith("t ")][0]
    assert row.split()[1] in ("2", "~2")
    data = stats(cli_db_url, "--tables")["tables"]
    t = [x for x in data["tables"] if x["name"] == "t"][0]
    assert t["rows"] == 2 or t["rows_estimated"]
    if app_db.backend == "postgresql" or data["sizes_from"] == "dbstat":
        assert t["table_bytes"] > 0 and t["index_bytes"] > 0


def test_nothing_published_is_said_plainly(app_db, cli_db_url):
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats"])
    assert result.exit_code == 0
    assert "No monitored process is publishing" in result.output
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--prometheus"])
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    assert [s.value for s in families["embeddb_processes"].samples] == [0]


def test_the_app_never_fails_on_the_stats_file(app_db, cli_db_url):
    directory = publish.directory_of(app_db)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    with open(directory, "w") as fh:  # a file where the folder should be: writes fail
        fh.write("in the way")
    db = embeddb.connect(cli_db_url, monitor=True)
    try:
        db.execute_sql("SELECT 1").fetchall()
        assert db.monitor.publish() is False
        assert db.monitor.publisher.errors == 1
        db.execute_sql("SELECT 2").fetchall()
    finally:
        db.monitor.disable()
        db.close()
        os.unlink(directory)


def test_memory_databases_do_not_publish():
    db = embeddb.connect("sqlite:///:memory:", monitor=True)
    assert db.monitor.publisher is None and publish.directory_of(db) is None


def test_advise_explains_what_the_app_ran(app_db, start_app, cli_db_url):
    start_app(2)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--advise", "--json"])
    assert result.exit_code == 0, result.output
    advice = json.loads(result.stdout)["advice"]
    [scan] = [a for a in advice if a["statement"] == "SELECT id FROM t WHERE x = ? ORDER BY id"]
    assert scan["full_scans"] == ["t"] and scan["suggestions"][0]["columns"] == ["x", "id"]
    assert not [a for a in advice if "WHERE id = ?" in a["statement"]]  # by primary key: fine
    text = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--advise"]).output
    assert 'SUGGEST CREATE INDEX "idx_t_x_id" ON "t" ("x", "id");' in text


def test_advise_explains_a_masked_example_with_nulls(cli_db_url):
    db = embeddb.connect(cli_db_url)
    db.execute_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, token_hash TEXT, n INTEGER)")
    db.monitor.enable(publish=False)
    mark = "?" if db.backend == "sqlite" else "%s"
    db.execute_sql(f"SELECT id FROM users WHERE token_hash = {mark} AND n IN ({mark}, {mark})",
                   ("s3cr3t", 1, 2)).fetchall()
    view = json.loads(json.dumps(db.monitor.stats()))  # as another process reads it
    [example] = [s["example"] for s in view["statements"] if "users" in s["statement"]]
    assert example["redacted"] and "s3cr3t" not in json.dumps(example)
    reader = embeddb.connect(cli_db_url, readonly=True)  # as `embeddb stats --advise` opens it
    [advice] = advice_for(reader, view, limit=5)
    assert advice["full_scans"] == ["users"], advice
    assert advice["suggestions"][0]["columns"] == ["token_hash", "n"]
    reader.close()
    db.close()


def test_a_forked_child_publishes_its_own_numbers(app_db, cli_db_url):
    db = embeddb.connect(cli_db_url, monitor=True)
    mark = "?" if db.backend == "sqlite" else "%s"
    for i in range(4):
        db.execute_sql(f"SELECT x FROM t WHERE id = {mark}", (i,)).fetchall()
    db.monitor.publish()
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one statement of its own, published under its own pid
        try:
            if db.backend == "postgresql":
                db._state.reset()  # never share the parent's socket
                db._connections, db._in_use = [], {}
            db.execute_sql(f"SELECT x FROM t WHERE id = {mark}", (9,)).fetchall()
            os.write(to_parent_w, b"1" if db.monitor.publish() else b"0")
            os.read(to_child_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(to_parent_r, 1) == b"1"
        view = stats(cli_db_url)
        assert sorted(p["pid"] for p in view["processes"]) == sorted([os.getpid(), pid])
        assert calls_of(view, "SELECT x FROM t WHERE id = ?") == 5
    finally:
        os.write(to_child_w, b"x")
        os.waitpid(pid, 0)
        db.monitor.disable()
        db.close()


def test_the_collector_serves_an_apps_numbers_to_prometheus_client(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from embeddb.cache import Cache
    from embeddb.monitor.prometheus import Collector

    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}", monitor=True)
    for i in range(3):
        db.execute_sql("SELECT ?", (i,)).fetchall()
    cache = Cache.for_database(db)
    cache.get_or_set("k", lambda: 1)
    cache.get_or_set("k", lambda: 1)
    registry = CollectorRegistry()
    registry.register(Collector(db))
    families = {f.name: f for f in text_string_to_metric_families(
        generate_latest(registry).decode())}
    [select] = [s for s in families["embeddb_statement_calls"].samples
                if s.labels["statement"] == "SELECT ?"]
    assert select.value == 3 and select.name == "embeddb_statement_calls_total"
    assert families["embeddb_statement_p95_seconds"].type == "gauge"
    assert {s.labels["tier"]: s.value for s in families["embeddb_cache_hits"].samples}["l1"] == 1
    cache.close()
    db.monitor.disable()


def test_a_publishing_monitor_leaves_the_seed_worker_on(tmp_path, monkeypatch):
    from embeddb import seed

    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}", monitor=True)
    assert db.monitor.publisher is not None and seed._can_fork()
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not seed._can_fork()  # any other thread still turns the worker off
    finally:
        stop.set()
        other.join()
    db.monitor.disable()


@pytest.mark.parametrize("command", [["stats"], ["cache", "stats"], ["doctor"]])
def test_json_failures_are_json(command, tmp_path):
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'none.db'}", *command,
                                      "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"ok": False, "error": json.loads(result.stdout)["error"]}
    assert "no database at" in json.loads(result.stdout)["error"]


def test_foreign_files_in_the_monitor_folder_are_skipped_and_counted(app_db, start_app,
                                                                      cli_db_url):
    start_app(2)
    directory = publish.directory_of(app_db)
    for name, text in [("foreign.json", '{"pid": 1, "updated": 1e12}'), ("list.json", "[1, 2]"),
                       ("bad.json", "{not json"),
                       ("shape.json", json.dumps({"pid": 1, "host": "h", "started": 1,
                                                  "updated": 9e12, "monitor": {
                                                      "totals": {"slow": 0, "nplusone": 0},
                                                      "statements": [{"calls": "x"}]}}))]:
        with open(os.path.join(directory, name), "w") as fh:
            fh.write(text)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert len(view["processes"]) == 1 and view["skipped_files"] == 4
    assert "4 unreadable or foreign file(s)" in CliRunner().invoke(
        cli, ["--db", cli_db_url, "stats"]).output
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "cache", "stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["processes"] == 1


def _stats_as_other_user(url: str) -> list:
    result = CliRunner().invoke(cli, ["--db", url, "stats", "--json"])
    return [result.exit_code, result.stdout]


@needs_root
def test_an_unreadable_monitor_folder_is_a_json_error_naming_it():
    with shared_directory() as home:
        data = home.parent / "data"
        data.mkdir(mode=0o755)
        path = data / "app.db"
        db = embeddb.connect(f"sqlite:///{path}")
        db.execute_sql("CREATE TABLE t (x)")
        db.close()
        os.chmod(path, 0o644)
        folder = data / "app.db-monitor"
        folder.mkdir(mode=0o700)  # root's: the other user cannot list it
        code, stdout = as_user(_stats_as_other_user, f"sqlite:///{path}")
        assert code == 1
        error = json.loads(stdout)["error"]
        assert str(folder) in error and "cannot read the monitor folder" in error


def test_a_negative_limit_is_refused(app_db, cli_db_url):
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--limit", "-1"])
    assert result.exit_code == 1 and result.output.startswith("Error: --limit -1")
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "stats", "--limit", "-1", "--json"])
    assert result.exit_code == 1 and "--limit -1" in json.loads(result.stdout)["error"]
