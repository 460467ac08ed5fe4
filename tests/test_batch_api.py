"""summarize --batch through OpenAI's Batch API and Anthropic's Message Batches (local servers).

The servers (batch_servers.py) really process each batch and count what was submitted, so the
tests prove server-side that a killed run picks up its batch instead of paying again, and that
two processes on one cache submit each prompt once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_servers import AnthropicBatchServer, OpenAIBatchServer, profile_answer, tokens_of
from cli_helpers import write_text_dataset

from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm import batch as batch_module
from llmhd_cli.llm.batch import BATCH_DIR, JobStore
from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.pricing import PriceTable, load_prices
from llmhd_cli.llm.profiles import ProfileStore
from llmhd_cli.llm.settings import resolve_settings
from llmhd_cli.summarize import SummarizeOptions, summarize

pytestmark = pytest.mark.server

TEXTS = {f"i{k}": f"title: Book {k}; genres: fiction" for k in range(6)}
TRAIN = {"u1": ["i0", "i1"], "u2": ["i2", "i3"], "u3": ["i4", "i5"], "u4": ["i0", "i5"]}
ANTHROPIC_KEY = "sk-ant-batch-test-5d1c2b9e"
KINDS = {
    "openai": (OpenAIBatchServer, "gpt-4o-mini", "/v1"),
    "anthropic": (AnthropicBatchServer, "claude-haiku-4-5", ""),
}
PRICES = load_prices()


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setenv("LLMHD_BATCH_POLL", "0.05")
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


def make_workspace(root: Path, name: str = "ws") -> Path:
    workspace = root / name
    write_text_dataset(workspace, "tiny", TRAIN, {"u1": ["i2"]}, TEXTS)
    return workspace


def settings_for(kind: str, server, model: str | None = None):
    _, default_model, suffix = KINDS[kind]
    return resolve_settings(provider=kind, model=model or default_model, base_url=server.url + suffix)


def profiles_of(workspace: Path, kind: str) -> dict[str, str]:
    from llmhd_cli.datasets import open_dataset

    profiles, _ = ProfileStore(open_dataset(workspace, "tiny")).user_profiles(kind)
    return profiles


def ledger_of(workspace: Path) -> dict[str, object]:
    return {row.template: row for row in read_ledger(workspace / "llm-cache")}


def batch_price(kind: str, model: str, tokens_in: int, tokens_out: int) -> float:
    return PRICES.get(kind, model).cost(tokens_in, tokens_out) * 0.5


# ------------------------------------------------------------------------------ the batch path


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batch_stores_what_the_normal_path_would_at_the_batch_price(kind, tmp_path):
    server_cls, model, _ = KINDS[kind]
    batch_ws, normal_ws = make_workspace(tmp_path, "batch"), make_workspace(tmp_path, "normal")
    with server_cls(in_progress_polls=3) as server:
        result = summarize(batch_ws, settings_for(kind, server), SummarizeOptions("tiny", batch=True, items=True))
        assert (server.submissions, server.submitted_requests, server.normal_calls) == (2, 10, 0)
        assert server.polls >= 8  # each batch stayed in progress for 3 polls
    with server_cls() as server:
        summarize(normal_ws, settings_for(kind, server), SummarizeOptions("tiny", items=True))
        assert server.submissions == 0 and server.normal_calls == 10
    assert result.profiles == 4 and result.batch is not None
    assert (result.batch.submitted, result.batch.answered, result.batch.failed) == (2, 10, 0)
    batch_profiles = profiles_of(batch_ws, kind)
    assert batch_profiles == profiles_of(normal_ws, kind) and len(batch_profiles) == 4
    assert all("profile " in text for text in batch_profiles.values())
    batch_rows, normal_rows = ledger_of(batch_ws), ledger_of(normal_ws)
    for template in ("books/item_profile", "books/summarize"):
        b, n = batch_rows[template], normal_rows[template]
        assert (b.calls, b.input_tokens, b.output_tokens) == (n.calls, n.input_tokens, n.output_tokens)
        assert b.input_tokens > 0 and b.calls in (4, 6)
        assert b.cost == pytest.approx(batch_price(kind, model, b.input_tokens, b.output_tokens))
        assert b.cost == pytest.approx(n.cost / 2)
    row = next(r for r in result.rows if r.template == "books/summarize")
    assert (row.calls, row.cache_hits) == (4, 0) and row.cost == pytest.approx(batch_rows["books/summarize"].cost)
    # Every job record says collected, names no key and no URL.
    records = list((batch_ws / "llm-cache" / BATCH_DIR).glob("*.json"))
    assert len(records) == 2
    for path in records:
        text = path.read_text()
        data = json.loads(text)
        assert data["state"] == "collected" and data["counts"] == {"answered": len(data["requests"]), "failed": 0}
        assert ANTHROPIC_KEY not in text and "127.0.0.1" not in text
    assert not list((batch_ws / "llm-cache" / BATCH_DIR).glob("*.pending.json"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_second_summarize_submits_nothing(kind, tmp_path):
    server_cls, _, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls() as server:
        settings = settings_for(kind, server)
        summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        again = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 0)
    assert again.profiles == 4 and again.batch.submitted == 0
    [row] = again.rows
    assert (row.calls, row.cache_hits, row.cost) == (0, 4, 0)
    assert ledger_of(workspace)["books/summarize"].calls == 4


def test_batch_answers_are_cache_hits_for_the_normal_path(tmp_path):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer() as server:
        settings = settings_for("openai", server)
        summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        normal = summarize(workspace, settings, SummarizeOptions("tiny"))
        assert server.normal_calls == 0
    assert normal.rows[0].cache_hits == 4



def test_a_closed_client_sends_nothing_through_the_batch_path(tmp_path):
    from llmhd_cli.llm.base import LLMRequest
    from llmhd_cli.llm.client import make_client

    with OpenAIBatchServer() as server:
        client = make_client(settings_for("openai", server), make_workspace(tmp_path))
        client.close()
        request = LLMRequest("summarize", "books/summarize", "h", "sys", "a prompt")
        with pytest.raises(RuntimeError, match="closed"):
            batch_module.run_batched(client, [request])
        assert server.submissions == 0


# ------------------------------------------------------------------------------ resume


CHILD = """
import logging, sys
from pathlib import Path
from llmhd_cli.llm.settings import resolve_settings
from llmhd_cli.summarize import SummarizeOptions, summarize
logging.basicConfig(level=logging.WARNING)
logging.getLogger("llmhd_cli.llm.batch").setLevel(logging.INFO)
kind, model, url, workspace = sys.argv[1:5]
settings = resolve_settings(provider=kind, model=model, base_url=url)
if len(sys.argv) > 5:
    print("ready", flush=True)
    sys.stdin.readline()
