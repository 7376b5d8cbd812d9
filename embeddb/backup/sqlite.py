"""SQLite backups: a one-step online backup into a private file, checks, and atomic restore.

Why one step: a stepped backup (``pages=N``, the sqlite3 shell's ``.backup``) restarts whenever
another connection commits and never finishes under steady writes. ``backup(pages=-1)`` copies
every page inside one read transaction: a consistent snapshot, and in WAL mode writers keep
committing meanwhile (the WAL grows until the copy ends). The snapshot is switched to rollback
journal mode, so a backup is one self-contained file with no -wal beside it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import peewee

from .. import config, ownership
from ..errors import BackupCorrupt, BackupError, ConfigurationError, SourceCorrupt
from ..version import __version__
from . import files, livefile, manifest
from .files import CHUNK, Progress
from .manifest import Manifest

if TYPE_CHECKING:
    from ..database import SqliteEngine

FORMAT = "sqlite3"
#: the suffix of the copy taken before migrating (README: ``<name>-premigrate-<time>.db``)
SAFETY_SUFFIX = ".db"
COMPRESSION = "gzip"
# zlib level 1: on SQLite pages it keeps ~95% of level 6's ratio at about twice the speed
# (benchmarks/bench_backup.py), and compression is the slowest stage of a compressed backup.
GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib writes and reads the gzip container: `gunzip` opens our files


def extension(compress: bool) -> str:
    return ".sqlite3.gz" if compress else ".sqlite3"


def _path(db: SqliteEngine) -> str:
    """The database file's path as the URL gives it (every SQLite URL has one)."""
    path = db.url.path
    assert path is not None
    return path


def source_name(db: SqliteEngine) -> str:
    """A short name for backup files of ``db``: the database file's stem."""
    if db.is_memory:
        return "memory"
    return os.path.splitext(os.path.basename(_path(db)))[0]


def default_directory(db: SqliteEngine) -> str:
    """``backups/`` beside the database file (the working directory for ``:memory:``)."""
    if db.is_memory:
        return os.path.abspath("backups")
    return os.path.join(os.path.dirname(os.path.abspath(_path(db))), "backups")


def check_source(db: SqliteEngine) -> None:
    """Refuse an empty in-memory database: a new connection to ``:memory:`` (every CLI run) is
    one, and a backup of it would only look like a backup.

    :raises BackupError: ``db`` is in memory and holds no schema.
    """
    if db.is_memory and not db.execute_sql("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise BackupError(
            f"{db.url.redacted()} is an empty in-memory database: nothing to back up "
            "(it lives only inside the process that made it; back up a file database)"
        )


def file_owner(db: SqliteEngine) -> tuple[int, int] | None:
    """The owner to give backups of ``db``: its file's, when root backs up another user's."""
    return None if db.is_memory else ownership.foreign_owner(os.path.abspath(_path(db)))


# -- create -------------------------------------------------------------------------------------


def create(
    db: SqliteEngine, final: str, compress: bool, progress: Progress, force: bool = False
) -> Manifest:
    """Snapshot ``db`` into ``final`` (gzip-compressed if asked) and write its manifest.

    The snapshot must pass ``PRAGMA quick_check`` (it is the database as of the backup, and
    checking the private copy holds no lock on the live file); with ``force`` a failure is
    only recorded in the manifest's ``source_check``.

    :raises SourceCorrupt: quick_check failed and not ``force``.
    :raises BackupError: the snapshot could not be taken or written.
    """
    with files.staged(final) as temp:
        snapshot = files.temp_path(final) if compress else temp
        try:
            facts = _snapshot(db, snapshot, progress)
            # quick_check reads the snapshot while the checksum or compression reads it too
            # (both release the GIL): the check costs little extra time on two cores.
            with ThreadPoolExecutor(max_workers=1) as pool:
                checking = pool.submit(_quick_check, snapshot)
                if compress:
                    digests = _compress(snapshot, temp, progress)
                else:
                    sha = files.sha256_and_sync(snapshot, "checksum", progress)
                    size = os.path.getsize(snapshot)
                    digests = (sha, size, sha, size)
                source_check = checking.result()
            if source_check != "ok" and not force:
                raise SourceCorrupt(
                    f"{_path(db)} fails PRAGMA quick_check ({source_check}): no backup was "
                    "written; see embeddb maintenance integrity, or pass --force to back it "
                    "up as it is"
                )
        finally:
            if compress:
                files.discard(snapshot)
        sha, size, data_sha, data_size = digests
        record = Manifest(
            format=FORMAT,
            file=os.path.basename(final),
            created_at=manifest.now_iso(),
            source=db.url.redacted(),
            database=db.name or config.name_of(db.url.raw),
            engine_version=__version__,
            database_version=sqlite3.sqlite_version,
            tool_version=None,
            compression=COMPRESSION if compress else None,
            size=size,
            sha256=sha,
            data_size=data_size,
            data_sha256=data_sha,
            source_check=source_check,
            **facts,
        )
        # Manifest first: the data file appears at its final name only once everything is done.
        manifest.write(final, record)
        files.commit(temp, final)
    return record


