"""The Redis tier: read order, write-through, invalidation across caches that share only Redis,
freshness across processes on PostgreSQL, Redis faults (a private server killed, paused and
restarted), stampedes across machines, configuration and stats.

Two caches with different directories and the same Redis prefix stand for two machines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest

from embeddb.cache import Cache
from embeddb.cache.remote import LEASE
from tests.redis_server import PrivateRedis

WAIT = 20  # seconds: the longest any wait may take before the test fails


def _until(condition, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def _serving(cache: Cache) -> bool:
    return time.monotonic() < cache.remote.serving_until


@pytest.fixture
def machines(tmp_path, redis_url, redis_prefix):
    """Two caches that share nothing but Redis (separate directories)."""
    made = []

    def make(name: str, **options) -> Cache:
        cache = Cache(tmp_path / name, redis_url=redis_url, redis_prefix=redis_prefix, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own; skips (fails in CI) without the binary."""
    if not PrivateRedis.available():
        reason = "redis-server is not installed: the Redis fault tests need a private one"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(str(directory))
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.kill()


def test_import_embeddb_does_not_import_redis():
    code = "import sys, embeddb, embeddb.cache; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_read_order_is_l1_l2_redis_loader(machines, tmp_path):
    a, b = machines("a"), machines("b")
    calls = []
    assert a.get_or_set("k", lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert b.get_or_set("k", lambda: calls.append(1) or {"v": 2}) == {"v": 1}
    assert calls == [1]
    assert b.stats()["redis"]["hits"] == 1 and b.stats()["l2"]["hits"] == 0
    assert b.get_or_set("k", lambda: {"v": 3}) == {"v": 1}
    assert b.stats()["l1"]["hits"] == 1  # kept locally after the Redis hit
    neighbour = machines("b")  # another process on b's machine: b's L2 has it
    assert neighbour.get_or_set("k", lambda: {"v": 4}) == {"v": 1}
    assert neighbour.stats()["l2"]["hits"] == 1 and neighbour.stats()["redis"]["hits"] == 0


def test_values_are_written_through_with_the_family_ttl(machines, redis_url, redis_prefix):
    import redis

    a, b = machines("a"), machines("b")
    a.set("quote", 42, family="prices")
    a.get_or_set("u1", lambda: "alice", family="users")
    client = redis.Redis.from_url(redis_url)
    keys = {k.decode(): client.pttl(k) for k in client.scan_iter(match=f"{redis_prefix}*")}
    ttls = {k.rsplit("|", 1)[1]: v for k, v in keys.items() if "|" in k}
    assert 9_000 < ttls["prices:quote"] <= 10_000
    assert 299_000 < ttls["users:u1"] <= 300_000
    assert b.get("quote", family="prices") == 42  # cache-aside read reaches Redis too
    a.set("forever", 1, ttl=float("inf"))
    assert b.get("forever") == 1
    client.close()


def test_an_invalidation_is_seen_by_the_other_machine_when_it_returns(machines):
    a, b = machines("a"), machines("b")
    b.get_or_set("k", lambda: "old", tags=["t"])
    b.get_or_set("other", lambda: "old", tags=["t"])
    assert b.get_or_set("k", lambda: "never") == "old"  # an L1 hit on b
    a.invalidate(["k"])
    assert b.get_or_set("k", lambda: "new") == "new"  # no wait: a returned after b applied it
    a.invalidate(tags=["t"])
    assert b.get_or_set("other", lambda: "new", tags=["t"]) == "new"
    a.clear()
    assert b.get_or_set("k", lambda: "newer") == "newer"
    a.set("aside", 1, tags=["x"])  # a cache-aside get() does not know the entry's tags
    assert machines("c").get("aside") == 1
    a.invalidate(tags=["x"])
    assert machines("d").get("aside", "gone") == "gone"
    assert a.stats()["redis"]["ack_timeouts"] == 0


def test_a_rolled_back_write_invalidates_nothing_anywhere(machines, tmp_path):
    import embeddb

    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    a, b = machines("a", db=db), machines("b")
    b.get_or_set("k", lambda: "kept")
    with pytest.raises(RuntimeError), db.atomic():
        a.invalidate_after_commit(db, ["k"])
        raise RuntimeError("roll back")
    assert b.get_or_set("k", lambda: "reloaded") == "kept"
    with db.atomic():
        a.invalidate_after_commit(db, ["k"])
        assert b.get_or_set("k", lambda: "reloaded") == "kept"  # not before the commit
    assert b.get_or_set("k", lambda: "reloaded") == "reloaded"
    db.close()


def test_a_value_loaded_while_it_was_invalidated_is_not_kept_in_redis(machines):
    a, b, c = machines("a"), machines("b"), machines("c")

    def load_during_a_write():
        b.invalidate(["k"])  # another machine's write lands while this load runs
        return "maybe old"

    assert a.get_or_set("k", load_during_a_write) == "maybe old"
    assert a.stats()["loads"]["races"] == 1
    assert c.get_or_set("k", lambda: "fresh") == "fresh"
    assert c.stats()["redis"]["hits"] == 0


def _forked_reader(cache: Cache, ready, go, result) -> None:
    # The inherited cache listens again, on a thread of its own (the parent's did not come along).
    _until(lambda: cache.remote.listener.alive() and _serving(cache))
    assert cache.get_or_set("k", lambda: "reloaded") == "old"  # the parent's L1 entry
    ready.set()
    go.wait(WAIT)
    result.put(cache.get_or_set("k", lambda: "new"))


def test_a_forked_child_listens_with_the_cache_it_inherited(machines):
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    parent, other = machines("parent"), machines("other")
    parent.get_or_set("k", lambda: "old")
    ready, go, result = fork.Event(), fork.Event(), fork.Queue()
    child = fork.Process(target=_forked_reader, args=(parent, ready, go, result))
    child.start()
    try:
        assert ready.wait(WAIT)
        other.invalidate(["k"])
        go.set()
        assert result.get(timeout=WAIT) == "new"
        assert other.stats()["redis"]["ack_timeouts"] == 0
    finally:
        child.join(WAIT)
    assert child.exitcode == 0


def test_a_silent_subscriber_delays_a_write_by_its_lease_only(machines, tmp_path, redis_url,
                                                               redis_prefix):
    a = machines("a")
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from embeddb.cache import Cache
            c = Cache({str(tmp_path / 'r')!r}, redis_url={redis_url!r}, redis_prefix={redis_prefix!r})
            while time.monotonic() >= c.remote.serving_until:
                time.sleep(0.01)
            c.get_or_set("k", lambda: "old")
            print("ready", flush=True)
            sys.stdin.readline()
            print(c.get_or_set("k", lambda: "new"), flush=True)
            c.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout.readline().strip() == "ready"
        os.kill(reader.pid, signal.SIGSTOP)  # it neither acknowledges nor serves
        _until(lambda: _state(reader.pid) == "T")  # SIGSTOP takes effect when it gets a CPU
        start = time.monotonic()
        a.invalidate(["k"])
        waited = time.monotonic() - start
        os.kill(reader.pid, signal.SIGCONT)
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "new"
        assert LEASE * 0.9 <= waited < LEASE + 1.0
        assert a.stats()["redis"]["ack_timeouts"] == 1
    finally:
        reader.kill()
        reader.wait()


def test_a_stampede_across_machines_runs_one_loader(machines):
    a, b = machines("a"), machines("b")
    _until(lambda: _serving(a) and _serving(b))  # without a lease each reads from its loader
    threads_per_cache = 4
    barrier = threading.Barrier(2 * threads_per_cache)
    calls = []
    results = []

    def load():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    def read(cache):
        barrier.wait(WAIT)
        results.append(cache.get_or_set("hot", load))

    threads = [threading.Thread(target=read, args=(c,)) for c in (a, b) * threads_per_cache]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert results == ["value"] * len(threads)
    assert len(calls) == 1
    assert a.stats()["loads"]["lock_waits"] + b.stats()["loads"]["lock_waits"] >= 1


def test_stats_report_the_redis_tier(machines):
    a = machines("a")
    a.get_or_set("k", lambda: 1)
    a.get_or_set("k", lambda: 1)
    machines("b").get("k")
    redis_stats = a.stats()["redis"]
    assert {"hits", "misses", "sets", "errors", "stale", "p50_us", "p99_us"} <= set(redis_stats)
    assert redis_stats["misses"] == 1 and redis_stats["sets"] == 1 and redis_stats["p50_us"] > 0
    a.reset_stats()
    assert a.stats()["redis"]["misses"] == 0


def test_the_redis_url_comes_from_the_environment_or_embeddb_toml(tmp_path, monkeypatch,
                                                                  redis_url, redis_prefix):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_REDIS_URL", raising=False)
    plain = Cache(tmp_path / "plain")
    assert plain.remote is None and plain.stats()["redis"] is None
    plain.close()
    (tmp_path / "embeddb.toml").write_text(f'[cache]\nredis_url = "{redis_url}"\n')
    from_file = Cache(tmp_path / "file", redis_prefix=redis_prefix)
    assert from_file.remote is not None and from_file.remote.url == redis_url
    from_file.close()
    monkeypatch.setenv("EMBEDDB_REDIS_URL", "")
    assert Cache(tmp_path / "off").remote is None  # set but empty: no Redis tier
    monkeypatch.setenv("EMBEDDB_REDIS_URL", redis_url)
    (tmp_path / "embeddb.toml").write_text('[cache]\nredis_url = "redis://127.0.0.1:1/0"\n')
    from_env = Cache(tmp_path / "env", redis_prefix=redis_prefix)
    assert from_env.remote.url == redis_url
    from_env.close()
    explicit = Cache(tmp_path / "explicit", redis_url="")
    assert explicit.remote is None


def test_caches_of_two_in_memory_databases_share_nothing_through_redis(redis_url, monkeypatch):
    """Each :memory: database is private to its connection: with $EMBEDDB_REDIS_URL exported
    (as on a machine whose apps share Redis) one's cached values must not be another's."""
    import embeddb

    monkeypatch.setenv("EMBEDDB_REDIS_URL", redis_url)
    first, second = embeddb.connect("sqlite:///:memory:"), embeddb.connect("sqlite:///:memory:")
    a, b = Cache.for_database(first), Cache.for_database(second)
    try:
        assert a.get_or_set("count", lambda: "first's") == "first's"
        assert b.get_or_set("count", lambda: "second's") == "second's"
        assert a.remote is None and b.remote is None  # nothing to share, like no L2
    finally:
        a.close()
        b.close()
        first.close()
        second.close()


@pytest.fixture
def sqlite_name(redis_url):
    """A SQLite file name of this test's own: the Redis keys its caches make by default start
    with ``embeddb:<name>`` and are deleted afterwards."""
    import redis

    name = f"embeddb-{uuid.uuid4().hex[:12]}.db"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"embeddb:{name}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _sqlite_file(directory, name: str):
    import embeddb

    directory.mkdir(parents=True, exist_ok=True)
    return embeddb.connect(f"sqlite:///{directory / name}")


def test_two_sqlite_files_of_one_name_share_nothing_through_redis(tmp_path, redis_url,
                                                                   sqlite_name):
    """Two app servers sharing one Redis, each with its own file of the same name (the default
    ``embeddb.db``): one's cached values and invalidations must never be the other's."""
    from embeddb.cache import generations as gen

    first = _sqlite_file(tmp_path / "machine-a", sqlite_name)
    second = _sqlite_file(tmp_path / "machine-b", sqlite_name)
    a = Cache.for_database(first, redis_url=redis_url)
    b = Cache.for_database(second, redis_url=redis_url)
    try:
        _until(lambda: _serving(a) and _serving(b))
        assert a.get_or_set("count", lambda: "a's") == "a's"
        assert b.get_or_set("count", lambda: "b's") == "b's"
        writes = b.generations.counters[gen.WRITES]
        a.invalidate(["count"])  # returns once every listener of a's prefix applied it
        assert b.generations.counters[gen.WRITES] == writes
        assert b.get_or_set("count", lambda: "reloaded") == "b's"
    finally:
        a.close()
        b.close()
        first.close()
        second.close()


_INVALIDATE_THROUGH_A_LINK = textwrap.dedent("""
    import sys, time
    import embeddb
    from embeddb.cache import Cache
    path, directory, redis_url = sys.argv[1:4]
    db = embeddb.connect("sqlite:///" + path)
    cache = Cache.for_database(db, directory, redis_url=redis_url)
    while time.monotonic() >= cache.remote.serving_until:
        time.sleep(0.01)
    print(cache.remote.prefix, flush=True)
    cache.invalidate(["k"])
    cache.close()
    db.close()
""")


def test_processes_on_one_sqlite_file_share_redis_whatever_path_or_directory(
        tmp_path, redis_url, sqlite_name):
    """Another process opens the same file through a symlink and keeps its cache in a folder
    of its own (``directory=``): nothing is shared but Redis, and its invalidation reaches
    this process before it returns."""
    db = _sqlite_file(tmp_path / "data", sqlite_name)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    cache = Cache.for_database(db, redis_url=redis_url)
    try:
        _until(lambda: _serving(cache))
        assert cache.get_or_set("k", lambda: "old") == "old"
        assert cache.get_or_set("k", lambda: "never") == "old"  # L1
        script = tmp_path / "other.py"
        script.write_text(_INVALIDATE_THROUGH_A_LINK)
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "link" / sqlite_name),
             str(tmp_path / f"{sqlite_name}-elsewhere"), redis_url],
            capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == cache.remote.prefix, out.stderr
        assert cache.get_or_set("k", lambda: "new") == "new"
    finally:
        cache.close()
        db.close()


