"""Rows to model objects, fast: the straight-line code that builds an instance from a row.

Used by the repository for rows from the database and by the cache for cached rows, so both
make objects the same way.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import peewee

#: Field classes whose database value needs no conversion on the way out (exact classes only:
#: subclasses such as TimestampField or IPField do convert).
PLAIN_FIELDS = frozenset({peewee.TextField, peewee.CharField, peewee.IntegerField,
                          peewee.BigIntegerField, peewee.SmallIntegerField, peewee.AutoField})

Reader = Callable[[Any], Any] | None
Hydrator = Callable[[Sequence[Any]], Any]


def readers_of(fields: Sequence[peewee.Field]) -> list[Reader]:
    """Each field's database -> Python converter (None where the value is used as it is)."""
    return [None if type(f) in PLAIN_FIELDS else f.python_value for f in fields]


def json_copy(value: Any) -> Any:
    """A copy of a decoded JSON value (dicts, lists, scalars): ~3x cheaper than decoding again,
    ~10x cheaper than copy.deepcopy. A flat dict or list (the common case) is one C-level
    ``copy()``."""
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) is dict or type(item) is list:
                return {k: json_copy(v) for k, v in value.items()}
        return value.copy()
    if kind is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                return [json_copy(v) for v in value]
        return value.copy()
    return value


def _made_on_first_use(model: type[peewee.Model]) -> bool:
    """Whether ``model`` makes ``_dirty`` and ``__rel__`` on first use (embeddb's models)."""
    from .models import MadeOnFirstUse

    return all(isinstance(inspect.getattr_static(model, name, None), MadeOnFirstUse)
               for name in ("_dirty", "__rel__"))


def _inline_reader(read: Reader, v: str, r: str, namespace: dict[str, Any]) -> str | None:
    """Statements converting ``v`` in place as ``read`` (the field's own ``python_value``,
    named ``r``) would, with the common database value handled inline (saving a call per
    value); None when ``read`` is not one of embeddb's own readers. Anything else still goes
    through ``r``, so results are the same for every value."""
    from . import models  # here: models come after hydration in the import order

    field = getattr(read, "__self__", None)
    function = getattr(read, "__func__", None)
    if function is models.UTCDateTimeField.python_value:
        namespace.update(fromiso=datetime.fromisoformat, UTC=UTC)
        return (f"    if type({v}) is str:\n        {v} = fromiso({v})\n"
                f"        if {v}.tzinfo is not UTC:\n            {v} = {r}({v})\n"
                f"    elif {v} is not None:\n        {v} = {r}({v})")
    if function is models.IdField.python_value:
        namespace["from_hex"] = models._uuid_from_hex
        return (f"    if type({v}) is str and len({v}) == 32:\n        {v} = from_hex({v})\n"
                f"    elif {v} is not None:\n        {v} = {r}({v})")
    if function is models.MoneyField.python_value:
        namespace["Decimal"] = Decimal
        places = -cast(models.MoneyField, field).decimal_places
        return (f"    if type({v}) is int:\n        {v} = Decimal({v}).scaleb({places})\n"
                f"    elif {v} is not None:\n        {v} = {r}({v})")
    if function is models.JSONField.python_value:
        namespace["loads"] = json.loads
        return (f"    if type({v}) is str:\n        {v} = loads({v})\n"
                f"    elif {v} is not None:\n        {v} = {r}({v})")
    return None


def compile_hydrator(
    model: type[peewee.Model], names: Sequence[str], readers: Sequence[Reader]
) -> Hydrator:
    """Build ``row -> model object`` as straight-line code for the fields ``names``.

    Unrolling the per-field loop (as dataclasses and attrs do for ``__init__``) halves the
    cost of turning a row into an object; names come from the model, never from input.
    ``readers[i]`` converts value ``i`` (None: the value is used as it is); embeddb's own
    fields have their common case inlined (:func:`_inline_reader`).
    """
    values = [f"v{i}" for i in range(len(names))]
    items = []
    converts: list[str] = []
    namespace: dict[str, Any] = {"new": object.__new__, "model": model}
    for i, (name, read) in enumerate(zip(names, readers)):
        if read is None:
            items.append(f"{name!r}: v{i}")
            continue
        namespace[f"r{i}"] = read
        inline = _inline_reader(read, f"v{i}", f"r{i}", namespace)
        if inline is None:
            items.append(f"{name!r}: None if v{i} is None else r{i}(v{i})")
        else:
            converts.append(inline)
            items.append(f"{name!r}: v{i}")
    source = "\n".join([
        "def hydrate(row):",
        f"    {', '.join(values)}, = row",
        *converts,
        "    obj = new(model)",
        f"    obj.__data__ = {{{', '.join(items)}}}",
        *([] if _made_on_first_use(model) else ["    obj._dirty = set()", "    obj.__rel__ = {}"]),
        "    obj._persisted = True",
        "    return obj",
    ])
    exec(compile(source, f"<hydrate {model.__name__}>", "exec"), namespace)
    return namespace["hydrate"]
