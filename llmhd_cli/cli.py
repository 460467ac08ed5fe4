"""The ``llmhd`` command line. The only module that knows about Click.

Each command parses flags, calls one library function, and renders its result with rich.
User mistakes arrive as `LLMHDError` and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from llmhd_cli import __version__
from llmhd_cli.errors import LLMHDError
from llmhd_cli.workspace import resolve_workspace

console = Console()
err_console = Console(stderr=True)


class State:
    """Options of the top-level group, passed to every command."""

    def __init__(self, workspace: str | None, verbose: int) -> None:
        self._workspace_flag = workspace
        self.verbose = verbose

    @property
    def workspace(self) -> Path:
        return resolve_workspace(self._workspace_flag)


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="llmhd")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
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
    ctx.obj = State(workspace, verbose)


# --------------------------------------------------------------------------- plugins


@cli.command("plugins")
def plugins_command() -> None:
    """List loaded plugins and what each registered."""
    from llmhd_cli import plugins

    table = Table(title="llmhd plugins")
    table.add_column("plugin")
    table.add_column("kind")
    table.add_column("registered")
    rows: dict[tuple[str, str], list[str]] = {}
    for registry in plugins.all_registries():
        for name, owner in registry.owners.items():
            rows.setdefault((owner, registry.kind), []).append(name)
    for name in plugins.plugin_names():
        kinds = [(kind, sorted(items)) for (owner, kind), items in sorted(rows.items()) if owner == name]
        if not kinds:
            table.add_row(name, "-", "(hooks only)")
        for kind, items in kinds:
            table.add_row(name, kind, ", ".join(items))
    console.print(table)


def _build() -> click.Group:
    from llmhd_cli import plugins

    plugins.add_commands(cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI, turning user errors into exit code 2."""
    try:
        group = _build()
        group.main(args=argv, prog_name="llmhd", standalone_mode=False)
    except LLMHDError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
