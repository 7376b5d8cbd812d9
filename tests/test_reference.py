"""The reference schema (migrations/) and its domain repositories, on every backend."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import peewee
import pytest
from click.testing import CliRunner
from playhouse.test_utils import count_queries

import embeddb
import embeddb.migrate
from embeddb import schema
from embeddb.cli import cli
from embeddb.errors import IntegrityError, NotFoundError
from embeddb.models import utcnow
from embeddb.reference import models as m
from embeddb.reference.repositories import (
    ApiKeyRepository,
    ServiceRepository,
    SessionRepository,
    ToolExecutionRepository,
    TransactionRepository,
    UserRepository,
)

MIGRATIONS = Path(__file__).parent.parent / "migrations"


@pytest.fixture
def ref(db):
    embeddb.migrate.up(db, MIGRATIONS, backup=False)
    m.bind(db)
    return db


def _user(n=0, **extra):
    return UserRepository().create(wallet_address=f"0xAbC{n:04d}", chain_id=1, **extra)


def _service(provider, name="Weather API", category="data", **extra):
    values = dict(provider=provider, name=name, category=category, endpoint="https://x.test",
                  price=Decimal("0.25"), description="Forecasts for any city")
    values.update(extra)
    return ServiceRepository().create(**values)


def _payment(buyer, service, amount="1", status="completed", n=0):
    return TransactionRepository().create(
        buyer=buyer, service=service, seller=service.provider_id, amount=Decimal(amount),
        token="USDC", chain_id=1, status=status, tx_hash=f"0x{n:064x}")


def test_schema_matches_models(ref):
    assert schema.check(ref, m.MODELS) == []


def test_schema_check_names_each_difference(ref):
    ref.execute_sql("DROP INDEX sessions_expires_at")
    ref.execute_sql("ALTER TABLE alerts ADD COLUMN severity INTEGER NOT NULL DEFAULT 1")
    ref.execute_sql("ALTER TABLE invoices ADD COLUMN pdf TEXT NOT NULL")
    ref.execute_sql("CREATE TABLE legacy (x INTEGER)")
    found = {str(d) for d in schema.check(ref, m.MODELS)}
    assert found == {
        "sessions: no index on (expires_at)",
        "alerts: column severity is not in the model",
        "invoices: column pdf is not in the model and is NOT NULL without a default: "
        "inserts through the model will fail",
        "legacy: table is not in the models",
    }


def test_schema_check_cli_exit_codes(cli_db_url):
    db_url = cli_db_url
    ref = embeddb.connect(db_url)
    embeddb.migrate.up(ref, MIGRATIONS, backup=False)
    runner = CliRunner()
    ok = runner.invoke(cli, ["schema", "check", "--db", db_url])
    assert ok.exit_code == 0, ok.output
    ref.execute_sql("DROP INDEX ratings_service")
    bad = runner.invoke(cli, ["schema", "check", "--db", db_url])
    assert bad.exit_code == 1 and "ratings: no index on (service_id)" in bad.output
    dump = runner.invoke(cli, ["schema", "dump", "--db", db_url])
    assert dump.exit_code == 0 and "CREATE TABLE" in dump.output and "services" in dump.output
    assert "services_fts_data" not in dump.output


def test_constraints_live_in_the_database(ref):
    user = _user()
    service = _service(user.id)
    with pytest.raises(IntegrityError):
        _user(0)  # duplicate wallet address (normalised to lower case)
    with pytest.raises(IntegrityError):
        ref.execute_sql("UPDATE services SET price = -1")
    with pytest.raises(IntegrityError):
        ref.execute_sql("UPDATE services SET status = 'bogus'")
    payment = _payment(user.id, service)
    m.Rating.create(transaction=payment, user=user, service=service, score=5)
    with pytest.raises(IntegrityError):
        m.Rating.create(transaction=payment, user=user, service=service, score=4)
    with pytest.raises(IntegrityError):
        _payment(user.id, service, n=99).__class__.create(
            buyer=user, service=service, amount=1, token="USDC", chain_id=1, tx_hash="0x" + "0" * 64)
    other = _payment(user.id, service, n=2)
    with pytest.raises(IntegrityError):
        m.Rating.create(transaction=other, user=user, service=service, score=6)
    with pytest.raises(IntegrityError):
        ref.execute_sql("DELETE FROM users")  # services reference their provider (RESTRICT)


def test_user_by_address_is_case_insensitive(ref):
    user = _user(7)
    users = UserRepository()
    assert users.by_address("0xabc0007").id == user.id
    assert users.by_address("  0XABC0007 ").id == user.id
    with pytest.raises(NotFoundError):
        users.by_address("0xdead")


def test_user_overview_takes_constant_queries(ref):
    def overview_queries(n_services):
        buyer = _user(1000 + n_services)
        provider = _user(2000 + n_services)
        for i in range(n_services):
            service = _service(provider.id, name=f"svc {n_services}-{i}")
            m.Subscription.create(user=buyer, service=service, started_at=utcnow())
            _payment(buyer.id, service, n=n_services * 1000 + i)
        with count_queries() as counter:
            overview = UserRepository().overview(buyer.id, recent=50)
            names = [s.service.name for s in overview.subscriptions]
        assert len(names) == n_services and len(overview.recent_payments) == n_services
        return counter.count

    assert overview_queries(2) == overview_queries(12) == 3


def test_user_stats(ref):
    buyer, provider = _user(1), _user(2)
    service = _service(provider.id)
    m.Subscription.create(user=buyer, service=service, started_at=utcnow())
    _payment(buyer.id, service, "2.5", n=1)
    _payment(buyer.id, service, "1", status="failed", n=2)
    assert UserRepository().stats(buyer.id) == {
        "payments": 2, "total_spent": Decimal("2.5"), "active_subscriptions": 1,
        "ratings_given": 0}


def test_services_by_provider_category_popular(ref):
    a, b, buyer1, buyer2 = (_user(i) for i in range(4))
    s1 = _service(a.id, "Alpha", "ai")
    s2 = _service(a.id, "Beta", "ai")
    _service(b.id, "Gamma", "data", status="deprecated")
    services = ServiceRepository()
    assert [s.name for s in services.by_provider(a.id)] == ["Alpha", "Beta"]
    assert [s.name for s in services.by_category("ai")] == ["Alpha", "Beta"]
    assert services.by_category("data") == []
    for buyer in (buyer1, buyer2):
        m.Subscription.create(user=buyer, service=s2, started_at=utcnow())
    m.Subscription.create(user=buyer1, service=s1, started_at=utcnow())
    assert [(s.name, n) for s, n in services.popular()] == [("Beta", 2), ("Alpha", 1)]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("weather", ["Weather API"]),
        ("WEATH", ["Weather API"]),
        ("forecast city", ["Weather API"]),
        ("translate", ["Translator"]),
        ('"weather" OR "x"; DROP TABLE services; --', []),
        ("' OR 1=1 --", []),
        ("", []),
        ("   *** ", []),
        ("NEAR(weather)", []),
        ("++ & | ! :* ()", []),
    ],
)
def test_text_search_is_ranked_and_safe(ref, query, expected):
    provider = _user()
    _service(provider.id)
    _service(provider.id, "Translator", "ai", description="Translate text between languages")
    _service(provider.id, "Old weather", "data", status="inactive")
    found = [s.name for s in ServiceRepository().search(query)]
    assert found == expected
    assert m.Service.select().count() == 3


def test_text_search_follows_updates_and_ranks_name_first(ref):
    provider = _user()
    body = _service(provider.id, "Maps", description="street weather overlays")
    title = _service(provider.id, "Weather now", description="fast")
    services = ServiceRepository()
    assert [s.name for s in services.search("weather")] == ["Weather now", "Maps"]
    services.update(title.id, name="Climate")
    assert [s.name for s in services.search("weather")] == ["Maps"]
    services.delete(body.id, permanent=True)
    assert services.search("weather") == []


def test_service_analytics(ref):
    provider, buyer = _user(1), _user(2)
    service = _service(provider.id)
    p1 = _payment(buyer.id, service, "3.000001", n=1)
    _payment(buyer.id, service, "2", status="refunded", n=2)
    p3 = _payment(buyer.id, service, "1", n=3)
    m.Rating.create(transaction=p1, user=buyer, service=service, score=5)
    m.Rating.create(transaction=p3, user=buyer, service=service, score=2)
    m.Subscription.create(user=buyer, service=service, started_at=utcnow())
    assert ServiceRepository().analytics(service.id) == {
        "revenue": Decimal("4.000001"), "average_rating": 3.5, "ratings": 2, "subscribers": 1}
    assert TransactionRepository().revenue(service.id) == Decimal("4.000001")


def test_sessions_store_only_hashes_and_expire(ref):
    user = _user()
    sessions = SessionRepository()
    token, session = sessions.open(user.id)
    assert token not in str(session.__data__) and session.token_hash != token
    assert sessions.verify(token).id == session.id
    with pytest.raises(NotFoundError):
        sessions.verify(token + "x")
    old_token, _ = sessions.open(user.id, ttl=timedelta(seconds=-1))
    with pytest.raises(NotFoundError):
        sessions.verify(old_token)
    assert sessions.cleanup_expired(dry_run=True) == 1
    assert sessions.cleanup_expired() == 1
    assert sessions.count() == 1 and sessions.close(token) and sessions.count() == 0


def test_api_keys_verify_by_hash_and_revoke(ref):
    user = _user()
    keys = ApiKeyRepository()
    key, record = keys.issue(user.id, "ci", scopes=["read", "write", "read"])
    assert key.startswith(record.prefix + "_") and key not in str(record.__data__)
    assert record.scopes == ["read", "write"]
    assert keys.verify(key).id == record.id
    keys.revoke(record.id)
    with pytest.raises(NotFoundError):
        keys.verify(key)
    expired_key, _ = keys.issue(user.id, "old", ttl=timedelta(seconds=-1))
    with pytest.raises(NotFoundError):
        keys.verify(expired_key)
    assert keys.cleanup(grace=timedelta(0)) == 2


def test_old_executions_cleanup_in_batches(ref):
    repo = ToolExecutionRepository()
    old = utcnow() - timedelta(days=100)
    repo.bulk_create({"tool_id": "t", "created_at": old} for _ in range(25))
    repo.bulk_create({"tool_id": "t"} for _ in range(5))
    assert repo.cleanup_older_than(timedelta(days=90), batch_size=10) == 25
    assert repo.count() == 5


def test_deleting_a_user_cascades_to_owned_rows(ref):
    user = _user()
    SessionRepository().open(user.id)
    ApiKeyRepository().issue(user.id, "k")
    m.UserProfile.create(user=user, display_name="me")
    m.User.delete().where(m.User.id == user.id).execute()
    assert m.Session.select().count() == m.ApiKey.select().count() == 0
    assert m.UserProfile.select().count() == 0
    assert isinstance(m.User._meta.fields["wallet_address"], peewee.TextField)


def test_domain_queries_use_indexes(sqlite_file_url):
    """EXPLAIN every statement the domain repositories run: no full scan of a real table."""
    ref = embeddb.connect(sqlite_file_url)
    embeddb.migrate.up(ref, MIGRATIONS, backup=False)
    m.bind(ref)
    buyer, provider = _user(1), _user(2)
    service = _service(provider.id)
    payment = _payment(buyer.id, service)
    m.Rating.create(transaction=payment, user=buyer, service=service, score=4)
    m.Subscription.create(user=buyer, service=service, started_at=utcnow())
    seen = []
    ref.query_hooks.append(lambda event: seen.append((event.sql, event.params)))
    users, services = UserRepository(), ServiceRepository()
    users.by_address(buyer.wallet_address)
    users.overview(buyer.id)
    users.stats(buyer.id)
    services.by_provider(provider.id)
    services.by_category("data")
    services.search("weather")
    services.analytics(service.id)
    SessionRepository().verify(SessionRepository().open(buyer.id)[0])
    ApiKeyRepository().verify(ApiKeyRepository().issue(buyer.id, "k")[0])
    TransactionRepository().by_hash(payment.tx_hash)
    ref.query_hooks.clear()
    scans = []
    for sql, params in seen:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        for row in ref.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall():
            detail = row[-1]
            if detail.startswith("SCAN") and "INDEX" not in detail and "VIRTUAL" not in detail:
                scans.append((detail, sql))
    assert len(seen) > 10
    assert scans == []


def test_wallet_addresses_have_one_spelling_on_every_write_path(ref):
    users = UserRepository()
    user = users.create(wallet_address="0xAAA1", chain_id=1)
    users.update(user.id, wallet_address="0xBbB2")
    users.bulk_create([{"wallet_address": "0xCCC3", "chain_id": 1}])
    users.upsert({"wallet_address": "0xDDD4", "chain_id": 1}, ["wallet_address"])
    stored = sorted(u.wallet_address for u in users.find())
    assert stored == ["0xbbb2", "0xccc3", "0xddd4"]
    assert users.by_address("0XBBB2").id == user.id
    with pytest.raises(IntegrityError):
        ref.execute_sql("UPDATE users SET wallet_address = '0xMIXED'")


def test_search_treats_accents_the_same_on_both_backends(ref):
    provider = _user()
    _service(provider.id, "Café Finder", description="Coffee nearby")
    services = ServiceRepository()
    assert [s.name for s in services.search("café")] == ["Café Finder"]
    assert services.search("cafe") == []


def test_sqlite_schema_dump_replays_to_the_same_schema(sqlite_file_url):
    import sqlite3

    db = embeddb.connect(sqlite_file_url)
    embeddb.migrate.up(db, MIGRATIONS, backup=False)
    replay = sqlite3.connect(":memory:")
    replay.executescript(schema.dump(db))
    listing = "SELECT type, name FROM sqlite_master ORDER BY type, name"
    assert replay.execute(listing).fetchall() == db.execute_sql(listing).fetchall()


MY_MODELS = '''
import peewee

class Note(peewee.Model):
    body = peewee.TextField()
    {extra}
    class Meta:
        table_name = "notes"

MODELS = [Note]
'''


@pytest.mark.parametrize("extra, code, fragment", [
    ("", 0, "Schema matches the models."),
    ("stars = peewee.IntegerField()", 1, "notes: column stars does not exist"),
])
def test_schema_check_cli_compares_the_models_it_is_given(
    tmp_path, monkeypatch, extra, code, fragment
):
    package = f"my_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{package}.py").write_text(MY_MODELS.format(extra=extra))
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = embeddb.connect(url)
    db.execute_sql("CREATE TABLE notes (id INTEGER PRIMARY KEY NOT NULL, body TEXT NOT NULL)")
    db.close()
    result = CliRunner().invoke(cli, ["schema", "check", "--db", url, "--models",
                                      f"{package}:MODELS"])
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert "users" not in result.output  # the reference models were not used
