"""Named locks on every backend: one holder at a time, across threads and processes, released
when the holder dies, with fencing tokens that only go up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

import embeddb
from embeddb import locks
from embeddb.cli import cli
from embeddb.errors import ConfigurationError, LockTimeout

HOLDER = """
import sys, time, embeddb
db = embeddb.connect(sys.argv[1])
with db.lock(sys.argv[2]) as held:
    print(held.token, flush=True)
    time.sleep(float(sys.argv[3]))
print("released", flush=True)
"""


def holder(url: str, name: str, seconds: float = 60.0) -> tuple[subprocess.Popen, int]:
    """A process that takes the lock and holds it; its token once it has it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, name, str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip().isdigit(), proc.stderr.read()
    return proc, int(line)


@pytest.fixture(params=["sqlite_file", "postgresql"])
def shared_url(request, tmp_path) -> str:
    """A database two processes share."""
    if request.param == "sqlite_file":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return request.getfixturevalue("pg_schema_url")


def test_one_holder_at_a_time_between_threads(db):
    inside = []
    overlaps = []
    done = []

    def work() -> None:
        with db.lock("job", timeout=30):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.01)
            inside.pop()
        done.append(1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and len(done) == 6  # every thread had its turn, none failed


def test_tokens_increase_with_every_acquisition(db):
    tokens = []
    for _ in range(3):
        with db.lock("job") as held:
            tokens.append(held.token)
    with db.lock("other") as other:
        pass
    with db.lock("job") as held:
        tokens.append(held.token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert other.token is not None


def test_a_second_holder_waits_then_times_out(db):
    with db.lock("job"):
        start = time.monotonic()
        with pytest.raises(LockTimeout, match="lock 'job' is held by another holder; gave up "
                                              "after 0.3 s"):
            db.lock("job", timeout=0.3).acquire()
        assert 0.25 <= time.monotonic() - start < 5
        with pytest.raises(LockTimeout):
            db.lock("job", timeout=0).acquire()
    with db.lock("job", timeout=0):  # free again once the block ended
        pass


def test_different_names_do_not_block_each_other(db):
    with db.lock("a"), db.lock("b", timeout=0):
        pass


def test_across_processes_and_released_when_the_holder_is_killed(shared_url):
    proc, token = holder(shared_url, "nightly-report")
    db = embeddb.connect(shared_url)
    try:
        with pytest.raises(LockTimeout):
            db.lock("nightly-report", timeout=0.2).acquire()
        listed = locks.held(db)
        assert [(h.name, h.pid is not None, h.token) for h in listed] == [
            ("nightly-report", True, token)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        with db.lock("nightly-report", timeout=10) as held:  # the OS / the server let go
            assert held.token > token
        assert locks.held(db) == []
    finally:
        proc.kill()
        db.close()


def test_a_waiter_gets_the_lock_when_the_holder_finishes(shared_url):
    proc, token = holder(shared_url, "job", seconds=0.5)
    db = embeddb.connect(shared_url)
    try:
        with db.lock("job", timeout=20) as held:
            assert held.token > token
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        db.close()


def test_tokens_survive_across_processes(shared_url):
    first, first_token = holder(shared_url, "job", seconds=0)
    first.wait(timeout=10)
    second, second_token = holder(shared_url, "job", seconds=0)
    second.wait(timeout=10)
    assert second_token > first_token


def test_transaction_scope_ends_with_the_transaction(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    other = embeddb.connect(pg_schema_url)
    try:
        with db.atomic():
            with db.lock("tx-job", scope="transaction") as held:
                assert held.token >= 1
            # leaving the block does not release it: the transaction does
            with pytest.raises(LockTimeout):
                other.lock("tx-job", timeout=0).acquire()
            assert [h.scope for h in locks.held(other)] == ["transaction"]
        with other.lock("tx-job", timeout=0):
            pass
        with pytest.raises(ConfigurationError, match="needs an open transaction"):
            db.lock("tx-job", scope="transaction").acquire()
    finally:
        db.close_all()
        other.close_all()


def test_a_timed_out_transaction_lock_leaves_the_transaction_usable(pg_schema_url):
    db = embeddb.connect(pg_schema_url)
    other = embeddb.connect(pg_schema_url)
    try:
        db.execute_sql("CREATE TABLE t (x INTEGER)")
        with other.lock("busy"):
            with db.atomic():
                db.execute_sql("INSERT INTO t VALUES (1)")
                with pytest.raises(LockTimeout):
                    db.lock("busy", timeout=0.2, scope="transaction").acquire()
                db.execute_sql("INSERT INTO t VALUES (2)")
        assert db.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 2
    finally:
        db.close_all()
        other.close_all()


def test_sqlite_has_no_transaction_scope(sqlite_file_url):
    db = embeddb.connect(sqlite_file_url)
    with pytest.raises(ConfigurationError, match="SQLite has no transaction-scoped locks"):
        db.lock("job", scope="transaction")
    db.close()


@pytest.mark.parametrize("name, timeout, scope, words", [
    ("", None, "session", "needs a name"),
    ("   ", None, "session", "needs a name"),
    ("x" * 201, None, "session", "at most 200"),
    ("job", -1, "session", "between 0 and 86400"),
    ("job", float("nan"), "session", "between 0 and 86400"),
    ("job", 10**20, "session", "between 0 and 86400"),
    ("job", "soon", "session", "between 0 and 86400"),
    ("job", None, "forever", "use session or transaction"),
])
def test_bad_requests_are_refused_in_one_line(db, name, timeout, scope, words):
    with pytest.raises(ConfigurationError, match=words) as caught:
        db.lock(name, timeout, scope)
    assert "\n" not in str(caught.value)


def test_names_with_any_characters_get_their_own_lock(tmp_path):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    names = ["a/b", "a_b", "../../etc/passwd", "ünïcode name", "a" * 200]
    held = [db.lock(name, timeout=0).acquire() for name in names]
    try:
        files = os.listdir(tmp_path / "app.db-locks")
        assert len(files) == len(names)
        assert all(os.path.dirname(os.path.join(tmp_path, f)) == str(tmp_path) for f in files)
        assert sorted(h.name for h in locks.held(db)) == sorted(names)
    finally:
        for lock in held:
            lock.release()
        db.close()


def test_cli_lists_held_locks(shared_url):
    proc, token = holder(shared_url, "nightly-report")
    try:
        result = CliRunner().invoke(cli, ["--db", shared_url, "locks", "--json"])
        assert result.exit_code == 0, result.output
        [listed] = json.loads(result.output)["locks"]
        assert listed["name"] == "nightly-report" and listed["token"] == token
        assert listed["pid"] and listed["since"]
        text = CliRunner().invoke(cli, ["--db", shared_url, "locks"])
        assert "nightly-report: held by pid" in text.output
    finally:
        proc.kill()
        proc.wait()
    result = CliRunner().invoke(cli, ["--db", shared_url, "locks"])
    assert result.exit_code == 0 and "No named locks are held." in result.output


def test_first_use_from_many_connections_at_once_creates_the_tables_once(pg_schema_url):
    """Each Database object creates the token sequence and name table on first use: racing
    creators must all succeed (CREATE ... IF NOT EXISTS still collides in the catalog)."""
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def first_use(n: int) -> None:
        own = embeddb.connect(pg_schema_url)
        try:
            start.wait()
            with own.lock(f"job-{n}", timeout=30):
                pass
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)
        finally:
            own.close_all()

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
