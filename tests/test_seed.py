"""Seed sets and `embeddb setup`: idempotent, deterministic, refused for production, both
backends."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import embeddb
import embeddb.migrate
import embeddb.seed
import embeddb.setup
from embeddb import schema
from embeddb.cli import cli
from embeddb.errors import InvalidQueryError
from embeddb.reference import fixtures
from embeddb.reference.fixtures import Sizes, marketplace
from embeddb.seed import SeedError

ROOT = Path(__file__).parent.parent
SMALL = Sizes(users=40, services=10, subscriptions=60, payments=200, invoices=30,
              executions=50, alerts=10)


@pytest.fixture
def migrated(db):
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    return db


@pytest.fixture
def small_sets(tmp_path):
    """A seeds folder with a small generated set (the dev set is 38k rows: too slow per test)."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    (folder / "small.py").write_text(
        "from embeddb.reference.fixtures import Sizes, marketplace\n"
        f"def build(seed):\n    return marketplace(seed, Sizes(**{SMALL.__dict__!r}))\n")
    (folder / "production.py").write_text("def build(seed):\n    return []\n")
    (folder / "broken.py").write_text("def build(seed):\n    raise RuntimeError('boom')\n")
    (folder / "nobuild.py").write_text("ROWS = []\n")
    return folder


def content_hashes(db) -> dict[str, str]:
    """Per table: row count and a hash of every row, in primary-key order."""
    hashes = {}
    for table in sorted(embeddb.setup.table_rows(db)):
        rows = db.execute_sql(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
        digest = hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()
        hashes[table] = f"{len(rows)}:{digest}"
    return hashes


def test_seeding_twice_changes_nothing(migrated, small_sets):
    first = embeddb.seed.run(migrated, "small", directory=small_sets)
    before = content_hashes(migrated)
    second = embeddb.seed.run(migrated, "small", directory=small_sets)
    assert content_hashes(migrated) == before
    assert first.counts == second.counts and first.counts["users"] == SMALL.users
    assert first.counts["transactions"] == SMALL.payments


def test_same_seed_same_data_other_seed_other_data(migrated, small_sets):
    one = [(m, list(rows)) for m, rows in marketplace(3, SMALL)]
    again = [(m, list(rows)) for m, rows in marketplace(3, SMALL)]
    other = [(m, list(rows)) for m, rows in marketplace(4, SMALL)]
    assert one == again
    assert one[0][1][0]["wallet_address"] != other[0][1][0]["wallet_address"]
    embeddb.seed.run(migrated, "small", directory=small_sets, seed=3)
    embeddb.seed.run(migrated, "small", directory=small_sets, seed=4)  # disjoint: no clash
    assert migrated.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 2 * SMALL.users


def test_fresh_database_content_is_identical_across_runs(tmp_path, small_sets):
    hashes = []
    for name in ("a", "b"):
        db = embeddb.connect(f"sqlite:///{tmp_path / name}.db")
        embeddb.migrate.up(db, ROOT / "migrations", backup=False)
        embeddb.seed.run(db, "small", directory=small_sets, seed=9)
        hashes.append(content_hashes(db))
    assert hashes[0] == hashes[1]


def test_fresh_empties_the_tables_first(migrated, small_sets):
    embeddb.seed.run(migrated, "small", directory=small_sets, seed=1)
    result = embeddb.seed.run(migrated, "small", directory=small_sets, seed=2, fresh=True)
    assert result.counts["users"] == SMALL.users  # seed 1's rows are gone


def test_production_refuses_without_force(migrated, small_sets):
    with pytest.raises(SeedError, match="--force"):
        embeddb.seed.run(migrated, "production", directory=small_sets)
    assert embeddb.seed.run(migrated, "production", directory=small_sets, force=True).total == 0


@pytest.mark.parametrize(
    "env, message",
    [("nope", "no seed set 'nope'"), ("broken", "RuntimeError: boom"),
     ("nobuild", "must define build"), ("../etc", "no seed set")],
)
def test_bad_seed_sets_are_clear_errors(migrated, small_sets, env, message):
    with pytest.raises(SeedError, match=message):
        embeddb.seed.run(migrated, env, directory=small_sets)


def test_a_constraint_failure_writes_nothing(migrated, small_sets):
    (small_sets / "dup.py").write_text(
        "from embeddb.reference.fixtures import handpicked\n"
        "def build(seed):\n"
        "    tables = handpicked()\n"
        "    users = tables[0][1]\n"
        "    users.append(dict(users[0], id='f' * 32))  # same wallet address, new id\n"
        "    return tables\n")
    with pytest.raises(embeddb.IntegrityError):
        embeddb.seed.run(migrated, "dup", directory=small_sets)
    assert migrated.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 0


def test_seeding_an_empty_database_leaves_the_schema_as_migrated(migrated, small_sets):
    """In one transaction, plain indexes are built after the load on SQLite; the schema must
    end up identical."""
    before = schema.dump(migrated)
    sqlite = migrated.dialect.name == "sqlite"
    if sqlite:  # a spy: during the load the plain index is gone, the unique one stays
        migrated.execute_sql("CREATE TEMP TABLE seen (name TEXT)")
        migrated.execute_sql(
            "CREATE TEMP TRIGGER spy AFTER INSERT ON transactions BEGIN "
            "INSERT INTO seen SELECT name FROM sqlite_master WHERE tbl_name = 'transactions' "
            "AND type = 'index'; END")
    embeddb.seed.run(migrated, "small", directory=small_sets, atomic=True)
    if sqlite:
        seen = {row[0] for row in migrated.execute_sql("SELECT name FROM seen")}
        assert "transactions_seller" not in seen and "sqlite_autoindex_transactions_2" in seen
        migrated.execute_sql("DROP TRIGGER temp.spy")
        migrated.execute_sql("DROP TABLE temp.seen")
    assert schema.dump(migrated) == before
    if sqlite:
        plan = migrated.execute_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM transactions WHERE seller_id = ?", ["x" * 32]
        ).fetchall()
        assert "transactions_seller" in str(plan)


