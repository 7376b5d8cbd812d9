"""Single-row writes as pre-built SQL and generated code: create, update, delete, restore.

peewee builds and compiles a query on every write call, ~60% of a single-row write. A
:class:`WritePlan` holds, per model and parameter style, the statements for each shape of
write (which fields a call names) and straight-line code turning a call's values into the row,
built once per shape, so a write costs about what the bare driver costs: one statement, its
parameters converted by the fields' own ``db_value``.

The engine's ``execute_write`` runs each in a transaction of its own (``BEGIN IMMEDIATE`` on
SQLite) without peewee's per-transaction bookkeeping, or in a savepoint of the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import peewee

from ..dialect import quote
from ..errors import InvalidQueryError
from ..models import BaseModel, SoftDeleteModel, VersionedModel

#: Filled in by the write itself (a None from the caller counts as not given).
_GENERATED = frozenset({"id", "created_at", "updated_at"})
#: Never set from a caller's values by update: stamped by the write itself.
_STAMPED = frozenset({"updated_at", "version"})
#: Shapes kept per plan: a shape is the tuple of names one call site passes.
_MAX_SHAPES = 512
#: Methods a model may override to change what a write does; a model that overrides any of
#: them (e.g. :class:`~embeddb.cache.CacheInvalidation`) is written through peewee instead.
_HOOKS = ("save", "delete_instance", "restore", "create", "insert", "update", "delete",
          "__init__", "_pk_expr")
_BASES = frozenset({BaseModel, SoftDeleteModel, VersionedModel, peewee.Model, object})


def plain_writes(model: type[peewee.Model]) -> bool:
    """Whether ``model`` writes the way embeddb's base models do (a generated UUID key, no
    overridden save, delete, insert... hooks), so pre-built SQL does exactly what peewee
    would."""
    pk = model._meta.primary_key
    if not isinstance(pk, peewee.UUIDField) or not callable(pk.default):
        return False  # the key comes from the database (or nowhere): peewee reads it back
    for cls in model.__mro__:
        if cls not in _BASES and any(name in vars(cls) for name in _HOOKS):
            return False
    return True


def ready_test(field: peewee.Field) -> str | None:
    """A Python expression (over ``{v}``) true when a value already is what ``field.db_value``
    would return unchanged, so writes skip the call; None: always convert.

    Exact classes only, mirroring peewee's own fast paths: a subclass may convert differently.
    """
    kind = type(field)
    if kind is peewee.ForeignKeyField:
        kind = type(cast(peewee.ForeignKeyField, field).rel_field)
    if kind in (peewee.TextField, peewee.CharField):
        return "type({v}) is str"
    if kind in (peewee.IntegerField, peewee.BigIntegerField, peewee.SmallIntegerField):
        return "type({v}) is int"
    if kind.db_value is peewee.UUIDField.db_value:  # a 32-digit hex string passes as is
        return "(type({v}) is str and len({v}) == 32)"
    return None


_PLANS: dict[tuple[type, str], WritePlan] = {}


class WritePlan:
    """Pre-built single-row statements for one model and one parameter style."""

    @classmethod
    def of(cls, model: type[BaseModel], param: str) -> WritePlan:
        """The plan of ``model`` for ``param`` (``?`` or ``%s``), made once."""
        plan = _PLANS.get((model, param))
        if plan is None:
            plan = _PLANS[(model, param)] = cls(model, param)
        return plan

    def __init__(self, model: type[BaseModel], param: str) -> None:
        meta = model._meta
        self.model = model
        self.param = param
        self.fields: list[peewee.Field] = list(meta.sorted_fields)
        self.by_name = {f.name: f for f in self.fields}
        self.pk = cast(peewee.Field, meta.primary_key)
        self.soft = issubclass(model, SoftDeleteModel)
        self.versioned = issubclass(model, VersionedModel)
        self.table = quote(meta.table_name)
        self.columns = ", ".join(quote(f.column_name) for f in self.fields)
        self._pk_is = f"{quote(self.pk.column_name)} = {param}"
        self._bump = f', {quote("version")} = {quote("version")} + 1' if self.versioned else ""
        self._inserts: dict[tuple[str, ...], tuple[str, Callable[..., Any]]] = {}
        self._updates: dict[tuple[Any, ...], tuple[str, Callable[..., list[Any]]]] = {}
        self._assignments: dict[tuple[str, ...], tuple[str, Callable[..., list[Any]]]] = {}
        #: update_where statements by (names set, lookup keys): ``(sql, fill)``, or None for
        #: a shape whose SQL depends on the values (``in``, ``is_null``, text matching)
        #: single-row upserts by (names given, conflict target): the statement, RETURNING
        self.upserts: dict[tuple[tuple[Any, ...], tuple[Any, ...]], str] = {}
        self.where_updates: dict[tuple[Any, ...], tuple[str, Callable[..., Any]] | None] = {}
        marks = ", ".join([param] * len(self.fields))
        #: INSERT of every column, as bulk writes and upserts send them
        self.insert_all_sql = f"INSERT INTO {self.table} ({self.columns}) VALUES ({marks})"
        p = param
        self.delete_sql = f"DELETE FROM {self.table} WHERE {self._pk_is}"
        if self.soft:
            stamps = f'{quote("deleted_at")} = {p}, {quote("updated_at")} = {p}{self._bump}'
            self.soft_delete_sql = (f"UPDATE {self.table} SET {stamps} WHERE {self._pk_is} "
                                    f'AND {quote("deleted_at")} IS NULL')
            self.soft_delete_obj_sql = f"UPDATE {self.table} SET {stamps} WHERE {self._pk_is}"
            if self.versioned:
                self.soft_delete_obj_sql += f' AND {quote("version")} = {p}'
            self.restore_sql = (
                f'UPDATE {self.table} SET {quote("deleted_at")} = NULL, '
                f'{quote("updated_at")} = {p}{self._bump} WHERE {self._pk_is} '
                f'AND {quote("deleted_at")} IS NOT NULL RETURNING {self.columns}')

    # -- insert ---------------------------------------------------------------------------

    def insert(self, names: tuple[str, ...]) -> tuple[str, Callable[..., Any]]:
        """``(INSERT statement, build)`` for a create naming ``names``; ``build(values, now)``
        returns ``(data, rel, params)``: the new object's ``__data__`` and ``__rel__`` and the
        statement's parameters.

        :raises InvalidQueryError: a name is not a field of the model.
        """
        plan = self._inserts.get(names)
        if plan is None:
            self._check(names)
            plan = self._compile_insert(set(names))
            if len(self._inserts) < _MAX_SHAPES:
                self._inserts[names] = plan
        return plan

    def _compile_insert(self, given: set[str]) -> tuple[str, Callable[..., Any]]:
        """Straight-line code for one shape: each field's value from the call, else its default
        (one ``now`` for both timestamps); foreign keys accept a model object, as peewee's do."""
        namespace: dict[str, Any] = {"Model": peewee.Model}
        lines = ["def build(values, now):", "    rel = {}"]
        written = []
        for i, field in enumerate(self.fields):
            name = field.name
            default = field.default
            if name in ("created_at", "updated_at"):
                fill = "now"
            elif callable(default):
                namespace[f"d{i}"] = default
                fill = f"d{i}()"
            elif default is not None:
                namespace[f"d{i}"] = default
                fill = f"d{i}"
            else:
                fill = None
            if name in given:
                lines.append(f"    v{i} = values[{name!r}]")
                if name in _GENERATED and fill is not None:
                    lines.append(f"    if v{i} is None:\n        v{i} = {fill}")
            elif fill is not None:
                lines.append(f"    v{i} = {fill}")
            else:
                continue  # left out of the INSERT, as peewee does: the column's own default
            if isinstance(field, peewee.ForeignKeyField):
                lines.append(f"    if isinstance(v{i}, Model):\n        rel[{name!r}] = v{i}\n"
                             f"        v{i} = v{i}.{field.rel_field.name}")
            namespace[f"w{i}"] = field.db_value
            written.append((i, field))
        data = ", ".join(f"{f.name!r}: v{i}" for i, f in written)
        params = "".join(f"None if v{i} is None else w{i}(v{i}), " for i, _ in written)
        lines.append(f"    return {{{data}}}, rel, ({params})")
        exec(compile("\n".join(lines), f"<insert {self.model.__name__}>", "exec"), namespace)
        columns = ", ".join(quote(f.column_name) for _, f in written)
        marks = ", ".join([self.param] * len(written))
        sql = f"INSERT INTO {self.table} ({columns}) VALUES ({marks})"
        return sql, namespace["build"]

    # -- update ---------------------------------------------------------------------------

    def update(self, given: tuple[str, ...], extra: tuple[str, ...],
               by_pk: bool) -> tuple[str, Callable[..., list[Any]]]:
        """``(UPDATE statement, fill)`` for an update of one row setting the fields ``given``
        (a call's values) and ``extra`` (fields already set on the object); ``updated_at``
        and ``version`` are stamped by the statement itself.

        ``by_pk``: the caller has only the key: skip soft-deleted rows and return the row
        (RETURNING); ``fill(values, stamp, key)``. Otherwise the caller holds the object, and a
        versioned row must still have the version it was read at; ``fill(obj, values, stamp,
        key)`` also sets the values on the object. ``fill`` returns the parameters but the
        expected version, which comes last.

        :raises InvalidQueryError: a name is not a field of the model, or is its primary key.
        """
        key = (given, extra, by_pk)
        plan = self._updates.get(key)
        if plan is None:
            self._check(given)
            if self.pk.name in given:
                raise InvalidQueryError(
                    f"{self.model.__name__}.{self.pk.name} is the primary key: it cannot be "
                    "updated (create a new row instead)")
            chosen = [n for n in (*given, *extra) if n not in _STAMPED]
            p = self.param
            sets = [f"{quote(self.by_name[n].column_name)} = {p}" for n in chosen]
            sets.append(f'{quote("updated_at")} = {p}')
            sql = f"UPDATE {self.table} SET {', '.join(sets)}{self._bump} WHERE {self._pk_is}"
            if by_pk:
                if self.soft:
                    sql += f' AND {quote("deleted_at")} IS NULL'
                sql += f" RETURNING {self.columns}"
            elif self.versioned:
                sql += f' AND {quote("version")} = {p}'
            plan = (sql, self._compile_fill(given, chosen, by_pk))
            if len(self._updates) < _MAX_SHAPES:
                self._updates[key] = plan
        return plan

    def _compile_fill(self, given: tuple[str, ...], chosen: list[str],
                      by_pk: bool, stamps: bool = True) -> Callable[..., list[Any]]:
        """Straight-line code: the call's values onto the object (foreign keys through their
        accessor, which takes a model object too), then each chosen field's database value."""
        namespace: dict[str, Any] = {"Model": peewee.Model}
        if not stamps:
            lines = ["def fill(values):"]
        elif by_pk:
            lines = ["def fill(values, stamp, key):"]
        else:
            lines = ["def fill(obj, values, stamp, key):"]
        if not by_pk:
            lines.append("    data = obj.__data__")
            for name in given:
                if isinstance(self.by_name[name], peewee.ForeignKeyField):
                    lines.append(f"    setattr(obj, {name!r}, values[{name!r}])")
                else:
                    lines.append(f"    data[{name!r}] = values[{name!r}]")
        params = []
        for i, name in enumerate(chosen):
            field = self.by_name[name]
            namespace[f"w{i}"] = field.db_value
            source = f"values[{name!r}]" if by_pk else f"data.get({name!r})"
            lines.append(f"    v{i} = {source}")
            if by_pk and isinstance(field, peewee.ForeignKeyField):
                lines.append(f"    if isinstance(v{i}, Model):\n        v{i} = v{i}._pk")
            ready = ready_test(field)
            convert = f"v{i} if {ready.format(v=f'v{i}')} else " if ready else ""
            params.append(f"None if v{i} is None else {convert}w{i}(v{i})")
        tail = ["stamp", "key"] if stamps else []
        lines.append(f"    return [{', '.join([*params, *tail])}]")
        exec(compile("\n".join(lines), f"<update {self.model.__name__}>", "exec"), namespace)
        return namespace["fill"]

    def assignments(self, names: tuple[str, ...]) -> tuple[str, Callable[..., list[Any]]]:
        """``(SET list, fill)`` of an UPDATE of many rows setting ``names``; ``fill(values)``
        gives their database values, to which the caller appends ``updated_at``'s unless
        ``names`` has it. The version is bumped unless ``names`` sets it (as ``Model.update``).

        :raises InvalidQueryError: a name is not a field of the model.
        """
        plan = self._assignments.get(names)
        if plan is None:
            self._check(names)
            p = self.param
            sets = [f"{quote(self.by_name[n].column_name)} = {p}" for n in names]
            if "updated_at" not in names:
                sets.append(f'{quote("updated_at")} = {p}')
            bump = self._bump if "version" not in names else ""
            fill = self._compile_fill(names, list(names), by_pk=True, stamps=False)
            plan = (", ".join(sets) + bump, fill)
            if len(self._assignments) < _MAX_SHAPES:
                self._assignments[names] = plan
        return plan

    def update_where(
        self, names: tuple[str, ...], shape: list[tuple[str, peewee.Field, str]],
        adapt: Callable[..., Any], comparisons: Mapping[str, str],
    ) -> tuple[str, Callable[..., Any]] | None:
        """``(UPDATE statement, fill)`` of an update_where setting ``names`` where every
        lookup of ``shape`` (``(key, field, operator)``, checked) compares one value; None
        when an operator's SQL depends on the value (``in``, ``is_null``, text matching).

        ``fill(values, terms)`` returns the parameters (``updated_at`` stamped unless
        ``names`` sets it), or None when a value needs the general path: a peewee expression
        to set, or None to compare (``IS NULL``). Lookup values go through ``adapt`` (the
        repository's type checks) unless they already are what it would return: a str without
        NUL for a text field, a 64-bit int for an integer field.
        """
        if any(op not in comparisons for _, _, op in shape):
            return None
        assignments, assign = self.assignments(names)
        p = self.param
        namespace: dict[str, Any] = {"Node": peewee.Node, "assign": assign, "adapt": adapt,
                                     "now": datetime.now, "UTC": UTC,
                                     "stamp": self.by_name["updated_at"].db_value}
        lines = ["def fill(values, terms):"]
        lines += [f"    if isinstance(values[{n!r}], Node):\n        return None" for n in names]
        lines.append("    params = assign(values)")
        if "updated_at" not in names:
            lines.append("    params.append(stamp(now(UTC)))")
        conditions = [f'{quote("deleted_at")} IS NULL'] if self.soft else []
        for i, (key, field, op) in enumerate(shape):
            namespace[f"f{i}"] = field
            namespace[f"w{i}"] = field.db_value
            conditions.append(f"{quote(field.column_name)} {comparisons[op]} {p}")
            lines.append(f"    t = terms[{key!r}]")
            lines.append("    if t is None:\n        return None")
            kind = type(field)
            if kind in (peewee.TextField, peewee.CharField):
                ready = "type(t) is str and '\\x00' not in t"
            elif kind in (peewee.IntegerField, peewee.BigIntegerField, peewee.SmallIntegerField):
                ready = f"type(t) is int and {-(2**63)} <= t <= {2**63 - 1}"
            else:
                ready = ""
            convert = f"w{i}(adapt(f{i}, {op!r}, {key!r}, t))"
            if ready:
                convert = f"t if {ready} else {convert}"
            lines.append(f"    params.append({convert})")
        lines.append("    return params")
        exec(compile("\n".join(lines), f"<update_where {self.model.__name__}>", "exec"),
             namespace)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"UPDATE {self.table} SET {assignments}{where}", namespace["fill"]

    def _check(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.by_name:
                raise InvalidQueryError(
                    f"unknown field {name!r} for {self.model.__name__}; "
                    f"known: {', '.join(sorted(self.by_name))}")
