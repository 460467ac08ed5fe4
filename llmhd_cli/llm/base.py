"""The provider contract shared by every part of the LLM layer.

A provider turns one `LLMRequest` into one `LLMResponse`. Generative providers (openai,
anthropic) send ``system`` + ``prompt`` and return text that the template's parser reads.
Non-generative providers (embed, oracle) use ``variables`` (the structured inputs the prompt
was rendered from) and may return ``value`` directly; the parser is then skipped.

Everything above the provider (caching, retries, budget, ledger, concurrency) lives in the
client, so a provider implements only the call itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


class ProviderError(Exception):
    """A call failed. ``retryable`` marks rate limits, timeouts and 5xx; ``retry_after`` (s) honours the server."""

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Provider:
    """Base class for providers registered through ``register_providers``.

    Subclasses set ``name``, ``description``, ``models`` (known model names, first is the
    default), ``key_env`` (environment variable holding the API key, or None), and implement
    `complete`. ``generative`` is False for providers that are not language models.
    """

    name: str = ""
    description: str = ""
    models: tuple[str, ...] = ()
    key_env: str | None = None
    generative: bool = True
    upper_bound: bool = False  # True for diagnostics that see ground truth (oracle)

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.model = model or (self.models[0] if self.models else "")
        self.base_url = base_url
        self.api_key = api_key
        self.options = options or {}

    def complete(self, request: LLMRequest) -> LLMResponse:  # pragma: no cover - interface
        raise NotImplementedError
