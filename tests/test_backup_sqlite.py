"""SQLite backups against real files and real processes: consistency under writes, kills,
corruption, restore round trips, list/prune and the CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
from embeddb.backup import (
    create_backup,
    list_backups,
    manifest,
    prune_backups,
    restore_backup,
    verify_backup,
)
from embeddb.cli import cli
from embeddb.errors import BackupCorrupt, BackupError, DatabaseInUse
from embeddb.migrate import history

ACCOUNTS = 100
START_BALANCE = 1000

# A transfer workload in another process. It prints "ready" once it has committed, then runs
# until its stdin closes, and finally prints how many transfers it made.
WRITER = r"""
import random, sys, threading, time
import embeddb
db = embeddb.connect(sys.argv[1])
pause = float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
rnd = random.Random(7)
done = 0
while not stop.is_set():
    a, b = rnd.sample(range(1, 101), 2)
    amount = rnd.randint(1, 50)
    with db.atomic():
        db.execute_sql("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
        db.execute_sql("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
        db.execute_sql("INSERT INTO ledger (src, dst, amount) VALUES (?, ?, ?)", (a, b, amount))
    done += 1
    if done == 20:
        print("ready", flush=True)
    if pause:
        time.sleep(pause)  # pacing of the workload, not synchronisation
print("done", done, flush=True)
"""

# Runs one backup and freezes at the first progress report of the phase in argv[3]; the test
# then kills it.
FREEZE = r"""
import sys
import embeddb
from embeddb.backup import create_backup
url, out, phase, compress = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
def progress(name, done, total):
    if name == phase:
        print("frozen", flush=True)
        sys.stdin.read()
create_backup(embeddb.connect(url), out=out, compress=compress, progress=progress)
print("finished", flush=True)
"""

HOLDER = r"""
import sys, sqlite3
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
print("open", flush=True)
sys.stdin.read()
"""


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def _wait_for(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline().strip()
    assert line == word, f"child said {line!r}, expected {word!r}"


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _file_bytes(path: Path) -> dict[str, bytes]:
    """The database file and its side files, as they are on disk."""
    return {
        suffix: (Path(str(path) + suffix)).read_bytes()
        for suffix in ("", "-wal", "-shm", "-journal")
        if Path(str(path) + suffix).exists()
    }


def _table_hashes(path: Path) -> dict[str, str]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        hashes = {}
        for name in names:
            digest = hashlib.sha256()
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                digest.update(repr(row).encode())
            hashes[name] = digest.hexdigest()
        return hashes
    finally:
        conn.close()


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    """A WAL database with 100 accounts and an empty transfer ledger."""
    path = tmp_path / "bank.db"
    db = embeddb.connect(_url(path))
    db.execute_sql("CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
    db.execute_sql(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, src INTEGER NOT NULL REFERENCES accounts, "
        "dst INTEGER NOT NULL REFERENCES accounts, amount INTEGER NOT NULL)"
    )
    with db.atomic():
        for i in range(1, ACCOUNTS + 1):
            db.execute_sql("INSERT INTO accounts VALUES (?, ?)", (i, START_BALANCE))
    db.close()
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A database with several tables, a foreign key, an index, blobs and NULLs."""
    path = tmp_path / "shop.db"
    db = embeddb.connect(_url(path))
    db.execute_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)")
    db.execute_sql(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users,"
        " total INTEGER NOT NULL, note BLOB)"
    )
    db.execute_sql("CREATE INDEX orders_user ON orders (user_id)")
    with db.atomic():
        for i in range(1, 301):
            db.execute_sql("INSERT INTO users VALUES (?, ?, ?)",
                           (i, f"user {i}", None if i % 3 else f"u{i}@x.test"))
            db.execute_sql("INSERT INTO orders (user_id, total, note) VALUES (?, ?, ?)",
                           (i, i * 7, os.urandom(64) if i % 2 else None))
    db.close()
    return path


def _check_bank_copy(path: Path) -> int:
    """Assert a restored bank is consistent; return its number of transfers."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        balances = dict(conn.execute("SELECT id, balance FROM accounts"))
        assert sum(balances.values()) == ACCOUNTS * START_BALANCE
        ids = [r[0] for r in conn.execute("SELECT id FROM ledger ORDER BY id")]
        assert ids == list(range(1, len(ids) + 1)), "the ledger has gaps"
        replayed = {i: START_BALANCE for i in range(1, ACCOUNTS + 1)}
        for src, dst, amount in conn.execute("SELECT src, dst, amount FROM ledger ORDER BY id"):
            replayed[src] -= amount
            replayed[dst] += amount
        assert replayed == balances, "balances do not match the ledger prefix"
        return len(ids)
    finally:
        conn.close()


# -- consistency under writes -------------------------------------------------------------------


def test_ten_backups_during_transfers_restore_consistent(bank: Path, tmp_path: Path) -> None:
    writer = _spawn(WRITER, _url(bank), "0")
    try:
        _wait_for(writer, "ready")
        db = embeddb.connect(_url(bank))
        backups = [create_backup(db, directory=str(tmp_path / "b"), compress=bool(i % 2))
                   for i in range(10)]
    finally:
        writer.stdin.close()
        tail = writer.stdout.read().split()
        writer.wait(timeout=30)
    assert tail[0] == "done"
    counts = []
    for i, backup in enumerate(backups):
        target = tmp_path / f"restored{i}.db"
        restore_backup(embeddb.connect(_url(target)), backup.path)
        counts.append(_check_bank_copy(target))
    assert counts == sorted(counts)
    assert counts[-1] > counts[0] > 0, "the writer made no progress during the backups"
    assert int(tail[1]) >= counts[-1]


def test_backup_finishes_under_continuous_writes(bank: Path, tmp_path: Path) -> None:
    db = embeddb.connect(_url(bank))
    with db.atomic():  # some bulk so the copy takes measurable time
        db.execute_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
        for _ in range(2000):
            db.execute_sql("INSERT INTO filler (data) VALUES (?)", (os.urandom(2000),))
    start = time.perf_counter()
    create_backup(db, directory=str(tmp_path / "idle"))
    idle = time.perf_counter() - start

    writer = _spawn(WRITER, _url(bank), "0.003")  # a commit every few ms
    try:
        _wait_for(writer, "ready")
        durations = []
        for _ in range(3):
            start = time.perf_counter()
            backup = create_backup(db, directory=str(tmp_path / "busy"))
            durations.append(time.perf_counter() - start)
    finally:
        writer.stdin.close()
        writer.stdout.read()
        writer.wait(timeout=30)
    verify_backup(backup.path)
    # 2x idle is the target; the slack absorbs scheduler noise on a 2-core machine.
    assert min(durations) < 2 * idle + 0.25, (idle, durations)


# -- killed backups -----------------------------------------------------------------------------


@pytest.mark.parametrize(("phase", "compress"), [
    ("snapshot", False), ("checksum", False), ("compress", True),
])
def test_killed_backup_leaves_nothing_at_final_path(
    shop: Path, tmp_path: Path, phase: str, compress: bool
) -> None:
    before = _table_hashes(shop)
    out = tmp_path / "b" / "final.sqlite3"
    out.parent.mkdir()
    child = _spawn(FREEZE, _url(shop), str(out), phase, "1" if compress else "0")
    try:
        _wait_for(child, "frozen")
        leftovers = [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        assert leftovers, "the backup should be under way in a temp file"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists()
    assert not Path(manifest.sidecar(str(out))).exists()
    assert list_backups(str(out.parent)) == []
    assert _table_hashes(shop) == before
    db = embeddb.connect(_url(shop))
    assert db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"
    result = prune_backups(str(out.parent), keep=5)
    assert result["leftovers"] and not any(p.name.endswith(".tmp") for p in out.parent.iterdir())


# -- corruption ---------------------------------------------------------------------------------


def _truncate(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def _flip_bit(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        byte = fh.read(1)[0]
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("damage", [_truncate, _flip_bit])
@pytest.mark.parametrize("compress", [False, True])
def test_corrupt_backup_refused_and_live_db_untouched(
    shop: Path, tmp_path: Path, damage, compress: bool
) -> None:
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=compress)
    db.execute_sql("INSERT INTO users (name) VALUES ('after the backup')")  # leaves a live WAL
    damage(backup.path)
    with pytest.raises(BackupCorrupt, match="truncated|checksum"):
        verify_backup(backup.path)
    assert manifest.read(backup.path).verified is False

    before = _file_bytes(shop)
    listing = sorted(p.name for p in shop.parent.iterdir())
    with pytest.raises(BackupCorrupt):
        restore_backup(db, backup.path)
    assert _file_bytes(shop) == before
    assert sorted(p.name for p in shop.parent.iterdir()) == listing


def test_damage_behind_a_matching_checksum_is_caught_by_integrity_check(
    shop: Path, tmp_path: Path
) -> None:
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    page_size = backup.manifest.page_size
    with open(backup.path, "r+b") as fh:  # wreck a b-tree page, then "fix" the manifest
        fh.seek(page_size * 2)
        fh.write(b"\xff" * 64)
    record = manifest.read(backup.path)
    record.sha256 = record.data_sha256 = manifest.files.sha256_file(backup.path)
    manifest.write(backup.path, record)
    with pytest.raises(BackupCorrupt, match="integrity|SQLite"):
        verify_backup(backup.path)


# -- restore ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_restore_round_trip_matches_table_hashes(shop: Path, tmp_path: Path, compress: bool) -> None:
    at_backup = _table_hashes(shop)
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=compress)
    db.execute_sql("DELETE FROM orders WHERE id > 10")
    db.execute_sql("CREATE TABLE later (x)")
    after_changes = _table_hashes(shop)

    result = restore_backup(db, backup.path)
    assert _table_hashes(shop) == at_backup
    assert _table_hashes(Path(result["safety_copy"])) == after_changes
    assert not Path(str(shop) + "-wal").exists() or Path(str(shop) + "-wal").stat().st_size == 0
    assert manifest.read(backup.path).verified is True
    reopened = embeddb.connect(_url(shop))  # the engine reopens it in WAL mode
    assert reopened.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reopened.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 300


def test_restore_refused_while_another_process_has_the_database_open(
    shop: Path, tmp_path: Path
) -> None:
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    db.execute_sql("DELETE FROM orders")
    db.close()
    holder = _spawn(HOLDER, str(shop))
    try:
        _wait_for(holder, "open")
        before = _file_bytes(shop)
        with pytest.raises(DatabaseInUse, match="open|in use"):
            restore_backup(db, backup.path)
        assert _file_bytes(shop) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    restore_backup(db, backup.path)
    assert embeddb.connect(_url(shop)).execute_sql("SELECT count(*) FROM orders").fetchone()[0]


def test_backup_file_is_private_and_manifest_complete(shop: Path, tmp_path: Path) -> None:
    db = embeddb.connect(_url(shop))
    history.ensure(db)
    for version in (1, 2, 3):
        db.execute_sql(
            "INSERT INTO embeddb_migrations VALUES (?, ?, 'c', '2024-01-01', 1.0, ?)",
            (version, f"m{version}", "applied" if version < 3 else "failed"),
        )
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=True)
    assert os.stat(backup.path).st_mode & 0o777 == 0o600
    assert os.stat(manifest.sidecar(backup.path)).st_mode & 0o777 == 0o600
    m = manifest.read(backup.path)
    assert m.schema_version == 2
    assert m.format == "sqlite3" and m.compression == "gzip"
    assert m.file == os.path.basename(backup.path)
    assert m.source == _url(shop) and m.database_version and m.engine_version
    assert m.size == os.path.getsize(backup.path) and m.data_size > m.size
    assert m.page_count * m.page_size == m.data_size
    assert m.sha256 == manifest.files.sha256_file(backup.path)
    with pytest.raises(BackupError, match="already exists"):
        create_backup(db, out=backup.path)


def test_memory_database_backs_up_and_restores_into_a_file(tmp_path: Path) -> None:
    db = embeddb.connect("sqlite:///:memory:")
    db.execute_sql("CREATE TABLE t (x)")
    db.execute_sql("INSERT INTO t VALUES (42)")
    backup = create_backup(db, directory=str(tmp_path))
    assert os.path.basename(backup.path).startswith("memory-")
    target = embeddb.connect(_url(tmp_path / "copy.db"))
    restore_backup(target, backup.path)
    assert embeddb.connect(_url(tmp_path / "copy.db")).execute_sql(
        "SELECT x FROM t").fetchone() == (42,)


# -- list and prune -----------------------------------------------------------------------------


def test_list_newest_first_and_prune(shop: Path, tmp_path: Path) -> None:
    db = embeddb.connect(_url(shop))
    folder = str(tmp_path / "b")
    made = [create_backup(db, directory=folder).path for _ in range(4)]
    verify_backup(made[0])
    listed = list_backups(folder)
    assert [e["path"] for e in listed] == made[::-1]
    assert listed[-1]["verified"] is True and listed[0]["verified"] is None
    assert all(e["size"] > 0 and e["age_seconds"] >= 0 for e in listed)

    dry = prune_backups(folder, keep=2, dry_run=True)
    # made[0] is the only one that passed `backup verify`: it stays whatever --keep says
    assert dry["removed"] == [made[1]] and all(os.path.exists(p) for p in made)
    assert prune_backups(folder, keep=1, older_than="1h")["removed"] == []
    done = prune_backups(folder, keep=2)
    assert [e["path"] for e in list_backups(folder)] == [made[3], made[2], made[0]]
    assert not any(os.path.exists(p) for p in done["removed"])
    assert prune_backups(folder, older_than="0s")["kept"] == [made[3], made[0]]


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_create_list_verify_prune_restore(shop: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    url, folder = _url(shop), str(tmp_path / "b")
    created = runner.invoke(cli, ["--db", url, "backup", "create", "--dir", folder, "--json",
                                  "--compress"])
    assert created.exit_code == 0, created.output
    path = json.loads(created.output)["path"]
    listed = runner.invoke(cli, ["--db", url, "backup", "list", "--dir", folder, "--json"])
    assert [e["path"] for e in json.loads(listed.output)] == [path]
    human = runner.invoke(cli, ["--db", url, "backup", "list", "--dir", folder])
    assert os.path.basename(path) in human.output
    verified = runner.invoke(cli, ["backup", "verify", path])
    assert verified.exit_code == 0 and verified.output.startswith("OK ")

    refused = runner.invoke(cli, ["--db", url, "backup", "restore", path])
    assert refused.exit_code != 0 and "--yes" in refused.output
    restored = runner.invoke(cli, ["--db", url, "backup", "restore", path, "--yes"])
    assert restored.exit_code == 0, restored.output
    assert "previous data kept at" in restored.output

    later = [create_backup(embeddb.connect(url), directory=folder).path for _ in range(2)]
    pruned = runner.invoke(cli, ["--db", url, "backup", "prune", "--dir", folder, "--keep", "0",
                                 "--dry-run"])
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.splitlines() == [
        f"would delete {later[0]}: beyond the newest 1 good backup",
        "1 backup(s) would delete, 2 kept",
    ]
    assert all(os.path.exists(p) for p in [path, *later])


def test_cli_corrupt_backup_is_one_error_line(shop: Path, tmp_path: Path) -> None:
    backup = create_backup(embeddb.connect(_url(shop)), directory=str(tmp_path / "b"))
    _flip_bit(backup.path)
    result = CliRunner().invoke(cli, ["backup", "verify", backup.path])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "checksum" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["backup", "verify", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code == 1 and "no backup file" in missing.output


def test_prune_keeps_the_newest_of_each_database_and_young_orphans(tmp_path: Path) -> None:
    from embeddb.backup import create_backup, prune_backups

    folder = str(tmp_path / "shared-backups")
    made = {}
    for name in ("one", "two"):
        db = embeddb.connect(f"sqlite:///{tmp_path / name}.db")
        db.execute_sql("CREATE TABLE t (x INTEGER)")
        made[name] = [create_backup(db, directory=folder).path for _ in range(2)]
    young_orphan = Path(folder) / "killed.db.manifest.json"
    young_orphan.write_text("{}")
    result = prune_backups(folder, keep=1)
    assert sorted(result["kept"]) == sorted([made["one"][1], made["two"][1]])
    assert young_orphan.exists()  # may be a backup about to rename its data into place


# -- what restore and the snapshot promise, each on its own ---------------------------------------


def _orphan_order(path: Path) -> None:
    """Write an order whose user does not exist (foreign keys off: SQLite lets it through)."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO orders (user_id, total) VALUES (99999, 1)")
    conn.commit()
    conn.close()


