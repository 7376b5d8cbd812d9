"""The model layer on every backend: ids, timestamps, soft delete, versions, JSON, money."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import peewee
import pytest

from embeddb.errors import ConflictError, NotFoundError
from embeddb.ids import id_time, new_id
from embeddb.models import (
    BaseModel,
    JSONField,
    MoneyField,
    SoftDeleteModel,
    UTCDateTimeField,
    VersionedModel,
)


class Note(BaseModel):
    title = peewee.TextField()
    data = JSONField(null=True)
    price = MoneyField(null=True)
    due = UTCDateTimeField(null=True)


class Doc(SoftDeleteModel, VersionedModel):
    title = peewee.TextField()


@pytest.fixture
def models(db):
    db.bind([Note, Doc])
    db.create_tables([Note, Doc])
    yield
    db.drop_tables([Note, Doc])


def test_ids_are_unique_time_ordered_uuid7():
    ids = [new_id() for _ in range(20000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert [i.hex for i in ids] == sorted(i.hex for i in ids)
    assert all(i.version == 7 for i in ids[:10])
    assert abs(id_time(ids[0]) - datetime.now(UTC).timestamp()) < 5


def test_ids_round_trip_and_sort_in_the_database(models):
    created = [Note.create(title=str(n)) for n in range(50)]
    loaded = list(Note.select().order_by(Note.id))
    assert [n.id for n in loaded] == [n.id for n in created]
    assert all(isinstance(n.id, uuid.UUID) for n in loaded)


def test_save_inserts_new_and_updates_loaded(models):
    note = Note(title="draft")
    note.save()
    assert Note.select().count() == 1
    loaded = Note.get_by_id(note.id)
    loaded.title = "final"
    loaded.save()
    assert Note.select().count() == 1
    assert Note.get_by_id(note.id).title == "final"


def test_timestamps_are_utc_and_updated(models):
    note = Note.create(title="a")
    loaded = Note.get_by_id(note.id)
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert abs(loaded.created_at - datetime.now(UTC)) < timedelta(seconds=30)
    first = loaded.updated_at
    loaded.title = "b"
    loaded.save()
    assert Note.get_by_id(note.id).updated_at > first
    Note.update(title="c").where(Note.id == note.id).execute()
    assert Note.get_by_id(note.id).updated_at > first


def test_datetimes_convert_to_utc(models):
    plus_two = timezone(timedelta(hours=2))
    note = Note.create(title="t", due=datetime(2030, 1, 1, 12, 0, tzinfo=plus_two))
    due = Note.get_by_id(note.id).due
    assert due == datetime(2030, 1, 1, 10, 0, tzinfo=UTC)
    assert due.tzinfo == UTC
    naive = Note.create(title="n", due=datetime(2030, 1, 1, 9, 0))
    assert Note.get_by_id(naive.id).due == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    later = Note.select().where(Note.due > datetime(2030, 1, 1, 9, 30, tzinfo=UTC))
    assert [n.title for n in later] == ["t"]


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, None, True], "é": "ü"}, [1, "two"], "just a string", 42, None, {}],
)
def test_json_round_trips(models, value):
    note = Note.create(title="j", data=value)
    assert Note.get_by_id(note.id).data == value


def test_money_is_exact_and_never_float(models):
    note = Note.create(title="m", price=Decimal("0.10"))
    note2 = Note.create(title="m2", price="0.20")
    total = sum(n.price for n in Note.select())
    assert total == Decimal("0.30")
    assert Note.get_by_id(note.id).price == Decimal("0.10")
    assert isinstance(Note.get_by_id(note2.id).price, Decimal)
    with pytest.raises(TypeError, match="never a float|not float"):
        Note.create(title="bad", price=0.1)
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        Note.create(title="bad", price=Decimal("0.001"))
    assert Note.select().count() == 2


def test_money_sql_aggregates_are_exact(models, db):
    for cents in ("0.10", "0.20", "0.30"):
        Note.create(title="x", price=cents)
    # SQL sums integer minor units exactly; the field turns them back into a Decimal.
    minor = Note.select(peewee.fn.SUM(Note.price)).scalar()
    assert minor == 60 and not isinstance(minor, float)
    assert Note.price.python_value(minor) == Decimal("0.60")


def test_not_found_is_an_embeddb_error(models):
    with pytest.raises(NotFoundError):
        Note.get_by_id(new_id())
    with pytest.raises(Note.DoesNotExist):
        Note.get_by_id(new_id())


def test_soft_delete_hides_and_restores(models):
    doc = Doc.create(title="x")
    keep = Doc.create(title="y")
    doc.delete_instance()
    assert [d.title for d in Doc.select()] == ["y"]
    assert Doc.select().count() == 1
    with pytest.raises(NotFoundError):
        Doc.get_by_id(doc.id)
    hidden = Doc.deleted().get()
    assert hidden.is_deleted and hidden.id == doc.id
    assert Doc.select_with_deleted().count() == 2
    hidden.restore()
    assert Doc.select().count() == 2
    keep.delete_instance(permanent=True)
    assert Doc.select_with_deleted().count() == 1


def test_optimistic_concurrency_conflict_writes_nothing(models):
    doc = Doc.create(title="v1")
    first = Doc.get_by_id(doc.id)
    second = Doc.get_by_id(doc.id)
    first.title = "from-first"
    first.save()
    assert first.version == 2
    second.title = "from-second"
    with pytest.raises(ConflictError, match="reload"):
        second.save()
    stored = Doc.get_by_id(doc.id)
    assert (stored.title, stored.version) == ("from-first", 2)


def test_versioned_delete_then_save_conflicts(models):
    doc = Doc.create(title="v1")
    stale = Doc.get_by_id(doc.id)
    Doc.get_by_id(doc.id).delete_instance(permanent=True)
    stale.title = "zombie"
    with pytest.raises(ConflictError):
        stale.save()
    assert Doc.select_with_deleted().count() == 0


@pytest.mark.parametrize("value, message", [("NaN", "not an amount"), ("Infinity", "not an amount"),
                                            ("1e30", "too large"), ("abc", "not an amount")])
def test_money_edge_cases_are_clear_errors(models, value, message):
    with pytest.raises(ValueError, match=message):
        Note.create(title="bad", price=value)
    assert Note.select().count() == 0


@pytest.mark.parametrize("value, message", [
    (Decimal("NaN"), "not an amount"), (Decimal("sNaN"), "not an amount"),
    (Decimal("-Infinity"), "not an amount"),
    (Decimal("1e30"), "too large"), (Decimal("-92233720368547758.08"), "too large"),
    (Decimal("0.001"), "more than 2 decimal places"), (Decimal("1.5E-3"), "more than 2")])
def test_money_decimal_edge_cases_are_clear_errors(models, value, message):
    """Decimals take a shorter path to minor units; every check of the long one still holds."""
    with pytest.raises(ValueError, match=message):
        Note.create(title="bad", price=value)
    assert Note.select().count() == 0


def test_money_decimal_limits_and_spellings(models):
    biggest = Decimal("92233720368547758.07")
    for value in (biggest, -biggest, Decimal("1E+2"), Decimal("-0.00"), Decimal("3.10")):
        note = Note.create(title="ok", price=value)
        assert Note.get_by_id(note.id).price == value
