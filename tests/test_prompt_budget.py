"""Prompts fit the model: variable parts are cut at render time to the model's context window.

The run (summarize, the judge) and the cost estimate render through the same template code,
so both see the same cut prompts; the client counts cut prompts and warns once per run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cli_helpers import write_text_dataset
from llm_servers import LocalServer, Recorded, Reply, openai_completion

from llmhd_cli.datasets import open_dataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.client import LLMClient
from llmhd_cli.llm.estimate import estimate
from llmhd_cli.llm.pricing import PriceTable
from llmhd_cli.llm.prompts import CUT_MARK, TemplateSet, model_budget, template_set_for
from llmhd_cli.llm.settings import context_window_setting, resolve_settings
from llmhd_cli.llm.tokens import (
    DEFAULT_CONTEXT_WINDOW,
    PromptBudget,
    context_window,
    count_prompt_tokens,
)
from llmhd_cli.summarize import SummarizeOptions, summarize, summarize_requests
from llmhd_plugins.providers_openai import OpenAIProvider

HUGE = ("An extremely detailed description that goes on and on. " * 2000)[:100_000]
SHORT = [f"title: Book {k}; genres: fiction, adventure" for k in range(10)]


def longest_prompt(request) -> tuple[str, str]:
    """What the re-ask would send: the largest prompt a request can lead to."""
    return request.system, f"{request.prompt}\n\n{request.reask_hint}"


def within(request, budget: PromptBudget, answer_tokens: int) -> bool:
    return budget.count(*longest_prompt(request)) <= budget.context_window - answer_tokens


# ------------------------------------------------------------------------------ render


def test_a_100000_character_item_text_is_cut_to_the_budget_and_nothing_else_is():
    template = template_set_for("books").for_model("openai", "local").get("summarize")
    assert template.budget == PromptBudget(DEFAULT_CONTEXT_WINDOW, "openai", "local")  # a model nobody listed
    variables = {"item_profiles": [SHORT[0], HUGE, *SHORT[1:]], "n_items": 11}
    whole = template_set_for("books").get("summarize").render(variables)
    assert whole.cut == 0 and count_prompt_tokens(whole.system, whole.prompt)[0] > 25_000  # what was sent before

    request = template.render(variables)
    assert request.cut == 1
    assert within(request, template.budget, template.params["max_tokens"])
    assert count_prompt_tokens(request.system, request.prompt)[0] > DEFAULT_CONTEXT_WINDOW // 2  # room is used
    assert request.prompt.count(CUT_MARK) == 1
    for n, text in enumerate(SHORT[1:], 3):  # the other texts stay whole, in their places
        assert f"\n{n}. {text}\n" in request.prompt + "\n"
    # The instructions are all there, word for word.
    head, tail = template.prompt.strip().split("{item_profiles}")
    assert request.prompt.startswith(head.strip()) and request.prompt.endswith(tail.strip())
    assert request.system == template.system and request.variables["item_profiles"][1] == HUGE  # raw for providers


def test_many_long_texts_are_cut_evenly_then_left_out_and_n_items_follows(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "summarize.toml").write_text('''task = "summarize"
system = "You are a professional book editor."
prompt = """The {n_items} books a reader read:
{item_profiles}
Summarize the reader in <summarization>...</summarization>."""
[output]
type = "text"
tag = "summarization"
max_words = 120
[params]
max_tokens = 200
''')
    budget = PromptBudget(2048)
    template = TemplateSet.from_dir(folder).with_budget(budget).get("summarize")
    texts = [f"book {k}: " + "words of a long description " * 100 for k in range(80)]
    request = template.render({"item_profiles": texts, "n_items": len(texts)})
    assert within(request, budget, 200)
    shown = [line for line in request.prompt.splitlines() if line[:1].isdigit() and ". book " in line]
    assert 10 < len(shown) < 80 and request.prompt.startswith(f"The {len(shown)} books a reader read:")
    assert all(line.endswith(CUT_MARK) for line in shown)
    lengths = [len(line.split(". ", 1)[1]) for line in shown]
    assert max(lengths) - min(lengths) <= 8  # one common cap, not first come first served
    assert request.cut == len(texts)  # shortened or left out


def test_score_prompt_cuts_profile_and_item_text_in_any_script():
    budget = PromptBudget(4096, "anthropic", "claude-haiku-4-5")
    template = template_set_for("books").with_budget(budget).get("score")
    for text in ("x" * 100_000, "界" * 100_000, "🙂" * 50_000, "0123456789abcdef" * 6000):
        request = template.render({"user_profile": "Likes " + text, "item_profile": text})
        assert request.cut == 2 and within(request, budget, template.params["max_tokens"])
        # The documented 4-characters-a-token estimate never counts more than the budget does.
        assert count_prompt_tokens(*longest_prompt(request))[0] <= budget.count(*longest_prompt(request))
    short = template.render({"user_profile": "Likes sci-fi.", "item_profile": "title: Dune"})
    assert short.cut == 0 and short.prompt == template_set_for("books").get("score").render(
        {"user_profile": "Likes sci-fi.", "item_profile": "title: Dune"}).prompt


def test_instructions_that_do_not_fit_are_a_one_line_error():
    template = template_set_for("books").with_budget(PromptBudget(300)).get("summarize")
    with pytest.raises(LLMHDError, match=r"instructions alone take about [\d,]+ tokens.*context_window") as info:
        template.render({"item_profiles": ["a"], "n_items": 1})
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ windows and settings


def test_context_windows_per_model_and_the_user_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMHD_CONTEXT_WINDOW", raising=False)
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    assert context_window("openai", "gpt-4o-mini") == context_window("openai", "gpt-4o-mini-2024-07-18") == 128_000
    assert context_window("openai", "gpt-3.5-turbo") == 16_385
    assert context_window("anthropic", "claude-sonnet-4-5") == 200_000
    assert context_window("openai", "local-gemma") == DEFAULT_CONTEXT_WINDOW
    assert model_budget("embed", "all-MiniLM-L6-v2") is None  # reads no prompt: nothing is cut
    assert resolve_settings(provider="openai", model="gpt-4o-mini", require_key=False).context_window is None

    (tmp_path / "config.toml").write_text('[llm]\nprovider = "openai"\ncontext_window = 2048\n')
    assert resolve_settings(provider="openai", model="local", base_url="http://127.0.0.1:9/v1").context_window == 2048
    assert context_window_setting("anthropic") is None  # the config's window is its provider's
    tset = template_set_for("books").for_model("openai", "local", context_window_setting("openai"))
    assert tset.get("score").budget.context_window == 2048
    monkeypatch.setenv("LLMHD_CONTEXT_WINDOW", "4096")
    assert context_window_setting("anthropic") == 4096
    for bad in ("lots", "100"):
        monkeypatch.setenv("LLMHD_CONTEXT_WINDOW", bad)
        with pytest.raises(LLMHDError, match="LLMHD_CONTEXT_WINDOW"):
            context_window_setting("openai")


# ------------------------------------------------------------------------------ client, run, estimate


def test_the_client_counts_cut_prompts_and_warns_once(tmp_path, caplog):
    template = template_set_for("books").for_model("openai", "local").get("score")
    requests = [template.render({"user_profile": f"user {k} " + HUGE, "item_profile": "title: Dune"})
                for k in range(3)]
    plain = template.render({"user_profile": "Likes sci-fi.", "item_profile": "title: Dune"})
    with LocalServer(lambda rec: Reply(200, openai_completion("<s>7</s>"))) as server:
        provider = OpenAIProvider(model="local", base_url=server.url + "/v1", api_key="k")
        with caplog.at_level(logging.WARNING), LLMClient(provider, tmp_path, prices=PriceTable.from_dict({})) as c:
            c.run(requests[:2] + [plain])
            c.run(requests[2:])  # a training run calls run() once per batch: still one warning at the end
            assert not [r for r in caplog.records if r.name == "llmhd_cli.llm.client"]
        sent = [rec.body["messages"][-1]["content"] for rec in server.requests]
    assert (c.stats.prompts_cut, c.stats.texts_cut) == (3, 3)
    assert all(len(prompt) < 40_000 for prompt in sent)  # the cut prompts are what goes out
    [warning] = [r.getMessage() for r in caplog.records if r.name == "llmhd_cli.llm.client"]
    assert "3 of 4 prompts were cut to fit the context window of openai/local" in warning
    assert "context_window" in warning


def make_dataset(workspace: Path) -> None:
    texts = {"b1": HUGE, "b2": "title: Foundation", "b3": "title: Hyperion", "b4": "title: Emma"}
    train = {"u1": ["b1", "b2"], "u2": ["b3", "b4"], "u3": ["b2", "b1", "b4"]}
    write_text_dataset(workspace, "tiny", train, {"u1": ["b3"]}, texts)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    make_dataset(tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.parametrize("window", [None, 3000])
def test_the_estimate_counts_the_prompts_summarize_sends(workspace, monkeypatch, caplog, window):
    if window:
        monkeypatch.setenv("LLMHD_CONTEXT_WINDOW", str(window))
    url = "http://127.0.0.1:9/v1"
    result = estimate(workspace, "tiny", "openai", "local", base_url=url)
    [row] = result.rows
    dataset = open_dataset(workspace, "tiny")
    whole, _ = summarize_requests(dataset, template_set_for("books"), dataset.item_texts())
    uncut = sum(count_prompt_tokens(r.system, r.prompt, "openai", "local")[0] for r in whole)
    assert uncut > 50_000 and row.input_tokens < uncut / 3
    assert "2 prompts cut to fit the model's context window" in row.note

    def handler(rec: Recorded) -> Reply:
        return Reply(200, openai_completion("<summarization>Reads science fiction.</summarization>"))

    with LocalServer(handler) as server, caplog.at_level(logging.WARNING):
        settings = resolve_settings(provider="openai", model="local", base_url=server.url + "/v1")
        summarize(workspace, settings, SummarizeOptions("tiny"))
        sent = [rec.body["messages"] for rec in server.requests]
    counted = sum(count_prompt_tokens(m[0]["content"], m[1]["content"], "openai", "local")[0] for m in sent)
    assert len(sent) == row.prompts == 3 and counted == row.input_tokens  # the estimate counted what was sent
    budget = PromptBudget(window or DEFAULT_CONTEXT_WINDOW, "openai", "local")
    assert all(budget.count(m[0]["content"], m[1]["content"]) <= budget.limit(200) for m in sent)
    assert any("2 of 3 prompts were cut" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("scoring, score_task", [("pairwise", "score"), ("listwise", "score_list")])
def test_the_judge_renders_its_prompts_to_the_same_budget(workspace, monkeypatch, scoring, score_task):
    # Training's T_score / T_fp (and so the cost dry run, which builds the same judge) cut alike.
    import numpy as np

    from llmhd_cli import plugins
    from llmhd_cli.denoising import TrainContext
    from llmhd_cli.training import denoiser_options
    from llmhd_plugins.llmhd.denoiser import build_judge

    monkeypatch.setenv("LLMHD_CONTEXT_WINDOW", "2048")
    spec = plugins.registry("denoiser").get("llmhd", "--denoiser")
    options = denoiser_options(spec, {"provider": "openai", "model": "local", "base_url": "http://127.0.0.1:9/v1",
                                      "scoring": scoring})
    dataset = open_dataset(workspace, "tiny")
    data = type("Data", (), {"user_tokens": np.array(["[PAD]", "u1", "u2", "u3"]),
                             "item_tokens": np.array(["[PAD]", "b1", "b2", "b3", "b4"])})()
    context = TrainContext("bpr", 4, 5, 7, 1, device=None, dataset=dataset, data=data, workspace=workspace)
    judge = build_judge(options, context, dry=True, user_profiles={"u1": "Likes " + HUGE, "u2": "Likes sagas."})
    judge.scores(np.array([1, 2]), np.array([1, 2]))
    judge.update_profiles("update_fp", {1: [1, 2], 2: [1]}, epoch=0)
    requests = list(judge.dry_requests.values())
    assert {r.task for r in requests} == {score_task, "update_fp"} and len(requests) == 4
    budget = PromptBudget(2048, "openai", "local")
    assert all(budget.count(*longest_prompt(r)) <= budget.limit(r.params.get("max_tokens")) for r in requests)
    assert sum(1 for r in requests if r.cut) == 3  # all but (u2, b2): u1's profile or item b1's text
