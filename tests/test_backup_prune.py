"""backup prune on real backup files: only good backups count toward --keep, the newest good one
always stays, every kind is counted together, and a dry run says what would go and why."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
from embeddb.backup import create_backup, manifest, prune_backups, verify_backup
from embeddb.cli import cli
from embeddb.errors import BackupCorrupt, BackupError


@pytest.fixture
def db(tmp_path: Path):
    database = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    database.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    database.execute_sql("INSERT INTO t (v) VALUES ('a'), ('b')")
    yield database
    database.close()


def _backups(db, folder: Path, n: int) -> list[str]:
    """``n`` regular backups, oldest first."""
    return [create_backup(db, directory=str(folder)).path for _ in range(n)]


def _premigrate(db, folder: Path) -> str:
    """A pre-migration safety copy, named the way ``migrate`` names them."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return create_backup(db, out=str(folder / f"app-premigrate-{stamp}.db")).path


def _flip_byte(path: str) -> None:
    """Damage the file in place; its size stays what the manifest says."""
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)[0]
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte ^ 0xFF]))


def _age(path: str, days: float) -> None:
    """Make the backup ``days`` old as far as its manifest says."""
    record = manifest.read(path)
    record.created_at = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    manifest.write(path, record)


def _reasons(result: dict) -> dict[str, tuple[str, str]]:
    return {d["path"]: (d["action"], d["reason"]) for d in result["decisions"]}


def test_a_newer_damaged_backup_never_pushes_out_the_older_good_one(db, tmp_path: Path) -> None:
    older, newer = _backups(db, tmp_path / "b", 2)
    _flip_byte(newer)  # same size: only the checksum tells
    result = prune_backups(str(tmp_path / "b"), keep=1)
    assert result["removed"] == [newer]
    assert result["kept"] == [older]
    assert os.path.exists(older) and not os.path.exists(newer)
    action, reason = _reasons(result)[newer]
    assert action == "deleted" and "fails its checksum" in reason
    assert _reasons(result)[older] == ("kept", "the newest good backup")
    verify_backup(older)  # the survivor is intact


