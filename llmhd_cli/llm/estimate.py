"""``llmhd cost``: what a run will cost before it runs, and what was spent after.

Estimate: every prompt a step would send is rendered exactly as the step renders it and its
tokens counted with the provider's counter (`Provider.token_counter`, see `llmhd_cli.llm.tokens`:
a real tokenizer where the provider has one, else ceil(chars / 4) + 4 per message); the
estimate's notes say which counter it used. Output tokens are the template's
expected answer length (see `expected_output_tokens`), capped by its ``max_tokens``. Money is
tokens x the price table. Prompts already in the cache are counted but cost nothing.

The table is built by *estimators*: functions from an `EstimateContext` to rows. The core's
covers summarize (T_sum, and item_profile with ``--items``); plugins add theirs through the
``register_cost_estimators`` hook as `CostEstimator`s, each saying whether it applies (the
llmhd plugin's dry run of training adds T_score, T_FP, T_FN when a training config is given).

Spent (``--spent``): the spending records, all in `llmhd_cli.llm.ledger`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.prompts import Template, TemplateSet

log = logging.getLogger(__name__)

TOKENS_PER_WORD = 4 / 3  # OpenAI's rule of thumb for English prose


@dataclass
class EstimateRow:
    """One template's share of a planned run."""

    template: str
    step: str  # the command/phase that sends these prompts, e.g. "summarize"
    prompts: int
    input_tokens: int
    output_tokens: int
    cost: float  # US dollars for the prompts not yet cached
    cached: int = 0  # prompts whose answer is already in the cache
    exact_tokens: bool = False  # True when a real tokenizer counted the input
    note: str = ""
    counter: str = ""  # the token counter used (`TokenCounter.name`)


@dataclass
class EstimateContext:
    """What an estimator may use."""

    workspace: Path
    dataset: PreparedDataset
    template_set: TemplateSet
    provider: Any  # the provider class
    model: str
    prices: Any  # llmhd_cli.llm.pricing.PriceTable
    cache_dir: Path | None
    options: dict[str, Any] = field(default_factory=dict)  # command options (max_items, items, eps_v, ...)
    details: list[str] = field(default_factory=list)  # estimators' lines on how their rows were made


