"""The client layer (cache, ledger, budget, retries, parsing, settings) over real HTTP.

The provider is the real openai provider talking to a local OpenAI-compatible http.server
whose replies each test scripts; the llama.cpp-backed tests live in test_openai_server.py.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import pytest
from llm_servers import LocalServer, Recorded, Reply, kill_midway, openai_completion

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest, LLMResponse, Provider
from llmhd_cli.llm.cache import AnswerStore, cache_key
from llmhd_cli.llm.client import LLMClient, expected_score, make_client
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.pricing import PriceTable, load_prices
from llmhd_cli.llm.settings import resolve_settings
from llmhd_cli.llm.tokens import estimate_tokens
from llmhd_plugins.providers_openai import OpenAIProvider

KEY = "sk-test-0f1e2d3c4b5a69788796a5b4"
PRICES = PriceTable.from_dict({"openai": {"local": {"input": 1000.0, "output": 2000.0}}})


def parse_score(text: str) -> int:
    text = text.strip()
    if not (text.startswith("<s>") and text.endswith("</s>") and text[3:-4].isdigit()):
        raise ValueError(f"not <s>N</s>: {text[:30]!r}")
    return int(text[3:-4])


def request(i: int, **kw) -> LLMRequest:
    kw.setdefault("params", {"max_tokens": 5, "temperature": 0})
    kw.setdefault("parse", parse_score)
    return LLMRequest(task="score", template="t/score", template_hash="abc", system="sys",
                      prompt=f"item {i}", **kw)


class Counting:
    """An OpenAI-compatible handler: scripted replies first, then '<s>7</s>'; tracks concurrency."""

    def __init__(self, *replies: Reply, delay: float = 0.0, usage: bool = True) -> None:
        self.replies = list(replies)
        self.delay = delay
        self.usage = usage
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, rec: Recorded) -> Reply:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            scripted = self.replies.pop(0) if self.replies else None
        try:
            time.sleep(self.delay)
            if scripted is not None:
                return scripted
            body = openai_completion("<s>7</s>", prompt_tokens=10, completion_tokens=3)
            if not self.usage:
                del body["usage"]
            return Reply(200, body)
        finally:
            with self.lock:
                self.active -= 1


def make(server: LocalServer, cache: Path, **kw) -> LLMClient:
    provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key=kw.pop("api_key", KEY))
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("prices", PRICES)
    return LLMClient(provider, cache, **kw)


def chat_calls(server: LocalServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


def test_cache_hit_costs_nothing_and_refresh_overwrites(tmp_path):
    with LocalServer(Counting()) as server:
        with make(server, tmp_path) as c:
            first = c.run([request(i) for i in range(3)])
        assert chat_calls(server) == 3 and all(r.ok and not r.cached for r in first)
        stored = AnswerStore(tmp_path).get(cache_key("openai", "local", request(0)))
        assert (stored.text, stored.parsed, stored.input_tokens, stored.output_tokens) == ("<s>7</s>", 7, 10, 3)
        with make(server, tmp_path) as c:
            again = c.run([request(i) for i in range(3)])
        assert chat_calls(server) == 3  # nothing sent
        assert all(r.cached and r.cost == 0 and r.value == 7 for r in again)
        assert (c.stats.calls, c.stats.cache_hits, c.stats.cost) == (0, 3, 0)
        with make(server, tmp_path, refresh=True) as c:
            c.run([request(0)])
        assert chat_calls(server) == 4
    [row] = read_ledger(tmp_path)
    assert (row.calls, row.cache_hits, row.input_tokens, row.output_tokens) == (4, 3, 40, 12)
    assert row.cost == pytest.approx(4 * (10 * 1000 + 3 * 2000) / 1e6)


def test_key_covers_params_schema_and_logprobs(tmp_path):
    with LocalServer(Counting()) as server, make(server, tmp_path) as c:
        c.run([request(1), request(1, params={"max_tokens": 6}), request(1, want_logprobs=True),
               request(1, response_schema={"type": "object"})])
        assert chat_calls(server) == 4


def test_duplicates_in_one_batch_are_sent_once(tmp_path):
    with LocalServer(Counting(delay=0.2)) as server, make(server, tmp_path, concurrency=4) as c:
        results = c.run([request(1)] * 4)
        assert chat_calls(server) == 1
    assert all(r.ok for r in results) and c.stats.calls == 1 and c.stats.cache_hits == 3


def test_concurrency_is_bounded(tmp_path):
    handler = Counting(delay=0.2)
    with LocalServer(handler) as server, make(server, tmp_path, concurrency=3) as c:
        t0 = time.monotonic()
        seen: list[int] = []
        results = c.run([request(i) for i in range(9)], on_result=lambda r: seen.append(r.value))
        took = time.monotonic() - t0
    assert handler.peak == 3 and took < 9 * 0.2 * 0.6
    assert [r.request.prompt for r in results] == [f"item {i}" for i in range(9)]  # input order
    assert seen == [7] * 9


def test_budget_stops_sending_and_keeps_what_was_paid(tmp_path):
    # Estimate per call: 5 tokens of prompt+overhead estimate... computed, not guessed:
    with LocalServer(Counting()) as server:
        with make(server, tmp_path, concurrency=1) as c:
            estimate = c.estimate_cost(request(0))
            actual = (10 * 1000 + 3 * 2000) / 1e6
            assert estimate > actual
            budget = 2 * actual + estimate  # room for 3 calls, not a 4th
            with make(server, tmp_path / "b", concurrency=1, max_cost=budget) as c2:
                results = c2.run([request(i) for i in range(6)])
        assert chat_calls(server) == 3
    assert [r.ok for r in results] == [True] * 3 + [False] * 3
    assert {r.error for r in results[3:]} == {"budget"}
    assert c2.stats.budget_exhausted and c2.stats.budget_skipped == 3 and c2.stats.failures == 0
    assert c2.stats.cost == pytest.approx(3 * actual) and c2.stats.cost <= budget
    # Cached answers are still served once the budget is spent: they cost nothing.
    with LocalServer(Counting()) as server, make(server, tmp_path / "b", max_cost=0.0) as c3:
        results = c3.run([request(0), request(5)])
        assert chat_calls(server) == 0
    assert results[0].ok and results[0].cached and results[1].error == "budget"


def test_unreachable_server_raises_after_storing_what_was_paid(tmp_path):
    server = LocalServer(Counting())
    with make(server, tmp_path, concurrency=1) as c:
        c.run([request(0), request(1)])
    server.close()  # a new client: the old one's keep-alive connection would outlive the listener
    with make(server, tmp_path, concurrency=1, max_retries=2) as c:
        t0 = time.monotonic()
        with pytest.raises(LLMHDError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 after 3 tries"):
            c.run([request(i) for i in range(4)])
        assert time.monotonic() - t0 < 5
    assert c.stats.cache_hits == 2 and c.stats.calls == 0 and c.stats.retries == 2


def test_retry_after_503_then_success_is_paid_once(tmp_path):
    handler = Counting(Reply(503, {"error": {"message": "busy"}}, {"retry-after": "0.3"}),
                       Reply(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "100"}))
    with LocalServer(handler) as server, make(server, tmp_path) as c:
        t0 = time.monotonic()
        [r] = c.run([request(1)])
        assert time.monotonic() - t0 >= 0.4
        assert chat_calls(server) == 3
    assert r.ok and c.stats.retries == 2 and c.stats.calls == 1
    assert read_ledger(tmp_path)[0].calls == 1


def test_bad_request_fails_one_request_not_the_run(tmp_path):
    handler = Counting(Reply(400, {"error": {"message": "bad"}}))
    with LocalServer(handler) as server, make(server, tmp_path, concurrency=1) as c:
        bad, good = c.run([request(1), request(2)])
    assert not bad.ok and "HTTP 400" in bad.error and good.ok
    assert read_ledger(tmp_path)[0].failures == 1


def test_parser_crash_and_malformed_are_failures(tmp_path):
    def broken(text: str) -> int:
        raise KeyError("bug")

    handler = Counting(Reply(200, openai_completion("seven")), Reply(200, openai_completion("7 of 10")))
    with LocalServer(handler) as server, make(server, tmp_path, concurrency=1) as c:
        malformed, crashed = c.run([request(1), LLMRequest("score", "t/score", "abc", "sys", "x", parse=broken)])
    assert malformed.error.startswith("malformed answer after one re-ask") and malformed.text == "7 of 10"
    assert crashed.error == "parser error"
    assert c.stats.failures == 2 and c.stats.reasks == 1


def test_usage_not_reported_is_estimated(tmp_path):
    with LocalServer(Counting(usage=False)) as server, make(server, tmp_path) as c:
        [r] = c.run([request(1)])
    assert not r.usage_reported
    assert r.output_tokens == estimate_tokens("<s>7</s>") and r.input_tokens > 0
    assert read_ledger(tmp_path)[0].estimated_calls == 1


def test_request_body_for_schema_and_logprobs(tmp_path):
    schema = {"type": "object", "properties": {"score": {"enum": list(range(1, 11))}}, "required": ["score"]}
    body = openai_completion('{"score": 7}')
    body["choices"][0]["logprobs"] = {"content": [
        {"token": "{", "logprob": 0.0, "bytes": None, "top_logprobs": [{"token": "{", "logprob": 0.0, "bytes": None}]},
        {"token": "7", "logprob": math.log(0.5), "bytes": None, "top_logprobs": [
            {"token": "7", "logprob": math.log(0.5), "bytes": None},
            {"token": "9", "logprob": math.log(0.5), "bytes": None}]}]}
    with LocalServer(Counting(Reply(200, body))) as server, make(server, tmp_path) as c:
        [r] = c.run([request(1, response_schema=schema, want_logprobs=True, parse=None)])
        sent = server.requests[0].body
    assert sent["response_format"] == {"type": "json_object", "schema": schema}
    assert sent["logprobs"] is True and sent["top_logprobs"] == 10 and sent["max_tokens"] == 5
    assert r.value == '{"score": 7}' and r.tokens == ["{", "7"]
    assert expected_score(r.logprobs, tokens=r.tokens) == pytest.approx(8.0)


def test_expected_score():
    lp = math.log
    assert expected_score(None) is None
    assert expected_score([{"a": 0.0}]) is None
    assert expected_score([{"<s>": 0.0}, {"3": lp(0.25), "5": lp(0.25), " x": lp(0.5)}]) == pytest.approx(4.0)
    # "10" written as "1" + "0": the next position's P("0") moves mass from 1 to 10.
    dist = [{"1": lp(0.5), "2": lp(0.5)}, {"0": lp(0.5), "</": lp(0.5)}]
    assert expected_score(dist, tokens=["1", "0"]) == pytest.approx(0.25 * 1 + 0.25 * 10 + 0.5 * 2)
    assert expected_score([{" 10": 0.0}]) == pytest.approx(10.0)


def test_api_key_never_reaches_the_cache(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    handler = Counting(Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}))
    with LocalServer(handler) as server:
        with make(server, tmp_path) as c, pytest.raises(LLMHDError) as info:
            c.run([request(1)])
        assert KEY not in str(info.value) and "***" in str(info.value)
        with make(server, tmp_path) as c:
            c.run([request(i) for i in range(3)])
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(KEY.encode() in p.read_bytes() for p in files)
    assert KEY not in caplog.text


def test_killed_run_resumes_without_paying_twice(tmp_path):
    n = 12
    with LocalServer(Counting(delay=0.15)) as server:
        kill_midway(server.url + "/v1", tmp_path, n, after=4)
        time.sleep(0.3)  # let calls the dead child left in flight finish server-side
        sent_before = chat_calls(server)
        provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="k")
        with LLMClient(provider, tmp_path, prices=PriceTable.from_dict({})) as c:
            stored = len(c.store)
            results = c.run([LLMRequest("score", "t/score", "abc", "sys", f"item {i}", params={"max_tokens": 5})
                             for i in range(n)])
        sent_after = chat_calls(server) - sent_before
    assert 4 <= stored < n
    assert sent_after == n - stored and c.stats.calls == n - stored and c.stats.cache_hits == stored
    assert all(r.ok for r in results)


# ---------------------------------------------------------------- settings, prices, registry


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "LLMHD_PROVIDER",
                "LLMHD_MODEL", "LLMHD_BASE_URL", "LLMHD_LLM_CACHE", "LLMHD_CONCURRENCY", "LLMHD_MAX_COST",
                "LLMHD_PRICES", "LLMHD_MAX_RETRIES", "LLMHD_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config.toml"
    monkeypatch.setenv("LLMHD_CONFIG", str(config))
    return config


def test_missing_key_names_the_env_var(clean_env):
    with pytest.raises(LLMHDError, match="OPENAI_API_KEY"):
        resolve_settings(provider="openai")
    with pytest.raises(LLMHDError, match="ANTHROPIC_API_KEY"):
        resolve_settings(provider="anthropic")
    assert resolve_settings(provider="openai", base_url="http://127.0.0.1:1/v1", model="anything").api_key is None


def test_unknown_provider_and_model_list_known_ones(clean_env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(LLMHDError, match=r"unknown provider 'nope' \(known: .*anthropic.*openai"):
        resolve_settings(provider="nope")
    with pytest.raises(LLMHDError, match=r"unknown model 'gpt-9'.*known: gpt-4o-mini"):
        resolve_settings(provider="openai", model="gpt-9")


def test_settings_precedence_flag_env_config(clean_env, monkeypatch, tmp_path):
    clean_env.write_text('[llm]\nprovider = "openai"\nmodel = "gpt-4o"\nconcurrency = 3\nmax_cost = 2.5\n'
                         f'cache_dir = "{tmp_path / "c"}"\n[llm.api_keys]\nopenai = "{KEY}"\n')
    s = resolve_settings()
    assert (s.provider, s.model, s.concurrency, s.max_cost, s.api_key) == ("openai", "gpt-4o", 3, 2.5, KEY)
    assert s.cache_dir == tmp_path / "c" and KEY not in repr(s)
    monkeypatch.setenv("LLMHD_MODEL", "gpt-4.1")
    monkeypatch.setenv("LLMHD_CONCURRENCY", "7")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    s = resolve_settings()
    assert (s.model, s.concurrency, s.api_key) == ("gpt-4.1", 7, "sk-env")
    s = resolve_settings(model="gpt-4o-mini", concurrency=2)
    assert (s.model, s.concurrency) == ("gpt-4o-mini", 2)
    monkeypatch.setenv("LLMHD_CONCURRENCY", "zero")
    with pytest.raises(LLMHDError, match="LLMHD_CONCURRENCY: expected a number"):
        resolve_settings()


def test_make_client_defaults_cache_to_workspace(clean_env, tmp_path):
    s = resolve_settings(provider="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with make_client(s, tmp_path) as c:
        assert c.cache_dir == tmp_path / "llm-cache" and c.provider.model == "m"


def test_price_override_file(tmp_path):
    override = tmp_path / "prices.toml"
    override.write_text('[openai]\n"gpt-4o-mini" = { input = 1.0, output = 2.0 }\n[mine]\n"x" = { input = 3, output = 4 }\n')
    table = load_prices(override)
    assert table.cost("openai", "gpt-4o-mini", 10**6, 10**6) == pytest.approx(3.0)
    assert table.cost("mine", "x", 10**6, 0) == pytest.approx(3.0)
    assert table.cost("openai", "gpt-4o", 10**6, 0) == pytest.approx(2.5)  # built-in kept
    assert table.cost("openai", "whatever-local", 10**6, 10**6) == 0.0  # "*" entry
    override.write_text('[openai]\n"m" = { input = "a lot" }\n')
    with pytest.raises(LLMHDError, match="needs numeric"):
        load_prices(override)


def test_providers_command_lists_openai_and_anthropic():
    from click.testing import CliRunner

    from llmhd_cli.cli import _build

    result = CliRunner().invoke(_build(), ["providers"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "OPENAI_API_KEY" in result.output and "ANTHROPIC_API_KEY" in result.output
    assert "gpt-4o-mini" in result.output


class Doubler(Provider):
    """A tiny offline provider (like embed/oracle): computes its value from the variables."""

    name = "doubler"
    generative = False
    needs_key = False

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.calls = 0

    def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls += 1
        if request.variables.get("x") is None:
            raise LLMHDError("doubler: model files missing (run `llmhd fetch`)")
        return LLMResponse(text="", input_tokens=0, output_tokens=0, usage_reported=True, model="d",
                           value=request.variables["x"] * 2)


def test_offline_provider_keys_on_variables_and_skips_parsing(tmp_path):
    def req(x):
        return LLMRequest("score", "t/score", "abc", "sys", "same prompt", variables={"x": x}, parse=parse_score)

    provider = Doubler()
    with LLMClient(provider, tmp_path) as c:
        results = c.run([req(1), req(2), req(1)])
        assert [r.value for r in results] == [2, 4, 2] and provider.calls == 2
        with pytest.raises(LLMHDError, match="model files missing"):
            c.run([req(None)])


def test_uncacheable_provider_is_counted_not_stored(tmp_path):
    provider = Doubler()
    provider.cacheable = False
    with LLMClient(provider, tmp_path) as c:
        c.run([LLMRequest("score", "t/s", "h", "", "p", variables={"x": 3})] * 2)
    assert provider.calls == 2 and read_ledger(tmp_path)[0].calls == 2


def test_two_processes_share_one_cache_and_ledger(tmp_path):
    import subprocess
    import sys

    from llm_servers import CHILD

    with LocalServer(Counting(delay=0.05)) as server:
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, server.url + "/v1", str(tmp_path), "10"],
                                  stdout=subprocess.DEVNULL) for _ in range(2)]
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        sent = chat_calls(server)
    [row] = read_ledger(tmp_path)
    # Whatever the interleaving, the ledger agrees with the server and every answer is stored once.
    assert 10 <= sent <= 20 and row.calls == sent and row.calls + row.cache_hits == 20
    assert len(AnswerStore(tmp_path)) == 10


def test_cached_input_tokens_are_priced_at_the_cached_price(tmp_path):
    """OpenAI reports the prompt-cache part of prompt_tokens (usage.prompt_tokens_details.cached_tokens);
    those tokens cost the price table's cached_input, the rest the input price."""
    prices = PriceTable.from_dict({"openai": {"local": {"input": 1000.0, "output": 2000.0, "cached_input": 100.0}}})
    body = openai_completion("<s>7</s>", prompt_tokens=1500, completion_tokens=3)
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 1024}
    with LocalServer(Counting(Reply(200, body))) as server, make(server, tmp_path, prices=prices) as c:
        [r] = c.run([request(1)])
        [again] = c.run([request(1)])  # a cache hit keeps the stored answer's counts
    assert r.ok and (r.input_tokens, r.output_tokens) == (1500, 3)
    assert r.cost == pytest.approx((476 * 1000.0 + 1024 * 100.0 + 3 * 2000.0) / 1e6)
    assert again.cached and again.cost == 0
    [row] = read_ledger(tmp_path)
    assert row.input_tokens == 1500 and row.cost == pytest.approx(r.cost)
    assert AnswerStore(tmp_path).get(make_key(request(1))).cached_input_tokens == 1024


