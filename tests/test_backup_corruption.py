"""Damaged databases are reported, not crashed on: maintenance integrity, backup create's
quick_check (and --force), and verify's data checksum. The damage is real: pages of a real
database overwritten, a truncated file, a file that is not a database at all."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
from embeddb import maintenance
from embeddb.backup import create_backup, manifest, prune_backups, verify_backup
from embeddb.cli import cli
from embeddb.errors import BackupCorrupt, SourceCorrupt

ROWS = 5000
PAGE = 4096


def _real_database(path: Path) -> int:
    """A table and its index over several dozen pages; returns the page count."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE INDEX iv ON t (v)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"value {i:06d} " * 4,) for i in range(ROWS)])
    conn.commit()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE
    conn.close()
    return pages


def _zeroed_cells(path: Path) -> None:
    """Zero 1000 bytes inside a middle b-tree page: SQLite still opens it, checks list rows."""
    pages = _real_database(path)
    with open(path, "r+b") as fh:
        fh.seek((pages // 2 - 1) * PAGE + 200)
        fh.write(b"\x00" * 1000)


def _wrecked_pages(path: Path) -> None:
    """Random bytes over whole b-tree pages: the file opens, but reading it fails."""
    _real_database(path)
    noise = random.Random(11)
    with open(path, "r+b") as fh:
        fh.seek(5 * PAGE)
        fh.write(bytes(noise.getrandbits(8) for _ in range(3 * PAGE)))


def _truncated(path: Path) -> None:
    pages = _real_database(path)
    with open(path, "r+b") as fh:
        fh.truncate(pages * PAGE // 3)


def _not_a_database(path: Path) -> None:
    path.write_text("name,amount\nalice,10\nbob,20\n" * 200)


#: damage -> a problem the integrity report must contain
DAMAGE = {
    "zeroed_cells": (_zeroed_cells, "missing from index iv"),
    "wrecked_pages": (_wrecked_pages, "the database cannot be read: database disk image is malformed"),
    "truncated": (_truncated, "the database cannot be read: database disk image is malformed"),
    "not_a_database": (_not_a_database, "the database cannot be read: file is not a database"),
}


@pytest.fixture(params=sorted(DAMAGE))
def damaged(request, tmp_path: Path) -> tuple[Path, str]:
    damage, expected = DAMAGE[request.param]
    path = tmp_path / "damaged.db"
    damage(path)
    return path, expected


def test_integrity_reports_damage_as_json_and_exits_1(damaged) -> None:
    path, expected = damaged
    runner = CliRunner()
    as_json = runner.invoke(cli, ["--db", f"sqlite:///{path}", "maintenance", "integrity", "--json"])
    assert as_json.exit_code == 1, as_json.output
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert any(expected in problem for problem in report["problems"]), report["problems"]
    assert "unexpected" not in as_json.output

    human = runner.invoke(cli, ["--db", f"sqlite:///{path}", "maintenance", "integrity"])
    assert human.exit_code == 1
    assert expected in human.stdout  # the problems are listed, not only counted
    assert human.stderr == f"Error: {len(report['problems'])} integrity problem(s)\n"


def test_integrity_library_call_on_a_readable_but_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _zeroed_cells(path)
    report = maintenance.integrity(embeddb.connect(f"sqlite:///{path}"))
    assert report["ok"] is False and report["task"] == "integrity"
    assert any(p.startswith("row ") and p.endswith(" missing from index iv")
               for p in report["problems"])


@pytest.mark.parametrize("damage", ["zeroed_cells", "wrecked_pages"])
def test_backup_of_a_database_failing_quick_check_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.db"
    DAMAGE[damage][0](path)
    folder = tmp_path / "backups"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "backup", "create",
                                      "--dir", str(folder)])
    assert result.exit_code == 1
    assert re.fullmatch(
        rf"Error: {re.escape(str(path))} fails PRAGMA quick_check \(.+\): no backup was written; "
        r"see embeddb maintenance integrity, or pass --force to back it up as it is\n",
        result.output), result.output
    assert list(folder.iterdir()) == []  # no backup, no manifest, no temp file
    out = tmp_path / "exact.sqlite3"
    with pytest.raises(SourceCorrupt):
        create_backup(embeddb.connect(f"sqlite:///{path}"), out=str(out))
    assert not out.exists() and not Path(manifest.sidecar(str(out))).exists()


@pytest.mark.parametrize("damage", ["truncated", "not_a_database"])
def test_backup_of_an_unreadable_file_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.db"
    DAMAGE[damage][0](path)
    folder = tmp_path / "backups"
    folder.mkdir()
    for extra in ([], ["--force"]):
        result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "backup", "create",
                                          "--dir", str(folder), *extra])
        assert result.exit_code == 1
        assert result.output.startswith("Error: ") and str(path) in result.output
        assert "unexpected" not in result.output and len(result.output.splitlines()) == 1
        assert list(folder.iterdir()) == []


