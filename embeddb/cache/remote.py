"""The shared tier: Redis above L1 and L2, and the generation counters every machine sees.

Entries live under ``<prefix><key>`` as ``"<token>,<expiry ms>,<slot>,...;"`` followed by the
codec's bytes, written with the family TTL; the counter of slot ``n`` is ``<prefix>g:<n>``. A
hit is one MGET of the entry and its counters (no Lua on the read path: EVALSHA cost ~21 µs of
server time per call here, a GET or MGET ~1 µs), valid while the counters add up to its token.

Invalidation crosses machines through pub/sub, with an acknowledgement: a bump increments the
counters and publishes the slots in one script; every subscribed process bumps its machine's
local counters (which L1 and L2 check) and acknowledges. A process serves L1/L2 only while its
*lease* holds: until :data:`LEASE` seconds after sending a PING whose PONG came back on the
subscription (so every bump published before that PING had been applied). Before each PING it
renews its lease in ``<prefix>listeners`` (a sorted set scored by the lease's end in Redis's
clock, which ends no sooner than the process's own count). A writer returns once every listener
with a live lease acknowledged or its lease ended: a process that is slow, stuck, or whose
subscription broke without its knowing (it is then not told of the bump at all) has stopped
serving its local tiers by then. Why pub/sub and not RESP3 client-side tracking: tracking
reports changes to Redis keys a client read, while L1/L2 check counter slots, and its messages
cannot be acknowledged; a published bump can, which is what the writer waits for.

Redis trouble is never an error for the caller: a failed command is counted under ``errors``
and the read goes to the loader; a process whose subscription broke serves no L1/L2 entry (the
cache then reads from loaders) until it has resubscribed and checked the counters: the machine's
counter file remembers up to which Redis bump (and of which Redis incarnation) it is complete;
unless that is Redis's current write count, the machine's local epoch is bumped, so no entry
that might have missed an invalidation is served (a process joining a machine whose other
processes have been listening drops nothing). A bump that could
not reach Redis is owed: the first reconnect bumps Redis's epoch (everything, everywhere).

Locks (stampede protection across machines): on a miss the reader takes ``<prefix>lock:<key>``
(``SET NX PX lock_timeout``) and loads; the others poll the entry until it appears or
``lock_timeout`` runs out, then load themselves. The value is stored by a script only if the
counters still add up to what they were before the load (an invalidation meanwhile wins).

Needs one Redis server (not a cluster: an MGET spans counters and entries) that never evicts
the counters (``noeviction`` or a ``volatile-*`` policy: counters have no TTL, entries do).
"""

from __future__ import annotations

import collections
import itertools
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import codec
from . import generations as gen
from .memory import MISSING
from .stats import LoadStats, TierStats

T = TypeVar("T")

#: seconds a process keeps serving L1/L2 after its last confirmed contact with Redis, and the
#: longest a write waits for a silent subscriber. Short enough that a dead reader delays writes
#: noticeably only in that rare case; long enough that a busy reader's GIL never loses its lease.
LEASE = 1.0
PING = LEASE / 5  # a PING every 200 ms keeps the lease renewed four times over
#: socket timeout of every command: a Redis that does not answer costs a read this much, once,
#: before the read goes to the loader (a local round trip is ~50 µs).
TIMEOUT = 0.25
ACK_TTL_MS = 10_000  # acknowledgement lists outlive any writer's wait
LATENCIES = 1024  # recent round trips kept for the p50/p99 in stats()
MAX_TTL = 10 * 365 * 86400.0  # what ttl=float("inf") means in Redis (which needs a number)

