"""The cache and the model layer: cached rows by primary key, and writes that invalidate them.

Keys and tags for a model ``M`` (table ``t``) are named in :mod:`embeddb.cache.keys`
(a row: ``t:<pk>``, tag ``model:t``; a cached query: tag ``list:t``); cached rows are owned
by :class:`embeddb.cache.rows.RowCache`.

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

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import peewee

from ..protocols import Database
from . import tiered
from .keys import family_of, list_tag, model_tag, query_tags, row_key, table_of
from .rows import load_row

__all__ = ["CacheInvalidation", "family_of", "list_tag", "load_row", "model_tag", "query_tags",
           "row_key", "table_of"]

_local = threading.local()


if TYPE_CHECKING:  # a mixin for peewee models
    _ModelMixin = peewee.Model
else:
    _ModelMixin = object


class CacheInvalidation(_ModelMixin):
    """Mixin for models whose writes invalidate the cache after they commit.

    Put it first: ``class User(CacheInvalidation, BaseModel): cache_family = "users"``.
    The cache used is the one of the model's database in this process
    (:meth:`Cache.for_database`, created with defaults on the first write if needed), so a
    process that never reads through the cache still tells the others about its writes.
    """

    cache_family: str | None = None
    if TYPE_CHECKING:
        _pk: Any  # peewee's, missing from its type stubs

    def save(self, *args: Any, **kwargs: Any) -> Any:
        with _instance_write(type(self)):
            rows = super().save(*args, **kwargs)
        _after_write(type(self), keys=[row_key(type(self), self._pk)], everything=False)
        return rows

    def delete_instance(self, *args: Any, **kwargs: Any) -> Any:
        pk = self._pk
        with _instance_write(type(self)):
            rows = super().delete_instance(*args, **kwargs)
        _after_write(type(self), keys=[row_key(type(self), pk)], everything=False)
        return rows

    @classmethod
    def update(cls, *args: Any, **kwargs: Any) -> peewee.ModelUpdate:
        return _watch(super().update(*args, **kwargs), _WatchedUpdate)

    @classmethod
    def delete(cls) -> peewee.ModelDelete:
        return _watch(super().delete(), _WatchedDelete)

    @classmethod
    def insert(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert(*args, **kwargs), _WatchedInsert)

    @classmethod
    def insert_many(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert_many(*args, **kwargs), _WatchedInsert)

    @classmethod
    def insert_from(cls, *args: Any, **kwargs: Any) -> peewee.ModelInsert:
        return _watch(super().insert_from(*args, **kwargs), _WatchedInsert)


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
    model: type[peewee.Model], keys: Iterable[str], everything: bool, db: Database | None = None
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
