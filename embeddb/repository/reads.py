"""Reads: by primary key (through the repository's RowCache when there is a cache), listings,
counts, aggregates and both kinds of pagination.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import peewee

from ..cache.keys import family_of, list_tag
from ..errors import InvalidQueryError, NotFoundError
from ..models import MoneyField
from .core import M
from .query import (
    _AGGREGATE_HELP,
    _AGGREGATES,
    _INT_MAX,
    CursorPage,
    Page,
    QueryBuilding,
    _aggregate_kind,
    _positive,
)


class Reads(QueryBuilding[M]):
    """Every read of a repository; soft-deleted rows are left out unless asked for."""

    def get(self, pk: Any) -> M:
        """The row with primary key ``pk``.

        :raises NotFoundError: no such row (or it is soft-deleted).
        """
        rows = self._rows
        if rows is not None and type(pk) is uuid.UUID and self._uuid_pk:  # a cached get
            try:
                return rows.instance(pk)  # (no cast(): it is a call, on the hot path)
            except self.model.DoesNotExist:
                raise NotFoundError(f"{self.model.__name__} {pk} not found") from None
        obj = self.get_or_none(pk)
        if obj is None:
            raise NotFoundError(f"{self.model.__name__} {pk} not found")
        return obj

    def get_or_none(self, pk: Any) -> M | None:
        if self._uuid_pk and not isinstance(pk, uuid.UUID):
            try:
                pk = uuid.UUID(str(pk))
            except ValueError:
                return None  # not an id at all: not found, on both backends
        if self._rows is not None:
            try:
                return cast(M, self._rows.instance(pk))
            except self.model.DoesNotExist:
                return None  # absent rows are not cached: an insert needs no invalidation
        key = pk.hex if type(pk) is self._hex_key else self._pk.db_value(pk)  # (as writes do)
        row = self.db.fetch_one(self._get_sql, (key,))
        return None if row is None else self._hydrate(row)

    def find_cached(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        **lookups: Any,
    ) -> list[M]:
        """:meth:`find` through the cache; any write to the model invalidates the result.

        Without a cache this is :meth:`find`.
        """
        if self.cache is None:
            return self.find(filters, order_by=order_by, limit=limit, offset=offset, **lookups)
        query = self._query(filters, order_by, limit, offset, False, lookups)
        sql, params = query.sql()
        key = "find:" + json.dumps([sql, list(params)], default=str, separators=(",", ":"))
        rows = self.cache.get_or_set(
            key, lambda: [tuple(r) for r in self.db.execute_sql(sql, params).fetchall()],
            family=family_of(self.model), tags=(list_tag(self.model),),
        )
        return [self._hydrate(row) for row in rows]

    def get_many(self, pks: Iterable[Any]) -> list[M]:
        """Rows for the given primary keys (missing ones are left out), in one query."""
        pks = list(pks)
        if not pks:
            return []
        return self._run(self._select().where(self._pk.in_(pks)))

    def find(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        with_deleted: bool = False,
        **lookups: Any,
    ) -> list[M]:
        """Rows matching the lookups (see :meth:`where`), ordered, optionally limited."""
        return self._run(self._query(filters, order_by, limit, offset, with_deleted, lookups))

    def first(self, filters: Mapping[str, Any] | None = None, **lookups: Any) -> M | None:
        found = self.find(filters, limit=1, **lookups)
        return found[0] if found else None

    def count(self, filters: Mapping[str, Any] | None = None, **lookups: Any) -> int:
        query = self.model.select()
        expression = self.where(filters, **lookups)
        if expression is not None:
            query = query.where(expression)
        return query.count(self.db)

    def exists(self, filters: Mapping[str, Any] | None = None, **lookups: Any) -> bool:
        query = self.model.select(self._pk)
        expression = self.where(filters, **lookups)
        if expression is not None:
            query = query.where(expression)
        return query.exists(self.db)

    def aggregate(
        self, function: str, field: str, filters: Mapping[str, Any] | None = None, **lookups: Any
    ) -> Any:
        """``count``/``sum``/``avg``/``min``/``max`` of a field; money stays exact (Decimal).

        :raises InvalidQueryError: unknown function or field.
        """
        if function not in _AGGREGATES:
            raise InvalidQueryError(
                f"unknown aggregate {function!r}; known: {', '.join(sorted(_AGGREGATES))}"
            )
        column = self.field(field)
        kind = _aggregate_kind(column)
        if function in ("sum", "avg") and kind != "number" or \
                function in ("min", "max") and kind is None:
            raise InvalidQueryError(
                f"cannot take {function} of {self.model.__name__}.{column.name} "
                f"({type(column).__name__}): {_AGGREGATE_HELP[function]}")
        # Raw database value (coerce off): converted below once, the same way on both backends.
        query = self.model.select(getattr(peewee.fn, function.upper())(column).coerce(False))
        expression = self.where(filters, **lookups)
        if expression is not None:
            query = query.where(expression)
        value = query.scalar(self.db)
        if value is None or function == "count":
            return value or 0 if function == "count" else value
        if function == "avg":
            if isinstance(column, MoneyField):
                return column.python_value(Decimal(str(value)).to_integral_value())
            return float(value)
        return column.python_value(value)

    def paginate(
        self,
        page: int = 1,
        per_page: int = 50,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str | Sequence[str] | None = None,
        **lookups: Any,
    ) -> Page[M]:
        """Offset pagination with the total count (cost grows with the page number)."""
        page = _positive("page", page)
        per_page = _positive("per_page", per_page)
        if (page - 1) * per_page > _INT_MAX:
            raise InvalidQueryError(f"page {page} of {per_page} rows is beyond any table")
        items = self.find(
            filters, order_by=order_by, limit=per_page, offset=(page - 1) * per_page, **lookups
        )
        return Page(items, self.count(filters, **lookups), page, per_page)

    def page_after(
        self,
        cursor: str | None = None,
        limit: int = 50,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: str = "id",
        **lookups: Any,
    ) -> CursorPage[M]:
        """Keyset pagination: a page of rows after ``cursor``, ordered by ``order_by`` then id.

        Cost is flat at any depth (an index seek), and rows inserted meanwhile never shift or
        repeat pages. Index ``(order_by, id)`` for a custom order.

        :raises InvalidQueryError: unknown field, or a cursor that is malformed or was made for
            another ordering.
        """
        limit = _positive("limit", limit)
        if not isinstance(order_by, str):
            raise InvalidQueryError(f"order_by must be one field name, not {order_by!r}")
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidQueryError("malformed pagination cursor: start again without one")
        descending = order_by.startswith("-")
        field = self.field(order_by.lstrip("-"))
        if field.null:
            # NULLs compare as unknown, so rows with one would silently drop out of the pages
            # (and SQLite and PostgreSQL sort them at opposite ends).
            raise InvalidQueryError(
                f"cannot page by {field.name!r}: it can be NULL; order by a NOT NULL field")
        query = self._select()
        expression = self.where(filters, **lookups)
        if expression is not None:
            query = query.where(expression)
        if cursor:
            value, pk = self._decode_cursor(cursor, order_by)
            query = query.where(self._after(field, value, pk, descending))
        keys = [field] if field is self._pk else [field, self._pk]
        query = query.order_by(*[k.desc() if descending else k.asc() for k in keys])
        items = self._run(query.limit(limit + 1))
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = self._encode_cursor(order_by, field, last)
        return CursorPage(items, next_cursor)
