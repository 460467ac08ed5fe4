"""Several runs on one cache, and providers that answer garbage.

- Two real processes on one cache dir pay for each prompt once: a process waits for an answer
  another one is fetching (`llmhd_cli.llm.claims`), and a holder killed with SIGKILL mid-call
  does not block the other for long (its claim is dead: pid gone here, lease run out elsewhere).
- An HTTP 200 whose body is not JSON, or is JSON without the expected fields, is one counted
  failure of its request (openai and anthropic providers), never a traceback; a summarize in
  which every call failed is a one-line error, a partial failure says how many failed.

The servers are the local HTTP servers of llm_servers.py; the clients run in child processes.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import run_cli, write_text_dataset
from llm_servers import LocalServer, Recorded, Reply, openai_completion

from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.claims import CLAIMS_FILE, ClaimStore
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.pricing import PriceTable
from llmhd_cli.llm.settings import resolve_settings
from llmhd_cli.summarize import SummarizeOptions, summarize
from llmhd_plugins.providers_anthropic import AnthropicProvider
from llmhd_plugins.providers_openai import OpenAIProvider

FREE = PriceTable.from_dict({})

# One client run in a child process: prints "ready", waits for a line on stdin (so two children
# start together), answers the prompts, prints one JSON line of its stats.
CHILD = """
import json, sys
from pathlib import Path
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.pricing import PriceTable
from llmhd_plugins.providers_openai import OpenAIProvider
url, cache, n, concurrency = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
provider = OpenAIProvider(model="local", base_url=url, api_key="k")
client = LLMClient(provider, cache, concurrency=concurrency, prices=PriceTable.from_dict({}))
reqs = [LLMRequest("score", "t/score", "abc", "sys", f"item {i}", params={"max_tokens": 5}) for i in range(n)]
print("ready", flush=True)
sys.stdin.readline()
results = client.run(reqs, on_result=lambda r: print("done", flush=True))
client.close()
s = client.stats
print(json.dumps({"ok": sum(r.ok for r in results), "calls": s.calls, "hits": s.cache_hits,
                  "waits": s.claim_waits}), flush=True)
"""


class PerPrompt:
    """An OpenAI-compatible handler counting chat calls per prompt; ``hold`` blocks chosen prompts."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.hold: dict[str, threading.Event] = {}  # prompt -> released when set (first call only)
        self.lock = threading.Lock()

    def __call__(self, rec: Recorded) -> Reply:
        prompt = rec.body["messages"][-1]["content"]
        with self.lock:
            self.calls[prompt] += 1
            event = self.hold.pop(prompt, None)
        if event is not None:
            event.wait(60)
        time.sleep(self.delay)
        return Reply(200, openai_completion("<s>7</s>"))


def child(url: str, cache: Path, n: int, concurrency: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(cache), str(n), str(concurrency)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def finish(proc: subprocess.Popen, timeout: float = 60) -> dict:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_on_one_cache_pay_each_prompt_once(tmp_path):
    n, concurrency = 16, 4
    handler = PerPrompt(delay=0.4)  # slow enough that the two runs overlap all the way
    with LocalServer(handler) as server:
        url = server.url + "/v1"
        first, second = child(url, tmp_path, n, concurrency), child(url, tmp_path, n, concurrency)
        go(first)
        go(second)
        a, b = finish(first), finish(second)
    assert a["ok"] == b["ok"] == n
    total = sum(handler.calls.values())
    assert len(handler.calls) == n
    assert total <= n + concurrency, handler.calls  # without claims: about 2n
    assert a["calls"] + b["calls"] == total
    assert a["waits"] + b["waits"] >= 1 and a["hits"] + b["hits"] >= n - concurrency
    [row] = read_ledger(tmp_path)
    assert row.calls == total


@pytest.mark.slow
def test_a_holder_killed_mid_call_does_not_block_the_other_process(tmp_path):
    handler = PerPrompt()
    release = handler.hold["item 0"] = threading.Event()
    with LocalServer(handler) as server:
        url = server.url + "/v1"
        holder = child(url, tmp_path, 1, 1)
        go(holder)
        deadline = time.monotonic() + 20
        while handler.calls["item 0"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler.calls["item 0"] == 1  # the holder is mid-call and holds the claim
        waiter = child(url, tmp_path, 1, 1)
        go(waiter)
        time.sleep(1.5)
        assert waiter.poll() is None and handler.calls["item 0"] == 1  # waits, sends nothing
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        stats = finish(waiter, timeout=20)
        took = time.monotonic() - killed
        release.set()
        holder.stdout.close()
        holder.stdin.close()
    assert stats == {"ok": 1, "calls": 1, "hits": 0, "waits": 1}
    assert handler.calls["item 0"] == 2
    assert took < 10  # the dead pid is seen at once, long before the 30 s lease runs out


def test_a_claim_from_another_host_expires_with_its_lease(tmp_path):
    # A claim written by a process elsewhere (no pid to check) holds until its lease runs out.
    handler = PerPrompt()
    with LocalServer(handler) as server:
        provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="k")
        with LLMClient(provider, tmp_path, prices=FREE) as client:
            key = client.cache_key_for(LLMRequest("score", "t/score", "abc", "sys", "item 0", params={"max_tokens": 5}))
            with sqlite3.connect(tmp_path / CLAIMS_FILE) as db:
                db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                           (key, "elsewhere:1:x", "some-other-host", 1, time.time() + 1.5))
            start = time.monotonic()
            [result] = client.run([LLMRequest("score", "t/score", "abc", "sys", "item 0", params={"max_tokens": 5})])
            waited = time.monotonic() - start
            assert client.claims.takeovers == 1
    assert result.ok and handler.calls["item 0"] == 1
    assert 1.0 < waited < 5
    assert client.stats.claim_waits == 1


