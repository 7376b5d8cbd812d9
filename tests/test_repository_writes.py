"""Single-row repository writes (pre-built SQL) on every backend: what they write, in how many
statements, and that they behave as the peewee path did (errors, soft delete, versions)."""

from __future__ import annotations

from decimal import Decimal

import peewee
import pytest
from playhouse.test_utils import count_queries

from embeddb import audit
from embeddb.cache import CacheInvalidation
from embeddb.errors import ConflictError, IntegrityError, InvalidQueryError, NotFoundError
from embeddb.models import BaseModel, JSONField, MoneyField, SoftDeleteModel, VersionedModel
from embeddb.repository import Repository
from embeddb.repository.statements import plain_writes


class Owner(BaseModel):
    name = peewee.TextField()


class Part(SoftDeleteModel, VersionedModel):
    sku = peewee.TextField(unique=True)
    name = peewee.TextField()
    qty = peewee.IntegerField(default=0)
    price = MoneyField(default=0)
    attributes = JSONField(default=dict)
    owner = peewee.ForeignKeyField(Owner, null=True, on_delete="SET NULL")


class Note(BaseModel):
    body = peewee.TextField()
    rank = peewee.IntegerField(default=0)


class WatchedNote(CacheInvalidation, BaseModel):
    body = peewee.TextField()


MODELS = [Owner, Part, Note, WatchedNote]


@pytest.fixture
def repos(db):
    db.bind(MODELS)
    db.create_tables(MODELS)
    yield Repository(Part, db), Repository(Note, db)
    db.drop_tables(MODELS)


def _statements(db, fn):
    """The SQL ``fn`` ran on ``db`` (BEGIN/COMMIT are not seen by query hooks)."""
    seen: list[str] = []
    db.query_hooks.append(hook := lambda event: seen.append(event.sql))
    try:
        result = fn()
    finally:
        db.query_hooks.remove(hook)
    return result, seen


def test_create_fills_defaults_and_returns_what_is_stored(repos, db):
    parts, _ = repos
    owner = Owner.create(name="o")
    part = parts.create(sku="a", name="A", price="2.50", owner=owner)
    assert part.owner_id == owner.id and part.owner is owner
    assert (part.qty, part.attributes, part.version, part.deleted_at) == (0, {}, 1, None)
    assert part.created_at == part.updated_at and part.created_at.tzinfo is not None
    stored = parts.get(part.id)
    assert (stored.price, stored.qty, stored.created_at) == (Decimal("2.50"), 0, part.created_at)
    assert not part.is_dirty()
    given = parts.create(sku="b", name="B", id=None, created_at=None)
    assert parts.get(given.id).sku == "b"


def test_create_errors(repos):
    parts, _ = repos
    parts.create(sku="dup", name="x")
    with pytest.raises(IntegrityError):
        parts.create(sku="dup", name="y")
    with pytest.raises(InvalidQueryError, match="unknown field 'nope'"):
        parts.create(sku="z", name="z", nope=1)
    with pytest.raises(TypeError, match="money"):
        parts.create(sku="z", name="z", price=1.5)
    assert parts.count() == 1


def test_update_writes_only_the_fields_given(repos, db):
    parts, _ = repos
    part = parts.create(sku="a", name="A", qty=1)
    db.execute_sql(f"UPDATE part SET qty = 7 WHERE id = {db.param}", (part.id.hex,))
    (updated, statements) = _statements(db, lambda: parts.update(part, name="B"))
    assert updated is part and part.version == 2 and part.name == "B"
    assert len(statements) == 1 and "qty" not in statements[0]
    stored = parts.get(part.id)
    assert (stored.name, stored.qty, stored.version) == ("B", 7, 2)
    assert stored.updated_at == part.updated_at > part.created_at


def test_update_also_writes_fields_set_on_the_object(repos):
    parts, _ = repos
    part = parts.create(sku="a", name="A")
    part.qty = 5
    parts.update(part, name="B")
    assert not part.is_dirty()
    assert (parts.get(part.id).qty, parts.get(part.id).name) == (5, "B")


def test_update_by_key_is_one_statement_and_returns_the_row(repos, db):
    parts, _ = repos
    part = parts.create(sku="a", name="A", attributes={"k": 1})
    updated, statements = _statements(db, lambda: parts.update(part.id.hex, qty=3))
    assert len(statements) == 1
    assert (updated.qty, updated.version, updated.attributes, updated.sku) == (3, 2, {"k": 1}, "a")
    assert updated.__data__ == parts.get(part.id).__data__


