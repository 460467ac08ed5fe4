"""The `openai` provider: chat completions through the official SDK.

Works with OpenAI itself and with any OpenAI-compatible server (vLLM, llama.cpp, Ollama) given
``--base-url``; with a custom base URL any model name is accepted and no key is required.
The SDK's own retries are off: the client retries, so a retried call is counted once.
"""

from __future__ import annotations

import json
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
from llmhd_cli.llm.tokens import TiktokenCounter, TokenCounter

if TYPE_CHECKING:
    from llmhd_cli.llm.batch import BatchOutcome, BatchStatus

# Decoding params passed through as they are (others in request.params are ignored).
PASS_THROUGH = ("temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty")
NO_KEY = "sk-no-key"  # placeholder for servers that take none; the SDK insists on some key


class OpenAIProvider(Provider):
    name = "openai"
    description = "OpenAI chat completions, or any OpenAI-compatible server via --base-url"
    models = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1", "gpt-3.5-turbo")
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    any_model_with_base_url = True
    context_windows = {"gpt-4o": 128_000, "gpt-4o-mini": 128_000, "gpt-4.1": 1_047_576, "gpt-4.1-mini": 1_047_576,
                       "gpt-4.1-nano": 1_047_576, "gpt-3.5-turbo": 16_385}

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
    def token_counter(cls, model: str) -> TokenCounter:
        """tiktoken's encoding of the model (o200k_base, cl100k_base: exact, offline); a model
        tiktoken does not know (a local server's) gets the character estimate."""
        return TiktokenCounter.for_model(model)

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
        completion = self._sdk_call(self._client.chat.completions.create, **self._kwargs(request))
        if not isinstance(completion, self._sdk.types.chat.ChatCompletion):  # a non-JSON content type
            raise malformed_body(self.name, "a body that is not a chat completion", completion)
        try:
            return self._response(request, completion)
        except BODY_ERRORS as exc:
            raise malformed_body(self.name, f"a chat completion without the expected fields ({type(exc).__name__}: "
                                            f"{exc})") from None

    def _response(self, request: LLMRequest, completion: Any) -> LLMResponse:
        if not completion.choices:
            raise malformed_body(self.name, "a chat completion without choices")
        choice = completion.choices[0]
        text = choice.message.content
        if text is None:
            text = ""  # no text (a refusal, a tool call): the parser's re-ask deals with it
        if not isinstance(text, str):
            raise malformed_body(self.name, f"a message content that is not text ({type(text).__name__})")
        tokens_in, tokens_out, reported = tokens_used(self, completion.usage, "prompt_tokens", "completion_tokens",
                                                      request, text)
        logprobs = tokens = None
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        if content:
            logprobs, tokens = [], []
            for item in content:
                alternatives = {str(alt.token): float(alt.logprob) for alt in (item.top_logprobs or [])}
                alternatives.setdefault(str(item.token), float(item.logprob))
                logprobs.append(alternatives)
                tokens.append(str(item.token))
        model = completion.model if isinstance(completion.model, str) and completion.model else self.model
        # Prompt caching is automatic (prompts of 1,024 tokens and more); the cached part is in prompt_tokens.
        cached = min(usage_int(completion.usage, "prompt_tokens_details", "cached_tokens"), tokens_in) if reported else 0
        return LLMResponse(text=text, input_tokens=tokens_in, output_tokens=tokens_out, usage_reported=reported,
                           model=model, logprobs=logprobs, tokens=tokens, cached_input_tokens=cached)

    # ------------------------------------------------------------------ Batch API (summarize --batch)

    supports_batch = True
    batch_max_requests = 20_000  # OpenAI takes 50,000 requests and 200 MB per batch
    batch_max_bytes = 150_000_000  # of prompts: the 200 MB input file holds the JSON around them too
    BATCH_ENDPOINT = "/v1/chat/completions"

    def _sdk_call(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """An SDK call (a completion, a batch request), its errors as ProviderErrors."""
        return sdk_call(self.name, self._sdk, self._sdk.OpenAIError, call, *args, **kwargs)

    def submit_batch(self, requests: dict[str, LLMRequest], job: str) -> str:
        """The requests as a JSONL file (purpose "batch"), then a batch over it, tagged ``llmhd_job``."""
        from llmhd_cli.llm.batch import SubmitUncertain

        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": self.BATCH_ENDPOINT,
                             "body": self._kwargs(request)}, ensure_ascii=False) for cid, request in requests.items()]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        upload = self._sdk_call(self._client.files.create, file=(f"llmhd-{job}.jsonl", data, "application/jsonl"),
                                  purpose="batch")
        try:
            batch = self._client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                completion_window="24h", metadata={"llmhd_job": job})
        except self._sdk.APITimeoutError:
            raise SubmitUncertain(f"{self.name}: creating the batch timed out") from None
        except self._sdk.APIStatusError as exc:
            if exc.status_code >= 500:
                raise SubmitUncertain(f"{self.name}: HTTP {exc.status_code} creating the batch: {exc.message}") from None
            raise provider_error(exc, self._sdk, self.name) from None
        except self._sdk.OpenAIError as exc:
            raise provider_error(exc, self._sdk, self.name) from None
        return str(batch.id)

    def poll_batch(self, batch_id: str) -> BatchStatus:
        from llmhd_cli.llm.batch import BatchStatus

        batch = self._sdk_call(self._client.batches.retrieve, batch_id)
        counts = batch.request_counts
        total, completed, failed = (counts.total, counts.completed, counts.failed) if counts else (0, 0, 0)
        error = None
        if batch.status == "failed":  # the input file did not validate: no request ran, nothing is charged
            messages = [str(e.message or e.code) for e in (batch.errors.data or [])] if batch.errors else []
            error = "; ".join(messages[:3]) or "the batch failed validation"
        ended = batch.status in ("completed", "expired", "cancelled", "failed")
        return BatchStatus(ended=ended, total=total, done=completed + failed, failed=failed, state=batch.status,
                           error=error)

    def fetch_batch(self, batch_id: str, requests: dict[str, LLMRequest]) -> dict[str, BatchOutcome]:
        """The output file's answers and the error file's errors (expired requests are in the latter)."""

        batch = self._sdk_call(self._client.batches.retrieve, batch_id)
        out: dict[str, BatchOutcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = self._sdk_call(self._client.files.content, file_id)
            for line in content.text.splitlines():
                try:
                    row = json.loads(line) if line.strip() else None
                except ValueError:
                    row = None
                cid = row.get("custom_id") if isinstance(row, dict) else None
                if not isinstance(row, dict) or cid not in requests:
                    continue
                out[cid] = self._batch_outcome(requests[cid], row)
        return out

    def _batch_outcome(self, request: LLMRequest, row: dict) -> BatchOutcome:
        from llmhd_cli.llm.batch import BatchOutcome

        response = row["response"] if isinstance(row.get("response"), dict) else {}
        error = row.get("error")
        status = response.get("status_code")
        body = response.get("body")
        if error or status != 200:
            if isinstance(error, dict):
                detail = f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
            elif isinstance(body, dict) and isinstance(body.get("error"), dict):
                detail = f"HTTP {status}: {body['error'].get('message') or ''}"
            else:
                detail = f"HTTP {status}"
            return BatchOutcome(error=f"{self.name} batch: {detail}")
        try:
            completion = self._sdk.types.chat.ChatCompletion.model_validate(body)
            return BatchOutcome(response=self._response(request, completion))
        except ProviderError as exc:
            return BatchOutcome(error=str(exc))
        except BODY_ERRORS as exc:  # pydantic's ValidationError is a ValueError
            return BatchOutcome(error=f"{self.name} batch: a result that is not a chat completion "
                                      f"({type(exc).__name__})")

    def find_batch(self, job: str, since: float) -> str | None:
        """The batch tagged ``llmhd_job`` = ``job``, among those created since ``since`` (newest first)."""
        for batch in self._sdk_call(self._client.batches.list, limit=100):
            if (batch.metadata or {}).get("llmhd_job") == job:
                return str(batch.id)
            if batch.created_at < since - 600:
                break
        return None

    def close(self) -> None:
        self._client.close()


@hookimpl
def register_providers(register):
    register(OpenAIProvider)
