"""Run a function as another user, in a forked child that drops root with setgid/setuid.

The child is a fork, not a new interpreter: the Python installation may live where the other
user cannot read (e.g. under /root), so everything it needs must be imported before the call.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

OTHER_USER = "nobody"

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="changing file owners and dropping privileges needs root (CI runs as root)",
)


def other_user() -> tuple[int, int]:
    entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


def as_user(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` run as :data:`OTHER_USER`; its JSON-able result, or AssertionError with
    the child's traceback."""
    uid, gid = other_user()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if not os.access(os.getcwd(), os.R_OK | os.X_OK):  # a checkout in a 0700 mktemp dir
                os.chdir("/")  # the app user runs from a directory it can read
            payload = {"ok": True, "value": fn(*args)}
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            payload = {"ok": False, "error": traceback.format_exc()}
        with os.fdopen(write, "w") as out:
            json.dump(payload, out, default=str)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as src:
        text = src.read()
    os.waitpid(pid, 0)
    payload = json.loads(text)
    if not payload["ok"]:
        raise AssertionError(f"as {OTHER_USER}:\n{payload['error']}")
    return payload["value"]


@contextmanager
def shared_directory() -> Iterator[Path]:
    """A directory under /tmp owned by :data:`OTHER_USER`, reachable by them (pytest's tmp_path
    sits under a root-only 0700 directory)."""
    top = Path(tempfile.mkdtemp(prefix="embeddb-other-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        home = top / "app"
        home.mkdir()
        os.chown(home, *other_user())
        yield home
    finally:
        shutil.rmtree(top, ignore_errors=True)
