"""Statement fingerprints and the statistics kept per fingerprint.

A fingerprint is the statement with its literals and parameter lists folded, so
``WHERE id IN (?, ?, ?)`` and ``WHERE id IN (?)`` count as one statement, as do the savepoints
peewee names at random. Memory is bounded: past ``capacity`` distinct statements, new ones are
counted together under :data:`OTHER`.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from typing import Any

OTHER = "other"
#: recent durations kept per statement for p50/p95: stable percentiles for ~17 KB per
#: statement (512 Python floats at 24 bytes plus the list's 8-byte slots; measured 16.9 KB
#: with tracemalloc), i.e. ~17 MB at the default max_statements of 1,000
_SAMPLES = 512
_CACHE_LIMIT = 10_000  # raw SQL texts remembered with their fingerprint

_SAVEPOINT_NAME = re.compile(r'"s[0-9a-f]{32}"')
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_PLACEHOLDER = re.compile(r"%s|\$\d+|\?\d*")
_SPACE = re.compile(r"\s+")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_ROWS = re.compile(r"\(\?\)(?:\s*,\s*\(\?\))+")
_TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END")

_cache: dict[str, tuple[str, str]] = {}


def normalize(sql: str) -> str:
    """``sql`` with literals, placeholders and lists folded to ``?`` and spaces collapsed."""
    text = _SAVEPOINT_NAME.sub("?", sql)
    text = _STRING.sub("?", text)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _SPACE.sub(" ", text).strip().rstrip(";").rstrip()
    text = _LIST.sub("(?)", text)
    return _ROWS.sub("(?)", text)


_LEXEME = re.compile(
    r"'(?:[^']|'')*'?"  # a string literal (unterminated: to the end)
    r'|"(?:[^"]|"")*"?'  # a quoted identifier
    r"|--[^\n]*|/\*.*?(?:\*/|$)"  # comments
    r"|\$(?P<tag>[A-Za-z_]\w*)?\$.*?(?:\$(?P=tag)\$|$)"  # PostgreSQL dollar quoting
    r"|(?P<semicolon>;)|(?P<mark>\?|%s)", re.S)


def code_spans(sql: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` of each semicolon (``";"``) and placeholder, ``?`` or ``%s``
    (``"?"``), of ``sql`` that is SQL, not inside a string, a quoted name, a comment or a
    dollar-quoted body."""
    found = []
    for match in _LEXEME.finditer(sql):
        if match.group("semicolon"):
            found.append((match.start(), match.end(), ";"))
        elif match.group("mark"):
            found.append((match.start(), match.end(), "?"))
    return found


_BLANK = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)


def statement_count(sql: str) -> int:
    """How many statements ``sql`` holds (a trailing ``;``, blanks and comments count none)."""
    count, start = 0, 0
    for begin, end, kind in code_spans(sql):
        if kind == ";":
            if _BLANK.fullmatch(sql, start, begin) is None:
                count += 1
            start = end
    return count + (_BLANK.fullmatch(sql, start) is None)


def fingerprint(sql: str) -> tuple[str, str]:
    """``(normalized text, 16-hex id)`` of ``sql``, remembered for the next call."""
    found = _cache.get(sql)
    if found is None:
        text = normalize(sql)
        found = (text, hashlib.blake2b(text.encode(), digest_size=8).hexdigest())
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[sql] = found
    return found


_SELECT_LIST = re.compile(r"^SELECT\s+(?:DISTINCT\s+)?(?!\()(.+?)\s+FROM\s", re.I | re.S)


def short(text: str, width: int = 90) -> str:
    """A statement for one line of a report: a long SELECT list becomes ``...``, then the text
    is cut at ``width``."""
    if len(text) > width:
        text = _SELECT_LIST.sub("SELECT ... FROM ", text, count=1)
    return text if len(text) <= width else text[:width - 3] + "..."


def is_transaction_control(text: str) -> bool:
    """Whether a normalized statement is BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE."""
    return text.split(" ", 1)[0].upper() in _TRANSACTION


def is_select(text: str) -> bool:
    head = text[:6].upper()
    return head == "SELECT" or (head.startswith("WITH") and "SELECT" in text.upper())


class StatementStats:
    """Counters of one fingerprint. Updated without a lock: under heavy threading a count may
    be off by a few, which statistics tolerate and a lock per statement would not."""

    __slots__ = ("fingerprint", "statement", "calls", "errors", "rows", "total", "max",
                 "first_seen", "last_seen", "_samples", "_next", "example")

    def __init__(self, fingerprint: str, statement: str) -> None:
        self.fingerprint = fingerprint
        self.statement = statement
        self.calls = self.errors = self.rows = 0
        self.total = self.max = 0.0
        self.first_seen = self.last_seen = time.time()
        self._samples: list[float] = []
        self._next = 0
        #: the first run's SQL and parameters, for EXPLAIN (kept in this process only: what
        #: leaves it is the normalized statement and the redacted parameters)
        self.example: tuple[str, Any] | None = None

    def add(self, duration: float, rows: int, failed: bool) -> None:
        self.calls += 1
        self.total += duration
        if duration > self.max:
            self.max = duration
        if rows > 0:
            self.rows += rows
        if failed:
            self.errors += 1
        self.last_seen = time.time()
        samples = self._samples
        if len(samples) < _SAMPLES:
            samples.append(duration)
        else:
            samples[self._next] = duration
            self._next = (self._next + 1) % _SAMPLES

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self._samples)
        return {
            "fingerprint": self.fingerprint,
            "statement": self.statement,
            "calls": self.calls,
            "errors": self.errors,
            "rows": self.rows,
            "total_ms": _ms(self.total),
            "mean_ms": _ms(self.total / self.calls) if self.calls else 0.0,
            "p50_ms": _ms(_quantile(ordered, 0.50)),
            "p95_ms": _ms(_quantile(ordered, 0.95)),
            "max_ms": _ms(self.max),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


class StatementTable:
    """The statistics of every fingerprint seen, at most ``capacity`` of them plus
    :data:`OTHER`."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._entries: dict[str, StatementStats] = {}
        self._lock = threading.Lock()
        self.since = time.time()

    def entry(self, sql: str) -> StatementStats:
        """The statistics ``sql`` counts under (created on first sight)."""
        text, key = fingerprint(sql)
        found = self._entries.get(key)
        if found is None:
            with self._lock:
                found = self._entries.get(key)
                if found is None:
                    if len(self._entries) >= self.capacity:
                        found = self._entries.get(OTHER)
                        if found is None:
                            found = self._entries[OTHER] = StatementStats(
                                OTHER, "(statements beyond the monitor's capacity)")
                        return found
                    found = self._entries[key] = StatementStats(key, text)
        return found

    def entries(self) -> list[StatementStats]:
        return list(self._entries.values())

    def snapshot(self, example: Callable[[StatementStats], Any] = lambda _e: None
                 ) -> list[dict[str, Any]]:
        """Every entry as a dict (``example``: what to show of its first run), the costliest
        (total time) first."""
        rows = [{**e.as_dict(), "example": example(e)} for e in list(self._entries.values())]
        rows.sort(key=lambda r: r["total_ms"], reverse=True)
        return rows

    def reset(self) -> None:
        with self._lock:
            self._entries = {}
            self.since = time.time()
