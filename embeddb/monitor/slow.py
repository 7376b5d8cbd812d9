"""The slow-query log: statements over a threshold, with redacted parameters and the call site.

Each slow statement goes to the ``embeddb.slow`` logger (WARNING) and to a bounded ring buffer
that :meth:`SlowLog.entries` reads back, newest first.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from .redaction import error_text, redact, shown_sql

logger = logging.getLogger("embeddb.slow")
logger.addHandler(logging.NullHandler())  # a library never prints: the app's logging decides

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APP_INSIDE = os.path.join(_PACKAGE, "reference")  # an app like any other
_SKIPPED = ("peewee.py", "playhouse", f"{os.sep}contextlib.py")


def call_site() -> str | None:
    """``file:line in function`` of the first frame outside embeddb and peewee."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        inside = path.startswith(_PACKAGE) and not path.startswith(_APP_INSIDE)
        if not inside and not any(part in path for part in _SKIPPED):
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return None


class SlowLog:
    """Statements that took ``threshold`` seconds or more; the newest ``size`` are kept."""

    def __init__(self, threshold: float = 0.1, size: int = 200) -> None:
        self.threshold = threshold
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, sql: str, params: Any, duration: float, rows: int | None,
            error: BaseException | None) -> dict[str, Any]:
        entry = {
            "at": time.time(),
            "duration_ms": round(duration * 1000, 3),
            "sql": shown_sql(sql),
            "params": redact(sql, params),
            "rows": rows,
            "call_site": call_site(),
            "error": None if error is None else f"{type(error).__name__}: {error_text(error, sql)}",
        }
        with self._lock:
            self._entries.append(entry)
        logger.warning("slow query (%.1f ms) at %s: %s params=%r", entry["duration_ms"],
                       entry["call_site"], entry["sql"], entry["params"])
        return entry

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The slow statements kept, newest first (at most ``limit``)."""
        with self._lock:
            newest = list(reversed(self._entries))
        return newest if limit is None else newest[:limit]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
