"""The slow-query log: statements over a threshold, with redacted parameters and the call site.

Each slow statement goes to the ``embeddb.slow`` logger (WARNING) and to a bounded ring buffer
that :meth:`SlowLog.entries` reads back, newest first.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

logger = logging.getLogger("embeddb.slow")
logger.addHandler(logging.NullHandler())  # a library never prints: the app's logging decides

MASK = "***"
#: column names whose values never reach a log
SECRET = re.compile(r"pass(word|wd|phrase)?|token|secret|key|salt|credential|hash", re.I)

_PLACEHOLDER = re.compile(r"%s|\?")
_COMPARED = re.compile(
    r'"?([A-Za-z_][\w]*)"?\s*(?:=|<>|!=|<=|>=|<|>|\bLIKE|\bILIKE|'
    r'\bIN\s*\((?:\s*(?:\?|%s)\s*,)*)\s*$', re.I)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+[^(]+\(([^)]*)\)\s*VALUES\s*\(", re.I)

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_APP_INSIDE = os.path.join(_PACKAGE, "reference")  # an app like any other
_SKIPPED = ("peewee.py", "playhouse", f"{os.sep}contextlib.py")


def parameter_columns(sql: str, count: int) -> list[str | None]:
    """The column each of ``count`` placeholders is bound to, where the SQL says (``col = ?``,
    ``col IN (?, ?)``, an INSERT's column list); None where it does not."""
    insert = _INSERT.match(sql)
    if insert:
        names = [c.strip().strip('"`') for c in insert.group(1).split(",")]
        return [names[i % len(names)] for i in range(count)]
    columns: list[str | None] = []
    for match in _PLACEHOLDER.finditer(sql):
        found = _COMPARED.search(sql, max(0, match.start() - 200), match.start())
        columns.append(found.group(1) if found else None)
    return (columns + [None] * count)[:count]


def redact(sql: str, params: Any) -> list[Any]:
    """``params`` as a list with the values of secret-looking columns replaced by ``***``."""
    if params is None:
        return []
    if isinstance(params, dict):
        return [{k: MASK if SECRET.search(str(k)) else v for k, v in params.items()}]
    values = list(params)
    columns = parameter_columns(sql, len(values))
    return [MASK if c is not None and SECRET.search(c) else _loggable(v)
            for c, v in zip(columns, values)]


def _loggable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


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
            "sql": sql,
            "params": redact(sql, params),
            "rows": rows,
            "call_site": call_site(),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        with self._lock:
            self._entries.append(entry)
        logger.warning("slow query (%.1f ms) at %s: %s params=%r", entry["duration_ms"],
                       entry["call_site"], sql, entry["params"])
        return entry

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The slow statements kept, newest first (at most ``limit``)."""
        with self._lock:
            newest = list(reversed(self._entries))
        return newest if limit is None else newest[:limit]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
