"""Peewee models of the reference application; the tables come from ``migrations/``.

Bind them to a database with :func:`bind` (or ``db.bind(MODELS)``). ``embeddb schema check``
compares these models with a migrated database.
"""

from __future__ import annotations

from typing import Any

import peewee

from ..models import (
    BaseModel,
    JSONField,
    MoneyField,
    SoftDeleteModel,
    UTCDateTimeField,
    VersionedModel,
)
from ..protocols import Database

#: Token amounts: 6 decimal places (USDC-style micro units) fit 9.2 trillion in a BIGINT.
AMOUNT_PLACES = 6


class AddressField(peewee.TextField):
    """A wallet address, stored lower-case (EIP-55 only adds a checksum through letter case),
    so every write path and lookup agrees on one spelling."""

    def db_value(self, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class User(SoftDeleteModel):
    wallet_address = AddressField(unique=True)
    chain_id = peewee.IntegerField()
    email = peewee.TextField(null=True, unique=True)

    class Meta:
        table_name = "users"


class UserProfile(BaseModel):
    user = peewee.ForeignKeyField(User, backref="profile_set", unique=True, on_delete="CASCADE")
    display_name = peewee.TextField(default="")
    bio = peewee.TextField(default="")
    avatar_url = peewee.TextField(null=True)
    settings = JSONField(default=dict)

    class Meta:
        table_name = "user_profiles"


class Session(BaseModel):
    user = peewee.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    token_hash = peewee.TextField(unique=True)
    expires_at = UTCDateTimeField(index=True)
    last_seen_at = UTCDateTimeField(null=True)
    user_agent = peewee.TextField(null=True)

    class Meta:
        table_name = "sessions"


class ApiKey(BaseModel):
    user = peewee.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE")
    name = peewee.TextField()
    key_hash = peewee.TextField(unique=True)
    prefix = peewee.TextField()
    scopes = JSONField(default=list)
    rate_limit = peewee.IntegerField(default=60)
    last_used_at = UTCDateTimeField(null=True)
    expires_at = UTCDateTimeField(null=True, index=True)
    revoked_at = UTCDateTimeField(null=True, index=True)

    class Meta:
        table_name = "api_keys"


class Service(SoftDeleteModel, VersionedModel):
    STATUSES = ("active", "inactive", "deprecated")
    #: maintained by PostgreSQL (generated tsvector), never written through the model
    database_only_columns = ("search_vector",)

    provider = peewee.ForeignKeyField(User, backref="services", on_delete="RESTRICT")
    name = peewee.TextField()
    description = peewee.TextField(default="")
    category = peewee.TextField()
    pricing_model = peewee.TextField(default="per_call")
    price = MoneyField(decimal_places=AMOUNT_PLACES, default=0)
    token = peewee.TextField(default="USDC")
    endpoint = peewee.TextField()
    status = peewee.TextField(default="active", index=True)
    service_version = peewee.TextField(default="1.0.0")
    metadata = JSONField(default=dict)

    class Meta:
        table_name = "services"
        indexes = ((("category", "status"), False), (("provider", "name"), True))


class Subscription(BaseModel):
    user = peewee.ForeignKeyField(User, backref="subscriptions", on_delete="CASCADE")
    service = peewee.ForeignKeyField(Service, backref="subscriptions", on_delete="CASCADE")
    tier = peewee.TextField(default="basic")
    status = peewee.TextField(default="active")
    started_at = UTCDateTimeField()
    ends_at = UTCDateTimeField(null=True)
    usage_count = peewee.IntegerField(default=0)

    class Meta:
        table_name = "subscriptions"
        indexes = ((("user", "service"), True), (("service", "status"), False))


class Transaction(BaseModel):
    STATUSES = ("pending", "completed", "failed", "refunded")

    buyer = peewee.ForeignKeyField(User, backref="purchases", on_delete="RESTRICT")
    seller = peewee.ForeignKeyField(
        User, backref="sales", null=True, on_delete="RESTRICT", index=True
    )
    service = peewee.ForeignKeyField(
        Service, backref="transactions", null=True, on_delete="SET NULL", index=False
    )
    amount = MoneyField(decimal_places=AMOUNT_PLACES)
    token = peewee.TextField()
    chain_id = peewee.IntegerField()
    status = peewee.TextField(default="pending")
    tx_hash = peewee.TextField(unique=True)
    confirmed_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "transactions"
        indexes = ((("buyer", "created_at"), False), (("service", "status"), False))


class Rating(BaseModel):
    transaction = peewee.ForeignKeyField(
        Transaction, backref="rating_set", unique=True, on_delete="CASCADE"
    )
    user = peewee.ForeignKeyField(User, backref="ratings", on_delete="CASCADE")
    service = peewee.ForeignKeyField(Service, backref="ratings", on_delete="CASCADE")
    score = peewee.IntegerField()
    title = peewee.TextField(default="")
    body = peewee.TextField(default="")

    class Meta:
        table_name = "ratings"


class Invoice(BaseModel):
    user = peewee.ForeignKeyField(User, backref="invoices", on_delete="RESTRICT")
    number = peewee.TextField(unique=True)
    items = JSONField(default=list)
    amount = MoneyField(decimal_places=AMOUNT_PLACES)
    status = peewee.TextField(default="open")
    due_at = UTCDateTimeField()
    paid_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "invoices"
        indexes = ((("status", "due_at"), False),)


class ToolExecution(BaseModel):
    user = peewee.ForeignKeyField(User, null=True, backref="executions", on_delete="SET NULL")
    service = peewee.ForeignKeyField(
        Service, null=True, backref="executions", on_delete="SET NULL", index=False
    )
    tool_id = peewee.TextField()
    parameters = JSONField(default=dict)
    result = JSONField(null=True)
    status = peewee.TextField(default="queued")
    duration_ms = peewee.IntegerField(null=True)
    error = peewee.TextField(null=True)

    class Meta:
        table_name = "tool_executions"
        indexes = ((("created_at",), False), (("tool_id", "created_at"), False))


class Alert(BaseModel):
    user = peewee.ForeignKeyField(User, backref="alerts", on_delete="CASCADE")
    type = peewee.TextField()
    config = JSONField(default=dict)
    status = peewee.TextField(default="active", index=True)
    last_triggered_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "alerts"


class AuditLog(BaseModel):
    actor = peewee.TextField(null=True)
    action = peewee.TextField()
    table_name = peewee.TextField()
    row_id = peewee.TextField()
    old_values = JSONField(null=True)
    new_values = JSONField(null=True)

    class Meta:
        table_name = "audit_log"
        indexes = ((("table_name", "row_id"), False), (("created_at",), False))



class OutboxEvent(BaseModel):
    topic = peewee.TextField()
    payload = JSONField(default=dict)
    status = peewee.TextField(default="pending")
    attempts = peewee.IntegerField(default=0)
    available_at = UTCDateTimeField()
    last_error = peewee.TextField(null=True)
    processed_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "outbox_events"
        indexes = ((("status", "available_at"), False),)


MODELS: list[type[BaseModel]] = [
    User, UserProfile, Session, ApiKey, Service, Subscription, Transaction, Rating, Invoice,
    ToolExecution, Alert, AuditLog, OutboxEvent,
]


def bind(db: Database) -> None:
    """Bind every reference model to ``db``."""
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
