"""What every part of a repository shares: the state built once per repository (model, engine,
cache, compiled plans), binding models to the engine, and the cache invalidation every write
does after its commit.

The parts are layered on it, each seeing the ones below: :mod:`.rows`, :mod:`.query`,
:mod:`.reads`, :mod:`.bulk`, :mod:`.writes`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from time import monotonic
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import peewee

from ..cache.keys import NoKey, family_of, list_tag, model_tag, row_key
from ..cache.tiered import for_writer, registrations, writer_quiet
from ..errors import ConfigurationError
from ..models import BaseModel

if TYPE_CHECKING:  # peewee queries need a peewee database: the engines, not the protocol
    from ..cache.rows import RowCache
    from ..cache.tiered import Cache
    from ..database import Database
    from ..hydration import Hydrator, Reader
    from .statements import WritePlan

M = TypeVar("M", bound=BaseModel)


def check_home(models: Sequence[type[BaseModel]], db: Any) -> None:
    """Refuse to put ``models`` on ``db`` when they belong to another database: a model
    declaring ``class Meta: database_name = "payments"``, or bound to a database opened by
    the name (or URL) of ``payments``, used on any other database, named or the default
    one (a database opened by a URL embeddb.toml does not name counts as ``default``).
    Queries never join across databases; this catches the mistake at once. A model bound
    to a database without a name belongs nowhere in particular: it runs on ``db``.

    :raises ConfigurationError: naming the model and both databases.
    """
    target = getattr(db, "name", None) or "default"
    for model in models:
        declared = getattr(model._meta, "database_name", None)
        bound = model._meta.database
        home = declared or (getattr(bound, "name", None) if bound is not db else None)
        if home is not None and home != target:
            how = "declares" if declared else "is bound to"
            raise ConfigurationError(
                f"{model.__name__} {how} database {home!r}, not {target!r}: use a repository "
                f"on {home!r} (embeddb.connect({home!r})); embeddb never joins across databases")


def hex_key_type(pk: peewee.Field) -> type[uuid.UUID]:
    """The type of the keys whose database value is their ``.hex``: uuid.UUID when ``pk``'s
    db_value is exactly peewee's UUIDField's (embeddb's IdField), which makes the hex of a
    UUID; none for other fields (a BinaryUUIDField stores bytes, a CharField ``str(uuid)``,
    a subclass its own form)."""
    return uuid.UUID if type(pk).db_value is peewee.UUIDField.db_value else NoKey


class RepositoryCore(Generic[M]):
    """The state of a repository for ``model`` (set by ``Repository.__init__``)."""

    #: other models a subclass's queries use (bound to ``db`` together with the model)
    related: Sequence[type[BaseModel]] = ()

    model: type[M]
    db: Database
    #: an :class:`embeddb.cache.Cache`: reads by id and ``find_cached`` go through it, and
    #: every write through this repository invalidates what it changed, after commit.
    cache: Cache | None
    _pk: peewee.Field
    _uuid_pk: bool
    #: keys of this type are sent as ``.hex``: uuid.UUID when the key field's db_value is
    #: UUIDField's own (embeddb's IdField), else a type no key has (see :func:`hex_key_type`)
    _hex_key: type[uuid.UUID]
    _soft: bool
    _versioned: bool
    _fields: list[peewee.Field]
    _names: list[str]
    _readers: list[Reader]
    _writers: list[Callable[[Any], Any]]
    _get_sql: str
    _hydrate: Hydrator
    _to_tuple: Callable[[Mapping[str, Any], Any], tuple[Any, ...]]
    #: the cached rows, shared with Cache.get_row / get_instance
    _rows: RowCache | None
    _insert_columns: list[str]
    _known: frozenset[str]
    _stamp: Callable[[Any], Any]
    _where_shapes: dict[tuple[str, ...], list[tuple[str, peewee.Field, str]]]
    #: pre-built single-row writes, unless the model overrides how it writes
    _writes: WritePlan | None
    #: :func:`~embeddb.cache.tiered.writer_quiet`'s answer: no cache to tell until then
    _quiet: tuple[float, int] = (0.0, -1)

    def bound(self) -> Any:
        """Context in which peewee's model-level calls on this repository's models run on
        ``self.db``: a no-op when the models are bound to it already (the usual case), else
        ``db.bind_ctx`` (which rebinds the model classes for the block: do not use one model
        with two databases from several threads at once)."""
        models: list[type[BaseModel]] = [self.model, *self.related]
        if all(m._meta.database is self.db for m in models):
            return nullcontext()
        return self.db.bind_ctx(models, bind_refs=False, bind_backrefs=False)

    def _invalidate(self, pks: Iterable[Any] = (), *, every_row: bool = False) -> None:
        """After commit: drop cached rows ``pks`` (or every row) and every cached query.

        Without a cache of its own the repository still tells the cache another process on
        this machine keeps for the database, if any (see :func:`embeddb.cache.tiered.for_writer`:
        no filesystem work per write).
        """
        if self.cache is None:
            db = self.db
            if db.in_transaction():
                db.after_commit(lambda: self._tell(for_writer(db), pks, every_row))
                return
            quiet = self._quiet
            if monotonic() < quiet[0] and quiet[1] == registrations():
                return  # for_writer would say None without looking: the usual case
            cache = for_writer(db)
            if cache is None:
                self._quiet = writer_quiet(db)
            else:
                self._tell(cache, pks, every_row)
            return
        tags = [list_tag(self.model)] + ([model_tag(self.model)] if every_row else [])
        self.cache.invalidate_after_commit(
            self.db, [row_key(self.model, pk) for pk in pks], tags=tags,
            family=family_of(self.model),
        )

    def _tell(self, cache: Cache | None, pks: Iterable[Any], every_row: bool) -> None:
        if cache is not None:
            tags = [list_tag(self.model)] + ([model_tag(self.model)] if every_row else [])
            cache.invalidate([row_key(self.model, pk) for pk in pks], tags=tags,
                             family=family_of(self.model))