# KEYS: the entry, its lock, the counters of its slots. ARGV: the token the value was loaded
# under ('' = whatever the counters are now), TTL ms, lock id ('' = none), the payload, the
# expiry as a Unix time in ms, then the slots (for the header).
_STORE = """
local total = 0
for _, c in ipairs(redis.call('MGET', unpack(KEYS, 3))) do
  if c then total = total + tonumber(c) end
end
local stored = 0
if ARGV[1] == '' or tonumber(ARGV[1]) == total then
  local slots = {}
  for i = 6, #ARGV do slots[#slots + 1] = ARGV[i] end
  local head = string.format('%.0f', total) .. ',' .. ARGV[5] .. ',' .. table.concat(slots, ',')
  redis.call('SET', KEYS[1], head .. ';' .. ARGV[4], 'PX', ARGV[2])
  stored = 1
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return stored
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the write counter, the channel, the listeners, the counters to bump. ARGV: the bump
# id, their slots. Returns Redis's time (ms) and the listeners whose lease has not ended, with
# the time it ends.
_BUMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
for i = 4, #KEYS do redis.call('INCR', KEYS[i]) end
local writes = redis.call('INCR', KEYS[1])
local slots = {}
for i = 2, #ARGV do slots[#slots + 1] = ARGV[i] end
redis.call('PUBLISH', KEYS[2], ARGV[1] .. ' ' .. writes .. ' ' .. table.concat(slots, ','))
return {now, redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf', 'WITHSCORES')}
"""

# KEYS: the listeners. ARGV: this listener, its lease in ms. Its lease, as Redis counts it, ends
# no sooner than the one the listener counts from before this call.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"""


