"""Data for the reference schema: a generated marketplace and a small hand-picked set.

Everything is derived from a seed by hashing (table, row number), not drawn from a shared random
stream: the same seed always gives the same rows, any row can be computed on its own (so
foreign keys need no lookup table and memory stays flat at any size), and two seeds give
disjoint data. Tests import these directly; ``seeds/*.py`` pick sizes per environment.
"""

from __future__ import annotations

import hashlib
import math
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..models import BaseModel
from . import models as m

#: Generated timestamps count back from here, so the data is identical on every run.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

CATEGORIES = ("ai", "data", "defi", "identity", "messaging", "storage", "analytics", "oracles")
ADJECTIVES = ("Fast", "Secure", "Global", "Smart", "Open", "Realtime", "Private", "Simple")
NOUNS = ("Weather", "Translation", "Pricing", "Indexer", "Vision", "Search", "Bridge", "Ledger")
WORDS = ("forecast", "language", "token", "chain", "image", "query", "swap", "audit", "stream",
         "model", "wallet", "market", "feed", "graph", "vector", "event")
TOOLS = ("http.get", "llm.complete", "chain.read", "price.quote", "image.tag")
CHAINS = (1, 10, 137, 8453)

Table = tuple[type[BaseModel], Iterable[dict[str, Any]]]
#: Ids remembered per table for foreign keys; bounds memory for any size (later ids are
#: recomputed).
_ID_MEMO = 50_000


@dataclass(frozen=True)
class Sizes:
    """Row counts of a generated marketplace (ratings and profiles follow from these)."""

    users: int = 1000
    services: int = 200
    subscriptions: int = 5000
    payments: int = 20000
    invoices: int = 2000
    executions: int = 5000
    alerts: int = 500

    def scaled(self, factor: int) -> Sizes:
        return Sizes(**{k: v * factor for k, v in self.__dict__.items()})


