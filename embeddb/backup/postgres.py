"""PostgreSQL backups through ``pg_dump -Fc`` and ``pg_restore``, found on PATH.

The dump is streamed through a checksum into a private file, so memory stays flat. A URL with
``?schema=`` backs up (and restores) that schema only. Restore replays the dump through
``psql`` in one transaction whose COMMIT is sent only after pg_restore wrote the whole script:
a failure, or a script cut short, rolls back and leaves the live data as it was.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from typing import IO, TYPE_CHECKING, Any

import psycopg2

from .. import config
from ..errors import BackupCorrupt, BackupError, ConfigurationError, DatabaseInUse, ToolNotFound
from ..url import scrub
from ..version import __version__
from . import files, manifest
from .files import CHUNK, Progress
from .manifest import Manifest

if TYPE_CHECKING:
    from ..database import PostgresEngine

FORMAT = "pg_dump"
#: the suffix of the dump taken before migrating
SAFETY_SUFFIX = ".dump"


def extension(compress: bool) -> str:
    # pg_dump's custom format is zlib-compressed already; --compress changes nothing.
    return ".dump"


def source_name(db: PostgresEngine) -> str:
    return str(db.settings.schema or db.url.database)


def default_directory(db: PostgresEngine) -> str:
    return os.path.abspath("backups")


def check_source(db: PostgresEngine) -> None:
    """Nothing to refuse up front: pg_dump reports its own failures."""


def file_owner(db: PostgresEngine) -> tuple[int, int] | None:
    """A server database has no file whose owner the backup should follow."""
    return None


def tool(name: str) -> str:
    """The path of a PostgreSQL client program.

    :raises ToolNotFound: it is not on PATH.
    """
    found = shutil.which(name)
    if found is None:
        raise ToolNotFound(
            f"{name} not found on PATH: install the PostgreSQL client tools (Debian/Ubuntu: "
            "apt install postgresql-client) or add their directory to PATH"
        )
    return found


def client_env(url: Any, database: str | None = None) -> dict[str, str]:
    """Environment for PostgreSQL client programs (pg_dump, psql...) reaching ``url``.

    Credentials go through the environment, never the command line, where ps would show them.
    """
    env = dict(os.environ)
    values = {
        "PGHOST": url.host, "PGPORT": url.port, "PGUSER": url.user,
        "PGPASSWORD": url.password, "PGDATABASE": database or url.database,
    }
    env.update({k: str(v) for k, v in values.items() if v is not None})
    env.setdefault("PGCONNECT_TIMEOUT", "5")
    return env


def _stderr_of(handle: IO[bytes], password: str | None) -> str:
    handle.seek(0)
    return scrub(handle.read().decode(errors="replace"), password)


# -- create -------------------------------------------------------------------------------------


def create(
    db: PostgresEngine, final: str, compress: bool, progress: Progress, force: bool = False
) -> Manifest:
    """``pg_dump -Fc`` of ``db`` (its schema only with ``?schema=``) into ``final``.

    ``force`` changes nothing: the server checks its pages itself as pg_dump reads them.

    :raises ToolNotFound: pg_dump is not on PATH.
    :raises BackupError: pg_dump failed (its message is included).
    """
    args = [tool("pg_dump"), "-Fc", "--no-password"]
    schema = db.settings.schema
    if schema:
        args += ["--schema", schema]
    version = manifest.schema_version_of(db)
    server = db.execute_sql("SHOW server_version").fetchone()[0]
    with files.staged(final) as temp:
        sha, size = _dump(args, temp, db.url, progress)
        record = Manifest(
            format=FORMAT,
            file=os.path.basename(final),
            created_at=manifest.now_iso(),
            source=db.url.redacted(),
            database=db.name or config.name_of(db.url.raw),
            engine_version=__version__,
            database_version=server,
            tool_version=_version(args[0]),
            schema_version=version,
            compression=None,
            size=size,
            sha256=sha,
            data_size=size,
            data_sha256=sha,
            schema=schema,
        )
        manifest.write(final, record)
        files.commit(temp, final)
    return record


def _dump(args: list[str], temp: str, url: Any, progress: Progress) -> tuple[str, int]:
    with tempfile.TemporaryFile() as err, os.fdopen(files.create_private(temp), "wb") as out:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=client_env(url))
        assert proc.stdout is not None
        try:
            sha, size = files.copy_stream(proc.stdout, out, "dump", None, progress)
        finally:
            proc.stdout.close()
            code = proc.wait()
        if code:
            raise BackupError(f"pg_dump failed (exit {code}): {_stderr_of(err, url.password)}")
    return sha, size


def _version(program: str) -> str:
    out = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


# -- verify -------------------------------------------------------------------------------------


def verify(path: str, record: Manifest, progress: Progress, db: PostgresEngine) -> dict[str, Any]:
    """Checksum, ``pg_restore --list``, then a full restore into a scratch database (dropped).

    :raises BackupCorrupt: a check failed.
    :raises ConfigurationError: no server to restore into was given.
    """
    if db is None:
        raise ConfigurationError(
            "verifying a PostgreSQL backup restores it into a scratch database: pass --db URL"
        )
    manifest.check_file(path, record, progress)
    entries = _list(path, db.url)
    progress("scratch restore", 0, None)
    scratch = f"embeddb_verify_{uuid.uuid4().hex[:12]}"
    admin = _admin(db.url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{scratch}"')
        try:
            _restore_into(path, scratch, db.url)
            tables = _count_tables(db.url, scratch, record.schema)
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    finally:
        admin.close()
    progress("scratch restore", 1, 1)
    return {"pg_restore_list": entries, "scratch_restore": "ok", "tables": tables,
            "scratch_database": scratch}


def _list(path: str, url: Any) -> int:
    proc = subprocess.run(
        [tool("pg_restore"), "--list", path], capture_output=True, env=client_env(url), check=False
    )
    if proc.returncode:
        message = " ".join(proc.stderr.decode(errors="replace").split())
        raise BackupCorrupt(f"{path} is not a readable pg_dump archive: {message}")
    lines = proc.stdout.decode(errors="replace").splitlines()
    return sum(1 for line in lines if line and not line.startswith(";"))


def _admin(url: Any) -> Any:
    try:
        conn = psycopg2.connect(**_params(url))
    except psycopg2.Error as exc:
        raise BackupError(f"cannot connect to {url.redacted()}: {exc}".strip()) from exc
    conn.autocommit = True
    return conn


def _params(url: Any, database: str | None = None) -> dict[str, Any]:
    return {**url.connect_params(database), "connect_timeout": 5}


def _restore_into(path: str, database: str, url: Any) -> None:
    args = [tool("pg_restore"), "--exit-on-error", "--no-owner", "--no-privileges",
            "--no-password", "--dbname", database, path]
    with tempfile.TemporaryFile() as err:
        code = subprocess.run(args, stderr=err, stdout=subprocess.DEVNULL,
                              env=client_env(url, database), check=False).returncode
        if code:
            raise BackupCorrupt(
                f"{path} does not restore cleanly: {_stderr_of(err, url.password)}"
            )


def _count_tables(url: Any, database: str, schema: str | None) -> int:
    conn = psycopg2.connect(**_params(url, database))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema') "
                "AND (%s IS NULL OR table_schema = %s)",
                (schema, schema),
            )
            return cur.fetchone()[0]
    finally:
        conn.close()


# -- restore ------------------------------------------------------------------------------------


def restore(
    db: PostgresEngine, path: str, record: Manifest, safety_dir: str | None, progress: Progress
) -> dict[str, Any]:
    """Verify, dump the current data as a safety copy, then replay the backup in one transaction.

    :raises BackupCorrupt: the backup is damaged (nothing was changed).
    :raises DatabaseInUse: other sessions are connected to the database (whole-database restore).
    :raises BackupError: the replay failed and was rolled back.
    """
    schema = db.settings.schema
    if record.schema != schema:
        raise ConfigurationError(
            f"the backup holds {_scope(record.schema)} but the URL names {_scope(schema)}: "
            "restore through a URL with the same ?schema="
        )
    checks = verify(path, record, progress, db)
    db.close_all()
    if schema is None:
        _refuse_if_connected(db.url)
    else:
        _refuse_if_built_on(db.url, schema)
    directory = safety_dir or default_directory(db)
    stamp = manifest.now_iso().replace(":", "").replace("-", "").replace("+0000", "Z")
    safety = os.path.join(directory, f"{source_name(db)}.pre-restore-{stamp}.dump")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        create(db, safety, False, progress)
    except OSError as exc:
        raise BackupError(
            f"cannot keep the safety copy in {directory}: {exc.strerror} (nothing was restored; "
            "pass --safety-dir DIR)"
        ) from exc
    db.close_all()
    progress("install", 0, None)
    _replay(path, db.url, schema)
    return {"restored": db.url.redacted(), "from": path, "safety_copy": safety, "checks": checks}


def _scope(schema: str | None) -> str:
    return f"schema {schema!r}" if schema else "the whole database"


def _refuse_if_connected(url: Any) -> None:
    conn = _admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            others = cur.fetchone()[0]
    finally:
        conn.close()
    if others:
        raise DatabaseInUse(
            f"{others} other session(s) are connected to {url.database}: stop the application "
            "and retry (or restore one schema with ?schema=)"
        )


# What other schemas build on this one's tables, types, sequences and functions. The replay
# drops the schema with CASCADE, which would drop these too: a view, a foreign key, a column
# of another schema's table typed with one of this schema's enums (with its data), a default.
_BUILT_ON = """
WITH inside AS (
    SELECT 'pg_class'::regclass AS cls, oid FROM pg_class WHERE relnamespace = %(ns)s::regnamespace
    UNION ALL
    SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace = %(ns)s::regnamespace
    UNION ALL
    SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace = %(ns)s::regnamespace
)
SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_depend d
JOIN inside i ON d.refclassid = i.cls AND d.refobjid = i.oid
CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) o
WHERE d.deptype = 'n' AND coalesce(o.schema, (
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = CASE d.classid
        WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid)
        WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = d.objid)
        WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = d.objid)
        WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = d.objid)
    END
), '') <> %(name)s
ORDER BY 1
"""


def _refuse_if_built_on(url: Any, schema: str) -> None:
    """A schema restore replaces the schema only: refuse it while other schemas depend on it."""
    conn = _admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regnamespace(%s) IS NOT NULL", (f'"{schema}"',))
            if not cur.fetchone()[0]:
                return  # nothing there yet: nothing to drop
            cur.execute(_BUILT_ON, {"ns": f'"{schema}"', "name": schema})
            dependents = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    if dependents:
        shown = ", ".join(dependents[:5]) + (f" and {len(dependents) - 5} more"
                                             if len(dependents) > 5 else "")
        raise BackupError(
            f"other schemas depend on schema {schema!r} ({shown}); restoring it would drop "
            "them: nothing was restored (drop or move them, then retry)"
        )


#: where psql read a failing statement: a line of the stream embeddb feeds it, not of a file
#: the user has
_STREAM_LINE = re.compile(r"psql:<stdin>:\d+: ")


def _replay(path: str, url: Any, schema: str | None) -> None:
    produce = [tool("pg_restore"), "--file", "-", path]
    if schema:
        prefix = f'DROP SCHEMA IF EXISTS "{schema}" CASCADE;\n'.encode()
    else:
        prefix = _whole_database_reset(url).encode()
    # Not --single-transaction: psql would COMMIT at the end of its input even when that end
    # came early (pg_restore died between two statements). Without our COMMIT the session
    # ends inside the transaction, and the server rolls it back.
    consume = [tool("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    env = client_env(url)
    with tempfile.TemporaryFile() as err_out, tempfile.TemporaryFile() as err_in:
        source = subprocess.Popen(produce, stdout=subprocess.PIPE, stderr=err_out, env=env)
        sink = subprocess.Popen(consume, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err_in, env=env)
        assert source.stdout is not None and sink.stdin is not None
        sink_stopped = False
        try:
            # psql's stderr is the failure's reason: without the server's notices ("drop
            # cascades to ...", one per dropped schema) on it. In the stream, not PGOPTIONS,
            # which poolers such as PgBouncer refuse.
            sink.stdin.write(b"BEGIN;\nSET LOCAL client_min_messages = warning;\n" + prefix)
            shutil.copyfileobj(source.stdout, sink.stdin, CHUNK)
            if source.wait() == 0:
                sink.stdin.write(b"COMMIT;\n")
        except BrokenPipeError:  # psql stopped at an error
            sink_stopped = True
            source.kill()
        finally:
            source.stdout.close()
            _close_quietly(sink.stdin)
        produced, consumed = source.wait(), sink.wait()
        if produced or consumed:
            # the program that failed first says why: psql stopping makes pg_restore killed,
            # pg_restore failing makes psql's input end
            first, then = (err_out, err_in) if produced and not sink_stopped else (err_in, err_out)
            detail = _stderr_of(first, url.password) or _stderr_of(then, url.password)
            detail = _STREAM_LINE.sub("", " ".join(detail.split()))
            raise BackupError(f"restore failed and was rolled back: {detail}")


def _whole_database_reset(url: Any) -> str:
    """SQL that empties the database before a whole-database replay (in the same transaction).

    ``pg_restore --clean`` only drops what the archive holds, so tables created after the
    backup would survive the restore; instead every user schema is dropped. A dump never
    creates ``public`` (initdb does), even when it changed it (its owner, a comment), so it is
    recreated as PostgreSQL 15 makes it and the dump's own statements about it then apply.
    """
    conn = _admin(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                        "AND nspname <> 'information_schema' ORDER BY 1")
            schemas = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    statements = [f'DROP SCHEMA "{name}" CASCADE;' for name in schemas]
    statements += ["CREATE SCHEMA public AUTHORIZATION pg_database_owner;",
                   "GRANT USAGE ON SCHEMA public TO PUBLIC;"]
    return "\n".join(statements) + "\n"


def _close_quietly(stream: IO[bytes]) -> None:
    try:
        stream.close()
    except BrokenPipeError:
        pass