def test_forced_backup_records_the_failed_check_and_never_counts_as_good(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _real_database(path)
    folder = tmp_path / "backups"
    good = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(folder))
    assert good.manifest.source_check == "ok"
    with open(path, "r+b") as fh:  # the live database goes bad after that backup
        pages = os.path.getsize(path) // PAGE
        fh.seek((pages // 2 - 1) * PAGE + 200)
        fh.write(b"\x00" * 1000)
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "backup", "create",
                                      "--dir", str(folder), "--force", "--json"])
    assert result.exit_code == 0, result.output
    forced = json.loads(result.stdout)
    assert "Rowid 0 out of order" in forced["source_check"]
    assert manifest.read(forced["path"]).source_check == forced["source_check"]
    with pytest.raises(BackupCorrupt, match="fails integrity checks"):
        verify_backup(forced["path"])
    pruned = prune_backups(str(folder), keep=1, dry_run=True)
    assert pruned["removed"] == [forced["path"]] and pruned["kept"] == [good.path]


def test_verify_checks_the_data_checksum_of_an_uncompressed_backup(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _real_database(path)
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"))
    record = manifest.read(backup.path)
    assert record.data_sha256 == record.sha256  # an uncompressed file is its own data
    record.data_sha256 = "0" * 64  # the manifest no longer agrees with itself
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt, match="data checksum"):
        verify_backup(backup.path)
    assert manifest.read(backup.path).verified is False

    record.data_sha256, record.data_size = record.sha256, record.size + 1
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt, match="data checksum"):
        verify_backup(backup.path)


def test_forced_backup_of_unreadable_pages_still_gets_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    _wrecked_pages(path)
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{path}", "backup", "create",
                                      "--dir", str(tmp_path / "b"), "--force"])
    assert result.exit_code == 0, result.output
    assert "warning: the database fails PRAGMA quick_check (database disk image is malformed)" \
        in result.stderr
    backup = str(next((tmp_path / "b").glob("*.sqlite3")))
    assert manifest.read(backup).source_check == "database disk image is malformed"


def _integrity_rows(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
    finally:
        conn.close()


def test_verify_lists_the_first_five_problems_and_counts_the_rest(tmp_path: Path) -> None:
    """A backup forced past a failing quick_check: verify names the first five problems
    integrity_check reports, in its order, and how many more there are."""
    path = tmp_path / "damaged.db"
    _zeroed_cells(path)
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"),
                           force=True)
    rows = _integrity_rows(backup.path)
    assert len(rows) > 6 and any("missing from index iv" in row for row in rows)
    with pytest.raises(BackupCorrupt) as caught:
        verify_backup(backup.path)
    assert str(caught.value) == (f"{backup.path} fails integrity checks: {'; '.join(rows[:5])}"
                                 f" (and {len(rows) - 5} more)")


@pytest.mark.parametrize("orphans", [5, 6, 30])
def test_verify_reports_foreign_key_violations_up_to_twenty(tmp_path: Path, orphans: int) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users)")
    conn.execute("INSERT INTO users VALUES (1)")
    conn.executemany("INSERT INTO orders (user_id) VALUES (?)", [(1,)] + [(99,)] * orphans)
    conn.commit()
    conn.close()
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"))
    with pytest.raises(BackupCorrupt) as caught:
        verify_backup(backup.path)
    shown = "; ".join(f"foreign key violation: orders.rowid={r} -> users" for r in range(2, 7))
    more = {5: "", 6: " (and 1 more)", 30: " (and 15 more)"}[orphans]
    assert str(caught.value) == f"{backup.path} fails integrity checks: {shown}{more}"


def test_verify_refuses_a_page_count_other_than_the_manifests(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    pages = _real_database(path)
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"))
    record = manifest.read(backup.path)
    assert record.page_count == pages
    record.page_count = pages + 1
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt) as caught:
        verify_backup(backup.path)
    assert str(caught.value) == (f"{backup.path} fails integrity checks: {pages} pages but the "
                                 f"manifest says {pages + 1}")
    record.page_count = None  # a manifest that does not say: nothing to compare
    manifest.write(backup.path, record)
    assert verify_backup(backup.path)["checks"]["pages"] == pages


def test_a_forced_backup_records_the_first_three_quick_check_problems(tmp_path: Path) -> None:
    """source_check holds quick_check's first three problem lines (not its "*** in database"
    headings) and how many more of the first twenty there were."""
    path = tmp_path / "damaged.db"
    _zeroed_cells(path)
    conn = sqlite3.connect(path)
    rows = [row[0] for row in conn.execute("PRAGMA quick_check(20)")]
    conn.close()
    lines = [line for row in rows for line in row.splitlines() if not line.startswith("***")]
    assert len(lines) > 4 and len(lines) < sum(len(row.splitlines()) for row in rows)
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"),
                           force=True)
    assert backup.manifest.source_check == "; ".join(lines[:3]) + f" (and {len(lines) - 3} more)"


@pytest.mark.parametrize("unused", [1, 3, 4])
def test_a_forced_backup_counts_quick_check_problems_beyond_three(tmp_path: Path, unused: int) -> None:
    """Pages added past the end of a database (its header counting them) are never used: one
    quick_check line each, so the summary's "(and N more)" is checked at and around three."""
    path = tmp_path / "padded.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    data = bytearray(path.read_bytes())
    pages = int.from_bytes(data[28:32], "big")
    data[28:32] = (pages + unused).to_bytes(4, "big")
    path.write_bytes(bytes(data + bytes(PAGE * unused)))
    backup = create_backup(embeddb.connect(f"sqlite:///{path}"), directory=str(tmp_path / "b"),
                           force=True)
    lines = [f"Page {pages + 1 + i} is never used" for i in range(unused)]
    more = f" (and {unused - 3} more)" if unused > 3 else ""
    assert backup.manifest.source_check == "; ".join(lines[:3]) + more
