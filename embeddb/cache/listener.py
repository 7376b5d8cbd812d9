"""How one process hears of the Redis tier's invalidations, and its lease on its local tiers.

A thread per cache subscribes to ``<prefix>bumps``. Every published bump is applied to the
machine's counter file (which L1 and L2 check) and acknowledged on ``<prefix>ack:<bump id>``.
The process serves L1/L2 only while its *lease* holds: until :data:`LEASE` seconds after sending
a PING whose PONG came back on the subscription (so every bump published before that PING had
been applied). Before each PING it renews its lease in ``<prefix>listeners`` (a sorted set
scored by the lease's end in Redis's clock, which ends no sooner than the process's own count);
writers wait for every listener with a live lease (see :meth:`RemoteTier.bump`). So a process
that is slow, stuck, or whose subscription broke without its knowing (it is then not told of a
bump at all) has stopped serving its local tiers by the time a writer stops waiting for it.

Why pub/sub and not RESP3 client-side tracking: tracking reports changes to Redis keys a client
read, while L1/L2 check counter slots, and its messages cannot be acknowledged; a published bump
can, which is what the writer waits for (bench_redis measures both deliveries: the same order).

A broken subscription ends the lease at once (the cache then reads from loaders) and is retried
with a growing pause. On (re)subscribing, the machine's counter file says up to which Redis bump
(of which Redis incarnation) it is complete; unless that is Redis's current write count, the
local epoch is bumped, so no entry that might have missed an invalidation is served (a process
joining a machine whose other processes kept listening drops nothing). A bump that could not
reach Redis is owed: the next subscription bumps Redis's epoch (everything, everywhere).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
import weakref
from typing import Any

from . import generations as gen

#: seconds a process keeps serving L1/L2 after its last confirmed contact with Redis, and the
#: longest a write waits for a silent listener. Short enough that a dead reader delays writes
#: noticeably only in that rare case; long enough that a busy reader's GIL never loses its lease.
LEASE = 1.0
PING = LEASE / 5  # a PING every 200 ms keeps the lease renewed four times over
ACK_TTL_MS = 10_000  # acknowledgement lists outlive any writer's wait

# KEYS: the listeners. ARGV: this listener, its lease in ms.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
"""


class Listener:
    """The subscription of ``tier`` (a :class:`RemoteTier`) on behalf of ``cache``; it sets
    ``tier.serving_until`` (monotonic time the lease ends, 0 while it has none)."""

    def __init__(self, tier: Any, cache: Any) -> None:
        self.tier = tier
        self._cache = weakref.ref(cache)
        self._renew = tier.script(_RENEW)
        self._incarnation = 0
        self._pubsub: Any = None
        self._closed = threading.Event()
        self.connected = threading.Event()  # set at the first lease
        _listeners.add(self)

    def start(self) -> None:
        self.tier.serving_until = 0.0
        self._pubsub = None
        self._thread = threading.Thread(
            target=self._listen, name=f"embeddb-cache-redis-{self.tier.origin}", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _listen(self) -> None:
        tier = self.tier
        pause = 0.02
        while not self._closed.is_set():
            try:
                self._subscribe()
                pause = 0.02
                self._serve()
            except tier.errors:
                pass
            except Exception:  # noqa: BLE001 - a malformed message or reply: start over
                tier.stats.errors += 1
            tier.serving_until = 0.0
            self._close_pubsub()
            if self._closed.wait(pause):
                return
            pause = min(pause * 2, 0.5)
            tier.stats.reconnects += 1

    def _subscribe(self) -> None:
        tier = self.tier
        client = tier.client
        pubsub = client.pubsub()
        self._pubsub = pubsub
        pubsub.subscribe(tier.channel)
        while True:  # subscribed before the counters are read: no bump falls in between
            message = pubsub.get_message(timeout=tier.timeout)
            if message is None:
                raise OSError("no subscription confirmation from Redis")
            if message["type"] == "subscribe":
                break
        # A fresh (or emptied) Redis gets a random epoch and incarnation, so no entry checked
        # against an earlier one validates again.
        client.setnx(tier.counter(gen.EPOCH), secrets.randbits(40))
        client.setnx(tier.prefix + "incarnation", secrets.randbits(40))
        incarnation: Any
        writes: Any
        incarnation, writes = client.mget([tier.prefix + "incarnation", tier.counter(gen.WRITES)])
        self._incarnation = int(incarnation)
        self._follow(int(writes or 0))
        if tier.owed:
            tier.owed = False
            tier.bump([gen.EPOCH], acks_from_others_only=True)

    def _serve(self) -> None:
        tier = self.tier
        pubsub = self._pubsub
        next_ping = 0.0
        last_pong = time.monotonic()
        while not self._closed.is_set():
            now = time.monotonic()
            if now >= next_ping:
                # Registered first: Redis's count of the lease then ends after this one's.
                tier.run(self._renew, [tier.listeners], [tier.origin, int(LEASE * 1000)])
                pubsub.ping(repr(now))
                next_ping = now + PING
            message = pubsub.get_message(timeout=PING / 2)
            if message is None:
                if time.monotonic() >= tier.serving_until and time.monotonic() - last_pong > LEASE:
                    # The lease lapsed: bumps may have been missed; check, as on a reconnect.
                    raise OSError("Redis stopped answering PING")
                if tier.owed:
                    raise OSError("a bump is owed to Redis")  # settled by resubscribing
                continue
            kind = message["type"]
            if kind == "pong":
                sent = float(message["data"])
                last_pong = time.monotonic()
                tier.serving_until = max(tier.serving_until, sent + LEASE)
                self.connected.set()
            elif kind == "message":
                self._apply(message["data"])

    def _apply(self, data: bytes) -> None:
        # Our own bumps too: a Redis hit read just before our bump reached Redis may have been
        # stored locally with a token that already included our local bump.
        tier = self.tier
        bump_id, writes, slots = data.decode().split(" ")
        cache = self._cache()
        gens = cache.generations if cache is not None else None
        if gens is not None and slots:
            try:
                gens.bump([int(s) for s in slots.split(",")], int(writes))
            except (OSError, ValueError):
                tier.serving_until = 0.0  # cannot apply: stop serving local entries
                raise OSError("cannot apply a bump to the local counters") from None
        pipe = tier.client.pipeline(transaction=False)
        key = tier.prefix + "ack:" + bump_id
        pipe.rpush(key, tier.origin)
        pipe.pexpire(key, ACK_TTL_MS)
        pipe.execute()

    def _follow(self, writes: int) -> None:
        """Drop this machine's entries unless its counters hold every bump up to ``writes``."""
        cache = self._cache()
        if cache is None or cache.generations is None:
            return
        try:
            if cache.generations.follow_remote(self._incarnation, writes):
                self.tier.stats.resyncs += 1
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
        """Stop listening and leave the listeners (writers need not wait for this one)."""
        tier = self.tier
        tier.serving_until = 0.0
        self._closed.set()
        self._thread.join(timeout=PING + tier.timeout)
        self._close_pubsub()
        try:
            tier.client.zrem(tier.listeners, tier.origin)
        except tier.errors:
            pass  # the lease ends by itself
        _listeners.discard(self)


_listeners: weakref.WeakSet[Listener] = weakref.WeakSet()


def _restart_after_fork() -> None:
    """In a forked child: the parent's listener threads did not come along; until a new one has
    its lease, the child serves nothing from its local tiers."""
    for listener in list(_listeners):
        if not listener._closed.is_set():
            listener.tier.origin = secrets.token_hex(8)  # acknowledging for itself, not the parent
            listener.start()


os.register_at_fork(after_in_child=_restart_after_fork)
