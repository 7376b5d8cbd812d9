"""Generation counters: the cheap signal that tells every process a cached value went stale.

A cached entry remembers the counters of its *slots* (its key, its tags, and the epoch) as they
were before its value was loaded. Invalidating a key or a tag bumps its slot; an entry whose slots
moved on is stale and is never returned. Names map onto a fixed array of slots by a stable hash,
so invalidation is O(1) and needs no key scan; two names sharing a slot only cost a spurious miss.

Counters only grow, so an entry stores just the *sum* of its slots' counters: the sum is unchanged
exactly when none of them was bumped.

:class:`SharedGenerations` keeps the array in a file under the cache directory, mapped into every
process (a read is a memory load, ~0.1 µs); bumps take an exclusive ``flock`` so concurrent
writers never lose an increment. :class:`LocalGenerations` is the same in process memory, for
databases no other process can see (``:memory:``).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

MAGIC = b"EMBDGEN1"
HEADER = 64  # magic (8) + boot id (36) + padding (4) + the Redis mark (16)
MARK = 48  # header offset of the Redis tier's (incarnation, writes): see follow_remote
SLOTS = 1 << 16  # 512 KiB of counters: collisions among live names stay rare
EPOCH = 0  # slot every entry includes: bumping it invalidates everything
WRITES = 1  # bumped after every other bump: unchanged means "nothing was invalidated since"
FIRST = 2  # first slot for names
# A removed or replaced counter file is noticed at the latest this long after it happened.
RECHECK_SECONDS = 0.5
NO_BOOT_ID = b"-" * 36  # what boot_id() says where the kernel tells none


def slot_of(name: str) -> int:
    """The slot of ``name``: a stable hash (the same in every process), past the fixed slots."""
    return zlib.crc32(name.encode()) % (SLOTS - FIRST) + FIRST


def boot_id() -> bytes:
    """This kernel's boot id (Linux: random per boot, the same in every container it runs)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            return fh.read(36)
    except OSError:  # not Linux: counters then survive reboots, as the L2 does
        return NO_BOOT_ID


class LocalGenerations:
    """Counters in this process's memory."""

    shared = False
    opened = 1  # how many times the counters were (re)opened
    next_check = float("inf")  # monotonic time of the next check() that does any work

    def __init__(self) -> None:
        self._buffer = bytearray(SLOTS * 8)
        self.counters = memoryview(self._buffer).cast("Q")
        self.counters[EPOCH] = secrets.randbits(40)
        self._mark = memoryview(bytearray(16)).cast("Q")
        self._lock = threading.Lock()

    def total(self, slots: Iterable[int]) -> int:
        """The sum of the counters of ``slots`` (an entry's validity token)."""
        counters = self.counters
        return sum([counters[s] for s in slots])

    def bump(self, slots: Iterable[int], remote_writes: int = 0) -> None:
        """Advance the counters of ``slots``: every entry that includes one becomes stale.

        ``remote_writes``: this is the Redis tier's bump number ``remote_writes`` (see
        :meth:`follow_remote`).
        """
        with self._exclusive():
            counters = self.counters
            for s in set(slots):
                counters[s] += 1
            counters[WRITES] += 1  # last, so a reader that sees it unchanged saw no bump
            mark = self._mark
            if remote_writes and mark[1] + 1 >= remote_writes > mark[1]:
                mark[1] = remote_writes  # no gap: still complete up to this bump

    def follow_remote(self, incarnation: int, writes: int) -> bool:
        """Called when subscribing to the Redis tier, whose counters have seen ``writes`` bumps
        since it was set up as ``incarnation``: unless these counters are known to hold every
        one of them (a process on this machine has been applying them without a gap), bump the
        epoch, so no entry that might have missed one is served. True when it did.
        """
        with self._exclusive():
            mark = self._mark
            if mark[0] == incarnation and mark[1] == writes:
                return False
            self.counters[EPOCH] += 1
            self.counters[WRITES] += 1
            mark[0], mark[1] = incarnation, writes
            return True

    def _exclusive(self) -> Any:
        return self._lock

    def check(self) -> bool:
        """True while the counters are usable (always, in memory)."""
        return True

    def close(self) -> None:
        self.counters.release()


