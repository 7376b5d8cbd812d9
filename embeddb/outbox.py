"""The transactional outbox: an event is written in the transaction of the change it describes,
so it exists if and only if that change committed, and a processor delivers it afterwards.

    with db.atomic():
        services.update(service)
        outbox.publish(db, "service.updated", {"id": str(service.id)}, key=str(service.id))

    outbox.Outbox(db).run(send_to_broker)          # or: embeddb outbox run --handler app:send

Delivery is at least once, in order per key (events without a key in no particular order):
an event whose key has an earlier event still pending waits for it. A processor claims a batch
with a lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: under ``BEGIN IMMEDIATE``), so
several processors never deliver the same event twice in the normal path; one killed between
delivering and marking leaves its events to be redelivered once the lease expires. The handler
gets ``event.idempotency_key`` to recognise such repeats. A failed delivery is retried after an
exponential backoff with jitter; after ``max_attempts`` the event is dead (a dead letter with
its last error) until ``retry``.

The table ``embeddb_outbox`` comes from a migration: ``embeddb outbox init`` writes it.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError, DatabaseError, EmbeddbError
from .protocols import Database

TABLE = "embeddb_outbox"
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
MAX_BATCH = 10_000
_COLUMNS = "id, uid, topic, key, {payload}, attempts, created_at"


class OutboxError(EmbeddbError):
    """The outbox cannot do what was asked (no table, a bad handler, an unknown event)."""


@dataclass(frozen=True)
class Event:
    """One event as the handler receives it."""

    id: int
    idempotency_key: str  # the same on every delivery of this event
    topic: str
    key: str | None
    payload: Any
    attempts: int  # earlier failed deliveries
    created_at: float  # Unix time


@dataclass
class RunStats:
    """What one or more batches did."""

    delivered: int = 0
    failed: int = 0  # will be retried
    dead: int = 0  # gave up: max_attempts reached
    lost_lease: int = 0  # delivered, but another processor had taken it over meanwhile


Handler = Callable[[Event], Any]


def ddl(db: Database) -> list[str]:
    """The statements that create the outbox table on ``db``'s backend (for a migration)."""
    return list(db.dialect.outbox_ddl)


def publish(db: Database, topic: str, payload: Any, key: str | None = None) -> int:
    """Write an event in the caller's transaction (autocommit outside one); its id.

    :raises ConfigurationError: an empty topic, or a payload JSON cannot hold.
    :raises OutboxError: the outbox table does not exist yet.
    """
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigurationError("an outbox event needs a topic, e.g. 'service.updated'")
    if key is not None and not isinstance(key, str):
        raise ConfigurationError(f"outbox key must be text or None, not {type(key).__name__}")
    try:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"outbox payload for {topic!r} is not JSON: {exc}") from exc
    now = time.time()
    with _table_needed(db), db.atomic():
        if key is not None:
            db.dialect.outbox_key_lock(db, key)
        cursor = db.execute_sql(
            f"INSERT INTO {TABLE} (uid, topic, key, payload, status, attempts, available_at, "
            "created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?) RETURNING id".replace(
                "?", db.param),
            (str(uuid.uuid4()), topic, key, body, now, now),
        )
        return cursor.fetchone()[0]