@dataclass
class RemoteStats(TierStats):
    """The Redis tier's counters, plus acknowledgement waits that ran out and reconnects."""

    ack_timeouts: int = 0  # writes that waited LEASE for a subscriber that never acknowledged
    reconnects: int = 0
    resyncs: int = 0  # (re)subscriptions that found bumps possibly missed: local entries dropped

    def __post_init__(self) -> None:
        self.latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES)

    def as_dict(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        p50 = ordered[len(ordered) // 2] if ordered else 0.0
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
        return {**super().as_dict(), "p50_us": round(p50, 1), "p99_us": round(p99, 1)}

    def reset(self) -> None:
        super().reset()
        self.latencies.clear()


class RemoteTier:
    """Redis at ``url`` as the shared tier of ``cache`` (keys under ``prefix``).

    Never raises for Redis trouble, including at construction: an unreachable server means
    the cache reads from loaders until it answers.

    :raises ImportError: redis-py is not installed (``pip install 'embeddb[redis]'``).
    """

    def __init__(self, url: str, prefix: str, cache: Any, lock_timeout: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        options: dict[str, Any] = {
            "socket_connect_timeout": TIMEOUT,
            "retry": Retry(NoBackoff(), 0),  # a retry is the caller's loader, not a second wait
        }
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, **options)
        # Blocking waits (acknowledgements) need a socket timeout longer than the wait.
        self._waiter = redis.Redis.from_url(url, socket_timeout=LEASE + TIMEOUT, **options)
        self._no_script = redis.exceptions.NoScriptError
        self._sources: dict[str, str] = {}
        self._store_script, self._release_script, self._bump_script, self._renew_script = (
            self._script(source) for source in (_STORE, _RELEASE, _BUMP, _RENEW)
        )
        self._channel = prefix + "bumps"
        self._listeners = prefix + "listeners"
        self._names = _CounterNames(prefix)
        self.origin = secrets.token_hex(8)
        self.lock_ms = max(1, int(lock_timeout * 1000))
        self.lock_timeout = lock_timeout
        self.stats = RemoteStats()
        self.serving_until = 0.0  # monotonic time the lease ends; 0: not serving L1/L2
        self.owed = False  # a bump never reached Redis: bump its epoch on reconnect
        self._cache = weakref.ref(cache)
        self._incarnation = 0
        self._pubsub: Any = None
        self._closed = threading.Event()
        self._sequence = itertools.count(1)  # next() is atomic: ids unique across threads
        self._connected = threading.Event()
        self._start()
        # Give the first connection a moment so a fresh cache does not start on loaders only.
        self._connected.wait(TIMEOUT * 2)

    def _counter(self, slot: int) -> str:
        return self._names[slot]

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, full: str, slots: tuple[int, ...]) -> tuple[Any, float, tuple[int, ...]] | Any:
        """``(value, seconds left, slots)`` of a live entry, else MISSING (a failure counts).

        ``slots``: those known to the caller; an entry's others (its tags) cost a second trip.
        """
        try:
            found, _ = self._read(full, slots)
        except self._errors:
            self.stats.errors += 1
            return MISSING
        return found

    def fetch(
        self,
        full: str,
        slots: tuple[int, ...],
        ttl: float,
        loader: Callable[[], T],
        loads: LoadStats,
        on_wait: Callable[[], None],
    ) -> tuple[T, float]:
        """The entry's value, or ``loader()``'s under the key's Redis lock, stored in Redis.

        Returns the value and how long the local tiers may keep it.
        """
        lock = self.prefix + "lock:" + full
        lock_id = f"{self.origin}:{next(self._sequence)}"
        deadline = 0.0
        pause = 0.001
        while True:
            try:
                found, token = self._read(full, slots)
                if found is not MISSING:
                    return found[0], min(ttl, found[1])
                if self.client.set(lock, lock_id, nx=True, px=self.lock_ms):
                    break
            except self._errors:
                self.stats.errors += 1
                loads.loads += 1
                return loader(), ttl
            now = time.monotonic()
            if not deadline:
                deadline = now + self.lock_timeout
                on_wait()
            elif now >= deadline:
                self.stats.errors += 1  # the holder is slow: load without protection
                lock_id = ""
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        loads.loads += 1
        try:
            value = loader()
        except BaseException:
            if lock_id:
                self._release(lock, lock_id)
            raise
        self._put(full, value, ttl, slots, str(token), lock, lock_id)
        return value, ttl

    def _read(self, full: str, slots: tuple[int, ...]) -> tuple[Any, int]:
        """One MGET of the entry and the counters of ``slots``: ``(found, their sum now)``,
        ``found`` being ``(value, seconds left, slots)`` or MISSING.

        Not atomic, and it need not be: counters only grow, so an entry whose token still
        equals its counters' sum when they are read after it was not invalidated before then.
        """
        start = time.perf_counter()
        names = self._names
        reply: list[Any] = self.client.mget([self.prefix + full, *[names[s] for s in slots]])
        total = 0
        for count in reply[1:]:
            if count is not None:
                total += int(count)
        data = reply[0]
        stats = self.stats
        if data is None:
            stats.latencies.append((time.perf_counter() - start) * 1e6)
            stats.misses += 1
            return MISSING, total
        try:
            head = data.index(b";")
            fields = data[:head].split(b",")
            entry_slots = tuple(map(int, fields[2:]))
            current = total if entry_slots == slots else self._sum(entry_slots, slots, reply)
            stats.latencies.append((time.perf_counter() - start) * 1e6)
            if current != int(fields[0]):
                stats.stale += 1
                stats.misses += 1
                return MISSING, total
            value = codec.loads(data[head + 1:])[2]
        except self._errors:
            raise
        except Exception:  # noqa: BLE001 - an entry that does not parse or decode is corrupt
            stats.errors += 1
            stats.misses += 1
            self._drop(full)
            return MISSING, total
        stats.hits += 1
        left = max(0.0, int(fields[1]) / 1000 - time.time())
        return (value, left, entry_slots), total

    def _sum(self, entry_slots: tuple[int, ...], known: tuple[int, ...], reply: list[Any]) -> int:
        """The sum of ``entry_slots``' counters; those not in ``known`` (an entry's tags, which
        a cache-aside get() does not know) cost a second round trip."""
        counts = {s: int(c or 0) for s, c in zip(known, reply[1:])}
        missing = [s for s in entry_slots if s not in counts]
        if missing:
            more = self.client.mget([self._names[s] for s in missing])
            counts.update((s, int(c or 0)) for s, c in zip(missing, more))
        return sum(counts[s] for s in entry_slots)

    # -- writes ---------------------------------------------------------------------------------

    def store(self, full: str, value: Any, ttl: float, slots: tuple[int, ...]) -> None:
        """Write ``value`` through to Redis, valid against Redis's counters as they are now."""
        self._put(full, value, ttl, slots, "", "", "")

    def _put(
        self,
        full: str,
        value: Any,
        ttl: float,
        slots: tuple[int, ...],
        token: str,
        lock: str,
        lock_id: str,
    ) -> None:
        ttl_ms = int(min(ttl, MAX_TTL) * 1000)
        if ttl_ms <= 0:
            if lock_id:
                self._release(lock, lock_id)
            return
        expire_ms = int(time.time() * 1000) + ttl_ms
        keys = [self.prefix + full, lock or self.prefix + "lock:", *map(self._counter, slots)]
        args = [token, ttl_ms, lock_id, codec.dumps(slots, 0, value), expire_ms, *slots]
        try:
            stored = self._run(self._store_script, keys, args)
        except self._errors:
            self.stats.errors += 1
            return
        if stored:
            self.stats.sets += 1

    def _release(self, lock: str, lock_id: str) -> None:
        try:
            self._run(self._release_script, [lock], [lock_id])
        except self._errors:
            self.stats.errors += 1  # the lock expires by itself

    def _drop(self, full: str) -> None:
        try:
            self.client.delete(self.prefix + full)
        except self._errors:
            self.stats.errors += 1

    def bump(self, slots: Iterable[int], acks_from_others_only: bool = False) -> None:
        """Advance ``slots`` in Redis and tell every listening process; return once each has
        applied it to its machine's counters, or its lease ended (at most :data:`LEASE` s). A
        failure is counted and owed (settled by the next subscription)."""
        slots = sorted(set(slots))
        bump_id = f"{self.origin}:{next(self._sequence)}"
        keys = [self._counter(gen.WRITES), self._channel, self._listeners,
                *map(self._counter, slots)]
        try:
            now_ms, live = self._run(self._bump_script, keys, [bump_id, *slots])
            start = time.monotonic()  # no earlier than Redis's now_ms
            leases = {live[i].decode(): int(live[i + 1]) for i in range(0, len(live), 2)}
            if acks_from_others_only:  # the listener settling an owed bump cannot answer yet
                leases.pop(self.origin, None)
            self._await_acks(bump_id, leases, start, int(now_ms))
        except self._errors:
            self.stats.errors += 1
            self.owed = True

    def _await_acks(self, bump_id: str, leases: dict[str, int], start: float, now_ms: int) -> None:
        """Wait until every listener in ``leases`` (origin -> end of its lease, Redis time in ms)
        acknowledged, or its lease ended: one that did neither may still serve old entries.

        A listener whose subscription silently broke is not told, but its lease runs out."""
        key = self.prefix + "ack:" + bump_id
        while leases:
            until = start + min(LEASE, max(0, max(leases.values()) - now_ms) / 1000)
            left = until - time.monotonic()
            reply = self._waiter.blpop([key], timeout=left) if left >= 0.001 else None
            if reply is None:
                self.stats.ack_timeouts += 1
                return
            leases.pop(reply[1].decode(), None)

    def _script(self, source: str) -> str:
        import hashlib

        sha = hashlib.sha1(source.encode()).hexdigest()
        self._sources[sha] = source
        return sha

    def _run(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if this server does not know it (a restart)."""
        try:
            return self.client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:
            self.client.script_load(self._sources[sha])
            return self.client.evalsha(sha, len(keys), *keys, *args)

    # -- the subscription -----------------------------------------------------------------------

    def _start(self) -> None:
        self.serving_until = 0.0
        self._thread = threading.Thread(
            target=self._listen, name=f"embeddb-cache-redis-{self.origin}", daemon=True
        )
        self._thread.start()

    def _listen(self) -> None:
        pause = 0.02
        while not self._closed.is_set():
            try:
                self._subscribe()
                pause = 0.02
                self._serve()
            except self._errors:
                pass
            except Exception:  # noqa: BLE001 - a malformed message or reply: start over
                self.stats.errors += 1
            self.serving_until = 0.0
            self._close_pubsub()
            if self._closed.wait(pause):
                return
            pause = min(pause * 2, 0.5)
            self.stats.reconnects += 1

    def _subscribe(self) -> None:
        pubsub = self.client.pubsub()
        self._pubsub = pubsub
        pubsub.subscribe(self._channel)
        while True:  # subscribed before the counters are read: no bump falls in between
            message = pubsub.get_message(timeout=TIMEOUT)
            if message is None:
                raise OSError("no subscription confirmation from Redis")
            if message["type"] == "subscribe":
                break
        # A fresh (or emptied) Redis gets a random epoch and incarnation, so no entry checked
        # against an earlier one validates again.
        self.client.setnx(self._counter(gen.EPOCH), secrets.randbits(40))
        self.client.setnx(self.prefix + "incarnation", secrets.randbits(40))
        incarnation: Any
        writes: Any
        incarnation, writes = self.client.mget(
            [self.prefix + "incarnation", self._counter(gen.WRITES)])
        self._incarnation = int(incarnation)
        self._follow(int(writes or 0))
        if self.owed:
            self.owed = False
            self.bump([gen.EPOCH], acks_from_others_only=True)

    def _serve(self) -> None:
        pubsub = self._pubsub
        next_ping = 0.0
        last_pong = time.monotonic()
        while not self._closed.is_set():
            now = time.monotonic()
            if now >= next_ping:
                # Registered first: Redis's count of the lease then ends after this one's.
                self._run(self._renew_script, [self._listeners], [self.origin, int(LEASE * 1000)])
                pubsub.ping(repr(now))
                next_ping = now + PING
            message = pubsub.get_message(timeout=PING / 2)
            if message is None:
                if time.monotonic() >= self.serving_until and time.monotonic() - last_pong > LEASE:
                    # The lease lapsed: bumps may have been missed; check, as on a reconnect.
                    raise OSError("Redis stopped answering PING")
                if self.owed:
                    raise OSError("a bump is owed to Redis")  # settled by resubscribing
                continue
            kind = message["type"]
            if kind == "pong":
                sent = float(message["data"])
                last_pong = time.monotonic()
                self.serving_until = max(self.serving_until, sent + LEASE)
                self._connected.set()
            elif kind == "message":
                self._apply(message["data"])

    def _apply(self, data: bytes) -> None:
        # Our own bumps too: a Redis hit read just before our bump reached Redis may have been
        # stored locally with a token that already included our local bump.
        bump_id, writes, slots = data.decode().split(" ")
        cache = self._cache()
        gens = cache.generations if cache is not None else None
        if gens is not None and slots:
            try:
                gens.bump([int(s) for s in slots.split(",")], int(writes))
            except (OSError, ValueError):
                self.serving_until = 0.0  # cannot apply: stop serving local entries
                raise OSError("cannot apply a bump to the local counters") from None
        pipe = self.client.pipeline(transaction=False)
        key = self.prefix + "ack:" + bump_id
        pipe.rpush(key, self.origin)
        pipe.pexpire(key, ACK_TTL_MS)
        pipe.execute()

    def _follow(self, writes: int) -> None:
        """Drop this machine's entries unless its counters hold every bump up to ``writes``."""
        cache = self._cache()
        if cache is None or cache.generations is None:
            return
        try:
            if cache.generations.follow_remote(self._incarnation, writes):
                self.stats.resyncs += 1
                cache.l1.clear()
        except (OSError, ValueError):
            raise OSError("cannot bump the local epoch") from None

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - closing a broken connection has nothing to report
                pass

    def close(self) -> None:
        """Stop listening and release the connections (the cache then reads from loaders)."""
        self.serving_until = 0.0
        self._closed.set()
        self._thread.join(timeout=PING + TIMEOUT)
        self._close_pubsub()
        try:
            self.client.zrem(self._listeners, self.origin)  # writers need not wait for us
        except self._errors:
            pass  # the lease ends by itself
        for client in (self.client, self._waiter):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass
        _tiers.discard(self)


class _CounterNames(dict):
    """slot -> the Redis key of its counter, built once per slot."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, slot: int) -> str:
        name = self[slot] = f"{self.prefix}g:{slot}"
        return name


_tiers: weakref.WeakSet[RemoteTier] = weakref.WeakSet()


def _restart_listeners() -> None:
    """In a forked child: the parent's listener thread did not come along; until a new one has
    subscribed, the child must not trust its local tiers."""
    for tier in list(_tiers):
        if not tier._closed.is_set():
            tier.origin = secrets.token_hex(8)  # a listener of its own, acknowledging for itself
            tier._pubsub = None
            tier._start()


os.register_at_fork(after_in_child=_restart_listeners)


def open_remote(url: str, prefix: str, cache: Any, lock_timeout: float) -> RemoteTier:
    """The Redis tier for ``cache``; see :class:`RemoteTier`."""
    tier = RemoteTier(url, prefix, cache, lock_timeout)
    _tiers.add(tier)
    weakref.finalize(cache, tier.close)
    return tier
