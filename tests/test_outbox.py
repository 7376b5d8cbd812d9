"""The transactional outbox on every backend: an event exists iff its change committed, is
delivered at least once, in order per key, never twice by concurrent processors in the normal
path, and nothing is lost when a processor is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner

import embeddb
from embeddb import migrate, outbox
from embeddb.cli import cli
from embeddb.errors import ConfigurationError


def install(db) -> None:
    for statement in outbox.ddl(db):
        db.execute_sql(statement)


@pytest.fixture
def odb(db):
    install(db)
    return db


@pytest.fixture(params=["sqlite_file", "postgresql"])
def shared_url(request, tmp_path) -> str:
    if request.param == "sqlite_file":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("pg_schema_url")
    db = embeddb.connect(url)
    install(db)
    db.close()
    return url


def rows(db, sql: str) -> list[tuple]:
    return [tuple(r) for r in db.execute_sql(sql).fetchall()]


def test_an_event_exists_if_and_only_if_its_transaction_committed(odb):
    odb.execute_sql("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    with pytest.raises(RuntimeError):
        with odb.atomic():
            odb.execute_sql("INSERT INTO items VALUES (1)")
            outbox.publish(odb, "item.created", {"id": 1})
            raise RuntimeError("the change failed")
    assert rows(odb, "SELECT count(*) FROM embeddb_outbox") == [(0,)]
    with odb.atomic():
        odb.execute_sql("INSERT INTO items VALUES (2)")
        event_id = outbox.publish(odb, "item.created", {"id": 2, "name": "ünï"})
    got = []
    stats = outbox.Outbox(odb).run(got.append, once=True)
    assert stats.delivered == 1 and [e.id for e in got] == [event_id]
    assert got[0].payload == {"id": 2, "name": "ünï"} and got[0].topic == "item.created"
    assert got[0].idempotency_key.startswith("embeddb-outbox:")
    assert outbox.Outbox(odb).run(got.append, once=True).delivered == 0  # delivered once


def test_in_order_per_key_even_when_an_earlier_event_fails(odb):
    for n in range(3):
        outbox.publish(odb, "t", {"n": n}, key="a")
        outbox.publish(odb, "t", {"n": n}, key="b")
    seen: list[tuple[str, int]] = []
    failures = {"a": 2}  # a's first event fails twice before it goes through

    def handler(event):
        if event.key == "a" and failures["a"] and event.payload["n"] == 0:
            failures["a"] -= 1
            raise ConnectionError("broker down")
        seen.append((event.key, event.payload["n"]))

    box = outbox.Outbox(odb, backoff=0)
    for _ in range(20):
        box.run_batch(handler)
    assert [n for key, n in seen if key == "a"] == [0, 1, 2]
    assert [n for key, n in seen if key == "b"] == [0, 1, 2]
    assert rows(odb, "SELECT count(*) FROM embeddb_outbox WHERE status = 'delivered'") == [(6,)]


def test_backoff_then_dead_letter_then_retry(odb):
    event_id = outbox.publish(odb, "t", {"x": 1})
    box = outbox.Outbox(odb, max_attempts=3, backoff=0.05, max_backoff=0.05)

    def broken(event):
        raise ValueError("bad payload\nsecond line")

    assert box.run_batch(broken).failed == 1
    assert box.run_batch(broken).failed == 0  # backing off: not due yet
    for _ in range(2):
        time.sleep(0.06)
        box.run_batch(broken)
    report = outbox.status(odb)
    assert report.counts["dead"] == 1 and report.dead[0]["id"] == event_id
    assert report.dead[0]["attempts"] == 3
    assert report.dead[0]["last_error"] == "ValueError: bad payload second line"
    assert box.run_batch(broken).dead == 0  # dead letters are left alone
    outbox.retry(odb, event_id)
    got = []
    assert box.run_batch(got.append).delivered == 1 and got[0].attempts == 0
    with pytest.raises(outbox.OutboxError, match="is delivered, not dead"):
        outbox.retry(odb, event_id)
    with pytest.raises(outbox.OutboxError, match="no outbox event with id 999"):
        outbox.retry(odb, 999)


def test_topics_filter(odb):
    outbox.publish(odb, "a", 1)
    outbox.publish(odb, "b", 2)
    got = []
    outbox.Outbox(odb).run(got.append, once=True, topics=["b"])
    assert [e.topic for e in got] == ["b"]


def test_two_processors_never_deliver_the_same_event_twice(shared_url):
    db = embeddb.connect(shared_url)
    for n in range(300):
        outbox.publish(db, "t", {"n": n}, key=f"k{n % 7}" if n % 3 else None)
    delivered: list[int] = []
    guard = threading.Lock()

    def handler(event):
        with guard:
            delivered.append(event.payload["n"])

    failures: list[BaseException] = []

    def processor():
        own = embeddb.connect(shared_url)
        try:
            outbox.Outbox(own).run(handler, batch=10, once=True)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            failures.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=processor) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    outbox.Outbox(db).run(handler, once=True)  # whatever a busy moment left behind
    assert sorted(delivered) == list(range(300))
    db.close()


KILLED_PROCESSOR = """
import os, signal, sys, embeddb
from embeddb import outbox
db = embeddb.connect(sys.argv[1])
seen = []
def handler(event):
    print(event.payload["n"], flush=True)  # "delivered" to the outside world
    seen.append(event)
    if len(seen) == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # before marking the 5th