result = summarize(Path(workspace), settings, SummarizeOptions("tiny", batch=True))
print("profiles", result.profiles, "submitted", result.batch.submitted, "waited", result.batch.waited, flush=True)
"""


def child(kind: str, server, workspace: Path, wait_for_go: bool = False) -> subprocess.Popen:
    _, model, suffix = KINDS[kind]
    args = [sys.executable, "-c", CHILD, kind, model, server.url + suffix, str(workspace)] + (["go"] if wait_for_go else [])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_run_killed_after_the_submit_picks_up_its_batch(kind, tmp_path):
    server_cls, model, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    jobs = workspace / "llm-cache" / BATCH_DIR
    with server_cls(in_progress_polls=10**6) as server:
        _, _, suffix = KINDS[kind]
        # `llmhd summarize --batch` itself, SIGKILLed while it polls.
        proc = subprocess.Popen([sys.executable, "-m", "llmhd_cli", "--workspace", str(workspace), "summarize",
                                 "--dataset", "tiny", "--provider", kind, "--model", model, "--base-url",
                                 server.url + suffix, "--batch"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: server.polls >= 2, 300)  # submitted, recorded, polling (a loaded machine: slow)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        [record] = [json.loads(p.read_text()) for p in jobs.glob("*.json")]
        assert record["state"] == "submitted" and len(record["requests"]) == 4
        assert server.submissions == 1
        server.in_progress_polls = 0  # the batch ends now
        result = summarize(workspace, settings_for(kind, server), SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.submitted_requests, server.normal_calls) == (1, 4, 0)
    assert result.profiles == 4 and (result.batch.resumed, result.batch.submitted) == (1, 0)
    row = ledger_of(workspace)["books/summarize"]
    assert row.calls == 4 and row.cost == pytest.approx(batch_price(kind, model, row.input_tokens, row.output_tokens))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_exception_after_the_record_is_written_resumes(kind, tmp_path, monkeypatch):
    server_cls, _, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    written = JobStore.write_submitted

    def crash_after(self, record):
        written(self, record)
        raise RuntimeError("injected crash after the job record")

    with server_cls(in_progress_polls=2) as server:
        settings = settings_for(kind, server)
        monkeypatch.setattr(JobStore, "write_submitted", crash_after)
        with pytest.raises(RuntimeError, match="injected crash"):
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        monkeypatch.setattr(JobStore, "write_submitted", written)
        result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 0)
    assert result.profiles == 4 and result.batch.resumed == 1


def crash_before_record(monkeypatch):
    def crash(self, record):
        raise KeyboardInterrupt  # killed between the submit and the record

    monkeypatch.setattr(JobStore, "write_submitted", crash)


def test_openai_finds_a_batch_whose_record_was_never_written(tmp_path, monkeypatch, caplog):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(in_progress_polls=1) as server:
        settings = settings_for("openai", server)
        crash_before_record(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        monkeypatch.undo()
        monkeypatch.setenv("LLMHD_BATCH_POLL", "0.05")
        assert len(list((workspace / "llm-cache" / BATCH_DIR).glob("*.pending.json"))) == 1
        with caplog.at_level(logging.WARNING):
            result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert server.submissions == 1  # found through its llmhd_job tag, not submitted again
    assert result.profiles == 4 and result.batch.resumed == 1
    assert any("was interrupted before its record was written; found its batch" in r.getMessage()
               for r in caplog.records)
    assert not list((workspace / "llm-cache" / BATCH_DIR).glob("*.pending.json"))


def test_anthropic_interrupted_submit_is_reported_not_paid_again(tmp_path, monkeypatch):
    workspace = make_workspace(tmp_path)
    with AnthropicBatchServer() as server:
        settings = settings_for("anthropic", server)
        crash_before_record(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        monkeypatch.undo()
        monkeypatch.setenv("LLMHD_BATCH_POLL", "0.05")
        monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        [marker] = (workspace / "llm-cache" / BATCH_DIR).glob("*.pending.json")
        with pytest.raises(LLMHDError, match="was interrupted before its batch id was recorded") as info:
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert str(marker) in str(info.value) and "\n" not in str(info.value)
        assert server.submissions == 1
        marker.unlink()  # the user checked: submit again
        result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert server.submissions == 2
    assert result.profiles == 4


def test_two_processes_submit_each_prompt_once(tmp_path):
    import threading

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(in_progress_polls=10**6) as server:  # in progress until both are under way
        procs = [child("openai", server, workspace, wait_for_go=True) for _ in range(2)]
        logs: list[list[str]] = [[], []]
        readers = [threading.Thread(target=lambda p=p, log=log: log.extend(p.stderr), daemon=True)
                   for p, log in zip(procs, logs, strict=True)]
        try:
            for proc in procs:
                assert proc.stdout.readline().strip() == "ready"
            for reader in readers:
                reader.start()
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            # Under way: both submitted (the claims split the prompts), or one submitted and the other waits for it.
            wait_for(lambda: server.submissions == 2 or (
                server.submissions == 1 and any("waiting for it" in line for log in logs for line in log)), 300)
            server.in_progress_polls = 0
            outs = [proc.communicate(timeout=300)[0] for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for proc, log in zip(procs, logs, strict=True):
            assert proc.returncode == 0, "".join(log)
        # Each prompt submitted once (claims are per prompt: the two may split them between two batches).
        assert (server.submitted_requests, server.normal_calls) == (4, 0) and server.submissions in (1, 2)
    counts = [out.strip().splitlines()[-1].split() for out in outs]
    assert all(c[:2] == ["profiles", "4"] for c in counts), counts
    assert sum(int(c[3]) for c in counts) == server.submissions and max(int(c[5]) for c in counts) > 0, counts
    assert ledger_of(workspace)["books/summarize"].calls == 4


# ------------------------------------------------------------------------------ failures


def fail_u3(prompt: str) -> str | None:
    return "expired" if "Book 4" in prompt else None  # only u3 has item i4


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_partial_failures_are_counted_never_fatal(kind, tmp_path, caplog):
    server_cls, _, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls(fail=fail_u3) as server, caplog.at_level(logging.WARNING):
        result = summarize(workspace, settings_for(kind, server), SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 0)
    assert (result.profiles, result.batch.answered, result.batch.failed) == (3, 3, 1)
    assert "u3" not in profiles_of(workspace, kind)
    row = ledger_of(workspace)["books/summarize"]
    assert (row.calls, row.failures) == (3, 1)
    assert any("1 requests came back without an answer" in r.getMessage() and "expired" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fallback_sends_the_unanswered_as_normal_calls(kind, tmp_path):
    server_cls, model, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls(fail=fail_u3) as server:
        result = summarize(workspace, settings_for(kind, server),
                           SummarizeOptions("tiny", batch=True, batch_fallback=True))
        assert (server.submissions, server.normal_calls) == (1, 1)
    assert (result.profiles, result.batch.fallback) == (4, 1)
    row = ledger_of(workspace)["books/summarize"]
    assert (row.calls, row.failures) == (4, 0)
    # three answers at the batch price, one at the list price
    assert row.cost > batch_price(kind, model, row.input_tokens, row.output_tokens)


def test_a_malformed_batch_answer_is_reasked_once_as_a_normal_call(tmp_path):
    asked: list[str] = []

    def answer(system: str, prompt: str) -> str:
        if "Book 4" in prompt:
            asked.append(prompt)
            if len(asked) == 1:  # the batch's answer; the re-ask then follows the format
                return "I would rather not use tags."
        return profile_answer(system, prompt)

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(answer=answer) as server:
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 1)
    assert result.profiles == 4 and len(asked) == 2 and asked[1].startswith(asked[0]) and asked[1] != asked[0]
    row = ledger_of(workspace)["books/summarize"]
    assert (row.calls, row.failures) == (5, 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_model_is_one_line(kind, tmp_path):
    server_cls, model, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls(models=(model,)) as server:
        settings = settings_for(kind, server, model="no-such-model") if kind == "openai" else None
        if settings is None:  # anthropic checks its model names before anything is sent
            with pytest.raises(LLMHDError, match="unknown model 'no-such-model'"):
                settings_for(kind, server, model="no-such-model")
            return
        with pytest.raises(LLMHDError) as info:
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert server.normal_calls == 0
    message = str(info.value)
    assert "\n" not in message and "all 4 calls failed" in message and "no-such-model" in message
    assert not (workspace / "datasets" / "tiny" / "profiles").exists()


def test_a_provider_without_a_batch_api_is_one_line(tmp_path):
    workspace = make_workspace(tmp_path)
    with pytest.raises(LLMHDError, match=r"--batch: provider 'embed' has no batch API \(providers with one: "
                                         r"anthropic, openai\)"):
        summarize(workspace, resolve_settings(provider="embed"), SummarizeOptions("tiny", batch=True))
    assert not (workspace / "llm-cache" / BATCH_DIR).exists()


def test_a_refused_submit_leaves_no_marker_and_stops_with_one_line(tmp_path):
    workspace = make_workspace(tmp_path)
    with AnthropicBatchServer() as server:
        server.server.handler = lambda rec: __import__("llm_servers").Reply(
            401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        with pytest.raises(LLMHDError, match="HTTP 401") as info:
            summarize(workspace, settings_for("anthropic", server), SummarizeOptions("tiny", batch=True))
    assert ANTHROPIC_KEY not in str(info.value)
    assert not list((workspace / "llm-cache" / BATCH_DIR).glob("*.json"))


def test_budget_limits_what_is_submitted(tmp_path):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer() as server:
        settings = settings_for("openai", server)
        settings.max_cost = 1e-9
        result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert server.submissions == 0
    assert result.budget_exhausted and result.profiles == 0


# ------------------------------------------------------------------------------ prices


def test_batch_price_factor_in_the_table(tmp_path):
    table = load_prices()
    assert table.batch_factor("openai") == table.batch_factor("anthropic") == 0.5
    assert table.cost("openai", "gpt-4o-mini", 1_000_000, 1_000_000, batch=True) == pytest.approx((0.15 + 0.60) / 2)
    assert table.batch_factor("embed") == 1.0
    custom = PriceTable.from_dict({"openai": {"m": {"input": 1.0, "output": 2.0}}, "batch": {"openai": 0.25}})
    assert custom.cost("openai", "m", 1_000_000, 0, batch=True) == pytest.approx(0.25)
    for bad in (1.5, -0.1, "half", True, float("nan")):
        with pytest.raises(LLMHDError, match=r"\[batch\] openai must be a number from 0 to 1"):
            PriceTable.from_dict({"batch": {"openai": bad}})


def test_tokens_come_from_the_servers_usage():
    assert tokens_of("abcd" * 10) == 10
    assert batch_module.endpoint_id("http://user:secret@host/v1") != "" and "secret" not in batch_module.endpoint_id(
        "http://user:secret@host/v1")


def test_cost_estimate_at_the_batch_price(tmp_path):
    from llmhd_cli.llm.estimate import estimate

    workspace = make_workspace(tmp_path)
    plain, batched = (estimate(workspace, "tiny", "openai", "gpt-4o-mini", options={"items": True, "batch": b})
                      for b in (False, True))
    assert [r.input_tokens for r in plain.rows] == [r.input_tokens for r in batched.rows]
    for p, b in zip(plain.rows, batched.rows, strict=True):
        assert p.cost > 0 and b.cost == pytest.approx(p.cost / 2)
        assert "batch price (50% of list)" in b.note and "batch price" not in p.note


# ------------------------------------------------------------------------------ the commands


def test_summarize_and_cost_commands_with_batch(tmp_path, capsys):
    from cli_helpers import run_cli

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(in_progress_polls=2) as server:
        flags = ["--dataset", "tiny", "--provider", "openai", "--model", "gpt-4o-mini", "--base-url", server.url + "/v1"]
        code, out, err = run_cli(capsys, workspace, "cost", *flags, "--batch")
        assert code == 0, err
        assert "batch price (50% of list)" in out
        code, out, err = run_cli(capsys, workspace, "summarize", *flags, "--batch")
        assert code == 0, err
        assert "4 of 4 user profiles written" in out
        assert "batches: 1 submitted, 0 picked up from an earlier run; 4 answers at the batch price" in out
        assert "user summaries: batch" in err  # the polling bar
        assert server.submissions == 1
        code, out, err = run_cli(capsys, workspace, "summarize", *flags, "--batch")
        assert code == 0 and server.submissions == 1 and "batches:" not in out


@pytest.mark.parametrize("args, words", [
    (["summarize", "--provider", "embed", "--batch"], ["--batch: provider 'embed' has no batch API"]),
    (["cost", "--provider", "embed", "--batch"], ["--batch: provider 'embed' has no batch API"]),
    (["summarize", "--provider", "openai", "--base-url", "http://127.0.0.1:9/v1", "--batch-fallback"],
     ["--batch-fallback: only with --batch"]),
    (["cost", "--spent", "--batch"], ["--batch is for an estimate"]),
])
def test_batch_flag_errors_are_one_line(args, words, tmp_path, capsys):
    from cli_helpers import assert_user_error, run_cli

    workspace = make_workspace(tmp_path)
    code, out, err = run_cli(capsys, workspace, *args[:1], "--dataset", "tiny", *args[1:])
    assert_user_error(code, out, err, *words)


def test_a_missing_key_is_one_line(tmp_path, capsys, monkeypatch):
    from cli_helpers import assert_user_error, run_cli

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    workspace = make_workspace(tmp_path)
    with AnthropicBatchServer() as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "--dataset", "tiny", "--provider", "anthropic",
                                 "--base-url", server.url, "--batch")
        assert server.submissions == 0
    assert_user_error(code, out, err, "ANTHROPIC_API_KEY")


def test_a_bad_model_through_the_command_is_one_line_exit_2(tmp_path, capsys):
    from cli_helpers import run_cli

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(models=("gpt-4o-mini",)) as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "--dataset", "tiny", "--provider", "openai",
                                 "--model", "no-such-model", "--base-url", server.url + "/v1", "--batch")
    lines = [line for line in err.strip().splitlines() if "user summaries" not in line]
    assert code == 2 and "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("error: summarize: all 4 calls failed"), err
    assert "no-such-model" in lines[0]


def test_a_reask_that_fails_too_is_one_counted_failure(tmp_path):
    def answer(system: str, prompt: str) -> str:
        return "No tags, ever." if "Book 4" in prompt else profile_answer(system, prompt)

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(answer=answer) as server:
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 1)
    assert result.profiles == 3
    row = ledger_of(workspace)["books/summarize"]
    assert (row.calls, row.failures) == (5, 1)
    [summary] = result.rows
    assert (summary.calls, summary.failures) == (5, 1)


def test_a_reask_the_server_refuses_is_one_counted_failure(tmp_path):
    from llm_servers import Reply

    def answer(system: str, prompt: str) -> str:
        return "No tags, ever." if "Book 4" in prompt else profile_answer(system, prompt)

    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(answer=answer) as server:
        batch_handler = server.server.handler

        def refuse_chat(rec):
            if rec.path.endswith("/chat/completions"):
                return Reply(400, {"error": {"message": "refused for the test", "type": "invalid_request_error"}})
            return batch_handler(rec)

        server.server.handler = refuse_chat
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
    assert result.profiles == 3
    row = ledger_of(workspace)["books/summarize"]
    assert (row.calls, row.failures) == (4, 1)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_rate_limited_submit_is_retried_and_paid_once(kind, tmp_path):
    from llm_servers import Reply

    server_cls, _, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls() as server:
        batch_handler = server.server.handler
        refused = []

        def rate_limit_once(rec):
            creating = rec.method == "POST" and rec.path.split("?")[0] in ("/v1/batches", "/v1/messages/batches")
            if creating and not refused:
                refused.append(rec.path)
                return Reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
                             {"retry-after": "0"})
            return batch_handler(rec)

        server.server.handler = rate_limit_once
        result = summarize(workspace, settings_for(kind, server), SummarizeOptions("tiny", batch=True))
        assert len(refused) == 1 and server.submissions == 1 and server.normal_calls == 0
    assert result.profiles == 4


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_prompt_cache_reads_in_a_batch_are_priced_as_cached_at_the_batch_price(kind, tmp_path):
    server_cls, model, _ = KINDS[kind]
    workspace = make_workspace(tmp_path)
    with server_cls(cached_tokens=20) as server:
        summarize(workspace, settings_for(kind, server), SummarizeOptions("tiny", batch=True))
    row = ledger_of(workspace)["books/summarize"]
    price = PRICES.get(kind, model)
    cached = 4 * 20
    expected = price.cost(row.input_tokens, row.output_tokens, cached_input_tokens=cached) * 0.5
    assert row.cost == pytest.approx(expected) and expected < batch_price(kind, model, row.input_tokens,
                                                                           row.output_tokens)


def test_a_job_killed_after_storing_its_answers_is_counted_on_the_next_run(tmp_path, monkeypatch):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer() as server:
        settings = settings_for("openai", server)
        from llmhd_cli.llm.client import LLMClient

        def killed(self, *args, **kwargs):
            raise KeyboardInterrupt

        recorded = LLMClient.record_usage
        monkeypatch.setattr(LLMClient, "record_usage", killed)
        with pytest.raises(KeyboardInterrupt):  # killed after the answers were stored, before the ledger
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        monkeypatch.setattr(LLMClient, "record_usage", recorded)
        result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.normal_calls) == (1, 0)
    assert result.profiles == 4 and result.batch.resumed == 1
    assert ledger_of(workspace)["books/summarize"].calls == 4
    [record] = (workspace / "llm-cache" / BATCH_DIR).glob("*.json")
    assert json.loads(record.read_text())["state"] == "collected"


def test_refresh_submits_again_and_replaces_the_answers(tmp_path):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer() as server:
        settings = settings_for("openai", server)
        summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        settings.refresh = True
        again = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert (server.submissions, server.submitted_requests, server.normal_calls) == (2, 8, 0)
    assert again.profiles == 4 and again.rows[0].calls == 4 and again.rows[0].cache_hits == 0


def test_a_run_without_batch_does_not_pay_again_for_an_open_batch(tmp_path, monkeypatch):
    workspace = make_workspace(tmp_path)
    written = JobStore.write_submitted

    def crash_after(self, record):
        written(self, record)
        raise KeyboardInterrupt  # Ctrl-C while the batch runs

    with OpenAIBatchServer() as server:
        settings = settings_for("openai", server)
        monkeypatch.setattr(JobStore, "write_submitted", crash_after)
        with pytest.raises(KeyboardInterrupt):
            summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        monkeypatch.setattr(JobStore, "write_submitted", written)
        with pytest.raises(LLMHDError, match=r"4 of these prompts are in batch batch_0001 \(openai/gpt-4o-mini, .*"
                                             r"still open: rerun with --batch to collect it") as info:
            summarize(workspace, settings, SummarizeOptions("tiny"))
        assert "\n" not in str(info.value) and server.normal_calls == 0
        result = summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
        assert result.profiles == 4 and (server.submissions, server.normal_calls) == (1, 0)
        again = summarize(workspace, settings, SummarizeOptions("tiny"))  # collected: a normal run is free
        assert again.rows[0].cache_hits == 4 and server.normal_calls == 0


def test_an_expired_openai_batch_keeps_its_partial_results(tmp_path):
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer(final_status="expired", fail=fail_u3) as server:
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
    assert (result.profiles, result.batch.answered, result.batch.failed) == (3, 3, 1)
    [record] = (workspace / "llm-cache" / BATCH_DIR).glob("*.json")
    assert json.loads(record.read_text())["counts"] == {"answered": 3, "failed": 1}


def test_a_file_in_the_jobs_folder_that_is_no_record_is_ignored_with_a_warning(tmp_path, caplog):
    workspace = make_workspace(tmp_path)
    jobs = workspace / "llm-cache" / BATCH_DIR
    jobs.mkdir(parents=True)
    (jobs / "junk.json").write_text("{not json")
    (jobs / "planted.json").write_text(json.dumps({
        "job": "planted", "provider": "openai", "model": "gpt-4o-mini", "endpoint": "", "template": "books/summarize",
        "requests": {"r0": "k"}, "created": "yesterday", "host": "h", "pid": 1, "batch_id": "b", "state": "submitted"}))
    with OpenAIBatchServer() as server, caplog.at_level(logging.WARNING):
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
        assert server.submissions == 1
    assert result.profiles == 4
    ignored = [r.getMessage() for r in caplog.records if "is not a job record" in r.getMessage()]
    assert sorted(Path(m.split()[3]).name for m in ignored) == ["junk.json", "planted.json"]  # one warning each


def test_a_provider_that_crashes_in_submit_keeps_the_marker(tmp_path, monkeypatch):
    from llmhd_plugins.providers_anthropic import AnthropicProvider

    def crash(self, requests, job):
        raise TypeError("a bug")

    workspace = make_workspace(tmp_path)
    monkeypatch.setattr(AnthropicProvider, "submit_batch", crash)
    with AnthropicBatchServer() as server:
        with pytest.raises(LLMHDError, match=r"crashed submitting 4 requests \(TypeError\); the batch may exist"):
            summarize(workspace, settings_for("anthropic", server), SummarizeOptions("tiny", batch=True))
    assert len(list((workspace / "llm-cache" / BATCH_DIR).glob("*.pending.json"))) == 1


@pytest.mark.parametrize("limit", ["requests", "bytes"])
def test_more_than_a_batch_holds_goes_in_several(limit, tmp_path, monkeypatch):
    from llmhd_plugins.providers_openai import OpenAIProvider

    if limit == "requests":
        monkeypatch.setattr(OpenAIProvider, "batch_max_requests", 3)
    else:
        monkeypatch.setattr(OpenAIProvider, "batch_max_bytes", 1)  # one prompt per batch
    workspace = make_workspace(tmp_path)
    with OpenAIBatchServer() as server:
        result = summarize(workspace, settings_for("openai", server), SummarizeOptions("tiny", batch=True))
        expected = 2 if limit == "requests" else 4
        assert (server.submissions, server.submitted_requests) == (expected, 4)
    assert result.profiles == 4 and result.batch.submitted == expected


def test_an_unreachable_server_is_one_line_and_leaves_no_marker(tmp_path):
    from llm_servers import free_port

    workspace = make_workspace(tmp_path)
    settings = resolve_settings(provider="openai", model="gpt-4o-mini", base_url=f"http://127.0.0.1:{free_port()}/v1",
                                max_retries=1)
    with pytest.raises(LLMHDError, match="--batch: openai: connection error") as info:
        summarize(workspace, settings, SummarizeOptions("tiny", batch=True))
    assert "\n" not in str(info.value)
    assert not list((workspace / "llm-cache" / BATCH_DIR).glob("*.json"))
