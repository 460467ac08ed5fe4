"""The anthropic provider against a local Messages API (http.server in a thread)."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
from llm_servers import LocalServer, Recorded, Reply

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.pricing import PriceTable
from llmhd_plugins.providers_anthropic import AnthropicProvider

KEY = "sk-ant-test-7c1e9f0b2d4a6e8f"
MODEL = "claude-haiku-4-5"
PRICES = PriceTable.from_dict({"anthropic": {MODEL: {"input": 1.0, "output": 5.0}}})


def parse_score(text: str) -> int:
    m = re.search(r"<s>\s*(\d+)\s*</s>", text)
    if not m or not 1 <= int(m.group(1)) <= 10:
        raise ValueError(f"no <s>1..10</s> in {text[:40]!r}")
    return int(m.group(1))


def request(i: int, schema: dict | None = None) -> LLMRequest:
    return LLMRequest(task="score", template="test/score", template_hash="h1", system="You are a book editor.",
                      prompt=f"Rate item {i}. Answer <s>N</s>.", params={"max_tokens": 16, "temperature": 0},
                      response_schema=schema, parse=parse_score)


def message(text: str, tokens_in: int = 12, tokens_out: int = 3, tool: dict | None = None) -> dict:
    content = [{"type": "tool_use", "id": "tu_1", "name": "answer", "input": tool}] if tool is not None \
        else [{"type": "text", "text": text}]
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}


def error(status: int, kind: str, headers: dict | None = None) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": f"{kind} for testing"}}, headers or {})


class Script:
    """Replies in order, then the default; records what was asked."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.replies = list(replies)
        self.default = default or Reply(200, message("<s>7</s>"))

    def __call__(self, rec: Recorded) -> Reply:
        return self.replies.pop(0) if self.replies else self.default


def client(server: LocalServer, tmp_path: Path, **kw) -> LLMClient:
    provider = AnthropicProvider(model=MODEL, base_url=server.url, api_key=KEY)
    kw.setdefault("backoff_base", 0.01)
    return LLMClient(provider, tmp_path / "cache", prices=PRICES, **kw)


def test_success_usage_and_cost(tmp_path):
    with LocalServer(Script()) as server, client(server, tmp_path) as c:
        [r] = c.run([request(1)])
        sent = server.requests[0]
    assert r.ok and r.value == 7 and not r.cached
    assert (r.input_tokens, r.output_tokens, r.usage_reported) == (12, 3, True)
    assert r.cost == pytest.approx((12 * 1.0 + 3 * 5.0) / 1e6)
    assert sent.path == "/v1/messages"
    assert KEY in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert sent.body["system"] == "You are a book editor."
    assert sent.body["max_tokens"] == 16 and sent.body["model"] == MODEL
    [row] = read_ledger(tmp_path / "cache")
    assert (row.provider, row.model, row.calls, row.input_tokens, row.output_tokens) == ("anthropic", MODEL, 1, 12, 3)


def test_429_honours_retry_after_and_is_paid_once(tmp_path):
    script = Script(error(429, "rate_limit_error", {"retry-after": "0.5"}))
    with LocalServer(script) as server, client(server, tmp_path) as c:
        t0 = time.monotonic()
        [r] = c.run([request(1)])
        took = time.monotonic() - t0
        assert len(server.requests) == 2
    assert r.ok and took >= 0.5  # waited what the server asked, not the 10 ms backoff
    assert c.stats.retries == 1 and c.stats.calls == 1
    assert read_ledger(tmp_path / "cache")[0].calls == 1


def test_529_and_5xx_then_success(tmp_path):
    script = Script(error(529, "overloaded_error"), error(500, "api_error"), error(503, "api_error"))
    with LocalServer(script) as server, client(server, tmp_path) as c:
        [r] = c.run([request(1)])
        assert len(server.requests) == 4
    assert r.ok and r.value == 7 and c.stats.retries == 3