def test_a_recreated_cache_directory_keeps_the_sqlite_files_redis_prefix(
        tmp_path, redis_url, sqlite_name):
    """A process that opened the cache before its directory was removed and one that opened
    it after must share Redis: the prefix names the file, not its cache directory."""
    import shutil

    first = _sqlite_file(tmp_path, sqlite_name)
    second = _sqlite_file(tmp_path, sqlite_name)
    before = Cache.for_database(first, redis_url=redis_url)
    try:
        shutil.rmtree(before.directory)
        after = Cache.for_database(second, redis_url=redis_url)
        assert os.stat(after.directory)  # made again
        assert after.remote.prefix == before.remote.prefix
        after.close()
    finally:
        before.close()
        first.close()
        second.close()


@pytest.mark.postgres
def test_caches_of_one_postgresql_database_share_redis_whatever_their_directories(
        tmp_path, pg_schema_url, redis_url):
    """Two machines that keep a PostgreSQL database's cache in folders of their own choosing
    (``directory=``) still see each other's invalidations: the prefix names the database."""
    import redis

    import embeddb
    from embeddb.cache import placement

    one, other = embeddb.connect(pg_schema_url), embeddb.connect(pg_schema_url)
    a = Cache.for_database(one, tmp_path / "machine-a", redis_url=redis_url)
    b = Cache.for_database(other, tmp_path / "elsewhere" / "cache", redis_url=redis_url)
    prefix = f"embeddb:{os.path.basename(placement.default_directory(one))}:"
    try:
        assert a.remote.prefix == b.remote.prefix == prefix
        _until(lambda: _serving(a) and _serving(b))
        assert b.get_or_set("k", lambda: "old") == "old"
        assert b.get_or_set("k", lambda: "never") == "old"  # b's L1
        a.invalidate(["k"])
        assert b.get_or_set("k", lambda: "new") == "new"
    finally:
        a.close()
        b.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        one.close_all()
        other.close_all()