def test_a_live_holder_that_fails_releases_and_the_waiter_fetches(tmp_path):
    # Another client (as a second process would) holds the claim; when it gives the claim up
    # without an answer, the waiter asks itself; when it stores one, the waiter reads it.
    handler = PerPrompt()
    request = LLMRequest("score", "t/score", "abc", "sys", "item 0", params={"max_tokens": 5})
    with LocalServer(handler) as server:
        provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="k")
        other = ClaimStore(tmp_path)
        with LLMClient(provider, tmp_path, prices=FREE) as client:
            key = client.cache_key_for(request)
            assert other.acquire(key)
            threading.Timer(0.5, other.release, (key,)).start()
            [result] = client.run([request])
        other.close()
    assert result.ok and not result.cached and handler.calls["item 0"] == 1
    assert client.stats.claim_waits == 1


def test_a_waiter_reads_the_answer_another_client_stored(tmp_path):
    # Two clients in one process share nothing but the cache dir, as two processes would.
    handler = PerPrompt(delay=1.0)
    request = LLMRequest("score", "t/score", "abc", "sys", "item 0", params={"max_tokens": 5})
    with LocalServer(handler) as server:
        url = server.url + "/v1"
        with LLMClient(OpenAIProvider(model="local", base_url=url, api_key="k"), tmp_path, prices=FREE) as first, \
                LLMClient(OpenAIProvider(model="local", base_url=url, api_key="k"), tmp_path, prices=FREE) as second:
            results: list = []
            worker = threading.Thread(target=lambda: results.extend(first.run([request])))
            worker.start()
            while handler.calls["item 0"] == 0:
                time.sleep(0.01)
            [waited] = second.run([request])
            worker.join()
    assert handler.calls["item 0"] == 1 and results[0].ok and not results[0].cached
    assert waited.ok and waited.cached and waited.value == results[0].value
    assert (second.stats.calls, second.stats.cache_hits, second.stats.claim_waits) == (0, 1, 1)


def test_the_heartbeat_keeps_a_claim_and_its_lease_runs_out_without_one(tmp_path):
    holder = ClaimStore(tmp_path, lease=0.5, heartbeat=0.1)
    other = ClaimStore(tmp_path, lease=0.5, heartbeat=0.1)  # same pid: only the lease can free the claim
    assert holder.acquire("k")
    time.sleep(1.2)
    assert not other.acquire("k")  # renewed all along
    holder._stop.set()  # the holder hangs: no more heartbeats, the claim stays in the table
    holder._beat.join()
    time.sleep(0.8)
    assert other.acquire("k") and other.takeovers == 1
    other.close()
    holder.close()


# ------------------------------------------------------------------------------ garbage answers


GARBAGE = [
    pytest.param(Reply(200, "<html><body>Welcome to nginx!</body></html>", {"content-type": "text/html"}),
                 "not a", id="html-page"),
    pytest.param(Reply(200, "<html>oops</html>"), "not JSON", id="html-as-json"),
    pytest.param(Reply(200, ""), "not JSON", id="empty-body"),
    pytest.param(Reply(200, [1, 2, 3]), "not a", id="json-list"),
    pytest.param(Reply(200, {"id": "x", "object": "thing"}), "without", id="json-without-fields"),
    pytest.param(Reply(200, {"choices": [{"message": {"content": 5}}], "content": [{"type": "text", "text": 5}]}),
                 "not text", id="content-not-text"),
]