def test_a_failure_after_indexes_were_dropped_restores_them(migrated, small_sets):
    """The last table breaks a constraint after earlier tables were loaded index-less."""
    (small_sets / "late.py").write_text(
        "from embeddb.reference.fixtures import Sizes, marketplace\n"
        f"SMALL = Sizes(**{SMALL.__dict__!r})\n"
        "def build(seed):\n"
        "    tables = marketplace(seed, SMALL)\n"
        "    model, rows = tables[-1]\n"
        "    rows = list(rows)\n"
        "    rows.append(dict(rows[0], id='e' * 32, user='0' * 32))  # no such user\n"
        "    return [*tables[:-1], (model, rows)]\n")
    before = schema.dump(migrated)
    with pytest.raises(embeddb.IntegrityError):
        embeddb.seed.run(migrated, "late", directory=small_sets, atomic=True)
    assert schema.dump(migrated) == before
    assert migrated.execute_sql("SELECT count(*) FROM transactions").fetchone()[0] == 0
    # in short transactions no index is ever dropped, and what was committed stays
    with pytest.raises(embeddb.IntegrityError):
        embeddb.seed.run(migrated, "late", directory=small_sets)
    assert schema.dump(migrated) == before
    assert migrated.execute_sql("SELECT count(*) FROM users").fetchone()[0] == SMALL.users


def test_seeding_a_table_that_has_rows_keeps_its_indexes(migrated, small_sets):
    """A second run upserts into full tables: nothing is dropped, nothing changes."""
    embeddb.seed.run(migrated, "small", directory=small_sets)
    migrated.execute_sql("CREATE TABLE dropped_indexes (name TEXT)")
    if migrated.dialect.name == "sqlite":
        migrated.execute_sql(
            "CREATE TEMP TRIGGER spy AFTER INSERT ON transactions BEGIN "
            "INSERT INTO dropped_indexes SELECT 'missing' WHERE NOT EXISTS ("
            "SELECT 1 FROM sqlite_master WHERE name = 'transactions_seller'); END")
    second = embeddb.seed.run(migrated, "small", directory=small_sets, seed=2)
    assert second.counts["transactions"] == 2 * SMALL.payments
    assert migrated.execute_sql("SELECT count(*) FROM dropped_indexes").fetchone()[0] == 0


