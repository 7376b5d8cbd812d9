"""Applying and reverting migrations: up, down, redo, status, verify, repair, resolve.

Every command that changes something holds the migration lock for its whole run and plans from
the history read under it. A migration runs in one transaction together with its bookkeeping
row, so it is either applied and recorded or leaves no trace.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cache.tiered import forget
from ..errors import ChecksumMismatch, DatabaseError, MigrationError, MigrationFailed
from ..protocols import Database
from . import history
from .backends import AUDIT_TRIGGERS, backend_for
from .files import Migration, Part, discover, resolve_directory
from .foreign_keys import (
    PLAIN,
    Rules,
    dropped_or_renamed,
    examine,
    foreign_keys_setting,
    may_need_rules,
)
from .history import APPLIED, FAILED, LOCK_TIMEOUT, Record
from .lock import check_timeout
from .safety import KEEP_BACKUPS, keep_newest, keep_setting, premigrate_backup
from .script import Statement, may_control_transaction, may_hold_parameters


@dataclass(frozen=True)
class Step:
    """One migration applied or reverted (or, in a dry run, that would be)."""

    version: int
    name: str  # e.g. 0001_create_users
    direction: str  # "up" or "down"
    duration_ms: float = 0.0
    statements: tuple[str, ...] = ()
    transaction: bool = True
    #: dry run: what would stop this migration (a lost pragma, a DROP of a referenced table)
    findings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    """Progress report: ``kind`` is waiting (another runner holds the lock; ``pid`` is its
    process id when known), backup (``name`` is the path), applying, applied, reverting or
    reverted."""

    kind: str
    version: int
    name: str
    duration_ms: float | None = None
    pid: int | None = None
    transaction: bool = True  # applying...: whether that part runs in one transaction


@dataclass
class RunResult:
    """What ``up`` / ``down`` / ``redo`` did (or would do, for a dry run)."""

    steps: list[Step] = field(default_factory=list)
    dry_run: bool = False
    backup: str | None = None  # the safety copy taken before changing a SQLite file
    missing: list[Record] = field(default_factory=list)  # applied versions with no file
    version: int | None = None  # the database's version afterwards

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]


Progress = Callable[[Event], None]


def up(
    db: Database,
    directory: str | os.PathLike[str] | None = None,
    *,
    to: int | None = None,
    dry_run: bool = False,
    backup: bool = True,
    allow_out_of_order: bool = False,
    progress: Progress | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    keep_backups: int | None = None,
) -> RunResult:
    """Apply the pending migrations in order (up to and including version ``to``).

    Unless ``backup`` is False, a safety copy of the database is taken first when something
    will run; of those copies the newest ``keep_backups`` stay (default: ``[migrate]
    keep_backups`` in embeddb.toml, else 3).

    :raises MigrationError: the folder is malformed, a migration is out of order, ``to`` is
        unknown, or a failed no-transaction migration is missing its file.
    :raises ChecksumMismatch: an applied file was edited since.
    :raises MigrationFailed: a statement failed (that migration was rolled back), or a
        migration file cannot be loaded (nothing ran).
    :raises MigrationLockTimeout: another runner kept the lock for ``lock_timeout`` seconds.
    :raises ConfigurationError: ``lock_timeout`` or ``keep_backups`` is out of range.
    """
    keep = _check_options(lock_timeout, backup, keep_backups)
    if to is not None and to < 0:
        raise MigrationError(f"--to must be a version of 0 or more (got {to}); nothing was changed")
    migrations = _discover(db, directory)
    with _session(db, lock_timeout, locked=not dry_run, progress=progress) as records:
        plan = _plan_up(migrations, records, to, allow_out_of_order)
        result = RunResult(dry_run=dry_run, missing=_missing(migrations, records))
        if dry_run:
            result.steps = _previews(db, plan, "up")
        else:
            _check_loadable(db, plan, "up")
            result.backup = _backup_if(db, backup and bool(plan), keep, progress)
            with _forgetting(db, bool(plan)):
                result.steps = _apply_all(db, plan, records, progress)
        result.version = _version(db, dry_run)
    return result


def down(
    db: Database,
    directory: str | os.PathLike[str] | None = None,
    steps: int | None = None,
    to: int | None = None,
    *,
    dry_run: bool = False,
    backup: bool = True,
    progress: Progress | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    keep_backups: int | None = None,
) -> RunResult:
    """Revert the newest ``steps`` (default 1) applied migrations, or every one above version
    ``to``: 0, or an applied version.

    ``to=0`` reverts everything, leaving only the bookkeeping table. Every migration to revert
    must have a down part; that is checked before anything changes. The safety copy is taken
    as for :func:`up`.

    :raises MigrationError: ``steps`` and ``to`` both given, ``steps`` < 1, ``to`` negative or
        not an applied version, a migration has no down part or file, or one is marked failed;
        nothing was changed.
    :raises ChecksumMismatch: the up part of a migration to revert is not the text that was
        applied (edited, or another database's folder); nothing was changed.
    :raises MigrationFailed: a statement failed (that migration was rolled back).
    """
    keep = _check_options(lock_timeout, backup, keep_backups)
    _check_down_target(steps, to)
    migrations = _discover(db, directory)
    with _session(db, lock_timeout, locked=not dry_run, progress=progress) as records:
        plan = _plan_down(migrations, records, steps or 1, to)
        result = RunResult(dry_run=dry_run, missing=_missing(migrations, records))
        if dry_run:
            result.steps = _previews(db, plan, "down")
        else:
            _check_loadable(db, plan, "down")
            result.backup = _backup_if(db, backup and bool(plan), keep, progress)
            with _forgetting(db, bool(plan)):
                result.steps = [_revert(db, m, progress) for m in plan]
        result.version = _version(db, dry_run)
    return result


def redo(
    db: Database,
    directory: str | os.PathLike[str] | None = None,
    *,
    backup: bool = True,
    progress: Progress | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
    keep_backups: int | None = None,
) -> RunResult:
    """Revert the newest applied migration and apply it again (one lock for both); the safety
    copy is taken as for :func:`up`.

    :raises MigrationError: nothing is applied, or the newest migration has no down part.
    :raises MigrationFailed: a statement failed.
    """
    keep = _check_options(lock_timeout, backup, keep_backups)
    migrations = _discover(db, directory)
    with _session(db, lock_timeout, locked=True, progress=progress) as records:
        [target] = _plan_down(migrations, records, 1, None)
        result = RunResult(missing=_missing(migrations, records))
        _check_loadable(db, [target], "down")
        _check_loadable(db, [target], "up")
        result.backup = _backup_if(db, backup, keep, progress)
        with _forgetting(db, True):
            result.steps.append(_revert(db, target, progress))
            result.steps += _apply_all(db, [target], history.read(db), progress)
        result.version = _version(db, dry_run=False)
    return result


# -- planning -------------------------------------------------------------------------------


def _discover(db: Database, directory: str | os.PathLike[str] | None) -> list[Migration]:
    return discover(resolve_directory(directory, db), backend_for(db).variants)


def _check_options(lock_timeout: float, backup: bool, keep_backups: int | None) -> int:
    """Validate the run's options before anything is touched; the number of copies to keep."""
    check_timeout(lock_timeout)
    return keep_setting(keep_backups) if backup else KEEP_BACKUPS


def _check_down_target(steps: int | None, to: int | None) -> None:
    if steps is not None and to is not None:
        raise MigrationError(
            f"pass --steps or --to, not both (got --steps {steps} --to {to}); nothing was changed"
        )
    if steps is not None and steps < 1:
        raise MigrationError(f"--steps must be 1 or more (got {steps}); nothing was changed")
    if to is not None and to < 0:
        raise MigrationError(
            f"--to must be 0 (revert everything) or an applied version (got {to}); "
            "nothing was changed"
        )


@contextmanager
def _session(
    db: Database, lock_timeout: float, locked: bool, progress: Progress | None = None
) -> Iterator[dict[int, Record]]:
    """:func:`history.session`; while another runner holds the lock, ``progress`` hears a
    ``waiting`` event first."""

    def waiting(pid: int | None) -> None:
        if progress is not None:
            progress(Event("waiting", 0, "", pid=pid))

    with history.session(db, lock_timeout, locked, waiting) as records:
        yield records


def _version(db: Database, dry_run: bool) -> int | None:
    """The version after the run; the table exists unless this was a dry run (no lock, no
    CREATE)."""
    return history.current_version(db) if dry_run else history.newest_applied(db)


def _plan_up(
    migrations: list[Migration],
    records: dict[int, Record],
    to: int | None,
    allow_out_of_order: bool,
) -> list[Migration]:
    _check_checksums(migrations, records)
    by_version = {m.version: m for m in migrations}
    for record in records.values():
        if record.status == FAILED and record.version not in by_version:
            raise MigrationError(
                f"version {record.version} ({record.name}) failed outside a transaction and its "
                f"file is gone: restore it, or run `embeddb migrate resolve {record.version}`"
            )
    if to is not None and to != 0 and to not in by_version:
        raise MigrationError(f"no migration with version {to} in the folder")
    pending = [
        m for m in migrations
        if (m.version not in records or records[m.version].status == FAILED)
        and (to is None or m.version <= to)
    ]
    newest = max((r.version for r in records.values() if r.status == APPLIED), default=0)
    late = [m.label for m in pending if m.version < newest and m.version not in records]
    if late and not allow_out_of_order:
        raise MigrationError(
            f"{', '.join(late)} {'is' if len(late) == 1 else 'are'} older than the newest applied "
            f"version {newest}: renumber the file(s) above it, or pass --allow-out-of-order"
        )
    return pending


def _check_checksums(migrations: list[Migration], records: dict[int, Record]) -> None:
    changed = [_mismatch(m, records[m.version]) for m in migrations if _changed(m, records)]
    if changed:
        raise ChecksumMismatch(
            "; ".join(changed) + ": restore the file(s), or run `embeddb migrate repair` to "
            "accept the new content"
        )


def _changed(migration: Migration, records: dict[int, Record]) -> bool:
    record = records.get(migration.version)
    return record is not None and record.status == APPLIED and record.checksum != migration.checksum


def _mismatch(migration: Migration, record: Record) -> str:
    return (
        f"{migration.up.path.name} changed after it was applied "
        f"(recorded checksum {record.checksum}, file now {migration.checksum})"
    )


def _missing(migrations: list[Migration], records: dict[int, Record]) -> list[Record]:
    known = {m.version for m in migrations}
    return [r for r in records.values() if r.version not in known]


def _plan_down(
    migrations: list[Migration], records: dict[int, Record], steps: int, to: int | None
) -> list[Migration]:
    failed = [r for r in records.values() if r.status == FAILED]
    if failed:
        raise MigrationError(
            f"version {failed[0].version} ({failed[0].name}) is marked failed: run "
            f"`embeddb migrate up` again or `embeddb migrate resolve {failed[0].version}` first"
        )
    applied = sorted((v for v in records), reverse=True)
    if to is not None:
        if to != 0 and to not in records:
            known = ", ".join(str(v) for v in sorted(applied)) or "none"
            raise MigrationError(
                f"--to {to} is not an applied version (applied: {known}); pass 0 to revert "
                "everything; nothing was changed"
            )
        targets = [v for v in applied if v > to]
    elif steps < 1:
        raise MigrationError(f"--steps must be 1 or more (got {steps}); nothing was changed")
    else:
        targets = applied[:steps]
    if not targets and to is None:
        raise MigrationError("no applied migration to revert")
    by_version = {m.version: m for m in migrations}
    for version in targets:
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"cannot revert version {version} ({records[version].name}): its file is missing"
            )
        if migration.down is None:
            raise MigrationError(
                f"cannot revert {migration.label}: it has no down part "
                f"(add {migration.label}.down.sql or a '-- migrate:down' section); "
                "nothing was changed"
            )
    changed = [_mismatch(by_version[v], records[v]) for v in targets
               if _changed(by_version[v], records)]
    if changed:  # its down part undoes that text, not what was applied (another db's folder?)
        raise ChecksumMismatch(
            "; ".join(changed) + ": its down part may not undo what was applied (is this the "
            "database's own migrations folder?); restore the file, or run `embeddb migrate "
            "repair` to accept it; nothing was changed")
    return [by_version[v] for v in targets]


