"""The `openai` provider: chat completions through the official SDK.

Works with OpenAI itself and with any OpenAI-compatible server (vLLM, llama.cpp, Ollama) given
``--base-url``; with a custom base URL any model name is accepted and no key is required.
The SDK's own retries are off: the client retries, so a retried call is counted once.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from llmhd_cli.hookspecs import hookimpl
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError
from llmhd_cli.llm.tokens import count_prompt_tokens, count_tokens

# Decoding params passed through as they are (others in request.params are ignored).
PASS_THROUGH = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
NO_KEY = "sk-no-key"  # placeholder for servers that take none; the SDK insists on some key


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
    """Map an openai/anthropic SDK exception onto `ProviderError` (both SDKs share the shapes)."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderError(f"{name}: request timed out", retryable=True, unreachable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderError(f"{name}: connection error ({type(exc.__cause__ or exc).__name__})",
                             retryable=True, unreachable=True)
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        detail = f"{name}: HTTP {status}: {exc.message}"
        if status in (401, 403):
            return ProviderError(f"{detail} (check the API key)", fatal=True)
        if status == 404:
            return ProviderError(f"{detail} (check --model and --base-url)", fatal=True)
        retryable = status in (408, 409, 429) or status >= 500
        return ProviderError(detail, retryable=retryable,
                             retry_after=retry_after_seconds(getattr(exc.response, "headers", None)))
    return ProviderError(f"{name}: {type(exc).__name__}: {exc}")


class OpenAIProvider(Provider):
    name = "openai"
    description = "OpenAI chat completions, or any OpenAI-compatible server via --base-url"
    models = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1", "gpt-3.5-turbo")
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    any_model_with_base_url = True

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        import openai

        self._sdk = openai
        self._client = openai.OpenAI(api_key=api_key or NO_KEY, base_url=base_url, max_retries=0,
                                     timeout=float(self.options.get("timeout", 60)))
        # OpenAI proper takes json_schema; llama.cpp refuses it and enforces json_object + schema.
        default_mode = "json_object" if base_url else "json_schema"
        self.structured_output = str(self.options.get("structured_output", default_mode))
        self.top_logprobs = int(self.options.get("top_logprobs", 10))

    @classmethod
    def check_model(cls, model: str, base_url: str | None = None) -> None:
        if base_url:  # a custom server serves whatever it serves
            return
        super().check_model(model, base_url)

    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        kwargs.update({k: request.params[k] for k in PASS_THROUGH if k in request.params})
        if request.params.get("max_tokens"):
            # OpenAI's newer models take only max_completion_tokens; compatible servers know max_tokens.
            kwargs["max_completion_tokens" if not self.base_url else "max_tokens"] = int(request.params["max_tokens"])
        if request.response_schema is not None:
            if self.structured_output == "json_schema":
                kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": "answer", "schema": request.response_schema, "strict": True}}
            else:
                kwargs["response_format"] = {"type": "json_object", "schema": request.response_schema}
        if request.want_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = self.top_logprobs
        return kwargs

    def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            completion = self._client.chat.completions.create(**self._kwargs(request))
        except self._sdk.OpenAIError as exc:
            raise provider_error(exc, self._sdk, self.name) from None
        if not completion.choices:
            raise ProviderError(f"{self.name}: the server returned no choices", retryable=True)
        choice = completion.choices[0]
        text = choice.message.content or ""
        usage = completion.usage
        if usage is not None and usage.prompt_tokens is not None:
            tokens_in, tokens_out, reported = int(usage.prompt_tokens), int(usage.completion_tokens or 0), True
        else:
            tokens_in, _ = count_prompt_tokens(request.system, request.prompt, self.name, self.model)
            tokens_out, _ = count_tokens(text, self.name, self.model)
            reported = False
        logprobs = tokens = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        if content:
            logprobs, tokens = [], []
            for item in content:
                alternatives = {alt.token: float(alt.logprob) for alt in (item.top_logprobs or [])}
                alternatives.setdefault(item.token, float(item.logprob))
                logprobs.append(alternatives)
                tokens.append(item.token)
        return LLMResponse(text=text, input_tokens=tokens_in, output_tokens=tokens_out, usage_reported=reported,
                           model=completion.model or self.model, logprobs=logprobs, tokens=tokens)

    def close(self) -> None:
        self._client.close()


@hookimpl
def register_providers(register):
    register(OpenAIProvider)
