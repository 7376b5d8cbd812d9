"""The Redis tier: a Redis hit vs a raw redis-py GET of the same bytes with the same decoding,
and vs an uncached PostgreSQL get; invalidation latency from commit to another process seeing it.

Targets (issue 15): Redis hit <= 1.5x the raw GET. The value is the row dict the cache returns
for a model (UUID id, aware UTC datetimes, text, int). The raw side GETs the very payload the
cache's script returns, stored under a key of its own, and decodes it with the same codec: what
an app doing its own Redis caching of the row would pay. The cache's side also checks the
entry's generation counters in Redis (one Lua script, one round trip).

Invalidation: a second process (its own cache directory: another machine) holds the row in L1;
this one commits an update and invalidates after the commit; the time from the end of COMMIT
until the other process's counters moved is ``seen``; until this process's ``with atomic()``
returned (the commit plus every subscriber's acknowledgement) is ``returned``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import peewee

import embeddb
from benchmarks.harness import per_op, percentiles, pg_scratch_schema, pg_url, report, size
from embeddb.cache import Cache, CacheInvalidation, codec
from embeddb.ids import new_id
from embeddb.models import BaseModel
from embeddb.repository import Repository

LOOKUPS = size(5_000, 1_000)
ROUNDS = size(500, 100)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Thing(CacheInvalidation, BaseModel):
    name = peewee.TextField()
    qty = peewee.IntegerField()


_WATCHER = textwrap.dedent("""
    import sys, time
    from embeddb.cache import Cache
    from embeddb.cache.generations import WRITES
    directory, url, prefix = sys.argv[1:4]
    cache = Cache(directory, redis_url=url, redis_prefix=prefix)
    while time.monotonic() >= cache.remote.serving_until:
        time.sleep(0.01)
    counters = cache.generations.counters
    print("ready", flush=True)
    seen = counters[WRITES]
    while sys.stdin.readline():  # one line per round: report when the counters move
        while counters[WRITES] == seen:
            time.sleep(0)  # let the listener thread have the GIL
        seen = counters[WRITES]
        print(time.monotonic_ns(), flush=True)
    cache.close()