def _source_connection(db: SqliteEngine) -> sqlite3.Connection:
    return db.raw_connection()  # read-only when db was opened read-only


def _snapshot(db: SqliteEngine, target: str, progress: Progress) -> dict[str, Any]:
    """Copy ``db`` into ``target`` in one step of the online backup API; the snapshot's facts
    for the manifest (page count and size, schema version), read on the same connection."""
    os.close(files.create_private(target))
    source = _source_connection(db)
    try:
        page_size, page_count = (
            source.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count")
        )
        estimate = page_size * page_count
        progress("snapshot", 0, estimate)
        copy = peewee.SqliteDatabase(target)
        try:
            dest = copy.connection()
            # The snapshot is a private temp file: no journal, and one fsync at the end.
            dest.execute("PRAGMA journal_mode=OFF")
            dest.execute("PRAGMA synchronous=OFF")
            source.backup(dest, pages=-1)
            dest.execute("PRAGMA journal_mode=DELETE")
            facts = _describe(copy)
        finally:
            copy.close()
    except (sqlite3.Error, peewee.DatabaseError) as exc:
        raise BackupError(f"could not snapshot {db.url.redacted()}: {exc}") from exc
    finally:
        source.close()
    progress("snapshot", estimate, estimate)
    return facts


def _quick_check(path: str) -> str:
    """``ok``, or the first problems ``PRAGMA quick_check`` finds in the snapshot at ``path``."""
    conn = sqlite3.connect(_readonly_uri(path), uri=True)
    try:
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    if rows == ["ok"]:
        return "ok"
    lines = [line for row in rows for line in row.splitlines() if not line.startswith("***")]
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return "; ".join(lines[:3]) + more


def _readonly_uri(path: str) -> str:
    # immutable=1: the file is only read; no journal, -wal or -shm is created or consulted.
    return f"file:{quote(os.path.abspath(path))}?mode=ro&immutable=1"


def _describe(copy: peewee.SqliteDatabase) -> dict[str, Any]:
    facts = {
        "page_count": copy.execute_sql("PRAGMA page_count").fetchone()[0],
        "page_size": copy.execute_sql("PRAGMA page_size").fetchone()[0],
        "schema_version": None,
    }
    try:
        facts["schema_version"] = manifest.schema_version_of(copy)
    except (peewee.DatabaseError, sqlite3.DatabaseError):  # a damaged copy (--force)
        pass
    return facts


def _compress(source: str, target: str, progress: Progress) -> tuple[str, int, str, int]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    data_digest, file_digest = hashlib.sha256(), hashlib.sha256()
    total, done, size = os.path.getsize(source), 0, 0
    with open(source, "rb") as src, os.fdopen(files.create_private(target), "wb") as out:
        while chunk := src.read(CHUNK):
            data_digest.update(chunk)
            done += len(chunk)
            packed = compressor.compress(chunk)
            file_digest.update(packed)
            out.write(packed)
            size += len(packed)
            progress("compress", done, total)
        packed = compressor.flush()
        file_digest.update(packed)
        out.write(packed)
        size += len(packed)
    return file_digest.hexdigest(), size, data_digest.hexdigest(), total


# -- verify -------------------------------------------------------------------------------------


def verify(
    path: str, record: Manifest, progress: Progress, db: SqliteEngine | None = None,
    copy_to: str | None = None,
) -> dict[str, Any]:
    """Check the file against its manifest, then run integrity_check and foreign_key_check.

    ``copy_to`` keeps the checked, decompressed database there (what restore installs).

    :raises BackupCorrupt: size, checksum, decompression or an integrity check failed.
    """
    manifest.check_file(path, record, progress)
    target = copy_to
    if target is None and record.compression:
        target = files.temp_path(path)
    try:
        if target is not None:
            _expand(path, target, record, progress)
        checks = _integrity(target or path, record, path)
    finally:
        if copy_to is None and target is not None:
            files.discard(target)
    return checks