@pytest.mark.parametrize("url", ["localhost:6379", "http://127.0.0.1:6379/0",
                                 "redis://127.0.0.1:port/0", "unix://"])
def test_a_malformed_redis_url_is_a_one_line_error_naming_where_it_came_from(
        tmp_path, monkeypatch, url):
    import embeddb
    from embeddb.errors import ConfigurationError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_REDIS_URL", raising=False)
    hint = "use redis://HOST:PORT/DB, rediss://HOST:PORT/DB or unix://PATH"
    with pytest.raises(ConfigurationError) as caught:
        Cache(tmp_path / "c", redis_url=url)
    assert str(caught.value) == f"redis_url {url!r} is not a Redis URL: {hint}"
    monkeypatch.setenv("EMBEDDB_REDIS_URL", url)
    with pytest.raises(ConfigurationError) as caught:  # at connect, not after a first write
        embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    assert str(caught.value) == (f"$EMBEDDB_REDIS_URL {url!r} is not a Redis URL: {hint} "
                                 "(set it empty for no Redis tier)")
    assert not (tmp_path / "app.db").exists()
    monkeypatch.delenv("EMBEDDB_REDIS_URL")
    (tmp_path / "embeddb.toml").write_text(f'[cache]\nredis_url = "{url}"\n')
    with pytest.raises(ConfigurationError) as caught:
        embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    assert str(caught.value) == (f"{tmp_path / 'embeddb.toml'}: [cache] redis_url {url!r} is "
                                 f"not a Redis URL: {hint}")