def make_key(req: LLMRequest) -> str:
    return cache_key("openai", "local", req)


def test_cache_prices_in_the_table_and_their_checks(tmp_path):
    table = load_prices()
    assert table.cost("openai", "gpt-4o-mini", 2000, 0, cached_input_tokens=1024) == pytest.approx(
        (976 * 0.15 + 1024 * 0.075) / 1e6)
    assert table.cost("anthropic", "claude-haiku-4-5", 3000, 100, cached_input_tokens=1000,
                      cache_write_tokens=1500) == pytest.approx((500 * 1.0 + 1000 * 0.10 + 1500 * 1.25 + 100 * 5.0) / 1e6)
    # A model without cache prices charges cached tokens the input price; counts are capped by the input.
    assert table.cost("openai", "gpt-3.5-turbo", 1000, 0, cached_input_tokens=5000) == pytest.approx(1000 * 0.5 / 1e6)
    override = tmp_path / "prices.toml"
    for bad in ('"x"', "-1", "nan", "true"):
        override.write_text(f'[openai]\n"m" = {{ input = 1, output = 2, cached_input = {bad} }}\n')
        with pytest.raises(LLMHDError, match=r"openai\.m: 'cached_input' must be a finite, not negative number"):
            load_prices(override)


@pytest.mark.parametrize(("status", "fatal", "retryable"), [
    (401, True, False), (403, True, False), (404, True, False), (400, False, False), (422, False, False),
    (408, False, True), (409, False, True), (429, False, True), (500, False, True), (503, False, True),
])
def test_http_status_to_provider_error(status: int, fatal: bool, retryable: bool) -> None:
    """One mapping for every provider (llm.http.status_error): what stops a run, what is retried."""
    from llmhd_cli.llm.http import status_error

    error = status_error(f"x: HTTP {status}", status, {"retry-after": "2"}, key="X_API_KEY")
    assert (error.fatal, error.retryable) == (fatal, retryable)
    assert ("X_API_KEY" in str(error)) == (status in (401, 403))
    assert ("--base-url" in str(error)) == (status == 404)
    if retryable:
        assert error.retry_after == 2.0