def _wreck_page(path: str, page_size: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(page_size * 2)
        fh.write(b"\xff" * 64)


@pytest.mark.parametrize("damage", ["page", "foreign_key"])
def test_restore_refuses_a_checksum_valid_backup_that_fails_its_checks(
    shop: Path, tmp_path: Path, damage: str
) -> None:
    """The checksums only say the file is what was written; restore must still run
    integrity_check and foreign_key_check before it touches the live database."""
    if damage == "foreign_key":
        _orphan_order(shop)
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    if damage == "page":
        _wreck_page(backup.path, backup.manifest.page_size)
        record = manifest.read(backup.path)
        record.sha256 = record.data_sha256 = manifest.files.sha256_file(backup.path)
        manifest.write(backup.path, record)
    db.execute_sql("DELETE FROM orders WHERE id > 100")
    db.close()
    before = _file_bytes(shop)
    listing = sorted(p.name for p in shop.parent.iterdir())
    expected = "integrity|SQLite" if damage == "page" else "foreign key violation: orders"
    with pytest.raises(BackupCorrupt, match=expected):
        restore_backup(embeddb.connect(_url(shop)), backup.path)
    assert _file_bytes(shop) == before
    assert sorted(p.name for p in shop.parent.iterdir()) == listing


HANDLE = r"""
import sys
fh = open(sys.argv[1], "rb")  # a plain descriptor: no SQLite lock at all
print("open", flush=True)
sys.stdin.read()
"""


def test_restore_refused_while_a_process_holds_the_file_without_a_sqlite_lock(
    shop: Path, tmp_path: Path
) -> None:
    """A process that opened the file but holds no SQLite lock (a reader between queries on a
    rollback-journal database, a copy tool) is found through /proc: the lock check alone
    would let the restore swap the file under it."""
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    db.execute_sql("DELETE FROM orders")
    db.close()
    holder = _spawn(HANDLE, str(shop))
    try:
        _wait_for(holder, "open")
        before = _file_bytes(shop)
        with pytest.raises(DatabaseInUse, match=rf"open in process\(es\) {holder.pid}\b"):
            restore_backup(db, backup.path)
        assert _file_bytes(shop) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    restore_backup(db, backup.path)
    assert embeddb.connect(_url(shop)).execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 300


def test_snapshot_is_one_step_and_finishes_while_a_writer_commits_nonstop(
    bank: Path, tmp_path: Path
) -> None:
    """A stepped backup restarts at every commit of another connection: under a writer that
    never pauses it only ends when the writer does. The one-step snapshot ends in about the
    idle time while the writer keeps committing."""
    import threading

    db = embeddb.connect(_url(bank))
    with db.atomic():  # ~24 MB: a stepped copy needs many steps, each a chance to restart
        db.execute_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)")
        for _ in range(12000):
            db.execute_sql("INSERT INTO filler (data) VALUES (?)", (os.urandom(2000),))
    start = time.perf_counter()
    create_backup(db, directory=str(tmp_path / "idle"))
    idle = time.perf_counter() - start

    writer = _spawn(WRITER, _url(bank), "0")
    stop = threading.Timer(20, writer.stdin.close)  # a stepped copy finishes only after this
    try:
        _wait_for(writer, "ready")
        stop.start()
        start = time.perf_counter()
        backup = create_backup(db, directory=str(tmp_path / "busy"))
        busy = time.perf_counter() - start
        still_writing = writer.poll() is None and stop.is_alive()
    finally:
        stop.cancel()
        if not writer.stdin.closed:
            writer.stdin.close()
        tail = writer.stdout.read().split()
        writer.wait(timeout=30)
    assert still_writing, "the writer stopped before the backup ended"
    assert busy < 3 * idle + 1, (idle, busy)
    target = tmp_path / "restored.db"
    restore_backup(embeddb.connect(_url(target)), backup.path)
    assert 20 <= _check_bank_copy(target) <= int(tail[1])


