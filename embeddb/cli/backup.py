"""``embeddb backup create | verify | list | restore | prune``: thin layers over embeddb.backup."""

from __future__ import annotations

import sys
import time
from typing import Any, Self

import click

from ..backup import (
    check_origin,
    create_backup,
    database_label,
    default_directory,
    list_backups,
    manifest,
    parse_age,
    postgres,
    prune_backups,
    restore_backup,
    retention,
    verify_backup,
)
from ..errors import DatabaseNotFound
from .options import CliState, all_option, database, db_option, each_database, emit_json, json_option


class ProgressBars:
    """Renders ``progress(phase, done, total)`` as one click progress bar per phase on a TTY."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.phase: str | None = None
        self.bar: Any = None
        self.shown = 0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            if total:
                self.bar = click.progressbar(length=total, label=f"{phase:<10}", file=sys.stderr)
                self.bar.__enter__()
            else:
                click.echo(f"{phase}...", err=True)
        if self.bar is not None:
            self.bar.update(done - self.shown)
            self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar, self.shown = None, 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    n = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _age(seconds: float) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _default_directory() -> str:
    """The database's default backup directory; the database must exist (nothing is created)."""
    try:
        return default_directory(database(readonly=True))
    except DatabaseNotFound as exc:
        raise DatabaseNotFound(
            f"{exc}; pass --dir DIR to reach the backups of a database that is gone") from None


def _scope(directory: str | None) -> str | None:
    """Whose backups ``list`` / ``prune`` look at: the embeddb.toml name of the database
    chosen with --database, or with --db the URL of one (as its backups record it); None
    (the backups recording no name) for the default one or another URL; every database's
    with --dir and neither option (a whole folder). Read without opening the database."""
    state = click.get_current_context().ensure_object(CliState)
    if state.db_name is not None or state.db_url is not None:
        return state.entry().name
    if directory and state.db_url is None:
        return retention.ANY_DATABASE
    return None


@click.group()
def backup() -> None:
    """Online backups: create, verify, list, restore and prune."""


@backup.command("create")
@db_option
@json_option
@click.option("--dir", "directory", metavar="DIR", help="Directory for a timestamped file "
              "(default: backups/ beside the SQLite file, ./backups for PostgreSQL).")
@click.option("--out", metavar="FILE", help="Exact file to write (must not exist).")
@click.option("--compress", is_flag=True, help="gzip a SQLite backup (pg_dump -Fc compresses).")
@click.option("--force", is_flag=True, help="Back up a SQLite database even when it fails "
              "PRAGMA quick_check (the manifest records the failure).")
@all_option
def create(directory: str | None, out: str | None, compress: bool, force: bool,
           as_json: bool, all_databases: bool) -> None:
    """Take a consistent backup of the live database while it keeps serving writes (--all:
    of every configured database, each into its own backup folder).

    A SQLite database that fails PRAGMA quick_check is not backed up without --force.
    """
    if directory and out:
        raise click.UsageError("--dir and --out exclude each other")
    if all_databases and out:
        raise click.UsageError("--all writes one file per database: use --dir, not --out")

    def body() -> None:
        start = time.perf_counter()
        with ProgressBars(enabled=not as_json) as bars:
            result = create_backup(database(readonly=True), directory, out, compress,
                                   progress=bars, force=force)
        if as_json:
            emit_json(result.to_dict())
            return
        m = result.manifest
        click.echo(f"Backed up {m.source} to {result.path}")
        click.echo(f"  {_size(m.size)} (data {_size(m.data_size)}), sha256 {m.sha256[:16]}..., "
                   f"schema version {m.schema_version}, {time.perf_counter() - start:.2f} s")
        if m.source_check not in (None, "ok"):
            click.echo(f"warning: the database fails PRAGMA quick_check ({m.source_check}); the "
                       "manifest records it and prune never counts this backup", err=True)

    each_database(all_databases, as_json, body)


@backup.command("verify")
@db_option
@json_option
@click.argument("file", type=click.Path(dir_okay=False))
def verify(file: str, as_json: bool) -> None:
    """Check FILE's checksum, then restore it into a scratch database and check that."""
    needs_server = manifest.read(file).format == postgres.FORMAT
    with ProgressBars(enabled=not as_json) as bars:
        result = verify_backup(file, database(create=False) if needs_server else None, progress=bars)
    if as_json:
        emit_json(result)
        return
    checks = ", ".join(f"{k}={v}" for k, v in result["checks"].items())
    click.echo(f"OK {result['path']}: checksum matches; {checks}")


