"""``embeddb doctor``: health checks with OK / WARN / FAIL and the fix for each."""

from __future__ import annotations

import click

from .. import doctor as checks
from .options import all_option, database, db_option, each_database, emit_json, json_option


@click.command()
@click.option("--migrations", "migrations", metavar="DIR", default=None,
              help="Migrations folder (default: $EMBEDDB_MIGRATIONS_DIR or ./migrations).")
@click.option("--backups", "backups", metavar="DIR", default=None,
              help="Backup folder (default: backups/ beside a SQLite file, else ./backups).")
@click.option("--no-verify", is_flag=True, help="Do not verify the newest backup.")
@db_option
@json_option
@all_option
def doctor(migrations: str | None, backups: str | None, no_verify: bool, as_json: bool,
           all_databases: bool) -> None:
    """Check the database and say what to fix: pragmas, corruption, WAL growth, migrations,
    backups, cache directory, disk space, connections, long transactions, foreign keys
    without an index. Exit code 1 when any check FAILs.

    Examples: embeddb --db sqlite:///app.db doctor --json; embeddb doctor -d users;
    embeddb doctor --all --json
    """
    if all_databases and (migrations or backups):
        raise click.UsageError("--all takes each database's own folders: drop --migrations "
                               "and --backups")

    def body() -> None:
        db = database(readonly=True)
        found = checks.run(db, checks.Options(migrations, backups, not no_verify))
        if as_json:
            emit_json({"ok": not checks.failed(found), "checks": [c.as_dict() for c in found]})
        else:
            for check in found:
                line = f"{check.status:<4}  {check.name:<18} {check.message}"
                click.echo(line if check.fix is None else f"{line}\n      fix: {check.fix}")
        if checks.failed(found):
            raise SystemExit(1)

    each_database(all_databases, as_json, body)
