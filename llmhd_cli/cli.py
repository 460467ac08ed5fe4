"""The ``llmhd`` command line: the top-level group and the entry point.

The subcommands live in `llmhd_cli.commands`, one module per command group; with this module
they are the only ones that know about Click. Each command parses flags, calls library
functions, and renders their results (`llmhd_cli.commands.render`). User mistakes arrive as
`LLMHDError` and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import logging
import sys

import click

from llmhd_cli import __version__
from llmhd_cli.commands import builtin_commands, render
from llmhd_cli.commands.common import LazyCommand, PathArg, State
from llmhd_cli.commands.common import parse_settings as _parse_settings  # noqa: F401  (its old home)
from llmhd_cli.errors import LLMHDError
from llmhd_cli.interrupt import INTERRUPTED, say_interrupted
from llmhd_cli.redact import install_log_redaction, mask_secrets
from llmhd_cli.workspace import resolve_workspace


class _Group(click.Group):
    """The ``llmhd`` group: plugins add their subcommands (register_commands) when a command is
    looked up or listed, so ``--version`` (handled before) loads no plugin."""

    command_class = LazyCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        from llmhd_cli import plugins

        plugins.add_commands(self)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from llmhd_cli import plugins

        plugins.add_commands(self)  # before the built-ins: a plugin's command may replace one, as before
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="llmhd")
@click.option(
    "--workspace",
    type=PathArg(file_okay=False),
    default=None,
    help="Folder for prepared datasets, runs and the LLM cache [env LLMHD_WORKSPACE; "
    "config key 'workspace'; default ./llmhd-workspace].",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, verbose: int) -> None:
    """Train recommenders on noisy implicit feedback, with LLM-assisted hard-sample denoising."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()  # URLs with credentials (e.g. an HTTP library's request lines) are masked
    ctx.obj = State(workspace, verbose, resolve_workspace)


for _command in builtin_commands():
    cli.add_command(_command)


def _build() -> click.Group:
    # Plugins' commands join when a command is looked up or listed (_Group), not here.
    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning user errors into exit code 2 and Ctrl-C into 130 (one line each)."""
    try:
        group = _build()
        group.main(args=argv, prog_name="llmhd", standalone_mode=False)
    except KeyboardInterrupt:  # outside click's own handling (plugin loading in _build)
        say_interrupted()
        sys.exit(INTERRUPTED)
    except LLMHDError as exc:
        render.error(mask_secrets(str(exc)))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            say_interrupted()
        else:
            render.err_console.print("aborted")
        sys.exit(INTERRUPTED)
    except click.UsageError as exc:
        # One line like every other user error, naming where to read more.
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        render.error(exc.format_message() + where)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
