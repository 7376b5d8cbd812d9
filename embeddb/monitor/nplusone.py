"""N+1 detection: the same SELECT run again and again with different parameters in one unit.

A unit of work is a transaction, a ``with db.monitor.unit("name"):`` block or one pytest test.
When one normalized SELECT runs ``threshold`` times with distinct parameters inside a unit, the
finding is reported once for that unit: an :class:`NPlusOneWarning`, or in strict mode an
:class:`~embeddb.errors.NPlusOneError` raised from the statement that crossed the threshold.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import NPlusOneError
from .slow import call_site


class NPlusOneWarning(UserWarning):
    """One SELECT ran many times with different parameters in one unit of work."""


@dataclass(frozen=True)
class Finding:
    """What was seen: the unit, the statement, how often and where from."""

    unit: str
    statement: str
    count: int
    call_site: str | None

    def message(self) -> str:
        return (f"N+1 queries in {self.unit!r}: {self.count} runs with different parameters "
                f"of {self.statement} (from {self.call_site or 'unknown'}); load them in one "
                "query (a JOIN, prefetch or WHERE ... IN)")


class Unit:
    """The SELECTs of one unit of work, by fingerprint."""

    __slots__ = ("name", "transaction", "_seen", "_reported")

    def __init__(self, name: str, transaction: bool = False) -> None:
        self.name = name
        self.transaction = transaction
        self._seen: dict[str, set[Any]] = {}
        self._reported: set[str] = set()

    def observe(self, key: str, params: Any, threshold: int) -> int:
        """Count one run; the number of distinct parameter sets when it reaches
        ``threshold`` for the first time in this unit, else 0."""
        if key in self._reported:
            return 0
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = set()
        seen.add(_hashable(params))
        if len(seen) >= threshold:
            self._reported.add(key)
            return len(seen)
        return 0

    def mark_reported(self, key: str) -> None:
        self._reported.add(key)


def _hashable(params: Any) -> Any:
    try:
        value = tuple(params) if isinstance(params, list) else params
        hash(value)
        return value
    except TypeError:
        return repr(params)


class Detector:
    """The units open in each thread and what to do with a finding."""

    def __init__(self, threshold: int = 10, strict: bool = False) -> None:
        self.threshold = threshold
        self.strict = strict
        self.findings: list[Finding] = []
        #: per thread: ``units``, the open units (read directly on the statement path)
        self.local = threading.local()

    def stack(self) -> list[Unit]:
        stack = getattr(self.local, "units", None)
        if stack is None:
            stack = self.local.units = []
        return stack

    def open(self, name: str, transaction: bool = False) -> Unit:
        unit = Unit(name, transaction)
        self.stack().append(unit)
        return unit

    def close(self, unit: Unit) -> None:
        stack = self.stack()
        if unit in stack:
            stack.remove(unit)

    def close_transaction(self) -> None:
        stack = self.stack()
        for unit in reversed(stack):
            if unit.transaction:
                stack.remove(unit)
                return

    def observe(self, key: str, statement: str, params: Any) -> None:
        """Count a SELECT in every open unit of this thread.

        :raises NPlusOneError: strict mode, and this run crossed the threshold.
        """
        stack = getattr(self.local, "units", None)
        if not stack:
            return
        for unit in stack:
            count = unit.observe(key, params, self.threshold)
            if count:
                for other in stack:
                    other.mark_reported(key)
                self._report(Finding(unit.name, statement, count, call_site()))
                return

    def _report(self, finding: Finding) -> None:
        self.findings.append(finding)
        del self.findings[:-100]
        if self.strict:
            raise NPlusOneError(finding.message())
        site = (finding.call_site or "").rsplit(" in ", 1)[0]
        path, _, line = site.rpartition(":")
        if path and line.isdigit():
            warnings.warn_explicit(finding.message(), NPlusOneWarning, path, int(line))
        else:
            warnings.warn(finding.message(), NPlusOneWarning, stacklevel=2)
