"""``llmhd train``: one run of a backbone with an objective and a denoiser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import (
    PathArg,
    State,
    command,
    lazy_options,
    parse_settings,
    writable_dir,
)


def _denoiser_flag_options(command):
    """Add one flag per option of every registered denoiser (plugins' included)."""
    from llmhd_cli import plugins

    seen: dict[str, str] = {}
    for spec in plugins.registry("denoiser").items.values():
        for option in spec.options:
            if option.name in seen:
                continue
            seen[option.name] = spec.name
            kind = click.Choice(option.choices) if option.choices else option.type
            command = click.option(option.flag, option.name, type=kind, default=None,
                                   help=f"{option.help} [default: {option.default}]")(command)
    return command


@command("train")
@click.option("-d", "--dataset", default=None, help="Prepared dataset [default: config 'default_dataset', else ml-100k, prepared on first use].")
@click.option("--backbone", default=None, help="Backbone: ngcf, lightgcn, sgl, ncl or one a plugin adds [default: lightgcn].")
@click.option("--objective", type=click.Choice(["bpr", "bce"]), default=None, help="Pairwise BPR or pointwise BCE [default: bpr].")
@click.option("--denoiser", default=None, help="none, tce, rce or one a plugin adds [default: none].")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [default: 200].")
@click.option("--batch-size", type=int, default=None, help="Samples per mini-batch, as RecBole counts them: BPR triples, or BCE positives plus their negatives (batch/2 positives, odd sizes round down) [default: 1024].")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=None, help="Adam learning rate [default: 0.005].")
@click.option("--weight-decay", type=float, default=None, help="Adam weight decay [default: 0].")
@click.option("--early-stop", type=int, default=None, help="Stop after this many evaluations without improvement; 0 disables [default: 10].")
@click.option("--eval-every", type=int, default=None, help="Validate every N epochs [default: 1].")
@click.option("--valid-metric", default=None, help="Early-stopping metric, recall@K or ndcg@K [default: ndcg@10].")
@click.option("--seed", type=int, default=None, help="Seed of initialisation, sampling and shuffling [default: 2024].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="auto uses a GPU when present [default: auto].")
@click.option("--threads", type=int, default=None, help="CPU threads for torch; 0 = torch's default, one per core [default: 0].")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Backbone (RecBole) setting, e.g. --set n_layers=3; repeatable.")
@click.option("--config", "config_file", type=PathArg(dir_okay=False, path_type=Path), default=None,
              help="TOML file of train settings (the keys of a run's config.toml); flags override it.")
@click.option("--run-dir", type=PathArg(file_okay=False, path_type=Path), default=None, callback=writable_dir,
              help="Write the run here [default: <workspace>/runs/<time>-<names>].")
@lazy_options(_denoiser_flag_options)
@click.pass_context
def train_command(ctx: click.Context, config_file: Path | None, settings: tuple[str, ...], run_dir: Path | None, **flags: Any) -> None:
    """Train a backbone with an objective and a denoiser; write a run directory."""
    from llmhd_cli.command_options import train_config_from_flags
    from llmhd_cli.prepare import ensure_prepared
    from llmhd_cli.training import train
    from llmhd_cli.workspace import runs_dir

    state: State = ctx.obj
    given = {k: v for k, v in flags.items() if v is not None and ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    # Checked before ensure_prepared, which may write the built-in dataset (it checks the name itself).
    config = train_config_from_flags(config_file, given, parse_settings(settings))
    dataset = ensure_prepared(state.workspace, config.dataset, notify=render.notify)
    with render.TrainProgress(config.epochs) as progress:
        result = train(config, dataset, runs_dir(state.workspace), observer=progress, run_dir=run_dir)
    render.print_trained(result)
