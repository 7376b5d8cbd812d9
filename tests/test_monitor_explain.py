"""EXPLAIN trees, warnings and index suggestions that really make the plan use an index."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner
from dropped_privileges import as_user, needs_root, shared_directory

import embeddb
from embeddb.cli import cli
from embeddb.errors import DatabaseError, InvalidQueryError

ROWS = 20_000


@pytest.fixture
def big(cli_db_url):
    """A file database (or PG schema) with an ``orders`` table of ROWS rows, analyzed."""
    db = embeddb.connect(cli_db_url)
    key = "INTEGER PRIMARY KEY" if db.backend == "sqlite" else "SERIAL PRIMARY KEY"
    db.execute_sql(f"CREATE TABLE orders (id {key}, customer INTEGER NOT NULL, "
                   "status TEXT NOT NULL, placed REAL NOT NULL)")
    if db.backend == "sqlite":
        db.execute_sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO orders (customer, status, placed) "
            "SELECT i % 500, CASE i % 3 WHEN 0 THEN 'open' ELSE 'done' END, i FROM n", (ROWS,))
    else:
        db.execute_sql(
            "INSERT INTO orders (customer, status, placed) SELECT mod(i, 500), "
            "CASE mod(i, 3) WHEN 0 THEN 'open' ELSE 'done' END, i FROM generate_series(1, %s) i",
            (ROWS,))
    db.execute_sql("ANALYZE orders")
    yield db
    db.close()


def p(db) -> str:
    return "?" if db.backend == "sqlite" else "%s"


def searches_with(plan, index: str) -> bool:
    """Whether some step of ``plan`` looks rows up (not scans them) through ``index``."""
    pattern = (rf"SEARCH \S+ USING (?:COVERING )?INDEX {index} \(" if plan.backend == "sqlite"
               else rf"(?:Index Scan|Index Only Scan|Bitmap Index Scan)\b.* using index "
                    rf"{index} \(Index Cond: ")
    return any(re.match(pattern, n.detail) for root in plan.nodes for n in root.walk())


QUERY = "SELECT id, placed FROM orders WHERE customer = {p} AND status = {p} ORDER BY placed"


def test_a_scan_is_warned_about_and_the_suggestion_fixes_it(big):
    sql = QUERY.format(p=p(big))
    plan = big.monitor.explain(sql, (7, "open"))
    assert plan.scans == ["orders"] and not plan.uses_index
    assert any(w.startswith("full scan of orders") for w in plan.warnings)
    assert [s.sql for s in plan.suggestions] == [
        'CREATE INDEX "idx_orders_customer_status_placed" ON "orders" '
        '("customer", "status", "placed");']
    big.execute_sql(plan.suggestions[0].sql)
    big.execute_sql("ANALYZE orders")
    after = big.monitor.explain(sql, (7, "open"))
    assert after.scans == [] and searches_with(after, "idx_orders_customer_status_placed")
    assert not any("sort" in w.lower() for w in after.warnings)  # the index gives the order
    assert after.suggestions == []  # nothing more to suggest


def test_range_column_comes_after_the_equality_columns(big):
    sql = f"SELECT id FROM orders WHERE placed > {p(big)} AND customer = {p(big)}"
    plan = big.monitor.explain(sql, (100, 3))
    assert plan.suggestions[0].columns == ("customer", "placed")
    big.execute_sql(plan.suggestions[0].sql)
    big.execute_sql("ANALYZE orders")
    assert searches_with(big.monitor.explain(sql, (100, 3)), "idx_orders_customer_placed")


def test_sorts_and_correlated_subqueries_are_warned(big):
    sort = big.monitor.explain("SELECT * FROM orders ORDER BY placed DESC, customer")
    assert any("sort" in w.lower() for w in sort.warnings)
    correlated = big.monitor.explain(
        "SELECT id, (SELECT count(*) FROM orders o2 WHERE o2.customer = o.id) FROM orders o")
    assert any("correlated" in w for w in correlated.warnings)


def test_a_small_table_scan_is_no_warning(cli_db_url):
    db = embeddb.connect(cli_db_url)
    db.execute_sql("CREATE TABLE tiny (id INTEGER PRIMARY KEY, x INTEGER)")
    plan = db.monitor.explain(f"SELECT * FROM tiny WHERE x = {p(db)}", (1,))
    assert plan.scans == ["tiny"] and plan.warnings == []
    db.close()


def test_analyze_runs_the_statement_and_rolls_it_back(big):
    plan = big.monitor.explain(f"DELETE FROM orders WHERE customer = {p(big)}", (1,),
                               analyze=True)
    assert plan.actual is not None
    assert big.execute_sql("SELECT count(*) FROM orders").fetchone()[0] == ROWS
    select = big.monitor.explain(QUERY.format(p=p(big)), (7, "open"), analyze=True)
    assert select.actual["rows"] == len([i for i in range(1, ROWS + 1)
                                         if i % 500 == 7 and i % 3 == 0])


def test_a_bad_statement_is_a_database_error(big):
    with pytest.raises(DatabaseError):
        big.monitor.explain("SELECT * FROM nowhere")


def test_cli_explain_text_and_json(big, cli_db_url):
    runner = CliRunner()
    sql = QUERY.format(p=p(big))
    result = runner.invoke(cli, ["--db", cli_db_url, "explain", sql, "--param", "7",
                                 "--param", "open"])
    assert result.exit_code == 0, result.output
    assert "QUERY PLAN" in result.output and "WARN full scan of orders" in result.output
    assert "SUGGEST CREATE INDEX" in result.output
    result = runner.invoke(cli, ["--db", cli_db_url, "explain", sql, "--param", "7",
                                 "--param", "open", "--json", "--analyze"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["full_scans"] == ["orders"] and data["actual"]["rows"] > 0
    assert data["suggestions"][0]["columns"] == ["customer", "status", "placed"]


def test_cli_explain_error_is_one_line(big, cli_db_url):
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "explain", "SELECT * FROM nowhere"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "nowhere" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "explain", "SELECT * FROM nowhere",
                                      "--json"])
    assert result.exit_code == 1 and "nowhere" in json.loads(result.stdout)["error"]


def test_advise_in_process_uses_the_first_run_parameters(big):
    big.monitor.enable(publish=False)
    sql = QUERY.format(p=p(big))
    for customer in range(3):
        big.execute_sql(sql, (customer, "open")).fetchall()
    big.execute_sql(f"SELECT * FROM orders WHERE id = {p(big)}", (5,)).fetchall()
    advice = big.monitor.advise()
    assert [a["statement"] for a in advice] == [
        "SELECT id, placed FROM orders WHERE customer = ? AND status = ? ORDER BY placed"]
    assert advice[0]["calls"] == 3
    assert advice[0]["suggestions"][0]["columns"] == ["customer", "status", "placed"]
    big.monitor.disable()


def test_a_limited_scan_without_order_is_not_a_full_scan(big):
    plan = big.monitor.explain(f"SELECT * FROM orders WHERE status = {p(big)} LIMIT 5", ("x",))
    assert plan.scans == [] and plan.suggestions == []


def test_a_scanned_subquery_is_not_taken_for_a_table(big):
    sql = ("SELECT o.id FROM orders o JOIN (SELECT customer, count(*) AS n FROM orders "
           "GROUP BY customer) AS per ON per.customer = o.customer ORDER BY per.n DESC LIMIT 3")
    plan = big.monitor.explain(sql)
    assert "per" not in plan.scans
    assert all(s.table == "orders" for s in plan.suggestions)


@pytest.mark.parametrize("extra", ["UPDATE orders SET customer = 777",
                                   "COMMIT; UPDATE orders SET customer = 777"])
@pytest.mark.parametrize("analyze", [False, True])
def test_several_statements_are_refused_and_nothing_runs(big, cli_db_url, extra, analyze):
    sql = f"SELECT 1; {extra}"
    with pytest.raises(InvalidQueryError, match="one statement") as raised:
        big.monitor.explain(sql, analyze=analyze)
    assert sql in str(raised.value)
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "explain", sql, "--json",
                                      *(["--analyze"] if analyze else [])])
    assert result.exit_code == 1 and "one statement" in json.loads(result.stdout)["error"]
    assert big.execute_sql("SELECT count(*) FROM orders WHERE customer = 777").fetchone()[0] == 0


@pytest.mark.parametrize("sql", ["SELECT 1;", "SELECT ';' AS a -- ; trailing\n",
                                 'SELECT 1 AS "x;y" /* ; */ ;'])
def test_semicolons_in_literals_comments_or_at_the_end_are_one_statement(big, sql):
    assert big.monitor.explain(sql).nodes


def _explain_as_other_user(url: str) -> list:
    result = CliRunner().invoke(cli, ["--db", url, "explain", "SELECT * FROM orders"])
    analyzed = CliRunner().invoke(cli, ["--db", url, "explain", "SELECT * FROM orders",
                                        "--analyze"])
    return [result.exit_code, result.output, analyzed.exit_code, analyzed.output]


@needs_root
def test_explain_opens_a_file_it_cannot_write_read_only(tmp_path):
    with shared_directory() as home:
        data = home.parent / "data"  # root's, 0755: the other user can write nothing here
        data.mkdir(mode=0o755)
        path = data / "app.db"
        db = embeddb.connect(f"sqlite:///{path}")
        db.execute_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER)")
        db.close()
        os.chmod(path, 0o444)
        code, output, analyzed_code, analyzed = as_user(_explain_as_other_user,
                                                        f"sqlite:///{path}")
        assert code == 0 and "SCAN orders" in output, output
        assert analyzed_code == 1 and "app.db" in analyzed, analyzed  # --analyze needs writes


def test_a_scan_through_a_covering_index_is_a_full_scan(big):
    big.execute_sql("CREATE INDEX idx_orders_customer_placed ON orders (customer, placed)")
    sql = f"SELECT customer, placed FROM orders WHERE placed > {p(big)}"
    plan = big.monitor.explain(sql, (ROWS - 10,))
    assert plan.scans == ["orders"], plan.render()
    assert any(w.startswith("full scan of orders") for w in plan.warnings)
    assert not searches_with(plan, "idx_orders_customer_placed")
    assert plan.suggestions[0].columns == ("placed",)
    big.execute_sql(plan.suggestions[0].sql)
    assert searches_with(big.monitor.explain(sql, (ROWS - 10,)), "idx_orders_placed")


def test_a_literal_percent_and_question_mark_placeholders_on_every_backend(big, cli_db_url):
    assert big.monitor.explain("SELECT id FROM orders WHERE status LIKE '100%'").nodes
    sql = "SELECT id FROM orders WHERE status LIKE 'op%' AND customer = ? AND status <> '?'"
    plan = big.monitor.explain(sql, (7,))
    assert plan.scans == ["orders"] and plan.suggestions[0].columns == ("customer", "status")
    result = CliRunner().invoke(cli, ["--db", cli_db_url, "explain", sql, "--param", "7"])
    assert result.exit_code == 0, result.output
    assert "SUGGEST CREATE INDEX" in result.output
    plan = big.monitor.explain(sql, (7,), analyze=True)
    assert plan.actual["rows"] > 0