def _children() -> set[int]:
    path = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    if not path.exists():
        # CI runs on Linux, which lists them: there a missing file fails instead of hiding tests
        in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as conftest reads it
        (pytest.fail if in_ci else pytest.skip)(
            "this kernel does not list a process's children")
    return {int(pid) for pid in path.read_text().split()}


def _write_set(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(
        "import os\n"
        "from embeddb.reference.fixtures import Sizes, marketplace\n"
        f"SMALL = Sizes(**{SMALL.__dict__!r})\n" + body)


def test_rows_prepared_in_a_worker_process_are_the_same(tmp_path, small_sets):
    hashes = []
    for parallel in (True, False):
        db = embeddb.connect(f"sqlite:///{tmp_path / str(parallel)}.db")
        embeddb.migrate.up(db, ROOT / "migrations", backup=False)
        result = embeddb.seed.run(db, "small", directory=small_sets, seed=5, parallel=parallel)
        assert result.written["transactions"] == SMALL.payments
        hashes.append(content_hashes(db))
    assert hashes[0] == hashes[1]


def test_the_worker_runs_only_when_forking_is_safe(migrated, small_sets, tmp_path):
    """Rows are generated in a child process, unless asked not to or other threads run."""
    pids = tmp_path / "pids"
    body = ("def build(seed):\n"
            "    def users():\n"
            f"        open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
            "        yield from marketplace(seed, SMALL)[0][1]\n"
            "    return [(marketplace(seed, SMALL)[0][0], users())]\n")
    _write_set(small_sets, "pids", "PARALLEL = True\n" + body)
    _write_set(small_sets, "not_declared", body)

    def generated_in() -> set[int]:
        found = {int(pid) for pid in pids.read_text().split()}
        pids.unlink()
        return found

    before = _children()
    embeddb.seed.run(migrated, "pids", directory=small_sets)
    assert os.getpid() not in generated_in() and _children() == before
    embeddb.seed.run(migrated, "pids", directory=small_sets, parallel=False)
    assert generated_in() == {os.getpid()}
    embeddb.seed.run(migrated, "not_declared", directory=small_sets)  # opt-in only
    assert generated_in() == {os.getpid()}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        embeddb.seed.run(migrated, "pids", directory=small_sets)
    finally:
        stop.set()
        other.join()
    assert generated_in() == {os.getpid()}


@pytest.mark.parametrize("parallel", [True, False])
def test_a_failing_row_generator_writes_nothing_and_names_the_error(migrated, small_sets,
                                                                   parallel):
    _write_set(small_sets, "late_failure", (
        "def build(seed):\n"
        "    tables = marketplace(seed, SMALL)\n"
        "    def broken():\n"
        "        yield from tables[-1][1]\n"
        "        raise LookupError('no more alerts')\n"
        "    return [*tables[:-1], (tables[-1][0], broken())]\n"))
    before = _children()
    with pytest.raises(SeedError, match="seed set 'late_failure': LookupError: no more alerts"):
        embeddb.seed.run(migrated, "late_failure", directory=small_sets, parallel=parallel,
                         atomic=True)
    assert migrated.execute_sql("SELECT count(*) FROM transactions").fetchone()[0] == 0
    assert _children() == before


def test_errors_keep_their_type_across_the_worker(migrated, small_sets):
    _write_set(small_sets, "unknown_field", (
        "def build(seed):\n"
        "    model, rows = marketplace(seed, SMALL)[0]\n"
        "    return [(model, [dict(next(iter(rows)), nickname='x')])]\n"))
    with pytest.raises(InvalidQueryError, match="unknown field.*nickname"):
        embeddb.seed.run(migrated, "unknown_field", directory=small_sets, parallel=True)
    _write_set(small_sets, "unpicklable", (
        "class Odd(Exception):  # pickles, but cannot be rebuilt from its args\n"
        "    def __init__(self, a, b):\n"
        "        super().__init__(f'{a}/{b}')\n"
        "def build(seed):\n"
        "    def rows():\n"
        "        raise Odd(1, 2)\n"
        "        yield\n"
        "    return [(marketplace(seed, SMALL)[0][0], rows())]\n"))
    with pytest.raises(SeedError, match="^seed set 'unpicklable': Odd: 1/2$"):
        embeddb.seed.run(migrated, "unpicklable", directory=small_sets, parallel=True)


def test_a_set_using_the_global_random_module_is_the_same_in_the_worker(tmp_path, small_sets):
    _write_set(small_sets, "randomised", (
        "import random\n"
        "PARALLEL = True\n"
        "def build(seed):\n"
        "    random.seed(seed)\n"
        "    model, rows = marketplace(seed, SMALL)[0]\n"
        "    def users():\n"
        "        for row in rows:\n"
        "            yield dict(row, chain_id=random.randint(1, 10**9))\n"
        "    return [(model, users())]\n"))
    chains = []
    for parallel in (True, True, False):
        db = embeddb.connect(f"sqlite:///{tmp_path / f'r{len(chains)}'}.db")
        embeddb.migrate.up(db, ROOT / "migrations", backup=False)
        embeddb.seed.run(db, "randomised", directory=small_sets, parallel=parallel)
        chains.append(db.execute_sql("SELECT chain_id FROM users ORDER BY id").fetchall())
    assert chains[0] == chains[1] == chains[2]


def test_the_worker_under_an_application_that_reaps_children_itself(migrated, small_sets):
    """With SIGCHLD ignored the kernel reaps the worker: the committed seed still succeeds."""
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        result = embeddb.seed.run(migrated, "small", directory=small_sets, parallel=True)
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert result.counts["users"] == SMALL.users


def test_rows_that_cannot_cross_to_the_worker_say_what_to_do(migrated, small_sets):
    """A blob's database value (a memoryview or psycopg2 Binary) cannot be pickled."""
    (small_sets / "blobs.py").write_text(
        "import peewee\n"
        "from embeddb.models import BaseModel\n"
        "class Attachment(BaseModel):\n"
        "    data = peewee.BlobField()\n"
        "PARALLEL = True\n"
        "def build(seed):\n"
        "    return [(Attachment, [{'data': b'\\x00\\x01'}])]\n")
    attachment = embeddb.seed.load("blobs", small_sets).__globals__["Attachment"]
    migrated.bind([attachment])
    migrated.create_tables([attachment])
    with pytest.raises(SeedError, match="rows of attachment cannot be sent to the worker "
                                        "process.*--no-parallel"):
        embeddb.seed.run(migrated, "blobs", directory=small_sets)
    assert migrated.execute_sql("SELECT count(*) FROM attachment").fetchone()[0] == 0
    embeddb.seed.run(migrated, "blobs", directory=small_sets, parallel=False)
    assert migrated.execute_sql("SELECT count(*) FROM attachment").fetchone()[0] == 1


def test_a_write_failure_stops_the_worker_early(migrated, small_sets):
    """The first table breaks a constraint while the child still has a large set to make."""
    _write_set(small_sets, "early_clash", (
        "def build(seed):\n"
        "    tables = marketplace(seed, Sizes().scaled(20))\n"
        "    model, rows = tables[0]\n"
        "    first = next(iter(rows))\n"
        "    clash = [first, dict(first, id='f' * 32)]  # same wallet address, new id\n"
        "    return [(model, clash), *tables[1:]]\n"))
    before = _children()
    started = time.perf_counter()
    with pytest.raises(embeddb.IntegrityError):
        embeddb.seed.run(migrated, "early_clash", directory=small_sets, parallel=True)
    assert time.perf_counter() - started < 5  # 780k rows would take far longer to make
    assert _children() == before
    assert migrated.execute_sql("SELECT count(*) FROM users").fetchone()[0] == 0


def test_the_test_set_has_rows_tests_can_name(migrated):
    embeddb.seed.run(migrated, "test", directory=ROOT / "seeds")
    from embeddb.reference import models as m
    from embeddb.reference.repositories import ServiceRepository, UserRepository

    m.bind(migrated)
    assert UserRepository().get(fixtures.ALICE).wallet_address == "0xa11ce"
    assert ServiceRepository().analytics(fixtures.WEATHER_API)["average_rating"] == 5.0


def test_setup_migrates_seeds_and_is_safe_to_repeat(cli_db_url, small_sets):
    db = embeddb.connect(cli_db_url)
    first = embeddb.setup.run(db, "small", migrations=ROOT / "migrations", seeds=small_sets)
    assert first.version == 6 and len(first.applied) == 6
    assert first.rows["users"] == SMALL.users
    before = content_hashes(db)
    second = embeddb.setup.run(db, "small", migrations=ROOT / "migrations", seeds=small_sets)
    assert second.applied == [] and content_hashes(db) == before


def test_setup_refuses_production_before_changing_anything(tmp_path, small_sets):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(SeedError):
        embeddb.setup.run(db, "production", migrations=ROOT / "migrations", seeds=small_sets)
    assert db.get_tables() == []


def test_setup_cli_in_an_empty_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["setup", "--env", "test", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["schema_version"] == 6 and summary["rows"]["users"] == 3
    assert (tmp_path / "embeddb.db").exists()
    human = CliRunner().invoke(cli, ["setup", "--env", "test"])
    assert human.exit_code == 0 and "migrations      0 applied now" in human.output


def test_seed_cli_summary_and_errors(cli_db_url, small_sets):
    db = embeddb.connect(cli_db_url)
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    runner = CliRunner()
    ok = runner.invoke(cli, ["seed", "small", "--db", cli_db_url, "--seeds", str(small_sets)])
    assert ok.exit_code == 0 and "Seeded small (seed 1)" in ok.output
    refused = runner.invoke(cli, ["seed", "production", "--db", cli_db_url,
                                  "--seeds", str(small_sets)])
    assert refused.exit_code == 1 and refused.output.startswith("Error: refusing")


def test_setup_on_a_terminal_shows_progress(tmp_path, small_sets):
    """On a real (pseudo-)terminal the CLI draws a progress bar per table."""
    primary, secondary = pty.openpty()
    url = f"sqlite:///{tmp_path / 'tty.db'}"
    command = [sys.executable, "-c", "from embeddb.cli import main; main()", "setup",
               "--env", "small", "--db", url, "--migrations", str(ROOT / "migrations"),
               "--seeds", str(small_sets)]
    try:
        process = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary)
        os.close(secondary)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
            while chunk := os.read(primary, 65536):  # read as it writes: the buffer is small
                output += chunk
        returncode = process.wait(timeout=120)
    finally:
        os.close(primary)
    text = output.decode(errors="replace")
    assert returncode == 0, text
    assert "seeding transactions" in text and f"{SMALL.payments}" in text
    assert "Error" not in text


def test_seeding_an_unmigrated_database_says_what_to_do(cli_db_url):
    result = CliRunner().invoke(cli, ["seed", "test", "--db", cli_db_url])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "run `embeddb migrate up` first" in lines[0]


def test_setup_with_an_unknown_env_changes_nothing(tmp_path, small_sets):
    db = embeddb.connect(f"sqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(SeedError, match="no seed set 'dve'"):
        embeddb.setup.run(db, "dve", migrations=ROOT / "migrations", seeds=small_sets)
    assert db.get_tables() == []


def test_folders_fall_back_to_the_reference_app_only_in_an_empty_directory(tmp_path,
                                                                          monkeypatch):
    from embeddb import reference

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBEDDB_MIGRATIONS_DIR", raising=False)
    monkeypatch.delenv("EMBEDDB_SEEDS_DIR", raising=False)
    assert embeddb.setup.folders() == (reference.MIGRATIONS, reference.SEEDS)
    (tmp_path / "migrations").mkdir()  # an app's own project: never mix in the reference
    assert embeddb.setup.folders() == (Path("migrations"), Path("seeds"))
    db = embeddb.connect(f"sqlite:///{tmp_path / 'app.db'}")
    with pytest.raises(SeedError, match="no seed set 'dev' in seeds"):
        embeddb.setup.run(db)


def _table_counts(url: str) -> dict[str, int]:
    db = embeddb.connect(url)
    try:
        return embeddb.seed.count_rows(db, [m._meta.table_name for m, _ in marketplace(1, SMALL)])
    finally:
        db.close()
        if isinstance(db, embeddb.PostgresEngine):
            db.close_all()


def test_a_fresh_seed_that_fails_keeps_the_old_rows(migrated, small_sets):
    """--fresh empties the tables in the load's transaction: a late failure leaves them full."""
    _write_set(small_sets, "fresh_failure", (
        "def build(seed):\n"
        "    tables = marketplace(seed, SMALL)\n"
        "    def broken():\n"
        "        yield from tables[-1][1]\n"
        "        raise LookupError('no more alerts')\n"
        "    return [*tables[:-1], (tables[-1][0], broken())]\n"))
    embeddb.seed.run(migrated, "small", directory=small_sets, seed=1)
    before = content_hashes(migrated)
    with pytest.raises(SeedError, match="no more alerts"):
        embeddb.seed.run(migrated, "fresh_failure", directory=small_sets, seed=2, fresh=True)
    assert content_hashes(migrated) == before
    result = embeddb.seed.run(migrated, "small", directory=small_sets, seed=2, fresh=True)
    assert result.deleted["users"] == SMALL.users and result.counts["users"] == SMALL.users
    assert content_hashes(migrated) != before


#: The set a killed run was replacing the old one with: other sizes, so counts tell them apart.
BIG = Sizes(users=400, services=60, subscriptions=1500, payments=6000, invoices=600,
            executions=1500, alerts=150)


def _killed_runs(command: list[str], url: str, old: dict[str, int], new: dict[str, int],
                 env: dict[str, str], kills: int, folder: Path) -> int:
    """Run ``command`` ``kills`` times, each killed (SIGINT and SIGKILL in turn) at a random
    point of a full run's duration; after each, every table holds exactly the old or the new
    rows, all tables the same one. Returns how many kills landed before the run ended."""
    import random

    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)  # a full run: new rows
    full = time.perf_counter() - started
    assert _table_counts(url) == new
    landed = 0
    for attempt in range(kills):
        db = embeddb.connect(url)
        embeddb.seed.run(db, "small", directory=folder, fresh=True)  # back to the old rows
        db.close()
        assert _table_counts(url) == old
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.15, 0.85) * full)
        if process.poll() is None:
            landed += 1
            process.send_signal(signal.SIGINT if attempt % 2 == 0 else signal.SIGKILL)
        process.wait(timeout=120)
        assert _table_counts(url) in (old, new), f"attempt {attempt}: neither old nor new"
    return landed