@backup.command("list")
@db_option
@json_option
@click.option("--dir", "directory", metavar="DIR", help="Directory to list (default as create). "
              "Only the chosen database's backups, unless --dir is given without --database "
              "or --db: then every database's.")
def list_(directory: str | None, as_json: bool) -> None:
    """List backups newest first with size, age, schema version and verified state."""
    # An explicit --dir must exist; the default one appears with the first backup.
    folder = directory or _default_directory()
    entries = list_backups(folder, missing_ok=not directory)
    scope = _scope(directory)  # a backup folder may be shared by several databases
    others = [e for e in entries if e["database"] != scope]
    if scope != retention.ANY_DATABASE:
        entries = [e for e in entries if e["database"] == scope]
    if as_json:
        emit_json([{k: v for k, v in e.items() if k != "manifest"} for e in entries])
        return
    if not entries:
        click.echo("no backups")
        if others and scope != retention.ANY_DATABASE:
            names = sorted({database_label(e["database"]) for e in others})
            click.echo(f"({len(others)} backup(s) of {', '.join(names)} in {folder}: "
                       f"`embeddb backup list --dir {folder}` shows them)")
        return
    click.echo(f"{'created (UTC)':<27} {'age':>6} {'size':>10} {'schema':>7} {'verified':>8} "
               f"{'kind':<10}  file")
    for e in entries:
        verified = {True: "yes", False: "FAILED", None: "-"}[e["verified"]]
        click.echo(f"{e['created_at'][:26]:<27} {_age(e['age_seconds']):>6} "
                   f"{_size(e['size']):>10} {e['schema_version'] or '-'!s:>7} "
                   f"{verified:>8} {e['kind']:<10}  {e['file']}")


@backup.command("restore")
@db_option
@json_option
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--safety-dir", metavar="DIR", help="Where to keep the copy of the current data.")
@click.option("--force", is_flag=True, help="Restore a backup made of another database "
              "(another name in embeddb.toml).")
def restore(file: str, yes: bool, safety_dir: str | None, force: bool, as_json: bool) -> None:
    """Verify FILE, keep a safety copy of the current data, then replace it atomically.

    A backup made of another database (another name of embeddb.toml) is refused without
    --force."""
    db = database()
    check_origin(db, file, force)  # before asking: a wrong database is refused at once
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("restore replaces the database: confirm with --yes")
        click.confirm(f"Replace the data of {db.url.redacted()} with {file}?", abort=True)
    with ProgressBars(enabled=not as_json) as bars:
        result = restore_backup(db, file, safety_dir, progress=bars, force=force)
    if as_json:
        emit_json(result)
        return
    click.echo(f"Restored {result['restored']} from {file}")
    if result["safety_copy"]:
        click.echo(f"  previous data kept at {result['safety_copy']}")
    else:
        click.echo("  no previous data to keep (the database was missing or empty)")


@backup.command("prune")
@db_option
@json_option
@click.option("--dir", "directory", metavar="DIR", help="Directory to prune (default as create). "
              "Only the chosen database's backups, unless --dir is given without --database "
              "or --db: then every database's, each counted apart.")
@click.option("--keep", type=click.IntRange(min=0),
              help="Keep the newest N good backups of each database, every kind counted "
              "together (a backup that failed verification or no longer matches its manifest "
              "does not count). The newest good backup always stays.")
@click.option("--older-than", metavar="AGE", help="Remove only backups older than AGE (30d, 12h).")
@click.option("--kind", type=click.Choice(retention.KINDS),
              help="Prune only this kind: regular, premigrate (taken by migrate) or "
              "prerestore (taken by restore). Default: all, counted together.")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted, and why.")
def prune(directory: str | None, keep: int | None, older_than: str | None, kind: str | None,
          dry_run: bool, as_json: bool) -> None:
    """Remove old backups by count (--keep) and/or age (--older-than), never the last good one.

    Only the sizes are read, plus the sha256 of the backups kept in place of deleted ones
    (skipped when `backup verify` passed since the file was written).
    """
    age = parse_age(older_than) if older_than else None
    folder = directory or _default_directory()
    result = prune_backups(folder, keep, age, dry_run, kind=kind, database=_scope(directory),
                           missing_ok=not directory)
    if as_json:
        emit_json(result)
        return
    for decision in result["decisions"]:
        if decision["action"] != "kept":
            click.echo(f"{decision['action']} {decision['path']}: {decision['reason']}")
    verb = "would delete" if dry_run else "deleted"
    for path in result["leftovers"]:
        click.echo(f"{verb} {path}: left behind by a killed backup")
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"{len(result['removed'])} backup(s) {verb}, {len(result['kept'])} kept")
