"""Database URLs: parsing, validation and redaction.

Accepted forms::

    sqlite:///relative/path.db      a file relative to the working directory
    sqlite:////absolute/path.db     an absolute path
    sqlite:///:memory:              a private in-memory database
    postgresql://user:pw@host:5432/dbname?max_connections=20&schema=app
    postgres://...                  same as postgresql://
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigurationError

MEMORY = ":memory:"
_SQLITE_SCHEMES = {"sqlite"}
_POSTGRES_SCHEMES = {"postgresql", "postgres"}
_EXAMPLES = "sqlite:///app.db, sqlite:///:memory: or postgresql://user@host:5432/dbname"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed, validated database URL."""

    backend: str  # "sqlite" or "postgresql"
    raw: str = field(repr=False)
    path: str | None = None  # SQLite file path, or MEMORY
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_memory(self) -> bool:
        return self.path == MEMORY

    def connect_params(self, database: str | None = None) -> dict[str, Any]:
        """psycopg2/libpq keyword arguments for this server (``database`` overrides the name)."""
        params: dict[str, Any] = {"dbname": database or self.database}
        for key in ("host", "port", "user", "password"):
            value = getattr(self, key)
            if value is not None:
                params[key] = value
        return params

    def redacted(self) -> str:
        """The URL with any password replaced by ``***``: safe for logs and messages."""
        return redact(self.raw)

    def __str__(self) -> str:
        return self.redacted()


def redact(url: str) -> str:
    """Hide the password of a URL (``postgresql://u:secret@h`` -> ``postgresql://u:***@h``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def scrub(text: str, password: str | None) -> str:
    """``text`` on one line with ``password`` (if any) replaced by ``***``: for messages built
    from driver or tool output, which may echo connection details."""
    text = " ".join(str(text).split())
    return text.replace(password, "***") if password else text


def parse(url: str) -> DatabaseURL:
    """Parse and validate ``url``.

    :raises ConfigurationError: unknown scheme or a malformed URL.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"empty database URL: use e.g. {_EXAMPLES}")
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"malformed database URL {redact(url)!r}: expected scheme://..., e.g. {_EXAMPLES}"
        )
    scheme = scheme.lower()
    if scheme in _SQLITE_SCHEMES:
        return _parse_sqlite(url)
    if scheme in _POSTGRES_SCHEMES:
        return _parse_postgres(url)
    raise ConfigurationError(
        f"unknown database URL scheme {scheme!r} in {redact(url)!r}: use e.g. {_EXAMPLES}"
    )


def _parse_sqlite(url: str) -> DatabaseURL:
    rest = url.split("://", 1)[1]
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"malformed SQLite URL {url!r}: the path needs three slashes "
            "(sqlite:///relative.db) or four (sqlite:////absolute/path.db)"
        )
    location, _, query = rest[1:].partition("?")
    path = unquote(location)
    if not path:
        raise ConfigurationError(f"SQLite URL {url!r} names no file: e.g. sqlite:///app.db")
    if path != MEMORY and os.path.isdir(path):
        raise ConfigurationError(f"SQLite path {path!r} is a directory: name a file inside it")
    return DatabaseURL("sqlite", url, path=path, options=dict(parse_qsl(query)))


def _parse_postgres(url: str) -> DatabaseURL:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL URL {redact(url)!r}: {exc}") from None
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigurationError(
            f"PostgreSQL URL {redact(url)!r} names no database: "
            "postgresql://user@host:5432/dbname"
        )
    return DatabaseURL(
        "postgresql",
        url,
        host=parts.hostname or None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        options=dict(parse_qsl(parts.query)),
    )