def _previews(db: Database, plan: list[Migration], direction: str) -> list[Step]:
    dropped: set[str] = set()  # by earlier steps of the plan: no longer there to reference
    return [_preview(db, m, _part(m, direction), direction, dropped) for m in plan]


def _preview(
    db: Database, migration: Migration, part: Part, direction: str, dropped: set[str]
) -> Step:
    findings: list[str] = []
    if part.sql is None:
        statements: tuple[str, ...] = (f"{direction}(db) in {part.path.name}",)
        split: list[Statement] = []
    else:
        split = backend_for(db).split_script(part.sql)
        statements = tuple(s.sql for s in split)
    try:
        rules = _rules(db, part)
    except MigrationError as exc:
        findings.append(str(exc))
        rules = PLAIN
    fks = backend_for(db).foreign_keys(db)
    if fks is not None and rules.guarded:
        # as the run will have them: off for the whole part, or set by its own PRAGMAs
        # outside a transaction (inside one SQLite ignores them)
        enforced = not rules.foreign_keys_off and fks.enforced()
        live = not part.transaction or _manages_transactions(split)
        inside = False
        for statement in split:
            keyword = statement.keyword
            setting = foreign_keys_setting(statement)
            if keyword in ("BEGIN", "START"):
                inside = True
            elif keyword in ("COMMIT", "END", "ROLLBACK", "ABORT"):
                inside = False
            elif setting is not None and live and not inside:
                enforced = setting
            target = dropped_or_renamed(statement)
            if target is None:
                continue
            referencing = [c for c, _ in fks.referencing(target[1])
                           if c.lower() not in dropped] if enforced else []
            if referencing:
                findings.append(
                    f"{_where(part, statement)}: {target[0]} of table {target[1]}, which "
                    f"{', '.join(sorted(set(referencing)))} reference(s), while foreign keys "
                    "are on: would be refused (start the file with PRAGMA foreign_keys = OFF "
                    "to rebuild a table)"
                )
            if target[0] == "drop":
                dropped.add(target[1].lower())
    return Step(
        migration.version, migration.label, direction, 0.0, statements, part.transaction,
        tuple(findings),
    )


