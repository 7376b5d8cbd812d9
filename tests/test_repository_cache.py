"""A Repository with a cache: reads through it, writes invalidate after commit, never stale."""

from __future__ import annotations

import peewee
import pytest
from playhouse.test_utils import count_queries

from embeddb.cache import Cache
from embeddb.models import JSONField, SoftDeleteModel, VersionedModel
from embeddb.repository import Repository


class Gadget(SoftDeleteModel, VersionedModel):
    cache_family = "services"
    name = peewee.TextField(unique=True)
    rank = peewee.IntegerField(default=0)
    spec = JSONField(default=dict)


@pytest.fixture
def repo(db, tmp_path):
    db.bind([Gadget])
    db.create_tables([Gadget])
    cache = Cache(str(tmp_path / "cache"), db=db)
    yield Repository(Gadget, db, cache=cache)
    cache.close()
    db.drop_tables([Gadget])


@pytest.fixture
def other(repo, tmp_path):
    """The same database and cache directory seen through another Cache (another process)."""
    cache = Cache(str(tmp_path / "cache"), db=repo.db)
    yield Repository(Gadget, repo.db, cache=cache)
    cache.close()


def test_get_reads_through_once(repo):
    gadget = repo.create(name="g")
    with count_queries() as counter:
        for _ in range(5):
            assert repo.get(gadget.id).name == "g"
    assert counter.count == 1
    assert repo.cache.stats()["l1"]["hits"] == 4


def test_cached_objects_are_independent(repo):
    gadget = repo.create(name="g", spec={"tags": ["a"], "size": {"w": 1}})
    repo.get(gadget.id)  # cached now
    first = repo.get(gadget.id)
    first.name = "mutated locally"
    first.spec["tags"].append("b")
    first.spec["size"]["w"] = 99
    again = repo.get(gadget.id)
    assert again.name == "g" and again.spec == {"tags": ["a"], "size": {"w": 1}}
    flat = repo.create(name="flat", spec={"w": 1, "tags": "a"})  # copied without recursing
    repo.get(flat.id)
    repo.get(flat.id).spec["w"] = 99
    assert repo.get(flat.id).spec == {"w": 1, "tags": "a"}


def test_remembered_keys_stay_bounded_and_right(repo, monkeypatch):
    """A cached get remembers the full key of each id it saw, up to a bound, then starts
    again: every get still finds its own row."""
    import embeddb.cache.rows as rows

    monkeypatch.setattr(rows, "_KNOWN_KEYS", 3)
    made = [repo.create(name=f"g{i}", rank=i) for i in range(7)]
    for _ in range(2):
        for gadget in made:
            assert repo.get(gadget.id).rank == gadget.rank
            assert len(repo._rows._full[2]) <= 3
    assert repo.cache.stats()["l1"]["hits"] >= 7


def test_missing_rows_are_not_cached(repo):
    gadget = Gadget(name="later")
    assert repo.get_or_none(gadget.id) is None
    gadget.save()  # not through the repository: nothing to invalidate
    assert repo.get(gadget.id).name == "later"


@pytest.mark.parametrize(
    "write",
    [
        lambda r, g: r.update(g.id, name="changed"),
        lambda r, g: r.update_where({"name": "changed"}, rank=0),
        lambda r, g: r.bulk_update([_renamed(r.get(g.id))], ["name"]),
        lambda r, g: r.upsert_many([{"id": g.id, "name": "changed"}], ["id"]),
    ],
)
def test_every_write_path_invalidates_other_caches(repo, other, write):
    gadget = repo.create(name="g")
    assert other.get(gadget.id).name == "g"  # cached on the other side
    write(repo, gadget)
    assert other.get(gadget.id).name == "changed"


def _renamed(gadget):
    gadget.name = "changed"
    return gadget


@pytest.mark.parametrize("how", ["delete", "purge"])
def test_deletes_invalidate(repo, other, how):
    gadget = repo.create(name="g")
    assert other.get(gadget.id) is not None
    if how == "delete":
        repo.delete(gadget.id)
    else:
        repo.purge(name="g")
    assert other.get_or_none(gadget.id) is None


def test_rolled_back_write_leaves_cache_alone_and_invalidates_after_commit(repo, other):
    gadget = repo.create(name="g")
    assert other.get(gadget.id).name == "g"
    with pytest.raises(RuntimeError):
        with repo.transaction():
            repo.update(gadget.id, name="never")
            raise RuntimeError
    assert other.get(gadget.id).name == "g"
    with repo.transaction():
        repo.update(gadget.id, name="committed")
        # Same connection: inside the transaction reads bypass the cache and see the write.
        assert repo.get(gadget.id).name == "committed"
    assert other.get(gadget.id).name == "committed"


