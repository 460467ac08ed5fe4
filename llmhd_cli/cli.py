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


# --------------------------------------------------------------------------- providers


@cli.command("providers")
def providers_command() -> None:
    """List LLM providers: models (first is the default), the API key variable, and kind."""
    from llmhd_cli import plugins

    registry = plugins.registry("provider")
    table = Table(title="llmhd LLM providers")
    table.add_column("provider", no_wrap=True)
    table.add_column("description", ratio=3)
    table.add_column("models (first: default)", ratio=2)
    table.add_column("key env var", no_wrap=True)
    table.add_column("generative", no_wrap=True)
    for name in registry.names():
        cls = registry.items[name]
        models = ", ".join(cls.models) or "-"
        if getattr(cls, "any_model_with_base_url", False):
            models += "; any with --base-url"
        table.add_row(name, cls.description, models, cls.key_env or "-", "yes" if cls.generative else "no")
    console.print(table)


# --------------------------------------------------------------------------- prepare


def _split_csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@cli.command("prepare")
@click.option("-d", "--dataset", "name", default=None, help="Dataset name (folder under <workspace>/datasets) [default: config 'default_dataset', else ml-100k].")
@click.option("--source", "source_dir", type=click.Path(path_type=Path), default=None, help="Folder with the dataset's files; not needed for built-ins (ml-100k).")
@click.option("--format", "fmt", default="auto", metavar="NAME", help="Source format: auto (detect), rlmrec, atomic, or one a plugin adds.")
@click.option("--domain", default=None, help="Text domain for prompts [default: known names' own (amazon-books: books, yelp: businesses, steam: games, ml-100k: movies), else 'items'].")
@click.option("--text-fields", default=None, help="Comma-separated .item columns that make an item's text (atomic format) [default: all but item_id].")
@click.option("--min-rating", type=float, default=3.0, help="Interactions rated below this leave the clean data.")
@click.option("--kcore", type=int, default=5, help="Iterative K-core on users and items of the clean data (0 or 1: off).")
@click.option("--seed", type=int, default=2024, help="Seed of the per-user 3:1:1 split and the noise draw.")
@click.option("--noise-ratio", type=float, default=0.05, help="Injected noise as a fraction of the clean training set (0: none).")
@click.option("--noise-source", type=click.Choice(["low-rating", "random"]), default=None, help="low-rating: the same users' pairs rated below --min-rating; random: unobserved pairs [default: low-rating for rating data, random otherwise].")
@click.option("--force", is_flag=True, help="Replace an already prepared dataset of that name.")
@pass_state
def prepare_command(
    state: State,
    name: str | None,
    source_dir: Path | None,
    fmt: str,
    domain: str | None,
    text_fields: str | None,
    min_rating: float,
    kcore: int,
    seed: int,
    noise_ratio: float,
    noise_source: str | None,
    force: bool,
) -> None:
    """Clean, split and add noise to a dataset; write it to <workspace>/datasets/<name>/."""
    from llmhd_cli.config import default_dataset
    from llmhd_cli.prepare import PrepareOptions, prepare_dataset

    options = PrepareOptions(
        name=name or default_dataset(),
        source_dir=source_dir,
        format=fmt,
        domain=domain,
        text_fields=_split_csv(text_fields),
        min_rating=min_rating,
        kcore=kcore,
        seed=seed,
        noise_ratio=noise_ratio,
        noise_source=noise_source,
        force=force,
    )
    with console.status(f"preparing {options.name} ..."):
        dataset = prepare_dataset(state.workspace, options)
    info, stats = dataset.info, dataset.info.stats
    noise_note = f"{stats['noise']:,} {info.options['noise_source']} noise pairs" if stats["noise"] else "no noise"
    table = Table(
        title=f"{info.name} ({info.domain}, source {info.source})",
        caption=f"train includes the {noise_note}; sparsity = 1 - #interactions / (#users x #items)",
    )
    for column in ("dataset", "split", "#users", "#items", "#interactions", "sparsity", "noise"):
        table.add_column(column, justify="left" if column in ("dataset", "split") else "right")
    grid = stats["users"] * stats["items"]
    for split in ("train", "valid", "test"):
        table.add_row(
            info.name if split == "train" else "",
            split,
            f"{stats['users']:,}",
            f"{stats['items']:,}",
            f"{stats[split]:,}",
            f"{100 * (1 - stats[split] / grid):.2f}%",
            f"{stats['noise']:,}" if split == "train" else "-",
        )
    console.print(table)
    for note in info.notes:
        console.print(f"note: {note}", style="dim", highlight=False)
    console.print(f"wrote {dataset.path}", highlight=False)


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
