"""The cache tier on its own: tiers, TTLs, families, tags, stats, broken L2, stampedes."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddb.cache import Cache
from embeddb.cache.families import DEFAULT_TTLS
from embeddb.cache.locks import LOCK_FILES
from embeddb.errors import CacheValueError, ConfigurationError

FORK = multiprocessing.get_context("fork")
WAIT = 20  # seconds: the longest any event wait may take before the test fails


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "cache")


@pytest.fixture
def cache(cache_dir):
    c = Cache(cache_dir)
    yield c
    c.close()


def test_read_through_caches_in_both_tiers(cache, cache_dir):
    calls = []
    assert cache.get_or_set("k", lambda: calls.append(1) or {"v": 1}) == {"v": 1}
    assert cache.get_or_set("k", lambda: calls.append(1) or {"v": 2}) == {"v": 1}
    assert calls == [1]
    other = Cache(cache_dir)  # another process's view: L2 only
    assert other.get("k") == {"v": 1}
    assert other.stats()["l2"]["hits"] == 1
    assert other.get("k") == {"v": 1}
    assert other.stats()["l1"]["hits"] == 1  # promoted from L2
    other.close()


def test_directory_is_private(cache, cache_dir):
    assert os.stat(cache_dir).st_mode & 0o777 == 0o700


def test_get_set_delete(cache, cache_dir):
    assert cache.get("k", "absent") == "absent"
    cache.set("k", [1, 2])
    assert cache.get("k") == [1, 2]
    other = Cache(cache_dir)
    assert other.get("k") == [1, 2]
    cache.delete("k")
    assert cache.get("k") is None
    assert other.get("k") is None  # its L1 copy is stale now
    other.close()


def test_ttl_zero_expires_at_once(cache):
    cache.set("k", 1, ttl=0)
    assert cache.get("k") is None


def test_families_prefix_keys_and_give_ttls(cache_dir):
    c = Cache(cache_dir, families={"prices": 2.0, "mine": 7.0})
    assert c.ttl_of("sessions") == DEFAULT_TTLS["sessions"] == 3600
    assert c.ttl_of("users") == 300
    assert c.ttl_of("services") == 60
    assert c.ttl_of("portfolios") == 30
    assert c.ttl_of("tool_schemas") == 86400
    assert c.ttl_of("prices") == 2.0
    assert c.ttl_of("mine") == 7.0
    assert c.ttl_of("unknown") == DEFAULT_TTLS["default"]
    c.set("1", "user", family="users")
    c.set("1", "service", family="services")
    assert c.get("1", family="users") == "user"
    assert c.get("1", family="services") == "service"
    assert c.get("1") is None
    c.close()


def test_tags_invalidate_a_group_and_nothing_else(cache, cache_dir):
    cache.set("a", 1, tags=["services"])
    cache.set("b", 2, tags=["services", "provider:7"])
    cache.set("c", 3, tags=["users"])
    other = Cache(cache_dir)
    assert [other.get(k) for k in "abc"] == [1, 2, 3]
    other.invalidate(tags=["provider:7"])
    assert [cache.get(k) for k in "abc"] == [1, None, 3]
    cache.invalidate(tags=["services"])
    assert [other.get(k) for k in "abc"] == [None, None, 3]
    other.close()


def test_clear_empties_every_process(cache, cache_dir):
    cache.set("a", 1)
    other = Cache(cache_dir)
    assert other.get("a") == 1
    cache.clear()
    assert other.get("a") is None
    assert cache.stats()["l2"]["entries"] == 0
    other.close()


def test_l1_is_bounded_lru(tmp_path):
    c = Cache(None, l1_size=2)
    for key in "abc":
        c.set(key, key)
    assert c.get("a") is None
    assert c.get("b") == "b" and c.get("c") == "c"
    c.get("b")
    c.set("d", "d")  # evicts c, the least recently used
    assert c.get("c") is None and c.get("b") == "b"
    assert c.stats()["l1"]["evictions"] == 2


def test_stats_per_tier(cache):
    cache.get("nope")
    cache.get_or_set("k", lambda: 1)
    cache.get("k")
    cache.get("k")
    stats = cache.stats()
    assert stats["l1"]["hits"] == 2
    assert stats["l1"]["sets"] == 1
    assert stats["l1"]["misses"] == 3  # "nope", then "k" before and after its load lock
    assert stats["l2"]["sets"] == 1
    assert stats["loads"]["loads"] == 1
    assert 0 < stats["l1"]["hit_ratio"] < 1
    cache.reset_stats()
    assert cache.stats()["l1"]["hits"] == 0


def test_memoize_and_warm(cache):
    calls = []

    @cache.memoize(family="prices", tags=["prices"])
    def price(symbol: str, scale: int = 1) -> int:
        calls.append(symbol)
        return len(symbol) * scale

    assert price("abc") == 3 and price("abc") == 3 and price("abc", scale=2) == 6
    assert calls == ["abc", "abc"]
    cache.invalidate([price.cache_key("abc")], family="prices")
    assert price("abc") == 3 and calls == ["abc", "abc", "abc"]

    seen = []
    loaded = cache.warm([(k, lambda k=k: k * 2) for k in "xyz"], progress=seen.append)
    assert loaded == 3 and seen == [1, 2, 3]
    assert cache.warm([("x", lambda: "other")]) == 0
    assert cache.get("x") == "xx"


def test_schema_version_separates_entries_but_not_invalidations(cache_dir):
    old, new = Cache(cache_dir, schema_version=1), Cache(cache_dir, schema_version=2)
    old.set("k", "old layout")
    assert new.get("k") is None
    new.set("k", "new layout", tags=["t"])
    old.invalidate(tags=["t"])  # an older app's write still reaches newer entries
    assert new.get("k") is None
    old.close()
    new.close()


def test_live_models_are_refused(cache, db):
    import peewee

    class Thing(peewee.Model):
        name = peewee.TextField()

    with pytest.raises(CacheValueError):
        cache.set("k", Thing(name="x"))
    with pytest.raises(CacheValueError):
        cache.get_or_set("k", lambda: Thing(name="x"))
    assert cache.get("k") is None


def test_bad_options():
    with pytest.raises(ConfigurationError, match="consistency"):
        Cache(None, consistency="eventual")
    with pytest.raises(ConfigurationError, match="l1_size"):
        Cache(None, l1_size=-1)


def test_loader_error_caches_nothing(cache):
    with pytest.raises(ZeroDivisionError):
        cache.get_or_set("k", lambda: 1 / 0)
    assert cache.get_or_set("k", lambda: 5) == 5


# -- the race: a value loaded before a write must never be kept after it ---------------------


def test_race_value_loaded_before_invalidation_is_not_kept(cache, cache_dir):
    loaded, written = threading.Event(), threading.Event()

    def slow_loader():
        value = "old"  # what the database held when the reader read it
        loaded.set()
        assert written.wait(WAIT)
        return value

    result = {}
    reader = threading.Thread(target=lambda: result.update(v=cache.get_or_set("k", slow_loader)))
    reader.start()
    assert loaded.wait(WAIT)
    Cache(cache_dir).invalidate(["k"])  # the writer (any process) commits and invalidates
    written.set()
    reader.join(WAIT)
    assert result["v"] == "old"  # the reader itself may return what it read...
    assert cache.stats()["loads"]["races"] == 1
    assert cache.get("k") is None  # ...but nobody else ever gets it
    assert Cache(cache_dir).get("k") is None


def _race_reader(cache_dir, loaded, written, out):
    c = Cache(cache_dir)

    def loader():
        loaded.set()
        written.wait(WAIT)
        return "old"

    out.put(c.get_or_set("k", loader, tags=["rows"]))
    out.put(c.get("k"))


def test_race_across_processes(cache, cache_dir):
    loaded, written, out = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(target=_race_reader, args=(cache_dir, loaded, written, out))
    child.start()
    assert loaded.wait(WAIT)
    cache.invalidate(tags=["rows"])
    written.set()
    assert out.get(timeout=WAIT) == "old"
    assert out.get(timeout=WAIT) is None
    child.join(WAIT)
    assert cache.get_or_set("k", lambda: "new", tags=["rows"]) == "new"


# -- cross-process freshness -------------------------------------------------------------------


def _holder(cache_dir, consistency, ready, changed, out):
    c = Cache(cache_dir, consistency=consistency, l1_ttl=3600)
    out.put(c.get_or_set("k", lambda: "v1", tags=["t"]))
    out.put(c.get("k"))  # an L1 hit
    out.put(c.stats()["l1"]["hits"])
    ready.set()
    changed.wait(WAIT)
    out.put(c.get_or_set("k", lambda: "v2", tags=["t"]))


@pytest.mark.parametrize("how", ["key", "tag"])
def test_other_process_l1_never_serves_an_invalidated_value(cache, cache_dir, how):
    ready, changed, out = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(target=_holder, args=(cache_dir, "strict", ready, changed, out))
    child.start()
    assert ready.wait(WAIT)
    assert [out.get(timeout=WAIT) for _ in range(3)] == ["v1", "v1", 1]
    if how == "key":
        cache.invalidate(["k"])
    else:
        cache.invalidate(tags=["t"])
    changed.set()
    assert out.get(timeout=WAIT) == "v2"
    child.join(WAIT)


def test_bounded_mode_trades_freshness_for_l1_ttl(cache, cache_dir):
    ready, changed, out = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(target=_holder, args=(cache_dir, "bounded", ready, changed, out))
    child.start()
    assert ready.wait(WAIT)
    assert [out.get(timeout=WAIT) for _ in range(3)] == ["v1", "v1", 1]
    cache.invalidate(["k"])
    changed.set()
    assert out.get(timeout=WAIT) == "v1"  # stale within l1_ttl: the documented trade
    child.join(WAIT)
    bounded = Cache(cache_dir, consistency="bounded")
    assert bounded.l1_ttl == 1.0  # the default bound


def test_bounded_l1_drops_a_key_this_process_invalidated_at_once(cache_dir):
    bounded = Cache(cache_dir, consistency="bounded", l1_ttl=3600)
    try:
        assert bounded.get_or_set("k", lambda: "v1") == "v1"
        bounded.invalidate(["k"])
        assert bounded.get_or_set("k", lambda: "v2") == "v2"
        assert bounded.get_or_set("t", lambda: "v1", tags=["x"]) == "v1"
        bounded.invalidate(tags=["x"])  # a tag too, though L1 hits check no counter
        assert bounded.get_or_set("t", lambda: "v2", tags=["x"]) == "v2"
    finally:
        bounded.close()


# -- stampede ----------------------------------------------------------------------------------


def test_stampede_16_threads_run_the_loader_once(cache):
    waiting = threading.Semaphore(0)
    cache.on_lock_wait = waiting.release
    calls, start = [], threading.Barrier(16)

    def loader():
        calls.append(1)
        for _ in range(15):  # every other thread is queued behind this loader
            assert waiting.acquire(timeout=WAIT)
        return "value"

    results = []

    def worker():
        start.wait(WAIT)
        results.append(cache.get_or_set("hot", loader))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert calls == [1]
    assert results == ["value"] * 16
    assert cache.stats()["loads"]["lock_waits"] == 15


def _stampede_process(cache_dir, start, waiting, calls, out):
    c = Cache(cache_dir)
    c.on_lock_wait = waiting.release

    def loader():
        with calls.get_lock():
            calls.value += 1
        for _ in range(3):  # the 3 other processes are queued behind this loader
            assert waiting.acquire(timeout=WAIT)
        return "value"

    start.wait(WAIT)
    out.put(c.get_or_set("hot", loader))
    out.put(c.stats()["loads"]["lock_waits"])


def test_stampede_4_processes_run_the_loader_once(cache_dir):
    Cache(cache_dir).close()
    start, out = FORK.Barrier(4), FORK.Queue()
    waiting, calls = FORK.Semaphore(0), FORK.Value("i", 0)
    procs = [
        FORK.Process(target=_stampede_process, args=(cache_dir, start, waiting, calls, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=WAIT) for _ in range(8)]
    for p in procs:
        p.join(WAIT)
    assert sorted(map(str, results)) == ["0", "1", "1", "1"] + ["value"] * 4
    assert calls.value == 1


# -- a broken L2 never fails a read ------------------------------------------------------------


def test_unusable_directory_falls_back_to_the_loader(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    c = Cache(str(blocker))
    assert c.get_or_set("k", lambda: 1) == 1
    assert c.get_or_set("k", lambda: 2) == 2  # nothing cached: no shared counters, no cache
    stats = c.stats()
    assert stats["l2"]["errors"] == 1 and stats["loads"]["bypassed"] == 2
    c.set("k", 3)
    assert c.get("k") is None


def test_directory_removed_while_running(cache, cache_dir):
    other = Cache(cache_dir)
    cache.set("k", "v1")
    assert other.get("k") == "v1"
    shutil.rmtree(cache_dir)
    cache.invalidate(["k"])  # recreates the directory and tells holders of the old one
    assert other.get("k") is None
    assert cache.get_or_set("k", lambda: "v2") == "v2"
    assert other.get_or_set("k", lambda: "v3") in ("v2", "v3")
    assert os.path.isdir(cache_dir)
    other.close()
    later = Cache(cache_dir)  # the L2 moved to the new directory: v2 is shared there
    assert later.get("k") == "v2"
    later.close()


def test_corrupt_l2_database(cache_dir):
    Cache(cache_dir).close()
    with open(os.path.join(cache_dir, "l2", "cache.db"), "wb") as fh:
        fh.write(b"this is not a database" * 100)
    c = Cache(cache_dir)
    assert c.get_or_set("k", lambda: 1) == 1
    assert c.get_or_set("k", lambda: 2) == 1  # L1 still works
    assert c.stats()["l2"]["errors"] == 1
    c.close()


def test_corrupt_entry(cache):
    full = cache._key("k", None)
    cache.l2._cache.set(full, "garbage, not an entry")
    assert cache.get_or_set("k", lambda: "fresh") == "fresh"
    assert cache.stats()["l2"]["errors"] == 1


def test_locked_l2_times_out_without_failing(cache_dir):
    c = Cache(cache_dir, lock_timeout=0.1)
    blocker = sqlite3.connect(os.path.join(cache_dir, "l2", "cache.db"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert c.get_or_set("k", lambda: "v") == "v"  # the L2 store times out
        assert c.stats()["l2"]["errors"] == 1
        assert c.get("k") == "v"  # from L1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    c.close()


def test_stampede_lock_timeout_loads_anyway(cache, cache_dir):
    c = Cache(cache_dir, lock_timeout=0.05)
    slot = c._slots(c._key("k", None), ())[1]
    import fcntl

    with open(os.path.join(cache_dir, "locks", f"{slot % LOCK_FILES}.lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert c.get_or_set("k", lambda: "v") == "v"
    assert c.stats()["l2"]["errors"] == 1
    c.close()


def test_corrupt_or_pre_reboot_counter_file_is_reinitialised(cache_dir):
    c = Cache(cache_dir)
    c.set("k", "v")
    c.close()
    path = os.path.join(cache_dir, "generations")
    with open(path, "r+b") as fh:
        fh.write(b"garbage!")
    c = Cache(cache_dir)
    assert c.generations.reinitialised
    assert c.get("k") is None
    assert c.stats()["l2"]["entries"] == 0
    c.close()


# -- a cache without a directory (what `:memory:` databases get) ---------------------------------


@pytest.mark.parametrize("how", ["key", "tag", "delete", "clear"])
def test_memory_only_cache_invalidates_keys_tags_and_everything(how):
    c = Cache(None)
    assert not c.generations.shared
    c.set("a", 1, tags=["services"])
    c.set("b", 2, tags=["users"])
    {"key": lambda: c.invalidate(["a"]), "tag": lambda: c.invalidate(tags=["services"]),
     "delete": lambda: c.delete("a"), "clear": c.clear}[how]()
    assert c.get("a") is None
    assert c.get("b") == (None if how == "clear" else 2)
    c.close()


def test_memory_only_cache_never_keeps_a_value_loaded_before_an_invalidation():
    c = Cache(None)
    loaded, written = threading.Event(), threading.Event()

    def slow_loader():
        loaded.set()
        assert written.wait(WAIT)
        return "old"

    result = {}
    reader = threading.Thread(
        target=lambda: result.update(v=c.get_or_set("k", slow_loader, tags=["rows"])))
    reader.start()
    assert loaded.wait(WAIT)
    c.invalidate(tags=["rows"])  # the writer commits while the reader is still loading
    written.set()
    reader.join(WAIT)
    assert result["v"] == "old"
    assert c.stats()["loads"]["races"] == 1
    assert c.get("k") is None
    c.close()


def test_counter_file_written_before_the_last_reboot_is_reset(cache_dir):
    """Counters written under another boot id may be older than entries checked since: the
    file starts over with a new epoch, so nothing cached before the reboot validates again."""
    from embeddb.cache import generations as gen

    c = Cache(cache_dir)
    c.set("k", "v")
    epoch = c.generations.counters[gen.EPOCH]
    c.close()
    path = os.path.join(cache_dir, "generations")
    assert os.stat(path).st_mode & 0o777 == 0o600  # private, like the directory
    with open(path, "r+b") as fh:
        header = fh.read(gen.HEADER)
        with open("/proc/sys/kernel/random/boot_id", "rb") as boot:  # Linux: this boot's id
            assert header[:8] == gen.MAGIC and header[8:44] == boot.read(36)
        fh.seek(8)
        fh.write(b"0" * 36)  # the boot id of another boot; magic and size are intact
    c = Cache(cache_dir)
    assert c.generations.reinitialised
    assert c.generations.counters[gen.EPOCH] != epoch
    assert c.get("k") is None
    c.close()
    again = Cache(cache_dir)  # the same boot from now on: the file is kept
    assert not again.generations.reinitialised
    again.close()


def test_in_transaction_is_all_the_cache_asks_of_a_database(cache_dir):
    """A cache given only ``in_transaction`` bypasses itself while it says True: reads load,
    nothing is stored (no database to say when the transaction commits)."""
    inside = [False]
    cache = Cache(cache_dir, in_transaction=lambda: inside[0])
    try:
        assert cache.get_or_set("k", lambda: 1) == 1
        inside[0] = True
        assert cache.get_or_set("k", lambda: 2) == 2  # bypassed: not the cached 1
        assert cache.get("k", "none") == "none"
        cache.set("other", 3)
        inside[0] = False
        assert cache.get("k") == 1 and cache.get("other") is None
    finally:
        cache.close()


@pytest.mark.parametrize("shared", [True, False], ids=["file", "memory"])
def test_counters_know_whether_they_hold_every_remote_bump(tmp_path, shared):
    """Subscribing to the Redis tier calls follow_remote: the epoch moves (every local entry
    dropped) exactly when a remote bump may be missing here. A local-only bump is not a remote
    one, a gap is noticed, another incarnation knows nothing; and WRITES only grows, since an
    L1 entry that saw WRITES at n is served unchecked while WRITES is n."""
    from embeddb.cache import generations as gen

    g = gen.SharedGenerations(str(tmp_path)) if shared else gen.LocalGenerations()
    slot = gen.slot_of("k")

    def follow(incarnation: int, writes: int) -> bool:
        epoch, before = g.counters[gen.EPOCH], g.counters[gen.WRITES]
        moved = g.follow_remote(incarnation, writes)
        assert g.counters[gen.WRITES] >= before
        assert (g.counters[gen.EPOCH] != epoch) == moved == (g.counters[gen.WRITES] > before)
        return moved

    try:
        assert follow(7, 0) is True  # nothing known of incarnation 7 yet
        assert follow(7, 0) is False  # the same point again: nothing to drop
        g.bump([slot])  # local only: remote bump 1 was not seen here
        assert follow(7, 1) is True
        g.bump([slot], remote_writes=2)
        g.bump([slot], remote_writes=3)
        assert follow(7, 3) is False  # 2 and 3 applied without a gap
        g.bump([slot], remote_writes=5)  # 4 never arrived
        assert follow(7, 5) is True
        assert follow(8, 5) is True  # another incarnation of the Redis counters
    finally:
        g.close()


def test_hits_keep_coming_from_l1_past_a_recheck(cache):
    """The counter file is looked at again every RECHECK_SECONDS; an unchanged file keeps the
    cache in use (a recheck that said "unusable" would send every read to the loader)."""
    from embeddb.cache import generations as gen

    cache.set("k", "v")
    time.sleep(gen.RECHECK_SECONDS + 0.1)
    hits = cache.stats()["l1"]["hits"]
    assert cache.get_or_set("k", lambda: "loaded") == "v"
    assert cache.stats()["l1"]["hits"] == hits + 1


def test_a_removed_counter_file_or_directory_is_made_again(tmp_path):
    """Counters whose file was removed re-create it (and a removed directory, private again)
    and share it with every other holder; when it cannot be re-created they say unusable."""
    import stat

    from embeddb.cache import generations as gen

    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    ours, theirs = gen.SharedGenerations(str(directory)), gen.SharedGenerations(str(directory))
    slot = gen.slot_of("k")
    try:
        (directory / "generations").unlink()  # the directory stays
        assert ours.check(force=True) and (directory / "generations").exists()
        assert theirs.check(force=True)
        ours.bump([slot])
        assert theirs.counters[slot] == ours.counters[slot] == 1

        shutil.rmtree(directory)
        assert ours.check(force=True) and theirs.check(force=True)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        theirs.bump([slot])
        assert ours.counters[slot] == 1

        shutil.rmtree(directory)
        directory.write_text("not a directory")  # nothing can be made there now
        assert ours.check(force=True) is False
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("remove", ["file", "directory"])
def test_a_cache_still_on_the_replaced_counter_file_drops_what_it_served(cache_dir, remove):
    """Another holder of the old counter file (a process that has not looked again yet) has
    entries in L1 that it already served, so a read would take them unchecked while the file's
    write count stays put: re-opening moves the old file's epoch and its write count."""
    writer, reader = Cache(cache_dir), Cache(cache_dir)
    try:
        writer.invalidate(["unrelated"])  # the write count is 1: a reset to 1 would not show
        writer.set("k", "v1")
        assert reader.get("k") == "v1"
        assert reader.get("k") == "v1"  # served from L1: the entry knows the write count now
        if remove == "file":
            os.remove(os.path.join(cache_dir, "generations"))
        else:
            shutil.rmtree(cache_dir)
        writer.invalidate(["k"])  # re-opens (a new file) and bumps there
        assert reader.get("k") is None
    finally:
        writer.close()
        reader.close()


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_every_name_maps_to_a_slot_of_its_own_range(name):
    """Names land past the fixed slots (bumping a name never moves the epoch or the write
    count) and inside the array."""
    from embeddb.cache import generations as gen

    assert gen.FIRST <= gen.slot_of(name) < gen.SLOTS


def test_names_spread_over_the_whole_slot_range():
    from embeddb.cache import generations as gen

    slots = {gen.slot_of(f"key-{i}") for i in range(200_000)}
    assert min(slots) == gen.FIRST and max(slots) == gen.SLOTS - 1
