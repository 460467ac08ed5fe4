"""The ``llmhd`` command line. The only module that knows about Click.

Each command parses flags, calls one library function, and renders its result with rich.
User mistakes arrive as `LLMHDError` and leave as one line on stderr with exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmhd_cli import __version__
from llmhd_cli.errors import LLMHDError
from llmhd_cli.redact import install_log_redaction, mask_secrets
from llmhd_cli.workspace import resolve_workspace

# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating metric tables.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class State:
    """Options of the top-level group, passed to every command."""

    def __init__(self, workspace: str | None, verbose: int) -> None:
        self._workspace_flag = workspace
        self.verbose = verbose

    @property
    def workspace(self) -> Path:
        return resolve_workspace(self._workspace_flag)


pass_state = click.make_pass_decorator(State)


def _lazy_options(add: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Mark a command for the flags ``add`` makes from plugins' registries (each denoiser's
    options, say), added when the command is parsed or its help shown instead of at import:
    building them loads every plugin (torch, RecBole), which ``llmhd --version`` must not."""

    def mark(f: Callable) -> Callable:
        f.__llmhd_lazy_options__ = [*getattr(f, "__llmhd_lazy_options__", []), add]  # type: ignore[attr-defined]
        return f

    return mark


class _Command(click.Command):
    """A command whose `_lazy_options` flags appear on first use, after its other flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = list(getattr(self.callback, "__llmhd_lazy_options__", []))

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if self._lazy:
            def holder() -> None:  # collects the options as click's decorators do on a function
                return None

            for add in self._lazy:
                holder = add(holder)
            self._lazy = []
            self.params.extend(reversed(getattr(holder, "__click_params__", [])))  # click's own order
        return super().get_params(ctx)


class _Group(click.Group):
    """The ``llmhd`` group: plugins add their subcommands (register_commands) when a command is
    looked up or listed, so ``--version`` (handled before) loads no plugin."""

    command_class = _Command

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
    install_log_redaction()  # URLs with credentials (e.g. an HTTP library's request lines) are masked
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
        leaky = getattr(cls, "leaky_models", ())
        models = ", ".join(m + (" (LEAKS held-out labels)" if m in leaky else "") for m in cls.models) or "-"
        if getattr(cls, "any_model_with_base_url", False):
            models += "; any with --base-url"
        table.add_row(name, cls.description, models, cls.key_env or "-", "yes" if cls.generative else "no")
    console.print(table)


# --------------------------------------------------------------------------- prepare


def _writable_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Click callback of folder options llmhd writes into: a file in the way or a folder that
    cannot be written is a one-line error while the flags are read, before anything runs."""
    from llmhd_cli.workspace import check_writable_dir

    return None if value is None else check_writable_dir(value, param.opts[0])


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
    from llmhd_cli.workspace import check_name

    options = PrepareOptions(
        name=name if name is not None else default_dataset(),
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
    check_name(options.name)  # before the name is shown (rich markup) or any path is built from it
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
    console.print(f"wrote {dataset.path}", highlight=False, markup=False)



# --------------------------------------------------------------------------- train


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


def _parse_settings(pairs: tuple[str, ...]) -> dict:
    """--set key=value words into a dict, values read as TOML scalars/lists when they parse."""
    from llmhd_cli.config import tomllib

    settings = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise LLMHDError(f"--set: expected KEY=VALUE, got '{pair}'")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        settings[key.strip()] = value
    return settings


class _TrainProgress:
    """Rich progress for llmhd train: an epoch bar, a batch bar, one line per epoch."""

    def __init__(self, epochs: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self.epochs = self.progress.add_task("epochs", total=epochs, rate="")
        self.batches = self.progress.add_task("batches", total=1, rate="")
        self._start = 0.0

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        import time

        self._start = time.perf_counter()
        self.progress.reset(self.batches, total=n_batches, description=f"epoch {epoch}", rate="")

    def batch_done(self) -> None:
        import time

        self.progress.advance(self.batches)
        done = self.progress.tasks[self.batches].completed
        self.progress.update(self.batches, rate=f"{done / max(time.perf_counter() - self._start, 1e-9):.1f} batch/s")

    def epoch_end(self, record) -> None:
        parts = [f"epoch {record.epoch:>3}", f"loss {record.loss:.4f}"]
        if record.dropped:
            parts.append(f"dropped {100 * record.dropped / max(record.samples, 1):.1f}%")
        if record.noise and record.noise["dropped_positives"]:
            parts.append(f"noise P/R {record.noise['precision']:.2f}/{record.noise['recall']:.2f}")
        if record.valid:
            parts.append(f"valid ndcg@10 {record.valid['ndcg@10']:.4f}" + (" *" if record.best else ""))
        parts.append(f"{record.seconds:.1f}s")
        self.progress.console.print("  ".join(parts), highlight=False)
        self.progress.advance(self.epochs)


def _metrics_table(title: str, rows: list[tuple[str, dict]], keys: tuple[str, ...]) -> Table:
    table = Table(title=title)
    table.add_column("run")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows:
        table.add_row(name, *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in keys))
    return table


METRIC_KEYS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


@cli.command("train")
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
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file of train settings (the keys of a run's config.toml); flags override it.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_writable_dir,
              help="Write the run here [default: <workspace>/runs/<time>-<names>].")
@_lazy_options(_denoiser_flag_options)
@click.pass_context
def train_command(ctx: click.Context, config_file: Path | None, settings: tuple[str, ...], run_dir: Path | None, **flags) -> None:
    """Train a backbone with an objective and a denoiser; write a run directory."""
    from llmhd_cli import plugins
    from llmhd_cli.config import TrainConfig, train_config
    from llmhd_cli.prepare import ensure_prepared
    from llmhd_cli.training import train
    from llmhd_cli.workspace import runs_dir

    state: State = ctx.obj
    core = {f for f in TrainConfig.__dataclass_fields__}
    given = {k: v for k, v in flags.items() if v is not None and ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    config = train_config(config_file, {k: v for k, v in given.items() if k in core}, _parse_settings(settings))

    denoiser_flags = {k: v for k, v in given.items() if k not in core}
    if denoiser_flags:
        spec = plugins.registry("denoiser").get(config.denoiser, "--denoiser")
        own = {o.name for o in spec.options}
        for name in denoiser_flags:
            if name not in own:
                owners = [s.name for s in plugins.registry("denoiser").items.values() if name in {o.name for o in s.options}]
                raise LLMHDError(f"--{name.replace('_', '-')}: an option of denoiser {', '.join(owners)}, not of '{config.denoiser}'")
        config.denoiser_params = {**config.denoiser_params, **denoiser_flags}

    # Checked before ensure_prepared, which may write the built-in dataset (it checks the name itself).
    from llmhd_cli.recbole_data import check_backbone_params

    check_backbone_params(plugins.registry("backbone").get(config.backbone, "--backbone"), config.backbone_params)
    dataset = ensure_prepared(state.workspace, config.dataset, notify=lambda m: console.print(m, style="yellow", highlight=False))
    with _TrainProgress(config.epochs) as progress:
        result = train(config, dataset, runs_dir(state.workspace), observer=progress, run_dir=run_dir)
    console.print(_metrics_table(f"test metrics (best epoch {result.best_epoch}, {result.seconds_per_epoch:.2f}s/epoch)",
                                 [(result.run_dir.name, result.test)], METRIC_KEYS))
    noise = result.noise_detection
    if noise:
        line = (f"injected noise, final epoch: {noise['dropped_positives']:,} positives dropped, "
                f"precision {noise['precision']:.3f}, recall {noise['recall']:.3f}, F1 {noise['f1']:.3f}")
        if "kept_hard_share" in noise:
            line += f"; kept as hard {noise['noise_kept_hard']:,} of {noise['noise_candidates']:,} noise candidates"
        console.print(line, highlight=False)
    console.print(f"run directory: {result.run_dir}", highlight=False, markup=False)


# --------------------------------------------------------------------------- evaluate


@cli.command("evaluate")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
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
    from llmhd_cli.evaluation import (
        evaluate_runs,
        group_rows,
        parse_baseline,
        render_rows,
        run_rows,
    )

    if baseline and not group:
        raise LLMHDError("--baseline: only meaningful with --group")
    if paired_test != "t" and not baseline:
        raise LLMHDError("--paired-test: only meaningful with --group --baseline")
    spec = parse_baseline(baseline) if baseline else None  # a malformed spec fails before any ranking
    evaluations = evaluate_runs(list(run_dirs), state.workspace, recompute=recompute, device=device)
    rows = group_rows(evaluations, spec, paired_test) if group else run_rows(evaluations)
    if fmt != "table":
        click.echo(render_rows(rows, fmt), nl=False)
        return
    console.print(_group_table(rows, paired_test) if group else _runs_table(rows))


# --------------------------------------------------------------------------- plot


@cli.command("plot")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("llmhd-curves.png"),
              help="Image to write; its extension picks the format (png, pdf, svg, ...).")
def plot_command(run_dirs: tuple[Path, ...], output: Path) -> None:
    """Training curves of runs (validation NDCG@10, loss, dropped share, noise F1) as an image."""
    from llmhd_cli.plots import plot_runs

    console.print(f"wrote {plot_runs(list(run_dirs), output)}", highlight=False, markup=False)


_SHORT = {"recall@5": "R@5", "recall@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}
_IDENTITY = ("dataset", "backbone", "objective", "denoiser")
_LEAK_NOTE = ("leak: the run's LLM model reads held-out labels (its provider's leaky_models); "
              "an upper bound, not a result, and never grouped with other runs")


def _cell(value) -> str:
    if isinstance(value, bool):
        return "LEAK" if value else "no"  # only the leak column is boolean
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4f}"  # NaN: not defined (e.g. std of one run)
    return str(value)


def _shared_identity(rows: list[dict]) -> tuple[list[str], str]:
    """Identity columns with one value in every row (shown once, in the title) and that title part."""
    shared = [c for c in _IDENTITY if len({str(row[c]) for row in rows}) == 1] if len(rows) > 1 else []
    return shared, (" of " + " · ".join(str(rows[0][c]) for c in shared)) if shared else ""


def _runs_table(rows: list[dict]) -> Table:
    notes = ["noise P/R/F1: the final epoch's dropped positives against the injected noise; "
             "kept hard: share of the noise among its candidates a denoiser kept as hard"]
    if any(row["leak"] for row in rows):
        notes.append(_LEAK_NOTE)
    shared, of = _shared_identity(rows)
    table = Table(title=f"test metrics{of} (full ranking; train and valid items masked)",
                  caption="\n".join([*(f"{i + 1}: {row['run']}" for i, row in enumerate(rows)), *notes]))
    columns = [c for c in rows[0] if c != "run" and c not in shared]  # run folders are listed in the caption
    table.add_column("#", justify="right")
    for column in columns:
        table.add_column(_SHORT.get(column, column), justify="left" if column in (*_IDENTITY, "leak") else "right")
    for i, row in enumerate(rows):
        table.add_row(str(i + 1), *(_cell(row[c]) for c in columns))
    return table


def _p_cell(p: float) -> str:
    return "-" if p != p else f"{p:.2g}"


def _group_table(rows: list[dict], paired_test: str) -> Table:
    """One row per setting; with a baseline, a second row under each compared setting holds
    the p-values under the metric they test (Welch / paired)."""
    baseline = "baseline" in rows[0]
    paired = "paired t-test" if paired_test == "t" else "Wilcoxon signed-rank test"
    notes = []
    if baseline:
        notes.append(f"p: Welch t-test over seeds / {paired} over test users (each user's metric averaged over "
                     "the seeds), two-sided, against the setting after 'vs'")
    if any(row["leak"] for row in rows):
        notes.append(_LEAK_NOTE)
    shared, of = _shared_identity(rows)
    table = Table(title=f"test metrics{of} over seeds: mean ± std (full ranking; train and valid items masked)",
                  caption="\n".join(notes) or None)
    identity = [c for c in _IDENTITY if c not in shared] + (["setting"] if any(row["setting"] for row in rows) else [])
    identity = identity or ["setting"]  # the "vs" label needs a first column
    identity += ["leak", "runs"]
    for column in identity:
        table.add_column(column, justify="right" if column == "runs" else "left")
    for metric in _SHORT.values():
        table.add_column(metric, justify="right")
    # Noise columns only where some run had injected noise to find.
    extras = [c for c in rows[0] if c.startswith("noise ") and any(r[c] == r[c] for r in rows)]
    for column in extras:
        table.add_column(column.replace(" mean", ""), justify="right")
    paired_key = f"p paired-{paired_test}"
    for row in rows:
        stats = [f"{row[m + ' mean']:.4f}" + ("" if row[m + " std"] != row[m + " std"] else f" ± {row[m + ' std']:.4f}")
                 for m in _SHORT]
        own = baseline and row["baseline"] == "(baseline)"
        first = [_cell(row[c]) for c in identity]
        if own:
            first[0] += " (baseline)"
        table.add_row(*first, *stats, *(_cell(row[c]) for c in extras), end_section=baseline and not own)
        if baseline and not own:
            p_cells = [f"{_p_cell(row[f'p welch {m}'])} / {_p_cell(row[f'{paired_key} {m}'])}" for m in _SHORT]
            table.add_row(f"  p vs {row['baseline']}", *([""] * (len(identity) - 1)), *p_cells, *([""] * len(extras)),
                          style="dim")
    return table


# --------------------------------------------------------------------------- summarize


def _llm_options(command):
    """Flags shared by the commands that call an LLM (summarize) or price one (cost)."""
    options = [
        click.option("--provider", default=None, help="LLM provider: embed (offline semantic scorer, NOT a generative LLM), "
                     "openai, anthropic, oracle (UPPER BOUND diagnostic: a perfect judge of the training labels) or a plugin's "
                     "[default: LLMHD_PROVIDER or config [llm] provider, else embed]."),
        click.option("--model", default=None, help="Model name [default: the provider's first model, see `llmhd providers`]."),
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="LLM answer cache and ledger [default: config [llm] cache_dir, else <workspace>/llm-cache]."),
        click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None,
                     help="Folder of prompt templates overriding the shipped ones (see `llmhd prompts export`) "
                     "[default: config key 'prompts']."),
        click.option("--max-items", type=int, default=None,
                     help="Training items per T_sum prompt; users with more get a seeded sample [default: 50]."),
        click.option("--items", is_flag=True, help="Item profiles from raw attributes first (item_profile template): "
                     "summarize generates them, cost counts their prompts."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


class _LLMProgress:
    """A rich progress bar fed by the client's per-result callback."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = None

    def start(self, label: str, total: int) -> None:
        import time

        self.t0 = time.monotonic()
        self.done = self.hits = self.failed = self.tokens = 0
        self.cost = 0.0
        self.task = self.progress.add_task(label, total=total, rate=0.0, hits=0, tokens=0, cost=0.0, failed=0)

    def update(self, result) -> None:
        import time

        self.done += 1
        self.hits += int(result.cached)
        self.failed += int(not result.ok)
        if not result.cached:
            self.tokens += result.input_tokens + result.output_tokens
        self.cost += result.cost
        rate = self.done / max(time.monotonic() - self.t0, 1e-6)
        self.progress.update(self.task, advance=1, rate=rate, hits=self.hits, tokens=self.tokens, cost=self.cost,
                             failed=self.failed)


def _stats_table(title: str, rows: list, upper_bound: bool = False, runs: bool = False) -> Table:
    """The paper's Table 4 columns: template, calls, cache hits, failures, tokens in/out, cost."""
    table = Table(title=title)
    for column in ("template", "provider", "model"):
        table.add_column(column, no_wrap=True)
    for column in ("calls", "cache hits", "failures", "tokens in", "tokens out", "cost ($)") + (("runs",) if runs else ()):
        table.add_column(column, justify="right")
    for r in rows:
        provider = r.provider + (" (upper bound)" if upper_bound or r.provider == "oracle" else "")
        cells = [r.template, provider, r.model, f"{r.calls:,}", f"{r.cache_hits:,}", f"{r.failures:,}",
                 f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"{r.cost:.4f}"]
        table.add_row(*cells, *((str(r.runs),) if runs else ()))
    return table


@cli.command("summarize")
@click.option("-d", "--dataset", default=None, help="Prepared dataset [default: config 'default_dataset', else ml-100k].")
@_llm_options
@click.option("--base-url", default=None, help="OpenAI-/Anthropic-compatible server URL [default: LLMHD_BASE_URL or config].")
@click.option("--concurrency", type=int, default=None, help="Calls in flight at once [default: config, else 4].")
@click.option("--max-cost", type=float, default=None, help="Stop sending calls once this many US dollars are spent [default: no limit].")
@click.option("--refresh", is_flag=True, help="Ignore cached answers (new answers replace them).")
@pass_state
def summarize_command(state: State, dataset: str | None, provider: str | None, model: str | None, cache_dir: Path | None,
                      prompts_dir: str | None, max_items: int | None, items: bool, base_url: str | None,
                      concurrency: int | None, max_cost: float | None, refresh: bool) -> None:
    """Summarize every user's preference from their training items (T_sum), stored with the dataset.

    The default provider `embed` is an offline semantic scorer, not a generative LLM: its
    "summaries" are extractive (the user's most representative item texts).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmhd_cli.config import default_dataset
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.llm.settings import resolve_settings
    from llmhd_cli.summarize import DEFAULT_MAX_ITEMS, SummarizeOptions, summarize

    settings = resolve_settings(provider=provider, model=model, base_url=base_url,
                                cache_dir=cache_dir, concurrency=concurrency, max_cost=max_cost, refresh=refresh)
    options = SummarizeOptions(dataset if dataset is not None else default_dataset(), prompts_dir_setting(prompts_dir), items,
                               max_items if max_items is not None else DEFAULT_MAX_ITEMS)
    from llmhd_cli import plugins

    cls = plugins.registry("provider").get(settings.provider, "--provider")
    if cls.upper_bound:
        err_console.print(f"[yellow]note:[/] provider '{cls.name}' is an UPPER BOUND diagnostic that reads the training labels, not an LLM")
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} calls/s  hits {task.fields[hits]:,}  failed {task.fields[failed]:,}  "
                          "tokens {task.fields[tokens]:,}  ${task.fields[cost]:.4f}"), TimeElapsedColumn()]
    from llmhd_cli.datasets import open_dataset

    open_dataset(state.workspace, options.dataset)  # a missing dataset is one line, before the display starts
    with Progress(*columns, console=err_console, transient=False) as bar:
        result = summarize(state.workspace, settings, options, progress=_LLMProgress(bar))
    label = f"{result.provider}/{result.model}" + (" (UPPER BOUND)" if result.upper_bound else "")
    console.print(_stats_table(f"summarize {result.dataset} with {label}, prompt set '{result.template_set}'",
                               result.rows, result.upper_bound))
    if result.path is not None:
        console.print(f"{result.profiles:,} of {result.users:,} user profiles written to {result.path}")
    if result.skipped_users:
        console.print(f"[yellow]{result.skipped_users:,} users have no training item with a text: no profile[/]")
    failed = result.users - result.profiles
    if result.budget_exhausted:
        console.print(f"[yellow]--max-cost reached: {failed:,} users not summarized; rerun with a higher limit to finish "
                      "(answers so far are cached)[/]")
    elif failed:
        console.print(f"[yellow]{failed:,} users failed; rerun to retry them (answers so far are cached)[/]")
    if not result.generative:
        console.print(f"note: '{result.provider}' is not a generative LLM; its profiles are extractive")


# --------------------------------------------------------------------------- cost


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
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_writable_dir,
                     help="Training dry run: keep its run directory here [default: a temporary folder, removed after]."),
        click.option("--structured", is_flag=True, help="Training dry run: render structured (JSON schema) score requests."),
    ]
    spec = plugins.registry("denoiser").items.get(estimator.denoiser) if estimator is not None else None
    for name in estimator.options if spec is not None else ():
        option = next(o for o in spec.options if o.name == name)
        # Plain types, choices checked by the denoiser: a bad value is one line, exit 2.
        kind = str if option.choices else option.type
        help_text = option.help.removeprefix("llmhd: ")
        options.append(click.option(option.flag, option.name, type=kind, default=None,
                                    help=f"Training dry run: {help_text} [default: {option.default}]."))
    for option in reversed(options):
        command = option(command)
    return command


class _DryRunProgress:
    """Training dry run progress on stderr (stdout keeps the table), gone when it ends."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=err_console, transient=True)
        self.task = None

    def message(self, text: str) -> None:
        logging.getLogger("llmhd_cli.cost").info(text)

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("dry run", total=n_batches)
        self.progress.reset(self.task, total=n_batches, description=f"training dry run, epoch {epoch}")

    def batch_done(self) -> None:
        self.progress.advance(self.task)

    def epoch_end(self, record) -> None:
        pass

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


# Table 4's names for the templates' tasks.
TABLE4_NAMES = {"summarize": "T_sum", "score": "T_score", "update_fp": "T_fp", "update_fn": "T_fn",
                "item_profile": "T_item"}


@cli.command("cost")
@click.option("--spent", is_flag=True, help="Show what was spent (the ledger) instead of an estimate.")
@click.option("-d", "--dataset", default=None, help="Dataset to estimate for, or (with --spent) whose recorded runs to show "
              "[default for estimates: config 'default_dataset', else ml-100k, prepared on first use].")
@_llm_options
@click.option("--base-url", default=None, help="OpenAI-/Anthropic-compatible server URL the run would use "
              "(any model name it serves is accepted) [default: LLMHD_BASE_URL or config].")
@_lazy_options(_dry_run_options)
@pass_state
def cost_command(state: State, spent: bool, dataset: str | None, provider: str | None, model: str | None,
                 cache_dir: Path | None, prompts_dir: str | None, max_items: int | None, items: bool,
                 base_url: str | None, with_training: bool, epochs: int | None, backbone: str | None,
                 objective: str | None, batch_size: int | None, seed: int | None, device: str | None,
                 run_dir: Path | None, structured: bool, **llmhd) -> None:
    """Estimate the prompts, tokens and money of a run before it runs, or show what was spent.

    The estimate renders every prompt the run would send and counts its tokens; money comes
    from the price table. Prompts already cached are counted but cost nothing. Without
    training flags it covers summarize (T_sum); with --train or any training flag (e.g.
    --eps-v 0.5) it also runs a short training dry run with the llmhd denoiser, the LLM never
    called, and adds the T_score, T_fp and T_fn prompts it would send (Table 4's rows).
    """
    from llmhd_cli.config import default_dataset
    from llmhd_cli.llm import estimate as est
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.llm.settings import resolve_settings

    overrides = {"backbone": backbone, "objective": objective, "batch_size": batch_size, "seed": seed, "device": device}
    training = with_training or structured or run_dir is not None or epochs is not None or any(
        v is not None for v in (*overrides.values(), *llmhd.values()))
    settings = resolve_settings(provider=provider, model=model, base_url=base_url, cache_dir=cache_dir,
                                require_key=False)
    cache = settings.resolved_cache_dir(state.workspace)
    if spent:
        if training:
            raise LLMHDError("cost --spent: the training flags (--train, --epochs, --eps-v, ...) are for an estimate")
        if dataset is not None:
            from llmhd_cli.datasets import open_dataset
            from llmhd_cli.workspace import runs_dir

            runs_root = runs_dir(state.workspace)
            rows = est.dataset_spending(open_dataset(state.workspace, dataset), runs_root)
            title = f"spent on {dataset} (summarize runs recorded with the dataset, training runs in {runs_root})"
            where = dataset
        else:
            rows = est.ledger_spending(cache)
            title, where = f"spent (ledger of {cache})", str(cache)
        if provider:
            rows = [r for r in rows if r.provider == provider]
        if not rows:
            console.print(f"nothing spent yet ({where})")
            return
        total = est.SpentRow("total", "", "", *(sum(getattr(r, k) for r in rows) for k in
                             ("calls", "cache_hits", "failures", "input_tokens", "output_tokens", "cost", "runs")))
        console.print(_stats_table(title, rows + [total], runs=bool(dataset)))
        return
    name = dataset if dataset is not None else default_dataset()
    prompts = prompts_dir_setting(prompts_dir)
    options: dict = {"items": items, "max_items": max_items}
    progress = None
    if training:
        estimator = est.training_estimator()
        if estimator is None:
            raise LLMHDError("cost: the training flags need a plugin that dry-runs training (none is loaded)")
        config = estimator.train_config(name, settings.provider, settings.model, prompts, epochs, overrides,
                                        {**llmhd, "structured": structured or None}, settings.base_url)
        if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()):
            raise LLMHDError(f"--run-dir {run_dir}: folder is not empty; name a new one or remove it first")
        progress = _DryRunProgress()
        options.update(train=config, train_observer=progress, train_run_dir=run_dir)
    from llmhd_cli.prepare import ensure_prepared

    ensure_prepared(state.workspace, name, notify=lambda m: err_console.print(m, style="yellow", highlight=False))
    try:
        result = est.estimate(state.workspace, name, settings.provider, settings.model, prompts,
                              settings.prices_file, cache, options, settings.base_url)
    finally:
        if progress is not None:
            progress.stop()
    label = f"{result.provider}/{result.model}" + (" (UPPER BOUND)" if result.upper_bound else "")
    title = f"ESTIMATE for {result.dataset} with {label} (nothing sent)"
    table = Table(title=title + (", shaped like the paper's Table 4" if training else ""))
    if training:
        table.add_column("Table 4", no_wrap=True)
    for column in ("step", "template"):
        table.add_column(column, no_wrap=True)
    for column in ("prompts", "cached", "tokens in", "tokens out (est.)", "cost ($, est.)"):
        table.add_column(column, justify="right")
    table.add_column("note")
    for r in result.rows + [result.total]:
        cells = [r.step, r.template, f"{r.prompts:,}", f"{r.cached:,}", f"{r.input_tokens:,}" + ("" if r.exact_tokens else "~"),
                 f"{r.output_tokens:,}", f"{r.cost:.4f}", r.note]
        if training and r.template == "total":
            cells = ["total", "", "", *cells[2:]]
        elif training:
            task = r.template.rpartition("/")[2]
            cells.insert(0, TABLE4_NAMES.get(task, task))
        table.add_row(*cells)
    console.print(table)
    for detail in result.details:
        console.print(f"note: {detail}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}")


