"""Single-row writes: create, update, update_where, delete, restore and upsert, through the
pre-built statements of :mod:`.statements` (peewee's path for models that override how they
write); each invalidates what it changed after its commit (:meth:`.core.RepositoryCore._invalidate`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

import peewee

from ..dialect import quote
from ..errors import ConflictError, InvalidQueryError, NotFoundError
from ..models import BaseModel, SoftDeleteModel, VersionedModel, utcnow
from .bulk import Bulk
from .core import M
from .query import _COMPARISONS, _adapt, _condition, _terms
from .statements import _MAX_SHAPES, WritePlan

_new = object.__new__
_UNSEEN: Any = object()


def _pk_of(value: Any) -> Any:
    """A foreign key's value: a model object stands for its primary key."""
    return cast(BaseModel, value)._pk if isinstance(value, peewee.Model) else value


class Writes(Bulk[M]):
    """Single-row writes of a repository."""

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
        params = fill(obj, values, self._stamp(now), key.hex if type(key) is self._hex_key
                      else self._pk.db_value(key))
        if self._versioned:
            version = cast(VersionedModel, obj).version
            params.append(version)
        changed = self.db.execute_write(sql, params)
        if self._versioned:
            if not changed:
                raise ConflictError(
                    f"{self.model.__name__} {obj._pk} was changed or deleted since it was read "
                    f"(expected version {version}): reload it and retry")
            data["version"] = version + 1
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
        names = tuple(values)
        lookup = (names, *terms)
        compiled = plan.where_updates.get(lookup, _UNSEEN)
        if compiled is _UNSEEN:
            shape = self._where_shapes.get(tuple(terms))
            if shape is None:
                shape = self._where_shape(terms)
            compiled = None if shape is None else plan.update_where(
                names, shape, _adapt, _COMPARISONS)
            if len(plan.where_updates) < _MAX_SHAPES:
                plan.where_updates[lookup] = compiled
            if shape is None:
                return None
        if compiled is not None:
            params = compiled[1](values, terms)
            if params is not None:
                return compiled[0], params
        return self._update_where_any(plan, values, terms)

    def _update_where_any(self, plan: WritePlan, values: Mapping[str, Any],
                          terms: dict[str, Any]) -> tuple[str, list[Any]] | None:
        """:meth:`_update_where_sql` for shapes whose SQL depends on the values."""
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

    def _peewee_update_where(self, values: Mapping[str, Any], terms: dict[str, Any]) -> int:
        data = {self.field(name): value for name, value in values.items()}
        query = self.model.update(data)
        expression = self.where(terms)
        if self._soft:
            hidden = cast(type[SoftDeleteModel], self.model).deleted_at.is_null()
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
        params: tuple[Any, ...]
        version = cast(VersionedModel, obj).version if obj is not None and self._versioned else 0
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
                    params += (version,)
        changed = self.db.execute_write(sql, params)
        if obj is not None and self._soft and not permanent:
            if self._versioned and not changed:
                raise ConflictError(
                    f"{self.model.__name__} {pk} was changed or deleted since it was read "
                    f"(expected version {version}): reload it and retry")
            obj.__data__.update(deleted_at=now, updated_at=now)
            if self._versioned:
                obj.__data__["version"] = version + 1
        if changed:
            self._invalidate((pk,))
        return bool(changed)

    def _peewee_delete(self, obj_or_pk: M | Any, permanent: bool) -> bool:
        obj = obj_or_pk
        if not isinstance(obj, self.model):
            if permanent and self._soft:
                key = self._key_or_none(obj_or_pk)  # compared as the key field converts it
                found = [] if key is None else self._run(
                    self._select(with_deleted=True).where(self._pk == key).limit(1))
                obj = found[0] if found else None
            else:
                obj = self.get_or_none(obj_or_pk)
        if obj is None:
            return False
        with self.bound(), self.db.atomic():
            if self._soft:
                deleted = cast(SoftDeleteModel, obj).delete_instance(permanent=permanent)
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
        soft = cast(type[SoftDeleteModel], self.model)
        found = self._run(soft.deleted(*self._fields).where(self._pk == pk).limit(1))
        if not found:
            raise NotFoundError(f"no deleted {self.model.__name__} {pk}")
        obj = found[0]
        with self.bound(), self.db.atomic():
            cast(SoftDeleteModel, obj).restore()
            self._invalidate([obj._pk])
        return obj

    def upsert(self, values: Mapping[str, Any], conflict_target: Sequence[str]) -> M:
        """Insert a row or, if ``conflict_target`` (a unique key) exists, update it; return it.

        One statement that returns the row it wrote; an existing row left alone (its values
        were unchanged) is read afterwards.
        """
        plan = self._writes
        if plan is None:
            self.upsert_many([values], conflict_target)
        else:
            try:
                shape = (tuple(values), tuple(conflict_target))
                sql = plan.upserts.get(shape)
            except TypeError:  # unhashable names: refused by the checks below
                shape, sql = None, None
            if sql is None:
                batch = next(self.upsert_batches([values], conflict_target))
                sql = f"{plan.insert_all_sql} {batch.clause} RETURNING {plan.columns}"
                if shape is not None and len(plan.upserts) < _MAX_SHAPES:
                    plan.upserts[shape] = sql
                params = batch.rows[0]
            else:
                params = self._row_tuples([values])[0]
            rows = self.db.execute_write(sql, params, fetch=True)
            self._invalidate(every_row=True)
            if rows:
                return self._hydrate(rows[0])
        lookup = {name: values[name] for name in conflict_target}
        found = self.find(lookup, limit=1, with_deleted=True)
        return found[0]