def test_find_cached_is_invalidated_by_inserts(repo, other):
    repo.create(name="a", rank=1)
    assert [g.name for g in other.find_cached(rank=1)] == ["a"]
    with count_queries() as counter:
        assert [g.name for g in other.find_cached(rank=1)] == ["a"]
    assert counter.count == 0
    repo.bulk_create([{"name": "b", "rank": 1}])
    assert sorted(g.name for g in other.find_cached(rank=1)) == ["a", "b"]


@pytest.fixture
def mvcc_pair(cli_db_url, tmp_path):
    """Two repositories with separate caches on a database where a reader is not blocked by
    an open write (a SQLite file in WAL mode, or PostgreSQL)."""
    import embeddb

    db = embeddb.connect(cli_db_url)
    db.bind([Gadget])
    db.create_tables([Gadget])
    caches = [Cache(str(tmp_path / "cache"), db=db) for _ in range(2)]
    yield [Repository(Gadget, db, cache=c) for c in caches]
    for cache in caches:
        cache.close()
    db.close_all() if hasattr(db, "close_all") else db.close()


@pytest.mark.parametrize("write", ["bulk_create", "delete", "purge", "upsert_many"])
def test_a_read_during_the_write_cannot_leave_a_stale_entry(mvcc_pair, write):
    """Another thread reads (and caches) the old state while the write is uncommitted; the
    invalidation must come after the commit, so the next read sees the new state."""
    import threading

    repo, other = mvcc_pair
    gadget = repo.create(name="g", rank=1)
    seen = []

    def read_meanwhile(event) -> None:
        if event.sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")) and not seen:
            def read() -> None:
                seen.append(len(other.find_cached(rank=1)))
                other.get_or_none(gadget.id)
                if not other.db.is_closed():
                    other.db.close()

            thread = threading.Thread(target=read)
            thread.start()
            thread.join()

    repo.db.query_hooks.append(read_meanwhile)
    try:
        if write == "bulk_create":
            repo.bulk_create([{"name": "h", "rank": 1}])
        elif write == "delete":
            repo.delete(gadget.id)
        elif write == "purge":
            repo.purge(name="g")
        else:
            repo.upsert_many([{"id": gadget.id, "name": "g", "rank": 2}], ["id"])
    finally:
        repo.db.query_hooks.clear()
    assert seen  # the read did happen mid-write
    expected = {"bulk_create": 2, "delete": 0, "purge": 0, "upsert_many": 0}[write]
    assert len(other.find_cached(rank=1)) == expected
    if write in ("delete", "purge"):
        assert other.get_or_none(gadget.id) is None


def _write_without_cache(url: str, pk: str) -> None:
    """Another process, no cache of its own: a plain repository write."""
    import embeddb as e

    db = e.connect(url)
    db.bind([Gadget])
    Repository(Gadget, db).update(pk, name="written elsewhere")


def test_a_writer_without_a_cache_still_invalidates_other_processes(cli_db_url):
    import multiprocessing
    import shutil

    import embeddb

    db = embeddb.connect(cli_db_url)
    db.bind([Gadget])
    db.create_tables([Gadget])
    reader = Repository(Gadget, db, cache=Cache.for_database(db))  # default directory
    gadget = reader.create(name="g")
    assert reader.get(gadget.id).name == "g"  # now in this process's L1 and the L2
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_write_without_cache, args=(cli_db_url, gadget.id.hex))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert reader.get(gadget.id).name == "written elsewhere"
    reader.cache.close()
    if db.backend == "postgresql":  # its default directory is under ~/.cache, not tmp_path
        shutil.rmtree(reader.cache.directory, ignore_errors=True)
        db.close_all()


def test_a_cache_bound_to_another_database_is_refused(db, tmp_path):
    import embeddb

    db.bind([Gadget])
    with pytest.raises(embeddb.ConfigurationError, match="not bound to this repository"):
        Repository(Gadget, db, cache=Cache(str(tmp_path / "c")))


def test_restore_and_migrations_invalidate_everything_cached(sqlite_file_url, tmp_path):
    import embeddb
    import embeddb.migrate
    from embeddb.backup import create_backup, restore_backup

    db = embeddb.connect(sqlite_file_url)
    db.bind([Gadget])
    db.create_tables([Gadget])
    repo = Repository(Gadget, db, cache=Cache.for_database(db))
    gadget = repo.create(name="v1")
    backup = create_backup(db, directory=str(tmp_path / "backups"))
    repo.update(gadget.id, name="v2")
    assert repo.get(gadget.id).name == "v2"  # cached
    db.close()
    restore_backup(db, backup.path)
    assert repo.get(gadget.id).name == "v1"

    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_rename.up.sql").write_text("UPDATE gadget SET name = 'migrated';")
    embeddb.migrate.up(db, folder, backup=False)
    assert repo.get(gadget.id).name == "migrated"
    repo.cache.close()


