"""``llmhd experiment cost``: the LLM cost of a whole grid before it runs.

The per-run estimate is `llmhd cost`'s training dry run (the llmhd plugin's cost estimator: the real
training loop with a judge that sends nothing and records every prompt it would send). A dry
run trains for as long as the run, so it runs once per distinct *LLM-relevant setting*, not
once per run: the run's config without its seed and without the llmhd options a dry run
cannot see (the score thresholds and hard-sample rule, judge_accuracy: no score is known in a
dry run). That estimate is multiplied by the runs it stands for. Seeds change which samples
are candidates but hardly how many, so this is close; it shares every limit of the dry run
itself (see llmhd_plugins.llmhd.dry_run's docstring). LD alone (``variant = "ld"``) scores
nothing and costs nothing.

T_sum (user profiles) is added once for each dataset `runner.summarize_missing` would
summarize (no profiles yet), with that dataset's provider and model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhd_cli.experiments.grid import Plan, PlannedRun

if TYPE_CHECKING:
    from llmhd_cli.llm.estimate import EstimateRow

# llmhd options that reach the prompts of a dry run (the estimator's options) or choose its LLM.
_LLM_CHOICE = ("provider", "model", "base_url", "prompts", "structured")


@dataclass
class CostRow:
    """One distinct setting's estimate, per run, and how many runs it stands for."""

    label: str
    dataset: str
    provider: str
    model: str
    runs: int
    epochs: int
    prompts: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # per run, US dollars
    seconds: float = 0.0  # the dry run's time
    upper_bound: bool = False  # oracle: a diagnostic, nothing paid
    step: str = "train"  # "train" (per run) or "summarize" (once per dataset)

    @property
    def total_cost(self) -> float:
        return self.cost * self.runs

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens + self.output_tokens) * self.runs

    def add(self, row: EstimateRow) -> None:
        """Add one `EstimateRow` (per run) to this setting's estimate."""
        self.prompts += row.prompts
        self.cached += row.cached
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cost += row.cost


@dataclass
class GridCost:
    rows: list[CostRow] = field(default_factory=list)
    free_runs: int = 0  # runs that consult no LLM
    notes: list[str] = field(default_factory=list)

    @property
    def total_cost(self) -> float:
        return sum(r.total_cost for r in self.rows)

    @property
    def total_tokens(self) -> int:
        return sum(r.total_tokens for r in self.rows)


def llm_runs(plan: Plan) -> list[PlannedRun]:
    """The runs whose denoiser consults the LLM (llmhd with LLM scoring)."""
    from llmhd_cli.llm.estimate import training_estimator

    estimator = training_estimator()
    return [r for r in plan.runs if estimator is not None and r.config["denoiser"] == estimator.denoiser
            and (r.config.get("denoiser_params") or {}).get("variant") != "ld"]


def setting_key(run: PlannedRun) -> str:
    from llmhd_cli.llm.estimate import training_estimator

    estimator = training_estimator(run.config["denoiser"])
    options = estimator.options if estimator is not None else ()
    config = {k: v for k, v in run.config.items() if k not in ("seed", "device", "threads")}
    params = run.config.get("denoiser_params") or {}
    config["denoiser_params"] = {k: params.get(k) for k in (*options, *_LLM_CHOICE)}
    return json.dumps(config, sort_keys=True, default=str)


def grid_cost(workspace: Path, plan: Plan, epochs: int | None = None, threads: int | None = None,
              observer_for: Callable[[int, int, str], Any] | None = None) -> GridCost:
    """The grid's estimate; datasets (derived ones too) must be prepared (`runner.prepare_datasets`).

    ``epochs`` caps each dry run's epochs (default: the run's own); ``observer_for(i, n, label)``
    returns a TrainObserver for the i-th of n dry runs.
    """
    from llmhd_cli.config import TrainConfig
    from llmhd_cli.experiments.grid import point_label
    from llmhd_cli.experiments.runner import profile_needs
    from llmhd_cli.llm import estimate as est
    from llmhd_cli.llm.prompts import prompts_dir_setting
    from llmhd_cli.llm.settings import resolve_settings

    result = GridCost()
    chosen = llm_runs(plan)
    result.free_runs = len(plan.runs) - len(chosen)
    groups: dict[str, list[PlannedRun]] = {}
    for run in chosen:
        groups.setdefault(setting_key(run), []).append(run)
    labels: dict[str, str] = {}
    for cell in plan.cells:
        for folder in cell.folders:
            labels.setdefault(folder, f"{cell.method}" + (f" ({point_label(cell.axes)})" if cell.axes else ""))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for number, members in enumerate(groups.values(), 1):
        run = members[0]
        params = dict(run.config["denoiser_params"])
        settings = resolve_settings(provider=params.get("provider"), model=params.get("model"),
                                    base_url=params.get("base_url"), require_key=False)
        params.update(provider=settings.provider, model=settings.model)
        n_epochs = min(run.config["epochs"], epochs) if epochs else run.config["epochs"]
        config = TrainConfig.from_dict({**run.config, "denoiser_params": params, "epochs": n_epochs,
                                        "eval_every": n_epochs, "early_stop": 0, "threads": threads or cores})
        label = f"{run.dataset} · {run.config['backbone']} · {run.config['objective']} · {labels.get(run.folder, '')}"
        observer = observer_for(number, len(groups), label) if observer_for else None
        report = _dry_report()
        estimate = est.estimate(workspace, run.dataset, settings.provider, settings.model,
                                prompts_dir_setting(params.get("prompts")), settings.prices_file,
                                settings.resolved_cache_dir(workspace),
                                {"train": config, "train_observer": observer, "train_report": report},
                                settings.base_url)
        row = CostRow(label, run.dataset, estimate.provider, estimate.model, len(members), n_epochs,
                      upper_bound=estimate.upper_bound, seconds=report.seconds)
        for r in estimate.rows:
            if r.step.startswith("train"):
                row.add(r)
        result.rows.append(row)
        for note in estimate.notes:
            if note not in result.notes:
                result.notes.append(note)
    for dataset, params in profile_needs(workspace, plan):
        settings = resolve_settings(provider=params.get("provider"), model=params.get("model"),
                                    base_url=params.get("base_url"), require_key=False)
        estimate = est.estimate(workspace, dataset, settings.provider, settings.model,
                                prompts_dir_setting(params.get("prompts")), settings.prices_file,
                                settings.resolved_cache_dir(workspace), {}, settings.base_url)
        row = CostRow(f"{dataset} · user profiles (T_sum)", dataset, estimate.provider, estimate.model, 1, 0,
                      upper_bound=estimate.upper_bound, step="summarize")
        for r in estimate.rows:
            row.add(r)
        result.rows.append(row)
    if groups:
        result.notes.insert(0, f"{len(chosen)} LLM runs estimated by {len(groups)} dry runs, one per distinct setting "
                               "(seeds, score thresholds, hard-sample rule and judge_accuracy do not change a dry "
                               "run); each row's per-run numbers times its runs"
                               + (f"; dry runs capped at {epochs} epochs, so longer runs may send more"
                                  if epochs else ""))
    return result


def _dry_report() -> Any:
    """A holder the dry-run estimator fills with its report (``seconds`` is read here)."""
    from types import SimpleNamespace

    return SimpleNamespace(seconds=0.0)
