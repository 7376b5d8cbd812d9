"""Cutting a migration script into statements, so each runs inside the migration's transaction.

Python's ``executescript`` commits whatever is open first, so it only takes a plain script with
the BEGIN put in front (``SqliteDialect.run_script``); a script that controls its transaction,
a no-transaction one, a failed one (to name the failing line) and every PostgreSQL script run
statement by statement. SQLite scripts are cut where SQLite's own tokenizer
(``sqlite3.complete_statement``) says a statement is complete, which copes with trigger bodies,
quotes and comments. PostgreSQL scripts are cut by a small scanner that knows quotes, comments
(nested ``/* */``) and dollar-quoted bodies.
"""

from __future__ import annotations

import re
import sqlite3
from typing import NamedTuple

_TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "END", "ROLLBACK", "START", "ABORT"}
_TRANSACTION_WORD = re.compile(r"\b(?:" + "|".join(_TRANSACTION_CONTROL) + r")\b", re.IGNORECASE)
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$))*")
_NOISE_STARTS = frozenset(" \t\n\r\f\v-/")
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_PG_TOKEN = re.compile(r"[;'\"$]|--|/\*|\b(?:BEGIN\s+ATOMIC|CASE|END)\b", re.IGNORECASE)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\x80-\uffff]")


class Statement(NamedTuple):
    """One statement of a script, the line (1-based) where it starts, and its first word."""

    sql: str
    line: int
    keyword: str = ""  # upper-cased: CREATE, BEGIN...

    @property
    def controls_transaction(self) -> bool:
        """Whether this is the script's own BEGIN / COMMIT / ROLLBACK."""
        return self.keyword in _TRANSACTION_CONTROL


def may_control_transaction(text: str) -> bool:
    """Whether ``text`` might hold its own BEGIN / COMMIT / ROLLBACK: True as soon as one of
    those words appears anywhere (a trigger body, a string, a comment), so False is certain.
    A quick test that spares splitting most scripts."""
    upper = text.upper()  # substring tests first: the regex alone costs ~5x more
    return (any(word in upper for word in _TRANSACTION_CONTROL)
            and _TRANSACTION_WORD.search(text) is not None)


def may_hold_parameters(text: str) -> bool:
    """Whether ``text`` might hold a parameter marker (``?``, ``:name``, ``@name``,
    ``$name``). ``executescript`` would bind such a marker as NULL without a word, where
    running the statement on its own reports it; so False is certain, True only maybe."""
    return any(mark in text for mark in "?:@$")


def normalize(text: str) -> str:
    """Drop a byte-order mark and turn CRLF / CR line endings into LF."""
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


class _Collector:
    """Turns (start, end) slices of a text into statements, counting lines as it goes."""

    def __init__(self, text: str, nested_comments: bool = False) -> None:
        self.text = text
        self.nested_comments = nested_comments
        self.statements: list[Statement] = []
        self._line = 1
        self._counted_to = 0

    def add(self, start: int, end: int) -> None:
        text = self.text
        start = self._skip_noise(start, end)
        if start >= end or text[start] == ";" and not text[start + 1:end].strip():
            return
        self._line += text.count("\n", self._counted_to, start)
        self._counted_to = start
        word = _FIRST_WORD.match(text, start, end)
        keyword = word.group(0).upper() if word else ""
        self.statements.append(Statement(text[start:end].rstrip(), self._line, keyword))

    def _skip_noise(self, start: int, end: int) -> int:
        """Index of the first character after leading whitespace and comments."""
        text = self.text
        while True:
            if start < end and text[start] not in _NOISE_STARTS:
                return start
            noise = _LEADING_NOISE.match(text, start, end)
            assert noise is not None  # the pattern also matches nothing
            start = noise.end()
            if not text.startswith("/*", start, end):
                return start
            if self.nested_comments:
                start = min(_end_of_block_comment(text, start), end)
            else:
                start = min(_find_or_end(text, "*/", start + 2) + 2, end)


def split_sqlite(text: str) -> list[Statement]:
    """Cut a SQLite script into statements with SQLite's own tokenizer."""
    collector = _Collector(text)
    start = 0
    semicolon = text.find(";")
    while semicolon != -1:
        if sqlite3.complete_statement(text[start:semicolon + 1]):
            collector.add(start, semicolon + 1)
            start = semicolon + 1
        semicolon = text.find(";", semicolon + 1)
    collector.add(start, len(text))
    return collector.statements


def split_postgres(text: str) -> list[Statement]:
    """Cut a PostgreSQL script into statements (quotes, comments and $tag$ bodies respected)."""
    collector = _Collector(text, nested_comments=True)
    start = pos = depth = 0  # depth: inside BEGIN ATOMIC ... END bodies (and their CASEs)
    while True:
        match = _PG_TOKEN.search(text, pos)
        if match is None:
            break
        token, at = match.group(0), match.start()
        word = token.upper()
        if token == ";":
            if depth == 0:
                collector.add(start, at + 1)
                start = at + 1
            pos = at + 1
        elif word[0] in "BCE":  # BEGIN ATOMIC, CASE, END
            depth = _atomic_depth(word, depth)
            pos = match.end()
        elif token == "'":
            pos = _end_of_string(text, at)
        elif token == '"':
            pos = _find_or_end(text, '"', at + 1) + 1
        elif token == "--":
            pos = _find_or_end(text, "\n", at)
        elif token == "/*":
            pos = _end_of_block_comment(text, at)
        else:
            pos = _end_of_dollar_quote(text, at)
    collector.add(start, len(text))
    return collector.statements


def _atomic_depth(word: str, depth: int) -> int:
    """Track SQL-standard function bodies (PostgreSQL 14+): ``BEGIN ATOMIC`` opens one, its
    statements end with ``;`` but not the function, and ``END`` (after any ``CASE``) closes."""
    if word.startswith("BEGIN"):
        return depth + 1
    if depth == 0:
        return 0  # CASE ... END in ordinary statements does not matter
    return depth + 1 if word == "CASE" else depth - 1


def _find_or_end(text: str, needle: str, start: int) -> int:
    found = text.find(needle, start)
    return len(text) if found == -1 else found


def _end_of_string(text: str, at: int) -> int:
    """Index after the literal opening at ``at`` ('' is an escaped quote; E'' allows \\')."""
    escapes = at > 0 and text[at - 1] in "eE" and (at < 2 or not _IDENT_CHAR.match(text[at - 2]))
    pos = at + 1
    while pos < len(text):
        char = text[pos]
        if escapes and char == "\\":
            pos += 2
            continue
        if char == "'":
            if text.startswith("'", pos + 1):
                pos += 2
                continue
            return pos + 1
        pos += 1
    return len(text)


def _end_of_block_comment(text: str, at: int) -> int:
    """Index after a ``/* */`` comment; PostgreSQL nests them."""
    depth, pos = 0, at
    while pos < len(text):
        if text.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif text.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return len(text)


def _end_of_dollar_quote(text: str, at: int) -> int:
    """Index after a ``$tag$ ... $tag$`` body, or after the ``$`` when it opens none."""
    if at > 0 and _IDENT_CHAR.match(text[at - 1]):
        return at + 1  # part of an identifier such as a$b
    tag = _DOLLAR_TAG.match(text, at)
    if tag is None:
        return at + 1  # a parameter such as $1
    closing = text.find(tag.group(0), tag.end())
    return len(text) if closing == -1 else closing + len(tag.group(0))
