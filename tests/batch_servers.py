"""Local servers for the Batch API tests: OpenAI's Batch API and Anthropic's Message Batches.

Both really process what they are sent: each request of a batch is answered by ``answer(system,
prompt)`` (by default `profile_answer`, a deterministic profile text for the template's output
tag) with usage counted from the texts, and both also serve the normal endpoint (chat
completions, messages) with the same answers, so a test can compare the batch path with the
normal one and exercise the fallback and the re-ask. ``in_progress_polls`` keeps each batch
"in_progress" for that many retrieves; ``fail(prompt)`` returns a result kind for requests that
must not succeed ("errored", "expired"; OpenAI: also "http_400"); ``submissions`` and
``submitted_requests`` count what was submitted (server-side proof that nothing was sent twice);
``cached_tokens`` is what each answer reports as read from the provider's prompt cache.

Protocols, as the official SDKs speak them:

- OpenAI: ``POST /v1/files`` (multipart, purpose "batch"), ``POST /v1/batches`` (input_file_id,
  endpoint, completion_window, metadata), ``GET /v1/batches/{id}``, ``GET /v1/batches`` (list),
  ``GET /v1/files/{id}/content`` (the output and error JSONL files).
- Anthropic: ``POST /v1/messages/batches`` (requests: custom_id + params),
  ``GET /v1/messages/batches/{id}`` (processing_status, request_counts, results_url),
  ``GET /v1/messages/batches/{id}/results`` (JSONL of custom_id + result).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from llm_servers import LocalServer, Recorded, Reply

Answer = Callable[[str, str], str]
Fail = Callable[[str], str | None]


def profile_answer(system: str, prompt: str) -> str:
    """A deterministic answer in the output tag the template asks for (summaries and item profiles)."""
    digest = hashlib.sha256((system + "\x00" + prompt).encode()).hexdigest()[:8]
    tag = "profile" if "<profile>" in prompt or "<profile>" in system else "summarization"
    return f"<{tag}>Enjoys thoughtful fiction and character studies (profile {digest}).</{tag}>"


def tokens_of(text: str) -> int:
    return max(1, len(text) // 4)


def _last_user_text(messages: list[dict]) -> str:
    content = messages[-1]["content"] if messages else ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


class _BatchServer:
    """What both servers share: the answer function, failure switch and counters."""

    def __init__(self, answer: Answer | None = None, in_progress_polls: int = 0, fail: Fail | None = None,
                 models: tuple[str, ...] | None = None, cached_tokens: int = 0) -> None:
        self.answer = answer or profile_answer
        self.cached_tokens = cached_tokens  # prompt tokens each answer reports as read from the prompt cache
        self.in_progress_polls = in_progress_polls
        self.fail = fail
        self.models = models  # None: any model
        self.submissions = 0
        self.submitted_requests = 0
        self.normal_calls = 0
        self.polls = 0
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.server = LocalServer(self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> _BatchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self, rec: Recorded) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError


class OpenAIBatchServer(_BatchServer):
    """OpenAI's files + batches endpoints, and chat completions."""

    def __init__(self, *args: Any, final_status: str = "completed", **kwargs: Any) -> None:
        self.files: dict[str, bytes] = {}
        self.final_status = final_status  # how a batch ends: completed, or expired / cancelled (partial results)
        super().__init__(*args, **kwargs)

    def __enter__(self) -> OpenAIBatchServer:
        return self

    def completion(self, body: dict) -> tuple[int, dict]:
        """(status, body) of one chat completion."""
        if self.models is not None and body.get("model") not in self.models:
            return 404, {"error": {"message": f"The model '{body.get('model')}' does not exist",
                                   "type": "invalid_request_error", "code": "model_not_found"}}
        messages = body.get("messages") or []
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        prompt = _last_user_text(messages)
        text = self.answer(system, prompt)
        prompt_tokens = tokens_of(system + prompt)
        completion_tokens = tokens_of(text)
        return 200, {
            "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:12], "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt_tokens)}},
        }

    def _handle(self, rec: Recorded) -> Reply:
        path = rec.path.split("?", 1)[0]
        if rec.method == "POST" and path == "/v1/chat/completions":
            with self.lock:
                self.normal_calls += 1
            status, body = self.completion(rec.body)
            return Reply(status, body)
        if rec.method == "POST" and path == "/v1/files":
            return self._upload(rec)
        if rec.method == "POST" and path == "/v1/batches":
            return self._create(rec.body)
        if rec.method == "GET" and path == "/v1/batches":
            with self.lock:
                data = [self._view(b) for b in sorted(self.batches.values(), key=lambda b: -b["n"])]
            return Reply(200, {"object": "list", "data": data, "has_more": False,
                               "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
        m = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if rec.method == "GET" and m:
            return self._retrieve(m.group(1))
        m = re.fullmatch(r"/v1/files/([\w-]+)/content", path)
        if rec.method == "GET" and m and m.group(1) in self.files:
            return Reply(200, self.files[m.group(1)], {"content-type": "application/octet-stream"})
        return Reply(404, {"error": {"message": f"no route {rec.method} {path}", "type": "invalid_request_error"}})

    def _upload(self, rec: Recorded) -> Reply:
        raw = rec.body.encode("utf-8") if isinstance(rec.body, str) else json.dumps(rec.body).encode()
        head = f"Content-Type: {rec.headers.get('content-type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True) or b""
        if fields.get("purpose", b"").decode() != "batch" or "file" not in fields:
            return Reply(400, {"error": {"message": "purpose must be 'batch' and a file given"}})
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = fields["file"]
        return Reply(200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                           "filename": "input.jsonl", "purpose": "batch", "status": "processed"})

    def _create(self, body: dict) -> Reply:
        file_id = body.get("input_file_id")
        if file_id not in self.files or body.get("endpoint") != "/v1/chat/completions" \
                or body.get("completion_window") != "24h":
            return Reply(400, {"error": {"message": "bad batch request", "type": "invalid_request_error"}})
        lines = [json.loads(line) for line in self.files[file_id].decode().splitlines() if line.strip()]
        outputs, errors = [], []
        validation = None
        for row in lines:
            request = row["body"]
            if self.models is not None and request.get("model") not in self.models:
                validation = {"code": "model_not_found", "message": f"The model '{request.get('model')}' does not "
                              "exist or you do not have access to it.", "line": 1, "param": "body.model"}
                break
            kind = self.fail(_last_user_text(request.get("messages") or [])) if self.fail else None
            rid = f"batch_req_{len(outputs) + len(errors)}"
            if kind == "expired":
                errors.append({"id": rid, "custom_id": row["custom_id"], "response": None,
                               "error": {"code": "batch_expired", "message": "This request could not be executed "
                                         "before the completion window expired."}})
            elif kind in ("errored", "http_400"):
                errors.append({"id": rid, "custom_id": row["custom_id"], "error": None, "response": {
                    "status_code": 400, "request_id": rid,
                    "body": {"error": {"message": "injected failure", "type": "invalid_request_error"}}}})
            else:
                status, completion = self.completion(request)
                outputs.append({"id": rid, "custom_id": row["custom_id"], "error": None,
                                "response": {"status_code": status, "request_id": rid, "body": completion}})
        with self.lock:
            self.submissions += 1
            self.submitted_requests += len(lines)
            n = len(self.batches) + 1
            batch = {"n": n, "id": f"batch_{n:04d}", "input_file_id": file_id, "metadata": body.get("metadata"),
                     "created_at": int(time.time()), "polls": 0, "total": len(lines), "validation": validation,
                     "failed": len(errors), "output_file_id": None, "error_file_id": None}
            if outputs:
                batch["output_file_id"] = f"file-out-{n}"
                self.files[batch["output_file_id"]] = "".join(json.dumps(o) + "\n" for o in outputs).encode()
            if errors:
                batch["error_file_id"] = f"file-err-{n}"
                self.files[batch["error_file_id"]] = "".join(json.dumps(e) + "\n" for e in errors).encode()
            self.batches[batch["id"]] = batch
            view = self._view(batch)
        return Reply(200, view)

    def _retrieve(self, batch_id: str) -> Reply:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return Reply(404, {"error": {"message": f"No batch found with id '{batch_id}'"}})
            batch["polls"] += 1
            self.polls += 1
            view = self._view(batch)
        return Reply(200, view)

    def _view(self, batch: dict) -> dict:
        running = batch["polls"] <= self.in_progress_polls
        total = batch["total"]
        if batch["validation"] is not None:
            status, counts = "failed", {"total": 0, "completed": 0, "failed": 0}
        elif running:
            done = min(total, batch["polls"] * total // (self.in_progress_polls + 1))
            status, counts = "in_progress", {"total": total, "completed": done, "failed": 0}
        else:
            status, counts = self.final_status, {"total": total, "completed": total - batch["failed"],
                                                 "failed": batch["failed"]}
        ended = status in ("completed", "failed", "expired", "cancelled")
        return {
            "id": batch["id"], "object": "batch", "endpoint": "/v1/chat/completions", "errors":
                {"object": "list", "data": [batch["validation"]]} if batch["validation"] else None,
            "input_file_id": batch["input_file_id"], "completion_window": "24h", "status": status,
            "output_file_id": batch["output_file_id"] if ended else None,
            "error_file_id": batch["error_file_id"] if ended else None,
            "created_at": batch["created_at"], "expires_at": batch["created_at"] + 86400,
            "request_counts": counts, "metadata": batch["metadata"],
        }


class AnthropicBatchServer(_BatchServer):
    """Anthropic's Message Batches endpoints, and messages."""

    def __enter__(self) -> AnthropicBatchServer:
        return self

    def message(self, params: dict) -> tuple[int, dict]:
        if self.models is not None and params.get("model") not in self.models:
            return 404, {"type": "error", "error": {"type": "not_found_error",
                                                    "message": f"model: {params.get('model')}"}}
        system = params.get("system") or ""
        prompt = _last_user_text(params.get("messages") or [])
        text = self.answer(system if isinstance(system, str) else "", prompt)
        return 200, {"id": "msg_" + hashlib.sha256(prompt.encode()).hexdigest()[:12], "type": "message",
                     "role": "assistant", "model": params.get("model"), "content": [{"type": "text", "text": text}],
                     "stop_reason": "end_turn", "stop_sequence": None,
                     "usage": {"input_tokens": tokens_of(str(system) + prompt), "output_tokens": tokens_of(text),
                               "cache_read_input_tokens": self.cached_tokens}}

    def _handle(self, rec: Recorded) -> Reply:
        path = rec.path.split("?", 1)[0]
        if rec.method == "POST" and path == "/v1/messages":
            with self.lock:
                self.normal_calls += 1
            status, body = self.message(rec.body)
            return Reply(status, body)
        if rec.method == "POST" and path == "/v1/messages/batches":
            return self._create(rec.body)
        m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if rec.method == "GET" and m:
            with self.lock:
                batch = self.batches.get(m.group(1))
                if batch is None:
                    return Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": "no batch"}})
                if m.group(2):
                    if batch["polls"] <= self.in_progress_polls:
                        return Reply(404, {"type": "error", "error": {"type": "not_found_error",
                                                                      "message": "results not ready"}})
                    lines = "".join(json.dumps(r) + "\n" for r in batch["results"])
                    return Reply(200, lines, {"content-type": "application/binary"})
                batch["polls"] += 1
                self.polls += 1
                return Reply(200, self._view(batch))
        return Reply(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no route {path}"}})

    def _create(self, body: dict) -> Reply:
        requests = body.get("requests") or []
        ids = [r.get("custom_id") for r in requests]
        if not requests or len(set(ids)) != len(ids) or not all(
                isinstance(i, str) and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids):
            return Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "requests: custom_id must be unique, 1-64 chars"}})
        results = []
        for request in requests:
            params = request["params"]
            kind = self.fail(_last_user_text(params.get("messages") or [])) if self.fail else None
            if kind in ("expired", "canceled"):
                results.append({"custom_id": request["custom_id"], "result": {"type": kind}})
                continue
            status, message = self.message(params) if kind is None else (400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "injected failure"}})
            if status != 200:
                results.append({"custom_id": request["custom_id"], "result": {"type": "errored", "error": message}})
            else:
                results.append({"custom_id": request["custom_id"], "result": {"type": "succeeded", "message": message}})
        results.reverse()  # results come in any order: matched by custom_id
        with self.lock:
            self.submissions += 1
            self.submitted_requests += len(requests)
            n = len(self.batches) + 1
            batch = {"id": f"msgbatch_{n:04d}", "created": datetime.now(timezone.utc), "polls": 0,
                     "results": results}
            self.batches[batch["id"]] = batch
            view = self._view(batch)
        return Reply(200, view)

    def _view(self, batch: dict) -> dict:
        running = batch["polls"] <= self.in_progress_polls
        kinds = [r["result"]["type"] for r in batch["results"]]
        counts = {"processing": len(kinds), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if not running:
            counts = {"processing": 0, **{k: kinds.count(k) for k in ("succeeded", "errored", "canceled", "expired")}}
        created = batch["created"]
        return {
            "id": batch["id"], "type": "message_batch", "processing_status": "in_progress" if running else "ended",
            "request_counts": counts, "created_at": created.isoformat(),
            "expires_at": (created + timedelta(days=1)).isoformat(),
            "ended_at": None if running else datetime.now(timezone.utc).isoformat(),
            "archived_at": None, "cancel_initiated_at": None,
            "results_url": None if running else f"{self.url}/v1/messages/batches/{batch['id']}/results",
        }
