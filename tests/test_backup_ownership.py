"""A root-run backup or restore never locks the database's owner out: run as root against a
database owned by another user, then used as that user (a forked child that drops root)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, other_user, shared_directory

import embeddb
from embeddb.backup import manifest, verify_backup
from embeddb.cli import cli

pytestmark = needs_root


def _make_database(path: str, generation: str) -> None:
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, gen TEXT)")
    db.execute_sql("DELETE FROM items")
    with db.atomic():
        for i in range(50):
            db.execute_sql("INSERT INTO items (gen) VALUES (?)", (f"{generation}{i}",))
    db.close()
    os.chmod(path, 0o644)


def _write_and_read(path: str) -> list[str]:
    db = embeddb.connect(f"sqlite:///{path}")
    db.execute_sql("INSERT INTO items (gen) VALUES ('written by the owner')")
    rows = [r[0] for r in db.execute_sql("SELECT gen FROM items ORDER BY id").fetchall()]
    db.close()
    return rows


def _verify(path: str) -> bool:
    return verify_backup(path)["ok"]


def _owner(path: str | Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_root_backup_and_restore_keep_the_database_usable_by_its_owner() -> None:
    uid, gid = other_user()
    with shared_directory() as home:
        live = str(home / "app.db")
        as_user(_make_database, live, "A")
        assert _owner(live) == (uid, gid, 0o644)
        url = f"sqlite:///{live}"
        runner = CliRunner()

        created = runner.invoke(cli, ["--db", url, "backup", "create", "--json"])  # as root
        assert created.exit_code == 0, created.output
        backup = json.loads(created.stdout)["path"]
        assert os.path.dirname(backup) == str(home / "backups")
        assert _owner(backup) == (uid, gid, 0o600)  # the owner may read the copy of their data
        assert _owner(manifest.sidecar(backup)) == (uid, gid, 0o600)
        assert _owner(home / "backups") == (uid, gid, 0o700)
        assert as_user(_verify, backup) is True  # readable, and its manifest rewritable

        as_user(_make_database, live, "B")
        restored = runner.invoke(cli, ["--db", url, "backup", "restore", backup, "--yes", "--json"])
        assert restored.exit_code == 0, restored.output
        assert _owner(live) == (uid, gid, 0o644)  # main: root-owned 0600
        assert _owner(manifest.sidecar(backup))[:2] == (uid, gid)
        safety = json.loads(restored.stdout)["safety_copy"]
        assert _owner(safety) == (uid, gid, 0o644)

        reader = embeddb.connect(url)  # root opens it again: SQLite gives -wal/-shm to the owner
        assert reader.execute_sql("SELECT count(*) FROM items").fetchone()[0] == 50
        for suffix in ("-wal", "-shm"):
            assert _owner(live + suffix)[:2] == (uid, gid), suffix
        reader.close()

        rows = as_user(_write_and_read, live)
        assert rows == [f"A{i}" for i in range(50)] + ["written by the owner"]
