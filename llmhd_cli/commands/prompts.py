"""``llmhd prompts``: the shipped prompt template sets, shown and copied out to edit."""

from __future__ import annotations

from pathlib import Path

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import PathArg
from llmhd_cli.errors import LLMHDError


@click.group("prompts")
def prompts_group() -> None:
    """See the shipped prompt template sets and copy one out to edit (use it with --prompts DIR)."""


@prompts_group.command("list")
@click.option("--prompts", "prompts_dir", type=PathArg(file_okay=False), default=None, help="Also load (and validate) this folder.")
def prompts_list(prompts_dir: str | None) -> None:
    """List template sets: domains, templates and their hashes, and where each set comes from."""
    from llmhd_cli import plugins
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    owners = plugins.registry("prompt set").owners
    render.console.print(render.prompt_sets_table(available_sets(prompts_dir_setting(prompts_dir)), owners))


@prompts_group.command("show")
@click.argument("name")
@click.option("--prompts", "prompts_dir", type=PathArg(file_okay=False), default=None, help="Look in this folder first.")
def prompts_show(name: str, prompts_dir: str | None) -> None:
    """Print a set's templates (NAME = set, e.g. books) or one template (books/score)."""
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    set_name, _, task = name.partition("/")
    sets = available_sets(prompts_dir_setting(prompts_dir))
    if set_name not in sets:
        raise LLMHDError(f"prompts show: unknown prompt set '{set_name}' (known: {', '.join(sorted(sets))})")
    s = sets[set_name]
    render.print_templates([s.get(task)] if task else [s.templates[t] for t in sorted(s.templates)])


@prompts_group.command("export")
@click.argument("target", type=PathArg(file_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Overwrite files in an existing non-empty folder.")
@click.option("--prompts", "prompts_dir", type=PathArg(file_okay=False), default=None, help="Export from this folder's sets too.")
def prompts_export(target: Path, names: tuple[str, ...], force: bool, prompts_dir: str | None) -> None:
    """Copy template sets (all, or NAMES) to TARGET/<set>/ for editing; pass TARGET with --prompts."""
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    sets = available_sets(prompts_dir_setting(prompts_dir))
    for name in names:
        if name not in sets:
            raise LLMHDError(f"prompts export: unknown prompt set '{name}' (known: {', '.join(sorted(sets))})")
    for name in names or sorted(sets):
        dest = sets[name].export(target, force)
        render.console.print(f"exported '{name}' to {dest}")
    render.console.print(f"edit the files, then pass --prompts {target}")
