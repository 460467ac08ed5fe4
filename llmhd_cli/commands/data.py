"""``llmhd prepare`` (a dataset: clean, split, noise) and ``llmhd summarize`` (its user profiles)."""

from __future__ import annotations

from pathlib import Path

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import (
    PathArg,
    RegistryHelpOption,
    State,
    batch_help,
    command,
    llm_options,
    pass_state,
    split_csv,
)


@command("prepare")
@click.option("-d", "--dataset", "name", default=None, help="Dataset name (folder under <workspace>/datasets) [default: config 'default_dataset', else ml-100k].")
@click.option("--source", "source_dir", type=PathArg(path_type=Path), default=None, help="Folder with the dataset's files; not needed for built-ins (ml-100k).")
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
    from llmhd_cli.command_options import dataset_or_default
    from llmhd_cli.prepare import PrepareOptions, prepare_dataset
    from llmhd_cli.workspace import check_name

    options = PrepareOptions(
        name=dataset_or_default(name),
        source_dir=source_dir,
        format=fmt,
        domain=domain,
        text_fields=split_csv(text_fields),
        min_rating=min_rating,
        kcore=kcore,
        seed=seed,
        noise_ratio=noise_ratio,
        noise_source=noise_source,
        force=force,
    )
    check_name(options.name)  # before the name is shown (rich markup) or any path is built from it
    with render.console.status(f"preparing {options.name} ..."):
        dataset = prepare_dataset(state.workspace, options)
    render.print_prepared(dataset)


@command("summarize")
@click.option("-d", "--dataset", default=None, help="Prepared dataset [default: config 'default_dataset', else ml-100k].")
@llm_options
@click.option("--base-url", default=None, help="URL of a server that speaks the provider's API (a local one, say) "
              "[default: LLMHD_BASE_URL or config].")
@click.option("--concurrency", type=int, default=None, help="Calls in flight at once [default: config, else 4].")
@click.option("--max-cost", type=float, default=None, help="Stop sending calls once this many US dollars are spent [default: no limit].")
@click.option("--refresh", is_flag=True, help="Ignore cached answers (new answers replace them).")
@click.option("--batch", is_flag=True, cls=RegistryHelpOption, help_from=batch_help(
              "Send the uncached prompts through the provider's batch API: its batch price (often half), answers "
              "within 24 h; a killed run picks up its batch when run again"))
@click.option("--batch-fallback", is_flag=True, help="With --batch: send the requests a batch did not answer "
              "(errored, expired) as normal calls at the list price, instead of counting them as failures.")
@pass_state
def summarize_command(state: State, dataset: str | None, provider: str | None, model: str | None, cache_dir: Path | None,
                      prompts_dir: str | None, max_items: int | None, items: bool, base_url: str | None,
                      concurrency: int | None, max_cost: float | None, refresh: bool, batch: bool,
                      batch_fallback: bool) -> None:
    """Summarize every user's preference from their training items (T_sum), stored with the dataset.

    A provider that is not a generative LLM (`llmhd providers` says which) writes extractive
    "summaries": the user's most representative item texts.
    """
    from llmhd_cli.command_options import summarize_options
    from llmhd_cli.llm.settings import resolve_settings
    from llmhd_cli.summarize import summarize

    options = summarize_options(dataset, prompts_dir, items, max_items, batch=batch, batch_fallback=batch_fallback)
    settings = resolve_settings(provider=provider, model=model, base_url=base_url,
                                cache_dir=cache_dir, concurrency=concurrency, max_cost=max_cost, refresh=refresh)
    from llmhd_cli import plugins

    cls = plugins.registry("provider").get(settings.provider, "--provider")
    if cls.upper_bound:
        render.err_console.print(f"[yellow]note:[/] provider '{cls.name}' is an UPPER BOUND diagnostic that reads the training labels, not an LLM")
    from llmhd_cli.datasets import open_dataset

    open_dataset(state.workspace, options.dataset)  # a missing dataset is one line, before the display starts
    with render.llm_progress_bar() as bar:
        result = summarize(state.workspace, settings, options, progress=render.LLMProgress(bar))
    render.print_summarized(result)