def _part(migration: Migration, direction: str) -> Part:
    part = migration.up if direction == "up" else migration.down
    assert part is not None
    return part


def _rules(db: Database, part: Part) -> Rules:
    """How ``part`` must run (worked out once per part): foreign keys off, DROPs guarded."""
    known = part.__dict__.get("_rules")
    if known is None:
        known = part.__dict__["_rules"] = _work_out_rules(db, part)
    return known


def _work_out_rules(db: Database, part: Part) -> Rules:
    fks = backend_for(db).foreign_keys(db)
    if fks is None:
        return PLAIN
    if part.sql is None:
        return Rules(foreign_keys_off=part.foreign_keys_off)
    if not may_need_rules(part.sql):
        return PLAIN
    statements = backend_for(db).split_script(part.sql)
    return examine(
        lambda s: _where(part, s), statements, part.transaction, fks.known_pragmas()
    )


def _where(part: Part, statement: Statement) -> str:
    return f"{part.path.name} line {part.first_line - 1 + statement.line}"


@contextmanager
def _foreign_keys(
    db: Database, migration: Migration, direction: str, rules: Rules
) -> Iterator[tuple[Callable[[], None], Callable[[Statement], None] | None]]:
    """Foreign keys as the part needs them for the block, as they were afterwards.

    Yields the check to run before the part's COMMIT, and the guard to run before each of
    its statements (None when there is nothing to guard)."""
    fks = backend_for(db).foreign_keys(db)
    part = _part(migration, direction)
    if fks is None or (rules.plain and not part.python):
        yield _nothing, None
        return
    outcome = f"{migration.label} {direction} was rolled back"
    guard = None
    if rules.guarded and not rules.foreign_keys_off:  # with them off a DROP cascades nowhere

        def guard(statement: Statement) -> None:
            if statement.keyword in ("DROP", "ALTER"):
                fks.check_drop(_where(part, statement), statement, outcome)

    if rules.foreign_keys_off:
        with fks.off():
            yield (lambda: fks.check_violations(f"{migration.label} {direction}")), guard
    elif rules.checked_by_own_commit:
        with fks.kept():
            yield (lambda: fks.check_violations(f"{migration.label} {direction}")), guard
    elif part.python:
        with fks.kept(), fks.guarded(outcome):
            yield _nothing, None
    else:
        with fks.kept():
            yield _nothing, guard


