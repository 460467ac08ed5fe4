"""The provider contract shared by every part of the LLM layer.

A provider turns one `LLMRequest` into one `LLMResponse`. Generative providers (openai,
anthropic) send ``system`` + ``prompt`` and return text that the template's parser reads.
Non-generative providers (embed, oracle) use ``variables`` (the structured inputs the prompt
was rendered from) and may return ``value`` directly; the parser is then skipped.

Everything above the provider (caching, retries, budget, ledger, concurrency) lives in the
client, so a provider implements only the call itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmhd_cli.errors import LLMHDError
from llmhd_cli.redact import mask_secrets

if TYPE_CHECKING:
    from llmhd_cli.llm.batch import BatchOutcome, BatchStatus
    from llmhd_cli.llm.tokens import TokenCounter

# Task kinds a template can have; providers that do not generate text dispatch on these.
TASKS = ("summarize", "score", "update_fp", "update_fn", "item_profile")


@dataclass
class LLMRequest:
    """One call: a rendered template plus what it was rendered from."""

    task: str  # one of TASKS
    template: str  # template name, e.g. "books/score"
    template_hash: str  # hash of the template text (part of the cache key)
    system: str
    prompt: str
    variables: dict[str, Any] = field(default_factory=dict)  # user_id, item_id, profiles, ...
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    response_schema: dict[str, Any] | None = None  # JSON schema for structured output, if any
    want_logprobs: bool = False
    # The template's parser: text -> value, raising ValueError on a malformed answer. Not part of
    # equality or the cache key (the template hash already pins the template and its parser).
    parse: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)
    # Appended to the prompt when the first answer does not parse (one re-ask); None: a generic one.
    reask_hint: str | None = field(default=None, compare=False, repr=False)
    # Texts the template cut or left out to fit the model's context window (the prompt shows
    # the cut, so the key needs nothing more); the client counts and reports cut prompts.
    cut: int = field(default=0, compare=False, repr=False)


@dataclass
class LLMResponse:
    """What a provider returns for one request."""

    text: str
    input_tokens: int
    output_tokens: int
    usage_reported: bool  # False when tokens were estimated rather than reported by the API
    model: str
    value: Any = None  # set by non-generative providers; skips parsing
    logprobs: list[dict[str, float]] | None = None  # per output token: {token: logprob} top alternatives
    tokens: list[str] | None = None  # the chosen output tokens, aligned with ``logprobs``
    # Of ``input_tokens``: those the provider served from its prompt cache, and those it wrote to
    # it (priced by the price table's ``cached_input`` / ``cache_write``).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


class ProviderError(Exception):
    """A call failed. ``retryable`` marks rate limits, timeouts and 5xx; ``retry_after`` (s) honours the server.

    ``unreachable`` marks connection errors and timeouts: when they outlast the retries the
    client stops the whole run with a one-line `LLMHDError`. ``fatal`` marks errors that every
    later call would hit too (bad key, unknown model): the run stops at once. Anything else
    fails only its own request.
    """

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None,
                 *, unreachable: bool = False, fatal: bool = False) -> None:
        super().__init__(mask_secrets(message))  # SDK messages may quote a URL with credentials
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.fatal = fatal


class Provider:
    """Base class for providers registered through ``register_providers``.

    Subclasses set ``name``, ``description``, ``models`` (known model names, first is the
    default), ``key_env`` (environment variable holding the API key, or None), and implement
    `complete`. ``generative`` is False for providers that are not language models.

    Everything the core needs to know about a provider is asked of its class, so that no core
    module names one (docs/plugins.md, "Writing a provider"): how its models count tokens
    (`token_counter`), their context windows (``context_windows``), whether any model is
    accepted with a base URL (``any_model_with_base_url``, `check_model`), whether a key is
    needed (`key_required`), and whether it is the default (``is_default``). HTTP helpers that
    several providers share are in `llmhd_cli.llm.http`; a provider never imports another's module.

    Optional bulk capability, for local providers that compute answers for free (embed,
    oracle): list the tasks in ``bulk_tasks`` and implement `bulk`. A caller that asks many
    requests of such a task (the llmhd judge's scores) then passes their ``variables`` in one
    call, through `LLMClient.run_bulk`: no prompt is rendered, nothing is read from or written
    to the disk cache, no claim is taken, and each value counts as one local call (no tokens,
    no cost). Generative providers never declare it, so their prompts, cache and cost dry run
    are unchanged.
    """

    name: str = ""
    description: str = ""
    models: tuple[str, ...] = ()
    key_env: str | None = None
    generative: bool = True
    upper_bound: bool = False  # True for diagnostics that see ground truth (oracle)
    leaky_models: tuple[str, ...] = ()  # models that read held-out labels: their runs are marked as leaks
    cacheable: bool = True  # False: answers are not stored (still counted in the ledger)
    # task -> version of the rule a non-generative provider computes that task's answers by; it
    # enters those requests' cache key, so a changed rule never reuses the old rule's answers.
    rule_versions: dict[str, str] = {}
    base_url_env: str | None = None  # environment variable with the default base URL, if any
    needs_key: bool = True  # False for offline providers; generative ones need a key unless base_url is set
    bulk_tasks: tuple[str, ...] = ()  # tasks `bulk` answers (non-generative providers only)
    # With a base URL (a compatible server of one's own) any model name is accepted (`check_model`).
    any_model_with_base_url: bool = False
    is_default: bool = False  # the provider used when none is configured (one offline, keyless provider)
    # Context windows (tokens) of the models: a key also covers the names it is a prefix of (dated
    # versions: gpt-4o-2024-08-06), the longest matching key wins; a model not listed gets
    # `llmhd_cli.llm.tokens.DEFAULT_CONTEXT_WINDOW` ([llm] context_window overrides either).
    context_windows: dict[str, int] = {}
    # Optional batch API (`llmhd_cli.llm.batch`, ``summarize --batch``): set ``supports_batch`` and
    # implement submit_batch, poll_batch and fetch_batch (find_batch if the API can find a batch by job).
    supports_batch: bool = False
    batch_max_requests: int = 10_000  # requests per submitted batch; more go in several
    batch_max_bytes: int = 100_000_000  # prompt bytes (system + prompt, UTF-8) per submitted batch, likewise

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.model = model or (self.models[0] if self.models else "")
        self.base_url = base_url
        self.api_key = api_key
        self.options = options or {}

    def complete(self, request: LLMRequest) -> LLMResponse:  # pragma: no cover - interface
        raise NotImplementedError

    def bulk(self, task: str, variables: list[dict[str, Any]]) -> list[Any]:
        """The values of many ``task`` requests from their variables alone, in order: exactly the
        ``value`` `complete` would return for each. Only for tasks in ``bulk_tasks``; raises
        `ProviderError` as `complete` does (then every request of the call fails)."""
        raise ProviderError(f"provider '{self.name}' answers no task in bulk", fatal=True)

    def submit_batch(self, requests: dict[str, LLMRequest], job: str) -> str:
        """Submit ``requests`` (custom id -> request) as one batch; returns its id. ``job`` is llmhd's
        name for it (tag the batch with it where the API allows). Raises `ProviderError`, or
        `llmhd_cli.llm.batch.SubmitUncertain` when the batch may have been created all the same."""
        raise ProviderError(f"provider '{self.name}' has no batch API", fatal=True)

    def poll_batch(self, batch_id: str) -> BatchStatus:
        """Where the batch stands (`llmhd_cli.llm.batch.BatchStatus`); raises `ProviderError`."""
        raise ProviderError(f"provider '{self.name}' has no batch API", fatal=True)

    def fetch_batch(self, batch_id: str, requests: dict[str, LLMRequest]) -> dict[str, BatchOutcome]:
        """The results of an ended batch per custom id: a response as `complete` would return it,
        or an error (errored, expired, cancelled). ``requests`` are the submitted ones."""
        raise ProviderError(f"provider '{self.name}' has no batch API", fatal=True)

    def find_batch(self, job: str, since: float) -> str | None:
        """The id of the batch tagged ``job`` created after ``since`` (a Unix time), or None when
        there is none or the API cannot tell (the default)."""
        return None

    def warm(self, requests: list[LLMRequest]) -> None:
        """Optional: prepare for these uncached requests together before they are sent one by
        one (a local model can batch its work). The default does nothing."""

    def close(self) -> None:
        """Release connections; called by the client's ``close``."""

    @classmethod
    def token_counter(cls, model: str) -> TokenCounter:
        """How ``model``'s tokens are counted, for usage the API does not report, estimates and
        prompt budgets. The default is the character estimate (`llmhd_cli.llm.tokens.APPROXIMATE`);
        a provider whose models use a tiktoken encoding returns
        ``TiktokenCounter.for_model(model)`` or ``TiktokenCounter.for_encoding(name)``."""
        from llmhd_cli.llm.tokens import APPROXIMATE

        return APPROXIMATE

    @classmethod
    def check_model(cls, model: str, base_url: str | None = None) -> None:
        """Raise `LLMHDError` for a model this provider does not serve (listing the known ones).

        With ``any_model_with_base_url`` and a base URL every name is accepted."""
        if base_url and cls.any_model_with_base_url:
            return
        if cls.models and model not in cls.models:
            raise LLMHDError(f"--model: unknown model '{model}' for provider '{cls.name}' "
                             f"(known: {', '.join(cls.models)})")

    @classmethod
    def key_required(cls, base_url: str | None) -> bool:
        """Whether an API key must be configured; a custom server (base_url) usually takes none."""
        return cls.needs_key and cls.key_env is not None and not base_url
