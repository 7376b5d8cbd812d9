"""Connection pool counters: checkouts, time waited for a connection, opened and closed."""

from __future__ import annotations

import threading
from typing import Any

_SAMPLES = 512


class PoolCounters:
    """What a monitored pooled database counts on each checkout (plain integers: a count may
    be off by a few under heavy threading; the waiting gauge takes a lock)."""

    def __init__(self) -> None:
        self.checkouts = 0
        self.opened = 0
        self.closed = 0
        self.waiting = 0
        self._lock = threading.Lock()
        self._waits: list[float] = []
        self._next = 0

    def enter(self) -> None:
        with self._lock:
            self.waiting += 1

    def leave(self, waited: float, ok: bool) -> None:
        with self._lock:
            self.waiting -= 1
        if not ok:
            return
        self.checkouts += 1
        if len(self._waits) < _SAMPLES:
            self._waits.append(waited)
        else:
            self._waits[self._next] = waited
            self._next = (self._next + 1) % _SAMPLES

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self._waits)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
        return {"waiting": self.waiting, "checkouts": self.checkouts,
                "checkout_wait_p95_ms": round(p95 * 1000, 3), "opened": self.opened,
                "closed": self.closed}