def _keeping_audit(db: Database, migration: Migration, direction: str, part: Part,
                   check: Callable[[], None]) -> Callable[[], None]:
    """``check``, then the refusal of a part that took away an audited table's audit triggers
    without naming them: dropping a table drops its triggers, so the usual SQLite rebuild
    (create, copy, drop, rename) would end that table's audit log without a word. A part that
    names the trigger (``embeddb audit disable``, or the enable statements run again after the
    rebuild) knows. On SQLite, whose triggers write the table's name, a rename that takes
    them along is refused too. Checked before the part's COMMIT, so a refusal rolls it back;
    not in a part that commits by itself (no-transaction, or its own BEGIN ... COMMIT), which
    has committed by then."""
    if not part.transaction or (part.sql is not None and may_control_transaction(part.sql)
                                and _manages_transactions(_statements(db, part))):
        return check
    backend = backend_for(db)
    before = backend.audit_triggers(db)
    if not before:
        return check
    try:
        text = (part.sql if part.sql is not None else part.path.read_text()).lower()
    except OSError:
        text = ""

    def checked() -> None:
        check()
        after, tables = backend.audit_triggers(db), backend.tables(db)
        now_on = {name: table for table, names in after.items() for name in names}
        if backend.audit_names_the_table:
            renamed = sorted({(table, now_on[name]) for table, names in before.items()
                              if table not in tables for name in names
                              if name in now_on and name.lower() not in text})
            if renamed:
                old, new = renamed[0]
                raise MigrationFailed(
                    f"{migration.label} {direction} renames audited table {old} to {new} and "
                    f"was rolled back: its audit triggers would log {new}'s rows as {old}'s; "
                    f"put the statements of `embeddb audit disable {old}` in it, then run "
                    f"`embeddb audit enable {new}`")
        lost = sorted(table for table, names in before.items() if table in tables and any(
            now_on.get(name) != table and name.lower() not in text for name in names))
        if lost:
            raise MigrationFailed(
                f"{migration.label} {direction} drops the audit triggers of {', '.join(lost)} "
                "(dropping a table drops its triggers, as a rebuild does) and was rolled back: "
                f"end it with the statements of `embeddb audit enable {lost[0]}` with the "
                "same --columns / --exclude (embeddb.audit.enable_sql), or first run "
                f"`embeddb audit disable {lost[0]}`")

    return checked