def test_backups_that_failed_verify_or_lost_bytes_do_not_count(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    good, failed, truncated = _backups(db, folder, 3)
    _flip_byte(failed)
    with pytest.raises(BackupCorrupt):
        verify_backup(failed)  # recorded in its manifest as verified: false
    with open(truncated, "r+b") as fh:
        fh.truncate(100)
    dry = prune_backups(str(folder), keep=2, dry_run=True)
    assert dry["removed"] == [truncated, failed] and dry["kept"] == [good]
    reasons = _reasons(dry)
    assert reasons[truncated] == (
        "would delete", f"the file is 100 bytes but its manifest says {manifest.read(good).size}")
    assert reasons[failed][0] == "would delete"
    assert reasons[failed][1].startswith("failed verification (") and "checksum" in reasons[failed][1]
    assert all(os.path.exists(p) for p in (good, failed, truncated))  # a dry run deletes nothing


def test_a_database_without_any_good_backup_loses_nothing(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    made = _backups(db, folder, 2)
    for path in made:
        _flip_byte(path)
    result = prune_backups(str(folder), keep=1, older_than="0s")
    assert result["removed"] == [] and sorted(result["kept"]) == sorted(made)
    assert result["warnings"] == [f"no good backup of {db.url.redacted()}: nothing of it was deleted"]


def test_keep_counts_regular_and_premigrate_copies_together(db, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    r1 = _backups(db, folder, 1)[0]
    p1 = _premigrate(db, folder)
    r2 = _backups(db, folder, 1)[0]
    p2 = _premigrate(db, folder)
    dry = prune_backups(str(folder), keep=2, dry_run=True)  # main removed nothing here
    assert dry["removed"] == [r1, p1][::-1] and dry["kept"] == [p2, r2]
    assert {d["path"]: d["kind"] for d in dry["decisions"]} == {
        r1: "regular", r2: "regular", p1: "premigrate", p2: "premigrate"}
    assert _reasons(dry)[p1] == ("would delete", "beyond the newest 2 good backups")

    only = prune_backups(str(folder), keep=1, kind="premigrate")
    assert only["removed"] == [p1] and only["kept"] == [p2]
    assert all(os.path.exists(p) for p in (r1, r2, p2)) and not os.path.exists(p1)


def test_the_newest_good_and_newest_verified_backups_always_stay(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    verified, middle, newest = _backups(db, folder, 3)
    verify_backup(verified)
    result = prune_backups(str(folder), keep=0)
    assert result["removed"] == [middle]
    assert _reasons(result)[newest] == ("kept", "the newest good backup")
    assert _reasons(result)[verified] == ("kept", "the newest backup that passed backup verify")
    assert prune_backups(str(folder), older_than="0s")["removed"] == []


def test_older_than_alone_and_with_keep(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    ancient, old, recent, fresh = _backups(db, folder, 4)
    _age(ancient, 50)
    _age(old, 40)
    _age(recent, 20)
    both = prune_backups(str(folder), keep=1, older_than="30d", dry_run=True)
    assert both["removed"] == [old, ancient]
    assert _reasons(both)[recent] == ("kept", "younger than 30d")
    assert _reasons(both)[old] == ("would delete", "beyond the newest 1 good backup and older than 30d")

    alone = prune_backups(str(folder), older_than="30d")
    assert alone["removed"] == [old, ancient] and alone["kept"] == [fresh, recent]
    assert _reasons(alone)[ancient] == ("deleted", "older than 30d")

    _age(fresh, 60)  # every backup is now old: the newest good one still stays
    _age(recent, 61)
    last = prune_backups(str(folder), older_than="30d")
    assert last["removed"] == [recent] and last["kept"] == [fresh]


def test_prune_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        prune_backups(str(tmp_path / "missing"), keep=1)


def test_cli_dry_run_says_would_delete_and_why_also_in_json(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    older, newer = _backups(db, folder, 2)
    _flip_byte(newer)
    args = ["--db", db.url.raw, "backup", "prune", "--dir", str(folder), "--keep", "1", "--dry-run"]
    human = CliRunner().invoke(cli, args)
    assert human.exit_code == 0, human.output
    lines = human.output.splitlines()
    assert lines[0].startswith(f"would delete {newer}: failed verification (") and "checksum" in lines[0]
    assert lines[1] == "1 backup(s) would delete, 1 kept"
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    report = json.loads(as_json.output)
    assert report["dry_run"] is True and report["removed"] == [newer] and report["kept"] == [older]
    assert [(d["path"], d["action"]) for d in report["decisions"]] == [
        (newer, "would delete"), (older, "kept")]
    assert os.path.exists(newer) and os.path.exists(older)

    help_text = CliRunner().invoke(cli, ["backup", "prune", "--help"]).output
    assert "every kind counted together" in " ".join(help_text.split())


def test_a_prune_limited_to_one_database_and_kind_leaves_the_rest(db, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    other = embeddb.connect(f"sqlite:///{tmp_path / 'other.db'}")
    other.execute_sql("CREATE TABLE t (x)")
    mine = [_premigrate(db, folder) for _ in range(3)]
    theirs = [create_backup(other, out=str(folder / f"other-premigrate-{i}.db")).path
              for i in range(3)]
    regular = _backups(db, folder, 1)
    result = prune_backups(str(folder), keep=1, kind="premigrate", source=db.url.redacted())
    assert result["removed"] == mine[:2][::-1] and result["kept"] == [mine[2]]
    assert all(os.path.exists(p) for p in theirs + regular + [mine[2]])
    with pytest.raises(embeddb.errors.ConfigurationError, match="unknown backup kind 'safety'"):
        prune_backups(str(folder), keep=1, kind="safety")


def test_a_file_changed_after_its_verify_is_checked_again(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    older, newer = _backups(db, folder, 2)
    verify_backup(newer)  # a passed verify lets prune skip re-reading the file...
    _flip_byte(newer)  # ...only until the file is modified
    result = prune_backups(str(folder), keep=1)
    assert result["removed"] == [newer] and result["kept"] == [older]
    assert "fails its checksum" in _reasons(result)[newer][1]


def test_cli_older_than(db, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    old, new = _backups(db, folder, 2)
    _age(old, 10)
    args = ["--db", db.url.raw, "backup", "prune", "--dir", str(folder), "--older-than", "1w"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"deleted {old}: older than 1w",
                                          "1 backup(s) deleted, 1 kept"]
    assert not os.path.exists(old) and not os.path.exists(manifest.sidecar(old))
    again = CliRunner().invoke(cli, [*args[:-1], "0s", "--json"])
    assert json.loads(again.stdout)["decisions"] == [{
        "path": new, "kind": "regular", "source": db.url.redacted(), "action": "kept",
        "reason": "the newest good backup"}]


def test_cli_prune_of_a_missing_dir_is_an_error_but_a_fresh_default_is_empty(
    db, tmp_path: Path
) -> None:
    missing = CliRunner().invoke(cli, ["--db", db.url.raw, "backup", "prune", "--keep", "1",
                                       "--dir", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert missing.output == (f"Error: backup directory {tmp_path / 'nope'} does not exist: "
                              "pass --dir DIR\n")
    fresh = CliRunner().invoke(cli, ["--db", db.url.raw, "backup", "prune", "--keep", "1"])
    assert fresh.exit_code == 0 and fresh.output == "0 backup(s) deleted, 0 kept\n"
    assert not (tmp_path / "backups").exists()
