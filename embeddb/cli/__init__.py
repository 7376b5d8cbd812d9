"""The ``embeddb`` command: a thin layer over the library, one module per command group.

A command's module (and the library code it needs: backup, migrate, the cache...) is imported
only when that command runs or its help is shown, so ``embeddb --version`` or ``embeddb info``
loads nothing else.

Errors derived from EmbeddbError become one ``Error: ...`` line on stderr and exit code 1; a
traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from ..errors import EmbeddbError
from ..version import __version__
from .options import CliState, db_option, emit_json

#: command name -> the module of this package that defines it (under the same name)
COMMANDS = {
    "audit": "audit", "backup": "backup", "cache": "cache", "copy": "copy", "doctor": "doctor",
    "explain": "explain", "info": "info", "locks": "locks", "maintenance": "maintenance",
    "migrate": "migrate", "outbox": "outbox", "schema": "schema", "seed": "seed",
    "setup": "seed", "stats": "stats",
}


class EmbeddbGroup(click.Group):
    """Turns errors into a one-line message and exit code 1; imports a command's module the
    first time the command is needed (click's documented way to load commands lazily)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in COMMANDS:
            module = importlib.import_module(f"{__name__}.{COMMANDS[cmd_name]}")
            command = getattr(module, cmd_name)
            _accept_verbose_everywhere(command)
            self.add_command(command, cmd_name)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --json read from the raw arguments: a usage error found before click reaches it
        # (an eager --database, a group option, an earlier option) is a JSON document too
        state = ctx.ensure_object(CliState)
        state.json_asked = "--json" in (args[:args.index("--")] if "--" in args else args)
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:
            _json_failure(state, " ".join(exc.format_message().split()))
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted(ctx)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C at a prompt
                _interrupted(ctx)
            raise
        except click.exceptions.Exit:
            raise
        except click.ClickException as exc:  # a usage error: click prints it and exits 2
            _json_failure(ctx.find_object(CliState), " ".join(exc.format_message().split()))
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
            _json_failure(state, message)
            click.echo(f"Error: {message}", err=True)
            ctx.exit(1)


def _json_failure(state: CliState | None, message: str) -> None:
    """With --json, a failure is a JSON document on stdout too, unless the command printed
    its own report."""
    if state is not None and (state.as_json or state.json_asked) \
            and not state.failure_reported:
        emit_json({"ok": False, "error": message})


def _interrupted(ctx: click.Context) -> None:
    _json_failure(ctx.find_object(CliState), "interrupted")
    click.echo("Interrupted.", err=True)
    ctx.exit(130)  # 128 + SIGINT, as shells report it


def _store_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.ensure_object(CliState).verbose = True
    return value


def _verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                        callback=_store_verbose, help="Show tracebacks on errors.")


def _accept_verbose_everywhere(command: click.Command) -> None:
    """``--verbose`` also after the command name (``embeddb migrate status --verbose``), as
    error messages suggest rerunning with it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_verbose_everywhere(sub)
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="embeddb")