def _nothing() -> None:
    """The foreign-key check of a part that left them on: SQLite checked every row."""


@contextmanager
def _forgetting(db: Database, changing: bool) -> Iterator[None]:
    """Migrations rewrite data the cache may hold: once they ran (or failed part-way),
    invalidate everything cached for ``db`` on this machine."""
    try:
        yield
    finally:
        if changing:
            forget(db)


def _check_loadable(db: Database, plan: list[Migration], direction: str) -> None:
    """Load every Python migration, check every script of ``plan`` and work out how each
    part must run, before the safety copy and the first change: a file that cannot even be
    read, or a pragma that would be lost, costs neither.

    :raises MigrationFailed: a Python migration fails to import or lacks its function, or a
        script ends inside a string, comment or trigger body (where the backend can tell).
    :raises MigrationError: a pragma SQLite would ignore in the migration's transaction.
    """
    for migration in plan:
        part = migration.up if direction == "up" else migration.down
        if part is None:
            continue
        _rules(db, part)
        if part.sql is None:
            module = _load_module(migration)
            if not callable(getattr(module, direction, None)):
                raise MigrationFailed(
                    f"{part.path.name} defines no {direction}(db) function; nothing was changed"
                )
        else:
            unfinished = backend_for(db).unfinished(part.sql)
            if unfinished is not None:
                raise MigrationFailed(
                    f"{part.path.name} line {part.first_line - 1 + unfinished.line}: the script "
                    "ends inside a string, a comment or a trigger body (statement: "
                    f"{_one_line(unfinished.sql, 120)}); nothing was changed"
                )


