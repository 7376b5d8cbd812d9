"""Settings in one place: where the database URL comes from and the tuning defaults.

Each default says why it has that value. Everything here can be overridden per call through
:func:`embeddb.connect` keyword arguments or, for PostgreSQL, the URL's query string.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError
from .url import parse, redact

ENV_URL = "EMBEDDB_DATABASE_URL"
ENV_MONITOR = "EMBEDDB_MONITOR"
ENV_REDIS_URL = "EMBEDDB_REDIS_URL"
CONFIG_FILE = "embeddb.toml"
# A file beside the app, so a first run needs no set-up and no server.
DEFAULT_URL = "sqlite:///embeddb.db"

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class SqliteSettings:
    """Connection settings applied to every SQLite connection, in every thread."""

    # WAL + NORMAL lost no committed transaction on process kills (FACTS.md); FULL is ~18x slower
    # and only adds safety against power loss.
    synchronous: str = "NORMAL"
    # Writers queue behind BEGIN IMMEDIATE; 5 s rides out any sane write burst before failing.
    busy_timeout: float = 5.0
    # 64 MiB of page cache per connection: the working set of a typical app stays in memory.
    cache_size_kib: int = 64 * 1024
    # Reads through mmap skip a copy per page; 256 MiB covers most embedded databases.
    mmap_size: int = 256 * 1024 * 1024
    # Truncate the WAL back to 64 MiB after checkpoints so one big write does not pin disk forever.
    journal_size_limit: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous={self.synchronous!r} is not one of {', '.join(_SYNCHRONOUS)}"
            )
        if self.busy_timeout < 0:
            raise ConfigurationError("busy_timeout must be >= 0 seconds")


@dataclass(frozen=True)
class PostgresSettings:
    """Pool and connection settings for PostgreSQL (also readable from the URL query string)."""

    # Enough for a threaded web app on one machine without exhausting the server's 100 slots.
    max_connections: int = 20
    # Recycle connections after 5 minutes so server-side restarts and memory growth heal.
    stale_timeout: int = 300
    # Wait this long for a free pooled connection before PoolExhausted.
    timeout: float = 10.0
    # A server that does not answer must fail in seconds, not hang the app or the CLI.
    connect_timeout: int = 5
    # search_path for every connection; None keeps the server's default ("$user", public).
    schema: str | None = None


def resolve_url(url: str | None = None, cwd: str | os.PathLike[str] | None = None) -> str:
    """Pick the database URL: argument > $EMBEDDB_DATABASE_URL > embeddb.toml > the default.

    An argument that is a bare name (no ``://``, e.g. ``"users"``) is the URL of that named
    database (:func:`named_database`).

    :raises ConfigurationError: embeddb.toml exists but is unreadable or has no usable URL,
        or names databases but no default one, or ``url`` is a name it does not configure.
    """
    if url is not None:  # "" is a mistake to report (by parse), not "use the default"
        if is_name(url):
            return named_database(url, cwd).url
        return url
    env = os.environ.get(ENV_URL)
    if env is not None:
        if not env.strip():
            raise ConfigurationError(f"${ENV_URL} is set but empty: unset it or give a URL")
        return env
    config = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE)
    file_url = config.get("database", {}).get("url")
    if file_url is not None:
        if not isinstance(file_url, str) or not file_url:
            raise ConfigurationError(f"{CONFIG_FILE}: [database] url must be a non-empty string")
        return file_url
    if config.get("databases"):
        names = ", ".join(config["databases"])
        raise ConfigurationError(
            f"{CONFIG_FILE} names databases ({names}) but no default one: pass a name "
            f"(--database NAME, connect(\"NAME\")) or add [database] url = ...")
    return DEFAULT_URL


def resolve_redis_url(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The Redis URL of the shared cache tier: $EMBEDDB_REDIS_URL > embeddb.toml ``[cache]
    redis_url`` > None (no Redis tier: the cache stays on this machine).

    :raises ConfigurationError: embeddb.toml is unreadable or its redis_url is not a string.
    """
    env = redis_url_from_environment()
    if env is not None:
        return env or None  # set but empty: explicitly no Redis tier
    config = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE)
    url = config.get("cache", {}).get("redis_url")
    if url is not None and (not isinstance(url, str) or not url):
        raise ConfigurationError(f"{CONFIG_FILE}: [cache] redis_url must be a non-empty string")
    return url


