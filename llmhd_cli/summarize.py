"""``llmhd summarize``: every user's preference P_u from the profiles of their training items (T_sum).

Optionally item profiles first (``--items``: the ``item_profile`` template turns each item's raw
attributes into a profile). All calls go through the LLM client (cache, ledger, budget). The
profiles are stored with the dataset (`llmhd_cli.llm.profiles`), versioned by provider, model
and template hash; the spending of the run is recorded with the dataset too
(`llmhd_cli.llm.ledger.record_spending`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmhd_cli.datasets import open_dataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.batch import BatchRunStats
from llmhd_cli.llm.profiles import ProfileStore, ProfileVersion
from llmhd_cli.llm.prompts import template_set_for

# The prompts summarize sends are built in the LLM layer, where `llmhd cost` counts them too.
from llmhd_cli.llm.summary_requests import (  # noqa: F401  (user_histories, hash_id: imported from here before)
    DEFAULT_MAX_ITEMS,
    hash_id,
    item_profile_requests,
    require_item_texts,
    summarize_requests,
    user_histories,
)
from llmhd_cli.llm.usage import Usage

log = logging.getLogger(__name__)


@dataclass
class SummarizeOptions:
    dataset: str
    prompts: str | None = None  # folder overriding the shipped templates
    items: bool = False  # generate item profiles first
    max_items: int = DEFAULT_MAX_ITEMS
    batch: bool = False  # uncached prompts through the provider's batch API (`llmhd_cli.llm.batch`)
    batch_fallback: bool = False  # batch requests that come back unanswered: normal calls, not failures


@dataclass(kw_only=True)
class TemplateStats(Usage):
    """One row of the run table (the paper's Table 4 columns): one template's `Usage` in this run."""

    template: str
    provider: str
    model: str
    requests: int = 0
    budget_skipped: int = 0


@dataclass
class SummarizeResult:
    dataset: str
    provider: str
    model: str
    template_set: str
    upper_bound: bool
    generative: bool
    users: int  # users with training items that have texts
    profiles: int  # users whose profile was written
    path: Path | None  # the stored user profile version
    item_source: str  # where the item profiles fed to T_sum came from
    rows: list[TemplateStats] = field(default_factory=list)
    budget_exhausted: bool = False
    skipped_users: int = 0  # users none of whose training items has a text
    batch: BatchRunStats | None = None  # with --batch: batches submitted, picked up, answered


class Progress(Protocol):
    """What the CLI shows while a phase runs."""

    def start(self, label: str, total: int) -> None: ...

    def update(self, result: Any) -> None: ...



def _run_phase(client: Any, requests: list[LLMRequest], label: str, progress: Progress | None,
               batch: BatchRunStats | None = None, fallback: bool = False) -> tuple[list, TemplateStats]:
    """Run one template's requests; the row is that template's usage in this call (`LLMClient.usage`).

    With ``batch`` the uncached ones go through the provider's batch API (`run_batched`), whose
    counts are added to ``batch``; a ``progress`` with ``batch_start``/``batch_poll`` shows the polls.
    """
    template = requests[0].template if requests else label
    if batch is None:  # prompts of a batch still open are collected with --batch, not paid for again
        from llmhd_cli.llm.batch import refuse_open_batches

        refuse_open_batches(client, requests)
    before, skipped = client.usage.snapshot(), client.stats.budget_skipped
    if progress is not None:
        progress.start(label, len(requests))
    on_result = progress.update if progress is not None else None
    if batch is not None:
        from llmhd_cli.llm.batch import run_batched

        observer = progress if hasattr(progress, "batch_poll") else None
        results = run_batched(client, requests, label=f"{label}: batch", observer=observer,  # type: ignore[arg-type]
                              on_result=on_result, fallback=fallback, stats=batch)
    else:
        results = client.run(requests, on_result=on_result)
    row = TemplateStats(template=template, provider=client.provider.name, model=client.provider.model,
                        requests=len(requests), budget_skipped=client.stats.budget_skipped - skipped)
    row.add(client.usage.since(before).get(template, Usage()))
    return results, row


def _report_failures(phase: str, results: list[Any], consequence: str, all_is_error: bool = False) -> list[str]:
    """The errors of the failed requests (budget stops aside), and one warning line saying how many.

    With ``all_is_error`` a phase where every call failed is left to the caller (an error).
    """
    from llmhd_cli.llm.client import ABORTED, BUDGET

    failed = [str(r.error) for r in results if not r.ok and r.error not in (BUDGET, ABORTED)]
    if failed and not (all_is_error and len(failed) == len(results)):
        log.warning("summarize: %d of %d calls (%s) failed (first error: %s); %s", len(failed), len(results), phase,
                    failed[0], consequence)
    return failed


def summarize(workspace: Path, settings: Any, options: SummarizeOptions,
              progress: Progress | None = None) -> SummarizeResult:
    """Summarize every user of ``options.dataset``; see the module docstring."""
    from llmhd_cli.llm.client import make_client
    from llmhd_cli.llm.ledger import record_spending

    dataset = open_dataset(workspace, options.dataset)
    require_item_texts(dataset)  # a dataset without item texts fails here, before any call
    if options.max_items < 1:
        raise LLMHDError(f"--max-items: must be at least 1, got {options.max_items}")
    tset = template_set_for(dataset.info.domain, options.prompts)
    store = ProfileStore(dataset)
    batch = BatchRunStats() if options.batch else None
    if batch is not None:  # a provider without a batch API is one line, before anything is sent
        from llmhd_cli import plugins
        from llmhd_cli.llm.batch import require_batch

        require_batch(plugins.registry("provider").get(settings.provider, "--provider"))
    client = make_client(settings, workspace)
    provider = client.provider
    # Prompts cut to the model's context window at render time, exactly as `llmhd cost` renders them.
    tset = tset.for_model(provider, provider.model, getattr(settings, "context_window", None))
    rows: list[TemplateStats] = []
    try:
        if options.items:
            requests = item_profile_requests(dataset, tset)
            results, row = _run_phase(client, requests, "item profiles", progress, batch, options.batch_fallback)
            rows.append(row)
            _report_failures("item profiles", results, "those items keep their raw text")
            generated = {r.request.variables["item_id"]: str(r.value) for r in results if r.ok and r.value}
            template = tset.get("item_profile")
            if generated:  # a version with no profile would only hide the raw texts' place
                store.save(ProfileVersion("item", provider.name, provider.model, template.name, template.hash),
                           generated, {"failures": row.failures, "requests": len(requests)})
        texts, item_source = store.item_texts(provider.name, provider.model)
        requests, skipped = summarize_requests(dataset, tset, texts, options.max_items)
        if not requests:
            raise LLMHDError(f"dataset '{dataset.name}': no user has a training item with a text; nothing to summarize")
        results, row = _run_phase(client, requests, "user summaries", progress, batch, options.batch_fallback)
        rows.append(row)
        failed = _report_failures("user summaries", results, "those users have no profile; rerun to retry them",
                                  all_is_error=True)
        profiles = {r.request.variables["user_id"]: str(r.value) for r in results if r.ok and r.value}
        template = tset.get("summarize")
        version = ProfileVersion("user", provider.name, provider.model, template.name, template.hash)
        path = None
        if profiles:
            path = store.save(version, profiles, {
                "item_source": item_source, "max_items": options.max_items, "failures": row.failures,
                "requests": len(requests), "upper_bound": bool(provider.upper_bound),
            })
        budget = bool(client.stats.budget_exhausted)
    finally:
        client.close()
    record_spending(dataset, rows)
    if failed and len(failed) == len(results):
        raise LLMHDError(f"summarize: all {len(failed):,} calls failed (first error: {failed[0]}); nothing was written")
    return SummarizeResult(
        dataset=dataset.name, provider=provider.name, model=provider.model, template_set=tset.name,
        upper_bound=bool(provider.upper_bound), generative=bool(provider.generative), users=len(requests),
        profiles=len(profiles), path=path, item_source=item_source, rows=rows, budget_exhausted=budget,
        skipped_users=skipped, batch=batch,
    )
