"""L2 entry bytes: every value comes back equal and of the same types, rows included."""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from embeddb.cache import Cache, codec, tiered

ID = uuid.UUID("01a2018b-4ee3-72a1-ace7-b32a65ef3432")
WHEN = datetime(2024, 2, 29, 23, 59, 58, 999_999, tzinfo=UTC)


def roundtrip(value):
    slots, token, out = codec.loads(codec.dumps((0, 7, 9), 1234, value))
    assert (slots, token) == ((0, 7, 9), 1234)
    return out


def test_row_fields_keep_their_types():
    row = {
        "id": ID,
        "created_at": WHEN,
        "naive": datetime(2024, 1, 1, 12),
        "plus_two": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        "fold": datetime(2024, 1, 1, fold=1, tzinfo=UTC),
        "day": date(2024, 1, 1),
        "price": Decimal("10.50"),
        "blob": b"\x00\xff",
        "none": None,
        "flag": True,
        "ratio": 0.5,
        "nested": {"ids": [ID], "at": WHEN},
        7: "a non-str key",
    }
    out = roundtrip(row)
    assert out == row
    assert [type(v) for v in out.values()] == [type(v) for v in row.values()]
    assert out["id"].is_safe is uuid.SafeUUID.unknown and hash(out["id"]) == hash(ID)
    assert out["created_at"].tzinfo is UTC and out["nested"]["at"].tzinfo is UTC
    assert out["fold"].fold == 1
    assert out["plus_two"].utcoffset() == timedelta(hours=2)


def test_top_level_row_fields_need_no_class_lookup():
    data = codec.dumps((0,), 1, {"id": ID, "at": WHEN, "name": "x"})
    assert b"uuid" not in data and b"datetime" not in data and b"codec" not in data


@pytest.mark.parametrize(
    "value",
    [
        [{"id": ID, "at": WHEN}, {"id": uuid.uuid4(), "at": None}],
        ("a", 1, ID),
        "text",
        12,
        None,
        {},
        ID,
        WHEN,
    ],
)
def test_other_values_roundtrip(value):
    assert roundtrip(value) == value


def test_every_load_is_a_new_value():
    data = codec.dumps((0,), 1, {"id": ID, "tags": ["a"]})
    first, second = codec.loads(data)[2], codec.loads(data)[2]
    assert first == second and first is not second and first["tags"] is not second["tags"]


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps((1, 2, 3)), pickle.dumps("x")])
def test_bytes_that_are_not_an_entry_raise(data):
    with pytest.raises(Exception):  # noqa: B017 - any exception: callers count it as corrupt
        codec.loads(data)


def test_rows_read_from_l2_in_another_cache(tmp_path):
    writer, reader = Cache(str(tmp_path)), Cache(str(tmp_path), l1_size=0)
    row = {"id": ID, "created_at": WHEN, "name": "x", "qty": 3}
    writer.set("row", row)
    for _ in range(2):
        out = reader.get("row")
        assert out == row and out is not row and out["created_at"].tzinfo is UTC
    assert reader.stats()["l2"]["hits"] == 2
    writer.close()
    reader.close()


def test_entries_of_another_layout_are_never_read(tmp_path):
    c = Cache(str(tmp_path), l1_size=0)
    full = c._key("k", None)
    assert full.startswith(f"embeddb:{tiered.FORMAT}:0:")
    older = full.replace(f"embeddb:{tiered.FORMAT}:", f"embeddb:{tiered.FORMAT - 1}:", 1)
    c.l2._cache.set(older, pickle.dumps(((0,), c.generations.total((0,)), "old layout")))
    assert c.get("k") is None
    assert c.stats()["l2"]["errors"] == 0
    c.close()
