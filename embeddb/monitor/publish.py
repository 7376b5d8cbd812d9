"""Cross-process statistics: each monitored process publishes a small file, readers sum them.

The files live in a folder beside the database (``app.db-monitor/``; PostgreSQL: beside the
per-database cache folder under ``~/.cache/embeddb``), one ``<host>-<pid>.json`` per process,
written by a background thread at most once a second and only when something changed (temp
file + rename: a reader never sees half a file). The app never waits on them: a failed write
is counted and skipped. Readers keep the files of live processes only; those of dead
processes age out and are removed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from typing import Any

from ..cache.placement import default_directory
from ..errors import MonitorError

INTERVAL = 1.0  # seconds between publications: fresh enough for a terminal, cheap for the app
STALE = 30.0  # a file not rewritten for this long is a dead (or frozen) process's


def directory_of(db: Any) -> str | None:
    """Where ``db``'s processes publish (None: ``:memory:``, which no other process sees).

    Not inside the cache folder: that folder existing tells writers a cache is in use."""
    base = default_directory(db)
    if base is None:
        return None
    return (base[:-len("-cache")] if base.endswith("-cache") else base) + "-monitor"


_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()


class Publisher:
    """Writes one monitor's snapshot for other processes, from a daemon thread."""

    def __init__(self, monitor: Any, directory: str) -> None:
        self.directory = directory
        self.host = socket.gethostname()
        self.errors = 0
        self._monitor = weakref.ref(monitor)
        self._start()
        _publishers.add(self)

    def _start(self) -> None:
        self.pid = os.getpid()
        self.path = os.path.join(self.directory, f"{self.host}-{self.pid}.json")
        self.started = time.time()
        self._last: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="embeddb-monitor-publish",
                                        daemon=True)
        self._thread.embeddb_fork_safe = True  # type: ignore[attr-defined]  # see _forked
        self._thread.start()

    def _forked(self) -> None:
        """In a forked child: the parent's numbers are the parent's; start afresh, with new
        locks (the parent's publisher thread may have held one at the fork)."""
        monitor = self._monitor()
        if monitor is not None and not self._stop.is_set():
            monitor.after_fork()
            self._start()

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            monitor = self._monitor()
            if monitor is None:
                return
            self.publish(monitor)
            del monitor

    def publish(self, monitor: Any = None) -> bool:
        """Write the snapshot now if anything changed; whether a file was written."""
        monitor = monitor or self._monitor()
        if monitor is None:
            return False
        snapshot = snapshot_of(monitor)
        totals = snapshot["monitor"]["totals"]
        cache = snapshot["cache"]
        mark = (totals["calls"], _cache_lookups(cache))
        if mark == self._last and time.time() - self._written < STALE / 3:
            return False
        snapshot.update(pid=self.pid, host=self.host, started=self.started, updated=time.time())
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as fh:
                json.dump(snapshot, fh, default=str)
            os.replace(tmp, self.path)
        except OSError:
            self.errors += 1
            return False
        self._last = mark
        self._written = time.time()
        return True

    _written = 0.0

    def close(self) -> None:
        """Stop publishing and remove this process's file."""
        self._stop.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _cache_lookups(cache: dict[str, Any] | None) -> int:
    if not cache:
        return 0
    return sum(cache.get(t, {}).get("hits", 0) + cache.get(t, {}).get("misses", 0)
               for t in ("l1", "l2") if isinstance(cache.get(t), dict))


def snapshot_of(monitor: Any) -> dict[str, Any]:
    """What a process publishes: its monitor's statistics and its cache's counters."""
    from ..cache.tiered import registered

    cache = registered(monitor.db)
    return {
        "database": monitor.db.url.redacted(),
        "monitor": monitor.stats(),
        "slow": monitor.slow_queries(20),
        "cache": cache.stats() if cache is not None else None,
    }