def test_update_not_found_conflict_and_bad_names(repos):
    parts, _ = repos
    part = parts.create(sku="a", name="A")
    stale = parts.get(part.id)
    parts.update(part.id, name="fresh")
    with pytest.raises(ConflictError, match="expected version 1"):
        parts.update(stale, name="stale")
    assert parts.get(part.id).name == "fresh"
    with pytest.raises(NotFoundError):
        parts.update(Part().id, name="x")
    with pytest.raises(NotFoundError):
        parts.update("not-an-id", name="x")
    with pytest.raises(InvalidQueryError, match="unknown field"):
        parts.update(part.id, nope=1)
    with pytest.raises(InvalidQueryError, match="primary key"):
        parts.update(part.id, id=Part().id)
    parts.delete(part.id)
    with pytest.raises(NotFoundError):  # soft-deleted rows are not found by key
        parts.update(part.id, name="x")


def test_unversioned_update_and_delete(repos):
    _, notes = repos
    note = notes.create(body="a")
    assert notes.update(note, rank=2).rank == 2
    assert notes.update(note.id, body="b").body == "b"
    assert notes.get(note.id).rank == 2
    assert notes.delete(note) is True
    assert notes.delete(note.id) is False
    assert notes.delete("not-an-id") is False


def test_soft_delete_restore_and_permanent(repos):
    parts, _ = repos
    part = parts.create(sku="a", name="A")
    assert parts.delete(part.id) is True
    assert parts.delete(part.id) is False  # already hidden
    assert parts.get_or_none(part.id) is None
    restored = parts.restore(part.id)
    assert (restored.deleted_at, restored.version) == (None, 3)
    with pytest.raises(NotFoundError, match="no deleted"):
        parts.restore(part.id)
    assert parts.delete(restored) is True  # an object: version-checked
    assert restored.deleted_at is not None and restored.version == 4
    assert parts.delete(part.id, permanent=True) is True
    assert parts.find(with_deleted=True) == []


def test_soft_deleting_a_stale_object_conflicts(repos):
    parts, _ = repos
    part = parts.create(sku="a", name="A")
    stale = parts.get(part.id)
    parts.update(part.id, name="B")
    with pytest.raises(ConflictError):
        parts.delete(stale)
    assert parts.get(part.id).name == "B"


def test_writes_in_a_caller_transaction_roll_back_with_it(repos, db):
    parts, _ = repos
    with pytest.raises(RuntimeError), db.atomic():
        parts.create(sku="a", name="A")
        raise RuntimeError
    assert parts.count() == 0
    with db.atomic():
        part = parts.create(sku="b", name="B")
        with pytest.raises(IntegrityError):
            parts.create(sku="b", name="again")  # a savepoint: the transaction goes on
        parts.update(part, qty=2)
    assert parts.get(part.id).qty == 2


def test_observed_databases_see_every_write(repos, db):
    parts, _ = repos
    with count_queries() as counter:
        part = parts.create(sku="a", name="A")
        parts.update(part, qty=1)
        parts.update(part.id, qty=2)
        parts.delete(part.id)
        parts.restore(part.id)
    assert counter.count >= 5


def test_audited_writes_are_signed(repos, db):
    _, notes = repos
    driver = audit._driver(db).DRIVER
    for statement in audit.enable_sql(db, "note")[driver]:
        db.execute_sql(statement)
    with audit.context(actor="alice", request_id="r1"):
        note = notes.create(body="a")
        notes.update(note, body="b")
        notes.delete(note.id)
    rows = db.execute_sql("SELECT actor, request_id FROM embeddb_audit "
                          "WHERE table_name = 'note'").fetchall()
    assert rows == [("alice", "r1")] * 3


def test_models_that_override_writes_go_through_peewee(db):
    db.bind(MODELS)
    db.create_tables(MODELS)
    try:
        assert plain_writes(Part) and plain_writes(Note)
        assert not plain_writes(WatchedNote)
        repo = Repository(WatchedNote, db)
        assert repo._writes is None
        note = repo.create(body="a")
        assert repo.update(note.id, body="b").body == "b"
        assert repo.delete(note.id) is True
    finally:
        db.drop_tables(MODELS)


