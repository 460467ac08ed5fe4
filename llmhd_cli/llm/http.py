"""Helpers shared by providers that call an HTTP API through an SDK.

Part of the provider contract (docs/plugins.md, "Writing a provider"): a provider maps its
SDK's errors with `provider_error`, reports a 200 whose body is not an answer with
`malformed_body` (catching `BODY_ERRORS` around reading it), and takes its tokens from the
API's usage object or, where the API reports none, from its own counter (`tokens_used`).
No provider imports another provider's module: what two of them share lives here.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

from llmhd_cli.llm.base import LLMRequest, ProviderError

if TYPE_CHECKING:
    from llmhd_cli.llm.base import Provider


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (a number or an HTTP date), if present."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def provider_error(exc: Exception, sdk: Any, name: str) -> ProviderError:
    """Map an exception of a Stainless-generated SDK (``sdk``: the module, e.g. ``openai`` or
    ``anthropic``, whose APITimeoutError, APIConnectionError and APIStatusError it raises) onto
    `ProviderError`: timeouts and connection errors retryable and unreachable, 401/403 and 404
    fatal, 408/409/429/5xx retryable with the server's Retry-After."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{name}: request timed out", retryable=True, unreachable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{name}: connection error ({type(exc.__cause__ or exc).__name__})",
                             retryable=True, unreachable=True)
    if isinstance(exc, sdk.APIStatusError):
        return status_error(f"{name}: HTTP {exc.status_code}: {exc.message}", exc.status_code,
                            getattr(exc.response, "headers", None))
    return ProviderError(f"{name}: {type(exc).__name__}: {exc}")


def status_error(detail: str, status: int, headers: Any, key: str = "the API key") -> ProviderError:
    """An HTTP error status as a `ProviderError`: 401/403 and 404 fatal (``key`` names what to
    check for the first), 408/409/429/5xx retryable with the server's Retry-After."""
    if status in (401, 403):
        return ProviderError(f"{detail} (check {key})", fatal=True)
    if status == 404:
        return ProviderError(f"{detail} (check --model and --base-url)", fatal=True)
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(detail, retryable=retryable, retry_after=retry_after_seconds(headers))


# What the SDKs raise or leave broken when an HTTP 200 body is not the expected JSON object:
# json.JSONDecodeError (a ValueError) for a JSON content type with a non-JSON body, and for
# JSON lacking fields, attribute/type errors on access (their models are built unvalidated).
BODY_ERRORS = (AttributeError, TypeError, ValueError, KeyError, IndexError)


def malformed_body(name: str, what: str, body: Any = None) -> ProviderError:
    """An HTTP 200 whose body is not a usable answer: one counted failure of this request.

    Not retried: the server may have charged for the call, and a server answering garbage
    usually answers it every time (a wrong --base-url serving a web page).
    """
    preview = ""
    if isinstance(body, (str, bytes, list, int, float)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        text = " ".join(text.split())
        preview = f": {text[:80]!r}" if text else ": an empty body"
    return ProviderError(f"{name}: HTTP 200 with {what}{preview}")


def sdk_call(name: str, sdk: Any, sdk_error: type[Exception], call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` of an SDK client, its errors as the provider's `ProviderError`s
    (an SDK error mapped by `provider_error`, a body that is not JSON by `malformed_body`)."""
    try:
        return call(*args, **kwargs)
    except sdk_error as exc:
        raise provider_error(exc, sdk, name) from None
    except ValueError as exc:  # a body that is not JSON
        raise malformed_body(name, f"a body that is not JSON ({exc})") from None


def usage_counts(usage: Any, input_field: str, output_field: str) -> tuple[int, int] | None:
    """(input, output) tokens from a usage object, or None when it is missing or not numbers."""
    raw_in, raw_out = getattr(usage, input_field, None), getattr(usage, output_field, None) or 0
    if raw_in is None or isinstance(raw_in, bool) or isinstance(raw_out, bool):
        return None
    try:
        tokens_in, tokens_out = int(raw_in), int(raw_out)
    except (TypeError, ValueError):
        return None
    return (tokens_in, tokens_out) if tokens_in >= 0 and tokens_out >= 0 else None


def usage_int(obj: Any, *path: str) -> int:
    """The non-negative integer at ``obj.path[0].path[1]...`` (a usage object's detail, such as
    OpenAI's ``prompt_tokens_details.cached_tokens``); 0 when missing or not a count."""
    for name in path:
        obj = getattr(obj, name, None)
    return obj if type(obj) is int and obj > 0 else 0


def tokens_used(provider: Provider, usage: Any, input_field: str, output_field: str, request: LLMRequest,
                text: str) -> tuple[int, int, bool]:
    """(input, output, reported): the API's usage when it gave usable numbers, else the
    provider's own count (`Provider.token_counter`) of the prompt and the answer text."""
    counts = usage_counts(usage, input_field, output_field)
    if counts is not None:
        return counts[0], counts[1], True
    from llmhd_cli.llm.tokens import counter_for

    counter = counter_for(provider, provider.model)
    return counter.count_messages(request.system, request.prompt), counter.count(text), False