# --------------------------------------------------------------------------- prompts


@cli.group("prompts")
def prompts_group() -> None:
    """See the shipped prompt template sets and copy one out to edit (use it with --prompts DIR)."""


@prompts_group.command("list")
@click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None, help="Also load (and validate) this folder.")
def prompts_list(prompts_dir: str | None) -> None:
    """List template sets: domains, templates and their hashes, and where each set comes from."""
    from llmhd_cli import plugins
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    owners = plugins.registry("prompt set").owners
    table = Table(title="llmhd prompt template sets (a dataset's domain picks its set; unknown domains use 'items')")
    for column in ("set", "domains", "templates (task:hash)", "from"):
        table.add_column(column)
    for name, s in sorted(available_sets(prompts_dir_setting(prompts_dir)).items()):
        origin = s.origin if s.origin != "built-in" else f"built-in ({owners.get(name, '?')})"
        templates = "\n".join(f"{task}:{t.hash[:8]}" for task, t in sorted(s.templates.items()))
        table.add_row(name, ", ".join(s.domains) or "-", templates, origin)
    console.print(table)


@prompts_group.command("show")
@click.argument("name")
@click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None, help="Look in this folder first.")
def prompts_show(name: str, prompts_dir: str | None) -> None:
    """Print a set's templates (NAME = set, e.g. books) or one template (books/score)."""
    from rich.syntax import Syntax

    from llmhd_cli.errors import LLMHDError
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    set_name, _, task = name.partition("/")
    sets = available_sets(prompts_dir_setting(prompts_dir))
    if set_name not in sets:
        raise LLMHDError(f"prompts show: unknown prompt set '{set_name}' (known: {', '.join(sorted(sets))})")
    s = sets[set_name]
    templates = [s.get(task)] if task else [s.templates[t] for t in sorted(s.templates)]
    for t in templates:
        console.rule(f"{t.name}  hash {t.hash}  {t.source}")
        console.print(Syntax(t.text, "toml", word_wrap=True))