def test_a_redis_url_without_redis_py_is_a_one_line_error_at_connect(tmp_path):
    """Without the error at connect(), a repository write with no cache of its own would
    commit, then fail to open the Redis tier."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.modules["redis"] = None  # as if redis-py were not installed
        import embeddb
        from embeddb.cache import Cache
        from embeddb.errors import ConfigurationError
        try:
            Cache({str(tmp_path / 'c')!r}, redis_url="redis://127.0.0.1:6379/0")
        except ConfigurationError as exc:
            print(exc)
        os.environ["EMBEDDB_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        try:
            embeddb.connect({f"sqlite:///{tmp_path / 'app.db'}"!r})
        except ConfigurationError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.splitlines() == [
        "redis_url 'redis://127.0.0.1:6379/0' needs redis-py, which is not installed: pip "
        "install 'embeddb[redis]'",
        "$EMBEDDB_REDIS_URL 'redis://127.0.0.1:6379/0' needs redis-py, which is not installed: "
        "pip install 'embeddb[redis]' (set it empty for no Redis tier)"]
    assert not (tmp_path / "app.db").exists()


def test_a_redis_url_error_hides_the_password(tmp_path):
    from embeddb.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Cache(tmp_path / "c", redis_url="redis://app:s3cret@127.0.0.1:port/0")
    assert "s3cret" not in str(caught.value) and "app:***@" in str(caught.value)


# -- faults: a private redis-server -------------------------------------------------------------


def _pair(tmp_path, url: str):
    a = Cache(tmp_path / "a", redis_url=url, redis_prefix="p:")
    b = Cache(tmp_path / "b", redis_url=url, redis_prefix="p:")
    _until(lambda: _serving(a) and _serving(b))
    return a, b


def test_a_dead_redis_fails_no_read_and_no_write(tmp_path, private_redis):
    a, b = _pair(tmp_path, private_redis.url)
    try:
        assert b.get_or_set("k", lambda: "old") == "old"
        private_redis.kill()
        a.invalidate(["k"])  # does not raise; owed to Redis
        a.set("s", 1)
        _until(lambda: not _serving(b))
        assert b.get_or_set("k", lambda: "from the loader") == "from the loader"
        assert b.get("k", "default") == "default"
        assert b.stats()["redis"]["errors"] >= 1
        assert a.remote.owed
    finally:
        a.close()
        b.close()


def test_a_cached_row_is_not_served_once_the_redis_lease_ran_out(tmp_path, private_redis):
    import peewee

    import embeddb
    from embeddb.models import BaseModel

    class Part(BaseModel):
        name = peewee.TextField()

    db = embeddb.connect(f"sqlite:///{tmp_path / 'parts.db'}")
    db.bind([Part])
    db.create_tables([Part])
    cache = Cache(tmp_path / "a", db=db, redis_url=private_redis.url, redis_prefix="p:")
    try:
        _until(lambda: _serving(cache))
        part = Part.create(name="old")
        for _ in range(3):  # in L1 and verified: Cache.get_row's fast path serves it
            assert cache.get_row(Part, part.id)["name"] == "old"
        private_redis.kill()
        _until(lambda: not _serving(cache))
        # Written on another machine; its bump went to a Redis this machine no longer hears.
        Part.update(name="new").where(Part.id == part.id).execute()
        assert cache.get_row(Part, part.id)["name"] == "new"
    finally:
        cache.close()
        db.close()


def test_a_subscriber_cut_off_silently_is_waited_for_until_its_lease_ends(tmp_path,
                                                                           private_redis):
    import redis

    a = Cache(tmp_path / "a", redis_url=private_redis.url, redis_prefix="p:")
    reader = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from embeddb.cache import Cache
            c = Cache({str(tmp_path / 'r')!r}, redis_url={private_redis.url!r}, redis_prefix="p:")
            while time.monotonic() >= c.remote.serving_until:
                time.sleep(0.01)
            c.get_or_set("k", lambda: "old")
            print(c.remote.listener._pubsub.connection._sock.getsockname()[1], flush=True)
            sys.stdin.readline()
            print(c.get_or_set("k", lambda: "new"), flush=True)
            c.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    admin = redis.Redis.from_url(private_redis.url)
    try:
        port = int(reader.stdout.readline())
        _until(lambda: _serving(a))
        os.kill(reader.pid, signal.SIGSTOP)
        _until(lambda: _state(reader.pid) == "T")
        # Its subscription is gone, and it does not know: the bump does not reach it.
        assert admin.client_kill_filter(_type="pubsub", addr=f"127.0.0.1:{port}") == 1
        start = time.monotonic()
        a.invalidate(["k"])
        waited = time.monotonic() - start
        os.kill(reader.pid, signal.SIGCONT)
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "new"
        assert 0 < waited < LEASE + 1.0
        assert a.stats()["redis"]["ack_timeouts"] == 1  # waited out the reader's lease
    finally:
        reader.kill()
        reader.wait()
        admin.close()
        a.close()


def test_a_paused_redis_times_out_into_the_loader(tmp_path, private_redis):
    a, b = _pair(tmp_path, private_redis.url)
    try:
        b.get_or_set("k", lambda: "old")
        private_redis.pause()
        start = time.monotonic()
        assert a.get_or_set("fresh", lambda: "loaded") == "loaded"  # Redis read times out
        assert time.monotonic() - start < 2.0
        a.invalidate(["k"])  # the bump times out: owed
        _until(lambda: not _serving(b), timeout=LEASE + 2)
        assert b.get_or_set("k", lambda: "new") == "new"
        private_redis.resume()
        _until(lambda: _serving(a) and _serving(b))
        assert b.get_or_set("k", lambda: "newer") in ("new", "newer")
        assert a.stats()["redis"]["errors"] >= 1
    finally:
        private_redis.resume()
        a.close()
        b.close()


def test_after_a_reconnect_no_entry_that_may_have_missed_a_bump_is_served(tmp_path,
                                                                           private_redis):
    a, b = _pair(tmp_path, private_redis.url)
    try:
        b.get_or_set("k", lambda: "cached before the outage")
        assert b.get_or_set("k", lambda: "reloaded") == "cached before the outage"
        private_redis.kill()
        private_redis.start()  # empty: whatever was bumped meanwhile is unknown
        _until(lambda: b.stats()["redis"]["reconnects"] >= 1 and _serving(b))
        assert b.get_or_set("k", lambda: "reloaded") == "reloaded"
    finally:
        a.close()
        b.close()


def test_a_bump_owed_during_an_outage_reaches_every_machine(tmp_path, private_redis):
    """Only the writer loses Redis (its user is disabled and its connections cut), so Redis keeps
    its counters and the reader keeps its lease and its entry: nothing but the owed bump, settled
    when the writer is let back in, can tell the reader of the write."""
    import redis

    admin = redis.Redis.from_url(private_redis.url)
    admin.execute_command("ACL", "SETUSER", "writer", "on", ">secret", "~*", "&*", "+@all")
    writer_url = private_redis.url.replace("redis://", "redis://writer:secret@")
    a = Cache(tmp_path / "a", redis_url=writer_url, redis_prefix="p:")
    b = Cache(tmp_path / "b", redis_url=private_redis.url, redis_prefix="p:")
    try:
        _until(lambda: _serving(a) and _serving(b))
        assert b.get_or_set("k", lambda: "old") == "old"
        admin.execute_command("ACL", "SETUSER", "writer", "off")
        admin.client_kill_filter(user="writer")
        _until(lambda: not _serving(a))
        a.invalidate(["k"])
        assert a.remote.owed
        admin.execute_command("ACL", "SETUSER", "writer", "on")
        _until(lambda: not a.remote.owed and _serving(a))
        assert b.get_or_set("k", lambda: "new") == "new"
    finally:
        a.close()
        b.close()
        admin.close()


# -- freshness across processes: PostgreSQL + Redis, nothing else shared -------------------------

_ROLE = textwrap.dedent("""
    import json, sys, time
    import redis
    import embeddb
    from embeddb.cache import Cache

    role, pg_url, redis_url, prefix, directory, seconds = sys.argv[1:7]
    db = embeddb.connect(pg_url)
    cache = Cache(directory, db=db, redis_url=redis_url, redis_prefix=prefix)
    r = redis.Redis.from_url(redis_url)
    marker = prefix + "committed"

    def load():
        return db.execute_sql("SELECT v FROM fresh WHERE id = 1").fetchone()[0]

    if role == "writer":
        while int(r.get(prefix + "ready") or 0) < 2:
            time.sleep(0.01)
        writes, end = 0, time.monotonic() + float(seconds)
        while time.monotonic() < end:
            writes += 1
            with db.atomic():
                db.execute_sql("UPDATE fresh SET v = %s WHERE id = 1", (writes,))
                cache.invalidate_after_commit(db, ["row"])
            r.set(marker, writes)  # the transaction has returned
        r.set(prefix + "done", 1)
        print(json.dumps({"writes": writes, "redis": cache.stats()["redis"]}))
    else:
        r.incr(prefix + "ready")
        reads = stale = 0
        while not r.exists(prefix + "done"):
            committed = int(r.get(marker) or 0)
            value = cache.get_or_set("row", load)
            reads += 1
            if value < committed:
                stale += 1
        s = cache.stats()
        print(json.dumps({"reads": reads, "stale": stale, "l1_hits": s["l1"]["hits"],
                          "redis_hits": s["redis"]["hits"]}))
    cache.close()
