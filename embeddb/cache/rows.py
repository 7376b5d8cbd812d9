"""Cached rows: the one owner of a cached row's key, its shape, its loader and the object made
from it.

A ``Repository`` with a cache and ``Cache.get_row`` / ``get_instance`` all go through a
:class:`RowCache`, so whichever caches a row first, the others read the same entry: the tuple of
the model's Python values in ``_meta.sorted_fields`` order, under :func:`~.keys.row_key`, tagged
``model:<table>``. JSON values (the only mutable kind) are copied on every read.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import peewee

from ..hydration import compile_hydrator, json_copy, readers_of
from ..models import SoftDeleteModel, primary_key
from ..protocols import Database
from .keys import NoKey, family_of, model_tag, pk_text, row_prefix, uuid_keyed
from .memory import MISSING

if TYPE_CHECKING:
    from .tiered import Cache


#: full keys a RowCache remembers before it starts again (~150 bytes each)
_KNOWN_KEYS = 20_000


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class RowCache:
    """The rows of ``model`` in ``cache``, loaded from ``db`` (default: the model's database).

    Soft-deleted rows are not found, as with ``model.select()``.
    """

    def __init__(self, cache: Cache | None, model: type[peewee.Model], db: Database | None = None) -> None:
        self.cache = cache
        self.model = model
        self.db = db if db is not None else model._meta.database
        meta = model._meta
        self._pk = primary_key(model)
        #: keys of this type are keyed by their hex without pk_text (see :meth:`key`)
        self._hex_key: type[uuid.UUID] = uuid.UUID if uuid_keyed(self._pk) else NoKey
        self._prefix = row_prefix(model)
        self.family = family_of(model)
        self.tags = (model_tag(model),)
        fields = list(meta.sorted_fields)
        self._readers = readers_of(fields)
        copies = [json_copy if _is_json(f) else None for f in fields]
        self._hydrate = compile_hydrator(model, [f.name for f in fields], copies)
        self._names = [f.name for f in fields]
        self._sql = ""
        #: (cache, the full key of this model's rows up to the key's text, {UUID's int: full
        #: key}), made on first use: building a key (hex text, joining, hashing) was a sixth
        #: of an L1 hit
        self._full: tuple[Any, str, dict[int, str]] | None = None

    def key(self, pk: Any) -> str:
        """The cache key of the row ``pk`` (any spelling of it)."""
        if type(pk) is self._hex_key:
            return self._prefix + pk.hex
        return self._prefix + pk_text(self._pk, pk)

    def load(self, pk: Any) -> tuple[Any, ...]:
        """The row ``pk`` from the database, in the cached shape.

        :raises NotFoundError: no such row (the model's ``DoesNotExist``).
        """
        db = self.db
        if not self._sql:
            self._sql = self._select_sql(db.param)
        params = (self._pk.db_value(pk),)
        fetch = getattr(db, "fetch_one", None)
        row = fetch(self._sql, params) if fetch else db.execute_sql(self._sql, params).fetchone()
        if row is None:
            missing = self.model.DoesNotExist  # type: ignore[attr-defined]
            raise missing(f"{self.model.__name__} {pk} not found")
        return tuple(v if r is None or v is None else r(v) for r, v in zip(self._readers, row))

    def entry(self, pk: Any) -> tuple[Any, ...]:
        """The cached entry of row ``pk``, loaded on a miss (a missing row is not cached).

        :raises NotFoundError: no such row.
        """
        if self.cache is None:
            return self.load(pk)
        return self.cache.get_or_set(
            self.key(pk), lambda: self.load(pk), family=self.family, tags=self.tags
        )

    def instance(self, pk: Any) -> Any:
        """A fresh model object for row ``pk`` (never shared between callers).

        :raises NotFoundError: no such row.
        """
        cache = self.cache  # the hot path of a cached Repository.get: entry() inlined
        if cache is None:
            return self._hydrate(self.load(pk))
        if type(pk) is self._hex_key:
            full = self._full
            if full is None or full[0] is not cache:
                full = self._full = (cache, cache.full_key(self._prefix, self.family), {})
            number = pk.int
            known = full[2]
            stored = known.get(number)  # the full key made before: its hash is kept with it
            if stored is None:
                if len(known) >= _KNOWN_KEYS:
                    known.clear()
                stored = known[number] = f"{full[1]}{number:032x}"  # (UUID.hex, uncalled)
            value = cache.fresh_in_l1(stored)  # an L1 hit: ~0.4 µs less than below
            if value is not MISSING:
                return self._hydrate(value)
            key = self._prefix + pk.hex
        else:
            key = self.key(pk)
        return self._hydrate(
            cache.get_or_set(key, lambda: self.load(pk), family=self.family, tags=self.tags)
        )

    def row(self, pk: Any) -> dict[str, Any]:
        """Row ``pk`` as a new dict, field name -> Python value."""
        return self.instance(pk).__data__

    def _select_sql(self, param: str) -> str:
        meta = self.model._meta
        columns = ", ".join(_quote(f.column_name) for f in meta.sorted_fields)
        sql = (f"SELECT {columns} FROM {_quote(meta.table_name)} "
               f"WHERE {_quote(self._pk.column_name)} = {param}")
        if issubclass(self.model, SoftDeleteModel):
            sql += f" AND {_quote(meta.fields['deleted_at'].column_name)} IS NULL"
        return sql


def _is_json(field: peewee.Field) -> bool:
    """JSON fields decode to dicts and lists, which a caller could change in place."""
    return getattr(field, "field_type", "") in ("JSON", "JSONB")


def load_row(model: type[peewee.Model], pk: Any) -> tuple[Any, ...]:
    """One row from the model's database in the cached shape (for a write-through loader such
    as ``refresh_after_commit``); raises the model's ``DoesNotExist`` if there is none."""
    return RowCache(None, model).load(pk)
