"""The tiered cache: L1 in process memory, L2 on local disk, generation counters for freshness.

Reads go L1 -> L2 -> loader. Every entry carries the generation token of its key, its tags and
the epoch, taken *before* its value was loaded; an invalidation bumps those counters, so a value
read before a write can never be served after it, whichever process stored it and whenever.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar

import peewee

from ..config import check_redis_url, resolve_redis_url
from ..errors import CacheValueError, ConfigurationError
from ..protocols import Database
from . import generations as gen
from . import placement
from .disk import DiskTier
from .families import DEFAULT_FAMILY, DEFAULT_TTLS
from .locks import FileLocks, KeyLocks
from .memory import MISSING, MemoryTier
from .stats import LoadStats

if TYPE_CHECKING:
    from .rows import RowCache

T = TypeVar("T")
FORMAT = 2  # bump when the entry layout changes: old entries are then never read
CONSISTENCY = ("strict", "bounded")

_registry: weakref.WeakKeyDictionary[Any, Cache] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()
#: caches registered in this process so far (see :func:`writer_quiet`)
_registrations = [0]
#: How often (seconds) a process that writes with no cache of its own looks on disk for a
#: cache another process keeps: rarely enough that writes do no filesystem work.
RECHECK = 0.5
#: A database's default cache directory is usable this long after it was created; a process
#: opening it sooner waits until then. A writer that looked before the directory existed
#: neither invalidates nor looks again for up to RECHECK, so every write it commits unseen has
#: committed before GRACE (> RECHECK) is over, and anything loaded after that sees it.
GRACE = 0.6
_BIRTH_FILE = "born"
#: per database: (monotonic time of the next look, default directory)
_looked: weakref.WeakKeyDictionary[Any, tuple[float, str | None]] = weakref.WeakKeyDictionary()


class Cache:
    """A two-tier cache, optionally bound to a database.

    :param directory: where L2 and the shared generation counters live; None keeps everything in
        this process (no L2, no cross-process invalidation).
    :param db: the database whose transactions gate the cache: inside one of its transactions
        reads bypass the cache (read-your-writes, nothing uncommitted is cached) and ``set`` waits
        for the commit (``db.after_commit``).
    :param in_transaction: tells whether this thread is inside a transaction of ``db``
        (default: ``db.in_transaction``); the cache reads nothing else of the database's state.
    :param l1_size: entries kept in memory (0 disables L1).
    :param l1_ttl: upper bound on how long L1 keeps an entry (None: the entry's own TTL).
    :param consistency: ``"strict"`` (default) checks the shared generations on every L1 hit, so
        a commit in any process is seen at once; ``"bounded"`` skips that check and caps L1 entries
        at ``l1_ttl`` (default 1 s): a write may then be missed for up to that long.
    :param families: TTLs per key family, merged over :data:`DEFAULT_TTLS`.
    :param schema_version: part of every key: bump it (e.g. with the migration version) so an
        upgraded app never reads entries written by an older one.
    :param namespace: keeps databases apart when they share one ``directory``.
    :param lock_timeout: longest wait behind another loader of the same key before loading anyway.
    :param l2_size_limit: bytes L2 may use before diskcache evicts the oldest entries.
    :param redis_url: Redis as the shared tier above L2 (see :mod:`embeddb.cache.remote`);
        None reads ``$EMBEDDB_REDIS_URL`` / embeddb.toml ``[cache] redis_url``, "" means none.
    :param redis_prefix: what every Redis key of this cache starts with; caches that share it
        share entries and invalidations (default: :func:`placement.redis_prefix`; none for a
        ``:memory:`` database, which then has no Redis tier).
    :param watched: ``directory`` is ``db``'s default, which writers without a cache of their
        own look for (see :func:`for_writer`): opening it in the first :data:`GRACE` seconds
        after its creation waits until they are over.
    :raises ConfigurationError: an unknown consistency mode or a negative size, or an
        unreadable embeddb.toml (read for the Redis URL when ``redis_url`` is None).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        db: Database | None = None,
        in_transaction: Callable[[], bool] | None = None,
        l1_size: int = 10_000,
        l1_ttl: float | None = None,
        consistency: str = "strict",
        families: dict[str, float] | None = None,
        schema_version: str | int = 0,
        namespace: str = "",
        lock_timeout: float = 5.0,
        l2_size_limit: int = 1 << 30,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        watched: bool = False,
    ) -> None:
        if consistency not in CONSISTENCY:
            raise ConfigurationError(
                f"consistency={consistency!r}: use one of {', '.join(CONSISTENCY)}"
            )
        if l1_size < 0:
            raise ConfigurationError("l1_size must be >= 0 (0 disables the in-memory tier)")
        self.directory = os.fspath(directory) if directory is not None else None
        self.db = db
        if in_transaction is None and db is not None:
            in_transaction = db.in_transaction
        self._in_transaction = in_transaction
        self.consistency = consistency
        self.l1_ttl = l1_ttl if l1_ttl is not None or consistency == "strict" else 1.0
        self.ttls = {**DEFAULT_TTLS, **(families or {})}
        self.lock_timeout = lock_timeout
        self._l2_size_limit = l2_size_limit
        self._name_prefix = f"{namespace}|"
        self._version_prefix = f"embeddb:{FORMAT}:{schema_version}:"
        self._vlen = len(self._version_prefix)
        self._prefixes: dict[str | None, str] = {}
        self._row_caches: dict[type[peewee.Model], RowCache] = {}
        self.l1 = MemoryTier(l1_size, verify=consistency == "strict")
        self.loads = LoadStats()
        self.l2: DiskTier | None = None
        self.l2_errors_at_open = 0
        self._thread_locks = KeyLocks()
        self._file_locks: FileLocks | None = None
        self.generations: gen.LocalGenerations | None = None
        #: called when a miss has to wait for another thread's or process's loader (diagnostics)
        self.on_lock_wait: Callable[[], None] | None = None
        self._watched = watched
        self._open_shared()
        self.remote = self._open_remote(redis_url, redis_prefix)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def for_database(
        cls, db: Database, directory: str | os.PathLike[str] | None = None, **options: Any
    ) -> Cache:
        """The cache of ``db`` in this process, created on first use.

        By default L2 lives beside the database (``app.db`` -> ``app.db-cache/``; PostgreSQL: a
        per-database folder under ``~/.cache/embeddb``); ``:memory:`` databases get no L2.
        Options apply only when the cache is created; later calls return the same object.
        """
        with _registry_lock:
            cache = _registry.get(db)
            if cache is None:
                default = placement.default_directory(db)
                options.setdefault("watched", directory is None and default is not None)
                cache = cls(directory if directory is not None else default, db=db, **options)
                _registry[db] = cache
                _registrations[0] += 1
            return cache

    def _open_shared(self) -> None:
        if self.directory is None:
            self.generations = gen.LocalGenerations()
            return
        owner = self._owner()
        try:
            fresh = self._watched and not os.path.isdir(self.directory)
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if self._watched:
                time.sleep(_youth(self.directory, fresh))
            grace = GRACE if self._watched else 0.0  # only watched ones are looked for
            self.generations = gen.SharedGenerations(self.directory, owner, grace)
            self._file_locks = FileLocks(os.path.join(self.directory, "locks"), owner)
        except OSError:
            # Without shared counters another process's write could go unseen: serve every
            # read from the loader instead (counted under l2 errors).
            self.generations = None
            self.l2_errors_at_open += 1
            return
        self._generation_file = self.generations.opened
        self._open_l2()
        if self.generations.reinitialised and self.l2 is not None:
            self.l2.clear()
        if owner is not None:
            _hand_over(self.directory, owner)

    def _owner(self) -> tuple[int, int] | None:
        """Whom the cache's files must belong to: the database file's owner when this process
        is root and the database is another user's (else None: nothing changes hands)."""
        return placement.owner(self.db)

    def _open_l2(self) -> None:
        try:
            self.l2 = DiskTier(
                os.path.join(self.directory or "", "l2"),
                size_limit=self._l2_size_limit,
                timeout=min(self.lock_timeout, 1.0),
            )
        except Exception:  # noqa: BLE001 - a corrupt or unusable L2 means "no L2"
            self.l2 = None
            self.l2_errors_at_open += 1

    def _open_remote(self, url: str | None, prefix: str | None) -> Any:
        """The Redis tier, when a URL is given or configured (redis-py is imported only then)."""
        if url is None:
            url = resolve_redis_url()
        elif url:
            check_redis_url(url, "redis_url")
        if not url:
            return None
        from .remote import open_remote

        if prefix is None:
            prefix = placement.redis_prefix(self.db, self.directory)
            if prefix is None:
                return None
        return open_remote(url, prefix, self, self.lock_timeout)

    # -- keys -----------------------------------------------------------------------------------

    def _key(self, key: Any, family: str | None) -> str:
        prefix = self._prefixes.get(family)
        if prefix is None:
            prefix = f"{self._version_prefix}{self._name_prefix}{family or DEFAULT_FAMILY}:"
            self._prefixes[family] = prefix
        return prefix + (key if type(key) is str else str(key))

    def _slots(self, full_key: str, tags: Iterable[str]) -> tuple[int, ...]:
        # Slots ignore the schema version: a write by an older app version still invalidates.
        names = [full_key[self._vlen:], *(f"{self._name_prefix}#{t}" for t in tags)]
        return (gen.EPOCH, *(gen.slot_of(n) for n in names))

    def ttl_of(self, family: str | None) -> float:
        """The default TTL of ``family`` in seconds."""
        return self.ttls.get(family or DEFAULT_FAMILY, self.ttls[DEFAULT_FAMILY])

    # -- reads ----------------------------------------------------------------------------------

    def get(self, key: Any, default: Any = None, *, family: str | None = None) -> Any:
        """The cached value of ``key``, or ``default`` (cache-aside read).

        Inside a transaction of the bound database the cache is bypassed and ``default`` returned.
        """
        counters = self._counters()
        if counters is None:
            return default
        full = self._key(key, family)
        value = self.l1.lookup(full, counters, monotonic())
        if value is MISSING:
            value = self._from_l2(full, counters)
            if value is MISSING and self.remote is not None:
                found = self.remote.lookup(full, self._slots(full, ()))  # not kept locally
                value = found if found is MISSING else found[0]
        return default if value is MISSING else value

    def get_or_set(
        self,
        key: Any,
        loader: Callable[[], T],
        *,
        family: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> T:
        """The cached value of ``key``; on a miss, ``loader()``'s result, cached (read-through).

        One loader runs per key at a time across threads and processes; the others wait for its
        result (up to ``lock_timeout``, then load themselves). A value is not kept if ``key`` or
        one of ``tags`` was invalidated while it loaded. Inside a transaction of the bound
        database, ``loader()`` is called and nothing is cached.

        :raises CacheValueError: ``loader`` returned a live model instance.
        :raises Exception: whatever ``loader`` raises (nothing is cached then).
        """
        counters = self._counters()
        if counters is None:
            self.loads.bypassed += 1
            return loader()
        full = self._key(key, family)
        value = self.l1.lookup(full, counters, monotonic())
        if value is not MISSING:
            return value
        value = self._from_l2(full, counters)
        if value is not MISSING:
            return value
        slots = self._slots(full, tags)
        return self._load(full, slots, loader, self._ttl(family, ttl))

    def fresh_in_l1(self, full: str) -> Any:
        """The value under the full key ``full`` if L1 holds it fresh and the cache may serve
        right now, else MISSING, with nothing counted but the hit: the caller then goes through
        :meth:`get_or_set`, which looks again and counts the miss or stale entry.

        The hot path of a cached ``Repository.get``: :meth:`_counters` and
        :meth:`MemoryTier.lookup` inlined, the same checks in the same order (bypass inside a
        transaction of the bound database, generation file still the right one, Redis lease,
        entry deadline, and in strict mode the generation counters: the global write counter
        unchanged since the entry was last verified, else the slow path re-sums its slots).
        """
        in_transaction = self._in_transaction
        if in_transaction is not None and in_transaction():
            return MISSING
        gens = self.generations
        if gens is None:
            return MISSING
        now = monotonic()
        if now >= gens.next_check:
            return MISSING  # due for check(): done by the slow path
        remote = self.remote
        if remote is not None and now >= remote.serving_until:
            return MISSING
        l1 = self.l1
        entry = l1._entries.get(full)
        if entry is None or now >= entry[1] or l1.verify and gens.counters[gen.WRITES] != entry[4]:
            return MISSING
        try:
            l1._entries.move_to_end(full)
        except KeyError:  # dropped by another thread just now; the value is still good
            pass
        l1.stats.hits += 1
        return entry[0]

    def full_key(self, key: str, family: str | None) -> str:
        """``key`` as stored (schema version, namespace and family in front)."""
        return self._key(key, family)

    def _counters(self) -> memoryview | None:
        """The generation counters, or None when the cache must be bypassed right now."""
        in_transaction = self._in_transaction
        if in_transaction is not None and in_transaction():
            return None
        gens = self.generations
        if gens is None:
            return None
        if monotonic() >= gens.next_check and not gens.check():
            return None
        remote = self.remote
        if remote is not None and monotonic() >= remote.serving_until:
            remote.stats.errors += 1  # no lease on Redis: local entries may have missed a bump
            return None
        return gens.counters

    def _from_l2(self, full: str, counters: memoryview) -> Any:
        l2 = self.l2
        if l2 is None:
            return MISSING
        gens = self.generations
        assert gens is not None  # counters were read from it: the cache is open
        if gens.opened != self._generation_file:
            l2 = self._follow_generation_file()
            if l2 is None:
                return MISSING
        value, left, slots, token = l2.lookup(full, counters)
        if value is not MISSING:
            self.l1.store(full, value, self._l1_ttl(left), slots, token)
        return value

    def _follow_generation_file(self) -> DiskTier | None:
        # The cache directory was removed and recreated: the L2 moved with it.
        assert self.generations is not None
        self._generation_file = self.generations.opened
        if self.l2 is not None:
            self.l2.close()
        self._open_l2()
        return self.l2

    def _load(
        self,
        full: str,
        slots: tuple[int, ...],
        loader: Callable[[], T],
        ttl: float,
    ) -> T:
        gens = self.generations
        assert gens is not None  # a load follows a read of its counters: the cache is open
        with self._thread_locks.hold(full, self.lock_timeout, self._waited) as alone:
            if not alone:
                self.l1.stats.errors += 1  # lock timeout: load without protection
            else:
                value = self.l1.lookup(full, gens.counters, monotonic())
                if value is not MISSING:
                    return value
            return self._load_across_processes(full, slots, loader, ttl)

    def _load_across_processes(
        self,
        full: str,
        slots: tuple[int, ...],
        loader: Callable[[], T],
        ttl: float,
    ) -> T:
        if self._file_locks is None or self.l2 is None:
            return self._load_and_store(full, slots, loader, ttl)
        try:
            held = self._file_locks.hold(slots[1], self.lock_timeout, self._waited)
            alone = held.__enter__()
        except OSError:
            self.l2.stats.errors += 1
            return self._load_and_store(full, slots, loader, ttl)
        try:
            if not alone:
                self.l2.stats.errors += 1  # lock timeout: load without protection
            else:
                assert self.generations is not None
                value = self._from_l2(full, self.generations.counters)
                if value is not MISSING:
                    return value
            return self._load_and_store(full, slots, loader, ttl)
        finally:
            held.__exit__(None, None, None)

    def _load_and_store(
        self,
        full: str,
        slots: tuple[int, ...],
        loader: Callable[[], T],
        ttl: float,
    ) -> T:
        gens = self.generations
        assert gens is not None
        token = gens.total(slots)
        if self.remote is not None:
            value, ttl = self.remote.fetch(full, slots, ttl, loader, self.loads, self._waited)
        else:
            self.loads.loads += 1
            value = loader()
        if gens.total(slots) != token:
            self.loads.races += 1  # invalidated while loading: the value may predate the write
            return value
        self._store(full, value, ttl, slots, token)
        return value

    def _waited(self) -> None:
        self.loads.lock_waits += 1
        if self.on_lock_wait is not None:
            self.on_lock_wait()

    # -- writes ---------------------------------------------------------------------------------

    def set(
        self,
        key: Any,
        value: Any,
        *,
        family: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        """Store ``value`` under ``key`` in both tiers (cache-aside write).

        The value is checked against the generations of ``key`` and ``tags`` as they are now:
        compute it from data read *after* the last write you know of, or use
        :meth:`get_or_set`, which guards the load itself. Inside a transaction of the bound
        database the store waits for the commit and is dropped on rollback.

        :raises CacheValueError: ``value`` is a live model instance.
        """
        _check_value(value)
        if self._in_transaction is not None and self._in_transaction():
            if self.db is not None:  # without one, nothing says when it commits: not stored
                self.db.after_commit(
                    lambda: self.set(key, value, family=family, ttl=ttl, tags=tags))
            return
        if self._counters() is None:
            return
        full = self._key(key, family)
        slots = self._slots(full, tags)
        assert self.generations is not None  # _counters() answered: the cache is open
        token = self.generations.total(slots)
        self._store(full, value, self._ttl(family, ttl), slots, token)
        if self.remote is not None:
            self.remote.store(full, value, self._ttl(family, ttl), slots)

    def _store(
        self, full: str, value: Any, ttl: float, slots: tuple[int, ...], token: int
    ) -> None:
        _check_value(value)
        if ttl <= 0:
            return
        if self.l2 is not None:
            self.l2.store(full, value, ttl, slots, token)
        self.l1.store(full, value, self._l1_ttl(ttl), slots, token)

    def delete(self, key: Any, *, family: str | None = None) -> None:
        """Remove ``key`` from both tiers and make every process drop its copy."""
        full = self._key(key, family)
        self.l1.delete(full)
        if self.l2 is not None:
            self.l2.delete(full)
        self._bump(self._slots(full, ())[1:])

    def invalidate(
        self, keys: Iterable[Any] = (), *, tags: Iterable[str] = (), family: str | None = None
    ) -> None:
        """Make ``keys`` and every entry tagged with one of ``tags`` stale, now, in every process.

        O(number of keys and tags): tags are generation counters, nothing is scanned. Call it
        after the write committed (see :meth:`invalidate_after_commit`).
        """
        slots = []
        for key in keys:
            full = self._key(key, family)
            self.l1.delete(full)
            slots.append(gen.slot_of(full[self._vlen:]))
        tags = list(tags)
        slots.extend(gen.slot_of(f"{self._name_prefix}#{t}") for t in tags)
        if tags and self.consistency != "strict":
            self.l1.clear()  # its hits check no counter: a tagged entry could be any of them
        if slots:
            self._bump(slots)

    def invalidate_after_commit(
        self,
        db: Database,
        keys: Iterable[Any] = (),
        *,
        tags: Iterable[str] = (),
        family: str | None = None,
    ) -> None:
        """:meth:`invalidate` once ``db``'s outermost transaction commits (now, outside one).

        Nothing happens if the transaction, or the savepoint this was called in, rolls back.
        """
        keys, tags = list(keys), list(tags)
        db.after_commit(lambda: self.invalidate(keys, tags=tags, family=family))

    def refresh_after_commit(
        self,
        db: Database,
        key: Any,
        loader: Callable[[], Any],
        *,
        family: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> None:
        """Write-through: after ``db`` commits, invalidate ``key`` and cache ``loader()`` afresh.

        The value is re-read after the commit, so a concurrent writer cannot leave an older value
        behind (storing the value the transaction computed could: its commit order is unknown).
        """
        tags = list(tags)

        def refresh() -> None:
            self.invalidate([key], family=family)
            self.get_or_set(key, loader, family=family, ttl=ttl, tags=tags)

        db.after_commit(refresh)

    def clear(self) -> None:
        """Empty both tiers and invalidate every entry in every process (bumps the epoch)."""
        self.l1.clear()
        if self.l2 is not None:
            self.l2.clear()
        self._bump([gen.EPOCH])

    def _bump(self, slots: Iterable[int]) -> None:
        slots = list(slots)
        gens = self.generations
        if gens is not None:
            try:
                gens.bump(slots)
            except (OSError, ValueError):
                # Other processes may not hear of this write; at least this one forgets everything.
                self.l1.clear()
                if self.l2 is not None:
                    self.l2.stats.errors += 1
        if self.remote is not None:
            # After the local bump, so this machine sees the write at once; returns once every
            # machine has applied it (see embeddb.cache.remote).
            self.remote.bump(slots)

    # -- helpers --------------------------------------------------------------------------------

    def memoize(
        self,
        *,
        family: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: cache a function's result per arguments (read-through).

        Arguments must have a stable ``repr`` (numbers, strings, tuples...). The wrapper has
        ``cache_key(*args, **kwargs)`` to invalidate one call's result.
        """
        tags = tuple(tags)

        def decorate(fn: Callable[..., T]) -> Callable[..., T]:
            name = f"{fn.__module__}.{fn.__qualname__}"

            def cache_key(*args: Any, **kwargs: Any) -> str:
                text = repr((args, sorted(kwargs.items())))
                if len(text) > 200:
                    text = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
                return f"{name}:{text}"

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> T:
                return self.get_or_set(
                    cache_key(*args, **kwargs),
                    lambda: fn(*args, **kwargs),
                    family=family,
                    ttl=ttl,
                    tags=tags,
                )

            wrapper.cache_key = cache_key  # type: ignore[attr-defined]
            return wrapper

        return decorate

    def warm(
        self,
        items: Iterable[tuple[Any, Callable[[], Any]]],
        *,
        family: str | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Load ``(key, loader)`` pairs that are not cached yet; return how many were loaded.

        ``progress(n)`` is called after each item, for a progress bar.
        """
        tags = list(tags)
        before = self.loads.loads
        for done, (key, loader) in enumerate(items, 1):
            self.get_or_set(key, loader, family=family, ttl=ttl, tags=tags)
            if progress is not None:
                progress(done)
        return self.loads.loads - before

    def stats(self) -> dict[str, Any]:
        """Counters per tier (hits, misses, sets, evictions, errors, stale, hit_ratio) and loads."""
        l2: dict[str, Any] | None = None
        if self.l2 is not None:
            l2 = {**self.l2.stats.as_dict(), "entries": len(self.l2)}
            l2["errors"] += self.l2_errors_at_open
        elif self.directory is not None:
            l2 = {"errors": self.l2_errors_at_open, "unavailable": True}
        return {
            "directory": self.directory,
            "consistency": self.consistency,
            "shared": bool(self.generations and self.generations.shared),
            "l1": {**self.l1.stats.as_dict(), "entries": len(self.l1)},
            "l2": l2,
            "redis": self.remote.stats.as_dict() if self.remote is not None else None,
            "loads": self.loads.as_dict(),
        }

    def reset_stats(self) -> None:
        self.l1.stats.reset()
        self.loads.reset()
        if self.l2 is not None:
            self.l2.stats.reset()
        if self.remote is not None:
            self.remote.stats.reset()

    def close(self) -> None:
        """Release the L2 and the counter file (the cache then serves every read from loaders)."""
        with _registry_lock:
            if self.db is not None and _registry.get(self.db) is self:
                del _registry[self.db]
        if self.l2 is not None:
            self.l2.close()
            self.l2 = None
        if self.remote is not None:
            self.remote.close()
            self.remote = None
        gens, self.generations = self.generations, None
        self.l1.clear()
        if gens is not None:
            gens.close()

    # -- model rows (see embeddb.cache.rows) ----------------------------------------------------

    def get_row(self, model: type[peewee.Model], pk: Any) -> dict[str, Any]:
        """The row of ``model`` with primary key ``pk`` as a new dict (field name -> value).

        :raises NotFoundError: no such row (``model.DoesNotExist``); misses are not cached.
        """
        return self.rows(model).row(pk)

    def get_instance(self, model: type[peewee.Model], pk: Any) -> peewee.Model:
        """Like :meth:`get_row`, as a fresh ``model`` instance (never shared between callers)."""
        return self.rows(model).instance(pk)

    def rows(self, model: type[peewee.Model]) -> RowCache:
        """The cached rows of ``model`` (loaded from the model's database)."""
        found = self._row_caches.get(model)
        if found is None:
            from .rows import RowCache

            found = self._row_caches[model] = RowCache(self, model)
        return found

    def get_or_set_query(
        self,
        models: Iterable[type[peewee.Model]],
        key: Any,
        loader: Callable[[], T],
        *,
        family: str | None = None,
        ttl: float | None = None,
    ) -> T:
        """A cached query result (a list of dicts) that any write to ``models`` invalidates."""
        from .keys import query_tags

        return self.get_or_set(
            key, loader, family=family, ttl=ttl, tags=query_tags(*models)
        )

    def _ttl(self, family: str | None, ttl: float | None) -> float:
        return ttl if ttl is not None else self.ttl_of(family)

    def _l1_ttl(self, ttl: float) -> float:
        return ttl if self.l1_ttl is None else min(ttl, self.l1_ttl)


def _check_value(value: Any) -> None:
    if isinstance(value, peewee.Model):
        raise CacheValueError(
            f"refusing to cache a live {type(value).__name__} instance: cache its data "
            "(model.__data__, a dict of the row) or use Cache.get_row()"
        )


def _hand_over(directory: str, owner: tuple[int, int]) -> None:
    """Give ``directory`` and everything in it (L2's files too) to ``owner``: a cache set up
    by root beside another user's database must stay usable by that user."""
    for top, dirs, names in os.walk(directory):
        for path in [top, *(os.path.join(top, n) for n in dirs + names)]:
            try:
                st = os.lstat(path)
                if (st.st_uid, st.st_gid) != owner:
                    os.lchown(path, *owner)
            except OSError:
                pass  # removed meanwhile by another process


def _youth(directory: str, fresh: bool) -> float:
    """Seconds until a watched cache directory is :data:`GRACE` old (0: it is already); its
    birth time is in a file the process that made it wrote."""
    path = os.path.join(directory, _BIRTH_FILE)
    if fresh:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(repr(time.time()))
        except FileExistsError:
            pass  # another process made it first
    try:
        with open(path) as fh:
            born = float(fh.read())
    except (OSError, ValueError):
        # not written yet (its maker is between makedirs and the write), or a directory made
        # another way: the directory's own change time is no earlier than its birth
        try:
            born = os.stat(directory).st_ctime
        except OSError:
            return 0.0
    return min(max(0.0, born + GRACE - time.time()), GRACE)


def registered(db: Database) -> Cache | None:
    """The cache already created for ``db`` in this process, if any."""
    return _registry.get(db)


def shared(db: Database) -> Cache | None:
    """The cache other processes on this machine may hold for ``db``: this process's, else
    the one at ``db``'s default directory if that exists. None when nobody caches ``db``.

    Writers that have no cache of their own use it to tell readers what changed.
    """
    cache = registered(db)
    if cache is not None or not hasattr(db, "dialect"):
        return cache
    directory = placement.default_directory(db)
    if directory is None or not os.path.isdir(directory):
        return None
    return Cache.for_database(db)


def for_writer(db: Database) -> Cache | None:
    """The cache a write with no cache of its own must tell what changed: this process's for
    ``db``, else the one at ``db``'s default directory once some process made it.

    The disk is looked at no more than every :data:`RECHECK` seconds (never for a database
    with no default directory, such as ``:memory:``), so writes do no filesystem work; a cache
    made meanwhile is not used before every writer has looked again (:data:`GRACE`).

    With a Redis tier configured (``$EMBEDDB_REDIS_URL``, embeddb.toml ``[cache] redis_url``)
    the first write opens this process's cache at once: readers on other machines may cache
    ``db`` with no trace on this one, and only a bump in Redis reaches them.
    """
    cache = _registry.get(db)
    if cache is not None:
        return cache
    now = monotonic()
    seen = _looked.get(db)
    if seen is not None and now < seen[0]:
        return None
    directory = seen[1] if seen is not None else placement.default_directory(db)
    if directory is not None and (os.path.isdir(directory) or (seen is None and resolve_redis_url())):
        return Cache.for_database(db)
    _looked[db] = (now + RECHECK if directory is not None else float("inf"), directory)
    return None


def writer_quiet(db: Database) -> tuple[float, int]:
    """``(until, count)``: :func:`for_writer` returns None for ``db`` without looking until
    monotonic time ``until`` while :func:`registrations` stays ``count`` (no cache made in
    this process meanwhile), so a writer that asked need not ask again before then."""
    count = _registrations[0]  # read first: a cache registered from here on changes it
    seen = _looked.get(db)
    if seen is None or _registry.get(db) is not None:
        return 0.0, -1
    return seen[0], count


def registrations() -> int:
    """How many caches were registered for a database in this process so far."""
    return _registrations[0]


def forget(db: Database) -> None:
    """Invalidate everything cached for ``db`` on this machine: after its contents were
    replaced wholesale (a restore, a migration), no entry can be trusted."""
    cache = shared(db)
    if cache is not None:
        cache.clear()
