"""``llmhd experiment``: whole grids of runs from one TOML spec (plan, run, report, cost)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmhd_cli.commands import render
from llmhd_cli.commands.common import PathArg, State, pass_state, writable_dir
from llmhd_cli.errors import LLMHDError

if TYPE_CHECKING:
    from llmhd_cli.experiments.grid import Plan


@click.group("experiment")
def experiment_group() -> None:
    """Whole grids of runs from one TOML file: plan, run (resumable), cost, report (docs/experiments.md)."""


def _load_plan(spec_path: Path) -> Plan:
    from llmhd_cli.experiments.grid import expand
    from llmhd_cli.experiments.spec import load_spec

    return expand(load_spec(spec_path))


_SPEC_ARG = click.argument("spec_path", metavar="SPEC", type=PathArg(dir_okay=False, path_type=Path))


@experiment_group.command("plan")
@_SPEC_ARG
@pass_state
def experiment_plan(state: State, spec_path: Path) -> None:
    """Check SPEC and list its runs and whether each is done, unfinished or to do."""
    from llmhd_cli.experiments.runner import plan_states, runs_root

    plan = _load_plan(spec_path)
    states = plan_states(state.workspace, plan)
    title = f"experiment {plan.spec.name}: {len(plan.runs)} runs in {runs_root(state.workspace, plan.spec.name)}"
    render.console.print(render.plan_table(title, plan, states))
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "partial", "todo")}
    render.console.print(f"{counts['done']} done, {counts['partial']} unfinished (redone on run), {counts['todo']} to do",
                         highlight=False)


@experiment_group.command("run")
@_SPEC_ARG
@click.option("--workers", type=int, default=1, help="Local worker processes (spawned), each run on max(1, cores // N) threads.")
@click.option("--threads", type=int, default=None, help="Threads per run [default: cores // workers; with --ray, --cpus-per-run].")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the grid as tasks on an existing Ray cluster (e.g. 10.0.0.5:6379, or 'auto'); every node must "
              "see the workspace path.")
@click.option("--cpus-per-run", type=int, default=1, help="With --ray: num_cpus of each run's task.")
@click.option("--gpus-per-run", type=float, default=0.0, help="With --ray: num_gpus of each run's task.")
@click.option("--no-summarize", is_flag=True, help="Do not summarize user profiles of datasets the LLM runs need them on.")
@pass_state
def experiment_run(state: State, spec_path: Path, workers: int, threads: int | None, ray_address: str | None,
                   cpus_per_run: int, gpus_per_run: float, no_summarize: bool) -> None:
    """Train every run of SPEC not yet done; rerun it to resume after a crash or Ctrl-C.

    Runs go to <workspace>/experiments/<name>/runs/, one folder per config and seed; a folder
    with metrics.json and the planned config is skipped, any other is redone.
    """
    from llmhd_cli.experiments import runner

    plan = _load_plan(spec_path)
    options = runner.RunOptions(workers, threads, ray_address, cpus_per_run, gpus_per_run)
    options.check()
    runner.check_base_datasets(state.workspace, plan)
    with runner.ray_session(ray_address):  # an unreachable cluster fails before anything is written
        runner.prepare_datasets(state.workspace, plan, render.notify)
        if not no_summarize:
            runner.summarize_missing(state.workspace, plan, render.notify)
        with render.GridProgress() as progress:
            result = runner.run_grid(state.workspace, plan, options, progress)
    status = result.status
    render.console.print(f"experiment {plan.spec.name}: {status.done} trained, {status.skipped} already done, "
                         f"{status.failed} failed; runs in {runner.runs_root(state.workspace, plan.spec.name)}",
                         highlight=False)
    if result.failures:
        first = result.failures[0]
        raise LLMHDError(f"{len(result.failures)} of {status.total} runs failed (first: {first.folder}: {first.error}); "
                         f"fix it and run again to resume")


@experiment_group.command("report")
@_SPEC_ARG
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json", "latex"]), default="table",
              help="Output format.")
@click.option("--plots", "plots_dir", type=PathArg(file_okay=False, path_type=Path), default=None, callback=writable_dir,
              help="Also write the figures (PNG) into this folder.")
@click.option("--baseline", default=None, metavar="SPEC", help="Setting to test every cell against (as evaluate's "
              "--baseline) [default: the spec's [report] baseline].")
@click.option("--paired-test", type=click.Choice(["t", "wilcoxon"]), default=None,
              help="Paired test over test users [default: the spec's, else t].")
@pass_state
def experiment_report(state: State, spec_path: Path, fmt: str, plots_dir: Path | None, baseline: str | None,
                      paired_test: str | None) -> None:
    """SPEC's finished runs in the paper's layout: methods x (backbone x metric), mean ± std over seeds."""
    from llmhd_cli.experiments import report

    plan = _load_plan(spec_path)
    results = report.collect(state.workspace, plan, baseline, paired_test)
    if fmt == "table":
        for table in report.tables(results):
            render.console.print(render.experiment_table(results, table))
        for line in report.legend(results):
            render.console.print(f"note: {line}", highlight=False)
    else:
        click.echo(report.render(results, fmt), nl=False)
    if plots_dir is not None:
        for path in report.plot(results, plots_dir):
            render.err_console.print(f"wrote {path}", highlight=False, markup=False)


@experiment_group.command("cost")
@_SPEC_ARG
@click.option("--epochs", type=int, default=None, help="Cap every dry run at N epochs (faster; longer runs may send more) "
              "[default: each run's own epochs].")
@click.option("--threads", type=int, default=None, help="Torch threads of the dry runs [default: one per core].")
@pass_state
def experiment_cost(state: State, spec_path: Path, epochs: int | None, threads: int | None) -> None:
    """Estimate SPEC's LLM prompts, tokens and money before it runs (training dry runs, nothing sent).

    One dry run per distinct LLM-relevant setting (seeds and score thresholds do not change
    it), multiplied by the runs it stands for; T_sum for the datasets still without profiles.
    """
    from llmhd_cli.command_options import check_epochs_cap
    from llmhd_cli.experiments import runner
    from llmhd_cli.experiments.cost import grid_cost

    check_epochs_cap(epochs)
    plan = _load_plan(spec_path)
    runner.check_base_datasets(state.workspace, plan)
    runner.prepare_datasets(state.workspace, plan, render.notify_err)
    progress = render.DryRunProgress()

    def observer_for(number: int, total: int, label: str) -> render.DryRunProgress:
        render.err_console.print(f"dry run {number}/{total}: {label}", highlight=False, markup=False)
        return progress

    try:
        result = grid_cost(state.workspace, plan, epochs, threads, observer_for)
    finally:
        progress.stop()
    render.console.print(render.grid_cost_table(f"ESTIMATE for experiment {plan.spec.name} (nothing sent)", result))
    render.console.print(f"{result.free_runs} of {len(plan.runs)} runs consult no LLM; "
                         f"{result.total_tokens:,} tokens in all", highlight=False)
    for note in result.notes:
        render.console.print(f"note: {note}", highlight=False)
