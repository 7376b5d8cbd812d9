"""The query monitor of one database: statistics, slow log, N+1 units and query capture.

The database calls :meth:`Monitor.executed` / :meth:`Monitor.record` for every statement once
monitoring is on (see the monitoring section of :mod:`embeddb.database`); everything else here
is what an app, a test or the CLI asks of it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from ..config import MonitorSettings
from ..errors import QueryBudgetExceeded
from .nplusone import Detector, Finding
from .pool import PoolCounters
from .redaction import error_text, published_example, redact, shown_sql
from .slow import SlowLog
from .statements import (
    StatementStats,
    StatementTable,
    fingerprint,
    is_select,
    is_transaction_control,
)


@dataclass(frozen=True)
class Query:
    """One statement seen by a :class:`QueryLog`."""

    sql: str
    params: Any
    duration_ms: float
    error: str | None = None

    @property
    def transaction_control(self) -> bool:
        return is_transaction_control(fingerprint(self.sql)[0])


class QueryLog:
    """The statements run while a capture is open (from any thread), in order."""

    def __init__(self, monitor: Monitor | None = None) -> None:
        self.queries: list[Query] = []
        self.monitor = monitor

    def assert_max_queries(self, limit: int) -> Any:
        """``with log.assert_max_queries(3): ...``: see :meth:`Monitor.assert_max_queries`."""
        if self.monitor is None:
            raise TypeError("this QueryLog belongs to no monitor")
        return self.monitor.assert_max_queries(limit)

    @property
    def statements(self) -> list[Query]:
        """The queries without BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE."""
        return [q for q in self.queries if not q.transaction_control]

    def __len__(self) -> int:
        return len(self.statements)

    def __iter__(self) -> Iterator[Query]:
        return iter(self.statements)

    def clear(self) -> None:
        self.queries.clear()

    def describe(self, queries: list[Query] | None = None) -> str:
        """One numbered line per statement, for failure messages."""
        return "\n".join(f"{i:>3}. {shown_sql(q.sql)}  params={redact(q.sql, q.params)!r}  "
                         f"({q.duration_ms} ms)" for i, q in enumerate(queries or self.statements, 1))


class RowCounter:
    """A SQLite cursor of a SELECT that adds the rows it hands out to its statement's
    statistics (sqlite3 knows the row count only once the rows are fetched)."""

    __slots__ = ("_cursor", "_stats", "_slow")

    def __init__(self, cursor: Any, stats: StatementStats, slow: dict[str, Any] | None) -> None:
        self._cursor = cursor
        self._stats = stats
        self._slow = slow

    def _count(self, n: int) -> None:
        self._stats.rows += n
        if self._slow is not None:
            self._slow["rows"] = (self._slow["rows"] or 0) + n

    def fetchone(self) -> Any:
        row = self._cursor.fetchone()
        if row is not None:
            self._count(1)
        return row

    def fetchall(self) -> list[Any]:
        rows = self._cursor.fetchall()
        self._count(len(rows))
        return rows

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._cursor.fetchmany() if size is None else self._cursor.fetchmany(size)
        self._count(len(rows))
        return rows

    def __iter__(self) -> Iterator[Any]:
        for row in self._cursor:
            self._count(1)
            yield row

    def __enter__(self) -> RowCounter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def assert_max_queries(db: Any, limit: int) -> Any:
    """``with assert_max_queries(db, 3): ...`` fails when the block runs more than 3 statements
    on ``db`` (see :meth:`Monitor.assert_max_queries`)."""
    return db.monitor.assert_max_queries(limit)


class Monitor:
    """What the database's monitor knows: ``db.monitor``.

    With monitoring off the object still answers (empty statistics) and :meth:`explain`
    works; :meth:`enable` switches monitoring on for this database.
    """

    def __init__(self, db: Any, settings: MonitorSettings | None = None) -> None:
        self.db = db
        self.settings = settings or MonitorSettings()
        self.table = StatementTable(self.settings.max_statements)
        self.slow = SlowLog(self.settings.slow_ms / 1000)
        self.detector = Detector(self.settings.nplusone_threshold, self.settings.strict)
        self._captures: list[QueryLog] = []
        self.publisher: Any = None
        self.pool = PoolCounters()

    # -- switching ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return getattr(self.db, "_monitor", None) is self

    def enable(self, strict: bool | None = None, publish: bool | None = None) -> Monitor:
        """Time every statement of this database from now on (``strict``: N+1 raises;
        ``publish``: whether ``embeddb stats`` in other processes sees this one)."""
        if strict is not None:
            self.detector.strict = strict
        if publish is not None:
            self.settings = replace(self.settings, publish=publish)
        self.db.switch_monitoring(self)
        self._start_publishing()
        return self

    def _start_publishing(self) -> None:
        if not self.settings.publish or self.publisher is not None:
            return
        from .publish import Publisher, directory_of

        directory = directory_of(self.db)
        if directory is not None:
            self.publisher = Publisher(self, directory)

    def publish(self) -> bool:
        """Publish the statistics for ``embeddb stats`` now instead of within the second."""
        return self.publisher.publish(self) if self.publisher is not None else False

    def disable(self) -> None:
        """Stop timing statements; the statistics gathered so far stay readable."""
        self.db.switch_monitoring(None)
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    # -- called by the database for each statement --------------------------------------------

    def executed(self, sql: str, params: Any, duration: float, cursor: Any) -> Any:
        """Account a statement that ran; the cursor to hand back (counting rows if needed)."""
        stats = self.table.entry(sql)
        if stats.example is None:
            stats.example = (sql, params)
        rows = cursor.rowcount
        counted = rows < 0 and cursor.description is not None
        stats.add(duration, rows, False)
        slow = None
        if duration >= self.slow.threshold:
            slow = self.slow.add(sql, params, duration, None if counted else rows, None)
        if self._captures:
            self._capture(sql, params, duration, None)
        if self.detector.local.__dict__.get("units") and is_select(stats.statement):
            self.detector.observe(stats.fingerprint, stats.statement, params)
        return RowCounter(cursor, stats, slow) if counted else cursor

    def record(self, sql: str, params: Any, duration: float, rows: int,
               error: BaseException | None = None) -> None:
        """Account a statement whose rows are known (or that failed with ``error``)."""
        stats = self.table.entry(sql)
        if stats.example is None and error is None:
            stats.example = (sql, params)
        stats.add(duration, rows, error is not None)
        if duration >= self.slow.threshold:
            self.slow.add(sql, params, duration, rows, error)
        if self._captures:
            self._capture(sql, params, duration, error)
        if error is None and self.detector.local.__dict__.get("units") \
                and is_select(stats.statement):
            self.detector.observe(stats.fingerprint, stats.statement, params)

    def _capture(self, sql: str, params: Any, duration: float,
                 error: BaseException | None) -> None:
        query = Query(sql, params, round(duration * 1000, 3),
                      None if error is None else error_text(error, sql))
        for log in list(self._captures):
            log.queries.append(query)

    def transaction_began(self) -> None:
        self.detector.open("transaction", transaction=True)

    def transaction_ended(self) -> None:
        self.detector.close_transaction()

    # -- what an app asks -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Statistics per normalized statement (costliest first) and their totals."""
        statements = self.table.snapshot(published_example)
        return {
            "enabled": self.enabled,
            "since": self.table.since,
            "totals": {
                "statements": len(statements),
                "calls": sum(s["calls"] for s in statements),
                "errors": sum(s["errors"] for s in statements),
                "rows": sum(s["rows"] for s in statements),
                "total_ms": round(sum(s["total_ms"] for s in statements), 3),
                "slow": len(self.slow.entries()),
                "nplusone": len(self.detector.findings),
            },
            "statements": statements,
        }

    def reset(self) -> None:
        """Forget the statistics, the slow log and the N+1 findings."""
        self.table.reset()
        self.slow.clear()
        self.detector.findings.clear()

    def after_fork(self) -> None:
        """In a forked child: fresh locks and empty statistics (the parent's are its own)."""
        self.table._lock = threading.Lock()
        self.slow._lock = threading.Lock()
        self.pool._lock = threading.Lock()
        self.reset()

    def slow_queries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The slowest recent statements (over ``slow_ms``), newest first."""
        return self.slow.entries(limit)

    @property
    def findings(self) -> list[Finding]:
        """The N+1 findings reported so far (the newest 100)."""
        return list(self.detector.findings)

    @contextmanager
    def unit(self, name: str) -> Iterator[None]:
        """A unit of work for N+1 detection: ``with db.monitor.unit("checkout"): ...``."""
        unit = self.detector.open(name)
        try:
            yield
        finally:
            self.detector.close(unit)

    @contextmanager
    def capture(self) -> Iterator[QueryLog]:
        """Record every statement run inside the block (monitoring must be on)."""
        log = QueryLog(self)
        self._captures.append(log)
        try:
            yield log
        finally:
            self._captures.remove(log)

    @contextmanager
    def assert_max_queries(self, limit: int) -> Iterator[QueryLog]:
        """Fail if the block runs more than ``limit`` statements (transaction control not
        counted); the error lists them.

        :raises QueryBudgetExceeded: over budget.
        """
        was_on = self.enabled
        if not was_on:
            self.enable()
        try:
            with self.capture() as log:
                yield log
        finally:
            if not was_on:
                self.disable()
        if len(log) > limit:
            raise QueryBudgetExceeded(
                f"{len(log)} queries ran, more than the budget of {limit}:\n{log.describe()}")

    def advise(self, limit: int = 5) -> list[dict[str, Any]]:
        """EXPLAIN the costliest and the most frequent SELECTs seen (``limit`` of each) with
        the parameters of their first run; those whose plan warns or suggests an index."""
        from .explain import review

        entries = [(e, e.example) for e in self.table.entries() if e.example is not None]
        return review(self.db, [(e.statement, sql, params) for e, (sql, params) in entries],
                      limit, {e.statement: (e.total * 1000, e.calls) for e, _ in entries})

    def explain(self, sql: str, params: Any = None, analyze: bool = False) -> Any:
        """The plan of ``sql`` as a tree with warnings and index suggestions
        (:class:`embeddb.monitor.explain.Plan`)."""
        from .explain import explain

        return explain(self.db, sql, params, analyze=analyze)
