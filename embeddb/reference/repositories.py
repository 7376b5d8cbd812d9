"""Domain repositories of the reference application: the queries its API would run.

Every method issues a fixed number of queries however many rows are involved (no N+1), and
each query is served by an index created in ``migrations/``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import peewee

from ..cache import Cache
from ..errors import InvalidQueryError, NotFoundError
from ..models import utcnow
from ..repository import Repository

if TYPE_CHECKING:  # peewee queries need a peewee database: the engines, not the protocol
    from ..database import Database
from .models import (
    MODELS,
    ApiKey,
    Rating,
    Service,
    Session,
    Subscription,
    ToolExecution,
    Transaction,
    User,
)

_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
Progress = Callable[[str, int], None]
#: How many words of a search query are used; more only slows the query down.
MAX_SEARCH_WORDS = 8



def hash_secret(secret: str) -> str:
    """SHA-256 of a random token or key: enough for high-entropy secrets, and a lookup key."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class UserOverview:
    """A user with subscriptions (services loaded) and recent payments: three queries."""

    user: User
    subscriptions: list[Subscription] = field(default_factory=list)
    recent_payments: list[Transaction] = field(default_factory=list)


class _Reference(Repository):
    """Base of the domain repositories: their queries join other reference models."""

    related = MODELS


class UserRepository(_Reference):
    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(User, db, cache)

    def by_address(self, address: str) -> User:
        """:raises NotFoundError: no user with that wallet address (any letter case: the
        field lower-cases it)."""
        if not isinstance(address, str) or not address.strip():
            raise InvalidQueryError("a wallet address is required")
        user = self.first(wallet_address=address)
        if user is None:
            raise NotFoundError(f"no user with wallet address {address}")
        return user

    def overview(self, user_id: Any, recent: int = 10) -> UserOverview:
        """The user, their subscriptions with services, and their latest payments."""
        user = self.get(user_id)
        with self.bound():
            return self._overview(user, recent)

    def _overview(self, user: User, recent: int) -> UserOverview:
        subscriptions = list(
            Subscription.select(Subscription, Service)
            .join(Service)
            .where(Subscription.user == user.id, Service.deleted_at.is_null())
            .order_by(Subscription.started_at.desc(), Subscription.id)
        )
        payments = list(
            Transaction.select()
            .where(Transaction.buyer == user.id)
            .order_by(Transaction.created_at.desc(), Transaction.id.desc())
            .limit(recent)
        )
        return UserOverview(user, subscriptions, payments)

    def stats(self, user_id: Any) -> dict[str, Any]:
        """Counts and totals for one user's activity, in one query."""
        self.get(user_id)
        completed = Transaction.status == "completed"
        spent = peewee.fn.COALESCE(
            peewee.fn.SUM(peewee.Case(None, [(completed, Transaction.amount)], 0)), 0
        )
        payments = Transaction.select(peewee.fn.COUNT(Transaction.id)).where(
            Transaction.buyer == user_id)
        total = Transaction.select(spent).where(Transaction.buyer == user_id)
        active = Subscription.select(peewee.fn.COUNT(Subscription.id)).where(
            (Subscription.user == user_id) & (Subscription.status == "active"))
        ratings = Rating.select(peewee.fn.COUNT(Rating.id)).where(Rating.user == user_id)
        row = User.select_with_deleted(
            payments.alias("payments"), total.alias("spent"), active.alias("active"),
            ratings.alias("ratings"),
        ).where(User.id == user_id).tuples().execute(self.db)[0]
        return {
            "payments": row[0],
            "total_spent": Transaction.amount.python_value(row[1] or 0),
            "active_subscriptions": row[2],
            "ratings_given": row[3],
        }


class ServiceRepository(_Reference):
    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(Service, db, cache)

    def by_provider(self, provider_id: Any) -> list[Service]:
        return self.find(provider=provider_id, order_by="name")

    def by_category(self, category: str, status: str = "active", limit: int = 50) -> list[Service]:
        if status not in Service.STATUSES:
            raise InvalidQueryError(f"unknown status {status!r}; known: {', '.join(Service.STATUSES)}")
        return self.find(category=category, status=status, order_by="name", limit=limit)

    def popular(self, limit: int = 10) -> list[tuple[Service, int]]:
        """Active services with the most active subscribers, most first."""
        # Counted per service id first, then joined: grouping the joined wide rows took a
        # temporary B-tree, and count(id) read every row where count(*) reads only the
        # (service_id, status) index (staging seed on SQLite: 44 ms -> 9 ms).
        counts = (
            Subscription.select(Subscription.service, peewee.fn.COUNT(peewee.SQL("*")).alias("n"))
            .where(Subscription.status == "active")
            .group_by(Subscription.service)
            .alias("counts")
        )
        query = (
            Service.select(*self._fields, counts.c.n.alias("subscribers"))
            .join(counts, on=(counts.c.service_id == Service.id))
            .where(Service.status == "active")
            .order_by(counts.c.n.desc(), Service.id)
            .limit(limit)
        )
        rows = self.db.execute(query).fetchall()
        return [(self._hydrate(row[:-1]), row[-1]) for row in rows]

    def search(self, text: str, limit: int = 20) -> list[Service]:
        """Active services whose name or description match ``text``, best match first.

        ``text`` is user input: only its words are used (quotes, operators and punctuation are
        dropped), each matches the start of a word, and an empty query finds nothing.
        """
        words = [w.lower() for w in _WORDS.findall(text or "")][:MAX_SEARCH_WORDS]
        if not words:
            return []
        columns = ", ".join(f't."{f.column_name}"' for f in self._fields)
        sql, params = self.db.dialect.search_query(
            "services", "service_id", columns,
            "t.deleted_at IS NULL AND t.status = 'active'",
            self.db.dialect.search_terms(words), int(limit),
        )
        return [self._hydrate(row) for row in self.db.execute_sql(sql, params).fetchall()]

    def analytics(self, service_id: Any) -> dict[str, Any]:
        """Revenue (completed payments), average rating, ratings and active subscribers."""
        self.get(service_id)
        revenue = Transaction.select(peewee.fn.COALESCE(peewee.fn.SUM(Transaction.amount), 0)).where(
            (Transaction.service == service_id) & (Transaction.status == "completed"))
        average = Rating.select(peewee.fn.AVG(Rating.score)).where(Rating.service == service_id)
        ratings = Rating.select(peewee.fn.COUNT(Rating.id)).where(Rating.service == service_id)
        subscribers = Subscription.select(peewee.fn.COUNT(Subscription.id)).where(
            (Subscription.service == service_id) & (Subscription.status == "active"))
        row = Service.select_with_deleted(
            revenue.alias("revenue"), average.alias("average"), ratings.alias("ratings"),
            subscribers.alias("subscribers"),
        ).where(Service.id == service_id).tuples().execute(self.db)[0]
        return {
            "revenue": Transaction.amount.python_value(int(row[0] or 0)),
            "average_rating": round(float(row[1]), 2) if row[1] is not None else None,
            "ratings": row[2],
            "subscribers": row[3],
        }