def _expand(path: str, target: str, record: Manifest, progress: Progress) -> None:
    decompressor = zlib.decompressobj(_GZIP_WBITS) if record.compression else None
    digest, done = hashlib.sha256(), 0
    with open(path, "rb") as src, os.fdopen(files.create_private(target), "wb") as out:
        while chunk := src.read(CHUNK):
            if decompressor is not None:
                chunk = _inflate(decompressor, chunk, path)
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            progress("expand", done, record.data_size)
        complete = decompressor is None or decompressor.eof
        out.flush()
        os.fsync(out.fileno())
    if not complete or digest.hexdigest() != record.data_sha256 or done != record.data_size:
        raise BackupCorrupt(
            f"{path}: the decompressed data does not match its manifest: use another backup"
        )


def _inflate(decompressor: Any, chunk: bytes, path: str) -> bytes:
    try:
        return decompressor.decompress(chunk)
    except zlib.error as exc:
        raise BackupCorrupt(f"{path} cannot be decompressed ({exc}): use another backup") from exc


def _integrity(path: str, record: Manifest, shown: str) -> dict[str, Any]:
    """integrity_check and foreign_key_check of the database at ``path``; errors name ``shown``
    (the backup file, not the temp copy it was expanded into)."""
    path, check = shown, path
    try:
        conn = sqlite3.connect(_readonly_uri(check), uri=True)
    except sqlite3.Error as exc:
        raise BackupCorrupt(f"{path} cannot be opened as SQLite: {exc}") from exc
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupCorrupt(f"{path} is not a usable SQLite database: {exc}") from exc
    finally:
        conn.close()
    problems += [f"foreign key violation: {t}.rowid={r} -> {p}" for t, r, p, _ in foreign[:20]]
    if record.page_count is not None and pages != record.page_count:
        problems.append(f"{pages} pages but the manifest says {record.page_count}")
    if problems:
        raise BackupCorrupt(
            f"{path} fails integrity checks: {'; '.join(problems[:5])}"
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    return {"integrity_check": "ok", "foreign_key_check": "ok", "pages": pages, "tables": tables[0]}


# -- restore ------------------------------------------------------------------------------------


def restore(
    db: SqliteEngine, path: str, record: Manifest, safety_dir: str | None, progress: Progress
) -> dict[str, Any]:
    """Verify ``path``, keep the current file as a safety copy, and install the backup atomically.

    The live database is touched only after every check passed and an exclusive lock is held.
    The installed file keeps the owner, group and mode of the file it replaces (a new one gets
    what SQLite would give it). An empty or missing database is not kept as a safety copy.

    :raises BackupCorrupt: the backup is damaged (the live database is left as it was).
    :raises DatabaseInUse: another connection or process has the database open.
    :raises BackupError: a file could not be read or written (the message names which).
    """
    if db.is_memory:
        raise ConfigurationError(
            "cannot restore into an in-memory database: restore into a file (--db sqlite:///x.db)"
        )
    target = os.path.abspath(_path(db))
    for stale in files.stale_temps(target):  # a restore killed earlier left its copy
        files.discard(stale)
    staging = files.temp_path(target)
    try:
        checks = _verify_into(path, record, progress, staging, _path(db))
        db.close()  # only now: closing the last connection checkpoints the live WAL
        safety = None
        progress("install", 0, None)
        if os.path.exists(target):
            livefile.refuse_if_open(target)
            with livefile.exclusive(target) as conn:
                model = os.stat(target)
                livefile.fold_wal(conn)
                if livefile.has_content(conn):  # an empty file (just made by connect) is not kept
                    safety = livefile.safety_copy(target, safety_dir)
                livefile.install(staging, target, model)
        else:
            livefile.install(staging, target, None)
        progress("install", 1, 1)
    finally:
        files.discard(staging)
    return {"restored": target, "from": path, "safety_copy": safety, "checks": checks}


def _verify_into(
    path: str, record: Manifest, progress: Progress, staging: str, shown: str
) -> dict[str, Any]:
    """:func:`verify` into ``staging``; an OS error names the backup or the database, never the
    temp file."""
    try:
        return verify(path, record, progress, copy_to=staging)
    except OSError as exc:
        if exc.filename == path:
            raise BackupError(f"cannot read the backup {path}: {exc.strerror}") from exc
        raise BackupError(
            f"cannot restore {path} into {shown}: {exc.strerror} (the copy is staged beside it)"
        ) from exc