outbox.Outbox(db, lease=float(sys.argv[2])).run(handler, batch=20, once=True)
"""


def test_a_processor_killed_mid_batch_loses_nothing(shared_url):
    db = embeddb.connect(shared_url)
    for n in range(50):
        outbox.publish(db, "t", {"n": n})
    proc = subprocess.run([sys.executable, "-c", KILLED_PROCESSOR, shared_url, "3"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    first = [int(line) for line in proc.stdout.split()]
    assert first == [0, 1, 2, 3, 4]
    got: list[int] = []
    box = outbox.Outbox(db)
    box.run(lambda e: got.append(e.payload["n"]), once=True)
    assert 4 not in got  # its lease has not run out yet: not redelivered early
    time.sleep(3.1)
    box.run(lambda e: got.append(e.payload["n"]), once=True)
    assert sorted(got + first[:4]) == list(range(50))  # nothing lost
    assert sorted(set(got) & set(first)) == [4]  # the one duplicate: the killed window
    db.close()


def test_publishers_of_one_key_are_delivered_in_commit_order(shared_url):
    """PostgreSQL hands out ids before commit: without the per-key lock a processor could see
    a later event of a key before an earlier one commits."""
    db = embeddb.connect(shared_url)
    other = embeddb.connect(shared_url)
    started = threading.Event()

    def slow_publisher():
        with other.atomic():
            outbox.publish(other, "t", {"n": 0}, key="k")
            started.set()
            time.sleep(0.3)

    thread = threading.Thread(target=slow_publisher)
    thread.start()
    started.wait(5)
    outbox.publish(db, "t", {"n": 1}, key="k")  # waits for the first to commit
    thread.join()
    got = []
    outbox.Outbox(db).run(lambda e: got.append(e.payload["n"]), once=True)
    assert got == [0, 1]
    db.close()
    other.close()


@pytest.mark.parametrize("call, words", [
    (lambda db: outbox.publish(db, "", {}), "needs a topic"),
    (lambda db: outbox.publish(db, "t", {1, 2}), "is not JSON"),
    (lambda db: outbox.publish(db, "t", float("nan")), "is not JSON"),
    (lambda db: outbox.publish(db, "t", {}, key=5), "key must be text"),
    (lambda db: outbox.Outbox(db, lease=0), "lease=0"),
    (lambda db: outbox.Outbox(db, max_attempts=0), "max_attempts=0"),
    (lambda db: outbox.Outbox(db).run_batch(print, batch=10**9), "batch=1000000000"),
    (lambda db: outbox.purge(db, 10**12), "must be 0 s to 100 years"),
])
def test_bad_input_is_refused_and_nothing_is_written(odb, call, words):
    with pytest.raises(ConfigurationError, match=words) as caught:
        call(odb)
    assert "\n" not in str(caught.value)
    assert rows(odb, "SELECT count(*) FROM embeddb_outbox") == [(0,)]


def test_without_the_table_the_error_says_how_to_create_it(db):
    with pytest.raises(outbox.OutboxError, match="embeddb outbox init"):
        outbox.publish(db, "t", {})
    with pytest.raises(outbox.OutboxError, match="embeddb outbox init"):
        outbox.Outbox(db).run_batch(print)


def test_purge_deletes_only_old_delivered_events(odb):
    for n in range(5):
        outbox.publish(odb, "t", n)
    outbox.Outbox(odb).run(lambda e: None, once=True)
    outbox.publish(odb, "t", "still pending")
    odb.execute_sql("UPDATE embeddb_outbox SET delivered_at = delivered_at - 86400 * 8 "
                    "WHERE id <= 3")
    assert outbox.purge(odb, 7 * 86400, dry_run=True) == 3
    assert outbox.purge(odb, 7 * 86400, batch=2) == 3
    assert rows(odb, "SELECT status, count(*) FROM embeddb_outbox GROUP BY status "
                     "ORDER BY status") == [("delivered", 2), ("pending", 1)]


def test_redis_stream_publisher_against_the_real_redis(odb, redis_url, redis_prefix):
    """The shared test Redis ($EMBEDDB_TEST_REDIS_URL): without it, or without redis-py, this
    fails under CI=true like every Redis test (the fixture says so) instead of skipping."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        outbox.publish(odb, "orders", {"id": 1}, key="o1")
        outbox.publish(odb, "orders", {"id": 2}, key="o1")
        send = outbox.redis_stream(redis_url, stream=redis_prefix + "{topic}")
        assert outbox.Outbox(odb).run(send, once=True).delivered == 2
        entries = client.xrange(f"{redis_prefix}orders")
        assert [json.loads(fields[b"payload"]) for _, fields in entries] == [{"id": 1}, {"id": 2}]
        assert all(fields[b"idempotency_key"].startswith(b"embeddb-outbox:")
                   for _, fields in entries)
    finally:
        client.close()