def _alive(entry: dict[str, Any], host: str, now: float) -> bool:
    if now - entry.get("updated", 0) > STALE:
        return False
    if entry.get("host") != host:
        return True  # another machine sharing the folder: trust the age alone
    try:
        os.kill(int(entry["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def read(directory: str | None) -> tuple[list[dict[str, Any]], int]:
    """The snapshots of the live processes, and how many files were skipped (unreadable, or
    not a snapshot: one foreign file must not hide everyone's numbers); the files of dead
    processes are removed.

    :raises MonitorError: the folder itself cannot be read.
    """
    if directory is None or not os.path.isdir(directory):
        return [], 0
    host, now = socket.gethostname(), time.time()
    found, skipped = [], 0
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise MonitorError(f"cannot read the monitor folder {directory}: {exc.strerror}; run "
                           "as the app's user or make the folder readable") from exc
    for name in names:
        path = os.path.join(directory, name)
        if not name.endswith(".json"):
            continue
        try:
            with open(path) as fh:
                entry = json.load(fh)
        except (OSError, ValueError):
            skipped += 1
            continue
        if not _is_snapshot(entry):
            skipped += 1
        elif _alive(entry, host, now):
            found.append(entry)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    return found, skipped


_NUMBER = (int, float)
_STATEMENT_KEYS = ("calls", "errors", "rows", "total_ms", "p50_ms", "p95_ms", "max_ms",
                   "first_seen", "last_seen")


def _is_snapshot(entry: Any) -> bool:
    """Whether ``entry`` has the shape :meth:`Publisher.publish` writes (what combine reads)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("monitor"), dict):
        return False
    if not all(isinstance(entry.get(k), _NUMBER) for k in ("pid", "started", "updated")):
        return False
    totals, statements = entry["monitor"].get("totals"), entry["monitor"].get("statements")
    if not isinstance(totals, dict) or not all(isinstance(totals.get(k), _NUMBER)
                                               for k in ("slow", "nplusone")):
        return False
    if not isinstance(statements, list) or not isinstance(entry.get("slow", []), list):
        return False
    if entry.get("cache") is not None and not isinstance(entry["cache"], dict):
        return False
    return all(isinstance(s, dict) and isinstance(s.get("fingerprint"), str)
               and isinstance(s.get("statement"), str)
               and all(isinstance(s.get(k), _NUMBER) for k in _STATEMENT_KEYS)
               for s in statements) and all(isinstance(s, dict) and isinstance(
                   s.get("at"), _NUMBER) for s in entry.get("slow", []))


def combine(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of several processes: counts and times summed per statement; p50 / p95 / max
    are the highest any process saw (percentiles of different processes do not add)."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        for stat in entry["monitor"]["statements"]:
            into = merged.get(stat["fingerprint"])
            if into is None:
                merged[stat["fingerprint"]] = dict(stat)
                continue
            for key in ("calls", "errors", "rows", "total_ms"):
                into[key] += stat[key]
            for key in ("p50_ms", "p95_ms", "max_ms", "last_seen"):
                into[key] = max(into[key], stat[key])
            into["first_seen"] = min(into["first_seen"], stat["first_seen"])
    statements = sorted(merged.values(), key=lambda s: s["total_ms"], reverse=True)
    for stat in statements:
        stat["total_ms"] = round(stat["total_ms"], 4)
        stat["mean_ms"] = round(stat["total_ms"] / stat["calls"], 4) if stat["calls"] else 0.0
    return {
        "processes": [{"pid": e["pid"], "host": e["host"], "started": e["started"],
                       "updated": e["updated"]} for e in entries],
        "totals": {
            "statements": len(statements),
            "calls": sum(s["calls"] for s in statements),
            "errors": sum(s["errors"] for s in statements),
            "rows": sum(s["rows"] for s in statements),
            "total_ms": round(sum(s["total_ms"] for s in statements), 3),
            "slow": sum(e["monitor"]["totals"]["slow"] for e in entries),
            "nplusone": sum(e["monitor"]["totals"]["nplusone"] for e in entries),
        },
        "statements": statements,
        "slow": sorted((s for e in entries for s in e.get("slow", [])),
                       key=lambda s: s["at"], reverse=True)[:20],
        "cache": combine_cache([e["cache"] for e in entries if e.get("cache")]),
    }


#: (tier, counter) pairs that do not add up over processes, so the highest is reported: one
#: L2 on disk is seen by all its processes; a percentile is the slowest process's
_HIGHEST = {("l2", "entries"), ("redis", "p50_us"), ("redis", "p99_us")}


def combine_cache(caches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Cache counters summed over processes, hit ratios recomputed."""
    if not caches:
        return None
    total: dict[str, Any] = {}
    for part in ("l1", "l2", "redis", "loads"):
        counters: dict[str, float] = {}
        for cache in caches:
            for key, value in (cache.get(part) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key != "hit_ratio":
                    if (part, key) in _HIGHEST:
                        counters[key] = max(counters.get(key, 0), value)
                    else:
                        counters[key] = counters.get(key, 0) + value
        if part != "loads" and counters:
            lookups = counters.get("hits", 0) + counters.get("misses", 0)
            counters["hit_ratio"] = round(counters.get("hits", 0) / lookups, 4) if lookups else 0.0
        total[part] = counters
    total["processes"] = len(caches)
    return total


def _after_fork_in_child() -> None:
    for publisher in list(_publishers):
        publisher._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
