"""Generated row code converts exactly as the fields' own python_value, for every kind of value
a database or a raw INSERT can hand back (the common ones are converted inline)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import peewee
import pytest

from embeddb.hydration import compile_hydrator, readers_of
from embeddb.models import BaseModel, JSONField, MoneyField, UTCDateTimeField


class Sample(BaseModel):
    when = UTCDateTimeField(null=True)
    amount = MoneyField(decimal_places=3, null=True)
    data = JSONField(null=True)
    label = peewee.TextField(null=True)


_ID = uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")
_PLUS_TWO = timezone(timedelta(hours=2))

#: (field name, database value): the usual value first, then the unusual ones
_VALUES = [
    ("id", _ID.hex), ("id", str(_ID)), ("id", _ID), ("id", None),
    ("when", "2024-05-01 10:00:00.000001+00:00"), ("when", "2024-05-01 10:00:00"),
    ("when", "2024-05-01 12:00:00+02:00"), ("when", datetime(2024, 5, 1, 12, tzinfo=_PLUS_TWO)),
    ("when", datetime(2024, 5, 1, 10)), ("when", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ("when", None),
    ("amount", 12345), ("amount", -1), ("amount", "12345"), ("amount", 12345.0),
    ("amount", None),
    ("data", '{"a": [1, 2]}'), ("data", b'{"a": 1}'), ("data", {"a": 1}), ("data", "null"),
    ("data", None),
]


@pytest.mark.parametrize(("name", "value"), _VALUES)
def test_inline_conversions_match_python_value(name, value):
    fields = list(Sample._meta.sorted_fields)
    names = [f.name for f in fields]
    hydrate = compile_hydrator(Sample, names, readers_of(fields))
    row = [None] * len(fields)
    row[names.index(name)] = value
    got = hydrate(row).__data__[name]
    field = Sample._meta.fields[name]
    expected = None if value is None else field.python_value(value)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, datetime):
        assert got.tzinfo is UTC  # aware, in UTC, whatever offset the value had
    if isinstance(expected, Decimal):
        assert got.as_tuple() == expected.as_tuple()  # same scale, not only equal


class Plain(peewee.Model):
    label = peewee.TextField(null=True)


@pytest.mark.parametrize("model", [Sample, Plain])
def test_objects_from_rows_track_their_own_changes(model):
    """Objects made from rows behave as peewee's own: each has its own set of changed fields
    and its own related objects (embeddb's models make both on first use)."""
    names = [f.name for f in model._meta.sorted_fields]
    hydrate = compile_hydrator(model, names, [None] * len(names))
    first, second = hydrate(tuple([None] * len(names))), hydrate(tuple([None] * len(names)))
    assert first._persisted is True and not first.is_dirty()
    first.label = "changed"
    assert first.dirty_field_names == [model.label] and not second.is_dirty()
    first.__rel__["x"] = 1
    assert second.__rel__ == {}
    made = model(label="new")  # the constructor's own sets stay as peewee makes them
    assert made.is_dirty() and "__rel__" in made.__dict__ and "_dirty" in made.__dict__