def redis_url_from_environment() -> str | None:
    """$EMBEDDB_REDIS_URL, stripped ("" when set but empty: no Redis tier), or None when unset.

    :raises ConfigurationError: it is set to something that is not a Redis URL.
    """
    env = os.environ.get(ENV_REDIS_URL)
    if env is None or not env.strip():
        return None if env is None else ""
    return check_redis_url(env.strip(), f"${ENV_REDIS_URL}", " (set it empty for no Redis tier)")


#: the schemes redis-py connects with
REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_url(url: str, source: str, advice: str = "") -> str:
    """``url`` when redis-py can connect with it.

    :raises ConfigurationError: it is not a Redis URL, or redis-py is missing; the message
        names ``source`` (where the URL was given) and hides any password.
    """
    try:
        parts = urlsplit(url)
        usable = parts.scheme in REDIS_SCHEMES and (parts.scheme != "unix" or bool(parts.path))
        parts.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        usable = False
    if not usable:
        raise ConfigurationError(
            f"{source} {redact(url)!r} is not a Redis URL: use redis://HOST:PORT/DB, "
            f"rediss://HOST:PORT/DB or unix://PATH{advice}")
    if importlib.util.find_spec("redis") is None:  # looked up, not imported
        raise ConfigurationError(
            f"{source} {redact(url)!r} needs redis-py, which is not installed: pip install "
            f"'embeddb[redis]'{advice}")
    return url


#: the keys of a ``[databases.NAME]`` table (``[database]`` takes the same)
DATABASE_KEYS = ("url", "migrations", "seeds", "backups")
#: what a database name may be: it becomes part of file names and environment variables
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
ENV_NAMED_URL = "EMBEDDB_DATABASE_URL_{}"
#: the name of the unnamed ``[database]`` (``--database default``, ``connect("default")``)
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class NamedDatabase:
    """One database of ``embeddb.toml``: ``[databases.NAME]`` (or the unnamed ``[database]``,
    whose ``name`` is None), with the folders its commands use.

    ``migrations`` / ``seeds`` default to ``migrations/NAME`` / ``seeds/NAME`` for a named
    database; ``backups`` None keeps the backend's default directory. Relative paths are
    relative to the directory of ``embeddb.toml`` (the working directory).
    """

    name: str | None
    url: str
    migrations: str | None = None
    seeds: str | None = None
    backups: str | None = None

    @property
    def label(self) -> str:
        """How messages name it: the name, or ``default``."""
        return self.name or "default"


def is_name(text: str) -> bool:
    """Whether ``text`` is a database name rather than a URL (``users``, not ``sqlite:///x``)."""
    return "://" not in text and _NAME.fullmatch(text) is not None


def named_databases(cwd: str | os.PathLike[str] | None = None) -> dict[str, NamedDatabase]:
    """Every ``[databases.NAME]`` of embeddb.toml, in file order (empty without the file).

    ``$EMBEDDB_DATABASE_URL_<NAME>`` (the name upper-cased) overrides one database's ``url``.

    :raises ConfigurationError: the file is unreadable or a table is malformed.
    """
    path = Path(cwd or os.getcwd()) / CONFIG_FILE
    return _named_in(load_config_file(path), path, cwd)


def _named_in(config: dict[str, Any], path: Path,
              cwd: str | os.PathLike[str] | None) -> dict[str, NamedDatabase]:
    found: dict[str, NamedDatabase] = {}
    for name, table in config.get("databases", {}).items():
        variable = ENV_NAMED_URL.format(name.upper())
        url = os.environ.get(variable, table["url"])
        if not url.strip():  # as for $EMBEDDB_DATABASE_URL: not "use the file's url"
            raise ConfigurationError(f"${variable} is set but empty: unset it or give a URL")
        found[name] = NamedDatabase(
            name, url, table.get("migrations") or f"migrations/{name}",
            table.get("seeds") or f"seeds/{name}", table.get("backups"))
    urls = {DEFAULT_NAME: config["database"]["url"]} if "url" in config.get("database", {}) \
        else {}
    _check_distinct(path, {**urls, **{name: e.url for name, e in found.items()}}, cwd)
    return found


