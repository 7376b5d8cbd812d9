"""Every read-side domain query of the reference repositories, with monitoring on.

Seeds the ``dev`` set (and ``staging`` outside --quick) into a SQLite file and a PostgreSQL
schema, runs each query RUNS times with varying arguments, and prints the monitor's mean and
p95 per query. The bar: every mean under 50 ms ("raw" is that bar, so ratio < 1 passes). Each
statement is also explained; a full scan of a large table is named in ``full_scans``.
"""

from __future__ import annotations

import random
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import embeddb
import embeddb.migrate
import embeddb.seed
from benchmarks.harness import pg_scratch_schema, pg_url, report, size
from embeddb.errors import NotFoundError
from embeddb.reference import models as m
from embeddb.reference.repositories import (
    ApiKeyRepository,
    ServiceRepository,
    SessionRepository,
    TransactionRepository,
    UserRepository,
)

ROOT = Path(__file__).parent.parent
RUNS = size(50, 20)
BAR_MS = 50.0
SETS = ["dev"] if size(0, 1) else ["dev", "staging"]


def _queries(rng: random.Random) -> dict[str, Callable[[], Any]]:
    users = [u.id for u in m.User.select(m.User.id).limit(200)]
    addresses = [u.wallet_address for u in m.User.select(m.User.wallet_address).limit(200)]
    providers = [s.provider_id for s in m.Service.select(m.Service.provider).limit(100)]
    services = [s.id for s in m.Service.select(m.Service.id).limit(100)]
    categories = sorted({s.category for s in m.Service.select(m.Service.category)})
    hashes = [t.tx_hash for t in m.Transaction.select(m.Transaction.tx_hash).limit(200)]
    words = ["weather", "data", "translate", "api", "price"]

    def absent(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> None:
            try:
                fn()
            except NotFoundError:
                pass
        return call

    return {
        "user.by_address": lambda: UserRepository().by_address(rng.choice(addresses)),
        "user.overview": lambda: UserRepository().overview(rng.choice(users)),
        "user.stats": lambda: UserRepository().stats(rng.choice(users)),
        "service.by_provider": lambda: ServiceRepository().by_provider(rng.choice(providers)),
        "service.by_category": lambda: ServiceRepository().by_category(rng.choice(categories)),
        "service.popular": lambda: ServiceRepository().popular(),
        "service.search": lambda: ServiceRepository().search(rng.choice(words)),
        "service.analytics": lambda: ServiceRepository().analytics(rng.choice(services)),
        "transaction.by_hash": lambda: TransactionRepository().by_hash(rng.choice(hashes)),
        "transaction.revenue": lambda: TransactionRepository().revenue(rng.choice(services)),
        "session.verify": absent(lambda: SessionRepository().verify(secrets.token_urlsafe(16))),
        "api_key.verify": absent(lambda: ApiKeyRepository().verify(secrets.token_hex(16))),
    }


def _run(db: Any, label: str) -> None:
    m.bind(db)
    rng = random.Random(7)
    for name, query in _queries(rng).items():
        query()  # warm: compiled statements, page cache
        db.monitor.reset()
        with db.monitor.capture() as log:
            for _ in range(RUNS):
                query()
        statements = db.monitor.stats()["statements"]
        calls = sum(s["calls"] for s in statements)
        total = sum(s["total_ms"] for s in statements)
        per_call = total / RUNS
        p95 = max((s["p95_ms"] for s in statements), default=0.0)
        scans: list[str] = []
        seen = set()
        for q in log.statements:
            if q.sql in seen or not q.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            seen.add(q.sql)
            plan = db.monitor.explain(q.sql, q.params)
            scans += [w for w in plan.warnings if w.startswith("full scan")]
        report(f"{label}.reference.{name}", "ms/call", per_call, BAR_MS,
               statements_per_call=calls / RUNS, worst_statement_p95_ms=p95,
               full_scans="; ".join(sorted(set(scans))) or "none")


def _seed(db: Any, env: str) -> None:
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    embeddb.seed.run(db, env, directory=ROOT / "seeds")
    db.monitor.enable(publish=False)


def bench_sqlite(env: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = embeddb.connect(f"sqlite:///{Path(tmp) / 'ref.db'}")
        _seed(db, env)
        _run(db, f"sqlite.{env}")
        db.close()


def bench_postgres(url: str, env: str) -> None:
    scratch, drop = pg_scratch_schema(url)
    try:
        db = embeddb.connect(scratch)
        _seed(db, env)
        # this schema's tables only: a bare ANALYZE waits behind other sessions' locks
        for (table,) in db.execute_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()").fetchall():
            db.execute_sql(f'ANALYZE "{table}"')
        _run(db, f"postgresql.{env}")
        db.close_all()
    finally:
        drop()


def main() -> None:
    url = pg_url()
    for env in SETS:
        bench_sqlite(env)
        if url:
            bench_postgres(url, env)


if __name__ == "__main__":
    main()
