"""How the commands show things: the consoles, rich tables of results, progress displays, and
the one-line error. Rendering only: what goes into a table is decided by the library."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmhd_cli.redact import mask_secrets

if TYPE_CHECKING:  # for the annotations only: importing these at run time would load torch or pandas
    from rich.progress import Progress, TaskID

    from llmhd_cli.datasets import PreparedDataset
    from llmhd_cli.experiments.cost import GridCost
    from llmhd_cli.experiments.grid import Plan, PlannedRun
    from llmhd_cli.experiments.report import ReportTable, Results
    from llmhd_cli.experiments.runner import GridStatus, RunOutcome
    from llmhd_cli.llm.batch import BatchPoll
    from llmhd_cli.llm.client import LLMResult
    from llmhd_cli.llm.estimate import Estimate
    from llmhd_cli.plugins import Registry
    from llmhd_cli.summarize import SummarizeResult
    from llmhd_cli.training import EpochRecord, TrainResult

# Piped output (logs, CI) would otherwise be cut at 80 columns, truncating metric tables.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def error(message: str) -> None:
    """A user error as one line on stderr (`llmhd_cli.cli.main` then exits with its code)."""
    # escape: a message quotes user input ('--dataset [/x]'), which is not rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def notify(message: str) -> None:
    """A yellow note on stdout (e.g. a dataset prepared on first use)."""
    console.print(message, style="yellow", highlight=False)


def notify_err(message: str) -> None:
    """A yellow note on stderr, for commands whose stdout is a table."""
    err_console.print(message, style="yellow", highlight=False)


# --------------------------------------------------------------------------- registries


def plugins_table(plugin_names: list[str], registries: list) -> Table:
    """One row per plugin and kind of thing it registered."""
    table = Table(title="llmhd plugins")
    table.add_column("plugin")
    table.add_column("kind")
    table.add_column("registered")
    rows: dict[tuple[str, str], list[str]] = {}
    for registry in registries:
        for name, owner in registry.owners.items():
            rows.setdefault((owner, registry.kind), []).append(name)
    for name in plugin_names:
        kinds = [(kind, sorted(items)) for (owner, kind), items in sorted(rows.items()) if owner == name]
        if not kinds:
            table.add_row(name, "-", "(hooks only)")
        for kind, items in kinds:
            table.add_row(name, kind, ", ".join(items))
    return table


def providers_table(registry: Registry) -> Table:
    """One row per LLM provider: models (first is the default), key variable, kind."""
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
    return table


def prompt_sets_table(sets: dict, owners: dict[str, str]) -> Table:
    table = Table(title="llmhd prompt template sets (a dataset's domain picks its set; unknown domains use 'items')")
    for column in ("set", "domains", "templates (task:hash)", "from"):
        table.add_column(column)
    for name, s in sorted(sets.items()):
        origin = s.origin if s.origin != "built-in" else f"built-in ({owners.get(name, '?')})"
        templates = "\n".join(f"{task}:{t.hash[:8]}" for task, t in sorted(s.templates.items()))
        table.add_row(name, ", ".join(s.domains) or "-", templates, origin)
    return table


def print_templates(templates: list) -> None:
    from rich.syntax import Syntax

    for t in templates:
        console.rule(f"{t.name}  hash {t.hash}  {t.source}")
        console.print(Syntax(t.text, "toml", word_wrap=True))


# --------------------------------------------------------------------------- prepare


def print_prepared(dataset: PreparedDataset) -> None:
    """The prepared dataset's splits (users, items, interactions, sparsity, noise) and notes."""
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


