"""Query building: caller-supplied filters, ordering, paging and cursors, checked against the
model so that no input reaches SQL as text or escapes as anything but InvalidQueryError.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, cast

import peewee

from ..dialect import quote
from ..errors import InvalidQueryError
from ..models import BaseModel, MoneyField, UTCDateTimeField
from .core import M
from .rows import RowCode

_OPERATORS = {
    "eq": lambda f, v: f == v,
    "ne": lambda f, v: f != v,
    "lt": lambda f, v: f < v,
    "lte": lambda f, v: f <= v,
    "gt": lambda f, v: f > v,
    "gte": lambda f, v: f >= v,
    "in": lambda f, v: f.in_(list(v)),
    "not_in": lambda f, v: f.not_in(list(v)),
    "is_null": lambda f, v: f.is_null(bool(v)),
    "contains": lambda f, v: f.contains(v),
    "startswith": lambda f, v: f.startswith(v),
}


_AGGREGATES = {"count", "sum", "avg", "min", "max"}


#: The range of SQLite INTEGER and PostgreSQL BIGINT: larger values are refused up front.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


#: SQL of the comparison operators update_where builds itself
_COMPARISONS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@dataclass(frozen=True)
class Page(Generic[M]):
    """One page of an offset-paginated listing."""

    items: list[M]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


@dataclass(frozen=True)
class CursorPage(Generic[M]):
    """One page of a keyset listing; pass ``next_cursor`` back to get the following page."""

    items: list[M]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def _condition(field: peewee.Field, op: str, value: Any, mark: str, params: list[Any]) -> str:
    """One WHERE term over ``field`` as peewee would write it; its parameters go to ``params``."""
    column = quote(field.column_name)
    if op == "is_null" or (value is None and op in ("eq", "ne")):
        null = bool(value) if op == "is_null" else op == "eq"
        return f"{column} IS NULL" if null else f"{column} IS NOT NULL"
    if op in ("in", "not_in"):
        if not value:
            return "(0 = 1)" if op == "in" else "(1 = 1)"
        params.extend(field.db_value(v) for v in value)
        marks = ", ".join([mark] * len(value))
        return f"{column} {'IN' if op == 'in' else 'NOT IN'} ({marks})"
    params.append(None if value is None else field.db_value(value))
    return f"{column} {_COMPARISONS[op]} {mark}"


def _adapt(field: peewee.Field, op: str, key: str, value: Any) -> Any:
    """A caller's filter value in the field's own type, so a wrong type is an error here and
    not a different outcome per backend (SQLite compares anything, PostgreSQL refuses)."""
    if op in ("contains", "startswith") and not _is_text(field):
        raise InvalidQueryError(
            f"{key}: {op} needs a text field; {field.name} is {type(field).__name__}")
    if op == "is_null" or value is None and op not in ("in", "not_in"):
        return value
    try:
        if op in ("in", "not_in"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise TypeError("expected a list of values")
            return [_typed(field, v) for v in value]
        return _typed(field, value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidQueryError(f"bad value for {key}: {value!r} ({exc})") from None


def _typed(field: peewee.Field, value: Any) -> Any:
    """``value`` checked (and converted) for ``field``; raises TypeError/ValueError."""
    if isinstance(value, peewee.Model):
        value = cast(BaseModel, value)._pk
    if isinstance(field, peewee.ForeignKeyField):
        return _typed(field.rel_field, value)
    if isinstance(field, peewee.BooleanField):
        if value not in (True, False) or not isinstance(value, (bool, int)):
            raise TypeError(f"expected true or false, not {value!r}")
        return bool(value)
    if isinstance(field, peewee.IntegerField):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"expected an integer, not {type(value).__name__}")
        number = int(value)
        if not _INT_MIN <= number <= _INT_MAX:
            raise ValueError("outside the 64-bit integer range")
        return number
    if isinstance(field, peewee.FloatField):
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise TypeError(f"expected a number, not {type(value).__name__}")
        real = float(value)
        if math.isnan(real):  # SQLite stores NaN as NULL, PostgreSQL sorts it above all
            raise ValueError("NaN is not a comparable number")
        return real
    if isinstance(field, (peewee.TextField, peewee.CharField)):
        if not isinstance(value, str):
            raise TypeError(f"expected text, not {type(value).__name__}")
        if "\x00" in value:  # PostgreSQL text cannot hold it; SQLite would compare it
            raise ValueError("text cannot contain NUL characters")
        return value
    if isinstance(field, peewee.UUIDField):
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    field.db_value(value)  # embeddb's fields refuse what they cannot store
    return value


def _positive(name: str, value: Any, allow_zero: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1) \
            or value > _INT_MAX:
        raise InvalidQueryError(f"{name} must be a positive 64-bit integer, got {value!r}")
    return value


def _terms(filters: Any, lookups: dict[str, Any]) -> dict[Any, Any]:
    """The lookups of ``filters`` (a mapping) and keyword ``lookups`` together."""
    if filters is not None and not isinstance(filters, Mapping):
        raise InvalidQueryError(
            f"filters must be a mapping of 'field__op' to a value, not {filters!r}")
    return {**(filters or {}), **lookups}


def _is_text(field: peewee.Field) -> bool:
    return isinstance(field, (peewee.TextField, peewee.CharField))


def _aggregate_kind(field: peewee.Field) -> str | None:
    """"number" (sum/avg/min/max), "ordered" (min/max) or None (count only)."""
    if isinstance(field, peewee.ForeignKeyField):
        return None
    if isinstance(field, (MoneyField, peewee.FloatField, peewee.DecimalField)) or (
            isinstance(field, peewee.IntegerField) and not isinstance(field, peewee.BooleanField)):
        return "number"
    if _is_text(field) or isinstance(field, (UTCDateTimeField, peewee.DateTimeField,
                                             peewee.DateField)):
        return "ordered"
    return None


_AGGREGATE_HELP = {"sum": "it needs a numeric field", "avg": "it needs a numeric field",
                   "min": "it needs a number, text or a date", "max":
                   "it needs a number, text or a date"}


class QueryBuilding(RowCode[M]):
    """WHERE, ORDER BY and keyset terms for one model, from names and values callers give."""

    def field(self, name: str) -> peewee.Field:
        """The model field called ``name``.

        :raises InvalidQueryError: no such field (the message lists the valid ones).
        """
        fields = self.model._meta.fields
        if not isinstance(name, str) or name not in fields:
            raise InvalidQueryError(
                f"unknown field {name!r} for {self.model.__name__}; "
                f"known: {', '.join(sorted(fields))}"
            )
        return fields[name]

    def where(self, filters: Mapping[str, Any] | None = None, **lookups: Any) -> Any:
        """A WHERE expression from ``{"field__op": value}`` lookups, or None for no filter.

        Operators: eq (default), ne, lt, lte, gt, gte, in, not_in, is_null, contains, startswith.

        :raises InvalidQueryError: unknown field or operator.
        """
        expression = None
        for key, value in _terms(filters, lookups).items():
            name, _, op = str(key).partition("__")
            op = op or "eq"
            if op not in _OPERATORS:
                raise InvalidQueryError(
                    f"unknown operator {op!r} in {key!r}; known: {', '.join(_OPERATORS)}"
                )
            field = self.field(name)
            term = _OPERATORS[op](field, _adapt(field, op, key, value))
            expression = term if expression is None else expression & term
        return expression

    def ordering(self, order_by: str | Sequence[str] | None) -> list[Any]:
        """ORDER BY terms from ``"field"`` / ``"-field"`` names; always ends with the id.

        :raises InvalidQueryError: unknown field.
        """
        if isinstance(order_by, str):
            names = [order_by]
        elif order_by is None or isinstance(order_by, (list, tuple)):
            names = list(order_by or [])
        else:
            raise InvalidQueryError(
                f"order_by must be a field name or a list of them, not {order_by!r}")
        terms = []
        for name in names:
            descending = isinstance(name, str) and name.startswith("-")
            field = self.field(name[1:] if descending else name)
            terms.append(field.desc() if descending else field.asc())
        if not any(getattr(t, "node", None) is self._pk for t in terms):
            terms.append(self._pk.asc())
        return terms

    def _query(self, filters: Mapping[str, Any] | None, order_by: Any, limit: int | None,
               offset: int | None, with_deleted: bool, lookups: dict[str, Any]) -> Any:
        query = self._select(with_deleted=with_deleted)
        expression = self.where(filters, **lookups)
        if expression is not None:
            query = query.where(expression)
        query = query.order_by(*self.ordering(order_by))
        if limit is not None:
            query = query.limit(_positive("limit", limit))
        if offset:
            query = query.offset(_positive("offset", offset, allow_zero=True))
        return query

    def _after(self, field: peewee.Field, value: Any, pk: Any, descending: bool) -> Any:
        if field is self._pk:
            return field < pk if descending else field > pk
        keys, bound = peewee.Tuple(field, self._pk), peewee.Tuple(value, pk)
        return keys < bound if descending else keys > bound

    def _encode_cursor(self, order_by: str, field: peewee.Field, obj: M) -> str:
        payload = [order_by, field.db_value(getattr(obj, field.name)), self._pk.db_value(obj._pk)]
        raw = json.dumps(payload, separators=(",", ":"), default=str).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _decode_cursor(self, cursor: str, order_by: str) -> tuple[Any, Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            name, value, pk = json.loads(raw)
        except (ValueError, TypeError, binascii.Error):
            raise InvalidQueryError("malformed pagination cursor: start again without one") from None
        if name != order_by:
            raise InvalidQueryError(
                f"this cursor belongs to a listing ordered by {name!r}, not {order_by!r}"
            )
        if not isinstance(pk, (str, int)) or not isinstance(value, (str, int, float, type(None))) \
                or any(type(v) is int and not _INT_MIN <= v <= _INT_MAX for v in (value, pk)):
            raise InvalidQueryError("malformed pagination cursor: start again without one")
        return value, pk

    def _where_shape(self, terms: dict[str, Any]) -> list[tuple[str, peewee.Field, str]] | None:
        """``(key, field, operator)`` per lookup key, checked; None: a text-matching operator.

        :raises InvalidQueryError: unknown field or operator.
        """
        shape = []
        for key in terms:
            name, _, op = str(key).partition("__")
            op = op or "eq"
            if op not in _OPERATORS:
                raise InvalidQueryError(
                    f"unknown operator {op!r} in {key!r}; known: {', '.join(_OPERATORS)}")
            field = self.field(name)
            if op in ("contains", "startswith"):
                return None
            shape.append((key, field, op))
        if len(self._where_shapes) < 256:
            self._where_shapes[tuple(terms)] = shape
        return shape
