"""The cache with the model layer: cached rows, invalidation after commit, on every backend."""

from __future__ import annotations

import multiprocessing
import threading
import time
from decimal import Decimal

import peewee
import pytest

import embeddb
from embeddb.cache import Cache, CacheInvalidation, model_tag, query_tags, row_key
from embeddb.cache.models import load_row
from embeddb.errors import NotFoundError
from embeddb.models import BaseModel, MoneyField, SoftDeleteModel, VersionedModel

FORK = multiprocessing.get_context("fork")
WAIT = 20


class Item(CacheInvalidation, BaseModel):
    cache_family = "services"
    name = peewee.TextField()
    price = MoneyField(default=0)


class Note(CacheInvalidation, SoftDeleteModel):
    text = peewee.TextField()


class Counter(CacheInvalidation, VersionedModel):
    n = peewee.IntegerField(default=0)


MODELS = [Item, Note, Counter]


@pytest.fixture
def cache(db, tmp_path):
    db.bind(MODELS)
    db.create_tables(MODELS)
    c = Cache.for_database(db, directory=str(tmp_path / "cache"))
    yield c
    c.close()


@pytest.fixture
def observer(cache):
    """Another process's view of the same cache (not bound to the database)."""
    other = Cache(cache.directory) if cache.directory else cache
    yield other
    if other is not cache:
        other.close()


def cached(observer, model, pk):
    """The row another process would find cached (a tuple in field order), as a dict."""
    entry = observer.get(row_key(model, pk), family=getattr(model, "cache_family", None))
    return None if entry is None else dict(zip(model._meta.sorted_field_names, entry))


def test_get_row_reads_through_and_returns_copies(cache, observer):
    item = Item.create(name="pen", price="1.20")
    row = cache.get_row(Item, item.id)
    assert row["name"] == "pen" and row["price"] == Decimal("1.20")
    row["name"] = "mutated"
    assert cache.get_row(Item, item.id)["name"] == "pen"
    assert cache.get_row(Item, str(item.id))["name"] == "pen"  # every spelling, one entry
    assert cache.get_row(Item, item.id.hex)["name"] == "pen"
    assert cache.stats()["loads"]["loads"] == 1
    assert cached(observer, Item, item.id)["name"] == "pen"
    instance = cache.get_instance(Item, item.id)
    assert isinstance(instance, Item) and not instance.is_dirty()
    instance.name = "pencil"
    instance.save()
    assert Item.get_by_id(item.id).name == "pencil"
    assert cache.get_row(Item, item.id)["name"] == "pencil"


def test_missing_row_raises_and_is_not_cached(cache):
    with pytest.raises(NotFoundError):
        cache.get_row(Item, embeddb.models.new_id())
    assert cache.stats()["l1"]["sets"] == 0


def test_save_invalidates_after_commit_only(cache, observer, db):
    item = Item.create(name="v1")
    cache.get_row(Item, item.id)
    with db.atomic():
        item.name = "v2"
        item.save()
        assert cached(observer, Item, item.id)["name"] == "v1"  # others still see the commit
        assert cache.get_row(Item, item.id)["name"] == "v2"  # read-your-writes: bypassed
    assert cached(observer, Item, item.id) is None
    assert cache.get_row(Item, item.id)["name"] == "v2"


def test_rolled_back_write_invalidates_and_caches_nothing(cache, observer, db):
    item = Item.create(name="v1")
    cache.get_row(Item, item.id)
    with pytest.raises(RuntimeError), db.atomic():
        item.name = "v2"
        item.save()
        ghost = Item.create(name="ghost")
        assert cache.get_row(Item, ghost.id)["name"] == "ghost"
        cache.set("computed", "from uncommitted data")
        raise RuntimeError("roll back")
    assert cached(observer, Item, item.id)["name"] == "v1"  # still valid: nothing changed
    assert cached(observer, Item, ghost.id) is None
    assert observer.get("computed") is None
    assert cache.get_row(Item, item.id)["name"] == "v1"


def test_rolled_back_savepoint_invalidates_nothing(cache, observer, db):
    a, b = Item.create(name="a1"), Item.create(name="b1")
    cache.get_row(Item, a.id)
    cache.get_row(Item, b.id)
    with db.atomic():
        b.name = "b2"
        b.save()
        with pytest.raises(RuntimeError), db.atomic():
            a.name = "a2"
            a.save()
            raise RuntimeError("roll back the savepoint")
    assert cached(observer, Item, a.id)["name"] == "a1"
    assert cached(observer, Item, b.id) is None
    assert cache.get_row(Item, b.id)["name"] == "b2"


def test_instance_writes_invalidate_only_their_row(cache, observer):
    c1, c2 = Counter.create(n=1), Counter.create(n=1)
    cache.get_row(Counter, c1.id)
    cache.get_row(Counter, c2.id)
    c1.n = 2
    c1.save()  # a VersionedModel saves through a class-level UPDATE: still just this row
    assert cached(observer, Counter, c1.id) is None
    assert cached(observer, Counter, c2.id)["n"] == 1
    assert cache.get_row(Counter, c1.id)["n"] == 2
    c2.delete_instance()
    with pytest.raises(NotFoundError):
        cache.get_row(Counter, c2.id)
    assert cached(observer, Counter, c1.id)["n"] == 2


def test_soft_delete_invalidates(cache):
    note = Note.create(text="hi")
    assert cache.get_row(Note, note.id)["text"] == "hi"
    note.delete_instance()
    with pytest.raises(NotFoundError):
        cache.get_row(Note, note.id)


