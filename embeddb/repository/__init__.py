"""The generic repository: CRUD, queries, pagination and bulk writes for any embeddb model.

Hot paths (get by id, listing, bulk insert/update) run pre-built SQL and build model objects
straight from rows, skipping peewee's per-call SQL compilation, which costs ~30x a raw
lookup. Everything else goes through peewee queries. Field names that come from callers
(filters, ordering, cursors) are checked against the model and never reach SQL as text.

The class is assembled from one part per concern, each a module here: :mod:`.query` (filters,
ordering, cursors, input checks), :mod:`.rows` (compiled lookup SQL and row code),
:mod:`.reads`, :mod:`.writes` (single rows, over the pre-built statements of
:mod:`.statements`) and :mod:`.bulk` (many rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import peewee

from ..cache.models import family_of, model_tag, table_of
from ..errors import ConfigurationError, InvalidQueryError
from ..models import BaseModel, JSONField, SoftDeleteModel, VersionedModel
from .bulk import BATCH_SIZE, Bulk, UpsertBatch
from .query import CursorPage, M, Page, QueryBuilding
from .reads import Reads
from .rows import _PLAIN_FIELDS, _PLANS, RowCode, _json_copy, batched
from .statements import WritePlan, plain_writes
from .writes import Writes

__all__ = ["BATCH_SIZE", "CursorPage", "Page", "Repository", "UpsertBatch", "batched"]


class Repository(QueryBuilding[M], RowCode[M], Reads[M], Writes[M], Bulk[M]):
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
        self._key_prefix = f"{table_of(model)}:"  # row_key() of a UUID key, spelled out
        self._family = family_of(model)
        self._row_tags = (model_tag(model),)
        self._insert_columns = [f.column_name for f in self._fields]
        self._known = frozenset(self._names)
        self._stamp = meta.fields["updated_at"].db_value
        self._where_shapes: dict[tuple[str, ...], list[tuple[str, peewee.Field, str]]] = {}
        #: pre-built single-row writes, unless the model overrides how it writes
        self._writes = WritePlan.of(model, self.db.param) if plain_writes(model) else None

    def bound(self) -> Any:
        """Context in which peewee's model-level calls on this repository's models run on
        ``self.db``: a no-op when the models are bound to it already (the usual case), else
        ``db.bind_ctx`` (which rebinds the model classes for the block: do not use one model
        with two databases from several threads at once)."""
        models = [self.model, *self.related]
        if all(m._meta.database is self.db for m in models):
            return nullcontext()
        return self.db.bind_ctx(models, bind_refs=False, bind_backrefs=False)

    def transaction(self) -> Any:
        """``with repo.transaction():`` — a transaction (or savepoint when nested)."""
        return self.db.atomic()