class TrainProgress:
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
        self._total_epochs = epochs
        self._llm: list[tuple[int, float]] = []  # per epoch with LLM use: (tokens, dollars)

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

    def epoch_end(self, record: EpochRecord) -> None:
        parts = [f"epoch {record.epoch:>3}", f"loss {record.loss:.4f}"]
        if record.dropped:
            parts.append(f"dropped {100 * record.dropped / max(record.samples, 1):.1f}%")
        if record.noise and record.noise["dropped_positives"]:
            parts.append(f"noise P/R {record.noise['precision']:.2f}/{record.noise['recall']:.2f}")
        if record.valid:
            parts.append(f"valid ndcg@10 {record.valid['ndcg@10']:.4f}" + (" *" if record.best else ""))
        parts.append(f"{record.seconds:.1f}s")
        llm = (record.denoiser or {}).get("llm") if isinstance(record.denoiser, dict) else None
        if isinstance(llm, dict):
            parts.append(self._llm_spend(record.epoch, llm))
        self.progress.console.print("  ".join(parts), highlight=False)
        self.progress.advance(self.epochs)

    def _llm_spend(self, epoch: int, llm: dict) -> str:
        """LLM tokens and dollars spent so far, and the run's estimate: so far plus the mean of
        the last three epochs for each epoch left (an upper bound when cost stops growing)."""
        tokens = int(llm.get("input_tokens", 0) or 0) + int(llm.get("output_tokens", 0) or 0)
        self._llm.append((tokens, float(llm.get("cost", 0.0) or 0.0)))
        spent_tokens = sum(t for t, _ in self._llm)
        spent_cost = sum(c for _, c in self._llm)
        if not spent_tokens and not spent_cost:  # a local judge (embed, oracle): free, no tokens
            return f"LLM {int(llm.get('score_requests', 0) or 0):,} new pairs (local, no tokens)"
        recent = self._llm[-3:]
        left = max(self._total_epochs - epoch - 1, 0)
        est_tokens = spent_tokens + left * sum(t for t, _ in recent) / len(recent)
        est_cost = spent_cost + left * sum(c for _, c in recent) / len(recent)
        return (f"LLM {tokens:,} tok (so far {spent_tokens:,} tok ${spent_cost:.4f}; "
                f"run est. {est_tokens:,.0f} tok ${est_cost:.4f})")


def metrics_table(title: str, rows: list[tuple[str, dict]], keys: tuple[str, ...]) -> Table:
    table = Table(title=title)
    table.add_column("run")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in rows:
        table.add_row(name, *(f"{metrics[k]:.4f}" if k in metrics else "-" for k in keys))
    return table


METRIC_KEYS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def print_trained(result: TrainResult) -> None:
    """A finished run's test metrics, its noise detection and where it is."""
    console.print(metrics_table(f"test metrics (best epoch {result.best_epoch}, {result.seconds_per_epoch:.2f}s/epoch)",
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


SHORT = {"recall@5": "R@5", "recall@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}
_IDENTITY = ("dataset", "backbone", "objective", "denoiser")
_LEAK_NOTE = ("leak: the run's LLM model reads held-out labels (its provider's leaky_models); "
              "an upper bound, not a result, and never grouped with other runs")


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "LEAK" if value else "no"  # only the leak column is boolean
    if isinstance(value, float):
        return "-" if value != value else f"{value:.4f}"  # NaN: not defined (e.g. std of one run)
    return str(value)


def _shared_identity(rows: list[dict]) -> tuple[list[str], str]:
    """Identity columns with one value in every row (shown once, in the title) and that title part."""
    shared = [c for c in _IDENTITY if len({str(row[c]) for row in rows}) == 1] if len(rows) > 1 else []
    return shared, (" of " + " · ".join(str(rows[0][c]) for c in shared)) if shared else ""


def runs_table(rows: list[dict]) -> Table:
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
        table.add_column(SHORT.get(column, column), justify="left" if column in (*_IDENTITY, "leak") else "right")
    for i, row in enumerate(rows):
        table.add_row(str(i + 1), *(_cell(row[c]) for c in columns))
    return table


def _p_cell(p: float) -> str:
    return "-" if p != p else f"{p:.2g}"


def group_table(rows: list[dict], paired_test: str) -> Table:
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
    for metric in SHORT.values():
        table.add_column(metric, justify="right")
    # Noise columns only where some run had injected noise to find.
    extras = [c for c in rows[0] if c.startswith("noise ") and any(r[c] == r[c] for r in rows)]
    for column in extras:
        table.add_column(column.replace(" mean", ""), justify="right")
    paired_key = f"p paired-{paired_test}"
    for row in rows:
        stats = [f"{row[m + ' mean']:.4f}" + ("" if row[m + " std"] != row[m + " std"] else f" ± {row[m + ' std']:.4f}")
                 for m in SHORT]
        own = baseline and row["baseline"] == "(baseline)"
        first = [_cell(row[c]) for c in identity]
        if own:
            first[0] += " (baseline)"
        table.add_row(*first, *stats, *(_cell(row[c]) for c in extras), end_section=baseline and not own)
        if baseline and not own:
            p_cells = [f"{_p_cell(row[f'p welch {m}'])} / {_p_cell(row[f'{paired_key} {m}'])}" for m in SHORT]
            table.add_row(f"  p vs {row['baseline']}", *([""] * (len(identity) - 1)), *p_cells, *([""] * len(extras)),
                          style="dim")
    return table


# --------------------------------------------------------------------------- LLM calls and their cost


class LLMProgress:
    """A rich progress bar fed by the client's per-result callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        import time

        self.t0 = time.monotonic()
        self.done = self.hits = self.failed = self.tokens = 0
        self.cost = 0.0
        self.task = self.progress.add_task(label, total=total, rate=0.0, hits=0, tokens=0, cost=0.0, failed=0)

    def update(self, result: LLMResult) -> None:
        import time

        self.done += 1
        self.hits += int(result.cached)
        self.failed += int(not result.ok)
        if not result.cached:
            self.tokens += result.input_tokens + result.output_tokens
        self.cost += result.cost
        rate = self.done / max(time.monotonic() - self.t0, 1e-6)
        assert self.task is not None, "update before start"
        self.progress.update(self.task, advance=1, rate=rate, hits=self.hits, tokens=self.tokens, cost=self.cost,
                             failed=self.failed)

    def batch_start(self, label: str, total: int) -> None:
        """A bar for the batches a run waits for (``summarize --batch``): requests done of total."""
        self.batch_task = self.progress.add_task(label, total=total, rate=0.0, hits=0, tokens=0, cost=0.0, failed=0)

    def batch_poll(self, poll: BatchPoll) -> None:
        self.progress.update(self.batch_task, completed=poll.done, failed=poll.failed,
                             description=f"{poll.label} ({poll.batches} {poll.state})")


def llm_progress_bar():
    """The progress display of LLM calls (on stderr), for `LLMProgress`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} calls/s  hits {task.fields[hits]:,}  failed {task.fields[failed]:,}  "
                          "tokens {task.fields[tokens]:,}  ${task.fields[cost]:.4f}"), TimeElapsedColumn()]
    return Progress(*columns, console=err_console, transient=False)


