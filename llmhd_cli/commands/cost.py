"""``llmhd cost``: a run's prompts, tokens and money estimated before it runs, or what was spent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import (
    PathArg,
    RegistryHelpOption,
    State,
    batch_help,
    command,
    lazy_options,
    llm_options,
    pass_state,
    writable_dir,
)


def _dry_run_options(command):
    """The training dry run's flags: its epochs and run, and the options of its denoiser that change its prompts."""
    from llmhd_cli import plugins
    from llmhd_cli.llm.estimate import training_estimator

    estimator = training_estimator()  # a registered dry run of training (the llmhd plugin's)
    default_epochs = estimator.default_epochs if estimator is not None else None
    options = [
        click.option("--train", "with_training", is_flag=True, help="Add the training rows (T_score, T_fp, T_fn) "
                     "from a dry run with default settings; any flag below does too."),
        click.option("--epochs", type=int, default=None, help=f"Training dry run: epochs [default: {default_epochs}]."),
        click.option("--backbone", default=None, help="Training dry run: backbone [default: config [train], else lightgcn]."),
        click.option("--objective", default=None, help="Training dry run: bpr or bce [default: config [train], else bpr]."),
        click.option("--batch-size", type=int, default=None, help="Training dry run: batch size [default: config [train], else 1024]."),
        click.option("--seed", type=int, default=None, help="Training dry run: seed [default: config [train], else 2024]."),
        click.option("--device", default=None, help="Training dry run: auto, cpu or cuda [default: auto]."),
        click.option("--run-dir", type=PathArg(file_okay=False, path_type=Path), default=None, callback=writable_dir,
                     help="Training dry run: keep its run directory here [default: a temporary folder, removed after]."),
        click.option("--structured", is_flag=True, help="Training dry run: render structured (JSON schema) score requests."),
    ]
    spec = plugins.registry("denoiser").items.get(estimator.denoiser or "") if estimator is not None else None
    if estimator is not None and spec is not None:
        for name in estimator.options:
            option = next(o for o in spec.options if o.name == name)
            # Plain types, choices checked by the denoiser: a bad value is one line, exit 2.
            kind = str if option.choices else option.type
            help_text = option.help.removeprefix("llmhd: ")
            options.append(click.option(option.flag, option.name, type=kind, default=None,
                                        help=f"Training dry run: {help_text} [default: {option.default}]."))
    for option in reversed(options):
        command = option(command)
    return command


@command("cost")
@click.option("--spent", is_flag=True, help="Show what was spent (the ledger) instead of an estimate.")
@click.option("-d", "--dataset", default=None, help="Dataset to estimate for, or (with --spent) whose recorded runs to show "
              "[default for estimates: config 'default_dataset', else ml-100k, prepared on first use].")
@llm_options
@click.option("--base-url", default=None, help="URL of a server that speaks the provider's API, as the run would use "
              "(a provider with 'any with --base-url' in `llmhd providers` accepts any model name it serves) "
              "[default: LLMHD_BASE_URL or config].")
@click.option("--batch", is_flag=True, cls=RegistryHelpOption, help_from=batch_help(
              "Price summarize's prompts as `summarize --batch` sends them: through the provider's batch API, "
              "at its batch price"))
@lazy_options(_dry_run_options)
@pass_state
def cost_command(state: State, spent: bool, dataset: str | None, provider: str | None, model: str | None,
                 cache_dir: Path | None, prompts_dir: str | None, max_items: int | None, items: bool,
                 base_url: str | None, batch: bool, with_training: bool, epochs: int | None, backbone: str | None,
                 objective: str | None, batch_size: int | None, seed: int | None, device: str | None,
                 run_dir: Path | None, structured: bool, **llmhd: Any) -> None:
    """Estimate the prompts, tokens and money of a run before it runs, or show what was spent.

    The estimate renders every prompt the run would send and counts its tokens; money comes
    from the price table. Prompts already cached are counted but cost nothing. Without
    training flags it covers summarize (T_sum); with --train or any training flag (e.g.
    --eps-v 0.5) it also runs a short training dry run with the LLM denoiser (the one a plugin
    registers a dry run for), the LLM never called, and adds the T_score, T_fp and T_fn prompts
    it would send (Table 4's rows).
    """
    from llmhd_cli.command_options import CostRequest, dataset_or_default, spending
    from llmhd_cli.llm import estimate as est
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.llm.settings import resolve_settings

    request = CostRequest(spent=spent, with_training=with_training, epochs=epochs,
                          overrides={"backbone": backbone, "objective": objective, "batch_size": batch_size,
                                     "seed": seed, "device": device},
                          denoiser_options=llmhd, run_dir=run_dir, structured=structured, batch=batch)
    settings = resolve_settings(provider=provider, model=model, base_url=base_url, cache_dir=cache_dir,
                                require_key=False)
    cache = settings.resolved_cache_dir(state.workspace)
    if spent:
        request.check_spent()
        shown = spending(state.workspace, cache, dataset, provider)
        if not shown.rows:
            render.console.print(f"nothing spent yet ({shown.where})")
            return
        render.console.print(render.stats_table(shown.title, shown.rows, runs=shown.per_run))
        return
    name = dataset_or_default(dataset)
    prompts = prompts_dir_setting(prompts_dir)
    options: dict = {"items": items, "max_items": max_items, "batch": batch}
    if batch:
        from llmhd_cli import plugins
        from llmhd_cli.llm.batch import require_batch

        require_batch(plugins.registry("provider").get(settings.provider, "--provider"))
    progress = None
    if request.dry_run:
        config = request.dry_run_config(est.training_estimator(), name, settings.provider, settings.model, prompts,
                                        settings.base_url)
        progress = render.DryRunProgress()
        options.update(train=config, train_observer=progress, train_run_dir=run_dir)
    from llmhd_cli.prepare import ensure_prepared

    ensure_prepared(state.workspace, name, notify=render.notify_err)
    try:
        result = est.estimate(state.workspace, name, settings.provider, settings.model, prompts,
                              settings.prices_file, cache, options, settings.base_url)
    finally:
        if progress is not None:
            progress.stop()
    render.print_estimate(result, request.dry_run)
