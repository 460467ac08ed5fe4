"""The example plugin's LLM provider ``compat-chat``, registered only through its
``register_providers`` hook, end to end: ``llmhd summarize``, ``llmhd cost`` and ``cost --spent``
against a local OpenAI-compatible server, with its own token counting."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run_cli, table_row, write_text_dataset
from llm_servers import LocalServer, Recorded, Reply, openai_completion

from llmhd_cli.llm.ledger import read_ledger
from llmhd_cli.llm.tokens import MESSAGE_OVERHEAD, TiktokenCounter

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llmhd-example-plugin"
BOOKS = {"b1": "title: Dune; genres: science fiction", "b2": "title: Emma; genres: romance, classic",
         "b3": "title: Mistborn; genres: fantasy, heist", "b4": "title: Hyperion; genres: science fiction"}
TRAIN = {"u1": ["b1", "b4"], "u2": ["b2"], "u3": ["b3", "b1"]}
TEST = {"u1": ["b3"], "u2": ["b1"], "u3": ["b4"]}


@contextlib.contextmanager
def example_plugin() -> Iterator[None]:
    """The example package registered as its entry point would be (the module object itself)."""
    from llmhd_cli import plugins

    sys.path.insert(0, str(EXAMPLE))
    try:
        import llmhd_example_plugin
    finally:
        sys.path.remove(str(EXAMPLE))
    plugins.load_plugins().register(llmhd_example_plugin, "example")
    try:
        yield
    finally:
        plugins.pm.unregister(name="example")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    ws = tmp_path / "ws"
    write_text_dataset(ws, "tiny", TRAIN, TEST, BOOKS, "books")
    with example_plugin():
        yield ws


def chat_server(usage: bool) -> LocalServer:
    """Answers every chat call with a summary, with or without a usage block."""
    def answer(rec: Recorded) -> Reply:
        if rec.path != "/v1/chat/completions":
            return Reply(404, {"error": {"message": "no such route"}})
        body = openai_completion("<summarization>Likes science fiction and fantasy.</summarization>", 123, 9,
                                 model=rec.body["model"])
        if not usage:
            del body["usage"]
        return Reply(200, body)

    return LocalServer(answer)


def cl100k(text: str) -> int:
    return TiktokenCounter.for_encoding("cl100k_base").count(text)


def test_compat_chat_summarizes_counts_its_own_tokens_and_is_costed(workspace: Path, capsys) -> None:
    with chat_server(usage=False) as server:
        url = f"{server.url}/v1"
        code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat",
                                 "--base-url", url, "--model", "my-gguf")
        assert code == 0, err
        sent = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(sent) == len(TRAIN) and {r.body["model"] for r in sent} == {"my-gguf"}
    row = table_row(out, "books/summarize")
    assert row[1:6] == ["compat-chat", "my-gguf", "3", "0", "0"]
    # No usage from the server: the provider counted the prompts and answers with cl100k_base.
    expected_in = sum(sum(cl100k(m["content"]) + MESSAGE_OVERHEAD for m in r.body["messages"]) for r in sent)
    [ledger] = read_ledger(workspace / "llm-cache")
    assert (ledger.provider, ledger.calls, ledger.estimated_calls) == ("compat-chat", 3, 3)
    assert ledger.input_tokens == expected_in
    assert ledger.output_tokens == 3 * cl100k("<summarization>Likes science fiction and fantasy.</summarization>")

    code, out, err = run_cli(capsys, workspace, "cost", "-d", "tiny", "--provider", "compat-chat", "--base-url", url,
                             "--model", "my-gguf")
    assert code == 0, err
    assert "counted exactly by the model's tokenizer (tiktoken cl100k_base)" in " ".join(out.split())
    cells = table_row(out, "summarize")
    assert cells[1:4] == ["books/summarize", "3", "3"]  # all three prompts already answered (cached)
    assert cells[4].rstrip("~") == f"{expected_in:,}"  # the estimate counts what the run counted

    code, out, err = run_cli(capsys, workspace, "cost", "--spent", "-d", "tiny")
    assert code == 0, err
    assert table_row(out, "books/summarize")[1:4] == ["compat-chat", "my-gguf", "3"]

    code, out, err = run_cli(capsys, workspace, "providers")
    assert code == 0 and "compat-chat" in out and "any with --base-url" in " ".join(out.split())


def test_compat_chat_takes_the_servers_usage_when_reported(workspace: Path, capsys) -> None:
    with chat_server(usage=True) as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat",
                                 "--base-url", f"{server.url}/v1")
        assert code == 0, err
    [ledger] = read_ledger(workspace / "llm-cache")
    assert (ledger.model, ledger.input_tokens, ledger.output_tokens, ledger.estimated_calls) == (
        "local-model", 3 * 123, 3 * 9, 0)


def test_compat_chat_maps_http_errors_onto_the_contract(workspace: Path, capsys) -> None:
    calls = []

    def flaky(rec: Recorded) -> Reply:
        calls.append(rec)
        if len(calls) == 1:
            return Reply(503, {"error": "busy"}, headers={"retry-after": "0"})  # retried, then answered
        return Reply(200, openai_completion("<summarization>Reads widely.</summarization>"))

    with LocalServer(flaky) as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat",
                                 "--base-url", f"{server.url}/v1", "--concurrency", "1")
        assert code == 0, err
        assert len(calls) == len(TRAIN) + 1

    with LocalServer(lambda rec: Reply(401, {"error": "bad key"})) as server:
        code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat",
                                 "--base-url", f"{server.url}/v1", "--refresh")
        last = err.strip().splitlines()[-1]  # after the progress bar: the one error line
        assert code == 2 and last.startswith("error: compat-chat: HTTP 401") and "COMPAT_CHAT_API_KEY" in last, err

    with LocalServer(lambda rec: Reply(200, "<html>not an API</html>", headers={"content-type": "text/html"})) as s:
        code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat",
                                 "--base-url", f"{s.url}/v1", "--refresh")
        last = err.strip().splitlines()[-1]
        assert code == 2 and "all 3 calls failed" in last and "a body that is not JSON" in last, err


def test_compat_chat_needs_a_base_url(workspace: Path, capsys) -> None:
    code, out, err = run_cli(capsys, workspace, "summarize", "-d", "tiny", "--provider", "compat-chat")
    assert_user_error(code, out, err, "--base-url", "compat-chat", "COMPAT_CHAT_BASE_URL")