@dataclass
class Estimate:
    dataset: str
    provider: str
    model: str
    upper_bound: bool
    generative: bool
    priced: bool  # False when the price table has no entry (costs shown as 0)
    rows: list[EstimateRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # from the estimators (a dry run's), shown before notes

    @property
    def total(self) -> EstimateRow:
        return EstimateRow(
            "total", "", sum(r.prompts for r in self.rows), sum(r.input_tokens for r in self.rows),
            sum(r.output_tokens for r in self.rows), sum(r.cost for r in self.rows), sum(r.cached for r in self.rows),
            all(r.exact_tokens for r in self.rows))


Estimator = Callable[[EstimateContext], list[EstimateRow]]


def _always(ctx: EstimateContext) -> bool:
    return True


@dataclass(frozen=True)
class CostEstimator:
    """Rows a plugin adds to ``llmhd cost`` (registered with the ``register_cost_estimators`` hook).

    ``rows(ctx)`` is called when ``applies(ctx)`` is true. A training dry run also sets
    ``denoiser`` (the denoiser it trains: ``ctx.options['train']`` is a `TrainConfig` with it),
    ``options`` (that denoiser's options that change its prompts; ``llmhd cost`` offers them as
    flags), ``default_epochs`` and ``train_config(dataset, provider, model, prompts, epochs,
    overrides, options, base_url) -> TrainConfig`` (checked; raises `LLMHDError`). It may append
    lines to ``ctx.details`` on how its rows were made; ``llmhd cost`` prints them as notes.
    """

    name: str
    description: str
    rows: Estimator
    applies: Callable[[EstimateContext], bool] = _always
    denoiser: str | None = None
    options: tuple[str, ...] = ()
    default_epochs: int = 0
    train_config: Callable[..., Any] | None = None


def cost_estimators() -> list[CostEstimator]:
    """The registered estimators, in the order their plugins were loaded."""
    from llmhd_cli import plugins

    return list(plugins.registry("cost estimator").items.values())


def training_estimator(denoiser: str | None = None) -> CostEstimator | None:
    """The registered estimator that dry-runs training (with ``denoiser``, when named), if any."""
    for estimator in cost_estimators():
        if estimator.train_config is not None and (denoiser is None or estimator.denoiser == denoiser):
            return estimator
    return None


def expected_output_tokens(template: Template, provider: Any = "", model: str = "") -> int:
    """Expected answer tokens: the tagged answer at its word limit (text) or ``<s>10</s>`` (scores)."""
    from llmhd_cli.llm.tokens import count_tokens

    tag = template.output.tag
    if template.output.type == "int":
        hi = template.output.range[1] if template.output.range else 10
        n, _ = count_tokens(f"<{tag}>{hi}</{tag}>", provider, model)
    else:
        # The prompts ask for at most 100 words; the parser's max_words is the slack allowed.
        words = min(template.output.max_words or 100, 100)
        n = math.ceil(words * TOKENS_PER_WORD) + count_tokens(f"<{tag}></{tag}>", provider, model)[0]
    cap = template.params.get("max_tokens")
    return min(n, int(cap)) if cap else n


def rows_for_requests(ctx: EstimateContext, requests: list[LLMRequest], template: Template, step: str,
                      note: str = "", batch: bool = False) -> EstimateRow:
    """Count the tokens (and the cached answers) of rendered requests, and price them (``batch``: at the
    price of the provider's batch API, `PriceTable.batch_factor`)."""
    from llmhd_cli.llm.cache import AnswerStore, cache_key
    from llmhd_cli.llm.tokens import counter_for

    name, model = ctx.provider.name, ctx.model
    counter = counter_for(ctx.provider, model)
    store = AnswerStore(ctx.cache_dir) if ctx.cache_dir and Path(ctx.cache_dir).exists() else None
    out_each = expected_output_tokens(template, ctx.provider, model)
    total_in = total_out = cached = 0
    cost = 0.0
    try:
        for request in requests:
            tokens = counter.count_messages(request.system, request.prompt)
            total_in += tokens
            total_out += out_each
            rule = getattr(ctx.provider, "rule_versions", {}).get(request.task, "")
            if store is not None and store.get(cache_key(name, model, request, not ctx.provider.generative, rule)):
                cached += 1
            else:
                cost += ctx.prices.cost(name, model, tokens, out_each, batch=batch) if ctx.provider.generative else 0.0
    finally:
        if store is not None:
            store.close()
    cut = sum(1 for r in requests if r.cut)
    if cut:
        note = "; ".join(filter(None, [note, f"{cut:,} prompts cut to fit the model's context window"]))
    return EstimateRow(template.name, step, len(requests), total_in, total_out, cost, cached,
                       counter.exact and bool(requests), note, counter.name)


def _summarize_rows(ctx: EstimateContext) -> list[EstimateRow]:
    """T_sum for every user (and item_profile for every item with ``items``), rendered as summarize does."""
    from llmhd_cli.llm.profiles import ProfileStore
    from llmhd_cli.llm.summary_requests import (
        DEFAULT_MAX_ITEMS,
        item_profile_requests,
        require_item_texts,
        summarize_requests,
    )

    require_item_texts(ctx.dataset)
    rows = []
    batch = bool(ctx.options.get("batch"))  # summarize --batch: the batch API's price
    factor = ctx.prices.batch_factor(ctx.provider.name)
    priced = f"batch price ({factor:.0%} of list)" if batch else ""
    if ctx.options.get("items"):
        requests = item_profile_requests(ctx.dataset, ctx.template_set)
        rows.append(rows_for_requests(ctx, requests, ctx.template_set.get("item_profile"), "summarize --items",
                                      priced, batch))
    texts, source = ProfileStore(ctx.dataset).item_texts(ctx.provider.name, ctx.model)
    requests, _ = summarize_requests(ctx.dataset, ctx.template_set, texts,
                                     int(ctx.options.get("max_items") or DEFAULT_MAX_ITEMS))
    note = "item profiles from " + Path(source).name
    if ctx.options.get("items"):
        note = "item profiles: raw texts counted (generated ones are not known before the run)"
    note = "; ".join(filter(None, [note, priced]))
    rows.append(rows_for_requests(ctx, requests, ctx.template_set.get("summarize"), "summarize", note, batch))
    return rows


def estimate(workspace: Path, dataset_name: str, provider: str, model: str | None = None,
             prompts: str | None = None, prices_file: Path | str | None = None, cache_dir: Path | None = None,
             options: dict[str, Any] | None = None, base_url: str | None = None) -> Estimate:
    """The estimate table for ``provider``/``model`` on a prepared dataset (no call is sent).

    ``base_url`` is the server the run would use: with one, a provider may serve models it
    does not list (an OpenAI-compatible server), exactly as `resolve_settings` accepts them.
    """
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.llm.pricing import load_prices
    from llmhd_cli.llm.prompts import template_set_for
    from llmhd_cli.llm.settings import context_window_setting

    cls = plugins.registry("provider").get(provider, "--provider")
    model = model or (cls.models[0] if cls.models else "")
    cls.check_model(model, base_url)
    dataset = open_dataset(workspace, dataset_name)
    prices = load_prices(prices_file)
    # Rendered to the model's prompt budget, as the run renders them (long texts cut alike).
    tset = template_set_for(dataset.info.domain, prompts).for_model(cls, model, context_window_setting(cls.name))
    ctx = EstimateContext(workspace, dataset, tset, cls, model, prices, cache_dir, dict(options or {}))
    result = Estimate(dataset.name, cls.name, model, bool(cls.upper_bound), bool(cls.generative),
                      prices.get(cls.name, model) is not None)
    result.rows.extend(_summarize_rows(ctx))
    for estimator in cost_estimators():
        if estimator.applies(ctx):
            result.rows.extend(estimator.rows(ctx))
    result.details.extend(ctx.details)
    if not cls.generative:
        result.notes.append(f"'{cls.name}' runs locally: tokens are counted for comparison, nothing is paid")
    elif not result.priced:
        result.notes.append(f"no price for {cls.name}/{model} in the price table: money shown as 0")
    if any(r.prompts for r in result.rows):
        result.notes.append(token_counter_note(result.rows))
    result.notes.append("output tokens assume answers at the templates' word limits (~4/3 token per word)")
    return result


def token_counter_note(rows: list[EstimateRow]) -> str:
    """Which counter the input tokens of ``rows`` come from: an exact tokenizer, or the estimate."""
    from llmhd_cli.llm.tokens import APPROXIMATE

    counted = [r for r in rows if r.prompts]
    exact = ", ".join(sorted({r.counter or "a tokenizer" for r in counted if r.exact_tokens}))
    if counted and all(r.exact_tokens for r in counted):
        return f"input tokens counted exactly by the model's tokenizer ({exact})"
    if exact:
        return (f"input tokens counted exactly ({exact}) for some rows, estimated as "
                f"{APPROXIMATE.name} for the others")
    return f"input tokens estimated as {APPROXIMATE.name} (no tokenizer for this model)"
