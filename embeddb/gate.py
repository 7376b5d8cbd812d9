"""Writers' turns on one SQLite file: in this process a thread lock, across processes an
``flock`` on ``<database>.write-lock``.

SQLite's own wait for the write lock (the busy handler) sleeps longer and longer between tries
(1, 2, 5, 10 ... up to 100 ms), so a waiting writer misses most moments the lock is free: with
many threads, some wait out their whole busy timeout ("database is locked"); with one thread
per process in front (the thread lock alone), that thread sleeps while its process's other
writers queue behind it, and on a quiet 2-core machine 4 processes x 8 threads served 0.6x the
transactions of threads retrying on their own. The file lock is had within a millisecond of
being released (polled, the waits growing from 20 µs to 1 ms), so the SQLite lock is almost
never free while a writer waits: ~1.07x those threads, no "database is locked".

The file lock only orders embeddb's writers; SQLite's lock stays what keeps writes apart (a
writer without embeddb, or one whose lock file cannot be opened, still waits in SQLite's busy
handler). The lock file is never the database file itself: a close() of any other descriptor
of it would drop SQLite's POSIX locks on it.
"""

from __future__ import annotations

import fcntl
import gc
import os
import sqlite3
import threading
import time
from typing import Any

from .ownership import foreign_owner

#: the file lock's polling: first wait, longest wait (seconds)
_FIRST_WAIT, _LONGEST_WAIT = 2e-5, 1e-3


class WriterGate:
    """One SQLite file's turn to write, held by one connection from before BEGIN to after
    COMMIT or ROLLBACK. A turn whose thread has ended or whose connection was closed (a
    transaction abandoned without COMMIT or ROLLBACK) is taken back by the next writer of the
    process instead of blocking its writers for good.

    ``database``: the file's real path, beside which ``<database>.write-lock`` orders the
    writers of every process (None: an in-memory database, which one process alone opens).
    """

    def __init__(self, database: str | None = None) -> None:
        self.database = database
        self.lock_file = None if database is None else database + ".write-lock"
        self.reset()

    def reset(self) -> None:
        self._lock = threading.Lock()  # the turn itself: any thread may release it
        self._guard = threading.Lock()  # taking a turn back, and giving it back, one at a time
        #: [thread, connection, whether its BEGIN ran] of the turn's holder
        self._holder: list[Any] | None = None
        #: descriptor of the lock file; None: not opened yet; -1: cannot be opened
        self._fd: int | None = None

    def after_fork(self) -> None:
        """In a forked child: no turn is held here, and the lock file's descriptor is the
        parent's (an flock belongs to the open file, which the two now share)."""
        fd = self._fd
        self.reset()
        if fd is not None and fd >= 0:
            os.close(fd)  # the parent's lock stays: its own descriptor still holds it

    def enter(self, conn: Any, timeout: float) -> bool | None:
        """True: the turn is ``conn``'s now; False: not within ``timeout``; None: this thread
        holds it already (a nested BEGIN, which SQLite then refuses on its own)."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(False):
            me = threading.current_thread()
            while True:
                holder = self._holder
                if holder is not None:
                    if holder[0] is me:
                        return None
                    if _abandoned(holder):
                        self._take_back(holder)
                left = deadline - time.monotonic()
                if self._lock.acquire(timeout=max(0.0, min(left, 0.05))):  # released: at once
                    break
                if left <= 0:
                    return False
        try:  # from here on a Ctrl-C gives the turn back (it may land as any call returns)
            self._holder = [threading.current_thread(), conn, False]
            if self._other_processes(deadline):
                return True
        except BaseException:  # e.g. Ctrl-C while waiting: the caller never got the turn
            self._holder = None
            self._lock.release()
            raise
        self._holder = None
        self._lock.release()
        return False

    def _other_processes(self, deadline: float) -> bool:
        """Wait for the file lock until ``deadline``; True once had (or when there is no lock
        file to wait for)."""
        fd = self._fd
        if fd is None:
            fd = self._fd = self._open()
        if fd < 0:
            return True
        wait = _FIRST_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(wait)
                wait = min(wait * 2, _LONGEST_WAIT)

    def _open(self) -> int:
        """The lock file's descriptor (created beside the database, given to the database's
        owner when root creates it); -1 when it cannot be opened (a read-only directory, a
        file of another user's), leaving the order to SQLite's busy handler."""
        if self.lock_file is None or self.database is None:
            return -1
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return -1
        owner = foreign_owner(self.database)
        if owner is not None:
            try:
                if os.fstat(fd).st_uid != owner[0]:
                    os.fchown(fd, *owner)
            except OSError:
                pass  # still a lock for this process; the owner may have to remove it
        return fd

    def _release_file(self) -> None:
        fd = self._fd
        if fd is not None and fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _take_back(self, holder: list[Any]) -> None:
        with self._guard:
            if self._holder is not holder:
                return  # given back or taken back meanwhile
            self._holder = None
            dead = not holder[0].is_alive()
            holder[1] = None  # no reference to its connection left here
            if dead:
                # its thread ended inside a transaction: the connection is only for that
                # thread to close and lives on in reference cycles; collecting it rolls back
                # and frees SQLite's lock
                gc.collect()
            self._release_file()
            self._lock.release()

    def begun(self, conn: Any) -> None:
        """``conn``'s BEGIN ran: from now on its transaction's end frees the turn."""
        holder = self._holder
        if holder is not None and holder[1] is conn:
            holder[2] = True  # (a turn taken back meanwhile has no connection any more)

    def leave(self, conn: Any) -> None:
        """Give the turn back if ``conn`` holds it."""
        with self._guard:
            holder = self._holder
            if holder is not None and holder[1] is conn:
                self._holder = None
                self._release_file()
                self._lock.release()

    def leave_if_ended(self, conn: Any) -> None:
        """Give the turn back if ``conn`` holds it and its transaction has ended (a COMMIT or
        ROLLBACK sent as SQL), so other processes need not wait for this one's next writer."""
        holder = self._holder
        if holder is not None and holder[1] is conn and holder[2] and not conn.in_transaction:
            self.leave(conn)


def _abandoned(holder: list[Any]) -> bool:
    """The holder's thread ended, its connection was closed, or its transaction ended
    without commit()/rollback() (a raw COMMIT)."""
    thread, conn, begun = holder
    if conn is None:
        return True  # already taken back
    return not thread.is_alive() or closed(conn) or (begun and not conn.in_transaction)


def closed(conn: Any) -> bool:
    """Whether the sqlite3 connection ``conn`` was closed."""
    try:
        conn.in_transaction  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return True
    return False


#: realpath of an SQLite file (or an in-memory database's name) -> its writers' turn here
_GATES: dict[str, WriterGate] = {}
_GATES_GUARD = threading.Lock()


def writer_gate(path: str, memory: bool = False) -> WriterGate:
    """The writers' turn of the SQLite file ``path`` (of the in-memory database named
    ``path`` when ``memory``) in this process."""
    key = path if memory else os.path.realpath(path)
    with _GATES_GUARD:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = WriterGate(None if memory else key)
        return gate


def _reset_in_child() -> None:
    # a forked child has none of its parent's threads: no turn held there is held here
    for gate in _GATES.values():
        gate.after_fork()


os.register_at_fork(after_in_child=_reset_in_child)
