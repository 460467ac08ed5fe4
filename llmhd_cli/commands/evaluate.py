"""``llmhd evaluate`` (test metrics of finished runs, per run or per setting) and ``llmhd plot``."""

from __future__ import annotations

from pathlib import Path

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import PathArg, State, command, pass_state


@command("evaluate")
@click.argument("run_dirs", nargs=-1, required=True, type=PathArg(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table", help="Output format.")
@click.option("--recompute", is_flag=True, help="Rebuild each model from its checkpoint and rank again (means and per-user "
              "metrics), instead of reading metrics.json and test_per_user.npz.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Device for --recompute.")
@click.option("--group", is_flag=True, help="One row per setting: mean and std over the runs that differ only in seed, "
              "device or threads.")
@click.option("--baseline", default=None, metavar="SPEC",
              help="With --group: p-values of every metric against one named setting per dataset/backbone/objective: "
              "key=value[,key=value] (e.g. denoiser=none, or backbone=lightgcn,denoiser=none to compare across "
              "backbones), a run folder (its setting), or a bare denoiser name.")
@click.option("--paired-test", type=click.Choice(["t", "wilcoxon"]), default="t",
              help="With --baseline: the paired test over test users (paired t-test, or Wilcoxon signed-rank).")
@pass_state
def evaluate_command(state: State, run_dirs: tuple[Path, ...], fmt: str, recompute: bool, device: str,
                     group: bool, baseline: str | None, paired_test: str) -> None:
    """Test-split Recall@5/10 and NDCG@5/10 of finished runs, one row per run (or per setting).

    With --group --baseline, each setting is compared with its baseline by Welch's t-test
    over seeds and by a paired test over the test users (each user's metric averaged over
    the setting's seeds).
    """
    from llmhd_cli.command_options import check_evaluate_flags
    from llmhd_cli.evaluation import (
        evaluate_runs,
        group_rows,
        parse_baseline,
        render_rows,
        run_rows,
    )

    check_evaluate_flags(group, baseline, paired_test)
    spec = parse_baseline(baseline) if baseline else None  # a malformed spec fails before any ranking
    evaluations = evaluate_runs(list(run_dirs), state.workspace, recompute=recompute, device=device)
    rows = group_rows(evaluations, spec, paired_test) if group else run_rows(evaluations)
    if fmt != "table":
        click.echo(render_rows(rows, fmt), nl=False)
        return
    render.console.print(render.group_table(rows, paired_test) if group else render.runs_table(rows))


@command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=PathArg(path_type=Path))
@click.option("-o", "--output", type=PathArg(dir_okay=False, path_type=Path), default=Path("llmhd-curves.png"),
              help="Image to write; its extension picks the format (png, pdf, svg, ...).")
def plot_command(run_dirs: tuple[Path, ...], output: Path) -> None:
    """Training curves of runs (validation NDCG@10, loss, dropped share, noise F1) as an image."""
    from llmhd_cli.plots import plot_runs

    render.console.print(f"wrote {plot_runs(list(run_dirs), output)}", highlight=False, markup=False)
