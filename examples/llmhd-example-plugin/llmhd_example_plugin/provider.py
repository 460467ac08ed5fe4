"""The provider ``compat-chat``: any OpenAI-compatible chat-completions server, over plain HTTP.

A complete LLM provider written against llmhd's provider contract only (`llmhd_cli.llm.base`,
the shared helpers in `llmhd_cli.llm.http` and `llmhd_cli.llm.tokens`): no SDK, no import of
another provider's module, nothing in llmhd's core changed to add it. It POSTs
``{base_url}/chat/completions`` with the standard library's ``urllib`` to a server of your own
(llama.cpp, vLLM, Ollama, LM Studio...), so ``--base-url`` is required and any model name the
server knows is accepted. It counts tokens itself (cl100k_base, exact, offline) when the server
reports no usage, and `llmhd cost` counts with the same tokenizer.

What the client above it (cache, ledger, retries, budget) expects of it, and how it does it:

- `complete` returns the text and the tokens (the server's ``usage``, else its own count,
  flagged ``usage_reported=False``);
- HTTP 429, 408, 409 and 5xx raise a retryable `ProviderError` (with the server's
  Retry-After), connection errors and timeouts a retryable, ``unreachable`` one, 401/403/404
  a ``fatal`` one (every later call would fail too), and a 200 whose body is not a chat
  completion a counted failure of that request (`malformed_body`).
"""

from __future__ import annotations

import http.client
import json
import types
import urllib.error
import urllib.request
from typing import Any

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider, ProviderError
from llmhd_cli.llm.http import BODY_ERRORS, malformed_body, status_error, tokens_used
from llmhd_cli.llm.tokens import TiktokenCounter, TokenCounter

PASS_THROUGH = ("temperature", "top_p", "seed", "stop", "max_tokens")
ENCODING = "cl100k_base"  # the tokenizer it counts with; [llm.compat-chat] has no say in it


class CompatChatProvider(Provider):
    name = "compat-chat"
    description = ("Any OpenAI-compatible chat-completions server of your own over plain HTTP, no SDK "
                   "(example plugin); needs --base-url, counts tokens with cl100k_base")
    models = ("local-model",)  # sent when no --model is given; most local servers serve one model anyway
    key_env = "COMPAT_CHAT_API_KEY"  # optional: sent as a bearer token when set
    base_url_env = "COMPAT_CHAT_BASE_URL"
    any_model_with_base_url = True
    context_windows = {"local-model": 8192}

    @classmethod
    def token_counter(cls, model: str) -> TokenCounter:
        return TiktokenCounter.for_encoding(ENCODING)

    @classmethod
    def check_model(cls, model: str, base_url: str | None = None) -> None:
        if not base_url:
            raise LLMHDError(f"--base-url: provider '{cls.name}' talks to a server of your own: give its URL "
                             f"(e.g. http://127.0.0.1:8080/v1), or set {cls.base_url_env}")
        super().check_model(model, base_url)

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(model, base_url, api_key, options)
        self.check_model(self.model, base_url)
        self.url = f"{str(base_url).rstrip('/')}/chat/completions"
        self.timeout = float(self.options.get("timeout", 60))

    def _body(self, request: LLMRequest) -> bytes:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        body.update({k: request.params[k] for k in PASS_THROUGH if k in request.params})
        if request.response_schema is not None:  # llama.cpp's form; OpenAI itself wants json_schema
            body["response_format"] = {"type": "json_object", "schema": request.response_schema}
        return json.dumps(body).encode("utf-8")

    def complete(self, request: LLMRequest) -> LLMResponse:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        http_request = urllib.request.Request(self.url, data=self._body(request), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            raise self._status_error(exc) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProviderError(f"{self.name}: connection error ({type(reason).__name__})", retryable=True,
                                unreachable=True) from None
        try:
            completion = json.loads(raw)
        except ValueError:
            raise malformed_body(self.name, "a body that is not JSON", raw) from None
        try:
            return self._response(request, completion)
        except BODY_ERRORS as exc:
            raise malformed_body(self.name, f"a chat completion without the expected fields ({type(exc).__name__}: "
                                            f"{exc})") from None

    def _status_error(self, exc: urllib.error.HTTPError) -> ProviderError:
        return status_error(f"{self.name}: HTTP {exc.code} from {self.url}", exc.code, exc.headers,
                            key=self.key_env)

    def _response(self, request: LLMRequest, completion: Any) -> LLMResponse:
        if not isinstance(completion, dict) or not completion.get("choices"):
            raise malformed_body(self.name, "a body that is not a chat completion", json.dumps(completion)[:200])
        text = completion["choices"][0]["message"].get("content") or ""
        if not isinstance(text, str):
            raise malformed_body(self.name, f"a message content that is not text ({type(text).__name__})")
        usage = completion.get("usage")
        usage_object = types.SimpleNamespace(**usage) if isinstance(usage, dict) else None
        tokens_in, tokens_out, reported = tokens_used(self, usage_object, "prompt_tokens", "completion_tokens",
                                                      request, text)
        model = completion.get("model")
        return LLMResponse(text=text, input_tokens=tokens_in, output_tokens=tokens_out, usage_reported=reported,
                           model=model if isinstance(model, str) and model else self.model)
