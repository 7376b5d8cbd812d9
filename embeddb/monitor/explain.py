"""EXPLAIN as a tree, with warnings and index suggestions.

SQLite: ``EXPLAIN QUERY PLAN``; PostgreSQL: ``EXPLAIN (FORMAT JSON)``, with ``ANALYZE, BUFFERS``
only when asked, since that runs the statement (it then runs in a transaction rolled back
afterwards, on SQLite too, so an explained write changes nothing). The two backends' plan
formats are read by the two planner classes below; everything after that is shared.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .advice import Suggestion, suggest
from .statements import code_spans

#: a full scan of a table with at least this many rows is worth a warning
LARGE_TABLE = 1000
_LIMIT = re.compile(r"\bLIMIT\b", re.I)
#: every row of a table, read from the table or from an index (covering or not)
_SQLITE_SCAN = re.compile(r"SCAN (\S+)(?: USING (?:COVERING )?INDEX \S+)?$")
_ORDER_BY = re.compile(r"\b(ORDER|GROUP)\s+BY\b|\bDISTINCT\b|\b(count|sum|avg|min|max)\s*\(", re.I)


@dataclass
class PlanNode:
    """One step of a plan."""

    detail: str
    table: str | None = None  # the table a scan reads in full
    children: list[PlanNode] = field(default_factory=list)
    alias: str | None = None  # the name the statement gives that table
    rows: float | None = None  # the planner's estimate (PostgreSQL)

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "table": self.table,
                "children": [c.as_dict() for c in self.children]}

    def walk(self) -> list[PlanNode]:
        return [self, *(n for c in self.children for n in c.walk())]


@dataclass
class Plan:
    """What ``db.monitor.explain(sql)`` returns."""

    backend: str
    sql: str
    nodes: list[PlanNode]
    warnings: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)
    actual: dict[str, Any] | None = None  # with analyze: what running it took
    raw: Any = None

    @property
    def uses_index(self) -> bool:
        """Whether some step reads through an index."""
        return any(re.search(r"\bindex\b", n.detail, re.I) for r in self.nodes for n in r.walk())

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "sql": self.sql,
            "plan": [n.as_dict() for n in self.nodes],
            "full_scans": self.scans,
            "warnings": self.warnings,
            "suggestions": [{"table": s.table, "columns": list(s.columns), "reason": s.reason,
                             "sql": s.sql} for s in self.suggestions],
            "actual": self.actual,
        }

    def render(self) -> str:
        """The plan as an indented tree, then warnings and suggestions."""
        lines = ["QUERY PLAN"]

        def draw(nodes: list[PlanNode], prefix: str) -> None:
            for i, node in enumerate(nodes):
                last = i == len(nodes) - 1
                lines.append(f"{prefix}{'`--' if last else '|--'}{node.detail}")
                draw(node.children, prefix + ("   " if last else "|  "))

        draw(self.nodes, "")
        if self.actual:
            lines.append(f"actual: {self.actual['rows']} rows in {self.actual['ms']} ms")
        for warning in self.warnings:
            lines.append(f"WARN {warning}")
        for suggestion in self.suggestions:
            lines.append(f"SUGGEST {suggestion.sql}  -- {suggestion.reason}")
        return "\n".join(lines)


class SqlitePlanner:
    """Reads ``EXPLAIN QUERY PLAN`` rows (id, parent, -, detail)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def plan(self, sql: str, params: Any) -> tuple[list[PlanNode], Any]:
        rows = self.db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params or ()).fetchall()
        names = _aliases(sql)
        nodes: dict[int, PlanNode] = {}
        roots: list[PlanNode] = []
        for node_id, parent, _unused, detail in rows:
            scan = _SQLITE_SCAN.match(detail)
            table = names.get(scan.group(1), scan.group(1)) if scan else None
            node = nodes[node_id] = PlanNode(detail, table, alias=scan.group(1) if scan else None)
            (nodes[parent].children if parent in nodes else roots).append(node)
        return roots, rows

    def warnings(self, node: PlanNode) -> list[str]:
        found = re.match(r"USE TEMP B-TREE FOR (.+)", node.detail)
        if found:
            return [f"a temporary B-tree sorts the rows for {found.group(1)}: an index in that "
                    "order avoids it"]
        if node.detail.startswith("CORRELATED"):
            return [f"{node.detail.lower()}: the subquery runs once per row of the outer "
                    "query; a JOIN usually does better"]
        return []

    def is_table(self, name: str) -> bool:
        """Whether a scanned name is a table (not a subquery or CTE the plan names)."""
        return self.db.execute_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone() is not None

    def row_count(self, table: str, at_least: int) -> int:
        return self.db.execute_sql(
            f'SELECT count(*) FROM (SELECT 1 FROM "{table}" LIMIT {at_least})').fetchone()[0]

    def columns(self, table: str) -> tuple[set[str], list[tuple[str, ...]]]:
        info = self.db.execute_sql(f"PRAGMA table_info(\"{table}\")").fetchall()
        columns = {r[1] for r in info}
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        indexes = [pk] if pk else []
        for row in self.db.execute_sql(f"PRAGMA index_list(\"{table}\")").fetchall():
            cols = self.db.execute_sql(f"PRAGMA index_info(\"{row[1]}\")").fetchall()
            indexes.append(tuple(c[2] for c in sorted(cols)))
        return columns, indexes

    def analyze(self, sql: str, params: Any) -> tuple[dict[str, Any], Any]:
        with self.db.atomic() as txn:
            start = time.perf_counter()
            rows = self.db.execute_sql(sql, params or ()).fetchall()
            took = time.perf_counter() - start
            txn.rollback()
        return {"rows": len(rows), "ms": round(took * 1000, 3)}, None