# -- the CLI ------------------------------------------------------------------------------


def test_cli_init_run_status_retry_purge(tmp_path, cli_db_url):
    folder = tmp_path / "migrations"
    runner = CliRunner()
    init = runner.invoke(cli, ["outbox", "init", "--migrations", str(folder)])
    assert init.exit_code == 0, init.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "0001_embeddb_outbox.down.sql", "0001_embeddb_outbox.postgres.up.sql",
        "0001_embeddb_outbox.sqlite.up.sql"]
    again = runner.invoke(cli, ["outbox", "init", "--migrations", str(folder)])
    assert again.exit_code == 1 and "already creates the outbox table" in again.output
    db = embeddb.connect(cli_db_url)
    migrate.up(db, folder, backup=False)
    outbox.publish(db, "t", {"n": 1})
    outbox.publish(db, "t", {"n": 2})
    module = tmp_path / "handlers_for_test.py"
    module.write_text(textwrap.dedent("""\
        import json, os
        def record(event):
            with open(os.environ["OUT"], "a") as fh:
                fh.write(json.dumps(event.payload) + "\\n")
        def fail(event):
            raise RuntimeError("no broker")
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        out = tmp_path / "out.jsonl"
        run = runner.invoke(cli, ["--db", cli_db_url, "outbox", "run", "--once", "--handler",
                                  "handlers_for_test:record", "--json"], env={"OUT": str(out)})
        assert run.exit_code == 0, run.output
        assert json.loads(run.output)["delivered"] == 2
        assert [json.loads(line) for line in out.read_text().splitlines()] == [{"n": 1}, {"n": 2}]
        event_id = outbox.publish(db, "t", {"n": 3})
        failing = runner.invoke(cli, ["--db", cli_db_url, "outbox", "run", "--once", "--handler",
                                      "handlers_for_test:fail", "--max-attempts", "1"])
        assert failing.exit_code == 0 and "1 dead" in failing.output
        status = runner.invoke(cli, ["--db", cli_db_url, "outbox", "status", "--json"])
        report = json.loads(status.output)
        assert report["counts"] == {"pending": 0, "delivered": 2, "dead": 1}
        assert report["dead"][0]["last_error"] == "RuntimeError: no broker"
        assert status.exit_code == 1  # a dead letter needs attention
        retry = runner.invoke(cli, ["--db", cli_db_url, "outbox", "retry", str(event_id)])
        assert retry.exit_code == 0, retry.output
        assert outbox.status(db).counts["pending"] == 1
        purge = runner.invoke(cli, ["--db", cli_db_url, "outbox", "purge",
                                    "--delivered-older-than", "0s", "--dry-run"])
        assert purge.exit_code == 0 and "would delete 2" in purge.output
        bad = runner.invoke(cli, ["--db", cli_db_url, "outbox", "run", "--once", "--handler",
                                  "nope"])
        assert bad.exit_code == 1 and "write it as module:function" in bad.output
        missing = runner.invoke(cli, ["--db", cli_db_url, "outbox", "run", "--once",
                                      "--handler", "no_such_module_x:f"])
        assert missing.exit_code == 1 and "cannot import no_such_module_x" in missing.output
    finally:
        sys.path.remove(str(tmp_path))
        db.close()
