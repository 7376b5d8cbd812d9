"""Stampede protection: one loader per key across threads (a lock per key) and across
processes (``flock`` on one of a fixed set of lock files), each with a bounded wait.

A wait that runs out is not an error for the reader: the caller loads the value itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator

LOCK_FILES = 1024  # keys share lock files by slot; a shared file only serialises two misses


class KeyLocks:
    """A lock per key in this process, created on demand and dropped when nobody holds it."""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}  # key -> [lock, users]
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def hold(
        self, key: str, timeout: float, on_wait: Callable[[], None] | None = None
    ) -> Iterator[bool]:
        """Hold ``key``'s lock; yields False if it could not be had within ``timeout`` s."""
        with self._guard:
            item = self._locks.setdefault(key, [threading.Lock(), 0])
            item[1] += 1
        lock = item[0]
        acquired = lock.acquire(blocking=False)
        if not acquired:
            if on_wait is not None:
                on_wait()
            acquired = lock.acquire(timeout=timeout)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
            with self._guard:
                item[1] -= 1
                if item[1] == 0:
                    del self._locks[key]


class FileLocks:
    """Exclusive ``flock`` on ``<directory>/<n>.lock``, released when the holder ends or dies."""

    def __init__(self, directory: str, owner: tuple[int, int] | None = None) -> None:
        self.directory = directory
        self.owner = owner  # given every lock file (root using another user's database)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if owner is not None:
            os.chown(directory, *owner)

    @contextlib.contextmanager
    def hold(
        self, slot: int, timeout: float, on_wait: Callable[[], None] | None = None
    ) -> Iterator[bool]:
        """Hold the lock file of ``slot``; yields False if not had within ``timeout`` s.

        :raises OSError: the lock file cannot be opened (the caller counts it as an L2 error).
        """
        path = os.path.join(self.directory, f"{slot % LOCK_FILES}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            acquired = _try_lock(fd)
            if not acquired:
                if on_wait is not None:
                    on_wait()
                acquired = _wait_lock(fd, timeout)
            try:
                yield acquired
            finally:
                if acquired:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_lock(fd: int, timeout: float) -> bool:
    # flock has no timeout; poll with a growing pause (50 µs .. 5 ms) until the deadline.
    deadline = time.monotonic() + timeout
    pause = 0.00005
    while time.monotonic() < deadline:
        time.sleep(pause)
        if _try_lock(fd):
            return True
        pause = min(pause * 2, 0.005)
    return False