def _check_distinct(path: Path, urls: dict[str, str],
                    cwd: str | os.PathLike[str] | None) -> None:
    """:raises ConfigurationError: two names are one database (a table copied for a new
    database with its url left as it was: one name's migrations would run in the other)."""
    seen: dict[tuple[Any, ...], str] = {}
    for name, url in urls.items():
        key = _identity(url, cwd)
        if key is None:
            continue
        other = seen.setdefault(key, name)
        if other != name:
            raise ConfigurationError(
                f"{path}: {other} and {name} are the same database ({redact(urls[other])}, "
                f"{redact(url)}): give each name a database of its own")


def _identity(url: str, cwd: str | os.PathLike[str] | None) -> tuple[Any, ...] | None:
    """What makes ``url`` the database it is: the file (after realpath), or the server,
    database and schema; None for ``:memory:`` (a new one per connect) or a malformed URL
    (reported when that database is opened)."""
    try:
        parsed = parse(url)
    except ConfigurationError:
        return None
    if parsed.is_memory:
        return None
    if parsed.backend == "sqlite":
        return ("sqlite", os.path.realpath(os.path.join(cwd or os.getcwd(), parsed.path or "")))
    return (parsed.backend, parsed.host or "", parsed.port or 5432, parsed.database,
            parsed.options.get("schema") or "public")