@pytest.mark.parametrize("provider_cls", [OpenAIProvider, AnthropicProvider], ids=["openai", "anthropic"])
@pytest.mark.parametrize("reply,words", GARBAGE)
def test_a_200_that_is_not_an_answer_is_a_counted_failure(tmp_path, caplog, provider_cls, reply, words):
    with LocalServer(lambda rec: reply) as server:
        base = server.url + ("/v1" if provider_cls is OpenAIProvider else "")
        model = "local" if provider_cls is OpenAIProvider else "claude-haiku-4-5"
        provider = provider_cls(model=model, base_url=base, api_key="sk-k")
        with caplog.at_level(logging.INFO), LLMClient(provider, tmp_path, prices=FREE, backoff_base=0.01) as client:
            results = client.run([LLMRequest("score", "t/score", "abc", "sys", f"item {i}", params={"max_tokens": 5},
                                              parse=int) for i in range(3)])
        assert len(server.requests) == 3  # not retried: the call may have been paid for
    assert all(not r.ok and "HTTP 200 with" in r.error and words in r.error for r in results), results[0].error
    assert (client.stats.failures, client.stats.calls, client.stats.retries) == (3, 0, 0)
    assert "Traceback" not in caplog.text and not any(rec.exc_info for rec in caplog.records)
    assert "crashed" not in caplog.text
    [row] = read_ledger(tmp_path)
    assert row.failures == 3 and row.calls == 0


def test_usage_that_is_not_numbers_is_estimated_not_a_failure(tmp_path):
    body = openai_completion("<s>7</s>")
    body["usage"] = {"prompt_tokens": "many", "completion_tokens": None}
    with LocalServer(lambda rec: Reply(200, body)) as server:
        provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="k")
        with LLMClient(provider, tmp_path, prices=FREE) as client:
            [result] = client.run([LLMRequest("score", "t/score", "abc", "sys", "item", params={"max_tokens": 5})])
    assert result.ok and result.text == "<s>7</s>" and not result.usage_reported and result.input_tokens > 0


# ------------------------------------------------------------------------------ summarize


TEXTS = {f"i{k}": f"title: Book {k}; genres: fiction" for k in range(6)}
TRAIN = {"u1": ["i0", "i1"], "u2": ["i2", "i3"], "u3": ["i4", "i5"], "u4": ["i0", "i5"]}


def make_dataset(workspace: Path, name: str = "tiny") -> None:
    write_text_dataset(workspace, name, TRAIN, {"u1": ["i2"]}, TEXTS)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    make_dataset(tmp_path / "ws")
    return tmp_path / "ws"


def test_summarize_where_every_call_failed_is_one_line_exit_2(workspace, capsys):
    with LocalServer(lambda rec: Reply(200, "<html>It works!</html>", {"content-type": "text/html"})) as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "--dataset", "tiny", "--provider", "openai",
                                 "--model", "local", "--base-url", server.url + "/v1")
    # stderr holds the progress bar, then the error: one line, exit 2.
    assert code == 2 and "Traceback" not in out + err
    lines = [line for line in err.strip().splitlines() if "user summaries" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: summarize: all 4 calls failed"), err
    assert "first error: openai: HTTP 200 with" in lines[0] and lines[0].endswith("nothing was written")
    assert not (workspace / "datasets" / "tiny" / "profiles").exists()


def test_summarize_with_some_failures_says_how_many(workspace, caplog):
    def handler(rec: Recorded) -> Reply:
        if "Book 4" in rec.body["messages"][-1]["content"]:  # only u3 has item i4
            return Reply(200, {"object": "chat.completion"})
        return Reply(200, openai_completion("<summarization>Likes fiction.</summarization>"))

    with LocalServer(handler) as server, caplog.at_level(logging.WARNING):
        settings = resolve_settings(provider="openai", model="local", base_url=server.url + "/v1")
        result = summarize(workspace, settings, SummarizeOptions("tiny"))
    assert (result.users, result.profiles) == (4, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 of 4 calls (user summaries) failed" in w and "HTTP 200 with" in w for w in warnings), warnings
