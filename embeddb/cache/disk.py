"""L2: diskcache in a directory shared by every process of the machine.

Every call is contained: a removed directory, a corrupt database or entry, a locked file or a
full disk turns into a counted error and a miss (or a skipped store), never a failed read. Entries
are ``(slots, token, value)`` and are checked against the generation counters like L1's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from typing import Any

import diskcache

from . import codec
from .memory import MISSING
from .stats import TierStats

_ABSENT: tuple[Any, float, tuple[int, ...], int] = (MISSING, 0.0, (), 0)
# Hits read diskcache's table directly (its documented file, cache.db): the public get() costs
# ~4 µs more per hit. Entries kept in separate files (values over 32 KiB) go through get().
_HIT_SQL = "SELECT expire_time, value FROM Cache WHERE key = ? AND raw = 1"


class DiskTier:
    """A diskcache ``Cache`` in ``directory`` (created 0700).

    :raises OSError: the directory cannot be created.
    :raises Exception: whatever diskcache raises when its database cannot be opened; callers
        treat that as "no L2".
    """

    def __init__(self, directory: str, size_limit: int, timeout: float) -> None:
        self.directory = directory
        self.stats = TierStats()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # Keep the default eviction policy (least-recently-stored): a hit then writes nothing.
        self._cache = diskcache.Cache(directory, size_limit=size_limit, timeout=timeout)
        self._path = os.path.join(directory, "cache.db")
        self._timeout = timeout
        self._local = threading.local()

    def lookup(
        self, key: str, counters: memoryview
    ) -> tuple[Any, float, tuple[int, ...], int]:
        """``(value, seconds left, slots, token)`` for a live entry, else ``(MISSING, 0, (), 0)``."""
        try:
            found = self._read(key)
        except Exception:  # noqa: BLE001 - any L2 failure is a miss, see the module docstring
            self.stats.errors += 1
            self.stats.misses += 1
            self._drop(key)
            return _ABSENT
        if found is None:
            self.stats.misses += 1
            return _ABSENT
        expire_time, data = found
        try:
            slots, token, value = codec.loads(data)
            live = sum([counters[s] for s in slots]) == token
        except Exception:  # noqa: BLE001 - an entry that does not decode is corrupt
            self.stats.errors += 1
            self._drop(key)
            live = False
        if not live:
            self.stats.stale += 1
            self.stats.misses += 1
            return _ABSENT
        self.stats.hits += 1
        left = expire_time - time.time() if expire_time is not None else float("inf")
        return value, left, slots, token

    def _read(self, key: str) -> tuple[float | None, bytes] | None:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.con = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None)
            local.pid = os.getpid()
        row = local.con.execute(_HIT_SQL, (key,)).fetchone()
        if row is None:
            return None
        expire_time, data = row
        if expire_time is not None and expire_time <= time.time():
            return None
        if data is None:  # kept in a file of its own
            data = self._cache.get(key)
            if data is None:
                return None
        return expire_time, data

    def store(
        self, key: str, value: Any, ttl: float, slots: tuple[int, ...], token: int
    ) -> None:
        """Keep ``value`` for ``ttl`` seconds; a failure is counted, not raised."""
        try:
            self._cache.set(key, codec.dumps(slots, token, value), expire=ttl)
        except Exception:  # noqa: BLE001
            self.stats.errors += 1
            return
        self.stats.sets += 1

    def delete(self, key: str) -> None:
        self._drop(key)

    def clear(self) -> None:
        try:
            self._cache.clear()
        except Exception:  # noqa: BLE001
            self.stats.errors += 1

    def volume(self) -> int | None:
        """Bytes used on disk, or None when the L2 cannot say."""
        try:
            return self._cache.volume()
        except Exception:  # noqa: BLE001
            self.stats.errors += 1
            return None

    def __len__(self) -> int:
        try:
            return len(self._cache)
        except Exception:  # noqa: BLE001
            self.stats.errors += 1
            return 0

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken L2 has nothing to report
            self._cache.close()

    def _drop(self, key: str) -> None:
        try:
            self._cache.delete(key)
        except Exception:  # noqa: BLE001
            self.stats.errors += 1