def test_a_fresh_seed_killed_at_any_point_leaves_old_or_new_rows(cli_db_url, small_sets):
    """Real processes, real signals, random points: never empty or half-loaded tables."""
    _write_set(small_sets, "big", f"BIG = Sizes(**{BIG.__dict__!r})\n"
                                  "def build(seed):\n    return marketplace(seed, BIG)\n")
    db = embeddb.connect(cli_db_url)
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    embeddb.seed.run(db, "small", directory=small_sets)
    old = embeddb.seed.count_rows(db, [m._meta.table_name for m, _ in marketplace(1, SMALL)])
    db.close()
    new = {model._meta.table_name: sum(1 for _ in rows) for model, rows in marketplace(1, BIG)}
    env = {**os.environ, "EMBEDDB_DATABASE_URL": cli_db_url, "EMBEDDB_SEEDS_DIR": str(small_sets)}
    command = [sys.executable, "-c", "from embeddb.cli import main; main()", "seed", "big",
               "--fresh"]
    landed = _killed_runs(command, cli_db_url, old, new, env, kills=4, folder=small_sets)
    assert landed >= 1


def test_setup_killed_at_any_point_leaves_empty_or_seeded_tables(tmp_path, small_sets):
    """`embeddb setup` on a new file: its seed is all or nothing, whatever kills it."""
    import random

    url = f"sqlite:///{tmp_path / 'setup.db'}"
    env = {**os.environ, "EMBEDDB_DATABASE_URL": url}
    _write_set(small_sets, "big", f"BIG = Sizes(**{BIG.__dict__!r})\n"
                                  "def build(seed):\n    return marketplace(seed, BIG)\n")
    command = [sys.executable, "-c", "from embeddb.cli import main; main()", "setup", "--env",
               "big", "--no-backup", "--migrations", str(ROOT / "migrations"), "--seeds", str(small_sets)]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    full = time.perf_counter() - started
    new = _table_counts(url)
    landed = attempt = 0
    # Three tries, and more (each signalled sooner) until one lands: on a loaded machine a
    # run can finish well within the first one's time.
    while attempt < 3 or (landed == 0 and attempt < 8):
        attempt += 1
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp_path / 'setup.db'}{suffix}").unlink(missing_ok=True)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(random.uniform(0.5, 0.95) * full * 0.7 ** (attempt - 1 - landed))
        if process.poll() is None:
            landed += 1
            process.send_signal(signal.SIGINT if attempt % 2 == 0 else signal.SIGKILL)
        process.wait(timeout=120)
        if (tmp_path / "setup.db").exists() and "users" in embeddb.connect(url).get_tables():
            counts = _table_counts(url)
            assert counts in (new, dict.fromkeys(new, 0)), f"attempt {attempt}: {counts}"
    assert landed >= 1


