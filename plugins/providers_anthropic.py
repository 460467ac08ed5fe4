"""The `anthropic` provider: the Messages API through the official SDK.

``--base-url`` points it at another endpoint (a proxy, or the local test server). Structured
output is a forced tool call whose input schema is the request's schema; the tool input comes
back as JSON text for the template's parser. Anthropic gives no token log-probabilities.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import TYPE_CHECKING, Any

from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError
from llmhd_cli.llm.http import (
    BODY_ERRORS,
    malformed_body,
    provider_error,
    sdk_call,
    tokens_used,
    usage_int,
)

if TYPE_CHECKING:
    from llmhd_cli.llm.batch import BatchOutcome, BatchStatus

DEFAULT_MAX_TOKENS = 1024  # the Messages API requires max_tokens
PASS_THROUGH = ("temperature", "top_p", "top_k")
TOOL_NAME = "answer"

log = logging.getLogger(__name__)


class AnthropicProvider(Provider):
    name = "anthropic"
    description = "Anthropic Claude models through the Messages API"
    models = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest")
    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    context_windows = {"claude-": 200_000}
    # Token counts: Anthropic's tokenizer is not public, so usage the API does not report and
    # estimates use the base class's character estimate (Provider.token_counter).

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        import anthropic

        self._sdk = anthropic
        self._client = anthropic.Anthropic(api_key=api_key or "no-key", base_url=base_url, max_retries=0,
                                           timeout=float(self.options.get("timeout", 60)))
        # Recent SDKs dropped the sampling parameters (current models fix them); send them only
        # where the installed SDK still takes them.
        accepted = inspect.signature(self._client.messages.create).parameters
        self._sampling = tuple(k for k in PASS_THROUGH if k in accepted)
        self._warned = False

    @classmethod
    def key_required(cls, base_url: str | None) -> bool:
        return True  # a proxy in front of Anthropic still wants the key

    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(request.params.get("max_tokens") or DEFAULT_MAX_TOKENS),
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.system:
            kwargs["system"] = request.system
        kwargs.update({k: request.params[k] for k in self._sampling if k in request.params})
        dropped = [k for k in PASS_THROUGH if k in request.params and k not in self._sampling]
        if dropped and not self._warned:
            self._warned = True
            log.info("anthropic SDK takes no %s; not sent", ", ".join(dropped))
        if "stop" in request.params:
            stop = request.params["stop"]
            kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if request.response_schema is not None:
            kwargs["tools"] = [{"name": TOOL_NAME, "description": "Give the answer in this format.",
                                "input_schema": request.response_schema}]
            kwargs["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        return kwargs

    def complete(self, request: LLMRequest) -> LLMResponse:
        message = self._sdk_call(self._client.messages.create, **self._kwargs(request))
        if not isinstance(message, self._sdk.types.Message):  # a non-JSON content type
            raise malformed_body(self.name, "a body that is not a message", message)
        try:
            return self._response(request, message)
        except BODY_ERRORS as exc:
            raise malformed_body(self.name, f"a message without the expected fields ({type(exc).__name__}: "
                                            f"{exc})") from None

    def _response(self, request: LLMRequest, message: Any) -> LLMResponse:
        if not isinstance(message.content, list):
            raise malformed_body(self.name, "a message without a content list")
        parts = []
        for block in message.content:
            kind = getattr(block, "type", None)
            if kind == "text":
                if not isinstance(block.text, str):
                    raise malformed_body(self.name, f"a text block that is not text ({type(block.text).__name__})")
                parts.append(block.text)
            elif kind == "tool_use":
                parts.append(json.dumps(block.input))
        text = "".join(parts)
        tokens_in, tokens_out, reported = tokens_used(self, message.usage, "input_tokens", "output_tokens", request,
                                                      text)
        model = message.model if isinstance(message.model, str) and message.model else self.model
        # Cache reads and writes (prompts marked cache_control, e.g. by a proxy) are reported apart
        # from input_tokens; llmhd counts all prompt tokens as input and prices those two apart.
        read = usage_int(message.usage, "cache_read_input_tokens") if reported else 0
        written = usage_int(message.usage, "cache_creation_input_tokens") if reported else 0
        return LLMResponse(text=text, input_tokens=tokens_in + read + written, output_tokens=tokens_out,
                           usage_reported=reported, model=model, cached_input_tokens=read, cache_write_tokens=written)

    # ------------------------------------------------------------------ Message Batches (summarize --batch)

    supports_batch = True
    batch_max_requests = 20_000  # Anthropic takes 100,000 requests and 256 MB per batch
    batch_max_bytes = 200_000_000  # of prompts: the 256 MB request holds the JSON around them too

    def _sdk_call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """An SDK call (a completion, a batch request), its errors as ProviderErrors."""
        return sdk_call(self.name, self._sdk, self._sdk.AnthropicError, call, *args, **kwargs)

    def submit_batch(self, requests: dict[str, LLMRequest], job: str) -> str:
        """One Message Batch; each request's params are exactly what `complete` sends."""
        from llmhd_cli.llm.batch import SubmitUncertain

        batch_requests: list[Any] = [{"custom_id": cid, "params": self._kwargs(request)}
                                     for cid, request in requests.items()]
        try:
            batch = self._client.messages.batches.create(requests=batch_requests)
        except self._sdk.APITimeoutError:
            raise SubmitUncertain(f"{self.name}: creating the message batch timed out") from None
        except self._sdk.APIStatusError as exc:
            if exc.status_code >= 500:
                raise SubmitUncertain(f"{self.name}: HTTP {exc.status_code} creating the message batch: "
                                      f"{exc.message}") from None
            raise provider_error(exc, self._sdk, self.name) from None
        except self._sdk.AnthropicError as exc:
            raise provider_error(exc, self._sdk, self.name) from None
        return str(batch.id)

    def poll_batch(self, batch_id: str) -> BatchStatus:
        from llmhd_cli.llm.batch import BatchStatus

        batch = self._sdk_call(self._client.messages.batches.retrieve, batch_id)
        c = batch.request_counts
        failed = c.errored + c.canceled + c.expired
        total = c.processing + c.succeeded + failed
        return BatchStatus(ended=batch.processing_status == "ended", total=total, done=total - c.processing,
                           failed=failed, state=batch.processing_status)

    def fetch_batch(self, batch_id: str, requests: dict[str, LLMRequest]) -> dict[str, BatchOutcome]:
        """The results JSONL: succeeded messages, else the request's errored/canceled/expired result."""
        from llmhd_cli.llm.batch import BatchOutcome

        out: dict[str, BatchOutcome] = {}
        for item in self._sdk_call(lambda: list(self._client.messages.batches.results(batch_id))):
            cid = getattr(item, "custom_id", None)
            if cid not in requests:
                continue
            result = item.result
            kind = getattr(result, "type", None)
            if kind != "succeeded":
                detail = str(kind)
                error = getattr(getattr(result, "error", None), "error", None)
                if error is not None:
                    detail += f": {getattr(error, 'type', '')}: {getattr(error, 'message', '')}"
                out[cid] = BatchOutcome(error=f"{self.name} batch: {detail}")
                continue
            try:
                out[cid] = BatchOutcome(response=self._response(requests[cid], result.message))
            except ProviderError as exc:
                out[cid] = BatchOutcome(error=str(exc))
            except BODY_ERRORS as exc:
                out[cid] = BatchOutcome(error=f"{self.name} batch: a result that is not a message ({type(exc).__name__})")
        return out

    def close(self) -> None:
        self._client.close()


@hookimpl
def register_providers(register):
    register(AnthropicProvider)
