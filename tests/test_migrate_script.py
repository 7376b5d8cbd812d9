"""Cutting scripts into statements: SQLite's tokenizer and the PostgreSQL scanner."""

from __future__ import annotations

import pytest

from embeddb.migrate.files import checksum
from embeddb.migrate.script import may_control_transaction, normalize, split_postgres, split_sqlite


def sqls(statements):
    return [s.sql for s in statements]


@pytest.mark.parametrize("split", [split_sqlite, split_postgres])
def test_common_cases(split):
    text = (
        "-- comment; here\n"
        "CREATE TABLE a (x TEXT DEFAULT ';', \"we;ird\" INT);  /* c; */ CREATE TABLE b (y INT);\n"
        ";;\n"
        "INSERT INTO a VALUES ('it''s; fine')\n"
        "-- trailing comment\n"
    )
    statements = split(text)
    assert sqls(statements) == [
        "CREATE TABLE a (x TEXT DEFAULT ';', \"we;ird\" INT);",
        "CREATE TABLE b (y INT);",
        "INSERT INTO a VALUES ('it''s; fine')\n-- trailing comment",
    ]
    assert [s.line for s in statements] == [2, 2, 4]


def test_sqlite_trigger_body_is_one_statement():
    text = "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n INSERT INTO b VALUES (1);\n END;\nSELECT 1;"
    assert sqls(split_sqlite(text)) == [
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n INSERT INTO b VALUES (1);\n END;", "SELECT 1;"]


def test_postgres_dollar_quotes_nested_comments_and_escape_strings():
    text = (
        "CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN RETURN 1; END; $fn$ LANGUAGE plpgsql;\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "/* outer /* inner; */ still comment; */ SELECT $1, a$b FROM t;\n"
        "SELECT E'a\\'; b';\n"
    )
    assert sqls(split_postgres(text)) == [
        "CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN RETURN 1; END; $fn$ LANGUAGE plpgsql;",
        "DO $$ BEGIN PERFORM 1; END $$;",
        "SELECT $1, a$b FROM t;",
        "SELECT E'a\\'; b';",
    ]


@pytest.mark.parametrize("sql, controls", [
    ("BEGIN;", True), ("begin transaction;", True), ("START TRANSACTION;", True),
    ("COMMIT;", True), ("END;", True), ("ROLLBACK;", True),
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;", False),
    ("DO $$ BEGIN END $$;", False),
])
def test_transaction_control_is_detected(sql, controls):
    [statement] = split_sqlite(sql)
    assert statement.controls_transaction is controls


def test_line_endings_do_not_change_the_checksum_or_the_lines():
    text = "CREATE TABLE a (x INT);\n\nCREATE TABLE b (y INT);\n"
    crlf = text.replace("\n", "\r\n")
    assert checksum(text) == checksum(crlf) == checksum("\ufeff" + crlf)
    assert checksum(text) != checksum(text + "-- edit\n")
    assert [s.line for s in split_sqlite(normalize(crlf))] == [1, 3]


@pytest.mark.parametrize("text, maybe", [
    ("CREATE TABLE a (x INT);\nINSERT INTO a VALUES ('beginning', 'ended');", False),
    ("CREATE TABLE legend (end_date TEXT, committed INT, rollbacks INT);", False),
    ("BEGIN;\nCREATE TABLE a (x INT);\ncommit;", True),
    ("SELECT CASE WHEN 1 THEN 2 END;", True),
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;", True),
    ("INSERT INTO a VALUES ('rollback'); -- or a comment: End", True),
])
def test_may_control_transaction_is_never_wrong_when_it_says_no(text, maybe):
    assert may_control_transaction(text) is maybe
    if not maybe:
        for split in (split_sqlite, split_postgres):
            assert not any(s.controls_transaction for s in split(text))
