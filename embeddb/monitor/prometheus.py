"""Prometheus text exposition of the monitor's numbers (metric names ``embeddb_*``).

:func:`exposition` renders what ``embeddb stats --prometheus`` prints; :class:`Collector`
serves the same numbers from an app through ``prometheus_client`` (the ``metrics`` extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .statements import short

#: name -> (type, help, key in a statement's statistics, scale)
_STATEMENT_METRICS = {
    "embeddb_statement_calls_total": ("counter", "Statements run", "calls", 1),
    "embeddb_statement_errors_total": ("counter", "Statements that failed", "errors", 1),
    "embeddb_statement_rows_total": ("counter", "Rows returned or changed", "rows", 1),
    "embeddb_statement_seconds_total": ("counter", "Time spent in statements", "total_ms",
                                        0.001),
    "embeddb_statement_p95_seconds": ("gauge", "95th percentile of recent durations",
                                      "p95_ms", 0.001),
    "embeddb_statement_max_seconds": ("gauge", "Longest duration seen", "max_ms", 0.001),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def samples(view: dict[str, Any], database: str) -> Iterator[tuple[str, str, str, list]]:
    """``(name, type, help, [(labels, value)])`` for each metric of a stats view."""
    db = {"database": database}
    for name, (kind, text, key, scale) in _STATEMENT_METRICS.items():
        yield name, kind, text, [
            ({**db, "fingerprint": s["fingerprint"], "statement": short(s["statement"], 120)},
             s[key] * scale) for s in view["statements"]]
    totals = view["totals"]
    yield "embeddb_slow_queries", "gauge", "Slow statements in the recent log", \
        [(db, totals["slow"])]
    yield "embeddb_nplusone_findings", "gauge", "N+1 findings reported", \
        [(db, totals["nplusone"])]
    yield "embeddb_processes", "gauge", "Processes publishing statistics", \
        [(db, len(view["processes"]) if "processes" in view else 1)]  # no list: this process
    cache = view.get("cache")
    if cache:
        for key in ("hits", "misses"):
            yield f"embeddb_cache_{key}_total", "counter", f"Cache {key} per tier", [
                ({**db, "tier": tier}, cache[tier][key]) for tier in ("l1", "l2", "redis")
                if key in (cache.get(tier) or {})]


def exposition(view: dict[str, Any], database: str) -> str:
    """The text exposition format of a stats view (same-named metrics grouped)."""
    groups: dict[str, tuple[str, str, list]] = {}
    for name, kind, text, values in samples(view, database):
        if name in groups:
            groups[name][2].extend(values)
        else:
            groups[name] = (kind, text, list(values))
    lines = []
    for name, (kind, text, values) in groups.items():
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in values:
            rendered = ",".join(f'{k}="{_label(str(v))}"' for k, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {float(value)!r}")
    return "\n".join(lines) + "\n"


class Collector:
    """A ``prometheus_client`` collector of one database's monitor:
    ``REGISTRY.register(Collector(db))``. Needs the ``metrics`` extra."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from ..cache.tiered import registered

        view = self.db.monitor.stats()
        cache = registered(self.db)
        view["cache"] = cache.stats() if cache is not None else None
        database = self.db.url.redacted()
        for name, kind, text, values in samples(view, database):
            labels = list(values[0][0]) if values else ["database"]
            family_cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_cls(name.removesuffix("_total") if kind == "counter" else name,
                                text, labels=labels)
            for label_values, value in values:
                family.add_metric([str(label_values[k]) for k in labels], float(value))
            yield family
