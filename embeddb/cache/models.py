"""The cache and the model layer: cached rows by primary key, and writes that invalidate them.

Keys and tags for a model ``M`` (table ``t``), in family ``M.cache_family`` (default family
otherwise):

- a row: key ``t:<pk>``, tag ``model:t``;
- a cached query over ``M`` (:func:`query_tags`): tag ``list:t``.

What a write through a model with :class:`CacheInvalidation` invalidates, after the commit:

- ``instance.save()`` / ``delete_instance()`` (soft or not), ``create()``: that row's key and
  ``list:t``;
- ``M.insert(...)``, ``insert_many``, ``insert_from``, ``replace``, ``bulk_create``: ``list:t``;
- ``M.update(...)``, ``M.delete()`` (any WHERE), ``bulk_update``, ``set_by_id``,
  ``delete_by_id``: ``model:t`` and ``list:t`` (every row of M: the rows a WHERE hits are not
  known without a query).

Raw SQL (``db.execute_sql``) and writes from other programs are not seen: call
:meth:`Cache.invalidate_after_commit` yourself, or rely on the family TTL.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import peewee

from . import tiered

_local = threading.local()


def table_of(model: type[peewee.Model]) -> str:
    return model._meta.table_name


def family_of(model: type[peewee.Model]) -> str | None:
    """The key family of ``model``'s rows: its ``cache_family`` attribute, if any."""
    return getattr(model, "cache_family", None)


def row_key(model: type[peewee.Model], pk: Any) -> str:
    """The cache key of one row; equal for every spelling of the same primary key."""
    field = model._meta.primary_key
    if isinstance(pk, uuid.UUID):
        text = pk.hex
    elif isinstance(field, peewee.UUIDField) and isinstance(pk, str):
        text = pk.replace("-", "").lower()
    elif isinstance(field, peewee.IntegerField) and isinstance(pk, str):
        text = str(int(pk))
    else:
        text = str(pk)
    return f"{table_of(model)}:{text}"


def model_tag(model: type[peewee.Model]) -> str:
    """Tag on every cached row of ``model``."""
    return f"model:{table_of(model)}"


def list_tag(model: type[peewee.Model]) -> str:
    """Tag on every cached query result over ``model``."""
    return f"list:{table_of(model)}"


def query_tags(*models: type[peewee.Model]) -> list[str]:
    """Tags for a cached query result that reads ``models``."""
    return [list_tag(m) for m in models]


def get_row(cache: tiered.Cache, model: type[peewee.Model], pk: Any) -> dict[str, Any]:
    """See :meth:`Cache.get_row`.

    A cached row is one shape whoever caches it (this function or a ``Repository`` with a
    cache): the tuple of the model's Python values in ``_meta.sorted_fields`` order, under
    :func:`row_key`. JSON values (the only mutable kind) are copied on each read.
    """
    row = cache.get_or_set(
        row_key(model, pk), lambda: load_row(model, pk), family=family_of(model),
        tags=(model_tag(model),)
    )
    return {f.name: copy.deepcopy(v) if isinstance(v, (dict, list)) else v
            for f, v in zip(model._meta.sorted_fields, row)}


def load_row(model: type[peewee.Model], pk: Any) -> tuple[Any, ...]:
    """One row from the database in the cached-row shape (for a write-through loader such as
    ``refresh_after_commit``); raises the model's ``DoesNotExist`` if there is none."""
    query = model.select(*model._meta.sorted_fields).where(model._meta.primary_key == pk)
    return tuple(query.tuples().get())


def get_instance(cache: tiered.Cache, model: type[peewee.Model], pk: Any) -> peewee.Model:
    """See :meth:`Cache.get_instance`."""
    instance = model(__no_default__=True, **get_row(cache, model, pk))
    instance._dirty.clear()
    return instance


class CacheInvalidation:
    """Mixin for models whose writes invalidate the cache after they commit.

    Put it first: ``class User(CacheInvalidation, BaseModel): cache_family = "users"``.
    The cache used is the one of the model's database in this process
    (:meth:`Cache.for_database`, created with defaults on the first write if needed), so a
    process that never reads through the cache still tells the others about its writes.
    """

    cache_family: str | None = None

    def save(self, *args: Any, **kwargs: Any) -> Any:
        with _instance_write(type(self)):
            rows = super().save(*args, **kwargs)  # type: ignore[misc]
        _after_write(type(self), keys=[row_key(type(self), self._pk)], everything=False)
        return rows

    def delete_instance(self, *args: Any, **kwargs: Any) -> Any:
        pk = self._pk
        with _instance_write(type(self)):
            rows = super().delete_instance(*args, **kwargs)  # type: ignore[misc]
        _after_write(type(self), keys=[row_key(type(self), pk)], everything=False)
        return rows

    @classmethod
    def update(cls, *args: Any, **kwargs: Any) -> peewee.ModelUpdate:
        return _watch(super().update(*args, **kwargs), _WatchedUpdate)  # type: ignore[misc]

    @classmethod
    def delete(cls) -> peewee.ModelDelete:
        return _watch(super().delete(), _WatchedDelete)  # type: ignore[misc]

    @classmethod
    def insert(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert(*args, **kwargs), _WatchedInsert)  # type: ignore[misc]

    @classmethod
    def insert_many(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert_many(*args, **kwargs), _WatchedInsert)  # type: ignore[misc]

    @classmethod
    def insert_from(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert_from(*args, **kwargs), _WatchedInsert)  # type: ignore[misc]


class _WatchedWrite:
    everything = True

    def _execute(self, database: Any) -> Any:
        result = super()._execute(database)  # type: ignore[misc]
        model = self.model  # type: ignore[attr-defined]
        if model not in getattr(_local, "models", ()):
            _after_write(model, keys=[], everything=self.everything, db=database)
        return result


class _WatchedUpdate(_WatchedWrite, peewee.ModelUpdate):
    pass


class _WatchedDelete(_WatchedWrite, peewee.ModelDelete):
    pass


class _WatchedInsert(_WatchedWrite, peewee.ModelInsert):
    everything = False  # new rows change query results, not cached rows


def _watch(query: Any, cls: type) -> Any:
    query.__class__ = cls
    return query


class _instance_write:
    """While an instance writes itself, its own class-level queries do not invalidate the
    whole model: the instance invalidates its row precisely afterwards."""

    def __init__(self, model: type) -> None:
        self.model = model

    def __enter__(self) -> None:
        models = getattr(_local, "models", None)
        if models is None:
            models = _local.models = []
        models.append(self.model)

    def __exit__(self, *exc: object) -> None:
        _local.models.pop()


def _after_write(
    model: type[peewee.Model], keys: Iterable[str], everything: bool, db: Any = None
) -> None:
    db = db if db is not None else model._meta.database
    if db is None:
        return
    cache = tiered.registered(db)
    if cache is None:
        if not hasattr(db, "dialect"):
            return  # not an embeddb database: no cache can be bound to it
        cache = tiered.Cache.for_database(db)
    tags = [list_tag(model), *([model_tag(model)] if everything else [])]
    cache.invalidate_after_commit(db, list(keys), tags=tags, family=family_of(model))
