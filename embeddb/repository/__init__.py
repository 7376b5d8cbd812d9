"""The generic repository: CRUD, queries, pagination and bulk writes for any embeddb model.

Hot paths (get by id, listing, bulk insert/update) run pre-built SQL and build model objects
straight from rows, skipping peewee's per-call SQL compilation, which costs ~30x a raw
lookup. Everything else goes through peewee queries. Field names that come from callers
(filters, ordering, cursors) are checked against the model and never reach SQL as text.

The class is assembled from one part per concern, each a module here, each layered on the
ones before it: :mod:`.core` (shared state, binding, cache invalidation), :mod:`.rows`
(compiled lookup SQL and row code), :mod:`.query` (filters, ordering, cursors, input checks),
:mod:`.reads` (cached reads by id through :class:`~embeddb.cache.rows.RowCache`),
:mod:`.bulk` (many rows) and :mod:`.writes` (single rows, over the pre-built statements of
:mod:`.statements`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import peewee

from ..cache.rows import RowCache
from ..errors import ConfigurationError, InvalidQueryError
from ..hydration import compile_hydrator, readers_of
from ..models import SoftDeleteModel, VersionedModel
from .bulk import BATCH_SIZE, UpsertBatch
from .core import M, check_home, hex_key_type
from .query import CursorPage, Page
from .rows import _PLANS, Plan, batched
from .statements import WritePlan, plain_writes
from .writes import Writes

if TYPE_CHECKING:  # peewee queries need a peewee database: the engines, not the protocol
    from ..cache.tiered import Cache
    from ..database import Database

__all__ = ["BATCH_SIZE", "CursorPage", "Page", "Repository", "UpsertBatch", "batched"]


class Repository(Writes[M]):
    """Data access for one model.

    Everything runs on ``db``; model-level peewee calls (instance saves, domain queries that
    join ``related`` models) run inside :meth:`bound`.

    ``db`` defaults to the database the model is bound to. Soft-deleted rows (for
    :class:`~embeddb.models.SoftDeleteModel`) are invisible to every read unless asked for.
    """

    def __init__(
        self, model: type[M], db: Database | None = None, cache: Cache | None = None
    ) -> None:
        self.model = model
        self.cache = cache
        engine = db if db is not None else cast("Database | None", model._meta.database)
        if engine is None:
            raise InvalidQueryError(f"{model.__name__} is not bound to a database: pass db=")
        self.db = engine
        check_home([model, *self.related], engine)
        if cache is not None and cache.db is not self.db:
            # Its in-transaction bypass watches cache.db: bound elsewhere, reads inside this
            # database's transactions would cache uncommitted rows.
            raise ConfigurationError(
                "the cache is not bound to this repository's database: use "
                "Cache.for_database(db) (or Cache(directory, db=db))")
        meta = model._meta
        self._pk = cast(peewee.Field, meta.primary_key)
        self._uuid_pk = isinstance(self._pk, (peewee.UUIDField, peewee.BinaryUUIDField))
        self._hex_key = hex_key_type(self._pk)
        self._soft = issubclass(model, SoftDeleteModel)
        self._versioned = issubclass(model, VersionedModel)
        self._fields = list(meta.sorted_fields)
        self._names = [f.name for f in self._fields]
        self._readers = readers_of(self._fields)
        self._writers = [f.db_value for f in self._fields]
        plan = _PLANS.get((model, self.db.param))
        if plan is None:  # generated once per model: building it costs ~0.8 ms
            plan = _PLANS[(model, self.db.param)] = Plan(
                self._build_get_sql(),
                compile_hydrator(model, self._names, self._readers),
                self._compile_writer(),
            )
        self._get_sql, self._hydrate, self._to_tuple = plan
        self._rows = RowCache(cache, model, self.db) if cache is not None else None
        self._insert_columns = [f.column_name for f in self._fields]
        self._known = frozenset(self._names)
        self._stamp = meta.fields["updated_at"].db_value
        self._where_shapes = {}
        self._writes = WritePlan.of(model, self.db.param) if plain_writes(model) else None

    def transaction(self) -> Any:
        """``with repo.transaction():`` — a transaction (or savepoint when nested)."""
        return self.db.atomic()
