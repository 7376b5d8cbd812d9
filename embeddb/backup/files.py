"""Durable file writing for backups: temp name beside the target, fsync, rename, fsync the dir.

A process killed at any point leaves at most a hidden ``.*.tmp`` file, never a partial file at
the final path. Every file is created readable and writable by its owner only.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from .. import ownership

#: 1 MiB reads keep memory flat whatever the database size and cost nothing in speed.
CHUNK = 1024 * 1024
MODE = 0o600
TEMP_SUFFIX = ".tmp"

Progress = Callable[[str, int, int | None], None]
"""``progress(phase, done_bytes, total_bytes_or_None)``, called by long operations."""


def no_progress(phase: str, done: int, total: int | None) -> None:
    """The default progress callback: ignores every report."""


def temp_path(final: str) -> str:
    """A unique hidden name in the directory of ``final``, so the rename stays atomic."""
    directory, name = os.path.split(os.path.abspath(final))
    return os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def create_private(path: str) -> int:
    """Create ``path`` (which must not exist) with mode 0600 and return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)


def fsync_path(path: str) -> None:
    """Flush a file, or a directory's entries, to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(temp: str, final: str) -> None:
    """fsync ``temp``, rename it to ``final`` and fsync the directory."""
    fsync_path(temp)
    os.replace(temp, final)
    fsync_path(os.path.dirname(os.path.abspath(final)))


def discard(path: str) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def staged(final: str) -> Iterator[str]:
    """Yield a temp path for ``final``; removed if the block fails, left for ``commit`` otherwise."""
    temp = temp_path(final)
    try:
        yield temp
    except BaseException:
        discard(temp)
        raise


def write_bytes(final: str, data: bytes) -> None:
    """Write ``data`` to ``final`` durably and atomically: 0600, or with the owner, group and
    mode of the file it replaces (so a manifest that root rewrites stays its owner's)."""
    try:
        previous = os.stat(final)
    except FileNotFoundError:
        previous = None
    with staged(final) as temp:
        fd = create_private(temp)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if previous is not None:
            ownership.like(temp, previous)
        commit(temp, final)


def stale_temps(final: str) -> list[str]:
    """Temp files for ``final`` left by processes that are gone (killed mid-write)."""
    directory, name = os.path.split(os.path.abspath(final))
    pattern = re.compile(r"^\." + re.escape(name) + r"\.(\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in sorted(names)
            if (m := pattern.match(n)) and not alive(int(m.group(1)))]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temp file named after it may still be written)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256_file(path: str, phase: str = "hashing", progress: Progress = no_progress) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(phase, done, total)
    return digest.hexdigest()


def sha256_and_sync(path: str, phase: str, progress: Progress = no_progress) -> str:
    """:func:`sha256_file` while another thread fsyncs the file: both release the GIL, so the
    flush to disk and the read back overlap instead of adding up."""
    sync = threading.Thread(target=fsync_path, args=(path,), daemon=True)
    sync.start()
    try:
        return sha256_file(path, phase, progress)
    finally:
        sync.join()


def copy_stream(
    source: IO[bytes], target: IO[bytes], phase: str, total: int | None, progress: Progress
) -> tuple[str, int]:
    """Copy ``source`` to ``target`` in chunks; return the sha256 and length of the bytes."""
    digest = hashlib.sha256()
    done = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        target.write(chunk)
        done += len(chunk)
        progress(phase, done, total)
    return digest.hexdigest(), done
