"""Bulk writes: many rows per driver call in one transaction, with memory bounded by the batch
size; upserts in batches; purges in short transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, NamedTuple, cast

from ..dialect import quote
from ..errors import ConflictError
from ..models import BaseModel, SoftDeleteModel, utcnow
from .core import M
from .query import _positive
from .reads import Reads
from .rows import batched

#: Rows per executemany / execute_values call: large enough to amortise the call, small enough
#: to keep memory flat for any input size.
BATCH_SIZE = 2000


#: Never overwritten by an upsert: identity, history and the concurrency/soft-delete state.
_PROTECTED = frozenset({"id", "created_at", "updated_at", "version", "deleted_at"})


class UpsertBatch(NamedTuple):
    """Rows in database form and the ON CONFLICT clause to insert them with."""

    clause: str
    rows: list[tuple[Any, ...]]


class Bulk(Reads[M]):
    """Writes of many rows at once."""

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
        soft = cast(type[SoftDeleteModel], self.model)
        base = soft.select_with_deleted if self._soft else soft.select
        if dry_run:
            query = base()
            return (query.where(expression) if expression is not None else query).count(self.db)
        deleted = 0
        while True:
            with self.db.atomic():
                ids: Any = base(self._pk)
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
        size = _positive("batch_size", batch_size)
        pending = iter(rows)
        with self.db.atomic():
            self._invalidate()  # registered inside: runs once the rows are committed
            # each row is converted as it is pulled: only database tuples wait for the batch
            while tuples := self._row_tuples(islice(pending, size)):
                self.db.insert_rows(self.model._meta.table_name, self._insert_columns, tuples)
                total += len(tuples)
        return total

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