def test_safety_copy_is_a_hard_link_to_the_replaced_file(shop: Path, tmp_path: Path) -> None:
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    db.execute_sql("DELETE FROM orders")
    db.close()
    before = os.stat(shop)
    result = restore_backup(db, backup.path)
    safety = os.stat(result["safety_copy"])
    assert (safety.st_ino, safety.st_dev) == (before.st_ino, before.st_dev)  # no copy made
    assert os.stat(shop).st_ino != before.st_ino
    assert Path(result["safety_copy"]).parent == shop.parent


def test_default_backup_directory_is_beside_the_database(
    shop: Path, tmp_path: Path, monkeypatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    backup = create_backup(embeddb.connect(_url(shop)))
    assert Path(backup.path).parent == shop.parent / "backups"
    assert list(elsewhere.iterdir()) == []
    memory = embeddb.connect("sqlite:///:memory:")
    memory.execute_sql("CREATE TABLE t (x)")
    assert Path(create_backup(memory).path).parent == elsewhere / "backups"


# -- what mutation testing of backup/sqlite.py asked for -----------------------------------------


def _big(path: Path) -> Path:
    """A file database of about 2.5 MB of incompressible blobs: more than two CHUNKs, so a
    copy that reads the whole file at once shows in the progress reports."""
    db = embeddb.connect(_url(path))
    db.execute_sql("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    with db.atomic():
        for _ in range(1250):
            db.execute_sql("INSERT INTO blobs (data) VALUES (?)", (os.urandom(2000),))
    db.close()
    return path


def _events(phase: str, events: list[tuple[str, int, int | None]]) -> list[tuple[int, int | None]]:
    return [(done, total) for name, done, total in events if name == phase]


def _phases(events: list[tuple[str, int, int | None]]) -> list[str]:
    return [name for i, (name, _, _) in enumerate(events) if i == 0 or events[i - 1][0] != name]


def _chunked(reports: list[tuple[int, int | None]], total: int, step: int | None = None) -> None:
    """Reports of one streamed copy of ``total`` bytes: one a chunk read (an inflated chunk may
    be larger than the CHUNK read, so ``step`` bounds only uncompressed reads), ending at total."""
    dones = [done for done, _ in reports]
    assert len(reports) >= 3 and all(t == total for _, t in reports), reports
    assert dones[-1] == total
    steps = [b - a for a, b in zip([0, *dones], dones)]
    assert all(0 < s <= (step or total) for s in steps), steps


@pytest.mark.parametrize("compress", [False, True])
def test_progress_reports_each_phase_in_chunks_and_verify_copies_only_what_is_compressed(
    tmp_path: Path, compress: bool
) -> None:
    """Create, verify and restore report their phases in order, each streamed a chunk at a time
    (none reads a whole file into memory); verify of an uncompressed backup checks the file in
    place (no copy: a verify needs no free space the size of the backup)."""
    path = _big(tmp_path / "big.db")
    db = embeddb.connect(_url(path))
    events: list[tuple[str, int, int | None]] = []
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=compress,
                           progress=lambda *e: events.append(e))
    record = backup.manifest
    size = record.page_count * record.page_size
    assert record.data_size == size
    assert _phases(events) == ["snapshot", "compress" if compress else "checksum"]
    assert _events("snapshot", events) == [(0, size), (size, size)]
    if compress:
        _chunked(_events("compress", events), size, manifest.files.CHUNK)

    listing = sorted(p.name for p in (tmp_path / "b").iterdir())
    events.clear()
    verify_backup(backup.path, progress=lambda *e: events.append(e))
    assert _phases(events) == (["checksum", "expand"] if compress else ["checksum"])
    if compress:
        _chunked(_events("expand", events), size)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == listing  # no temp copy left

    beside = sorted(p.name for p in tmp_path.iterdir())
    events.clear()
    result = restore_backup(db, backup.path, progress=lambda *e: events.append(e))
    assert _phases(events) == ["checksum", "expand", "install"]
    _chunked(_events("expand", events), size, None if compress else manifest.files.CHUNK)
    assert _events("install", events) == [(0, None), (1, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*beside, os.path.basename(result["safety_copy"])])  # no staged copy left beside it
    assert result["restored"] == str(path) and result["from"] == backup.path
    assert result["checks"] == {"integrity_check": "ok", "foreign_key_check": "ok",
                                "pages": record.page_count, "tables": 1}


def test_restore_checks_the_copy_it_installs_not_only_the_backup(shop: Path, tmp_path: Path) -> None:
    """integrity_check runs on the staged copy that is then renamed over the database: a copy
    damaged on its way to disk is refused, even though the backup file itself is sound."""
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    db.execute_sql("DELETE FROM orders")
    db.close()
    before = _file_bytes(shop)
    damaged: list[Path] = []

    def damage_the_staged_copy(phase: str, done: int, total: int | None) -> None:
        if phase == "expand" and done == total:
            staged = [p for p in shop.parent.iterdir()
                      if p.name.startswith(f".{shop.name}.") and p.name.endswith(".tmp")]
            assert len(staged) == 1, staged
            _wreck_page(str(staged[0]), backup.manifest.page_size)
            damaged.append(staged[0])

    with pytest.raises(BackupCorrupt, match=r"integrity|SQLite"):
        restore_backup(db, backup.path, progress=damage_the_staged_copy)
    assert damaged and not damaged[0].exists()
    assert _file_bytes(shop) == before
    verify_backup(backup.path)  # the backup itself was fine all along
    restore_backup(db, backup.path)
    assert embeddb.connect(_url(shop)).execute_sql("SELECT count(*) FROM orders").fetchone()[0] == 300


def _rewrite_gzip(path: str, data: bytes) -> None:
    """Replace a compressed backup's bytes and make its manifest's file checksum agree."""
    Path(path).write_bytes(data)
    record = manifest.read(path)
    record.sha256, record.size = manifest.files.sha256_file(path), len(data)
    manifest.write(path, record)


def test_a_gzip_backup_that_matches_its_checksum_but_not_its_data_is_refused(
    shop: Path, tmp_path: Path
) -> None:
    """The file checksum only says the file is what the manifest says: a stream that cannot be
    decompressed, or ends early, is refused with the backup's path, the database untouched."""
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=True)
    good = Path(backup.path).read_bytes()
    db.execute_sql("DELETE FROM orders")
    db.close()
    before = _file_bytes(shop)
    broken = good[:10] + bytes(b ^ 0x55 for b in good[10:200]) + good[200:]
    other = bytearray(gzip.decompress(good))
    other[63] ^= 1  # PRAGMA user_version: a sound database of the same size, not the one backed up
    for data, message in (
        (broken, "cannot be decompressed"),
        (good[: len(good) // 2], "the decompressed data does not match its manifest"),
        (gzip.compress(bytes(other)), "the decompressed data does not match its manifest"),
    ):
        _rewrite_gzip(backup.path, data)
        with pytest.raises(BackupCorrupt) as caught:
            verify_backup(backup.path)
        assert str(caught.value).startswith(backup.path) and message in str(caught.value)
        with pytest.raises(BackupCorrupt, match=message):
            restore_backup(db, backup.path)
        assert _file_bytes(shop) == before
    _rewrite_gzip(backup.path, good)
    assert verify_backup(backup.path)["ok"] is True


def test_restore_keeps_the_safety_copy_in_the_directory_asked_for(shop: Path, tmp_path: Path) -> None:
    db = embeddb.connect(_url(shop))
    backup = create_backup(db, directory=str(tmp_path / "b"))
    at_restore = _table_hashes(shop)
    safety_dir = tmp_path / "kept"
    safety_dir.mkdir()
    result = restore_backup(db, backup.path, safety_dir=str(safety_dir))
    assert Path(result["safety_copy"]).parent == safety_dir
    assert _table_hashes(Path(result["safety_copy"])) == at_restore


@pytest.mark.parametrize("compress", [False, True])
def test_a_backup_of_a_wal_database_is_one_rollback_journal_file(
    shop: Path, tmp_path: Path, compress: bool
) -> None:
    """The snapshot is switched out of WAL: its header says rollback journal (bytes 18-19 are 1),
    so opening the backup file needs no -wal or -shm beside it."""
    db = embeddb.connect(_url(shop))
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    backup = create_backup(db, directory=str(tmp_path / "b"), compress=compress)
    data = Path(backup.path).read_bytes()
    header = (gzip.decompress(data) if compress else data)[:20]
    assert header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x01\x01"


def test_a_backup_of_a_named_database_opened_by_url_records_its_name(
    tmp_path: Path, monkeypatch
) -> None:
    """embeddb.toml names the file: a backup made through its URL records that name, so that
    restoring it into another database is refused as for a backup made by name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "embeddb.toml").write_text('[databases.users]\nurl = "sqlite:///users.db"\n')
    by_url = embeddb.connect("sqlite:///users.db")
    by_url.execute_sql("CREATE TABLE t (x)")
    backup = create_backup(by_url, directory=str(tmp_path / "b"))
    assert backup.manifest.database == manifest.read(backup.path).database == "users"
    other = embeddb.connect(_url(tmp_path / "other.db"))
    with pytest.raises(embeddb.errors.ConfigurationError, match="is a backup of 'users'"):
        restore_backup(other, backup.path)
    unnamed = embeddb.connect(_url(tmp_path / "other.db"))
    unnamed.execute_sql("CREATE TABLE t (x)")
    assert create_backup(unnamed, directory=str(tmp_path / "b")).manifest.database is None


def test_backup_files_are_named_after_the_database_and_say_if_they_are_compressed(
    shop: Path, tmp_path: Path
) -> None:
    """``shop-<time>.sqlite3`` opens with sqlite3; ``shop-<time>.sqlite3.gz`` with gunzip first."""
    db = embeddb.connect(_url(shop))
    plain = os.path.basename(create_backup(db, directory=str(tmp_path / "b")).path)
    packed = os.path.basename(create_backup(db, directory=str(tmp_path / "b"), compress=True).path)
    assert plain.startswith("shop-") and plain.endswith(".sqlite3")
    assert packed.startswith("shop-") and packed.endswith(".sqlite3.gz")