class Outbox:
    """Delivers pending events to a handler.

    ``lease``: seconds a claimed batch is this processor's (a processor that dies gives its
    events back after this). ``backoff`` / ``max_backoff``: the first retry delay and its cap;
    each failure doubles it, with jitter. ``max_attempts``: deliveries before an event is dead.
    """

    def __init__(
        self,
        db: Database,
        *,
        lease: float = 30.0,
        max_attempts: int = 10,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        for name, value, low, high in (
            ("lease", lease, 0.1, 86400), ("backoff", backoff, 0, 86400),
            ("max_backoff", max_backoff, 0, 86400 * 7), ("max_attempts", max_attempts, 1, 1000),
        ):
            if not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigurationError(f"outbox {name}={value!r}: must be {low} to {high}")
        self.db = db
        self.lease = float(lease)
        self.max_attempts = int(max_attempts)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run(
        self,
        handler: Handler,
        *,
        batch: int = 100,
        topics: Iterable[str] | None = None,
        once: bool = False,
        idle: float = 0.5,
        stop: threading.Event | None = None,
    ) -> RunStats:
        """Deliver batches until ``stop`` is set (or, with ``once``, until nothing is due)."""
        stats = RunStats()
        stop = stop or threading.Event()
        while not stop.is_set():
            done = self.run_batch(handler, batch=batch, topics=topics)
            for name in ("delivered", "failed", "dead", "lost_lease"):
                setattr(stats, name, getattr(stats, name) + getattr(done, name))
            claimed = done.delivered + done.failed + done.dead + done.lost_lease
            if claimed == 0:
                if once:
                    break
                stop.wait(idle)
        return stats

    def run_batch(
        self, handler: Handler, *, batch: int = 100, topics: Iterable[str] | None = None
    ) -> RunStats:
        """Claim up to ``batch`` due events, deliver them in order and mark each."""
        if not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
            raise ConfigurationError(f"outbox batch={batch!r}: must be 1 to {MAX_BATCH}")
        stats = RunStats()
        for event in self._claim(batch, list(topics) if topics else None):
            try:
                handler(event)
            except Exception as exc:  # noqa: BLE001 - any handler failure is a failed delivery
                self._failed(event, exc, stats)
            else:
                self._delivered(event, stats)
        return stats

    def _claim(self, batch: int, topics: list[str] | None) -> list[Event]:
        db = self.db
        now = time.time()
        mark = db.param
        where = (
            f"e.status = 'pending' AND e.available_at <= {mark} "
            f"AND (e.lease_until IS NULL OR e.lease_until < {mark}) "
            f"AND (e.key IS NULL OR NOT EXISTS (SELECT 1 FROM {TABLE} AS p WHERE p.key = e.key "
            "AND p.id < e.id AND p.status = 'pending'))"
        )
        params: list[Any] = [now, now]
        if topics:
            where += f" AND e.topic IN ({', '.join(mark for _ in topics)})"
            params += topics
        columns = _COLUMNS.format(payload=db.dialect.outbox_payload)
        with _table_needed(db), db.atomic():
            rows = db.execute_sql(
                f"SELECT {columns} FROM {TABLE} AS e WHERE {where} ORDER BY e.id "
                f"LIMIT {batch}{db.dialect.skip_locked}", params,
            ).fetchall()
            if rows:
                ids = [row[0] for row in rows]
                db.execute_sql(
                    f"UPDATE {TABLE} SET lease_owner = {mark}, lease_until = {mark} "
                    f"WHERE id IN ({', '.join(mark for _ in ids)})",
                    [self.owner, now + self.lease, *ids],
                )
        return [
            Event(id_, f"embeddb-outbox:{uid}", topic, key, json.loads(payload), attempts, created)
            for id_, uid, topic, key, payload, attempts, created in rows
        ]

    def _delivered(self, event: Event, stats: RunStats) -> None:
        mark = self.db.param
        cursor = self.db.execute_sql(
            f"UPDATE {TABLE} SET status = 'delivered', delivered_at = {mark}, "
            f"attempts = attempts + 1, lease_owner = NULL, lease_until = NULL "
            f"WHERE id = {mark} AND lease_owner = {mark} AND status = 'pending'",
            (time.time(), event.id, self.owner),
        )
        if cursor.rowcount == 1:
            stats.delivered += 1
        else:
            stats.lost_lease += 1

    def _failed(self, event: Event, exc: Exception, stats: RunStats) -> None:
        attempts = event.attempts + 1
        dead = attempts >= self.max_attempts
        delay = min(self.max_backoff, self.backoff * 2 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: processors that failed together spread out
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000]
        mark = self.db.param
        self.db.execute_sql(
            f"UPDATE {TABLE} SET status = {mark}, attempts = {mark}, available_at = {mark}, "
            f"last_error = {mark}, lease_owner = NULL, lease_until = NULL "
            f"WHERE id = {mark} AND lease_owner = {mark} AND status = 'pending'",
            (DEAD if dead else PENDING, attempts, time.time() + delay, error, event.id,
             self.owner),
        )
        if dead:
            stats.dead += 1
        else:
            stats.failed += 1


# -- operating it -----------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What ``embeddb outbox status`` shows."""

    counts: dict[str, int] = field(default_factory=dict)  # per status
    topics: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> status -> n
    oldest_pending_age_s: float | None = None
    dead: list[dict[str, Any]] = field(default_factory=list)  # the newest dead letters


def status(db: Database, dead_limit: int = 20) -> Status:
    """Counts per status and topic, the age of the oldest pending event, the dead letters."""
    with _table_needed(db):
        rows = db.execute_sql(
            f"SELECT topic, status, count(*) FROM {TABLE} GROUP BY topic, status "
            "ORDER BY topic, status"
        ).fetchall()
        oldest = db.execute_sql(
            f"SELECT min(created_at) FROM {TABLE} WHERE status = 'pending'"
        ).fetchone()[0]
        dead = db.execute_sql(
            f"SELECT id, topic, key, attempts, last_error, created_at FROM {TABLE} "
            f"WHERE status = 'dead' ORDER BY id DESC LIMIT {int(dead_limit)}"
        ).fetchall()
    counts = {PENDING: 0, DELIVERED: 0, DEAD: 0}
    topics: dict[str, dict[str, int]] = {}
    for topic, state, n in rows:
        counts[state] = counts.get(state, 0) + n
        topics.setdefault(topic, {})[state] = n
    return Status(
        counts, topics, None if oldest is None else max(0.0, time.time() - oldest),
        [dict(zip(("id", "topic", "key", "attempts", "last_error", "created_at"), row))
         for row in dead],
    )


def retry(db: Database, event_id: int) -> None:
    """Make a dead event pending again, with its attempts reset.

    :raises OutboxError: there is no event with that id, or it is not dead.
    """
    mark = db.param
    with _table_needed(db), db.atomic():
        row = db.execute_sql(f"SELECT status FROM {TABLE} WHERE id = {mark}",
                             (event_id,)).fetchone()
        if row is None:
            raise OutboxError(f"no outbox event with id {event_id}")
        if row[0] != DEAD:
            raise OutboxError(f"outbox event {event_id} is {row[0]}, not dead: nothing to retry")
        db.execute_sql(
            f"UPDATE {TABLE} SET status = 'pending', attempts = 0, available_at = {mark}, "
            f"lease_owner = NULL, lease_until = NULL WHERE id = {mark}",
            (time.time(), event_id),
        )


def purge(db: Database, delivered_older_than: float, *, dry_run: bool = False,
          batch: int = 1000) -> int:
    """Delete delivered events older than ``delivered_older_than`` seconds, in short
    transactions of ``batch`` rows; how many (would be) deleted."""
    if not isinstance(delivered_older_than, (int, float)) or not (
            0 <= delivered_older_than <= 100 * 365 * 86400):
        raise ConfigurationError(
            f"delivered_older_than={delivered_older_than!r}: must be 0 s to 100 years")
    cutoff = time.time() - delivered_older_than
    mark = db.param
    condition = f"status = 'delivered' AND delivered_at < {mark}"
    with _table_needed(db):
        if dry_run:
            return db.execute_sql(f"SELECT count(*) FROM {TABLE} WHERE {condition}",
                                  (cutoff,)).fetchone()[0]
        total = 0
        while True:
            with db.atomic():
                cursor = db.execute_sql(
                    f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE {condition} "
                    f"ORDER BY id LIMIT {int(batch)})", (cutoff,),
                )
                deleted = cursor.rowcount
            total += deleted
            if deleted < batch:
                return total


def write_migration(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the next-numbered migration that creates the outbox table, for both backends,
    into the migrations folder (created if missing, as by ``embeddb migrate new``).

    :raises OutboxError: the folder already has an outbox migration.
    :raises MigrationError: the folder cannot be written.
    """
    from .dialect import POSTGRES, SQLITE
    from .migrate.files import DEFAULT_DIRECTORY, ENV_DIRECTORY, write_generated

    folder = Path(directory or os.environ.get(ENV_DIRECTORY) or DEFAULT_DIRECTORY)
    existing = sorted(folder.glob("*_embeddb_outbox*.sql")) if folder.is_dir() else []
    if existing:
        raise OutboxError(f"{existing[0]} already creates the outbox table")
    header = "-- The transactional outbox (embeddb.outbox).\n"
    return write_generated(directory, "embeddb_outbox", {
        "sqlite.up.sql": header + ";\n".join(SQLITE.outbox_ddl) + ";\n",
        "postgres.up.sql": header + ";\n".join(POSTGRES.outbox_ddl) + ";\n",
        "down.sql": f"DROP TABLE {TABLE};\n",
    })


def load_handler(spec: str) -> Handler:
    """``package.module:function`` -> the function.

    :raises OutboxError: the spec is malformed, the module does not import, or the attribute
        is missing or not callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise OutboxError(f"handler {spec!r}: write it as module:function, e.g. app.events:send")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the import raised, name it
        raise OutboxError(f"handler {spec!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}") from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        raise OutboxError(f"handler {spec!r}: {module_name} has no function {attribute}")
    return function


class _table_needed:
    """Turn "no such table" into an error that says how to create it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, DatabaseError) and TABLE in str(exc) and (
                "no such table" in str(exc) or "does not exist" in str(exc)):
            raise OutboxError(
                f"{self.db.url.redacted()} has no {TABLE} table: run `embeddb outbox init` "
                "(writes its migration) and `embeddb migrate up`"
            ) from exc


# -- publishers -------------------------------------------------------------------------


def redis_stream(url: str, stream: str = "embeddb:{topic}", maxlen: int | None = None,
                 timeout: float = 5.0) -> Handler:
    """A handler that appends each event to a Redis stream (``XADD``), named after its topic.

    The entry carries the idempotency key, topic, key and JSON payload, so a consumer can drop
    the repeats at-least-once delivery allows. Needs the optional ``redis`` extra.
    """
    try:
        import redis
    except ImportError as exc:
        raise OutboxError("the Redis publisher needs redis-py: pip install 'embeddb[redis]'") \
            from exc
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def send(event: Event) -> None:
        client.xadd(
            stream.format(topic=event.topic),
            {"idempotency_key": event.idempotency_key, "topic": event.topic,
             "key": event.key or "", "payload": json.dumps(event.payload)},
            maxlen=maxlen, approximate=maxlen is not None,
        )

    return send
