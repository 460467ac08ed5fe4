"""The training rows of ``llmhd cost``: a dry run of training with the llmhd denoiser.

Registered as the cost estimator ``llmhd-dry-run`` (`register_cost_estimators`): it applies
when the estimate is given a training config with the llmhd denoiser (``options['train']``).

The real training loop (`llmhd_cli.training.train`) runs for a few epochs (10 by default)
with the llmhd denoiser built as ``llmhd train --denoiser llmhd`` builds it: LD, the score
history, VS and PU all active. Only its judge is dry (`LLMJudge(dry=True)`): nothing is
sent, every score comes back unknown, so the hard candidates B_HC are dropped as LD drops
them, and profiles never change. The judge records every unique request the run would send:
T_score for B_HC's pairs, T_fp / T_fn for the profile rewrites PU asks for. Those are counted
and priced exactly like the T_sum rows (`llmhd_cli.llm.estimate.rows_for_requests`).

With ``--scoring listwise`` (the default) T_score's prompts are ``score_list`` lists, grouped
exactly as training groups them; a list's answer is counted as one ``<n>: <s>10</s>`` line per
item. A rewrite PU asks for starts a new profile version in the dry run too (its text a
stand-in: the old one), so the T_score prompts a rewritten profile causes are counted.

It is an estimate. A real run's candidates depend on its own losses (the LLM keeps some
hard samples the dry run drops), rewritten profiles differ in length from their stand-ins,
and the real run may stop early or run longer than the dry run's epochs.

When the dataset has no user profiles yet (``llmhd summarize`` not run), the prompts are
rendered with stand-ins: each user's training item texts, cut to T_sum's word limit.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.estimate import CostEstimator, EstimateContext, EstimateRow, rows_for_requests

log = logging.getLogger(__name__)

DEFAULT_EPOCHS = 10
DENOISER = "llmhd"
TASKS = ("score", "update_fp", "update_fn")  # the training-side templates, Table 4's T_score, T_FP, T_FN
LIST_TASK = "score_list"  # T_score listwise: its prompts join the T_score row
# The llmhd options that change which prompts a dry run sees (the score thresholds do not:
# in a dry run no score is known). The cost command offers these as flags.
DRY_RUN_OPTIONS = ("variant", "alpha", "eps_l_max", "ld_schedule", "ld_candidates", "eps_v", "pruning", "history", "eps_gamma",
                   "scoring", "list_size", "negatives", "neg_pool", "score_from", "pu_min_items")


@dataclass
class DryRunReport:
    """What the dry run saw, for the notes under the table (filled in by the estimator)."""

    epochs: int = 0
    seconds: float = 0.0
    stand_in_profiles: bool = False
    profiles_from: str = ""
    device: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # summed per-epoch counters of the denoiser
    score_prompts: int = 0  # T_score prompts the judge made (pairwise or lists), duplicates included
    requests: dict[str, list[LLMRequest]] = field(default_factory=dict)  # by task


def dry_run_config(dataset: str, provider: str, model: str, prompts: str | None = None, epochs: int | None = None,
                   overrides: dict[str, Any] | None = None, llmhd: dict[str, Any] | None = None,
                   base_url: str | None = None) -> Any:
    """The `TrainConfig` of a dry run, checked: the user's ``[train]`` defaults, then ``overrides``
    (backbone, objective, batch_size, seed, device), the denoiser llmhd with ``llmhd`` options
    and the resolved ``provider``, ``model`` and ``base_url`` (the judge resolves them again).

    Raises `LLMHDError` for a bad value (one line for the CLI) before anything runs.
    """
    from llmhd_cli import plugins
    from llmhd_cli.config import command_defaults
    from llmhd_cli.recbole_data import resolve_device
    from llmhd_cli.training import TrainConfig, denoiser_options
    from llmhd_plugins.llmhd.denoiser import check_options

    base = dict(command_defaults("train"))
    params = dict(base.pop("denoiser_params", {}) or {}) if base.get("denoiser") == DENOISER else {}
    base.pop("denoiser_params", None)
    base.update({k: v for k, v in (overrides or {}).items() if v is not None})
    params.update({k: v for k, v in (llmhd or {}).items() if v is not None})
    params.update(provider=provider, model=model)
    if base_url:  # a model only a custom server knows is accepted with its URL
        params["base_url"] = base_url
    if prompts:
        params["prompts"] = prompts
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    base.update(dataset=dataset, denoiser=DENOISER, epochs=epochs, denoiser_params=params,
                # Only the prompts matter: validate once at the end, never stop early.
                eval_every=max(epochs, 1), early_stop=0)
    config = TrainConfig.from_dict(base, where="train config")
    config.validate()
    plugins.registry("backbone").get(config.backbone, "--backbone").require_embeddings(DENOISER)
    resolve_device(config.device)
    check_options(denoiser_options(plugins.registry("denoiser").get(DENOISER, "--denoiser"), params))
    return config


def stand_in_profiles(dataset: PreparedDataset, item_texts: dict[str, str], words: int) -> dict[str, str]:
    """Per user: the texts of their training items, cut to ``words`` words (T_sum's answer limit)."""
    from llmhd_cli.summarize import user_histories

    out = {}
    for user, items in user_histories(dataset).items():
        text = " ".join(item_texts[i] for i in dict.fromkeys(items) if item_texts.get(i))
        if text:
            out[user] = " ".join(text.split()[:words])
    return out


def dry_run(workspace: Path, dataset: PreparedDataset, config: Any, run_dir: Path | None = None,
            observer: Any = None) -> DryRunReport:
    """Train ``config`` (denoiser llmhd) with a dry judge; the unique requests it would send, by task.

    The run directory goes to a temporary folder unless ``run_dir`` is given (new or empty).
    """
    from llmhd_cli.llm.profiles import ProfileStore
    from llmhd_cli.llm.prompts import template_set_for
    from llmhd_cli.training import train
    from llmhd_plugins.llmhd.denoiser import build_dry_run

    params = config.denoiser_params
    report = DryRunReport(epochs=config.epochs)
    store = ProfileStore(dataset)
    profiles, origin = store.user_profiles(params["provider"], params["model"])
    if not profiles:
        profiles, origin = store.user_profiles()
    stand_ins = None
    if not profiles:
        texts, _ = store.item_texts(params["provider"], params["model"])
        limit = template_set_for(dataset.info.domain, params.get("prompts")).get("summarize").output.max_words or 100
        stand_ins = stand_in_profiles(dataset, texts, min(limit, 100))
        report.stand_in_profiles, origin = True, f"stand-ins: training item texts cut to {min(limit, 100)} words"
    report.profiles_from = origin

    built: list[Any] = []

    def factory(options: dict[str, Any], context: Any) -> Any:
        built.append(build_dry_run(options, context, stand_ins))
        report.device = str(context.device)
        return built[-1]

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmhd-cost-") as tmp:
        target = Path(run_dir) if run_dir is not None else Path(tmp) / "run"
        result = train(config, dataset, workspace / "runs", observer=observer, run_dir=target, denoiser_factory=factory)
        for line in (target / "log.jsonl").read_text(encoding="utf-8").splitlines():
            _add_counts(report.counts, line)
    report.seconds = time.perf_counter() - start
    report.epochs = result.epochs_run
    judge = built[0].judge if built else None
    for request in (judge.dry_requests.values() if judge is not None else ()):
        report.requests.setdefault(request.task, []).append(request)
    if judge is not None:
        report.score_prompts = judge.stats.score_prompts
    log.info("cost dry run: %d epochs in %.1fs, %s", report.epochs, report.seconds,
             {t: len(r) for t, r in report.requests.items()})
    return report


def _add_counts(counts: dict[str, int], line: str) -> None:
    extra = json.loads(line).get("denoiser") or {}
    for key in ("candidates", "hard_candidates", "scored_pairs", "fp_confident", "fn_confident"):
        counts[key] = counts.get(key, 0) + int(extra.get(key, 0) or 0)


def applies(ctx: EstimateContext) -> bool:
    """A dry run is part of the estimate when the command gave a training config with llmhd."""
    config = ctx.options.get("train")
    return config is not None and config.denoiser == DENOISER


def training_rows(ctx: EstimateContext) -> list[EstimateRow]:
    """T_score, T_fp, T_fn of a dry run of ``options['train']``; its notes go to ``ctx.details``."""
    config = ctx.options["train"]
    if config.dataset != ctx.dataset.name:
        raise LLMHDError(f"cost: the dry run's dataset '{config.dataset}' is not the estimate's '{ctx.dataset.name}'")
    report = dry_run(ctx.workspace, ctx.dataset, config, ctx.options.get("train_run_dir"),
                     ctx.options.get("train_observer"))
    holder = ctx.options.get("train_report")
    if holder is not None:  # the caller's object (a DryRunReport or a namespace): the run's numbers
        holder.__dict__.update(report.__dict__)
    ctx.details.extend(report_notes(config, report))
    step = f"train (dry run, {report.epochs} epochs)"
    o = config.denoiser_params
    notes = {
        "score": f"unique B_HC pairs (eps_v {o.get('eps_v', 0.5)}, eps_l_max {o.get('eps_l_max', 0.05)})",
        "update_fp": f"PU rewrites (eps_gamma {o.get('eps_gamma', 5)})",
        "update_fn": f"PU rewrites (eps_gamma {o.get('eps_gamma', 5)})",
    }
    rows = [rows_for_requests(ctx, report.requests.get(task, []), ctx.template_set.get(task), step, notes[task])
            for task in TASKS]
    if report.requests.get(LIST_TASK):
        note = f"{notes['score']}, listwise (at most {o.get('list_size', 8)} a prompt)"
        rows[0] = combined_score_row(ctx, rows[0], report.requests[LIST_TASK], step, note)
    return rows


def list_output_tokens(template: Any, n_items: int, provider: str = "", model: str = "") -> int:
    """Expected answer tokens of a ``score_list`` prompt of ``n_items``: a ``<n>: <s>10</s>`` line each."""
    from llmhd_cli.llm.tokens import count_tokens

    tag, hi = template.output.tag, (template.output.range or (1, 10))[1]
    n, _ = count_tokens("\n".join(f"{k}: <{tag}>{hi}</{tag}>" for k in range(1, n_items + 1)), provider, model)
    cap = template.params.get("max_tokens")
    return min(n, int(cap)) if cap else n


def combined_score_row(ctx: EstimateContext, pairwise: EstimateRow, lists: list[LLMRequest], step: str,
                       note: str) -> EstimateRow:
    """The T_score row: the per-pair prompts (if any) plus the lists, each list's answer counted
    at its own length (`list_output_tokens`)."""
    from dataclasses import replace

    template = ctx.template_set.get(LIST_TASK)
    by_size: dict[int, list[LLMRequest]] = {}
    for request in lists:
        by_size.setdefault(len(request.variables.get("item_ids") or ()) or 1, []).append(request)
    parts = [pairwise] if pairwise.prompts else []
    for size, requests in sorted(by_size.items()):
        out = list_output_tokens(template, size, ctx.provider.name, ctx.model)
        # rows_for_requests counts each answer at the template's expected length, capped by max_tokens.
        sized = replace(template, params={**template.params, "max_tokens": out})
        parts.append(rows_for_requests(ctx, requests, sized, step))
    return EstimateRow(template.name, step, sum(r.prompts for r in parts), sum(r.input_tokens for r in parts),
                       sum(r.output_tokens for r in parts), sum(r.cost for r in parts), sum(r.cached for r in parts),
                       all(r.exact_tokens for r in parts), note)


def report_notes(config: Any, report: DryRunReport) -> list[str]:
    """The lines under ``llmhd cost``'s table: how the dry run ran and what it could not see."""
    counts = report.counts
    return [
        f"the training rows are an ESTIMATE from a dry run: {report.epochs} epochs of {config.backbone} "
        f"({config.objective}) with the llmhd denoiser, variant {config.denoiser_params.get('variant') or 'full'}, "
        f"on {report.device} in {report.seconds:.0f}s. The LLM was never called, so every hard candidate was dropped "
        f"as in LD ({counts.get('hard_candidates', 0):,} hard of {counts.get('candidates', 0):,} noise candidates) "
        "and a profile rewrite kept the old text as a new version (its pairs counted again); a real run's "
        "candidates depend on its own losses and the LLM's answers, and its epochs may differ (--epochs).",
        f"training prompts use user profiles from {report.profiles_from}",
    ]


ESTIMATOR = CostEstimator(
    name="llmhd-dry-run",
    description="T_score, T_fp, T_fn of a short training dry run with the llmhd denoiser (nothing sent)",
    rows=training_rows,
    applies=applies,
    denoiser=DENOISER,
    options=DRY_RUN_OPTIONS,
    default_epochs=DEFAULT_EPOCHS,
    train_config=dry_run_config,
)


@hookimpl
def register_cost_estimators(register: Callable[[CostEstimator], None]) -> None:
    register(ESTIMATOR)