def name_of(url: str, cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The ``[databases.NAME]`` that is the same database as ``url`` (None: none, or
    embeddb.toml is unusable): what a backup of a database opened by URL records, so that
    it is refused in another database as a backup made by name is."""
    entry = _configured_as(url, cwd)
    return entry.name if entry is not None else None


def _configured_as(url: str, cwd: str | os.PathLike[str] | None,
                   default: bool = False) -> NamedDatabase | None:
    """The ``[databases.NAME]`` entry that is the same database as ``url`` (see name_of);
    with ``default``, also ``[database]`` with its folders (name None)."""
    key = _identity(url, cwd)
    if key is None:
        return None
    path = Path(cwd or os.getcwd()) / CONFIG_FILE
    try:
        config = load_config_file(path)
        found = list(_named_in(config, path, cwd).values())
    except ConfigurationError:
        return None
    table = config.get("database", {})
    if default and "url" in table:
        found.append(NamedDatabase(None, str(table["url"]), table.get("migrations"),
                                   table.get("seeds"), table.get("backups")))
    return next((entry for entry in found if _identity(entry.url, cwd) == key), None)


def named_database(name: str, cwd: str | os.PathLike[str] | None = None) -> NamedDatabase:
    """The database ``name`` of embeddb.toml.

    :raises ConfigurationError: no such name; the message lists the configured ones.
    """
    if name == DEFAULT_NAME:
        return default_database(cwd)
    found = named_databases(cwd)
    if name in found:
        return found[name]
    near = [other for other in found if other.lower() == name.lower()]
    if near:  # names are case-sensitive: Users is not users
        raise ConfigurationError(
            f"no database named {name!r} in {CONFIG_FILE}: did you mean {near[0]!r}? (names "
            "are case-sensitive)")
    known = ", ".join(found) or "none"
    if not found and not (Path(cwd or os.getcwd()) / CONFIG_FILE).exists():
        known = f"none: no {CONFIG_FILE} in {os.path.abspath(cwd or os.getcwd())}"
    raise ConfigurationError(
        f"no database named {name!r} in {CONFIG_FILE} (configured: {known}): add "
        f"[databases.{name}] url = ... or pass a URL")


def default_database(cwd: str | os.PathLike[str] | None = None) -> NamedDatabase:
    """The unnamed database: its URL by :func:`resolve_url`, folders from ``[database]``."""
    table = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE).get("database", {})
    return NamedDatabase(None, resolve_url(None, cwd), table.get("migrations"),
                         table.get("seeds"), table.get("backups"))


def configured_names(cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """The databases ``--all`` runs over: ``default`` when embeddb.toml has a ``[database]``
    url, then every ``[databases.NAME]`` in file order.

    :raises ConfigurationError: embeddb.toml configures none.
    """
    config = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE)
    names = (["default"] if "url" in config.get("database", {}) else []) + list(
        config.get("databases", {}))
    if not names:
        raise ConfigurationError(
            f"{CONFIG_FILE} configures no database to run over: add [databases.NAME] url = ...")
    found = named_databases(cwd)
    if names[0] == DEFAULT_NAME and os.environ.get(ENV_URL):
        # $EMBEDDB_DATABASE_URL exported to reach a named one would run the default's work there
        _check_distinct(Path(cwd or os.getcwd()) / CONFIG_FILE, {
            f"${ENV_URL} (the default database)": os.environ[ENV_URL],
            **{name: entry.url for name, entry in found.items()}}, cwd)
    return names


def database_entry(url: str | None = None,
                   cwd: str | os.PathLike[str] | None = None) -> NamedDatabase:
    """What ``connect(url)`` opens: a name's entry, the default database, or a URL.

    A URL of a ``[databases.NAME]`` (the same file, or server, database and schema, however
    spelled) is that entry with the URL as given: its migrations, seeds and backups, as by
    name, never the default database's; the URL of ``[database]`` is the default entry with
    its folders. Any other URL is an entry of its own (no name)."""
    if url is None:
        default = default_database(cwd)
        if os.environ.get(ENV_URL):  # exported to reach a named database: that one's folders
            entry = _configured_as(default.url, cwd)
            if entry is not None:
                return replace(entry, url=default.url)
        return default
    if is_name(url):
        return named_database(url, cwd)
    entry = _configured_as(url, cwd, default=True)
    return replace(entry, url=url) if entry is not None else NamedDatabase(None, url)


def _check_databases(path: Path, tables: Any) -> None:
    """:raises ConfigurationError: ``[databases]`` is not a table of well-formed databases."""
    if not isinstance(tables, dict):
        raise ConfigurationError(f"{path}: databases must be tables: [databases.NAME] url = ...")
    seen: dict[str, str] = {}
    for name, table in tables.items():
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise ConfigurationError(
                f"{path}: database names {other!r} and {name!r} differ only in case (they "
                f"share ${ENV_NAMED_URL.format(name.upper())} and backup file names): rename one")
        if name == DEFAULT_NAME:
            raise ConfigurationError(
                f"{path}: [databases.{DEFAULT_NAME}] is reserved: put the default database in "
                "[database]")
        if not _NAME.fullmatch(name):
            raise ConfigurationError(
                f"{path}: database name {name!r} is not usable: a letter, then letters, "
                "digits or _ (at most 63)")
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [databases.{name}] must be a table with a url")
        _check_database_table(path, f"databases.{name}", table)
        if "url" not in table:
            raise ConfigurationError(f"{path}: [databases.{name}] has no url")


def _check_database_table(path: Path, where: str, table: dict[str, Any],
                          known: str | None = None) -> None:
    for key, value in table.items():
        if key not in DATABASE_KEYS:
            raise ConfigurationError(f"{path}: unknown key {key!r} in [{where}]; known: "
                                     f"{known or ', '.join(DATABASE_KEYS)}")
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"{path}: [{where}] {key} must be a non-empty string")


#: every key embeddb.toml may hold, by table
_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "database": DATABASE_KEYS,
    "databases": (),  # [databases.NAME] tables: checked by _check_databases
    "migrate": ("keep_backups",),  # read by embeddb.migrate.safety
    "maintenance": ("retention",),  # read by embeddb.retention
    "monitor": ("enabled", "slow_ms", "nplusone_threshold", "max_statements", "publish"),
    "cache": ("redis_url",),  # read by resolve_redis_url
}


def load_config_file(path: Path) -> dict[str, Any]:
    """Read ``embeddb.toml`` if it exists; an absent file is an empty config.

    :raises ConfigurationError: unreadable, or a key embeddb does not know (a typo would
        otherwise be ignored silently and the default database used).
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    import tomllib  # here: most runs have no config file to parse

    try:
        with fh:
            config = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    known = [f"[{table}] {'/'.join(keys)}" for table, keys in _CONFIG_KEYS.items() if keys]
    known.append(f"[databases.NAME] {'/'.join(DATABASE_KEYS)}")
    for table, value in config.items():
        if table == "databases":
            _check_databases(path, value)
            continue
        if table == "database" and isinstance(value, dict):
            _check_database_table(path, "database", value, ", ".join(known))
            continue
        keys = _CONFIG_KEYS.get(table)
        if keys is None or not isinstance(value, dict):
            raise ConfigurationError(
                f"{path}: unknown key {table!r}; known: {', '.join(known)}")
        for key in value:
            if key not in keys:
                raise ConfigurationError(
                    f"{path}: unknown key {key!r} in [{table}]; known: {', '.join(known)}")
    redis_url = config.get("cache", {}).get("redis_url")
    if isinstance(redis_url, str) and redis_url:
        check_redis_url(redis_url, f"{path}: [cache] redis_url")
    return config


def build_settings(cls: type, query: dict[str, str], overrides: dict[str, Any]) -> Any:
    """Make ``cls`` from its defaults, then the URL query string, then keyword overrides.

    :raises ConfigurationError: an unknown option or a value of the wrong type.
    """
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for source, items in (("URL option", query), ("option", overrides)):
        for name, value in items.items():
            if name not in known:
                raise ConfigurationError(
                    f"unknown {source} {name!r}; known: {', '.join(sorted(known))}"
                )
            values[name] = _coerce(name, value, known[name].default)
    return replace(cls(), **values)


def _coerce(name: str, value: Any, default: Any) -> Any:
    if default is None or value is None or isinstance(default, str):
        return value
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number"}.get(type(default), type(default).__name__)
        raise ConfigurationError(f"option {name}={value!r} must be {kind}") from None


@dataclass(frozen=True)
class MonitorSettings:
    """What the query monitor (:mod:`embeddb.monitor`) does when it is on."""

    # Off: an app pays nothing for monitoring it did not ask for.
    enabled: bool = False
    # N+1 findings raise NPlusOneError instead of warning (for test suites and CI).
    strict: bool = False
    # Twice the 50 ms the mission sets as the bar for an average query: clearly wrong, not noise.
    slow_ms: float = 100.0
    # Ten runs of one SELECT with different parameters in a unit is a loop, not a coincidence.
    nplusone_threshold: int = 10
    # An app's whole vocabulary of statements fits; each costs ~5 KiB (512 duration samples).
    max_statements: int = 1000
    # Publish statistics beside the database for `embeddb stats` in another terminal.
    publish: bool = True


_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off", "")


def monitor_mode(value: Any, source: str) -> tuple[bool, bool] | None:
    """``(enabled, strict)`` from True/False/"strict"/"1"/"off"...; None for None.

    :raises ConfigurationError: a value that is none of these.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value, False
    text = str(value).strip().lower()
    if text == "strict":
        return True, True
    if text in _ON:
        return True, False
    if text in _OFF:
        return False, False
    raise ConfigurationError(
        f"{source}={value!r}: use true, false or \"strict\" (N+1 findings then raise)")


def monitor_settings(
    argument: Any = None, url_value: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> MonitorSettings:
    """The monitor settings: ``monitor=`` argument > URL ``?monitor=`` > $EMBEDDB_MONITOR >
    embeddb.toml ``[monitor]`` > off. The other ``[monitor]`` keys apply whenever it is on.

    :raises ConfigurationError: an unusable value in any of these places.
    """
    table = load_config_file(Path(cwd or os.getcwd()) / CONFIG_FILE).get("monitor", {})
    mode = (monitor_mode(argument, "monitor")
            or monitor_mode(url_value, "URL option monitor")
            or monitor_mode(os.environ.get(ENV_MONITOR), f"${ENV_MONITOR}")
            or monitor_mode(table.get("enabled"), f"{CONFIG_FILE} [monitor] enabled")
            or (False, False))
    values = {k: v for k, v in table.items() if k != "enabled"}
    try:
        settings = replace(MonitorSettings(), enabled=mode[0], strict=mode[1], **values)
    except TypeError as exc:
        raise ConfigurationError(f"{CONFIG_FILE} [monitor]: {exc}") from None
    for name in ("slow_ms", "nplusone_threshold", "max_statements"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigurationError(
                f"{CONFIG_FILE} [monitor] {name}={value!r} must be a positive number")
    return settings
