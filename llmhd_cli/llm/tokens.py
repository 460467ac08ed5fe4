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