""")


def _redis_url() -> str | None:
    url = os.environ.get("EMBEDDB_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure is a reason to skip
        print(f"# skipping: Redis not reachable at {url} ({exc})", file=sys.stderr)
        return None
    return url


def main() -> None:
    url = _redis_url()
    pg = pg_url()
    if url is None or pg is None:
        return
    import redis

    prefix = f"embeddb-bench:{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(url)
    schema_url, drop = pg_scratch_schema(pg)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _run(Path(tmp), url, prefix, schema_url, client)
    finally:
        drop()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _run(tmp: Path, url: str, prefix: str, schema_url: str, client: Any) -> None:
    db = embeddb.connect(schema_url)
    db.bind([Thing])
    db.create_tables([Thing])
    pk = new_id()
    Thing.create(id=pk, name="thing-1", qty=1)
    repo = Repository(Thing, db)
    writer = Cache(tmp / "writer", db=db, redis_url=url, redis_prefix=prefix)
    row = writer.get_row(Thing, pk)  # the row as a dict: UUID, UTC datetimes, text, int
    key = f"thing:{pk.hex}"
    writer.set(key, row)
    # No L1, no L2: every read is a Redis hit (get() does not keep it locally).
    redis_only = Cache(None, l1_size=0, redis_url=url, redis_prefix=prefix)
    assert redis_only.get(key) == row, "the Redis tier does not hold the row"

    full = redis_only._key(key, None)
    stored = client.get(prefix + full)
    payload = stored[stored.index(b";") + 1:]  # what the cache decodes, without its header
    raw_key = prefix + "raw:" + key
    client.set(raw_key, payload)

    def raw_get() -> Any:
        return codec.loads(client.get(raw_key))[2]

    assert raw_get() == row
    hit_us, raw_us = _interleaved(lambda: redis_only.get(key), raw_get)
    pg_us = per_op(lambda: repo.get(pk), LOOKUPS // 5) * 1e6
    hits = redis_only.stats()["redis"]
    report("cache Redis hit vs redis-py GET + same decoding", "us/op", hit_us, raw_us,
           target="<=1.5", redis_p50_us=hits["p50_us"], redis_p99_us=hits["p99_us"])
    report("cache Redis hit vs uncached PostgreSQL repository get", "us/op", hit_us, pg_us)
    _invalidation(tmp, url, prefix, db, writer, key)
    _delivery(url, prefix)
    redis_only.close()
    writer.close()
    db.close_all()


def _interleaved(ours: Any, raw: Any, rounds: int = 11) -> tuple[float, float]:
    """Median µs per call of each, measured in alternating rounds: a loaded machine (or Redis
    server) then slows both sides alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(per_op(ours, LOOKUPS // 10, repeat=1))
        b.append(per_op(raw, LOOKUPS // 10, repeat=1))
    return statistics.median(a) * 1e6, statistics.median(b) * 1e6


def _invalidation(tmp: Path, url: str, prefix: str, db: Any, writer: Cache, key: str) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(tmp / "watcher"), url, prefix],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert watcher.stdout.readline().strip() == "ready"
        seen, returned, plain = [], [], []
        committed: list[int] = []
        for n in range(ROUNDS):
            committed.clear()
            watcher.stdin.write("\n")
            watcher.stdin.flush()
            with db.atomic():
                db.execute_sql("UPDATE thing SET qty = %s", (n,))
                db.after_commit(lambda: committed.append(time.monotonic_ns()))
                writer.invalidate_after_commit(db, [key])
            done = time.monotonic_ns()
            seen.append((int(watcher.stdout.readline()) - committed[0]) / 1000)
            returned.append((done - committed[0]) / 1000)
            start = time.monotonic_ns()
            with db.atomic():
                db.execute_sql("UPDATE thing SET qty = %s", (n,))
            plain.append((time.monotonic_ns() - start) / 1000)
        s, r, p = percentiles(seen), percentiles(returned), percentiles(plain)
        report(
            "invalidation commit -> other process sees it", "us", s["p50"], p["p50"],
            seen_p99_us=round(s["p99"], 1), returned_p50_us=round(r["p50"], 1),
            returned_p99_us=round(r["p99"], 1), commit_only_p50_us=round(p["p50"], 1),
            commit_only_p99_us=round(p["p99"], 1),
        )
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=10)


def _delivery(url: str, prefix: str) -> None:
    """Why pub/sub: how fast each push mechanism tells another connection of a change, bare
    (no acknowledgement, no cache): PUBLISH -> the subscriber's message, against INCR of a
    counter key -> the RESP3 client-side-tracking invalidation push (BCAST on the prefix).
    Tracking's push has no public reader in redis-py: its parser's push handler is used."""
    import redis

    writer = redis.Redis.from_url(url, protocol=3)
    pubsub = redis.Redis.from_url(url, protocol=3).pubsub()
    pubsub.subscribe(prefix + "delivery")
    while pubsub.get_message(timeout=1)["type"] != "subscribe":
        pass
    published = []
    for n in range(ROUNDS):
        start = time.perf_counter_ns()
        writer.publish(prefix + "delivery", n)
        while (message := pubsub.get_message(timeout=1)) is None or message["type"] != "message":
            pass
        published.append((time.perf_counter_ns() - start) / 1000)
    tracker = redis.Redis.from_url(url, protocol=3).connection_pool.get_connection()
    pushed: list[int] = []
    tracker._parser.set_invalidation_push_handler(lambda _: pushed.append(time.perf_counter_ns()))
    tracker.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", prefix + "tracked:")
    tracker.read_response()
    tracked = []
    for _ in range(ROUNDS):
        pushed.clear()
        start = time.perf_counter_ns()
        writer.incr(prefix + "tracked:g")
        while not pushed:
            if tracker.can_read(timeout=1):
                tracker.read_response(push_request=True)
        tracked.append((pushed[0] - start) / 1000)
    p, t = percentiles(published), percentiles(tracked)
    report("push delivery: pub/sub vs RESP3 client-side tracking", "us", p["p50"], t["p50"],
           pubsub_p99_us=round(p["p99"], 1), tracking_p99_us=round(t["p99"], 1))
    pubsub.close()
    tracker.disconnect()
    writer.close()


if __name__ == "__main__":
    main()
