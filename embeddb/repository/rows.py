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
from ..ids import new_id
from ..models import BaseModel, JSONField, MoneyField, utcnow
from .core import M, RepositoryCore
from .statements import ready_test

if TYPE_CHECKING:
    from ..hydration import Hydrator

_GENERATED = {"id", "created_at", "updated_at"}  # filled in when given as None too


_MISSING = object()
#: per model: the row converter of each key order seen in bulk inserts (at most _MAX_SHAPES)
_SHAPES: dict[type, dict[tuple[str, ...], Callable[..., tuple[Any, ...]]]] = {}
_MAX_SHAPES = 64


#: db_value functions whose field's ``inline_write`` template computes the same value
_INLINED = (JSONField.db_value, MoneyField.db_value)


def _inline_write(field: peewee.Field) -> tuple[str, dict[str, Any]] | None:
    """The field's ``inline_write`` (template, names) when its db_value is exactly one of
    embeddb's own; None otherwise. A subclass inherits the template with the attribute, but
    one that overrides db_value (an encrypting JSON field, money at another scale) converts
    differently, so its own db_value must run."""
    db_value = type(field).db_value
    if any(db_value is own for own in _INLINED):
        return cast("tuple[str, dict[str, Any]]", field.inline_write)  # type: ignore[attr-defined]
    return None


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

    def _row_tuples(self, chunk: Iterable[Mapping[str, Any] | M]) -> list[tuple[Any, ...]]:
        fills = self._fills()
        to_tuple = self._to_tuple
        shapes = _SHAPES.setdefault(self.model, {})
        known = self._known
        tuples = []
        for row in chunk:
            if isinstance(row, BaseModel):
                tuples.append(to_tuple(row.__data__, fills))
                continue
            keys = tuple(row)
            convert = shapes.get(keys)
            if convert is None:
                if not known.issuperset(keys):
                    unknown = ", ".join(sorted(set(keys) - known))
                    raise InvalidQueryError(
                        f"unknown field(s) {unknown} for {self.model.__name__}")
                convert = to_tuple
                if len(shapes) < _MAX_SHAPES:
                    convert = shapes[keys] = self._compile_writer(keys)
            tuples.append(convert(row, fills))
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

    def _compile_writer(self, keys: tuple[str, ...] | None = None) -> Any:
        """Build ``(row dict, fills) -> tuple of database values`` as straight-line code: for
        any dict, or (``keys``) for dicts with exactly these keys, which then reads each
        given field once by subscript and never looks up the ones left out."""
        namespace: dict[str, Any] = {"MISSING": _MISSING}
        given = None if keys is None else set(keys)
        lines = ["def to_tuple(data, fills):"] + (["    get = data.get"] if keys is None else [])
        for i, (name, field, write) in enumerate(zip(self._names, self._fields, self._writers)):
            namespace[f"w{i}"] = write
            missing = f"fills[{i}]"
            if name not in ("created_at", "updated_at") and callable(field.default):
                namespace[f"m{i}"] = field.default
                missing = f"w{i}(m{i}())"
                if field.default is new_id and type(field).db_value is peewee.UUIDField.db_value:
                    missing = f"m{i}().hex"  # what db_value makes of a new UUID
            convert = f"v{i} is not None"
            ready = ready_test(field)
            if ready:
                convert += f" and not {ready.format(v=f'v{i}')}"
            converted = f"w{i}(v{i})"
            inline = _inline_write(field)
            if inline is not None:  # the field's db_value without a call
                template, names_used = inline
                namespace.update(names_used)
                converted = template.format(v=f"v{i}", x=f"x{i}", u=f"u{i}", w=f"w{i}")
            if given is None:
                absent = f"v{i} is MISSING" + (f" or v{i} is None" if name in _GENERATED
                                              else "")
                lines += [f"    v{i} = get({name!r}, MISSING)", f"    if {absent}:"]
            elif name not in given:
                lines.append(f"    v{i} = {missing}")
                continue
            elif name in _GENERATED:
                lines += [f"    v{i} = data[{name!r}]", f"    if v{i} is None:"]
            else:
                lines += [f"    v{i} = data[{name!r}]", f"    if {convert}:",
                          f"        v{i} = {converted}"]
                continue
            lines += [f"        v{i} = {missing}", f"    elif {convert}:",
                      f"        v{i} = {converted}"]
        lines.append(f"    return ({''.join(f'v{i}, ' for i in range(len(self._names)))})")
        exec(compile("\n".join(lines), f"<to_tuple {self.model.__name__}>", "exec"), namespace)
        return namespace["to_tuple"]