def _backup_if(db: Database, wanted: bool, keep: int, progress: Progress | None) -> str | None:
    path = premigrate_backup(db) if wanted else None
    if path is not None:
        keep_newest(db, path, keep)
    if path is not None and progress is not None:
        progress(Event("backup", 0, path))
    return path


# -- running --------------------------------------------------------------------------------


def _apply_all(
    db: Database, plan: list[Migration], records: dict[int, Record], progress: Progress | None
) -> list[Step]:
    steps = []
    for migration in plan:
        _notify(progress, "applying", migration)
        step = _apply(db, migration, replace=migration.version in records)
        if step is not None:
            _notify(progress, "applied", migration, step.duration_ms)
            steps.append(step)
    return steps


def _apply(db: Database, migration: Migration, replace: bool) -> Step | None:
    """Apply one migration with its bookkeeping row; None if another runner applied it first.

    The plan comes from the history read under the migration lock, which every embeddb
    command that writes the history holds, so the history is not re-read here. A runner that
    did not take the lock (another tool, a database reached through two paths) still cannot
    apply a transactional migration twice: the row's INSERT fails on the primary key and the
    transaction rolls back with the migration's work. Only then, on that failure path, is the
    history read again, to tell "applied meanwhile" (skipped, as the lock would have made it)
    from a real error. A part that commits on its own (no-transaction, or its own COMMIT) is
    checked just before it runs instead; only the lock fully protects those.
    """
    part = migration.up
    rules = _rules(db, part)
    with _foreign_keys(db, migration, "up", rules) as (check, guard):
        check = _keeping_audit(db, migration, "up", part, check)
        return _apply_part(db, migration, part, replace, check, guard)


def _apply_part(
    db: Database,
    migration: Migration,
    part: Part,
    replace: bool,
    check: Callable[[], None],
    guard: Callable[[Statement], None] | None,
) -> Step | None:
    start = time.perf_counter()
    replacing = FAILED if replace else None

    def record(duration_ms: float | None = None, status: str = APPLIED) -> None:
        elapsed = duration_ms if duration_ms is not None else _ms(start)
        history.write(
            db, migration.version, migration.label, migration.checksum, elapsed, status, replacing
        )

    def finish() -> None:
        check()
        record()

    if guard is None and _run_in_one_call(db, part, finish):
        return Step(migration.version, migration.label, "up", _ms(start), (), True)
    start = time.perf_counter()  # timing starts over with the statement-by-statement run
    statements = _statements(db, part)
    if part.transaction and not _manages_transactions(statements):
        try:
            with db.atomic():
                _run_part(db, migration, part, statements, guard=guard)
                finish()
        except (MigrationFailed, DatabaseError):
            if _applied_elsewhere(db, migration.version):
                return None
            raise
    else:
        if _applied_elsewhere(db, migration.version):  # its statements commit on their own
            return None
        # a script with its own BEGIN ... COMMIT gets the check before that COMMIT
        _run_outside(
            db, migration, part, statements, finish if part.transaction else record,
            lambda: record(status=FAILED), guard=guard
        )
    return Step(migration.version, migration.label, "up", _ms(start), (), part.transaction)