def test_the_summary_says_what_changed(cli_db_url, small_sets):
    """A re-run that changes nothing says so; --fresh says what it deleted (item 9)."""
    db = embeddb.connect(cli_db_url)
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    runner = CliRunner()
    base = ["seed", "small", "--db", cli_db_url, "--seeds", str(small_sets)]
    first = runner.invoke(cli, base)
    total = sum(embeddb.seed.count_rows(db, [m._meta.table_name
                                             for m, _ in marketplace(1, SMALL)]).values())
    assert first.exit_code == 0 and f"{total:,} rows changed, 0 unchanged" in first.output
    again = runner.invoke(cli, base)
    assert f": 0 rows changed, {total:,} unchanged" in again.output, again.output
    fresh = runner.invoke(cli, [*base, "--fresh", "--json"])
    summary = json.loads(fresh.output)
    assert sum(summary["deleted"].values()) == total
    assert sum(summary["changed"].values()) == total
    with db.atomic():
        db.execute_sql("UPDATE users SET chain_id = chain_id + 1 WHERE id IN "
                       "(SELECT id FROM users ORDER BY id LIMIT 3)")
    three = runner.invoke(cli, base)
    assert f": 3 rows changed, {total - 3:,} unchanged" in three.output, three.output


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS app_writes (n INTEGER, waited REAL)")
print("ready", flush=True)
n = 0
while True:
    try:
        open(sys.argv[3]).close()
        break
    except FileNotFoundError:
        pass
    start = time.monotonic()
    try:
        conn.execute("INSERT INTO app_writes VALUES (?, ?)", (n, 0))
        print(f"ok {time.monotonic() - start:.3f}", flush=True)
    except sqlite3.OperationalError as exc:
        print(f"error {exc}", flush=True)
    n += 1
    time.sleep(0.02)
