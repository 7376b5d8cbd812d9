"""Compiled SQL and row code: the lookup statement and the generated straight-line function
that turns dicts into rows, built once per model (rows into objects: :mod:`embeddb.hydration`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import peewee

from ..dialect import quote
from ..errors import InvalidQueryError
from ..models import BaseModel, utcnow
from .core import M, RepositoryCore
from .statements import ready_test

if TYPE_CHECKING:
    from ..hydration import Hydrator

_GENERATED = {"id", "created_at", "updated_at"}  # filled in when given as None too


_MISSING = object()


class Plan(NamedTuple):
    """What a repository builds once per model and parameter style (~0.8 ms)."""

    get_sql: str  # SELECT ... WHERE pk = ?
    hydrate: Hydrator  # row -> model object
    to_tuple: Callable[[Mapping[str, Any], Any], tuple[Any, ...]]  # (values, fills) -> row


_PLANS: dict[tuple[type, str], Plan] = {}


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items, pulling from ``rows`` lazily."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class RowCode(RepositoryCore[M]):
    """Per-model SQL and generated row converters."""

    @property
    def _table(self) -> str:
        return quote(self.model._meta.table_name)

    def _build_get_sql(self) -> str:
        columns = ", ".join(quote(f.column_name) for f in self._fields)
        sql = f"SELECT {columns} FROM {self._table} WHERE {quote(self._pk.column_name)} = "
        sql += self.db.param
        if self._soft:
            sql += f" AND {quote('deleted_at')} IS NULL"
        return sql

    def _select(self, *, with_deleted: bool = False) -> peewee.ModelSelect[M]:
        if self._soft and with_deleted:
            return cast(Any, self.model).select_with_deleted(*self._fields)
        return self.model.select(*self._fields)

    def _run(self, query: peewee.ModelSelect[Any]) -> list[M]:
        cursor = self.db.execute(query)
        return [self._hydrate(row) for row in cursor.fetchall()]

    def _row_tuples(self, chunk: list[Mapping[str, Any] | M]) -> list[tuple[Any, ...]]:
        fills = self._fills()
        to_tuple = self._to_tuple
        known = self._known
        tuples = []
        for row in chunk:
            if isinstance(row, BaseModel):
                row = row.__data__
            elif not known.issuperset(row):
                unknown = ", ".join(sorted(set(row) - known))
                raise InvalidQueryError(f"unknown field(s) {unknown} for {self.model.__name__}")
            tuples.append(to_tuple(row, fills))
        return tuples

    def _fills(self) -> list[Any]:
        """Per field, the database value used when a row leaves it out (None: made per row).

        Rows of one batch share one ``created_at`` / ``updated_at`` when they give none.
        """
        now = utcnow()
        fills = []
        for name, field, write in zip(self._names, self._fields, self._writers):
            if name in ("created_at", "updated_at"):
                fills.append(write(now))
            elif callable(field.default) or field.default is None:
                fills.append(None)
            else:
                fills.append(write(field.default))
        return fills

    def _compile_writer(self) -> Any:
        """Build ``(row dict, fills) -> tuple of database values`` as straight-line code."""
        namespace: dict[str, Any] = {"MISSING": _MISSING}
        lines = ["def to_tuple(data, fills):", "    get = data.get"]
        for i, (name, field, write) in enumerate(zip(self._names, self._fields, self._writers)):
            namespace[f"w{i}"] = write
            missing = f"fills[{i}]"
            if name not in ("created_at", "updated_at") and callable(field.default):
                namespace[f"m{i}"] = field.default
                missing = f"w{i}(m{i}())"
            absent = f"v{i} is MISSING" + (f" or v{i} is None" if name in _GENERATED else "")
            convert = f"v{i} is not None"
            ready = ready_test(field)
            if ready:
                convert += f" and not {ready.format(v=f'v{i}')}"
            lines += [
                f"    v{i} = get({name!r}, MISSING)",
                f"    if {absent}:",
                f"        v{i} = {missing}",
                f"    elif {convert}:",
                f"        v{i} = w{i}(v{i})",
            ]
        lines.append(f"    return ({''.join(f'v{i}, ' for i in range(len(self._names)))})")
        exec(compile("\n".join(lines), f"<to_tuple {self.model.__name__}>", "exec"), namespace)
        return namespace["to_tuple"]
