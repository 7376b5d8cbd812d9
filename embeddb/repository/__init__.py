"""The generic repository: CRUD, queries, pagination and bulk writes for any embeddb model.

Hot paths (get by id, listing, bulk insert/update) run pre-built SQL and build model objects
straight from rows, skipping peewee's per-call SQL compilation, which costs ~30x a raw
lookup. Everything else goes through peewee queries. Field names that come from callers
(filters, ordering, cursors) are checked against the model and never reach SQL as text.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any, Generic, NamedTuple, TypeVar

import peewee

from ..cache.models import family_of, list_tag, model_tag, row_key
from ..cache.tiered import for_writer
from ..dialect import quote
from ..errors import ConfigurationError, ConflictError, InvalidQueryError, NotFoundError
from ..models import (
    BaseModel,
    JSONField,
    MoneyField,
    SoftDeleteModel,
    UTCDateTimeField,
    VersionedModel,
    utcnow,
)
from .writes import WritePlan, plain_writes, ready_test

M = TypeVar("M", bound=BaseModel)

#: Rows per executemany / execute_values call: large enough to amortise the call, small enough
#: to keep memory flat for any input size.
BATCH_SIZE = 2000

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
_GENERATED = {"id", "created_at", "updated_at"}  # filled in when given as None too
#: Never overwritten by an upsert: identity, history and the concurrency/soft-delete state.
_PROTECTED = frozenset({"id", "created_at", "updated_at", "version", "deleted_at"})
_MISSING = object()

# Fields whose database value needs no conversion on the way out.
_PLAIN_FIELDS = frozenset({peewee.TextField, peewee.CharField, peewee.IntegerField,
                           peewee.BigIntegerField, peewee.SmallIntegerField, peewee.AutoField})


class UpsertBatch(NamedTuple):
    """Rows in database form and the ON CONFLICT clause to insert them with."""

    clause: str
    rows: list[tuple[Any, ...]]


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


_new = object.__new__


def _pk_of(value: Any) -> Any:
    """A foreign key's value: a model object stands for its primary key."""
    return value._pk if isinstance(value, peewee.Model) else value