@prompts_group.command("export")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Overwrite files in an existing non-empty folder.")
@click.option("--prompts", "prompts_dir", type=click.Path(file_okay=False), default=None, help="Export from this folder's sets too.")
def prompts_export(target: Path, names: tuple[str, ...], force: bool, prompts_dir: str | None) -> None:
    """Copy template sets (all, or NAMES) to TARGET/<set>/ for editing; pass TARGET with --prompts."""
    from llmhd_cli.errors import LLMHDError
    from llmhd_cli.llm.prompts import available_sets, prompts_dir_setting

    sets = available_sets(prompts_dir_setting(prompts_dir))
    for name in names:
        if name not in sets:
            raise LLMHDError(f"prompts export: unknown prompt set '{name}' (known: {', '.join(sorted(sets))})")
    for name in names or sorted(sets):
        dest = sets[name].export(target, force)
        console.print(f"exported '{name}' to {dest}")
    console.print(f"edit the files, then pass --prompts {target}")


# --------------------------------------------------------------------------- experiment


@cli.group("experiment")
def experiment_group() -> None:
    """Whole grids of runs from one TOML file: plan, run (resumable), cost, report (docs/experiments.md)."""


def _load_plan(spec_path: Path):
    from llmhd_cli.experiments.grid import expand
    from llmhd_cli.experiments.spec import load_spec

    return expand(load_spec(spec_path))


