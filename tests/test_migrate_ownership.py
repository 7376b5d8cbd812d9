"""A root-run ``migrate`` (or a root process using the cache) never locks the database's owner
out: run as root against a database owned by another user, then used as that user (a forked
child that drops root)."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, other_user, shared_directory

import embeddb
from embeddb import migrate
from embeddb.cache.tiered import Cache
from embeddb.cli import cli

pytestmark = needs_root


def _make_database(path: str) -> None:
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute_sql("INSERT INTO items (name) VALUES ('first')")
    db.close()
    os.chmod(path, 0o644)


def _migrate_as_owner(path: str, folder: str) -> list[str]:
    db = embeddb.connect(f"sqlite:///{path}")
    try:
        return migrate.up(db, folder, lock_timeout=2).names
    finally:
        db.close()


def _cache_as_owner(path: str) -> dict:
    db = embeddb.connect(f"sqlite:///{path}")
    cache = Cache.for_database(db)
    seen = cache.get("set-by-root")  # from L2: this process's L1 is empty
    cache.set("set-by-owner", {"n": 2})
    cache.invalidate("set-by-root")
    stats = cache.stats()
    db.close()
    return {"seen": seen, "mine": cache.get("set-by-owner"), "l2": stats["l2"],
            "shared": stats["shared"]}


def _owner(path: str | Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_root_run_migrate_and_cache_stay_usable_by_the_database_owner() -> None:
    owner = other_user()
    with shared_directory() as home:
        live = str(home / "app.db")
        folder = home / "migrations"
        folder.mkdir()
        (folder / "0001_tags.up.sql").write_text("CREATE TABLE tags (id INTEGER PRIMARY KEY);")
        as_user(_make_database, live)
        url = f"sqlite:///{live}"

        result = CliRunner().invoke(cli, ["--db", url, "migrate", "up", "--migrations",
                                          str(folder)])  # as root
        assert result.exit_code == 0, result.output
        assert _owner(live + ".migrate-lock") == owner  # main: root's, unopenable by the owner
        assert result.output.startswith("Backup: ")

        root_db = embeddb.connect(url)  # a root-run job that caches (the seed, a script...)
        cache = Cache.for_database(root_db)
        cache.set("set-by-root", {"n": 1})
        cache.close()
        root_db.close()
        leftovers = [str(p) for p in Path(live + "-cache").rglob("*")
                     if _owner(p) != owner]
        assert _owner(live + "-cache") == owner and leftovers == []

        seen = as_user(_cache_as_owner, live)
        assert seen["seen"] == {"n": 1} and seen["mine"] == {"n": 2}
        assert seen["shared"] is True and seen["l2"]["errors"] == 0, seen

        (folder / "0002_more.up.sql").write_text("CREATE TABLE more (id INTEGER);")
        assert as_user(_migrate_as_owner, live, str(folder)) == ["0002_more"]
        after = as_user(_cache_as_owner, live)  # the owner's migration cleared the cache
        assert after["seen"] is None and after["mine"] == {"n": 2}
        assert after["l2"]["errors"] == 0, after


def test_a_counter_file_root_makes_again_belongs_to_the_database_owner() -> None:
    """A root process whose cache's counter file was removed makes it again at its next
    write, handed to the database's owner at once (the directory was handed over only when
    the cache opened)."""
    owner = other_user()
    with shared_directory() as home:
        live = str(home / "app.db")
        as_user(_make_database, live)
        root_db = embeddb.connect(f"sqlite:///{live}")
        cache = Cache.for_database(root_db)
        try:
            cache.set("k", 1)
            counters = Path(live + "-cache") / "generations"
            counters.unlink()
            cache.invalidate("k")  # re-creates the counter file
            assert counters.exists() and _owner(counters) == owner
        finally:
            cache.close()
            root_db.close()


def _counters_for_root(directory: str) -> str:
    from embeddb.cache.generations import SharedGenerations

    try:
        SharedGenerations(directory, owner=(0, 0)).close()
    except OSError as exc:
        return type(exc).__name__
    return "opened"


def test_counters_that_cannot_be_handed_over_fail_with_the_os_error() -> None:
    """A counter file that cannot be given to its owner (here: a user giving it to root) is
    an OSError, which the cache turns into "bypass the cache"; not a crash of another kind."""
    with shared_directory() as home:
        assert as_user(_counters_for_root, str(home)) == "PermissionError"