def test_retries_exhausted_fail_only_that_request(tmp_path):
    script = Script(*[error(500, "api_error")] * 3)
    with LocalServer(script) as server, client(server, tmp_path, max_retries=2, concurrency=1) as c:
        first, second = c.run([request(1), request(2)])
    assert not first.ok and "HTTP 500" in first.error
    assert second.ok and c.stats.failures == 1


def test_malformed_content_reask_then_failure(tmp_path):
    script = Script(Reply(200, message("I think it's good")), Reply(200, message("Seven!")))
    with LocalServer(script) as server, client(server, tmp_path) as c:
        [r] = c.run([request(1)])
        reask = server.requests[1].body["messages"][0]["content"]
    assert not r.ok and r.error.startswith("malformed answer after one re-ask")
    assert "did not follow the required output format" in reask
    assert c.stats.calls == 2 and c.stats.failures == 1 and c.stats.reasks == 1
    [row] = read_ledger(tmp_path / "cache")
    assert (row.calls, row.failures) == (2, 1)
    # A rerun pays nothing: both answers (first and re-ask) are cached; the failure is counted again.
    with LocalServer(Script()) as server, client(server, tmp_path) as c:
        [r] = c.run([request(1)])
        assert server.requests == []
    assert not r.ok and c.stats.cache_hits == 2


def test_malformed_then_reask_succeeds(tmp_path):
    script = Script(Reply(200, message("good book")), Reply(200, message("<s>9</s>", 20, 3)))
    with LocalServer(script) as server, client(server, tmp_path) as c:
        [r] = c.run([request(1)])
    assert r.ok and r.value == 9 and r.reasked
    assert r.input_tokens == 32 and r.output_tokens == 6


def test_structured_output_as_forced_tool(tmp_path):
    schema = {"type": "object", "properties": {"score": {"enum": list(range(1, 11))}}, "required": ["score"]}
    req = request(1, schema)
    req.parse = lambda text: json.loads(text)["score"]
    with LocalServer(Script(default=Reply(200, message("", tool={"score": 4})))) as server, \
            client(server, tmp_path) as c:
        [r] = c.run([req])
        body = server.requests[0].body
    assert r.ok and r.value == 4
    assert body["tool_choice"] == {"type": "tool", "name": "answer"}
    assert body["tools"][0]["input_schema"] == schema


def test_bad_key_stops_the_run(tmp_path):
    with LocalServer(Script(default=error(401, "authentication_error"))) as server, \
            client(server, tmp_path) as c, pytest.raises(LLMHDError, match="HTTP 401"):
        c.run([request(i) for i in range(5)])


def test_key_never_stored_or_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    script = Script(error(429, "rate_limit_error", {"retry-after": "0"}), Reply(200, message("nope")),
                    error(400, "invalid_request_error"))
    with LocalServer(script) as server, client(server, tmp_path) as c:
        c.run([request(1), request(2)])
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text


def test_cache_reads_and_writes_count_as_input_at_their_prices(tmp_path):
    """Anthropic reports cache reads and writes apart from input_tokens: llmhd counts all three as
    input tokens and prices reads at cached_input, writes at cache_write."""
    body = message("<s>7</s>", tokens_in=200, tokens_out=3)
    body["usage"].update(cache_read_input_tokens=1000, cache_creation_input_tokens=500)
    prices = PriceTable.from_dict({"anthropic": {MODEL: {"input": 1.0, "output": 5.0, "cached_input": 0.1,
                                                         "cache_write": 1.25}}})
    with LocalServer(Script(Reply(200, body))) as server:
        provider = AnthropicProvider(model=MODEL, base_url=server.url, api_key=KEY)
        with LLMClient(provider, tmp_path / "cache", prices=prices) as c:
            [r] = c.run([request(1)])
    assert r.ok and (r.input_tokens, r.output_tokens) == (1700, 3)
    assert r.cost == pytest.approx((200 * 1.0 + 1000 * 0.1 + 500 * 1.25 + 3 * 5.0) / 1e6)
    assert read_ledger(tmp_path / "cache")[0].input_tokens == 1700
