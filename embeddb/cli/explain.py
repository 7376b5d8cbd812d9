"""``embeddb explain``: the plan of a statement, its warnings and index suggestions."""

from __future__ import annotations

import click

from .options import database, db_option, emit_json, json_option


@click.command()
@click.argument("sql")
@click.option("--param", "params", multiple=True, metavar="VALUE",
              help="A value for the next placeholder, as text; repeat in order. Write ? "
                   "on either backend (PostgreSQL also takes %s).")
@click.option("--analyze", is_flag=True,
              help="Also run the statement (in a transaction rolled back afterwards) and show "
                   "what it really took; PostgreSQL adds ANALYZE, BUFFERS.")
@db_option
@json_option
def explain(sql: str, params: tuple[str, ...], analyze: bool, as_json: bool) -> None:
    """Show the plan of SQL as a tree, warn about full scans, sorts and correlated subqueries,
    and print CREATE INDEX statements that would help.

    Example: embeddb explain "SELECT * FROM services WHERE category = ?" --param ai
    """
    db = database(create=False, readonly=not analyze)  # only --analyze runs the statement
    plan = db.monitor.explain(sql, list(params), analyze=analyze)
    if as_json:
        emit_json(plan.as_dict())
    else:
        click.echo(plan.render())