def test_money_and_json_round_trip(repos):
    parts, _ = repos
    part = parts.create(sku="m", name="M", price=Decimal("10.01"), attributes={"a": [1, "x"]})
    parts.update(part, price=Decimal("0.99"), attributes={"b": None})
    stored = parts.get(part.id)
    assert (stored.price, stored.attributes) == (Decimal("0.99"), {"b": None})


def test_update_where_matches_what_find_matches(repos, db):
    parts, _ = repos
    made = [parts.create(sku=f"s{i}", name=f"n{i}", qty=i) for i in range(6)]
    parts.delete(made[5].id)  # hidden: never updated
    cases = [({"qty__lt": 2}, 2), ({"qty__in": [1, 3, 5]}, 2), ({"qty__in": []}, 0),
             ({"qty__not_in": []}, 5), ({"owner": None}, 5), ({"owner__is_null": False}, 0),
             ({"qty__gte": 4, "name__ne": "n0"}, 1), ({"sku__startswith": "s"}, 5)]
    for lookup, expected in cases:
        assert len(parts.find(lookup)) == expected, lookup
        assert parts.update_where({"name": "x"}, lookup) == expected, lookup
    assert parts.get(made[2].id).version > 1 and parts.find(with_deleted=True, qty=5)[0].version == 2
    assert parts.update_where({"qty": Part.qty + 10}, sku="s0") == 1  # an expression
    assert parts.get(made[0].id).qty == 10
    with pytest.raises(InvalidQueryError, match="unknown operator"):
        parts.update_where({"name": "x"}, qty__near=1)
    with pytest.raises(InvalidQueryError, match="bad value"):
        parts.update_where({"name": "x"}, qty="many")
    with pytest.raises(InvalidQueryError, match="unknown field"):
        parts.update_where({"nope": 1}, qty=1)


def test_update_where_is_one_statement(repos, db):
    parts, _ = repos
    parts.create(sku="a", name="A")
    changed, statements = _statements(db, lambda: parts.update_where({"qty": 3}, sku="a"))
    assert changed == 1 and len(statements) == 1


def test_upsert_returns_the_row_in_one_statement(repos, db):
    parts, _ = repos
    first, statements = _statements(db, lambda: parts.upsert({"sku": "u", "name": "U"}, ["sku"]))
    assert len(statements) == 1 and first.version == 1
    second = parts.upsert({"sku": "u", "name": "V", "qty": 2}, ["sku"])
    assert (second.id, second.name, second.qty, second.version) == (first.id, "V", 2, 2)
    same = parts.upsert({"sku": "u", "name": "V", "qty": 2}, ["sku"])  # unchanged: left alone
    assert same.__data__ == second.__data__


def test_upsert_statements_kept_per_shape_write_only_their_fields(repos, db):
    """The statement made for one set of names is reused for it alone: a later call naming
    fewer fields leaves the others as they are, on its first and its repeated call."""
    parts, _ = repos
    for _ in range(2):  # the second round runs the kept statements
        parts.upsert({"sku": "k", "name": "full", "qty": 5, "price": 3}, ["sku"])
        fewer, statements = _statements(db, lambda: parts.upsert(
            {"sku": "k", "name": "full", "qty": 6}, ["sku"]))
        assert (fewer.price, fewer.qty, len(statements)) == (3, 6, 1)
        assert parts.upsert({"qty": 7, "name": "full", "sku": "k"}, ["sku"]).qty == 7
    with pytest.raises(InvalidQueryError):
        parts.upsert({"sku": "k", "nope": 1}, ["sku"])
    with pytest.raises(InvalidQueryError):
        parts.upsert({"sku": "k"}, [["sku"]])
    assert parts.get(fewer.id).price == 3


class Counter(BaseModel):
    id = peewee.AutoField()
    label = peewee.TextField()


def test_models_with_a_database_made_key_go_through_peewee(db):
    db.bind([Counter])
    db.create_tables([Counter])
    try:
        assert not plain_writes(Counter)
        repo = Repository(Counter, db)
        first, second = repo.create(label="a"), repo.create(label="b")
        assert (first.id, second.id) == (1, 2)
        assert repo.update(second.id, label="c").label == "c"
        assert repo.delete(first.id) is True and repo.count() == 1
    finally:
        db.drop_tables([Counter])