class _Derive:
    """Deterministic values for (seed, table, row number).

    One 64-byte digest per row gives eight independent 64-bit numbers (``row``); ids are hex
    UUIDs (version 4 layout), looked up per table as ``d.ids[table][i]`` and memoised, since
    foreign keys ask for the same ones often.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ids: dict[str, _Ids] = _IdTables(seed)

    def row(self, label: str, i: int) -> tuple[int, ...]:
        digest = hashlib.blake2b(f"{self.seed}:{label}:{i}".encode(), digest_size=64).digest()
        return struct.unpack(">8Q", digest)

    def hex(self, label: str, i: int, length: int) -> str:
        digest = hashlib.blake2b(f"{self.seed}:{label}:{i}".encode(), digest_size=32).hexdigest()
        return digest[:length]


class _Ids(dict):
    """Row number -> id of one table, computed on first use (a plain dict lookup after)."""

    def __init__(self, seed: int, table: str) -> None:
        super().__init__()
        self.prefix = f"{seed}:{table}:"

    def __missing__(self, i: int) -> str:
        raw = bytearray(hashlib.blake2b(f"{self.prefix}{i}".encode(), digest_size=16).digest())
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        found = raw.hex()
        if len(self) < _ID_MEMO:
            self[i] = found
        return found


class _IdTables(dict):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def __missing__(self, table: str) -> _Ids:
        ids = self[table] = _Ids(self.seed, table)
        return ids


def _pick(value: int, options: tuple[Any, ...]) -> Any:
    return options[value % len(options)]


def _ago(value: int, days: int) -> datetime:
    return EPOCH - timedelta(seconds=value % (days * 86400))


def marketplace(seed: int, sizes: Sizes = Sizes()) -> list[Table]:
    """A realistic marketplace: tables in foreign-key order, rows as generators."""
    d = _Derive(seed)
    return [
        (m.User, _users(d, sizes)),
        (m.UserProfile, _profiles(d, sizes)),
        (m.Service, _services(d, sizes)),
        (m.Subscription, _subscriptions(d, sizes)),
        (m.Transaction, _payments(d, sizes)),
        (m.Rating, _ratings(d, sizes)),
        (m.Invoice, _invoices(d, sizes)),
        (m.ToolExecution, _executions(d, sizes)),
        (m.Alert, _alerts(d, sizes)),
    ]


def _stamps(when: datetime) -> dict[str, datetime]:
    return {"created_at": when, "updated_at": when}


def _users(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    user_ids = d.ids["users"]
    for i in range(sizes.users):
        r = d.row("users", i)
        yield {
            "id": user_ids[i],
            "wallet_address": "0x" + d.hex("wallet", i, 40),
            "chain_id": _pick(r[0], CHAINS),
            "email": f"user{i}.{d.seed}@example.test" if i % 3 else None,
            **_stamps(_ago(r[1], 730)),
        }


def _profiles(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    profile_ids = d.ids["user_profiles"]
    user_ids = d.ids["users"]
    for i in range(sizes.users):
        r, created = d.row("user_profiles", i), _ago(d.row("users", i)[1], 730)
        yield {
            "id": profile_ids[i],
            "user": user_ids[i],
            "display_name": f"User {i}",
            "bio": f"Builds with {_pick(r[0], WORDS)} and {_pick(r[1], WORDS)}.",
            "settings": {"theme": _pick(r[2], ("light", "dark"))},
            **_stamps(created),
        }


def _service_row(d: _Derive, sizes: Sizes, service: int) -> tuple[str, Decimal, tuple[int, ...]]:
    """A service's provider id, price and random numbers (payments need the first two)."""
    r = d.row("services", service)
    providers = max(1, sizes.users // 10)  # a tenth of the users sell services
    return d.ids["users"][r[0] % providers], Decimal(r[1] % 5_000_000).scaleb(-6), r


def _services(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    service_ids = d.ids["services"]
    for i in range(sizes.services):
        provider, price, r = _service_row(d, sizes, i)
        noun = _pick(r[2], NOUNS)
        words = " ".join(WORDS[(r[3] >> (4 * k)) % len(WORDS)] for k in range(6))
        yield {
            "id": service_ids[i],
            "provider": provider,
            "name": f"{_pick(r[4], ADJECTIVES)} {noun} {i}",
            "description": f"{noun} API for {words}.",
            "category": _pick(r[5], CATEGORIES),
            "pricing_model": _pick(r[6], ("free", "per_call", "per_call", "subscription")),
            "price": price,
            "endpoint": f"https://api.example.test/services/{i}",
            "status": _pick(r[7], ("active",) * 8 + ("inactive", "deprecated")),
            "metadata": {"region": _pick(r[7] >> 8, ("eu", "us", "apac"))},
            **_stamps(_ago(r[6] >> 8, 365)),
        }


def _subscription_step(users: int, services: int) -> int:
    """A stride that walks every service once per user before repeating a (user, service)."""
    step = users + 1
    while math.gcd(step, services) != 1:
        step += 1
    return step


_SUBSCRIPTION_STATUSES = ("active",) * 7 + ("paused", "cancelled", "expired")


def _subscriptions(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    service_ids = d.ids["services"]
    subscription_ids = d.ids["subscriptions"]
    user_ids = d.ids["users"]
    limit = min(sizes.subscriptions, sizes.users * sizes.services)
    step = _subscription_step(sizes.users, sizes.services)
    for k in range(limit):
        r = d.row("subscriptions", k)
        user, round_ = k % sizes.users, k // sizes.users
        started = _ago(r[0], 365)
        status = _pick(r[1], _SUBSCRIPTION_STATUSES)
        yield {
            "id": subscription_ids[k],
            "user": user_ids[user],
            "service": service_ids[(user + round_ * step) % sizes.services],
            "tier": _pick(r[2], ("basic", "pro", "enterprise")),
            "status": status,
            "started_at": started,
            "ends_at": started + timedelta(days=30) if status != "active" else None,
            "usage_count": r[3] % 10_000,
            **_stamps(started),
        }


_PAYMENT_STATUSES = ("completed",) * 16 + ("pending",) * 2 + ("failed", "refunded")


def _payment_parts(d: _Derive, sizes: Sizes, i: int) -> tuple[int, int, str, tuple[int, ...]]:
    r = d.row("payments", i)
    return r[0] % sizes.users, r[1] % sizes.services, _pick(r[2], _PAYMENT_STATUSES), r


def _payments(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    service_ids = d.ids["services"]
    payment_ids = d.ids["transactions"]
    user_ids = d.ids["users"]
    sellers = [_service_row(d, sizes, service)[:2] for service in range(sizes.services)]
    for i in range(sizes.payments):
        buyer, service, status, r = _payment_parts(d, sizes, i)
        seller, price = sellers[service]
        created = _ago(r[3], 365)
        yield {
            "id": payment_ids[i],
            "buyer": user_ids[buyer],
            "seller": seller,
            "service": service_ids[service],
            "amount": price * (1 + r[4] % 5),
            "token": "USDC",
            "chain_id": _pick(r[5], CHAINS),
            "status": status,
            "tx_hash": "0x" + d.hex("tx", i, 64),
            "confirmed_at": created + timedelta(seconds=30) if status == "completed" else None,
            "created_at": created,
            "updated_at": created,
        }


def _ratings(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    rating_ids = d.ids["ratings"]
    service_ids = d.ids["services"]
    payment_ids = d.ids["transactions"]
    user_ids = d.ids["users"]
    for i in range(0, sizes.payments, 4):  # a quarter of completed payments get a rating
        buyer, service, status, r = _payment_parts(d, sizes, i)
        if status != "completed":
            continue
        score = 1 + r[6] % 5
        yield {
            "id": rating_ids[i],
            "transaction": payment_ids[i],
            "user": user_ids[buyer],
            "service": service_ids[service],
            "score": score,
            "title": ("Poor", "Meh", "Fine", "Good", "Great")[score - 1],
            "body": f"The {_pick(r[7], WORDS)} part works as described.",
            **_stamps(_ago(r[3], 365) + timedelta(days=1)),
        }


def _invoices(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    invoice_ids = d.ids["invoices"]
    user_ids = d.ids["users"]
    for i in range(sizes.invoices):
        r = d.row("invoices", i)
        due = _ago(r[0], 180)
        status = _pick(r[1], ("paid", "paid", "open", "overdue", "void"))
        amount = Decimal(r[2] % 100_000_000).scaleb(-6)
        yield {
            "id": invoice_ids[i],
            "user": user_ids[r[3] % sizes.users],
            "number": f"INV-{d.seed}-{i:07d}",
            "items": [{"description": "API usage", "amount": str(amount)}],
            "amount": amount,
            "status": status,
            "due_at": due,
            "paid_at": due - timedelta(days=2) if status == "paid" else None,
            **_stamps(due - timedelta(days=30)),
        }


_EXECUTION_STATUSES = ("succeeded",) * 8 + ("failed", "timeout")


def _executions(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    service_ids = d.ids["services"]
    execution_ids = d.ids["tool_executions"]
    user_ids = d.ids["users"]
    for i in range(sizes.executions):
        r = d.row("tool_executions", i)
        status = _pick(r[0], _EXECUTION_STATUSES)
        yield {
            "id": execution_ids[i],
            "user": user_ids[r[1] % sizes.users],
            "service": service_ids[r[2] % sizes.services],
            "tool_id": _pick(r[3], TOOLS),
            "parameters": {"q": _pick(r[4], WORDS)},
            "result": {"ok": True} if status == "succeeded" else None,
            "status": status,
            "duration_ms": r[5] % 5000,
            "error": None if status == "succeeded" else status,
            **_stamps(_ago(r[6], 180)),
        }


def _alerts(d: _Derive, sizes: Sizes) -> Iterator[dict[str, Any]]:
    alert_ids = d.ids["alerts"]
    user_ids = d.ids["users"]
    for i in range(sizes.alerts):
        r = d.row("alerts", i)
        yield {
            "id": alert_ids[i],
            "user": user_ids[r[0] % sizes.users],
            "type": _pick(r[1], ("price_above", "price_below", "usage", "error_rate")),
            "config": {"threshold": r[2] % 1000},
            "status": _pick(r[3], ("active", "active", "paused", "triggered")),
            "last_triggered_at": None,
            **_stamps(_ago(r[4], 90)),
        }


# -- the hand-picked "test" set: rows tests can name -----------------------------------------

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
CAROL = uuid.UUID("00000000-0000-4000-8000-0000000ca201")
WEATHER_API = uuid.UUID("00000000-0000-4000-8000-00000000e1a1")
TRANSLATOR = uuid.UUID("00000000-0000-4000-8000-00000000e1a2")
ALICE_WEATHER = uuid.UUID("00000000-0000-4000-8000-00000000501b")
PAYMENT_1 = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
PAYMENT_2 = uuid.UUID("00000000-0000-4000-8000-0000000000a2")
RATING_1 = uuid.UUID("00000000-0000-4000-8000-0000000000b1")


def handpicked(seed: int = 0) -> list[Table]:
    """A minimal set with fixed ids: alice and bob buy from carol's two services."""
    stamps = _stamps(EPOCH)
    return [
        (m.User, [
            {"id": ALICE, "wallet_address": "0xa11ce", "chain_id": 1,
             "email": "alice@example.test", **stamps},
            {"id": BOB, "wallet_address": "0xb0b", "chain_id": 1, "email": None, **stamps},
            {"id": CAROL, "wallet_address": "0xca201", "chain_id": 8453,
             "email": "carol@example.test", **stamps},
        ]),
        (m.Service, [
            {"id": WEATHER_API, "provider": CAROL, "name": "Weather API", "category": "data",
             "description": "Forecasts for any city", "price": Decimal("0.25"),
             "endpoint": "https://weather.example.test", **stamps},
            {"id": TRANSLATOR, "provider": CAROL, "name": "Translator", "category": "ai",
             "description": "Translate text between languages", "price": Decimal("1.5"),
             "endpoint": "https://translate.example.test", **stamps},
        ]),
        (m.Subscription, [
            {"id": ALICE_WEATHER, "user": ALICE, "service": WEATHER_API, "tier": "pro",
             "started_at": EPOCH, **stamps},
        ]),
        (m.Transaction, [
            {"id": PAYMENT_1, "buyer": ALICE, "seller": CAROL, "service": WEATHER_API,
             "amount": Decimal("0.25"), "token": "USDC", "chain_id": 1, "status": "completed",
             "tx_hash": "0x" + "a1" * 32, "confirmed_at": EPOCH, **stamps},
            {"id": PAYMENT_2, "buyer": BOB, "seller": CAROL, "service": TRANSLATOR,
             "amount": Decimal("1.5"), "token": "USDC", "chain_id": 1, "status": "pending",
             "tx_hash": "0x" + "a2" * 32, **stamps},
        ]),
        (m.Rating, [
            {"id": RATING_1, "transaction": PAYMENT_1, "user": ALICE, "service": WEATHER_API,
             "score": 5, "title": "Great", "body": "Accurate forecasts.", **stamps},
        ]),
    ]