""")


@pytest.mark.postgres
@pytest.mark.slow
def test_no_process_serves_a_value_older_than_a_returned_write(tmp_path, pg_schema_url,
                                                                redis_url, redis_prefix):
    import embeddb

    db = embeddb.connect(pg_schema_url)
    db.execute_sql("CREATE TABLE fresh (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    db.execute_sql("INSERT INTO fresh VALUES (1, 0)")
    db.close_all()
    script = tmp_path / "role.py"
    script.write_text(_ROLE)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def spawn(role: str, directory: str):
        return subprocess.Popen(
            [sys.executable, str(script), role, pg_schema_url, redis_url, redis_prefix,
             str(tmp_path / directory), "2.5"],
            stdout=subprocess.PIPE, text=True, env=env,
        )

    procs = [spawn("reader", "r1"), spawn("reader", "r2"), spawn("writer", "w")]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    *readers, writer = outputs
    assert writer["writes"] >= 20, writer
    for reader in readers:
        assert reader["stale"] == 0, readers
        assert reader["reads"] > writer["writes"], readers
        assert reader["l1_hits"] > 0, readers  # the readers did read from their cache


_CACHELESS_WRITER = textwrap.dedent("""
    import sys
    import peewee
    import embeddb
    from embeddb.cache import tiered
    from embeddb.models import BaseModel
    from embeddb.repository import Repository

    class Note(BaseModel):
        body = peewee.TextField()

    db = embeddb.connect(sys.argv[1])
    db.bind([Note])
    Repository(Note, db).update(sys.argv[2], body=sys.argv[3])
    print(tiered.registered(db) is not None)