def test_class_level_update_and_delete_invalidate_the_model(cache, observer, db):
    a, b = Item.create(name="a"), Item.create(name="b")
    cache.get_row(Item, a.id)
    cache.get_row(Item, b.id)
    note = Note.create(text="other model")
    cache.get_row(Note, note.id)
    with db.atomic():
        Item.update(price=5).where(Item.name == "a").execute()
        assert cached(observer, Item, a.id) is not None
    assert cached(observer, Item, a.id) is None
    assert cached(observer, Item, b.id) is None  # the WHERE is not analysed: the whole model
    assert cached(observer, Note, note.id) is not None
    cache.get_row(Item, b.id)
    Item.delete().where(Item.id == b.id).execute()
    with pytest.raises(NotFoundError):
        cache.get_row(Item, b.id)


def test_inserts_invalidate_query_results_not_rows(cache, observer):
    a = Item.create(name="a")
    cache.get_row(Item, a.id)

    def names():
        return [r["name"] for r in Item.select().order_by(Item.name).dicts()]

    assert cache.get_or_set_query([Item], "names", names) == ["a"]
    Item.create(name="b")
    assert cache.get_or_set_query([Item], "names", names) == ["a", "b"]
    Item.insert_many([{"name": "c"}, {"name": "d"}]).execute()
    assert cache.get_or_set_query([Item], "names", names) == ["a", "b", "c", "d"]
    assert cached(observer, Item, a.id)["name"] == "a"  # inserts leave cached rows alone
    Item.update(name="z").where(Item.name == "d").execute()
    assert cache.get_or_set_query([Item], "names", names) == ["a", "b", "c", "z"]
    assert query_tags(Item) == ["list:item"]


def test_explicit_invalidate_after_commit(cache, observer, db):
    cache.set("report", 1, tags=["reports"])
    with db.atomic():
        cache.invalidate_after_commit(db, tags=["reports"])
        assert observer.get("report") == 1
    assert observer.get("report") is None
    cache.set("report", 2, tags=["reports"])
    with pytest.raises(RuntimeError), db.atomic():
        cache.invalidate_after_commit(db, ["report"])
        raise RuntimeError
    assert observer.get("report") == 2


def test_refresh_after_commit_writes_through(cache, observer, db):
    item = Item.create(name="v1")
    cache.get_row(Item, item.id)
    key = row_key(Item, item.id)
    with db.atomic():
        Item.update(name="v2").where(Item.id == item.id).execute()
        cache.refresh_after_commit(
            db, key, lambda: load_row(Item, item.id),
            family="services", tags=[model_tag(Item)],
        )
    assert cached(observer, Item, item.id)["name"] == "v2"


def test_refresh_after_commit_replaces_the_value_with_its_family_ttl_and_tags(cache, db):
    cache.set("k", "v1", family="prices")
    with db.atomic():
        cache.refresh_after_commit(db, "k", lambda: "v2", family="prices", ttl=0.3, tags=["t"])
    assert cache.get("k", family="prices") == "v2"
    cache.invalidate(tags=["t"])
    assert cache.get("k", family="prices") is None
    cache.refresh_after_commit(db, "k", lambda: "v3", family="prices", ttl=0.3)
    assert cache.get("k", family="prices") == "v3"
    time.sleep(0.4)
    assert cache.get("k", family="prices") is None


def test_race_with_a_real_row(cache, db):
    item = Item.create(name="old")
    loaded, written = threading.Event(), threading.Event()
    result = {}

    def loader():
        row = Item.select().where(Item.id == item.id).dicts().get()
        loaded.set()
        assert written.wait(WAIT)
        return row

    def reader():
        try:
            result["row"] = cache.get_or_set(
                row_key(Item, item.id), loader, family="services", tags=[model_tag(Item)]
            )
        finally:
            db.close()

    thread = threading.Thread(target=reader)
    thread.start()
    assert loaded.wait(WAIT)
    with db.atomic():
        item.name = "new"
        item.save()
    written.set()
    thread.join(WAIT)
    assert result["row"]["name"] == "old"
    assert cache.get_row(Item, item.id)["name"] == "new"


def _model_reader(url, directory, pk, ready, written, out):
    db = embeddb.connect(url)
    db.bind(MODELS)
    cache = Cache.for_database(db, directory=directory)
    out.put(cache.get_row(Item, pk)["name"])
    out.put(cache.get_row(Item, pk)["name"])
    out.put(cache.stats()["l1"]["hits"])
    ready.set()
    written.wait(WAIT)
    out.put(cache.get_row(Item, pk)["name"])


def test_commit_in_one_process_is_seen_by_another(sqlite_file_url, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    db.bind(MODELS)
    db.create_tables(MODELS)
    directory = str(tmp_path / "cache")
    cache = Cache.for_database(db, directory=directory)
    item = Item.create(name="v1")
    ready, written, out = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(
        target=_model_reader,
        args=(sqlite_file_url, directory, item.id, ready, written, out),
    )
    child.start()
    assert ready.wait(WAIT)
    assert [out.get(timeout=WAIT) for _ in range(3)] == ["v1", "v1", 1]  # child's L1 holds v1
    with db.atomic():
        item.name = "v2"
        item.save()
    written.set()
    assert out.get(timeout=WAIT) == "v2"
    child.join(WAIT)
    cache.close()
    db.close()


def test_default_directory_beside_the_file(sqlite_file_url, tmp_path):
    db = embeddb.connect(sqlite_file_url)
    cache = Cache.for_database(db)
    assert cache.directory == str(tmp_path / "test.db") + "-cache"
    assert Cache.for_database(db) is cache
    cache.close()
    memory = embeddb.connect("sqlite:///:memory:")
    assert Cache.for_database(memory).directory is None
    assert Cache.for_database(memory).stats()["l2"] is None
