"""What the commands' options mean, decided without Click: defaults, flags that only make sense
together, which denoiser owns an option, whether ``llmhd cost`` runs a training dry run, and
what ``cost --spent`` shows. `llmhd_cli.commands` parses flags and calls these; tests call
them directly (tests/test_cli_library.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhd_cli.errors import LLMHDError


def dataset_or_default(name: str | None) -> str:
    """The dataset a command works on: the one named, else config 'default_dataset', else ml-100k."""
    from llmhd_cli.config import default_dataset

    return name if name is not None else default_dataset()


# --------------------------------------------------------------------------- train


def train_config_from_flags(config_file: Path | None, flags: dict[str, Any], backbone_settings: dict[str, Any]) -> Any:
    """The run's `TrainConfig` from ``--config FILE``, the flags given on the command line and
    ``--set`` values. Flags that are no `TrainConfig` field are options of denoisers: each must
    belong to the run's denoiser (``--drop-rate`` with ``--denoiser none`` is an error naming
    the denoisers it belongs to); they override the file's ``denoiser_params``. The backbone's
    settings are checked too, so nothing is written for a run that cannot start."""
    from llmhd_cli import plugins
    from llmhd_cli.config import TrainConfig, train_config

    core = set(TrainConfig.__dataclass_fields__)
    config = train_config(config_file, {k: v for k, v in flags.items() if k in core}, backbone_settings)
    denoiser_flags = {k: v for k, v in flags.items() if k not in core}
    if denoiser_flags:
        registry = plugins.registry("denoiser")
        spec = registry.get(config.denoiser, "--denoiser")
        own = {o.name for o in spec.options}
        for name in denoiser_flags:
            if name not in own:
                owners = [s.name for s in registry.items.values() if name in {o.name for o in s.options}]
                raise LLMHDError(f"--{name.replace('_', '-')}: an option of denoiser {', '.join(owners)}, not of '{config.denoiser}'")
        config.denoiser_params = {**config.denoiser_params, **denoiser_flags}
    from llmhd_cli.recbole_data import check_backbone_params

    check_backbone_params(plugins.registry("backbone").get(config.backbone, "--backbone"), config.backbone_params)
    return config


# --------------------------------------------------------------------------- evaluate


def check_evaluate_flags(group: bool, baseline: str | None, paired_test: str) -> None:
    """``--baseline`` needs ``--group``; a paired test other than t needs ``--baseline``."""
    if baseline and not group:
        raise LLMHDError("--baseline: only meaningful with --group")
    if paired_test != "t" and not baseline:
        raise LLMHDError("--paired-test: only meaningful with --group --baseline")


# --------------------------------------------------------------------------- summarize


def summarize_options(dataset: str | None, prompts_dir: str | None, items: bool, max_items: int | None,
                      batch: bool = False, batch_fallback: bool = False) -> Any:
    """`SummarizeOptions` with the defaults filled in (the default dataset, config 'prompts',
    `DEFAULT_MAX_ITEMS` training items per prompt); ``batch_fallback`` needs ``batch``."""
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.summarize import DEFAULT_MAX_ITEMS, SummarizeOptions

    if batch_fallback and not batch:
        raise LLMHDError("--batch-fallback: only with --batch")
    return SummarizeOptions(dataset_or_default(dataset), prompts_dir_setting(prompts_dir), items,
                            max_items if max_items is not None else DEFAULT_MAX_ITEMS, batch=batch,
                            batch_fallback=batch_fallback)


# --------------------------------------------------------------------------- cost


@dataclass
class CostRequest:
    """What ``llmhd cost`` was asked: an estimate (optionally with a training dry run) or, with
    ``spent``, what was spent. ``overrides`` are the dry run's train settings (backbone,
    objective, batch_size, seed, device); ``denoiser_options`` its denoiser's flags."""

    spent: bool = False
    with_training: bool = False
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    denoiser_options: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    structured: bool = False
    batch: bool = False  # summarize's prompts priced as its batch API sends them

    @property
    def dry_run(self) -> bool:
        """Whether the estimate includes a training dry run: ``--train``, or any of its flags."""
        return (self.with_training or self.structured or self.run_dir is not None or self.epochs is not None
                or any(v is not None for v in (*self.overrides.values(), *self.denoiser_options.values())))

    def check_spent(self) -> None:
        """``--spent`` shows records: the dry run's flags and ``--batch`` belong to an estimate."""
        if self.spent and self.dry_run:
            raise LLMHDError("cost --spent: the training flags (--train, --epochs, --eps-v, ...) are for an estimate")
        if self.spent and self.batch:
            raise LLMHDError("cost --spent: --batch is for an estimate (the ledger already holds what batches cost)")

    def dry_run_config(self, estimator: Any, dataset: str, provider: str, model: str, prompts: str | None,
                       base_url: str | None) -> Any:
        """The dry run's `TrainConfig`, from the registered training estimator (None: no plugin
        dry-runs training); its ``run_dir`` must be new or empty."""
        if estimator is None:
            raise LLMHDError("cost: the training flags need a plugin that dry-runs training (none is loaded)")
        config = estimator.train_config(dataset, provider, model, prompts, self.epochs, self.overrides,
                                        {**self.denoiser_options, "structured": self.structured or None}, base_url)
        check_new_dir(self.run_dir, "--run-dir")
        return config


def check_new_dir(path: Path | None, what: str) -> None:
    """A folder llmhd will fill must be new or empty: it never mixes its files with others'."""
    if path is not None and path.exists() and any(path.iterdir()):
        raise LLMHDError(f"{what} {path}: folder is not empty; name a new one or remove it first")


@dataclass
class Spending:
    """``llmhd cost --spent``: rows (the total last, none when nothing was spent), a title, where it was read."""

    title: str
    where: str
    rows: list[Any]
    per_run: bool  # rows come from runs (a dataset's), so the table has a "runs" column


def spending(workspace: Path, cache_dir: Path, dataset: str | None = None, provider: str | None = None) -> Spending:
    """What was spent: a dataset's recorded runs (summarize runs with the dataset, training runs
    in the workspace's runs and experiments), else the ledger of ``cache_dir``; only
    ``provider``'s when named."""
    from llmhd_cli.llm.ledger import dataset_spending, ledger_spending, spent_total

    if dataset is not None:
        from llmhd_cli.datasets import open_dataset
        from llmhd_cli.workspace import experiments_dir, runs_dir

        rows = dataset_spending(open_dataset(workspace, dataset))
        title = (f"spent on {dataset} (summarize runs recorded with the dataset, training runs in "
                 f"{runs_dir(workspace)} and {experiments_dir(workspace)}/*/runs)")
        where = dataset
    else:
        rows = ledger_spending(cache_dir)
        title, where = f"spent (ledger of {cache_dir})", str(cache_dir)
    if provider:
        rows = [r for r in rows if r.provider == provider]
    if rows:
        rows = [*rows, spent_total(rows)]
    return Spending(title, where, rows, per_run=dataset is not None)


# --------------------------------------------------------------------------- experiment


def check_epochs_cap(epochs: int | None) -> None:
    """``experiment cost --epochs``: a cap on every dry run's epochs, at least 1."""
    if epochs is not None and epochs < 1:
        raise LLMHDError(f"--epochs: must be at least 1, got {epochs}")
