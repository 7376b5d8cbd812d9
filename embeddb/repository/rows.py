"""Compiled SQL and row code: the lookup statement and generated straight-line functions that
turn rows into model objects and dicts into rows, built once per model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, Generic

import peewee

from ..dialect import quote
from ..errors import InvalidQueryError
from ..models import BaseModel, utcnow
from .query import M
from .statements import ready_test

_GENERATED = {"id", "created_at", "updated_at"}  # filled in when given as None too


_MISSING = object()


_PLAIN_FIELDS = frozenset({peewee.TextField, peewee.CharField, peewee.IntegerField,
                           peewee.BigIntegerField, peewee.SmallIntegerField, peewee.AutoField})


def _json_copy(value: Any) -> Any:
    """A copy of a decoded JSON value (dicts, lists, scalars): ~3x cheaper than decoding again,
    ~10x cheaper than copy.deepcopy."""
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = (dict, list)


#: (model, parameter style) -> (get SQL, row -> model, cached row -> model, dict -> tuple)
_PLANS: dict[tuple[type, str], tuple[Any, ...]] = {}


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items, pulling from ``rows`` lazily."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class RowCode(Generic[M]):
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

    def _compile_hydrator(self, readers: list[Any] | None = None) -> Any:
        """Build ``row -> model object`` as straight-line code for this model's fields.

        Unrolling the per-field loop (as dataclasses and attrs do for ``__init__``) halves the
        cost of turning a row into an object; names come from the model, never from input.
        ``readers`` replaces the per-field converters (None: the value is used as it is).
        """
        values = [f"v{i}" for i in range(len(self._names))]
        items = []
        namespace: dict[str, Any] = {"new": object.__new__, "model": self.model}
        for i, (name, read) in enumerate(zip(self._names, readers or self._readers)):
            if read is None:
                items.append(f"{name!r}: v{i}")
            else:
                namespace[f"r{i}"] = read
                items.append(f"{name!r}: None if v{i} is None else r{i}(v{i})")
        source = "\n".join([
            "def hydrate(row):",
            f"    {', '.join(values)}, = row",
            "    obj = new(model)",
            f"    obj.__data__ = {{{', '.join(items)}}}",
            "    obj._dirty = set()",
            "    obj.__rel__ = {}",
            "    obj._persisted = True",
            "    return obj",
        ])
        exec(compile(source, f"<hydrate {self.model.__name__}>", "exec"), namespace)
        return namespace["hydrate"]

    def _select(self, *, with_deleted: bool = False) -> peewee.ModelSelect:
        if self._soft and with_deleted:
            return self.model.select_with_deleted(*self._fields)
        return self.model.select(*self._fields)

    def _run(self, query: peewee.ModelSelect) -> list[M]:
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
