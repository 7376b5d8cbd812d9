"""The shared tier: Redis above L1 and L2, and the generation counters every machine sees.

Entries live under ``<prefix><key>`` as ``"<token>,<expiry ms>,<slot>,...;"`` followed by the
codec's bytes, written with the family TTL; the counter of slot ``n`` is ``<prefix>g:<n>``. A
hit is one MGET of the entry and its counters (no Lua on the read path: EVALSHA cost ~21 µs of
server time per call here, a GET or MGET ~1 µs), valid while the counters add up to its token.

Invalidation crosses machines: a bump increments the counters in Redis and publishes the slots
in one script, then waits until every process listening (:mod:`embeddb.cache.listener`) has
applied it to its machine's counters, or its lease has ended. Redis trouble is never an error
for the caller: a failed command is counted under ``errors`` and the read goes to the loader; a
failed bump is owed and settled by the next subscription.

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
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import codec
from . import generations as gen
from .listener import LEASE, Listener
from .memory import MISSING
from .stats import LoadStats, TierStats

T = TypeVar("T")

#: socket timeout of every command: a Redis that does not answer costs a read this much, once,
#: before the read goes to the loader (a local round trip is ~50 µs).
TIMEOUT = 0.25
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

    :raises ImportError: redis-py is not installed (:func:`embeddb.config.check_redis_url`
        says so first, as a ConfigurationError, for the URLs a cache is given).
    """

    def __init__(self, url: str, prefix: str, cache: Any, lock_timeout: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
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
        self._store_script, self._release_script, self._bump_script = (
            self.script(source) for source in (_STORE, _RELEASE, _BUMP)
        )
        self.timeout = TIMEOUT
        self.channel = prefix + "bumps"
        self.listeners = prefix + "listeners"
        self._names = _CounterNames(prefix)
        self.origin = secrets.token_hex(8)
        self.lock_ms = max(1, int(lock_timeout * 1000))
        self.lock_timeout = lock_timeout
        self.stats = RemoteStats()
        self.serving_until = 0.0  # monotonic time the lease ends; 0: not serving L1/L2
        self.owed = False  # a bump never reached Redis: bump its epoch on reconnect
        self._sequence = itertools.count(1)  # next() is atomic: ids unique across threads
        self.listener = Listener(self, cache)
        self.listener.start()
        # Give the first connection a moment so a fresh cache does not start on loaders only.
        self.listener.connected.wait(TIMEOUT * 2)

    def counter(self, slot: int) -> str:
        return self._names[slot]

    # -- reads ----------------------------------------------------------------------------------

    def lookup(self, full: str, slots: tuple[int, ...]) -> tuple[Any, float, tuple[int, ...]] | Any:
        """``(value, seconds left, slots)`` of a live entry, else MISSING (a failure counts).

        ``slots``: those known to the caller; an entry's others (its tags) cost a second trip.
        """
        try:
            found, _ = self._read(full, slots)
        except self.errors:
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
            except self.errors:
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
        except self.errors:
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
        keys = [self.prefix + full, lock or self.prefix + "lock:", *map(self.counter, slots)]
        args = [token, ttl_ms, lock_id, codec.dumps(slots, 0, value), expire_ms, *slots]
        try:
            stored = self.run(self._store_script, keys, args)
        except self.errors:
            self.stats.errors += 1
            return
        if stored:
            self.stats.sets += 1

    def _release(self, lock: str, lock_id: str) -> None:
        try:
            self.run(self._release_script, [lock], [lock_id])
        except self.errors:
            self.stats.errors += 1  # the lock expires by itself

    def _drop(self, full: str) -> None:
        try:
            self.client.delete(self.prefix + full)
        except self.errors:
            self.stats.errors += 1

    def bump(self, slots: Iterable[int], acks_from_others_only: bool = False) -> None:
        """Advance ``slots`` in Redis and tell every listening process; return once each has
        applied it to its machine's counters, or its lease ended (at most :data:`LEASE` s). A
        failure is counted and owed (settled by the next subscription)."""
        slots = sorted(set(slots))
        bump_id = f"{self.origin}:{next(self._sequence)}"
        keys = [self.counter(gen.WRITES), self.channel, self.listeners,
                *map(self.counter, slots)]
        try:
            now_ms, live = self.run(self._bump_script, keys, [bump_id, *slots])
            start = time.monotonic()  # no earlier than Redis's now_ms
            leases = {live[i].decode(): int(live[i + 1]) for i in range(0, len(live), 2)}
            if acks_from_others_only:  # the listener settling an owed bump cannot answer yet
                leases.pop(self.origin, None)
            self._await_acks(bump_id, leases, start, int(now_ms))
        except self.errors:
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
            reply: Any = self._waiter.blpop([key], timeout=left) if left >= 0.001 else None
            if reply is None:
                self.stats.ack_timeouts += 1
                return
            leases.pop(reply[1].decode(), None)

    def script(self, source: str) -> str:
        import hashlib

        sha = hashlib.sha1(source.encode()).hexdigest()
        self._sources[sha] = source
        return sha

    def run(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script first if this server does not know it (a restart)."""
        try:
            return self.client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:
            self.client.script_load(self._sources[sha])
            return self.client.evalsha(sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Stop listening and release the connections (the cache then reads from loaders)."""
        self.listener.close()
        for client in (self.client, self._waiter):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection has nothing to report
                pass


class _CounterNames(dict):
    """slot -> the Redis key of its counter, built once per slot."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, slot: int) -> str:
        name = self[slot] = f"{self.prefix}g:{slot}"
        return name


def open_remote(url: str, prefix: str, cache: Any, lock_timeout: float) -> RemoteTier:
    """The Redis tier for ``cache``; see :class:`RemoteTier`."""
    tier = RemoteTier(url, prefix, cache, lock_timeout)
    weakref.finalize(cache, tier.close)
    return tier