def _run_in_one_call(db: Database, part: Part, finish: Callable[[], None]) -> bool:
    """Run a transactional SQL part and ``finish`` through the backend's one-call path, when it
    has one and the script surely leaves the transaction alone and binds no parameters; False
    otherwise.

    False too when it failed (and was rolled back): the statement-by-statement run that
    follows names the failing line, or finds the version applied meanwhile. A failing script
    thus runs twice, the price of not splitting every other one.
    """
    sql = part.sql
    if (sql is None or not part.transaction or may_control_transaction(sql)
            or may_hold_parameters(sql)):
        return False
    try:
        return backend_for(db).run_script(db, sql, finish)
    except DatabaseError:
        return False


def _applied_elsewhere(db: Database, version: int) -> bool:
    """After a failed (rolled back) attempt: whether the history now says ``version`` is
    applied. A history that cannot be read says no, so the original error is raised."""
    try:
        return history.status_of(db, version) == APPLIED
    except DatabaseError:
        return False


def _revert(db: Database, migration: Migration, progress: Progress | None) -> Step:
    part = migration.down
    assert part is not None
    _notify(progress, "reverting", migration)
    rules = _rules(db, part)
    with _foreign_keys(db, migration, "down", rules) as (check, guard):
        check = _keeping_audit(db, migration, "down", part, check)
        duration = _revert_part(db, migration, part, check, guard)
    _notify(progress, "reverted", migration, duration)
    return Step(migration.version, migration.label, "down", duration, (), part.transaction)


def _revert_part(
    db: Database,
    migration: Migration,
    part: Part,
    check: Callable[[], None],
    guard: Callable[[Statement], None] | None,
) -> float:
    """Run a down part with its bookkeeping; how long it took (ms)."""
    start = time.perf_counter()

    def forget() -> None:
        check()
        history.delete(db, migration.version)

    def mark_failed() -> None:
        history.write(
            db, migration.version, migration.label, migration.checksum, _ms(start), FAILED, APPLIED
        )

    if guard is not None or not _run_in_one_call(db, part, forget):
        start = time.perf_counter()  # timing starts over with the statement-by-statement run
        statements = _statements(db, part)
        if part.transaction and not _manages_transactions(statements):
            with db.atomic():
                _run_part(db, migration, part, statements, direction="down", guard=guard)
                forget()
        else:
            _run_outside(
                db, migration, part, statements, forget, mark_failed, direction="down",
                guard=guard,
            )
    return _ms(start)


def _statements(db: Database, part: Part) -> list[Statement] | None:
    return None if part.sql is None else backend_for(db).split_script(part.sql)


def _manages_transactions(statements: list[Statement] | None) -> bool:
    return statements is not None and any(s.controls_transaction for s in statements)


def _run_part(
    db: Database,
    migration: Migration,
    part: Part,
    statements: list[Statement] | None,
    direction: str = "up",
    guard: Callable[[Statement], None] | None = None,
) -> None:
    """Run a part's statements (or its Python function) on the current connection;
    ``guard`` looks at each statement before it runs."""
    if statements is None:
        _run_python(db, migration, part, direction)
        return
    for statement in statements:
        if guard is not None:
            guard(statement)
        _execute(db, migration, part, statement, direction)


def _execute(
    db: Database, migration: Migration, part: Part, statement: Statement, direction: str
) -> None:
    try:
        db.execute_fast(statement.sql)
    except DatabaseError as exc:
        line = part.first_line - 1 + statement.line
        raise MigrationFailed(
            f"{part.path.name} line {line}: {_one_line(str(exc))} "
            f"(statement: {_one_line(statement.sql, 120)}); {migration.label} {direction} "
            f"{'was rolled back' if part.transaction else 'stopped there'}{_audit_hint(exc)}"
        ) from exc