class SessionRepository(_Reference):
    """Login sessions; the token is shown once and only its hash is stored."""

    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(Session, db, cache)

    def open(self, user_id: Any, ttl: timedelta = timedelta(hours=1),
             user_agent: str | None = None) -> tuple[str, Session]:
        """A new session for ``user_id``; returns (token for the client, stored session)."""
        token = secrets.token_urlsafe(32)
        session = self.create(user=user_id, token_hash=hash_secret(token),
                              expires_at=utcnow() + ttl, user_agent=user_agent)
        return token, session

    def verify(self, token: str) -> Session:
        """The live session for ``token``.

        :raises NotFoundError: unknown or expired token.
        """
        session = self.first(token_hash=hash_secret(token or ""), expires_at__gt=utcnow())
        if session is None:
            raise NotFoundError("unknown or expired session token")
        return session

    def close(self, token: str) -> bool:
        return self.purge(token_hash=hash_secret(token or "")) > 0

    def cleanup_expired(self, *, now: datetime | None = None, batch_size: int = 1000,
                        dry_run: bool = False, progress: Progress | None = None) -> int:
        """Delete expired sessions in short batches; the number deleted (or due)."""
        return self.purge(expires_at__lte=now or utcnow(), batch_size=batch_size,
                          dry_run=dry_run, progress=progress)


class ApiKeyRepository(_Reference):
    """API keys: ``edb_<prefix>_<secret>``; stored as a hash plus the visible prefix."""

    PREFIX = "edb"

    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(ApiKey, db, cache)

    def issue(self, user_id: Any, name: str, scopes: Iterable[str] = (), rate_limit: int = 60,
              ttl: timedelta | None = None) -> tuple[str, ApiKey]:
        """A new key; returns (the key, shown once, and the stored record)."""
        visible = secrets.token_hex(4)
        key = f"{self.PREFIX}_{visible}_{secrets.token_urlsafe(32)}"
        record = self.create(
            user=user_id, name=name, key_hash=hash_secret(key), prefix=f"{self.PREFIX}_{visible}",
            scopes=sorted(set(scopes)), rate_limit=rate_limit,
            expires_at=utcnow() + ttl if ttl else None,
        )
        return key, record

    def verify(self, key: str) -> ApiKey:
        """The active record for a presented key (a lookup by hash).

        :raises NotFoundError: unknown, revoked or expired key.
        """
        record = self.first(key_hash=hash_secret(key or ""))
        now = utcnow()
        if (record is None or record.revoked_at is not None
                or (record.expires_at is not None and record.expires_at <= now)):
            raise NotFoundError("unknown, revoked or expired API key")
        return record

    def revoke(self, key_id: Any) -> ApiKey:
        return self.update(key_id, revoked_at=utcnow())

    def cleanup(self, grace: timedelta = timedelta(days=30), *, now: datetime | None = None,
                batch_size: int = 1000, dry_run: bool = False,
                progress: Progress | None = None) -> int:
        """Delete keys revoked or expired more than ``grace`` ago."""
        cutoff = (now or utcnow()) - grace
        revoked = self.purge(revoked_at__lt=cutoff, batch_size=batch_size, dry_run=dry_run,
                             progress=progress)
        expired = self.purge(
            expires_at__lt=cutoff, revoked_at__is_null=True, batch_size=batch_size,
            dry_run=dry_run, progress=progress and (lambda t, n: progress(t, revoked + n)))
        return revoked + expired


class ToolExecutionRepository(_Reference):
    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(ToolExecution, db, cache)

    def cleanup_older_than(self, age: timedelta = timedelta(days=90), *,
                           now: datetime | None = None, batch_size: int = 1000,
                           dry_run: bool = False, progress: Progress | None = None) -> int:
        """Delete executions created more than ``age`` ago, in short batches."""
        return self.purge(created_at__lt=(now or utcnow()) - age, batch_size=batch_size,
                          dry_run=dry_run, progress=progress)


class TransactionRepository(_Reference):
    def __init__(self, db: Database | None = None, cache: Cache | None = None) -> None:
        super().__init__(Transaction, db, cache)

    def by_hash(self, tx_hash: str) -> Transaction:
        found = self.first(tx_hash=tx_hash)
        if found is None:
            raise NotFoundError(f"no transaction {tx_hash}")
        return found

    def revenue(self, service_id: Any) -> Decimal:
        return self.aggregate("sum", "amount", service=service_id, status="completed") or Decimal(0)