def test_a_migration_invalidates_a_cache_kept_outside_the_default_directory(sqlite_file_url,
                                                                             tmp_path):
    import embeddb
    import embeddb.migrate

    db = embeddb.connect(sqlite_file_url)
    db.bind([Gadget])
    db.create_tables([Gadget])
    cache = Cache.for_database(db, directory=str(tmp_path / "elsewhere"))
    repo = Repository(Gadget, db, cache=cache)
    gadget = repo.create(name="v1")
    assert repo.get(gadget.id).name == "v1"  # cached
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_rename.up.sql").write_text("UPDATE gadget SET name = 'migrated';")
    embeddb.migrate.up(db, folder, backup=False)
    assert repo.get(gadget.id).name == "migrated"
    cache.close()


def test_cli_cache_clear(sqlite_file_url):
    from click.testing import CliRunner

    import embeddb
    from embeddb.cli import cli

    db = embeddb.connect(sqlite_file_url)
    db.bind([Gadget])
    db.create_tables([Gadget])
    nothing = CliRunner().invoke(cli, ["cache", "clear", "--db", sqlite_file_url])
    assert nothing.exit_code == 0 and "No cache in use" in nothing.output
    repo = Repository(Gadget, db, cache=Cache.for_database(db))
    gadget = repo.create(name="g")
    assert repo.get(gadget.id).name == "g"
    db.execute_sql("UPDATE gadget SET name = 'edited by hand'")  # unseen by the cache
    assert repo.get(gadget.id).name == "g"
    result = CliRunner().invoke(cli, ["cache", "clear", "--db", sqlite_file_url, "--json"])
    assert result.exit_code == 0 and '"cleared": true' in result.output
    assert repo.get(gadget.id).name == "edited by hand"
    repo.cache.close()


@pytest.mark.parametrize("first", ["cache", "repository"])
def test_every_read_path_shares_one_cached_row(repo, first):
    """Cache.get_row / get_instance and Repository.get cache a row under the same key: whichever
    caches it first, every path reads the row's real values (once, the other order read the
    column names as values or raised TypeError)."""
    gadget = repo.create(name="g", rank=3, spec={"tags": ["a"]})
    truth = Gadget.select().where(Gadget.id == gadget.id).dicts().get()
    cache = repo.cache
    cache.clear()
    if first == "cache":
        cache.get_row(Gadget, gadget.id)
    else:
        repo.get(gadget.id)
    for _ in range(2):  # the second round is all cache hits
        assert repo.get(gadget.id).__data__ == truth
        assert repo.get(str(gadget.id)).__data__ == truth  # every spelling of the id, one entry
        assert cache.get_row(Gadget, gadget.id) == truth
        assert cache.get_row(Gadget, gadget.id.hex) == truth
        assert cache.get_instance(Gadget, gadget.id).__data__ == truth
    cache.get_row(Gadget, gadget.id)["spec"]["tags"].append("mutated")
    assert repo.get(gadget.id).spec == {"tags": ["a"]}
    assert cache.stats()["loads"]["loads"] == 1
    renamed = repo.update(gadget, name="h")
    assert cache.get_row(Gadget, gadget.id)["name"] == "h"
    assert repo.get(gadget.id).name == renamed.name == "h"


def test_a_read_inside_a_transaction_sees_its_write_over_a_cached_row(repo):
    gadget = repo.create(name="g")
    for _ in range(3):  # in L1 and verified against the write counter: the fast path serves it
        assert repo.get(gadget.id).name == "g"
    with repo.transaction():
        repo.update(gadget.id, name="uncommitted")
        assert repo.get(gadget.id).name == "uncommitted"
        assert repo.cache.get_row(Gadget, gadget.id)["name"] == "uncommitted"
    assert repo.get(gadget.id).name == "uncommitted"


def test_a_cache_bound_to_no_database_serves_rows_from_memory(db, tmp_path):
    db.bind([Gadget])
    db.create_tables([Gadget])
    gadget = Repository(Gadget, db).create(name="g")
    cache = Cache(str(tmp_path / "unbound"))
    try:
        with count_queries() as counter:
            for _ in range(4):
                assert cache.get_row(Gadget, gadget.id)["name"] == "g"
        assert counter.count == 1
    finally:
        cache.close()
        db.drop_tables([Gadget])


def test_a_closed_cache_reads_every_row_from_the_database(repo):
    gadget = repo.create(name="g")
    for _ in range(3):
        repo.get(gadget.id)
    repo.cache.close()
    with count_queries() as counter:
        for _ in range(2):
            assert repo.get(gadget.id).name == "g"
    assert counter.count == 2
