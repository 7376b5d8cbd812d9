"""Index advice: which columns of a statement an index on a scanned table should hold.

Read from the statement's text: the equality columns of its WHERE and JOIN ... ON clauses
first (in the order they appear), then one range column, or else the ORDER BY columns; only
columns the table really has, and never an index the table already leads with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r'"?([A-Za-z_][\w$]*)"?'
_NOT_ALIAS = ("where", "join", "on", "left", "right", "inner", "outer", "cross", "full", "order",
              "group", "limit", "offset", "natural", "using", "having", "union", "window",
              "set", "values", "returning")
_TABLES = re.compile(
    rf"\b(?:FROM|JOIN)\s+(?:{_NAME}\.)?{_NAME}"
    rf"(?:\s+(?:AS\s+)?(?!(?:{'|'.join(_NOT_ALIAS)})\b){_NAME})?", re.I)
_COLUMN = rf"(?:{_NAME}\.)?{_NAME}"
_EQUALITY = re.compile(rf"{_COLUMN}\s*(?:=|\bIN\s*\(|\bIS\s+(?!NOT\b))\s*(?:{_COLUMN})?", re.I)
_RANGE = re.compile(rf"{_COLUMN}\s*(?:<=|>=|<|>|\bBETWEEN\b|\bLIKE\s+'[^%_']+%')", re.I)
_CLAUSES = re.compile(r"\b(WHERE|ON)\b(.*?)(?=\bGROUP\s+BY\b|\bORDER\s+BY\b|\bLIMIT\b|"
                      r"\bJOIN\b|\bLEFT\b|\bINNER\b|\bWHERE\b|\bHAVING\b|\bUNION\b|\)|$)",
                      re.I | re.S)
_ORDER = re.compile(r"\bORDER\s+BY\b(.*?)(?=\bLIMIT\b|\bOFFSET\b|\)|$)", re.I | re.S)
_STRING = re.compile(r"'(?:[^']|'')*'")


@dataclass(frozen=True)
class Suggestion:
    """An index to create, and why."""

    table: str
    columns: tuple[str, ...]
    reason: str

    @property
    def name(self) -> str:
        return "_".join(["idx", self.table, *self.columns])[:63]

    @property
    def sql(self) -> str:
        cols = ", ".join(f'"{c}"' for c in self.columns)
        return f'CREATE INDEX "{self.name}" ON "{self.table}" ({cols});'


def aliases(sql: str) -> dict[str, str]:
    """``{alias or name: table}`` for each table after FROM or JOIN."""
    found: dict[str, str] = {}
    for _schema, table, alias in _TABLES.findall(_STRING.sub("''", sql)):
        found[table] = table
        if alias:
            found[alias] = table
    return found


def _belongs(qualifier: str, column: str, table: str, names: dict[str, str],
             columns: set[str], alias: str | None) -> bool:
    if column not in columns:
        return False
    if qualifier:
        if alias and alias != table:  # the table appears under this name in the plan
            return qualifier == alias
        return names.get(qualifier) == table
    return True


def suggest(sql: str, table: str, columns: set[str], existing: list[tuple[str, ...]],
            alias: str | None = None) -> Suggestion | None:
    """The index that would let ``sql`` search ``table`` instead of scanning it (``columns``:
    the table's columns; ``existing``: the column lists of its indexes, primary key first;
    ``alias``: the name the plan gives the scanned table, when the statement names it twice)."""
    text = _STRING.sub("''", sql)
    names = aliases(text)
    equal: list[str] = []
    ranged: list[str] = []
    for _kind, body in _CLAUSES.findall(text):
        for match in _EQUALITY.finditer(body):
            q1, c1, q2, c2 = match.groups()
            for qualifier, column in ((q1, c1), (q2, c2)):
                if column and _belongs(qualifier or "", column, table, names, columns, alias) \
                        and column not in equal:
                    equal.append(column)
        for q, c in _RANGE.findall(body):
            if _belongs(q, c, table, names, columns, alias) and c not in equal and c not in ranged:
                ranged.append(c)
    order: list[str] = []
    ordering = _ORDER.search(text)
    if ordering:
        for item in ordering.group(1).split(","):
            found = re.match(rf"\s*{_COLUMN}", item)
            if not found or not _belongs(found.group(1) or "", found.group(2), table, names,
                                         columns, alias):
                order = []  # an ORDER BY across tables or on an expression: no index serves it
                break
            if found.group(2) not in equal:
                order.append(found.group(2))
    chosen = tuple(equal + (ranged[:1] if ranged else order))
    if not chosen:
        return None
    if any(index[:len(chosen)] == chosen for index in existing):
        return None
    parts = []
    if equal:
        parts.append(f"equality on {', '.join(equal)}")
    if ranged:
        parts.append(f"range on {ranged[0]}")
    elif order:
        parts.append(f"ORDER BY {', '.join(order)}")
    return Suggestion(table, chosen, "; ".join(parts))