class SharedGenerations(LocalGenerations):
    """Counters in ``<directory>/generations``, shared through ``mmap`` by every process.

    The file is re-initialised (new random epoch) when it is missing, malformed, or was written
    before the last reboot, so no entry validated against older counters can validate again.

    ``grace``: after the file had to be re-created (its directory removed, say), the counters
    are unusable for this many seconds, as a new cache directory is (see
    :data:`embeddb.cache.tiered.GRACE`): writers with no cache that looked for the directory
    while it was missing must look again before anything loaded now may be served.

    :raises OSError: the file cannot be created, sized or mapped.
    """

    shared = True

    def __init__(self, directory: str, owner: tuple[int, int] | None = None,
                 grace: float = 0.0) -> None:
        self.path = os.path.join(directory, "generations")
        self.owner = owner  # given the counter file (root using another user's database)
        self.grace = grace
        self.young_until = 0.0  # monotonic time until which check() says "unusable"
        self._lock = threading.Lock()
        self._retired: list[tuple] = []
        self.reinitialised = False
        self.opened = 0
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if self.owner is not None:
                os.fchown(fd, *self.owner)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self.reinitialised = self._prepare(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, HEADER + SLOTS * 8)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._inode = os.fstat(fd).st_ino
        self._view = memoryview(self._map)
        self.counters = self._view[HEADER:].cast("Q")
        self._mark = self._view[MARK:HEADER].cast("Q")
        self.next_check = time.monotonic() + RECHECK_SECONDS
        self.opened += 1

    def _prepare(self, fd: int) -> bool:
        size = HEADER + SLOTS * 8
        header = os.pread(fd, HEADER, 0)
        boot = boot_id()
        if os.fstat(fd).st_size == size and header[:8] == MAGIC and header[8:44] == boot:
            return False
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
        # Both random: an entry verified against an earlier file (a removed directory, say)
        # must not find its write count here (L1 trusts an unchanged count without re-summing
        # the entry's slots) nor its epoch.
        for slot in (EPOCH, WRITES):
            os.pwrite(fd, secrets.randbits(40).to_bytes(8, "little"), HEADER + slot * 8)
        os.pwrite(fd, MAGIC + boot, 0)
        return True

    def bump(self, slots: Iterable[int], remote_writes: int = 0) -> None:
        """Advance the counters of ``slots`` under the file lock (no lost increments).

        :raises OSError: the counter file cannot be locked or was removed and cannot be recreated.
        """
        self.check(force=True)
        super().bump(slots, remote_writes)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def check(self, force: bool = False) -> bool:
        """Re-open the counter file if it was removed or replaced since it was mapped.

        Called on every miss and bump, and on hits at most every RECHECK_SECONDS. Returns False
        when the counters cannot be used (the caller then bypasses the cache): also for
        ``grace`` seconds after a re-open, checked again on every read meanwhile.
        """
        now = time.monotonic()
        if not force and now < self.next_check:
            return True
        self.next_check = now + RECHECK_SECONDS
        try:
            current = os.stat(self.path).st_ino
        except OSError:
            current = None
        if current != self._inode and not self._reopen():
            return False
        if time.monotonic() < self.young_until:  # not `now`: taken before a re-open
            self.next_check = now
            return False
        return True

    def _reopen(self) -> bool:
        with self._lock:
            old = self._fd, self._map, self._view, self.counters, self._mark
            try:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                self._open()
            except OSError:
                return False
            # Entries checked against the old file must not survive: bump its epoch for any
            # process still mapping it. The old mapping stays open: another thread may be
            # reading it right now.
            old[3][EPOCH] += 1
            old[3][WRITES] += 1
            self._retired.append(old)
            self.young_until = time.monotonic() + self.grace
        return True

    def close(self) -> None:
        self.counters.release()
        self._mark.release()
        self._view.release()
        self._map.close()
        os.close(self._fd)