""")


@pytest.mark.postgres
def test_a_writer_with_no_cache_on_its_machine_invalidates_other_machines(
        tmp_path, pg_schema_url, redis_url, monkeypatch):
    """Machine B writes through a repository with no cache and nothing cached on B; machine A
    caches the row with the Redis tier. B's write must reach A before it returns."""
    import peewee
    import redis

    import embeddb
    from embeddb.cache import placement
    from embeddb.models import BaseModel
    from embeddb.repository import Repository

    class Note(BaseModel):
        body = peewee.TextField()

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "machine-a"))
    db = embeddb.connect(pg_schema_url)
    db.bind([Note])
    db.create_tables([Note])
    note = Repository(Note, db).create(body="old")
    cache = Cache.for_database(db, redis_url=redis_url)
    prefix = f"embeddb:{os.path.basename(placement.default_directory(db))}:"
    try:
        reader = Repository(Note, db, cache=cache)
        assert reader.get(note.id).body == "old"
        assert reader.get(note.id).body == "old" and cache.stats()["l1"]["hits"] == 1
        script = tmp_path / "writer.py"
        script.write_text(_CACHELESS_WRITER)
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "EMBEDDB_REDIS_URL": redis_url,
               "XDG_CACHE_HOME": str(tmp_path / "machine-b")}
        out = subprocess.run([sys.executable, str(script), pg_schema_url, str(note.id), "new"],
                             capture_output=True, text=True, env=env, timeout=60, check=True)
        assert out.stdout.strip() == "True", out.stderr  # the writer opened its cache
        assert reader.get(note.id).body == "new"  # at once: the write returned after A applied it
    finally:
        cache.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        db.close_all()
