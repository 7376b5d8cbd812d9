"""Backup throughput: ``create_backup`` vs the raw sqlite3 one-step backup API vs ``cp``.

Also: gzip level 1 vs 6 (ratio and speed), backup time under continuous writes vs idle, and a
writer's p99 commit latency while backups run vs its baseline (those two compare embeddb with
itself).

The raw side makes what an app needs from the bare driver for a durable copy: the one-step
backup API into a new file with the same target settings as embeddb's snapshot (no journal,
``synchronous=OFF``, back to rollback-journal mode at the end), then one fsync; for
``--compress`` it also streams the copy through gzip level 1 into the final file and fsyncs
that instead. embeddb's extra work on top (sha256, ``quick_check``, the manifest, rename and
directory fsyncs) is inside its figure. Both copies are checked to hold the same rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib

import embeddb
from benchmarks.harness import once, percentiles, report, size
from embeddb.backup import create_backup

WRITER = r"""
import sys, threading, time, json
import embeddb
db = embeddb.connect(sys.argv[1])
db.execute_sql("CREATE TABLE IF NOT EXISTS ticks (id INTEGER PRIMARY KEY, at REAL)")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
samples = []
print("ready", flush=True)
while not stop.is_set():
    start = time.time()
    with db.atomic():
        db.execute_sql("INSERT INTO ticks (at) VALUES (?)", (start,))
    samples.append((start, time.time() - start))
    time.sleep(0.003)
print(json.dumps(samples), flush=True)
"""


def _build(path: str, megabytes: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, body TEXT, n INTEGER)")
    rows = megabytes * 1024 * 1024 // 300
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa"]
    conn.executemany(
        "INSERT INTO items (name, body, n) VALUES (?, ?, ?)",
        ((f"item-{i}", " ".join(words[(i + k) % 10] for k in range(30)) + os.urandom(24).hex(), i)
         for i in range(rows)),
    )
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _raw_backup(src: str, dst: str, sync: bool = True) -> None:
    if os.path.exists(dst):
        os.remove(dst)
    source = sqlite3.connect(src)
    target = sqlite3.connect(dst, isolation_level=None)
    target.execute("PRAGMA journal_mode=OFF")
    target.execute("PRAGMA synchronous=OFF")
    source.backup(target, pages=-1)
    target.execute("PRAGMA journal_mode=DELETE")
    target.close()
    source.close()
    if sync:
        _fsync(dst)


def _raw_backup_gz(src: str, dst: str) -> None:
    snapshot = dst + ".snapshot"
    _raw_backup(src, snapshot, sync=False)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    with open(snapshot, "rb") as fh, open(dst, "wb") as out:
        while chunk := fh.read(1 << 20):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())
    os.remove(snapshot)
    _fsync(dst)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rows_of(path: str) -> tuple:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*), sum(n), max(body) FROM items").fetchone()
    finally:
        conn.close()


def _gzip(path: str, level: int) -> tuple[float, float]:
    """Seconds and ratio of streaming ``path`` through gzip at ``level``."""
    compressor, packed = zlib.compressobj(level, zlib.DEFLATED, 31), 0
    start = time.perf_counter()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            packed += len(compressor.compress(chunk))
    packed += len(compressor.flush())
    return time.perf_counter() - start, os.path.getsize(path) / packed


def _ours(db: embeddb.Database, out: str, compress: bool = False) -> None:
    for path in (out, out + ".manifest.json"):
        if os.path.exists(path):
            os.remove(path)
    create_backup(db, out=out, compress=compress)


def main() -> None:
    megabytes = size(100, 16)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src.db")
        _build(src, megabytes)
        mb = os.path.getsize(src) / 1e6
        db = embeddb.connect(f"sqlite:///{src}")

        raw = once(lambda: _raw_backup(src, os.path.join(tmp, "raw.db")), repeat=5)
        ours = once(lambda: _ours(db, os.path.join(tmp, "ours.sqlite3")), repeat=5)
        cp = once(lambda: subprocess.run(["cp", src, os.path.join(tmp, "cp.db")], check=True),
                  repeat=5)
        assert _rows_of(os.path.join(tmp, "raw.db")) == _rows_of(os.path.join(tmp, "ours.sqlite3"))
        report("backup create vs raw backup API (1 step)", "MB/s", embeddb=mb / ours,
               raw=mb / raw, cp_mb_s=mb / cp, db_mb=mb)

        raw_gz = once(lambda: _raw_backup_gz(src, os.path.join(tmp, "raw.db.gz")), repeat=3)
        gz = once(lambda: _ours(db, os.path.join(tmp, "ours.sqlite3.gz"), compress=True),
                  repeat=3)
        ratio = mb * 1e6 / os.path.getsize(os.path.join(tmp, "ours.sqlite3.gz"))
        raw_ratio = mb * 1e6 / os.path.getsize(os.path.join(tmp, "raw.db.gz"))
        assert abs(ratio / raw_ratio - 1) < 0.01, (ratio, raw_ratio)  # the same data, packed alike
        level6, ratio6 = _gzip(os.path.join(tmp, "ours.sqlite3"), 6)
        report("backup create --compress vs raw backup API + gzip (level 1)", "MB/s",
               embeddb=mb / gz, raw=mb / raw_gz, compression_ratio=ratio,
               gzip6_mb_s=mb / level6, gzip6_ratio=ratio6)

        _under_writes(db, src, tmp, mb, ours)


def _under_writes(db: embeddb.Database, src: str, tmp: str, mb: float, idle: float) -> None:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, f"sqlite:///{src}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # a baseline window for the writer's latency (measurement, not sync)
    windows = []
    for i in range(5):
        start = time.time()
        _ours(db, os.path.join(tmp, f"busy{i}.sqlite3"))
        windows.append((start, time.time()))
    writer.stdin.close()
    samples = json.loads(writer.stdout.readline())
    writer.wait()
    during = [lat for at, lat in samples if any(a <= at <= b for a, b in windows)]
    baseline = [lat for at, lat in samples if at < windows[0][0]]
    busy = sorted(b - a for a, b in windows)[len(windows) // 2]
    report("backup create under writes (time vs idle)", "s", embeddb=busy, raw=idle,
           writer_commits_during=len(during))
    report("writer p99 commit: during backup vs baseline", "ms",
           embeddb=percentiles(during)["p99"] * 1000, raw=percentiles(baseline)["p99"] * 1000)


if __name__ == "__main__":
    main()
