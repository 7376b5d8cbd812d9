"""The ``embeddb`` command: a thin layer over the library, one module per command group.

Errors derived from EmbeddbError become one ``Error: ...`` line on stderr and exit code 1; a
traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..errors import EmbeddbError
from ..version import __version__
from .audit import audit
from .backup import backup
from .cache import cache
from .doctor import doctor
from .explain import explain
from .info import info
from .locks import locks
from .maintenance import maintenance
from .migrate import migrate
from .options import CliState, db_option
from .outbox import outbox
from .schema import schema
from .seed import seed, setup
from .stats import stats


class EmbeddbGroup(click.Group):
    """Turns errors into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted(ctx)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C at a prompt
                _interrupted(ctx)
            raise
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            state = ctx.find_object(CliState)
            if isinstance(exc, BrokenPipeError):  # `embeddb ... | head`: stop quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                ctx.exit(141)
            if state is not None and state.verbose:
                raise
            if isinstance(exc, EmbeddbError):
                # One line: PostgreSQL adds "LINE 1: ..." and a caret line to its messages.
                message = " ".join(str(exc).split())
            else:
                message = f"unexpected {type(exc).__name__}: {exc} (rerun with --verbose)"
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)


def _interrupted(ctx: click.Context) -> None:
    click.echo("Interrupted.", err=True)
    ctx.exit(130)  # 128 + SIGINT, as shells report it


def _store_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(CliState).verbose = True
    return value


def _verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                        callback=_store_verbose, help="Show tracebacks on errors.")


def _accept_verbose_everywhere(group: click.Group) -> None:
    """``--verbose`` also after the command name (``embeddb migrate status --verbose``), as
    error messages suggest rerunning with it."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _accept_verbose_everywhere(command)
        elif not any(p.name == "verbose" for p in command.params):
            command.params.append(_verbose_option())


@click.group(cls=EmbeddbGroup)
@click.version_option(__version__, prog_name="embeddb")
@db_option
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """embeddb: SQLite-first embedded persistence engine with a PostgreSQL backend."""
    state = ctx.ensure_object(CliState)
    state.verbose = state.verbose or verbose


cli.add_command(audit)
cli.add_command(info)
cli.add_command(locks)
cli.add_command(backup)
cli.add_command(cache)
cli.add_command(doctor)
cli.add_command(explain)
cli.add_command(maintenance)
cli.add_command(migrate)
cli.add_command(outbox)
cli.add_command(schema)
cli.add_command(seed)
cli.add_command(setup)
cli.add_command(stats)
_accept_verbose_everywhere(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="embeddb")