class PostgresPlanner:
    """Reads ``EXPLAIN (FORMAT JSON)`` documents."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._analyzed: Any = None

    def plan(self, sql: str, params: Any, analyze: bool = False) -> tuple[list[PlanNode], Any]:
        if self._analyzed is not None:
            document = self._analyzed
        elif params and all(p is None for p in params):
            document = self._generic(sql, len(params))
        else:
            sql, params = self.bind(sql, params)
            row = self.db.execute_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone()
            document = _document(row)
        return [self._node(document[0]["Plan"])], document

    @staticmethod
    def bind(sql: str, params: Any) -> tuple[str, Any]:
        """``sql`` and ``params`` as psycopg2 takes them: it reads every ``%`` as the start of a
        placeholder (peewee always passes a tuple, even an empty one), so without parameters
        each ``%`` is doubled (``LIKE '100%'``); ``?`` placeholders become ``%s``, the other
        ``%`` signs then doubled too."""
        if not params:
            return sql.replace("%", "%%"), ()
        marks = [(b, e) for b, e, kind in code_spans(sql) if kind == "?" and sql[b:e] == "?"]
        if not marks:
            return sql, params
        parts, last = [], 0
        for begin, end in marks:
            parts += [sql[last:begin].replace("%", "%%"), "%s"]
            last = end
        return "".join(parts) + sql[last:].replace("%", "%%"), params

    def _generic(self, sql: str, count: int) -> Any:
        """The generic plan, for parameters unknown (all NULL): bound as NULL literals the
        planner would fold ``col = NULL`` to "no rows" and show no scan at all."""
        marks = [(b, e) for b, e, kind in code_spans(sql) if kind == "?"]
        parts, last = [], 0
        for number, (begin, end) in enumerate(marks, 1):
            parts += [sql[last:begin], f"${number}"]
            last = end
        numbered = "".join(parts) + sql[last:]
        nulls = ", ".join(["NULL"] * len(marks))
        with self.db.atomic():
            self.db.execute_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            self.db.execute_sql(f"PREPARE embeddb_explain AS {numbered}")
            try:
                row = self.db.execute_sql(
                    f"EXPLAIN (FORMAT JSON) EXECUTE embeddb_explain"
                    f"{f'({nulls})' if marks else ''}").fetchone()
            finally:
                self.db.execute_sql("DEALLOCATE embeddb_explain")
        return _document(row)

    def _node(self, plan: dict[str, Any]) -> PlanNode:
        kind = plan["Node Type"]
        detail = kind
        if plan.get("Relation Name"):
            detail += f" on {plan['Relation Name']}"
            if plan.get("Alias") and plan["Alias"] != plan["Relation Name"]:
                detail += f" {plan['Alias']}"
        if plan.get("Index Name"):
            detail += f" using index {plan['Index Name']}"
        for key in ("Index Cond", "Filter", "Sort Key", "Group Key", "Hash Cond"):
            if plan.get(key):
                value = plan[key]
                detail += f" ({key}: {', '.join(value) if isinstance(value, list) else value})"
        if plan.get("Parent Relationship") == "SubPlan":
            detail = f"SubPlan: {detail}"
        if "Actual Rows" in plan:
            detail += f" [actual rows={plan['Actual Rows']} loops={plan.get('Actual Loops')}]"
        if plan.get("Sort Space Type") == "Disk":
            detail += " [sorted on disk]"
        table = plan.get("Relation Name") if kind == "Seq Scan" else None
        return PlanNode(detail, table, [self._node(p) for p in plan.get("Plans", [])],
                        alias=plan.get("Alias") if table else None, rows=plan.get("Plan Rows"))

    def warnings(self, node: PlanNode) -> list[str]:
        big = (node.rows or 0) >= LARGE_TABLE or "on disk" in node.detail
        if node.detail.startswith(("Sort", "Incremental Sort")) and big:
            return [f"{node.rows:.0f} rows are sorted ({node.detail}): an index in that order "
                    "avoids it"]
        if node.detail.startswith("SubPlan"):
            return [f"a correlated subquery runs once per row ({node.detail}); a JOIN usually "
                    "does better"]
        return []

    def is_table(self, name: str) -> bool:
        return True  # a Seq Scan always names a relation

    def row_count(self, table: str, at_least: int) -> int:
        row = self.db.execute_sql(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            (f'"{table}"',)).fetchone()
        if row and row[0] is not None and row[0] >= 0:
            return int(row[0])
        return self.db.execute_sql(
            f'SELECT count(*) FROM (SELECT 1 FROM "{table}" LIMIT {at_least}) AS x').fetchone()[0]

    def columns(self, table: str) -> tuple[set[str], list[tuple[str, ...]]]:
        columns = {r[0] for r in self.db.execute_sql(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
            "AND NOT attisdropped", (f'"{table}"',)).fetchall()}
        indexes = [tuple(r[0]) for r in self.db.execute_sql(
            "SELECT array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(n, o) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) "
            "FROM pg_index i WHERE i.indrelid = to_regclass(%s) ORDER BY NOT i.indisprimary",
            (f'"{table}"',)).fetchall()]
        return columns, indexes

    def analyze(self, sql: str, params: Any) -> tuple[dict[str, Any], Any]:
        sql, params = self.bind(sql, params)
        with self.db.atomic() as txn:
            row = self.db.execute_sql(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params).fetchone()
            txn.rollback()
        document = _document(row)
        self._analyzed = document
        top = document[0]
        return {"rows": top["Plan"].get("Actual Rows"),
                "ms": top.get("Execution Time")}, document


def _document(row: Any) -> Any:
    return row[0] if not isinstance(row[0], str) else json.loads(row[0])


def _aliases(sql: str) -> dict[str, str]:
    from .advice import aliases

    return aliases(sql)


def explain(db: Any, sql: str, params: Any = None, *, analyze: bool = False,
            large_table: int = LARGE_TABLE) -> Plan:
    """The plan of ``sql`` with ``params``, its warnings and the indexes that would help.

    :raises InvalidQueryError: ``sql`` holds more than one statement (the driver would run
        the others, and ``COMMIT; ...`` would escape the rollback of ``analyze``).
    :raises DatabaseError: the statement does not parse or names unknown tables.
    """
    from ..errors import InvalidQueryError
    from .statements import statement_count

    if statement_count(sql) > 1:
        raise InvalidQueryError(f"explain takes one statement, not several: {sql!r}; "
                                "explain them one at a time")
    planner: Any = SqlitePlanner(db) if db.dialect.name == "sqlite" else PostgresPlanner(db)
    actual = None
    if analyze:
        actual, _ = planner.analyze(sql, params)
    roots, raw = planner.plan(sql, params)
    plan = Plan(db.dialect.name, sql, roots, actual=actual, raw=raw)
    tables_sorted: list[str] = []
    scan_aliases: dict[str, str | None] = {}
    for root in roots:
        for node in root.walk():
            plan.warnings.extend(planner.warnings(node))
            if node.table and node.table not in plan.scans and planner.is_table(node.table):
                plan.scans.append(node.table)
                scan_aliases[node.table] = node.alias
    sorts = any(w.startswith("a temporary B-tree sorts") or " rows are sorted " in w
                for w in plan.warnings)
    if sorts:
        tables_sorted = [t for t in dict.fromkeys(_aliases(sql).values()) if planner.is_table(t)]
    stops_early = bool(_LIMIT.search(sql)) and not _ORDER_BY.search(sql)
    if stops_early:  # the scan ends after LIMIT rows: not a full scan, no index needed
        plan.scans = []
    for table in plan.scans:
        rows = planner.row_count(table, large_table)
        if rows >= large_table:
            plan.warnings.insert(0, f"full scan of {table} ({rows}+ rows)")
    for table in dict.fromkeys(plan.scans + (tables_sorted if len(tables_sorted) == 1 else [])):
        columns, indexes = planner.columns(table)
        if not columns:
            continue
        found = suggest(sql, table, columns, indexes, scan_aliases.get(table))
        if found is not None:
            plan.suggestions.append(found)
    return plan


def replayable(example: dict[str, Any]) -> list[Any]:
    """The parameters to EXPLAIN a published example with: its own, when they are all there
    and unmasked; else a NULL per placeholder (the plan then is the generic one)."""
    marks = sum(kind == "?" for _b, _e, kind in code_spans(example["sql"]))
    params = example.get("params") or []
    if example.get("redacted") or len(params) != marks or any(isinstance(p, dict) for p in params):
        return [None] * marks
    return list(params)


def review(db: Any, statements: list[tuple[str, str, Any]], limit: int,
           weights: dict[str, tuple[float, int]]) -> list[dict[str, Any]]:
    """Explain the ``limit`` costliest and ``limit`` most frequent of ``statements``
    (``(normalized, sql, params)``, weighted by ``weights[normalized] = (total_ms, calls)``);
    the ones with warnings or suggestions, costliest first."""
    from ..errors import EmbeddbError
    from .statements import is_select

    selects = [s for s in statements if is_select(s[0])]
    by_total = sorted(selects, key=lambda s: weights[s[0]][0], reverse=True)[:limit]
    by_calls = sorted(selects, key=lambda s: weights[s[0]][1], reverse=True)[:limit]
    chosen = {s[0]: s for s in by_total + by_calls}
    found: list[dict[str, Any]] = []
    for normalized, sql, params in chosen.values():
        try:
            plan = explain(db, sql, params)
        except EmbeddbError as exc:
            found.append({"statement": normalized, "error": str(exc)})
            continue
        if plan.warnings or plan.suggestions:
            total, calls = weights[normalized]
            found.append({"statement": normalized, "calls": calls,
                          "total_ms": round(total, 3), **plan.as_dict()})
    found.sort(key=lambda f: f.get("total_ms", 0), reverse=True)
    return found