def _audit_hint(exc: BaseException) -> str:
    """What to do when a statement failed because an audit trigger names a column it drops
    or renames (SQLite checks triggers as it changes the table)."""
    found = re.search(r"error in trigger (\S+) after (?:drop|rename) column", str(exc))
    if found is None or not found.group(1).startswith(AUDIT_TRIGGERS):
        return ""
    table = found.group(1)[len(AUDIT_TRIGGERS):].rsplit("_", 1)[0]
    return (f": the audit triggers of {table} name that column; put the statements of "
            f"`embeddb audit disable {table}` before it and of `embeddb audit enable {table}` "
            "after it")


def _run_outside(
    db: Database,
    migration: Migration,
    part: Part,
    statements: list[Statement] | None,
    finish: Callable[[], None],
    mark_failed: Callable[[], None],
    direction: str = "up",
    guard: Callable[[Statement], None] | None = None,
) -> None:
    """Run a no-transaction part, or one with its own BEGIN/COMMIT, statement by statement.

    The bookkeeping change (after the foreign-key check, when the script turns them off) runs
    just before the script's last COMMIT, so it commits together with the script. If a
    statement fails after something was committed, the migration is recorded as failed.
    """
    if statements is None:
        _run_python_outside(db, migration, part, finish, mark_failed, direction)
        return
    in_transaction = committed = finished = False
    final = max((i for i, s in enumerate(statements) if s.keyword in ("COMMIT", "END")),
                default=-1)
    for index, statement in enumerate(statements):
        keyword = statement.keyword
        try:
            if index == final and in_transaction:
                finish()
                finished = True
            if guard is not None:
                guard(statement)
            _execute(db, migration, part, statement, direction)
        except (MigrationFailed, KeyboardInterrupt) as exc:
            if in_transaction:
                db.execute_sql("ROLLBACK")
            # Ctrl-C may land after an autocommitted statement took effect
            if committed or (isinstance(exc, KeyboardInterrupt) and not in_transaction):
                mark_failed()
            raise
        if keyword in ("BEGIN", "START"):
            in_transaction = True
        elif keyword in ("COMMIT", "END", "ROLLBACK", "ABORT"):
            committed = committed or keyword in ("COMMIT", "END")
            in_transaction = False
        elif not in_transaction and foreign_keys_setting(statement) is None:
            committed = True
    if not finished:
        with db.atomic():
            finish()


def _run_python(db: Database, migration: Migration, part: Part, direction: str) -> None:
    module = _load_module(migration)
    function = getattr(module, direction)
    try:
        function(db)
    except Exception as exc:
        line = _line_in(exc, part.path)
        where = f"{part.path.name} line {line}" if line else part.path.name
        raise MigrationFailed(
            f"{where}: {type(exc).__name__}: {_one_line(str(exc))}; {migration.label} "
            f"{direction} {'was rolled back' if part.transaction else 'stopped there'}"
        ) from exc


def _run_python_outside(
    db: Database,
    migration: Migration,
    part: Part,
    finish: Callable[[], None],
    mark_failed: Callable[[], None],
    direction: str,
) -> None:
    try:
        _run_python(db, migration, part, direction)
    except (MigrationFailed, KeyboardInterrupt):  # it may have committed some of its work
        mark_failed()
        raise
    with db.atomic():
        finish()


def _load_module(migration: Migration) -> Any:
    if migration.module is None:
        path = migration.up.path
        spec = importlib.util.spec_from_file_location(f"embeddb_migration_{migration.version}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise MigrationFailed(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from exc
        migration.module = module
    return migration.module


def _line_in(exc: BaseException, path: Path) -> int | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return frames[-1].lineno if frames else None


def _notify(
    progress: Progress | None, kind: str, migration: Migration, duration: float | None = None
) -> None:
    if progress is not None:
        part = migration.down if kind.startswith("revert") else migration.up
        transaction = part.transaction if part is not None else True
        progress(Event(kind, migration.version, migration.label, duration,
                       transaction=transaction))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
