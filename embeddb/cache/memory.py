"""L1: a bounded, thread-safe, in-process LRU with a deadline per entry.

Lookups take no lock (single OrderedDict operations are atomic in CPython); stores and evictions
take one. An entry is ``(value, deadline, slots, token)``: it is returned only before its
deadline and while the generation counters of its slots still add up to ``token``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from .generations import LocalGenerations
from .stats import TierStats

MISSING: Any = object()


class MemoryTier:
    """At most ``maxsize`` entries; the least recently used goes first when full."""

    def __init__(self, maxsize: int, verify: bool = True) -> None:
        self.maxsize = maxsize
        self.verify = verify  # False: trust entries until their deadline (bounded staleness)
        self.stats = TierStats()
        self._entries: OrderedDict[str, tuple[Any, float, tuple[int, ...], int]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, key: str, generations: LocalGenerations) -> Any:
        """The live value under ``key``, or MISSING (expired and stale entries are dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            self.stats.misses += 1
            return MISSING
        value, deadline, slots, token = entry
        counters = generations.counters
        if time.monotonic() < deadline and (
            not self.verify or sum([counters[s] for s in slots]) == token
        ):
            try:
                self._entries.move_to_end(key)
            except KeyError:  # dropped by another thread just now; the value is still good
                pass
            self.stats.hits += 1
            return value
        self._discard(key, entry)
        self.stats.stale += 1
        self.stats.misses += 1
        return MISSING

    def store(
        self, key: str, value: Any, ttl: float, slots: tuple[int, ...], token: int
    ) -> None:
        """Keep ``value`` for ``ttl`` seconds while the counters of ``slots`` sum to ``token``."""
        if self.maxsize <= 0:
            return
        entry = (value, time.monotonic() + ttl, slots, token)
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

    def _discard(self, key: str, entry: tuple) -> None:
        with self._lock:
            if self._entries.get(key) is entry:
                del self._entries[key]
