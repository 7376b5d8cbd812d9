"""What of a statement may leave the process: secrets never do, by construction.

A statement that names a secret-looking column (password, token, key, secret, hash, salt,
credential) anywhere has *every* parameter masked and is shown normalized (its literals folded
to ``?``), so no clause shape (``BETWEEN``, ``lower(col) = lower(?)``, ``? = col``, an upsert's
``SET "password" = ?``, a long ``IN`` list, an inline literal) can slip a value through. Used
wherever a statement is published, logged or put in an error message.
"""

from __future__ import annotations

import re
from typing import Any

from .statements import StatementStats, fingerprint, normalize

MASK = "***"
#: column names whose values never reach a log
SECRET = re.compile(r"pass(word|wd|phrase)?|token|secret|key|salt|credential|hash", re.I)
#: parameters shown per statement: enough to reproduce it, bounded for a 10,000-row IN list
SHOWN_PARAMS = 50


def sensitive(sql: str) -> bool:
    """Whether ``sql`` (outside its string literals) names something secret-looking."""
    return SECRET.search(fingerprint(sql)[0]) is not None


def shown_sql(sql: str) -> str:
    """``sql`` as it may be logged: normalized when it is :func:`sensitive`."""
    return normalize(sql) if sensitive(sql) else sql


def redact(sql: str, params: Any) -> list[Any]:
    """``params`` as a list that may be logged: all masked when ``sql`` is :func:`sensitive`,
    else long values shortened; at most :data:`SHOWN_PARAMS` of them (then a ``"... N more"``)."""
    if params is None:
        return []
    masked = sensitive(sql)
    if isinstance(params, dict):
        return [{k: MASK if masked else _loggable(v) for k, v in params.items()}]
    values = list(params)
    shown = [MASK if masked else _loggable(v) for v in values[:SHOWN_PARAMS]]
    if len(values) > SHOWN_PARAMS:
        shown.append(f"... {len(values) - SHOWN_PARAMS} more")
    return shown


def error_text(error: BaseException, sql: str) -> str:
    """``error`` for a log: of a :func:`sensitive` statement only the first line (PostgreSQL
    quotes the statement after ``LINE 1:`` and the values after ``DETAIL:``)."""
    text = str(error)
    return text.split("\n", 1)[0] if sensitive(sql) else text


def _loggable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "..."
    return value


def published_example(stats: StatementStats) -> dict[str, Any] | None:
    """The first run of a statement as it may leave the process: the normalized statement
    (never its literals) and the redacted parameters."""
    if stats.example is None:
        return None
    sql, params = stats.example
    return {"sql": stats.statement, "params": redact(sql, params), "redacted": sensitive(sql)}
