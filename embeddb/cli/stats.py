"""``embeddb stats``: the live app's query statistics, summed over its processes."""

from __future__ import annotations

from typing import Any

import click

from ..errors import InvalidQueryError
from ..monitor import publish
from ..monitor.explain import replayable, review
from ..monitor.prometheus import exposition
from ..monitor.sizes import sizes
from ..monitor.statements import short
from .options import database, db_option, emit_json, json_option


def live_view(db: Any) -> dict[str, Any]:
    """What the monitored processes of ``db`` published, summed (empty when none is)."""
    directory = publish.directory_of(db)
    entries, skipped = publish.read(directory)
    view = publish.combine(entries)
    view["directory"] = directory
    view["skipped_files"] = skipped
    return view


@click.command()
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text exposition format.")
@click.option("--tables", is_flag=True,
              help="Also show rows, table and index bytes per table, WAL size and free pages.")
@click.option("--advise", is_flag=True,
              help="EXPLAIN the costliest and most frequent SELECTs (with the parameters of "
                   "their first run) and show the warnings and index suggestions.")
@click.option("--limit", default=15, show_default=True, metavar="N",
              help="Statements to show, the costliest (total time) first.")
@db_option
@json_option
def stats(prometheus: bool, tables: bool, advise: bool, limit: int, as_json: bool) -> None:
    """Show the statistics per statement of every live process monitoring this database
    (apps connected with monitor=True, ?monitor=1 or $EMBEDDB_MONITOR=1).

    Example: embeddb --db sqlite:///app.db stats --tables
    """
    if limit < 0:
        raise InvalidQueryError(f"--limit {limit}: give 0 or more statements to show")
    db = database(readonly=True)
    view = live_view(db)
    if tables:
        view["tables"] = sizes(db)
    if advise:
        view["advice"] = advice_for(db, view, limit=5)
    if prometheus:
        click.echo(exposition(view, db.url.redacted()), nl=False)
    elif as_json:
        emit_json(view)
    else:
        _print(view, limit)


def _print(view: dict[str, Any], limit: int) -> None:
    processes = view["processes"]
    totals = view["totals"]
    if not processes:
        click.echo(f"No monitored process is publishing statistics (looked in "
                   f"{view['directory'] or 'nowhere: an in-memory database'}); connect the "
                   "app with monitor=True or EMBEDDB_MONITOR=1.")
    else:
        pids = ", ".join(str(p["pid"]) for p in processes)
        click.echo(f"{len(processes)} process(es) ({pids}): {totals['calls']} statements run, "
                   f"{totals['errors']} errors, {totals['slow']} slow, "
                   f"{totals['nplusone']} N+1 findings")
        click.echo(f"{'calls':>8} {'mean ms':>9} {'p95 ms':>9} {'max ms':>9} {'rows':>8}  "
                   "statement")
        for s in view["statements"][:limit]:
            text = short(s["statement"])
            click.echo(f"{s['calls']:>8} {s['mean_ms']:>9.3f} {s['p95_ms']:>9.3f} "
                       f"{s['max_ms']:>9.3f} {s['rows']:>8}  {text}")
    if view.get("skipped_files"):
        click.echo(f"({view['skipped_files']} unreadable or foreign file(s) in "
                   f"{view['directory']} skipped)")
    if "tables" in view:
        _print_tables(view["tables"])
    if "advice" in view:
        _print_advice(view["advice"])


def advice_for(db: Any, view: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """EXPLAIN the published examples on ``db`` (with NULLs where their parameters were
    masked or folded)."""
    usable = [s for s in view["statements"] if s.get("example")]
    return review(db, [(s["statement"], s["example"]["sql"], replayable(s["example"]))
                       for s in usable], limit,
                  {s["statement"]: (s["total_ms"], s["calls"]) for s in usable})


def _print_advice(advice: list[dict[str, Any]]) -> None:
    if not advice:
        click.echo("\nadvice: the costliest and most frequent statements need no index")
        return
    click.echo("\nadvice:")
    for item in advice:
        click.echo(f"  {short(item['statement'], 100)}")
        if "error" in item:
            click.echo(f"    cannot explain: {item['error']}")
            continue
        for warning in item["warnings"]:
            click.echo(f"    WARN {warning}")
        for suggestion in item["suggestions"]:
            click.echo(f"    SUGGEST {suggestion['sql']}  -- {suggestion['reason']}")


def _print_tables(found: dict[str, Any]) -> None:
    click.echo(f"\n{'table':<28} {'rows':>10} {'table bytes':>12} {'index bytes':>12}")
    for t in found["tables"]:
        rows = f"~{t['rows']}" if t["rows_estimated"] else str(t["rows"])
        click.echo(f"{t['name']:<28} {rows:>10} {_bytes(t['table_bytes']):>12} "
                   f"{_bytes(t['index_bytes']):>12}")
    click.echo(f"database {_bytes(found['database_bytes'])}, WAL {_bytes(found['wal_bytes'])}, "
               f"free {_bytes(found['free_bytes'])}")


def _bytes(value: int | None) -> str:
    return "-" if value is None else str(value)
