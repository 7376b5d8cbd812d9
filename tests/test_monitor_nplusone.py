"""N+1 detection and query budgets: units of work, strict mode, the pytest plugin."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import embeddb
from embeddb.errors import NPlusOneError, QueryBudgetExceeded
from embeddb.monitor import NPlusOneWarning, assert_max_queries
from embeddb.reference import models as m
from embeddb.reference.repositories import ServiceRepository, UserRepository

ROOT = Path(__file__).parent.parent


@pytest.fixture
def ref(db_url):
    db = embeddb.connect(db_url, monitor=True)
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    embeddb.seed.run(db, "test", directory=ROOT / "seeds")
    m.bind(db)
    yield db
    db.close()


def naive_names(users) -> list[str]:
    """The loop N+1 detection exists for: one query per user."""
    return [p.display_name for u in users
            for p in m.UserProfile.select().where(m.UserProfile.user == u.id)]


def users(n: int = 12) -> list:
    repo = UserRepository()
    return [repo.create(wallet_address=f"0xabc{i:04d}", chain_id=1) for i in range(n)]


def run_caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, NPlusOneWarning)]


def test_a_naive_loop_in_a_transaction_is_reported_once(ref):
    people = users()

    def loop():
        with ref.atomic():
            naive_names(people)
            naive_names(people)  # the same loop again: still one report for this unit

    found = run_caught(loop)
    assert len(found) == 1
    message = str(found[0].message)
    assert "user_profiles" in message and "10 runs" in message
    assert found[0].filename == __file__  # the warning points at the app's line
    assert ref.monitor.findings[0].unit == "transaction"


def test_the_same_parameters_again_are_not_n_plus_one(ref):
    people = users(1) * 20
    assert run_caught(lambda: ref.atomic()(naive_names)(people)) == []


def test_below_the_threshold_nothing_is_reported(ref):
    people = users(9)
    assert run_caught(lambda: ref.atomic()(naive_names)(people)) == []


def test_outside_any_unit_nothing_is_counted(ref):
    people = users()
    assert run_caught(lambda: naive_names(people)) == []


def test_a_named_unit_spans_transactions(ref):
    people = users()

    def loop():
        with ref.monitor.unit("checkout"):
            for person in people:
                with ref.atomic():
                    naive_names([person])

    found = run_caught(loop)
    assert len(found) == 1 and "'checkout'" in str(found[0].message)


def test_strict_mode_raises(db_url):
    db = embeddb.connect(db_url, monitor="strict")
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    m.bind(db)
    people = users()
    with pytest.raises(NPlusOneError, match="user_profiles"):
        with db.atomic():
            naive_names(people)
    db.close()


def test_the_reference_overview_queries_stay_within_budget(ref):
    user = m.User.select().first()
    service = m.Service.select().first()
    with assert_max_queries(ref, 3):
        UserRepository().overview(user.id)
    with assert_max_queries(ref, 2):
        UserRepository().stats(user.id)
    with assert_max_queries(ref, 2):
        ServiceRepository().analytics(service.id)
    with assert_max_queries(ref, 1):
        ServiceRepository().popular()


def test_an_exceeded_budget_lists_the_statements(ref):
    people = users(4)
    with pytest.raises(QueryBudgetExceeded) as failed:
        with assert_max_queries(ref, 2):
            naive_names(people)
    text = str(failed.value)
    assert "4 queries ran, more than the budget of 2" in text
    assert text.count("user_profiles") == 4 and "  4. SELECT" in text


def test_a_budget_switches_monitoring_on_only_for_its_block(db_url):
    db = embeddb.connect(db_url)
    with assert_max_queries(db, 1) as log:
        db.execute_sql("SELECT 1").fetchall()
    assert len(log) == 1 and not db.monitor.enabled
    db.close()


SUITE = '''
import pytest
from embeddb.reference import models as m
from embeddb.reference.repositories import UserRepository


def test_naive(embeddb_seeded_db):
    repo = UserRepository()
    people = [repo.create(wallet_address=f"0xbee{i:04d}", chain_id=1) for i in range(11)]
    for u in people:
        list(m.UserProfile.select().where(m.UserProfile.user == u.id))


def test_fine(embeddb_seeded_db):
    list(m.UserProfile.select())


def test_budget(embeddb_db, embeddb_queries):
    with embeddb_queries.assert_max_queries(1):
        embeddb_db.execute_sql("SELECT count(*) FROM users").fetchone()
        embeddb_db.execute_sql("SELECT count(*) FROM services").fetchone()


def test_recorded(embeddb_db, embeddb_queries):
    embeddb_db.execute_sql("SELECT count(*) FROM users").fetchone()
    assert [q.sql for q in embeddb_queries] == ["SELECT count(*) FROM users"]
'''


@pytest.fixture
def suite(plugin_suite):
    return plugin_suite(SUITE)


def test_plugin_warns_by_default(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rN")
    result.assert_outcomes(passed=3, failed=1)
    # the warnings summary comes after the failure report since pytest 9: match each alone
    # (-rN: no short summary, which would otherwise repeat the failure after the warnings)
    result.stdout.fnmatch_lines(["*NPlusOneWarning: N+1 queries in 'test_app.py::test_naive'*"])
    result.stdout.fnmatch_lines(["*2 queries ran, more than the budget of 1*",
                                 "*1. SELECT count(*) FROM users*"])


def test_plugin_fails_the_test_with_error(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--embeddb-nplusone=error",
                                        "-k", "naive or fine")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*NPlusOneError*test_naive*"])


def test_plugin_off_leaves_databases_unmonitored(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--embeddb-nplusone=off",
                                        "-W", "error::embeddb.monitor.NPlusOneWarning",
                                        "-k", "naive")
    result.assert_outcomes(passed=1)
