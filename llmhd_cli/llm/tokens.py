"""Token counting for when an API does not report usage, and for budget estimates.

OpenAI models are counted with tiktoken when its encoding file can be loaded. tiktoken
downloads encodings on first use; with no network (as on our machines) and nothing in
``TIKTOKEN_CACHE_DIR``, that fails, and we fall back to the estimate below. We try once per
process and per encoding, so an offline run does not retry the download for every call.

The estimate (all other models, and OpenAI models without tiktoken data): one token per 4
characters of text, rounded up, plus 4 tokens per chat message for the role markers. That is
OpenAI's published rule of thumb for English; it is within about 20% for prose and
undercounts code and non-Latin scripts. Counts made this way are flagged
``usage_reported=False`` and summed separately in the ledger.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4

_encodings: dict[str, Any] = {}
_lock = threading.Lock()


def estimate_tokens(text: str) -> int:
    """The documented estimate: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _tiktoken_encoding(model: str) -> Any | None:
    """The tiktoken encoding for an OpenAI model, or None when it is not available offline."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    with _lock:
        if name not in _encodings:
            try:
                _encodings[name] = tiktoken.get_encoding(name)
            except Exception as exc:  # no network and no cached file: any error means "not available"
                log.info("tiktoken encoding %s not available (%s); estimating tokens", name, type(exc).__name__)
                _encodings[name] = None
        return _encodings[name]


def count_tokens(text: str, provider: str = "", model: str = "") -> tuple[int, bool]:
    """(tokens, exact) for one text; exact is True only when a real tokenizer counted it."""
    if provider == "openai" and model:
        enc = _tiktoken_encoding(model)
        if enc is not None:
            return len(enc.encode(text, disallowed_special=())), True
    return estimate_tokens(text), False


def count_prompt_tokens(system: str, prompt: str, provider: str = "", model: str = "") -> tuple[int, bool]:
    """Tokens of a chat prompt (system + user message) including per-message overhead."""
    total, exact = 0, True
    for text in (system, prompt):
        if not text:
            continue
        n, ok = count_tokens(text, provider, model)
        total += n + MESSAGE_OVERHEAD
        exact = exact and ok
    return total, exact


# ---------------------------------------------------------------------- prompt budgets
#
# Every prompt must fit the model: its tokens plus the answer's (``max_tokens``) within the
# model's context window. Templates cut their variable parts (item texts, lists of them) at
# render time to a `PromptBudget` (see `llmhd_cli.llm.prompts.Template.render`), so the run
# and the cost estimate send and count the same prompts.

DEFAULT_CONTEXT_WINDOW = 8192  # a model we know nothing about (e.g. a local server's): most serve this much
DEFAULT_ANSWER_RESERVE = 1024  # answer tokens kept free when a template sets no max_tokens
# Context windows (tokens) of the models the shipped providers list. A key also covers the
# names it is a prefix of (dated versions: gpt-4o-2024-08-06); the longest matching key wins.
CONTEXT_WINDOWS: dict[str, dict[str, int]] = {
    "openai": {"gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576,
               "gpt-4.1-nano": 1_047_576, "gpt-3.5-turbo": 16_385},
    "anthropic": {"claude-": 200_000},
}


def context_window(provider: str, model: str, override: int | None = None) -> int:
    """The model's context window: ``override`` (the user's setting), else the table, else the default."""
    if override:
        return int(override)
    table = CONTEXT_WINDOWS.get(provider, {})
    matches = [name for name in table if model == name or model.startswith(name)]
    return table[max(matches, key=len)] if matches else DEFAULT_CONTEXT_WINDOW


def budget_tokens(text: str, provider: str = "", model: str = "") -> int:
    """Tokens of ``text`` counted on the high side, for keeping prompts inside a budget.

    Exact with tiktoken where `count_tokens` is; otherwise ASCII at 3 characters a token and
    other characters at 2 UTF-8 bytes a token (CJK ~1.5, emoji 2), which overcounts prose a
    little (the documented 4-per-token estimate stays below it) but keeps code, numbers and
    non-Latin scripts inside the window too.
    """
    if not text:
        return 0
    if provider == "openai" and model:
        enc = _tiktoken_encoding(model)
        if enc is not None:
            return len(enc.encode(text, disallowed_special=()))
    if text.isascii():
        return math.ceil(len(text) / 3)
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return math.ceil(ascii_chars / 3 + (len(text.encode("utf-8")) - ascii_chars) / 2)


def truncate_tokens(text: str, tokens: int, provider: str = "", model: str = "") -> str:
    """The longest start of ``text`` that `budget_tokens` counts as at most ``tokens``."""
    if tokens <= 0:
        return ""
    if provider == "openai" and model:
        enc = _tiktoken_encoding(model)
        if enc is not None:
            ids = enc.encode(text, disallowed_special=())
            return text if len(ids) <= tokens else enc.decode(ids[:tokens]).rstrip("\ufffd")
    if text.isascii():
        return text[: tokens * 3]
    cost, limit = 0.0, float(tokens)
    for n, ch in enumerate(text):
        cost += 1 / 3 if ch < "\x80" else len(ch.encode("utf-8")) / 2
        if cost > limit:
            return text[:n]
    return text


@dataclass(frozen=True)
class PromptBudget:
    """The room a model gives one prompt: its context window, counted with its tokenizer."""

    context_window: int
    provider: str = ""
    model: str = ""

    def count(self, *texts: str) -> int:
        """Tokens of chat messages (high side), with the per-message overhead."""
        return sum(budget_tokens(t, self.provider, self.model) + MESSAGE_OVERHEAD for t in texts if t)

    def truncate(self, text: str, tokens: int) -> str:
        return truncate_tokens(text, tokens, self.provider, self.model)

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
    return PromptBudget(context_window(name, model, override), name, model)