def _upper_bound(provider: str) -> bool:
    """Whether the registered provider of that name is a diagnostic that sees ground truth."""
    from llmhd_cli import plugins

    return bool(getattr(plugins.registry("provider").items.get(provider), "upper_bound", False))


def stats_table(title: str, rows: list, upper_bound: bool = False, runs: bool = False) -> Table:
    """The paper's Table 4 columns: template, calls, cache hits, failures, tokens in/out, cost."""
    table = Table(title=title)
    for column in ("template", "provider", "model"):
        table.add_column(column, no_wrap=True)
    for column in ("calls", "cache hits", "failures", "tokens in", "tokens out", "cost ($)") + (("runs",) if runs else ()):
        table.add_column(column, justify="right")
    for r in rows:
        provider = r.provider + (" (upper bound)" if upper_bound or _upper_bound(r.provider) else "")
        cells = [r.template, provider, r.model, f"{r.calls:,}", f"{r.cache_hits:,}", f"{r.failures:,}",
                 f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"{r.cost:.4f}"]
        table.add_row(*cells, *((str(r.runs),) if runs else ()))
    return table


def print_summarized(result: SummarizeResult) -> None:
    """Summarize's usage table and what is left to do."""
    label = f"{result.provider}/{result.model}" + (" (UPPER BOUND)" if result.upper_bound else "")
    console.print(stats_table(f"summarize {result.dataset} with {label}, prompt set '{result.template_set}'",
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
    batch = result.batch
    if batch is not None and (batch.submitted or batch.resumed):
        console.print(f"batches: {batch.submitted:,} submitted, {batch.resumed:,} picked up from an earlier run; "
                      f"{batch.answered:,} answers at the batch price, {batch.failed:,} requests without an answer"
                      + (f" ({batch.fallback:,} sent as normal calls)" if batch.fallback else ""), highlight=False)


class DryRunProgress:
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
        self.task: TaskID | None = None

    def message(self, text: str) -> None:
        logging.getLogger("llmhd_cli.cost").info(text)

    def epoch_start(self, epoch: int, n_batches: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("dry run", total=n_batches)
        self.progress.reset(self.task, total=n_batches, description=f"training dry run, epoch {epoch}")

    def batch_done(self) -> None:
        assert self.task is not None, "batch_done before epoch_start"
        self.progress.advance(self.task)

    def epoch_end(self, record: EpochRecord) -> None:
        pass

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


# Table 4's names for the templates' tasks.
TABLE4_NAMES = {"summarize": "T_sum", "score": "T_score", "update_fp": "T_fp", "update_fn": "T_fn",
                "item_profile": "T_item", "score_list": "T_score"}


def print_estimate(result: Estimate, training: bool) -> None:
    """`llmhd cost`'s estimate: one row per step and template (Table 4's names with training)."""
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


# --------------------------------------------------------------------------- experiment


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def plan_table(title: str, plan: Plan, states: dict[str, str]) -> Table:
    """An experiment's cells: method, setting, dataset, backbone, objective, seeds, done."""
    from llmhd_cli.experiments.grid import point_label

    table = Table(title=title)
    for column in ("method", "setting", "dataset", "backbone", "objective", "seeds", "done"):
        table.add_column(column)
    for cell in plan.cells:
        done = sum(states[f] == "done" for f in cell.folders)
        table.add_row(cell.method, point_label(cell.axes), cell.dataset, cell.backbone, cell.objective,
                      str(len(cell.folders)), f"{done}/{len(cell.folders)}")
    return table


class GridProgress:
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
        self.task: TaskID | None = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, markup=False)

    def update(self, status: GridStatus) -> None:
        eta = status.eta()
        epochs = " ".join(f"{p.epochs_done}/{p.epochs}" for p in status.running.values())
        info = (f"running {len(status.running)}" + (f" (epochs {epochs})" if epochs else "") + f" · left {status.left}"
                + (f" · failed {status.failed}" if status.failed else "")
                + (f" · ETA {duration(eta)}" if eta is not None else "")
                + f" · LLM {int(status.llm['input_tokens'] + status.llm['output_tokens']):,} tokens ${status.llm['cost']:.4f}")
        if self.task is None:
            self.task = self.progress.add_task("runs done", total=status.total, info="")
        self.progress.update(self.task, completed=status.finished, info=info)

    def run_finished(self, run: PlannedRun, outcome: RunOutcome, status: GridStatus) -> None:
        from llmhd_cli.experiments.runner import worker_name

        where = "" if outcome.worker == worker_name() else f" on {outcome.worker}"  # a worker process or Ray node
        if outcome.ok:
            self.message(f"done {run.folder} ({duration(outcome.seconds)}{where}): "
                         f"ndcg@10 {outcome.test.get('ndcg@10', 0):.4f}")
        else:
            self.message(f"FAILED {run.folder}{where}: {mask_secrets(outcome.error)}")


def experiment_table(results: Results, table: ReportTable) -> Table:
    from llmhd_cli.evaluation import METRICS
    from llmhd_cli.experiments.report import BACKBONE_NAMES, cell_text

    out = Table(title=f"{results.plan.spec.name}: {table.dataset} (mean ± std over seeds)")
    out.add_column("method")
    for backbone in table.columns:
        for metric in METRICS:
            out.add_column(f"{BACKBONE_NAMES.get(backbone, backbone)}\n{SHORT[metric]}", justify="right")
    for row in table.rows:
        cells = [escape(row.label) + (" [red](leak)[/]" if row.leak else "")]
        for backbone in table.columns:
            for metric in METRICS:
                c = row.cells.get(backbone)
                if c is None:
                    cells.append("")
                    continue
                mean, std, mark = cell_text(c, metric, results.significance)
                style = {1: "bold", 2: "underline"}.get(c.rank.get(metric, 0))
                text = f"[{style}]{mean}[/]" if style else mean
                cells.append(text + mark + (f"\n± {std}" if std else ""))
        out.add_row(*cells)
    return out


def grid_cost_table(title: str, result: GridCost) -> Table:
    """`llmhd experiment cost`: one row per distinct LLM setting, times the runs it stands for."""
    table = Table(title=title)
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
    return table