_SPEC_ARG = click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))


@experiment_group.command("plan")
@_SPEC_ARG
@pass_state
def experiment_plan(state: State, spec_path: Path) -> None:
    """Check SPEC and list its runs and whether each is done, unfinished or to do."""
    from llmhd_cli.experiments.grid import point_label
    from llmhd_cli.experiments.runner import plan_states, runs_root

    plan = _load_plan(spec_path)
    states = plan_states(state.workspace, plan)
    table = Table(title=f"experiment {plan.spec.name}: {len(plan.runs)} runs in {runs_root(state.workspace, plan.spec.name)}")
    for column in ("method", "setting", "dataset", "backbone", "objective", "seeds", "done"):
        table.add_column(column)
    for cell in plan.cells:
        done = sum(states[f] == "done" for f in cell.folders)
        table.add_row(cell.method, point_label(cell.axes), cell.dataset, cell.backbone, cell.objective,
                      str(len(cell.folders)), f"{done}/{len(cell.folders)}")
    console.print(table)
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "partial", "todo")}
    console.print(f"{counts['done']} done, {counts['partial']} unfinished (redone on run), {counts['todo']} to do",
                  highlight=False)


class _GridProgress:
    """One rich line over the whole grid, and a line per finished run."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def update(self, status) -> None:
        eta = status.eta()
        epochs = " ".join(f"{p.epochs_done}/{p.epochs}" for p in status.running.values())
        info = (f"running {len(status.running)}" + (f" (epochs {epochs})" if epochs else "") + f" · left {status.left}"
                + (f" · failed {status.failed}" if status.failed else "")
                + (f" · ETA {_duration(eta)}" if eta is not None else "")
                + f" · LLM {int(status.llm['input_tokens'] + status.llm['output_tokens']):,} tokens ${status.llm['cost']:.4f}")
        if self.task is None:
            self.task = self.progress.add_task("runs done", total=status.total, info="")
        self.progress.update(self.task, completed=status.finished, info=info)

    def run_finished(self, run, outcome, status) -> None:
        from llmhd_cli.experiments.runner import worker_name

        where = "" if outcome.worker == worker_name() else f" on {outcome.worker}"  # a worker process or Ray node
        if outcome.ok:
            self.message(f"done {run.folder} ({_duration(outcome.seconds)}{where}): "
                         f"ndcg@10 {outcome.test.get('ndcg@10', 0):.4f}")
        else:
            self.message(f"FAILED {run.folder}{where}: {mask_secrets(outcome.error)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


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
    notify = lambda m: console.print(m, style="yellow", highlight=False)  # noqa: E731
    with runner.ray_session(ray_address):  # an unreachable cluster fails before anything is written
        runner.prepare_datasets(state.workspace, plan, notify)
        if not no_summarize:
            runner.summarize_missing(state.workspace, plan, notify)
        with _GridProgress() as progress:
            result = runner.run_grid(state.workspace, plan, options, progress)
    status = result.status
    console.print(f"experiment {plan.spec.name}: {status.done} trained, {status.skipped} already done, "
                  f"{status.failed} failed; runs in {runner.runs_root(state.workspace, plan.spec.name)}", highlight=False)
    if result.failures:
        first = result.failures[0]
        raise LLMHDError(f"{len(result.failures)} of {status.total} runs failed (first: {first.folder}: {first.error}); "
                         f"fix it and run again to resume")


@experiment_group.command("report")
@_SPEC_ARG
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json", "latex"]), default="table",
              help="Output format.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path), default=None, callback=_writable_dir,
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
            console.print(_experiment_table(results, table))
        for line in report.legend(results):
            console.print(f"note: {line}", highlight=False)
    else:
        click.echo(report.render(results, fmt), nl=False)
    if plots_dir is not None:
        for path in report.plot(results, plots_dir):
            err_console.print(f"wrote {path}", highlight=False, markup=False)


def _experiment_table(results, table) -> Table:
    from llmhd_cli.evaluation import METRICS
    from llmhd_cli.experiments.report import BACKBONE_NAMES, cell_text

    out = Table(title=f"{results.plan.spec.name}: {table.dataset} (mean ± std over seeds)")
    out.add_column("method")
    for backbone in table.columns:
        for metric in METRICS:
            out.add_column(f"{BACKBONE_NAMES.get(backbone, backbone)}\n{_SHORT[metric]}", justify="right")
    for row in table.rows:
        cells = [escape(row.label) + (" [red](leak)[/]" if row.leak else "")]
        for backbone in table.columns:
            for metric in METRICS:
                c = row.cells.get(backbone)
                if c is None:
                    cells.append("")
                    continue
                mean, std, mark = cell_text(c, metric, results.significance)
                style = {1: "bold", 2: "underline"}.get(c.rank.get(metric))
                text = f"[{style}]{mean}[/]" if style else mean
                cells.append(text + mark + (f"\n± {std}" if std else ""))
        out.add_row(*cells)
    return out


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
    from llmhd_cli.experiments import runner
    from llmhd_cli.experiments.cost import grid_cost

    if epochs is not None and epochs < 1:
        raise LLMHDError(f"--epochs: must be at least 1, got {epochs}")
    plan = _load_plan(spec_path)
    runner.check_base_datasets(state.workspace, plan)
    runner.prepare_datasets(state.workspace, plan, lambda m: err_console.print(m, style="yellow", highlight=False))
    progress = _DryRunProgress()

    def observer_for(number: int, total: int, label: str):
        err_console.print(f"dry run {number}/{total}: {label}", highlight=False, markup=False)
        return progress

    try:
        result = grid_cost(state.workspace, plan, epochs, threads, observer_for)
    finally:
        progress.stop()
    table = Table(title=f"ESTIMATE for experiment {plan.spec.name} (nothing sent)")
    table.add_column("setting")
    table.add_column("provider/model")
    for column in ("runs", "prompts/run", "cached/run", "tokens in/run", "tokens out/run", "$/run", "$ total"):
        table.add_column(column, justify="right")
    for r in result.rows:
        label = r.label if r.step == "train" else f"{r.label} (once)"
        table.add_row(escape(label), f"{r.provider}/{r.model}" + (" (UPPER BOUND)" if r.upper_bound else ""), str(r.runs),
                      f"{r.prompts:,}", f"{r.cached:,}", f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"{r.cost:.4f}",
                      f"{r.total_cost:.4f}")
    table.add_row("total", "", str(sum(r.runs for r in result.rows if r.step == "train")), "", "", "", "", "",
                  f"{result.total_cost:.4f}", end_section=True)
    console.print(table)
    console.print(f"{result.free_runs} of {len(plan.runs)} runs consult no LLM; "
                  f"{result.total_tokens:,} tokens in all", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)


def _build() -> click.Group:
    # Plugins' commands join when a command is looked up or listed (_Group), not here.
    return cli


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, turning user errors into exit code 2 and Ctrl-C into 130 (one line each)."""
    from llmhd_cli.__main__ import INTERRUPTED, say_interrupted

    try:
        group = _build()
        group.main(args=argv, prog_name="llmhd", standalone_mode=False)
    except KeyboardInterrupt:  # outside click's own handling (plugin loading in _build)
        say_interrupted()
        sys.exit(INTERRUPTED)
    except LLMHDError as exc:
        # escape: a message quotes user input ('--dataset [/x]'), which is not rich markup
        err_console.print(f"[bold red]error:[/] {escape(mask_secrets(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            say_interrupted()
        else:
            err_console.print("aborted")
        sys.exit(INTERRUPTED)
    except click.UsageError as exc:
        # One line like every other user error, naming where to read more.
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
