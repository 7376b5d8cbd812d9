"""Who owns the files embeddb writes beside a database (backups, restores, locks, the cache),
so a root-run command never locks the database's owner out.

A restored database keeps the owner, group and mode of the file it replaces. A backup that root
takes of another user's database file is given to that user (it holds nothing they cannot read
already). Without root privileges files cannot change hands, and nothing here is attempted.
"""

from __future__ import annotations

import os
import stat


def foreign_owner(path: str) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``path`` when this process is root and ``path`` belongs to another
    user: the owner to give files derived from it. None otherwise (or when it is missing)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid == os.geteuid() and st.st_gid == os.getegid():
        return None
    return st.st_uid, st.st_gid


def give(paths: list[str], owner: tuple[int, int] | None) -> None:
    """Hand ``paths`` to ``owner`` (no-op for None)."""
    if owner is None:
        return
    for path in paths:
        os.chown(path, *owner)


def like(path: str, model: os.stat_result) -> None:
    """Give ``path`` the permission bits of ``model`` and, when root, its owner and group."""
    os.chmod(path, stat.S_IMODE(model.st_mode))
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.chown(path, model.st_uid, model.st_gid)


def default_mode() -> int:
    """The mode SQLite gives a database file it creates: 0666 less the umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, racing other threads)
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
