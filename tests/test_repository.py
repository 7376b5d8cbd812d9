"""The generic Repository on every backend: reads, writes, pagination, bulk paths, validation."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import peewee
import pytest
from playhouse.test_utils import count_queries

from embeddb.errors import ConflictError, IntegrityError, InvalidQueryError, NotFoundError
from embeddb.models import (
    BaseModel,
    JSONField,
    MoneyField,
    SoftDeleteModel,
    UTCDateTimeField,
    VersionedModel,
)
from embeddb.repository import Repository


class Product(SoftDeleteModel, VersionedModel):
    sku = peewee.TextField(unique=True)
    name = peewee.TextField()
    rank = peewee.IntegerField(default=0, index=True)
    price = MoneyField(default=0)
    attributes = JSONField(default=dict)
    available_at = UTCDateTimeField(null=True)
    active = peewee.BooleanField(default=True)


class Event(BaseModel):
    kind = peewee.TextField()
    seq = peewee.IntegerField()


@pytest.fixture
def repo(db):
    db.bind([Product, Event])
    db.create_tables([Product, Event])
    yield Repository(Product, db)
    db.drop_tables([Product, Event])


def _seed(repo, n=30):
    return repo.bulk_create(
        {"sku": f"s{i:03d}", "name": f"product {i}", "rank": i % 5, "price": Decimal(i)}
        for i in range(n)
    )


def test_get_returns_typed_model_and_raises_not_found(repo):
    when = datetime(2030, 5, 1, 12, tzinfo=UTC)
    created = repo.create(sku="a", name="A", price="9.99", attributes={"k": [1]},
                          available_at=when)
    got = repo.get(created.id)
    assert (got.sku, got.price, got.attributes, got.available_at, got.active) == (
        "a", Decimal("9.99"), {"k": [1]}, when, True)
    assert got.created_at.tzinfo is not None and got.version == 1
    assert repo.get_or_none(created.id.hex) is not None
    missing = Product().id
    assert repo.get_or_none(missing) is None
    with pytest.raises(NotFoundError, match="not found"):
        repo.get(missing)


def test_fast_get_matches_peewee(repo):
    _seed(repo, 5)
    for product in Product.select():
        assert repo.get(product.id).__data__ == product.__data__


def test_find_filters_ordering_limit(repo):
    _seed(repo)
    found = repo.find(rank=2, order_by="-sku", limit=3)
    assert [p.sku for p in found] == ["s027", "s022", "s017"]
    assert [p.sku for p in repo.find({"sku__in": ["s001", "s002"], "rank__gte": 2})] == ["s002"]
    assert repo.count(rank__lt=2) == 12
    assert repo.exists(sku="s005") and not repo.exists(sku="nope")
    assert [p.sku for p in repo.find(name__startswith="product 2", order_by="sku")][:2] == [
        "s002", "s020"]


@pytest.mark.parametrize(
    "bad",
    [{"nope": 1}, {"sku__regex": "x"}, {"sku; DROP TABLE product": 1}, {"__class__": 1}],
)
def test_unknown_fields_and_operators_never_reach_sql(repo, bad):
    _seed(repo, 3)
    with pytest.raises(InvalidQueryError):
        repo.find(bad)
    assert repo.count() == 3


@pytest.mark.parametrize("order", ["nope", "-sku; DROP TABLE product", "price)"])
def test_unknown_ordering_is_refused(repo, order):
    with pytest.raises(InvalidQueryError, match="unknown field"):
        repo.find(order_by=order)


def test_aggregates_keep_money_exact(repo):
    _seed(repo, 10)
    assert repo.aggregate("sum", "price") == Decimal("45.00")
    assert repo.aggregate("max", "price", rank=1) == Decimal("6.00")
    assert repo.aggregate("avg", "price") == Decimal("4.50")
    assert repo.aggregate("count", "id", rank=9) == 0
    with pytest.raises(InvalidQueryError):
        repo.aggregate("median", "price")


def test_offset_pagination(repo):
    _seed(repo, 23)
    page = repo.paginate(3, 10, order_by="sku")
    assert (page.total, page.pages, page.has_next) == (23, 3, False)
    assert [p.sku for p in page.items] == ["s020", "s021", "s022"]
    with pytest.raises(InvalidQueryError):
        repo.paginate(0, 10)


@pytest.mark.parametrize("order_by", ["id", "rank", "-rank", "-id"])
def test_keyset_pagination_visits_every_row_once(repo, order_by):
    _seed(repo, 37)
    seen, cursor = [], None
    while True:
        page = repo.page_after(cursor, limit=8, order_by=order_by)
        seen += [p.sku for p in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(f"s{i:03d}" for i in range(37))
    assert len(seen) == 37


def test_keyset_pagination_is_stable_while_rows_are_inserted(repo):
    _seed(repo, 20)
    first = repo.page_after(limit=10)
    repo.bulk_create({"sku": f"new{i}", "name": "late"} for i in range(5))  # newer ids: at the end
    second = repo.page_after(first.next_cursor, limit=10)
    assert not {p.sku for p in first.items} & {p.sku for p in second.items}
    assert all(p.sku.startswith("s") for p in second.items)


@pytest.mark.parametrize("cursor", ["garbage", "", "e30", "W10"])
def test_bad_cursors_are_clear_errors(repo, cursor):
    _seed(repo, 3)
    if cursor == "":
        assert len(repo.page_after(cursor).items) == 3
        return
    with pytest.raises(InvalidQueryError, match="cursor"):
        repo.page_after(cursor)


def test_cursor_from_another_ordering_is_refused(repo):
    _seed(repo, 5)
    cursor = repo.page_after(limit=2, order_by="rank").next_cursor
    with pytest.raises(InvalidQueryError, match="ordered by 'rank'"):
        repo.page_after(cursor, order_by="sku")


def test_update_delete_restore(repo):
    product = repo.create(sku="x", name="X")
    repo.update(product.id, name="Y")
    assert repo.get(product.id).name == "Y"
    assert repo.delete(product.id)
    assert repo.get_or_none(product.id) is None and repo.count() == 0
    assert repo.restore(product.id).name == "Y"
    assert repo.delete(product.id, permanent=True)
    with pytest.raises(NotFoundError):
        repo.restore(product.id)
    assert repo.delete(product.id) is False


def test_update_with_stale_copy_conflicts(repo):
    product = repo.create(sku="x", name="X")
    stale = repo.get(product.id)
    repo.update(product.id, name="fresh")
    with pytest.raises(ConflictError):
        repo.update(stale, name="stale")
    assert repo.get(product.id).name == "fresh"


def test_update_where_skips_soft_deleted(repo):
    _seed(repo, 6)
    repo.delete(repo.first(sku="s000").id)
    assert repo.update_where({"name": "bulk"}, rank__lt=5) == 5
    assert repo.find(with_deleted=True, sku="s000")[0].name == "product 0"


def test_bulk_create_fills_defaults_and_is_atomic(repo):
    assert _seed(repo, 10) == 10
    product = repo.first(sku="s003")
    assert product.version == 1 and product.attributes == {} and product.active is True
    assert product.created_at == product.updated_at
    rows = [{"sku": "ok1", "name": "n"}, {"sku": "s001", "name": "duplicate"}]
    with pytest.raises(IntegrityError):
        repo.bulk_create(rows)
    assert repo.count() == 10 and not repo.exists(sku="ok1")
    with pytest.raises(InvalidQueryError, match="unknown field"):
        repo.bulk_create([{"sku": "z", "name": "z", "colour": "red"}])


def test_bulk_writes_convert_values_that_are_not_yet_database_values(repo, db):
    """Values already in database form skip conversion; everything else is still converted."""
    pid = uuid.uuid4()
    when = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    repo.bulk_create([
        {"id": pid.hex, "sku": "hex-id", "name": "plain", "rank": 3},
        {"id": str(uuid.uuid4()), "sku": 42, "name": b"bytes", "rank": "7", "active": 0,
         "available_at": when},
        {"id": uuid.uuid4(), "sku": "uuid-object", "name": "n", "rank": True},
    ])
    assert repo.get(pid).rank == 3
    converted = repo.first(sku="42")
    assert (converted.name, converted.rank, converted.active) == ("bytes", 7, False)
    assert converted.available_at == when and converted.available_at.tzinfo is UTC
    assert repo.first(sku="uuid-object").rank == 1
    stored = db.execute_sql("SELECT id, rank FROM product").fetchall()
    assert {type(row[1]) for row in stored} == {int}
    if db.dialect.name == "sqlite":  # one id format, whatever form it was given in
        assert {len(row[0]) for row in stored} == {32}


def test_bulk_create_streams_in_batches(repo, db):
    def rows():
        for i in range(2500):
            yield {"sku": f"g{i}", "name": "gen"}

    assert repo.bulk_create(rows(), batch_size=1000) == 2500
    assert repo.count() == 2500


def test_bulk_create_never_reads_more_than_a_batch_ahead(repo, db):
    """Memory bounded: the input is consumed one batch at a time, each batch inserted before
    the next is read (a generator of millions of rows must not be materialised)."""
    ahead = []

    def rows():
        for i in range(2500):
            if i % 100 == 0:  # rows read so far minus rows inserted so far (same transaction)
                ahead.append(i - db.execute_sql("SELECT count(*) FROM product").fetchone()[0])
            yield {"sku": f"g{i}", "name": "gen"}

    assert repo.bulk_create(rows(), batch_size=1000) == 2500
    assert max(ahead) <= 1000 and ahead[-1] == 400  # row 2400: two batches of 1000 are in


def test_purge_commits_each_batch_before_the_next(repo):
    _seed(repo, 25)
    seen = []

    def progress(table, total):
        seen.append((table, total, repo.db.in_transaction()))

    assert repo.purge(rank__lt=3, batch_size=4, progress=progress) == 15
    assert seen == [("product", n, False) for n in (4, 8, 12, 15)]


def test_bulk_update_checks_versions(repo):
    _seed(repo, 5)
    products = repo.find(order_by="sku")
    for p in products:
        p.rank = 100
    assert repo.bulk_update(products, ["rank"]) == 5
    assert repo.count(rank=100) == 5 and all(p.version == 2 for p in repo.find())
    stale = repo.find(order_by="sku")
    repo.update(stale[0].id, name="changed elsewhere")
    for p in stale:
        p.rank = 7
    with pytest.raises(ConflictError, match="nothing was written"):
        repo.bulk_update(stale, ["rank"])
    assert repo.count(rank=7) == 0


def test_upsert_is_idempotent(repo):
    rows = [{"sku": f"u{i}", "name": f"n{i}", "price": Decimal("1.5")} for i in range(5)]
    repo.upsert_many(rows, ["sku"])
    before = {p.sku: (p.id, p.updated_at, p.name) for p in repo.find()}
    repo.upsert_many(rows, ["sku"])
    assert {p.sku: (p.id, p.updated_at, p.name) for p in repo.find()} == before
    changed = repo.upsert({"sku": "u1", "name": "renamed", "price": Decimal("1.5")}, ["sku"])
    assert changed.name == "renamed" and changed.id == before["u1"][0]
    assert changed.updated_at > before["u1"][1]
    assert repo.count() == 5


def test_purge_deletes_in_batches(repo):
    _seed(repo, 25)
    assert repo.purge(rank__lt=3, dry_run=True) == 15
    assert repo.count() == 25
    assert repo.purge(rank__lt=3, batch_size=4) == 15
    assert repo.count() == 10


def test_transaction_rolls_back_together(repo):
    with pytest.raises(RuntimeError):
        with repo.transaction():
            repo.create(sku="t1", name="t")
            raise RuntimeError
    assert repo.count() == 0


def test_get_is_one_query(repo):
    product = repo.create(sku="q", name="q")
    with count_queries() as counter:
        for _ in range(5):
            repo.get(product.id)
    assert counter.count == 5


def test_datetimes_json_decimals_survive_the_fast_paths(repo):
    plus5 = timezone(timedelta(hours=5))
    rows = [{"sku": "d1", "name": "d", "price": Decimal("0.01"), "attributes": {"a": [1, "é"]},
             "available_at": datetime(2031, 1, 1, 5, 0, tzinfo=plus5)}]
    repo.bulk_create(rows)
    got = repo.first(sku="d1")
    assert got.price == Decimal("0.01")
    assert got.attributes == {"a": [1, "é"]}
    assert got.available_at == datetime(2031, 1, 1, 0, 0, tzinfo=UTC)
    assert json.dumps(got.attributes, ensure_ascii=False) == '{"a": [1, "é"]}'


def test_upsert_touches_only_the_given_fields_and_bumps_the_version(repo):
    product = repo.create(sku="p", name="Pen", rank=3, price="2.50", attributes={"ink": "blue"})
    repo.update(product.id, name="Pen v2")  # version 2
    stale = repo.get(product.id)
    repo.upsert({"sku": "p", "name": "Pen v2", "rank": 9}, ["sku"])
    got = repo.get(product.id)
    assert (got.name, got.rank, got.price, got.attributes) == (
        "Pen v2", 9, Decimal("2.50"), {"ink": "blue"})
    assert got.version == 3
    stale.name = "lost update"
    with pytest.raises(ConflictError):
        stale.save()


def test_upsert_leaves_soft_deleted_rows_deleted(repo):
    product = repo.create(sku="gone", name="G")
    repo.delete(product.id)
    repo.upsert_many([{"sku": "gone", "name": "G2"}], ["sku"])
    assert repo.get_or_none(product.id) is None
    assert repo.find(with_deleted=True, sku="gone")[0].name == "G2"


def test_a_repository_writes_to_its_own_database(tmp_path):
    import embeddb

    first = embeddb.connect(f"sqlite:///{tmp_path / 'a.db'}")
    second = embeddb.connect(f"sqlite:///{tmp_path / 'b.db'}")
    for database in (first, second):
        database.bind([Product])
        database.create_tables([Product])
    first.bind([Product])  # the model class is bound to `first`
    repo = Repository(Product, second)
    product = repo.create(sku="b", name="B")
    repo.update(product.id, name="B2")
    assert repo.get(product.id).name == "B2"
    assert Repository(Product, first).count() == 0
    repo.delete(product.id)
    assert repo.restore(product.id).name == "B2"
    assert repo.delete(product.id, permanent=True)
    assert repo.count() == 0 and Product._meta.database is first


def test_permanent_delete_removes_a_soft_deleted_row(repo):
    product = repo.create(sku="s", name="S")
    repo.delete(product.id)
    assert repo.delete(product.id, permanent=True) is True
    assert repo.find(with_deleted=True) == []


@pytest.mark.parametrize("bad", [{"rank": "x"}, {"rank__in": 5}, {"rank__in": "12"},
                                 {"rank__gt": object()}])
def test_bad_filter_values_are_the_same_error_on_every_backend(repo, bad):
    _seed(repo, 3)
    with pytest.raises(InvalidQueryError, match="bad value"):
        repo.find(bad)


@pytest.mark.parametrize("pk", ["abc", "", "12", None])
def test_ids_that_are_not_ids_are_not_found(repo, pk):
    _seed(repo, 2)
    assert repo.get_or_none(pk) is None
    with pytest.raises(NotFoundError):
        repo.get(pk)


def test_keyset_refuses_a_nullable_order_field(repo):
    with pytest.raises(InvalidQueryError, match="can be NULL"):
        repo.page_after(order_by="available_at")


def test_fast_path_converts_field_subclasses():
    import embeddb

    class Stamp(BaseModel):
        at = peewee.TimestampField()
        address = peewee.IPField()

    db = embeddb.connect("sqlite:///:memory:")
    db.bind([Stamp])
    db.create_tables([Stamp])
    stamp = Stamp.create(at=datetime(2030, 1, 1), address="10.0.0.1")
    got = Repository(Stamp, db).get(stamp.id)
    assert (got.at, got.address) == (datetime(2030, 1, 1), "10.0.0.1")


def test_class_level_update_bumps_the_version(repo):
    product = repo.create(sku="v", name="V")
    stale = repo.get(product.id)
    repo.update_where({"rank": 5}, sku="v")
    stale.rank = 0
    with pytest.raises(ConflictError):
        stale.save()
    assert repo.get(product.id).rank == 5


def test_rows_written_by_other_tools_read_back_as_aware_utc(tmp_path):
    """Timestamps and ids in spellings embeddb does not write itself (no offset, another
    offset, a hyphenated id) take the field's full conversion, not the inlined common case
    (SQLite's text; PostgreSQL's typed columns have one spelling)."""
    import embeddb

    db = embeddb.connect(f"sqlite:///{tmp_path / 'spellings.db'}")
    db.bind([Product])
    db.create_tables([Product])
    repo = Repository(Product, db)
    created = repo.create(sku="t", name="T")
    hyphenated = str(created.id)
    db.execute_sql(
        "UPDATE product SET id = ?, created_at = ?, available_at = ? WHERE id = ?",
        (hyphenated, "2030-01-01 09:00:00", "2030-01-01 11:00:00+02:00", created.id.hex))
    got = repo.find(sku="t")[0]
    assert got.id == created.id
    assert got.created_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert got.created_at.tzinfo is UTC
    assert got.available_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert got.available_at.tzinfo is UTC
    db.close()


def test_peewee_debug_log_sees_reads_and_writes_turned_on_later(repo, caplog):
    """The hot paths skip peewee's logging only while its debug level is off: switching it on
    after they ran (logging then forgets its memo) shows the next get and update."""
    created = repo.create(sku="log", name="L")
    repo.get(created.id)
    logger = logging.getLogger("peewee")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="peewee"):
            repo.get(created.id)
            repo.update(created, name="M")
    finally:
        logger.setLevel(previous)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "peewee")
    assert "SELECT" in logged and "UPDATE" in logged


def test_bulk_create_rows_of_different_shapes_in_one_load(repo, db):
    """Rows converted by key order (one converter per order seen): fields in any order, some
    left out, generated ones given as None, objects mixed in, all land as given."""
    pid = uuid.uuid4()
    when = datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    rows = [
        {"sku": "a", "name": "A", "rank": 1},
        {"rank": 2, "name": "B", "sku": "b", "price": Decimal("2.50")},
        {"id": None, "created_at": None, "sku": "c", "name": "C"},
        {"id": pid, "created_at": when, "name": "D", "sku": "d", "attributes": {"k": 1}},
        Product(sku="e", name="E", rank=4),
        {"sku": "f", "name": "F", "rank": 1},
    ]
    assert repo.bulk_create(rows, batch_size=4) == 6
    got = {p.sku: p for p in repo.find(order_by="sku")}
    assert [(s, got[s].name, got[s].rank) for s in "abcdef"] == [
        ("a", "A", 1), ("b", "B", 2), ("c", "C", 0), ("d", "D", 0), ("e", "E", 4), ("f", "F", 1)]
    assert got["b"].price == Decimal("2.50") and got["a"].price == 0
    assert got["c"].id is not None and got["c"].created_at is not None
    assert got["d"].id == pid and got["d"].created_at == when
    assert got["d"].attributes == {"k": 1} and got["a"].attributes == {}
    with pytest.raises(InvalidQueryError, match="unknown field.*colour"):
        repo.bulk_create([{"sku": "g", "name": "G"}, {"name": "H", "sku": "h", "colour": 1}])
    assert not repo.exists(sku="g")


@pytest.mark.parametrize("value, message", [
    (Decimal("NaN"), "not an amount"), (Decimal("sNaN"), "not an amount"),
    (Decimal("Infinity"), "not an amount"),
    (Decimal("1e30"), "too large"), (Decimal("92233720368547758.08"), "too large"),
    (Decimal("0.001"), "more than 2 decimal places"), (0.5, "not float")])
def test_bulk_create_refuses_money_it_cannot_store_exactly(repo, value, message):
    """The bulk converter's inlined Decimal case defers to MoneyField for anything else."""
    with pytest.raises((ValueError, TypeError), match=message):
        repo.bulk_create([{"sku": "ok", "name": "n", "price": Decimal(1)},
                          {"sku": "bad", "name": "n", "price": value}])
    assert repo.count() == 0
    biggest = Decimal("92233720368547758.07")
    repo.bulk_create([{"sku": f"m{i}", "name": "n", "price": v}
                      for i, v in enumerate((biggest, -biggest, Decimal("1E+2"), 7, "0.10"))])
    assert [p.price for p in repo.find(order_by="sku")] == [
        biggest, -biggest, Decimal(100), Decimal(7), Decimal("0.10")]
