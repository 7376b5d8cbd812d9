"""URL parsing, redaction and where the URL comes from."""

from __future__ import annotations

import re

import pytest

from embeddb import config
from embeddb.errors import ConfigurationError
from embeddb.url import parse, redact


@pytest.mark.parametrize(
    "url, path",
    [
        ("sqlite:///app.db", "app.db"),
        ("sqlite:////var/data/app.db", "/var/data/app.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///dir%20with%20space/a.db", "dir with space/a.db"),
    ],
)
def test_sqlite_urls(url, path):
    parsed = parse(url)
    assert parsed.backend == "sqlite" and parsed.path == path


def test_postgres_url_parts_and_options():
    parsed = parse("postgresql://app:s3cr%40t@db.local:6543/shop?max_connections=5&schema=x")
    assert (parsed.backend, parsed.host, parsed.port, parsed.user) == (
        "postgresql", "db.local", 6543, "app")
    assert parsed.password == "s3cr@t"
    assert parsed.database == "shop"
    assert parsed.options == {"max_connections": "5", "schema": "x"}
    assert "s3cr" not in str(parsed) and "s3cr" not in repr(parsed)
    assert parse("postgres://h/db").backend == "postgresql"


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("mysql://h/db", "unknown database URL scheme 'mysql'"),
        ("app.db", "malformed database URL"),
        ("", "empty database URL"),
        ("sqlite://app.db", "three slashes"),
        ("sqlite:///", "names no file"),
        ("postgresql://h:notaport/db", "malformed PostgreSQL URL"),
        ("postgresql://h:5432", "names no database"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        parse(url)


def test_sqlite_url_naming_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="is a directory"):
        parse(f"sqlite:///{tmp_path}")


def test_redact_hides_only_the_password():
    assert redact("postgresql://u:pw@h:1/d") == "postgresql://u:***@h:1/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_url_resolution_order(tmp_path, monkeypatch):
    monkeypatch.delenv(config.ENV_URL, raising=False)
    assert config.resolve_url(cwd=tmp_path) == config.DEFAULT_URL
    (tmp_path / "embeddb.toml").write_text('[database]\nurl = "sqlite:///from-file.db"\n')
    assert config.resolve_url(cwd=tmp_path) == "sqlite:///from-file.db"
    monkeypatch.setenv(config.ENV_URL, "sqlite:///from-env.db")
    assert config.resolve_url(cwd=tmp_path) == "sqlite:///from-env.db"
    assert config.resolve_url("sqlite:///arg.db", cwd=tmp_path) == "sqlite:///arg.db"


def test_broken_config_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(config.ENV_URL, raising=False)
    (tmp_path / "embeddb.toml").write_text("[database\nurl=")
    with pytest.raises(ConfigurationError, match="cannot read .*embeddb.toml"):
        config.resolve_url(cwd=tmp_path)
    (tmp_path / "embeddb.toml").write_text("[database]\nurl = 5\n")
    with pytest.raises(ConfigurationError, match="must be a non-empty string"):
        config.resolve_url(cwd=tmp_path)


def test_settings_from_query_and_overrides():
    settings = config.build_settings(
        config.PostgresSettings, {"max_connections": "7"}, {"timeout": 2}
    )
    assert settings.max_connections == 7 and settings.timeout == 2.0
    with pytest.raises(ConfigurationError, match="unknown option 'nope'"):
        config.build_settings(config.SqliteSettings, {}, {"nope": 1})
    with pytest.raises(ConfigurationError, match="must be an integer"):
        config.build_settings(config.SqliteSettings, {"cache_size_kib": "lots"}, {})
    with pytest.raises(ConfigurationError, match="synchronous"):
        config.build_settings(config.SqliteSettings, {}, {"synchronous": "SOMETIMES"})


def test_an_empty_url_is_an_error_not_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_URL, raising=False)
    with pytest.raises(ConfigurationError, match="empty database URL"):
        parse(config.resolve_url(""))
    monkeypatch.setenv(config.ENV_URL, "")
    with pytest.raises(ConfigurationError, match="set but empty"):
        config.resolve_url()
    assert not (tmp_path / "embeddb.db").exists()


@pytest.mark.parametrize("text, key", [
    ('[database]\nulr = "sqlite:///typo.db"\n', "'ulr' in [database]"),
    ('[databse]\nurl = "sqlite:///typo.db"\n', "'databse'"),
    ('url = "sqlite:///typo.db"\n', "'url'"),
])
def test_a_misspelled_config_key_is_an_error_naming_it(tmp_path, monkeypatch, text, key):
    from click.testing import CliRunner

    from embeddb.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config.ENV_URL, raising=False)
    (tmp_path / "embeddb.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=f"unknown key {re.escape(key)}; known: "
                       r"\[database\] url/migrations/seeds/backups, \[migrate\] keep_backups"):
        config.resolve_url(cwd=tmp_path)
    result = CliRunner().invoke(cli, ["migrate", "up"])  # would create the default database
    assert result.exit_code == 1 and f"unknown key {key}" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embeddb.toml"]


def test_the_redis_url_is_env_then_embeddb_toml_then_none(tmp_path, monkeypatch):
    monkeypatch.delenv(config.ENV_REDIS_URL, raising=False)
    assert config.resolve_redis_url(cwd=tmp_path) is None
    (tmp_path / "embeddb.toml").write_text('[cache]\nredis_url = "redis://file:6379/0"\n')
    assert config.resolve_redis_url(cwd=tmp_path) == "redis://file:6379/0"
    monkeypatch.setenv(config.ENV_REDIS_URL, "redis://env:6379/1")
    assert config.resolve_redis_url(cwd=tmp_path) == "redis://env:6379/1"
    monkeypatch.setenv(config.ENV_REDIS_URL, " ")
    assert config.resolve_redis_url(cwd=tmp_path) is None  # set but empty: no Redis tier
    monkeypatch.delenv(config.ENV_REDIS_URL)
    (tmp_path / "embeddb.toml").write_text("[cache]\nredis_url = 6379\n")
    with pytest.raises(ConfigurationError, match=r"\[cache\] redis_url must be a non-empty string"):
        config.resolve_redis_url(cwd=tmp_path)