"""


def _seed_beside_a_writer(tmp_path, small_sets, **options) -> tuple[list[float], list[str], float]:
    """Seed the big set while another process writes with a 2 s busy timeout; the writer's
    waits, its errors, and how long the seed took."""
    _write_set(small_sets, "big", f"BIG = Sizes(**{BIG.__dict__!r})\n"
                                  "def build(seed):\n    return marketplace(seed, BIG)\n")
    path = tmp_path / "app.db"
    db = embeddb.connect(f"sqlite:///{path}")
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "2", str(stop)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    embeddb.seed.run(db, "big", directory=small_sets, **options)
    took = time.perf_counter() - started
    stop.touch()
    out, _ = writer.communicate(timeout=30)
    db.close()
    waits = [float(line.split()[1]) for line in out.splitlines() if line.startswith("ok")]
    errors = [line for line in out.splitlines() if line.startswith("error")]
    return waits, errors, took


def test_a_long_seed_lets_the_apps_writers_in(tmp_path, small_sets):
    """By default a seed commits every ~lock_bound seconds: a writer with a busy timeout much
    shorter than the whole seed never fails and never waits much more than the bound."""
    waits, errors, took = _seed_beside_a_writer(tmp_path, small_sets, lock_bound=0.05)
    assert errors == []
    # the seed spans several bounds even on an idle machine (~0.3 s), so the writer gets in
    # several times; one transaction holding the lock throughout would allow one write at most
    assert took > 0.15, took
    assert len(waits) >= 3 and max(waits) < 1.0, (waits, took)


def test_an_atomic_seed_holds_the_lock_throughout(tmp_path, small_sets):
    """The contrast, and the price of all-or-nothing: the writer waits for the whole seed."""
    waits, errors, took = _seed_beside_a_writer(tmp_path, small_sets, atomic=True)
    assert max(waits + [0.0]) > 0.6 * took or errors, (waits, took)


def test_a_killed_seed_resumes_on_the_next_run(tmp_path, small_sets):
    """Outside one transaction a kill keeps what was committed (never more rows than the set
    has, nothing deleted); running it again (the set is idempotent) completes every table."""
    _write_set(small_sets, "big", f"BIG = Sizes(**{BIG.__dict__!r})\n"
                                  "def build(seed):\n    return marketplace(seed, BIG)\n")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    db = embeddb.connect(url)
    embeddb.migrate.up(db, ROOT / "migrations", backup=False)
    db.close()
    env = {**os.environ, "EMBEDDB_DATABASE_URL": url, "EMBEDDB_SEEDS_DIR": str(small_sets)}
    command = [sys.executable, "-c", "from embeddb.cli import main; main()", "seed", "big"]
    full = {model._meta.table_name: sum(1 for _ in rows) for model, rows in marketplace(1, BIG)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _table_counts(url)["users"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # its first transactions have committed
    process.kill()
    process.wait(timeout=60)
    partial = _table_counts(url)
    assert all(partial[table] <= full[table] for table in full), partial
    assert partial != full and partial["users"] > 0  # killed part-way, rows it got to kept
    assert subprocess.run(command, env=env, capture_output=True).returncode == 0
    assert _table_counts(url) == full


def test_a_bad_lock_bound_is_refused(migrated, small_sets):
    with pytest.raises(SeedError, match="lock_bound=0: must be 0.01 to 3600"):
        embeddb.seed.run(migrated, "small", directory=small_sets, lock_bound=0)


def test_an_unknown_set_creates_no_database(tmp_path, small_sets):
    target = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["seed", "nope", "--db", f"sqlite:///{target}",
                                      "--seeds", str(small_sets)])
    assert result.exit_code == 1 and "no seed set 'nope'" in result.output
    assert not target.exists()


def test_setup_cli_with_the_default_dev_set_twice_changes_no_row(tmp_path):
    """The dev set as shipped (rows made by a forked worker process) through the real CLI: the
    second run writes the same rows, so nothing changes, and the content is identical."""
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    command = [sys.executable, "-c", "from embeddb.cli import main; main()", "setup", "--env",
               "dev", "--db", url, "--migrations", str(ROOT / "migrations"), "--seeds",
               str(ROOT / "seeds"), "--json"]
    runs = [json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                      timeout=300).stdout)]
    db = embeddb.connect(url)
    first = content_hashes(db)
    runs.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                          timeout=300).stdout))
    assert content_hashes(db) == first
    assert sum(runs[0]["rows"].values()) == sum(int(h.split(":")[0]) for h in first.values())
    assert first["users"].split(":")[0] != "0"
    db.close()


def test_seed_cli_seed_option_chooses_the_data_set(tmp_path, small_sets):
    def seeded(name: str, value: str) -> dict[str, str]:
        url = f"sqlite:///{tmp_path / name}"
        db = embeddb.connect(url)
        embeddb.migrate.up(db, ROOT / "migrations", backup=False)
        done = CliRunner().invoke(cli, ["seed", "small", "--seed", value, "--db", url,
                                        "--seeds", str(small_sets)])
        assert done.exit_code == 0 and f"Seeded small (seed {value})" in done.output
        hashes = content_hashes(db)
        db.close()
        return hashes

    seven = seeded("a.db", "7")
    assert seeded("b.db", "7") == seven  # same seed, same rows
    assert seeded("c.db", "8") != seven
    bad = CliRunner().invoke(cli, ["seed", "small", "--seed", "many", "--db",
                                   f"sqlite:///{tmp_path / 'd.db'}", "--seeds", str(small_sets)])
    assert bad.exit_code == 2 and "'many' is not a valid integer" in bad.output
