"""L1: a bounded, thread-safe, in-process LRU with a deadline per entry.

Lookups take no lock (single OrderedDict operations are atomic in CPython); stores and evictions
take one. An entry is ``[value, deadline, slots, token, writes]``: it is returned only before its
deadline and while the generation counters of its slots still add up to ``token``. ``writes`` is
the global write counter when that was last verified: while it has not moved, a hit costs one
counter read instead of one per slot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .generations import WRITES
from .stats import TierStats

MISSING: Any = object()


class MemoryTier:
    """At most ``maxsize`` entries; the least recently used goes first when full."""

    def __init__(self, maxsize: int, verify: bool = True) -> None:
        self.maxsize = maxsize
        self.verify = verify  # False: trust entries until their deadline (bounded staleness)
        self.stats = TierStats()
        self._entries: OrderedDict[str, list] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: str, counters: memoryview, now: float) -> Any:
        """The live value under ``key``, or MISSING (expired and stale entries are dropped).

        ``counters`` are the generation counters, ``now`` is ``time.monotonic()``.
        """
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return MISSING
        if now < entry[1] and (not self.verify or self._fresh(entry, counters)):
            try:
                self._entries.move_to_end(key)
            except KeyError:  # dropped by another thread just now; the value is still good
                pass
            self.stats.hits += 1
            return entry[0]
        self._discard(key, entry)
        self.stats.stale += 1
        self.stats.misses += 1
        return MISSING

    @staticmethod
    def _fresh(entry: list, counters: memoryview) -> bool:
        writes = counters[WRITES]  # read before the slots: see generations.bump
        if writes == entry[4]:
            return True
        if sum([counters[s] for s in entry[2]]) != entry[3]:
            return False
        entry[4] = writes
        return True

    def store(
        self, key: str, value: Any, ttl: float, slots: tuple[int, ...], token: int
    ) -> None:
        """Keep ``value`` for ``ttl`` seconds while the counters of ``slots`` sum to ``token``."""
        if self.maxsize <= 0:
            return
        entry = [value, time.monotonic() + ttl, slots, token, -1]
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
                self.stats.evictions += 1
        self.stats.sets += 1

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _discard(self, key: str, entry: list) -> None:
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]