class _Absent(Exception):
    """Raised inside a cache loader so a missing row is not cached."""


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items, pulling from ``rows`` lazily."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Repository(Generic[M]):
    """Data access for one model.

    Everything runs on ``db``; model-level peewee calls (instance saves, domain queries that
    join ``related`` models) run inside :meth:`bound`.

    ``db`` defaults to the database the model is bound to. Soft-deleted rows (for
    :class:`~embeddb.models.SoftDeleteModel`) are invisible to every read unless asked for.
    """

    #: other models a subclass's queries use (bound to ``db`` together with the model)
    related: Sequence[type[BaseModel]] = ()

    def __init__(self, model: type[M], db: Any = None, cache: Any = None) -> None:
        self.model = model
        #: an :class:`embeddb.cache.Cache`: reads by id and ``find_cached`` go through it, and
        #: every write through this repository invalidates what it changed, after commit.
        self.cache = cache
        self.db = db if db is not None else model._meta.database
        if self.db is None:
            raise InvalidQueryError(f"{model.__name__} is not bound to a database: pass db=")
        if cache is not None and cache.db is not self.db:
            # Its in-transaction bypass watches cache.db: bound elsewhere, reads inside this
            # database's transactions would cache uncommitted rows.
            raise ConfigurationError(
                "the cache is not bound to this repository's database: use "
                "Cache.for_database(db) (or Cache(directory, db=db))")
        meta = model._meta
        self._pk = meta.primary_key
        self._uuid_pk = isinstance(self._pk, peewee.UUIDField)
        self._soft = issubclass(model, SoftDeleteModel)
        self._versioned = issubclass(model, VersionedModel)
        self._fields: list[peewee.Field] = list(meta.sorted_fields)
        self._names = [f.name for f in self._fields]
        # Exact classes only: subclasses such as TimestampField or IPField do convert.
        self._readers = [None if type(f) in _PLAIN_FIELDS else f.python_value
                         for f in self._fields]
        self._writers = [f.db_value for f in self._fields]
        plan = _PLANS.get((model, self.db.param))
        if plan is None:  # generated once per model: building it costs ~0.8 ms
            json_fields = [isinstance(f, JSONField) for f in self._fields]
            plan = _PLANS[(model, self.db.param)] = (
                self._build_get_sql(),
                self._compile_hydrator(),
                self._compile_hydrator([_json_copy if j else None for j in json_fields]),
                self._compile_writer(),
            )
        self._get_sql, self._hydrate, self._hydrate_cached, self._to_tuple = plan
        self._key_prefix = row_key(model, "")
        self._family = family_of(model)
        self._row_tags = (model_tag(model),)
        self._insert_columns = [f.column_name for f in self._fields]
        self._known = frozenset(self._names)
        self._stamp = meta.fields["updated_at"].db_value
        self._where_shapes: dict[tuple[str, ...], list[tuple[str, peewee.Field, str]]] = {}
        #: pre-built single-row writes, unless the model overrides how it writes
        self._writes = WritePlan.of(model, self.db.param) if plain_writes(model) else None

    # -- SQL and row plumbing -------------------------------------------------------------

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

    # -- validation of caller-supplied names ------------------------------------------------

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

    # -- reads ----------------------------------------------------------------------------

    def get(self, pk: Any) -> M:
        """The row with primary key ``pk``.

        :raises NotFoundError: no such row (or it is soft-deleted).
        """
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
        if self.cache is not None:
            return self._cached_get(pk)
        row = self.db.fetch_one(self._get_sql, (self._pk.db_value(pk),))
        return None if row is None else self._hydrate(row)

    def _cached_get(self, pk: Any) -> M | None:
        """A row from the cache, kept there converted to Python values; JSON values (the only
        mutable kind) are copied on each hit, so every object returned is independent."""
        def load() -> tuple[Any, ...]:
            row = self.db.fetch_one(self._get_sql, (self._pk.db_value(pk),))
            if row is None:
                raise _Absent  # absent rows are not cached: an insert needs no invalidation
            return tuple(v if r is None or v is None else r(v)
                         for r, v in zip(self._readers, row))

        key = (self._key_prefix + pk.hex) if type(pk) is uuid.UUID else row_key(self.model, pk)
        try:
            entry = self.cache.get_or_set(key, load, family=self._family, tags=self._row_tags)
        except _Absent:
            return None
        return self._hydrate_cached(entry)

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

    def _invalidate(self, pks: Iterable[Any] = (), *, every_row: bool = False) -> None:
        """After commit: drop cached rows ``pks`` (or every row) and every cached query.

        Without a cache of its own the repository still tells the cache another process on
        this machine keeps for the database, if any (see :func:`embeddb.cache.tiered.for_writer`:
        no filesystem work per write).
        """
        if self.cache is None:
            if self.db.in_transaction():
                self.db.after_commit(lambda: self._tell(for_writer(self.db), pks, every_row))
            else:
                self._tell(for_writer(self.db), pks, every_row)
            return
        tags = [list_tag(self.model)] + ([model_tag(self.model)] if every_row else [])
        self.cache.invalidate_after_commit(
            self.db, [row_key(self.model, pk) for pk in pks], tags=tags,
            family=family_of(self.model),
        )

    def _tell(self, cache: Any, pks: Iterable[Any], every_row: bool) -> None:
        if cache is not None:
            tags = [list_tag(self.model)] + ([model_tag(self.model)] if every_row else [])
            cache.invalidate([row_key(self.model, pk) for pk in pks], tags=tags,
                             family=family_of(self.model))

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

    # -- writes ---------------------------------------------------------------------------

    def bound(self) -> Any:
        """Context in which peewee's model-level calls on this repository's models run on
        ``self.db``: a no-op when the models are bound to it already (the usual case), else
        ``db.bind_ctx`` (which rebinds the model classes for the block: do not use one model
        with two databases from several threads at once)."""
        models = [self.model, *self.related]
        if all(m._meta.database is self.db for m in models):
            return nullcontext()
        return self.db.bind_ctx(models, bind_refs=False, bind_backrefs=False)

    def create(self, **values: Any) -> M:
        """Insert one row and return it.

        Fields left out take their defaults; ``id`` and the timestamps given as None are
        filled in too.

        :raises InvalidQueryError: a value names no field of the model.
        :raises IntegrityError: a constraint rejected it.
        """
        plan = self._writes
        if plan is None:
            return self._peewee_create(values)
        sql, build = plan.insert(tuple(values))
        data, rel, params = build(values, utcnow())
        self.db.execute_write(sql, params)
        obj = _new(self.model)
        obj.__data__ = data
        obj._dirty = set()
        obj.__rel__ = rel
        obj._persisted = True
        self._invalidate((data[self._pk.name],))
        return obj

    def update(self, obj_or_pk: M | Any, **values: Any) -> M:
        """Write ``values`` to one row and return it; only those fields (plus fields set on
        ``obj`` since it was read) are written, with ``updated_at`` (and ``version``).

        Given an object, a versioned row must still have the version it was read at; given a
        key, the row is changed as it is now, in one statement, and read back.

        :raises NotFoundError: no such row (given a key: or it is soft-deleted).
        :raises ConflictError: a versioned row changed since ``obj`` was read.
        :raises InvalidQueryError: a value names no field of the model, or the primary key.
        """
        plan = self._writes
        if plan is None:
            return self._peewee_update(obj_or_pk, values)
        now = utcnow()
        if not isinstance(obj_or_pk, self.model):
            return self._update_by_pk(plan, obj_or_pk, values, now)
        obj = obj_or_pk
        dirty = obj._dirty
        extra = tuple(sorted(dirty.difference(values))) if dirty else ()
        sql, fill = plan.update(tuple(values), extra, by_pk=False)
        data = obj.__data__
        key = data[self._pk.name]
        params = fill(obj, values, self._stamp(now), key.hex if type(key) is uuid.UUID
                      else self._pk.db_value(key))
        if self._versioned:
            params.append(obj.version)
        changed = self.db.execute_write(sql, params)
        if self._versioned:
            if not changed:
                raise ConflictError(
                    f"{self.model.__name__} {obj._pk} was changed or deleted since it was read "
                    f"(expected version {obj.version}): reload it and retry")
            data["version"] = obj.version + 1
        data["updated_at"] = now
        obj._dirty.clear()
        self._invalidate((obj._pk,))
        return obj

    def _update_by_pk(self, plan: WritePlan, pk: Any, values: dict[str, Any], now: Any) -> M:
        sql, fill = plan.update(tuple(values), (), by_pk=True)
        key = self._key_or_none(pk)
        if key is None:
            raise NotFoundError(f"{self.model.__name__} {pk} not found")
        params = fill(values, self._stamp(now), self._pk.db_value(key))
        rows = self.db.execute_write(sql, params, fetch=True)
        if not rows:
            raise NotFoundError(f"{self.model.__name__} {pk} not found")
        self._invalidate((key,))
        return self._hydrate(rows[0])

    def _key_or_none(self, pk: Any) -> Any:
        """``pk`` as the primary key's Python value; None when it cannot be one (not found)."""
        if self._uuid_pk and not isinstance(pk, uuid.UUID):
            try:
                return uuid.UUID(str(pk))
            except ValueError:
                return None
        return pk

    def _peewee_create(self, values: dict[str, Any]) -> M:
        for name in values:
            self.field(name)
        with self.bound(), self.db.atomic():
            obj = self.model.create(**values)
            self._invalidate([obj._pk])
        return obj

    def _peewee_update(self, obj_or_pk: M | Any, values: dict[str, Any]) -> M:
        obj = obj_or_pk if isinstance(obj_or_pk, self.model) else self.get(obj_or_pk)
        for name, value in values.items():
            self.field(name)
            setattr(obj, name, value)
        with self.bound(), self.db.atomic():
            obj.save()
            self._invalidate([obj._pk])
        return obj

    def update_where(
        self, values: Mapping[str, Any], filters: Mapping[str, Any] | None = None, **lookups: Any
    ) -> int:
        """UPDATE every row matching the lookups; returns the number of rows changed.

        ``updated_at`` is stamped (and ``version`` bumped) unless ``values`` set them.
        """
        terms = _terms(filters, lookups)
        plan = self._writes
        statement = None if plan is None else self._update_where_sql(plan, values, terms)
        if statement is None:
            return self._peewee_update_where(values, terms)
        changed = self.db.execute_write(*statement)
        self._invalidate(every_row=True)
        return changed

    def _update_where_sql(self, plan: WritePlan, values: Mapping[str, Any],
                          terms: dict[str, Any]) -> tuple[str, list[Any]] | None:
        """The statement and parameters of :meth:`update_where`, or None for the peewee path
        (expressions as values, text-matching operators)."""
        for value in values.values():
            if isinstance(value, peewee.Node):
                return None
        shape = self._where_shapes.get(tuple(terms))
        if shape is None:
            shape = self._where_shape(terms)
        if shape is None:
            return None
        assignments, fill = plan.assignments(tuple(values))
        params = fill(values)
        if "updated_at" not in values:
            params.append(self._stamp(utcnow()))
        conditions = [f'{quote("deleted_at")} IS NULL'] if self._soft else []
        mark = self.db.param
        for key, field, op in shape:
            value = _adapt(field, op, key, terms[key])
            conditions.append(_condition(field, op, value, mark, params))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"UPDATE {plan.table} SET {assignments}{where}", params

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

    def _peewee_update_where(self, values: Mapping[str, Any], terms: dict[str, Any]) -> int:
        data = {self.field(name): value for name, value in values.items()}
        query = self.model.update(data)
        expression = self.where(terms)
        if self._soft:
            hidden = self.model.deleted_at.is_null()
            expression = hidden if expression is None else expression & hidden
        if expression is not None:
            query = query.where(expression)
        with self.db.atomic():
            changed = query.execute(self.db)
            self._invalidate(every_row=True)
        return changed

    def delete(self, obj_or_pk: M | Any, *, permanent: bool = False) -> bool:
        """Delete one row: soft delete for soft-delete models unless ``permanent`` (which also
        removes a row already soft-deleted). Returns False when there was no such row.

        :raises ConflictError: soft-deleting a versioned ``obj`` whose row changed since it
            was read.
        """
        plan = self._writes
        if plan is None:
            return self._peewee_delete(obj_or_pk, permanent)
        obj = obj_or_pk if isinstance(obj_or_pk, self.model) else None
        pk = obj._pk if obj is not None else self._key_or_none(obj_or_pk)
        if pk is None:
            return False
        key = self._pk.db_value(pk)
        if not self._soft or permanent:
            sql, params = plan.delete_sql, (key,)
        else:
            now = utcnow()
            stamp = self._stamp(now)
            if obj is None:
                sql, params = plan.soft_delete_sql, (stamp, stamp, key)
            else:
                sql, params = plan.soft_delete_obj_sql, (stamp, stamp, key)
                if self._versioned:
                    params += (obj.version,)
        changed = self.db.execute_write(sql, params)
        if obj is not None and self._soft and not permanent:
            if self._versioned and not changed:
                raise ConflictError(
                    f"{self.model.__name__} {pk} was changed or deleted since it was read "
                    f"(expected version {obj.version}): reload it and retry")
            obj.__data__.update(deleted_at=now, updated_at=now)
            if self._versioned:
                obj.__data__["version"] = obj.version + 1
        if changed:
            self._invalidate((pk,))
        return bool(changed)

    def _peewee_delete(self, obj_or_pk: M | Any, permanent: bool) -> bool:
        obj = obj_or_pk
        if not isinstance(obj, self.model):
            if permanent and self._soft:
                found = self.find(with_deleted=True, id=obj_or_pk, limit=1)
                obj = found[0] if found else None
            else:
                obj = self.get_or_none(obj_or_pk)
        if obj is None:
            return False
        with self.bound(), self.db.atomic():
            if self._soft:
                deleted = obj.delete_instance(permanent=permanent)
            else:
                deleted = obj.delete_instance()
            self._invalidate([obj._pk])
        return bool(deleted)

    def restore(self, pk: Any) -> M:
        """Bring back a soft-deleted row.

        :raises NotFoundError: no soft-deleted row with that id.
        """
        if not self._soft:
            raise InvalidQueryError(f"{self.model.__name__} has no soft delete to restore from")
        plan = self._writes
        if plan is None:
            return self._peewee_restore(pk)
        key = self._key_or_none(pk)
        stamp = self._stamp(utcnow())
        rows = [] if key is None else self.db.execute_write(
            plan.restore_sql, (stamp, self._pk.db_value(key)), fetch=True)
        if not rows:
            raise NotFoundError(f"no deleted {self.model.__name__} {pk}")
        self._invalidate((key,))
        return self._hydrate(rows[0])

    def _peewee_restore(self, pk: Any) -> M:
        found = self._run(self.model.deleted(*self._fields).where(self._pk == pk).limit(1))
        if not found:
            raise NotFoundError(f"no deleted {self.model.__name__} {pk}")
        obj = found[0]
        with self.bound(), self.db.atomic():
            obj.restore()
            self._invalidate([obj._pk])
        return obj

    def purge(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        batch_size: int = 1000,
        dry_run: bool = False,
        progress: Callable[[str, int], None] | None = None,
        **lookups: Any,
    ) -> int:
        """Hard-delete every row matching the lookups in short transactions of ``batch_size``.

        Each batch holds the write lock only briefly, so other writers keep going. Returns the
        number of rows deleted (or that would be, with ``dry_run``); ``progress(table, total)``
        is called after each batch.
        """
        expression = self.where(filters, **lookups)
        base = self.model.select_with_deleted if self._soft else self.model.select
        if dry_run:
            query = base()
            return (query.where(expression) if expression is not None else query).count(self.db)
        deleted = 0
        while True:
            with self.db.atomic():
                ids = base(self._pk)
                if expression is not None:
                    ids = ids.where(expression)
                ids = [row[0] for row in ids.limit(batch_size).tuples().execute(self.db)]
                if ids:
                    deleted += self.model.delete().where(self._pk.in_(ids)).execute(self.db)
                    self._invalidate(ids)
            if progress is not None:
                progress(self.model._meta.table_name, deleted)
            if len(ids) < batch_size:
                return deleted

    def bulk_create(
        self, rows: Iterable[Mapping[str, Any] | M], *, batch_size: int = BATCH_SIZE
    ) -> int:
        """Insert many rows (dicts or unsaved models) fast, in one transaction, batch by batch.

        Memory stays bounded by ``batch_size`` whatever the input size (pass a generator).
        Missing ids and timestamps are filled in; other missing fields take their defaults.

        :raises InvalidQueryError: a dict names no field of the model.
        :raises IntegrityError: a constraint rejected a row (nothing is inserted).
        """
        total = 0
        with self.db.atomic():
            self._invalidate()  # registered inside: runs once the rows are committed
            for chunk in batched(rows, _positive("batch_size", batch_size)):
                tuples = self._row_tuples(chunk)
                self.db.insert_rows(self.model._meta.table_name, self._insert_columns, tuples)
                total += len(tuples)
        return total

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

    def bulk_update(
        self, objs: Iterable[M], fields: Sequence[str], *, batch_size: int = BATCH_SIZE
    ) -> int:
        """Write ``fields`` of many loaded objects in one transaction, batch by batch.

        Versioned models are checked like :meth:`update`: if any row changed since it was
        read, nothing is written and ConflictError is raised.
        """
        chosen = [self.field(name) for name in fields if name not in ("id", "updated_at")]
        updated_at = self.field("updated_at")
        assignments = [f"{quote(f.column_name)} = {self.db.param}"
                       for f in [*chosen, updated_at]]
        condition = f"{quote(self._pk.column_name)} = {self.db.param}"
        if self._versioned:
            assignments.append(f"{quote('version')} = {quote('version')} + 1")
            condition += f" AND {quote('version')} = {self.db.param}"
        sql = f"UPDATE {self._table} SET {', '.join(assignments)} WHERE {condition}"
        total = 0
        with self.db.atomic():
            self._invalidate(every_row=True)  # runs after the commit, never before
            for chunk in batched(objs, _positive("batch_size", batch_size)):
                now = utcnow()
                params = []
                for obj in chunk:
                    row = [f.db_value(getattr(obj, f.name)) for f in chosen]
                    row += [updated_at.db_value(now), self._pk.db_value(obj._pk)]
                    if self._versioned:
                        row.append(obj.version)
                    params.append(tuple(row))
                changed = self.db.execute_many(sql, params)
                if changed != len(params):
                    raise ConflictError(
                        f"{len(params) - changed} of {len(params)} {self.model.__name__} rows "
                        "changed or vanished since they were read: nothing was written"
                    )
                for obj in chunk:
                    obj.updated_at = now
                    if self._versioned:
                        obj.version += 1
                total += changed
        return total

    def upsert(self, values: Mapping[str, Any], conflict_target: Sequence[str]) -> M:
        """Insert a row or, if ``conflict_target`` (a unique key) exists, update it; return it.

        One statement that returns the row it wrote; an existing row left alone (its values
        were unchanged) is read afterwards.
        """
        plan = self._writes
        if plan is None:
            self.upsert_many([values], conflict_target)
        else:
            batch = next(self.upsert_batches([values], conflict_target))
            rows = self.db.execute_write(f"{plan.insert_all_sql} {batch.clause} RETURNING "
                                         f"{plan.columns}", batch.rows[0], fetch=True)
            self._invalidate(every_row=True)
            if rows:
                return self._hydrate(rows[0])
        lookup = {name: values[name] for name in conflict_target}
        found = self.find(lookup, limit=1, with_deleted=True)
        return found[0]

    def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any]],
        conflict_target: Sequence[str],
        *,
        update: Sequence[str] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> int:
        """Insert rows, updating those whose ``conflict_target`` key already exists.

        An existing row gets only the fields the rows give (``update`` narrows that further);
        the key, ``id``, ``created_at``, ``version`` and ``deleted_at`` are never overwritten,
        and a versioned row's ``version`` is bumped. A row whose values are unchanged is left
        alone (``updated_at`` included), so running the same upsert twice changes nothing.
        Returns the number of rows given.
        """
        batches = self.upsert_batches(rows, conflict_target, update=update, batch_size=batch_size)
        return self.write_batches(batches)

    def upsert_batches(
        self,
        rows: Iterable[Mapping[str, Any]],
        conflict_target: Sequence[str],
        *,
        update: Sequence[str] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> Iterator[UpsertBatch]:
        """The batches :meth:`upsert_many` writes, prepared without touching the database (so
        another process may prepare them): one ON CONFLICT clause and its rows, as database
        values, per ``batch_size`` rows.

        :raises InvalidQueryError: a name is not a field of the model.
        """
        targets = [self.field(name).column_name for name in conflict_target]
        protected = {*conflict_target, *_PROTECTED}
        chosen = None if update is None else {self.field(name).name for name in update}
        table = self.model._meta.table_name
        bump = "version" if self._versioned else None
        for chunk in batched(rows, _positive("batch_size", batch_size)):
            given = set(self._names)
            for row in chunk:
                given &= set(row.__data__ if isinstance(row, BaseModel) else row)
            names = [n for n in self._names
                     if n in given and n not in protected and (chosen is None or n in chosen)]
            columns = [self.model._meta.fields[n].column_name for n in names]
            clause = self.db.dialect.upsert_clause(table, targets, columns, bump)
            yield UpsertBatch(clause, self._row_tuples(chunk))

    def write_batches(self, batches: Iterable[UpsertBatch]) -> int:
        """Write batches from :meth:`upsert_batches` in one transaction; the number of rows.

        Cached rows and queries of the model are dropped once the transaction commits.
        """
        table = self.model._meta.table_name
        total = 0
        with self.db.atomic():
            for batch in batches:
                self.db.insert_rows(table, self._insert_columns, batch.rows, batch.clause)
                total += len(batch.rows)
            self._invalidate(every_row=True)
        return total

    def transaction(self) -> Any:
        """``with repo.transaction():`` — a transaction (or savepoint when nested)."""
        return self.db.atomic()


#: SQL of the comparison operators update_where builds itself
_COMPARISONS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


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
        value = value._pk
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
        number = float(value)
        if math.isnan(number):  # SQLite stores NaN as NULL, PostgreSQL sorts it above all
            raise ValueError("NaN is not a comparable number")
        return number
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
