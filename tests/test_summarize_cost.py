"""``llmhd summarize`` and ``llmhd cost`` end to end on a small hand-made dataset.

CLI tests call `llmhd_cli.cli.main` and catch its SystemExit (user errors: one line, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli, table_row, write_text_dataset

from llmhd_cli import plugins
from llmhd_cli.datasets import open_dataset
from llmhd_cli.llm.base import LLMResponse, Provider
from llmhd_cli.llm.estimate import (
    CostEstimator,
    EstimateRow,
    estimate,
    expected_output_tokens,
)
from llmhd_cli.llm.ledger import dataset_spending
from llmhd_cli.llm.profiles import ProfileStore
from llmhd_cli.llm.prompts import builtin_prompts_dir, template_set_for
from llmhd_cli.llm.settings import resolve_settings
from llmhd_cli.llm.tokens import count_prompt_tokens
from llmhd_cli.summarize import SummarizeOptions, summarize, summarize_requests

BOOKS = {
    "b1": "title: Dune; genres: science fiction, desert planet, politics",
    "b2": "title: Foundation; genres: science fiction, galactic empire",
    "b3": "title: Hyperion; genres: science fiction, pilgrims, time",
    "b4": "title: Pride and Prejudice; genres: romance, classic, manners",
    "b5": "title: Jane Eyre; genres: romance, gothic, governess",
    "b6": "title: Persuasion; genres: romance, classic, second chances",
    "b7": "title: The Hobbit; genres: fantasy, dragons, adventure",
    "b8": "title: Mistborn; genres: fantasy, magic system, heist",
}
TRAIN = {"u1": ["b1", "b2", "b4"], "u2": ["b4", "b5"], "u3": ["b7", "b8", "b1"], "u4": ["b2", "b3"], "u5": ["b6", "b5", "b7"]}
TEST = {"u1": ["b3"], "u2": ["b6"], "u3": ["b2"], "u4": ["b1"], "u5": ["b4"]}
RATINGS = {("u1", "b1"): 5, ("u1", "b2"): 4, ("u1", "b4"): 2, ("u2", "b4"): 5, ("u1", "b3"): 4}


def make_dataset(workspace: Path, name: str = "tiny", domain: str = "books", items: bool = True) -> Path:
    return write_text_dataset(workspace, name, TRAIN, TEST, BOOKS if items else None, domain, RATINGS, attributes=True)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: no provider configured, no keys, an empty user config."""
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "LLMHD_PROVIDER",
                "LLMHD_MODEL", "LLMHD_BASE_URL", "LLMHD_LLM_CACHE", "LLMHD_CONCURRENCY", "LLMHD_MAX_COST",
                "LLMHD_PRICES", "LLMHD_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMHD_CONFIG", str(tmp_path / "config.toml"))
    workspace = tmp_path / "ws"
    make_dataset(workspace)
    return workspace


# ------------------------------------------------------------------------------ summarize


def test_summarize_end_to_end_with_embed_then_all_cache_hits(env, capsys):
    code, out, err = run_cli(capsys, env, "summarize", "--dataset", "tiny")  # embed: the out-of-the-box default
    assert code == 0, err
    row = table_row(out, "books/summarize")
    assert row[1:] == ["embed", "all-MiniLM-L6-v2", "5", "0", "0", row[6], row[7], "0.0000"]
    assert "user summaries" in err and "calls/s" in err  # the progress bar (on stderr)
    store = ProfileStore(open_dataset(env, "tiny"))
    version = store.latest("user")
    assert (version.provider, version.model, version.template) == ("embed", "all-MiniLM-L6-v2", "books/summarize")
    assert version.template_hash == template_set_for("books").get("summarize").hash
    profiles = store.load(version)
    assert sorted(profiles) == sorted(TRAIN)
    assert set(profiles["u2"].splitlines()) == {BOOKS["b4"], BOOKS["b5"]}  # extractive, from the training items
    assert "is not a generative LLM" in out

    code, out, err = run_cli(capsys, env, "summarize", "--dataset", "tiny")
    assert code == 0, err
    assert table_row(out, "books/summarize")[3:6] == ["0", "5", "0"]  # calls, cache hits, failures
    code, out, err = run_cli(capsys, env, "summarize", "--dataset", "tiny", "--refresh")
    assert code == 0 and table_row(out, "books/summarize")[3:5] == ["5", "0"], err

    code, out, _ = run_cli(capsys, env, "cost", "--spent")
    assert code == 0
    assert table_row(out, "books/summarize")[1:6] == ["embed", "all-MiniLM-L6-v2", "10", "5", "0"]
    code, out, _ = run_cli(capsys, env, "cost", "--spent", "--dataset", "tiny")
    assert code == 0 and table_row(out, "books/summarize")[-1] == "3"  # three runs recorded with the dataset
    assert [(r.calls, r.cache_hits) for r in dataset_spending(open_dataset(env, "tiny"))] == [(10, 5)]


class FakeLLM(Provider):
    """A generative provider that answers by the book, except one malformed first answer."""

    name = "fake"
    models = ("fake-1",)
    key_env = None
    needs_key = False
    calls: list[str] = []

    def complete(self, request):
        FakeLLM.calls.append(request.prompt)
        if request.task == "item_profile":
            text = f"<profile>Readers who like {request.variables['item_id']}</profile>"
        elif request.variables.get("user_id") == "u1" and "summarization only" not in request.prompt:
            text = "The reader likes things."  # malformed (no tag): the client re-asks once with the hint
        elif request.variables.get("user_id") == "u1":
            text = "<summarization>The reader enjoys classic science fiction.</summarization>"
        else:
            text = f"<summarization>Summary for {request.variables.get('user_id')}.</summarization>"
        return LLMResponse(text=text, input_tokens=100, output_tokens=10, usage_reported=True, model=self.model)


@pytest.fixture
def fake_provider(monkeypatch):
    registry = plugins.registry("provider")
    monkeypatch.setitem(registry.items, "fake", FakeLLM)
    monkeypatch.setitem(registry.owners, "fake", "test")
    FakeLLM.calls = []
    return FakeLLM


def test_generative_provider_parses_reasks_and_versions_by_provider(env, fake_provider, capsys):
    code, out, err = run_cli(capsys, env, "summarize", "--dataset", "tiny", "--provider", "fake", "--items")
    assert code == 0, err
    assert table_row(out, "books/item_profile")[3] == "8"  # one call per item
    assert table_row(out, "books/summarize")[3:6] == ["6", "0", "0"]  # 5 users + one re-ask
    store = ProfileStore(open_dataset(env, "tiny"))
    profiles = store.load(store.latest("user", "fake"))
    assert profiles["u1"] == "The reader enjoys classic science fiction." and profiles["u2"] == "Summary for u2."
    # T_sum was fed the generated item profiles, not the raw texts.
    assert any("Readers who like b4" in p for p in FakeLLM.calls if "summarize characteristics" in p)
    # embed's version stays beside it: one file per provider/model/template hash.
    assert run_cli(capsys, env, "summarize", "--dataset", "tiny", "--provider", "embed")[0] == 0
    assert {v.provider for v, _ in store.versions("user")} == {"fake", "embed"}


def test_oracle_is_labelled_upper_bound(env, capsys):
    code, out, err = run_cli(capsys, env, "summarize", "--dataset", "tiny", "--provider", "oracle")
    assert code == 0, err
    assert "UPPER BOUND" in err and "UPPER BOUND" in out and "oracle (upper bound)" in out


@pytest.mark.parametrize("args,words", [
    (("--dataset", "yelp"), ["dataset 'yelp' is not prepared", "llmhd prepare --dataset yelp"]),
    (("--dataset", "tiny", "--provider", "openai"), ["needs an API key", "OPENAI_API_KEY"]),
    (("--dataset", "tiny", "--provider", "nope"), ["--provider", "unknown provider 'nope'", "embed"]),
    (("--dataset", "tiny", "--provider", "embed", "--model", "gpt-4o"), ["--model", "unknown model 'gpt-4o'"]),
    (("--dataset", "bare"), ["no item texts", "items.jsonl"]),
    (("--dataset", "tiny", "--concurrency", "0"), ["--concurrency", "at least 1"]),
    (("--dataset", "tiny", "--max-items", "0"), ["--max-items", "at least 1"]),
    (("--dataset", "tiny", "--prompts", "BROKEN"), ["score.toml", "key 'output.range'"]),
])
def test_bad_input_is_one_line_exit_2(env, capsys, tmp_path, args, words):
    make_dataset(env, "bare", items=False)
    broken = tmp_path / "broken" / "books"
    broken.mkdir(parents=True)
    text = (builtin_prompts_dir() / "books" / "score.toml").read_text().replace("range = [1, 10]", "range = [1, 12]")
    (broken / "score.toml").write_text(text)
    args = tuple(str(tmp_path / "broken") if a == "BROKEN" else a for a in args)
    code, out, err = run_cli(capsys, env, "summarize", *args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0]


def test_unknown_domain_uses_the_generic_set(env):
    make_dataset(env, "odd", domain="podcasts")
    result = summarize(env, resolve_settings(provider="embed"), SummarizeOptions("odd"))
    assert result.template_set == "items" and result.rows[0].template == "items/summarize"


# ------------------------------------------------------------------------------ cost


def test_estimate_counts_every_rendered_prompt(env, capsys):
    dataset = open_dataset(env, "tiny")
    result = estimate(env, "tiny", "openai", "gpt-4o-mini")
    row = result.rows[0]
    requests, _ = summarize_requests(dataset, template_set_for("books"), dataset.item_texts())
    expected_in = sum(count_prompt_tokens(r.system, r.prompt, "openai", "gpt-4o-mini")[0] for r in requests)
    assert (row.template, row.prompts, row.input_tokens, row.cached) == ("books/summarize", 5, expected_in, 0)
    out_each = expected_output_tokens(template_set_for("books").get("summarize"), "openai", "gpt-4o-mini")
    assert 134 <= out_each <= 200  # 100 words at ~4/3 token each plus the tags, at most max_tokens
    assert row.output_tokens == 5 * out_each
    assert row.cost == pytest.approx((expected_in * 0.15 + 5 * out_each * 0.60) / 1e6)

    code, out, _ = run_cli(capsys, env, "cost", "--dataset", "tiny", "--provider", "openai", "--model", "gpt-4o-mini")
    assert code == 0 and "ESTIMATE" in out and "nothing sent" in out
    cells = table_row(out, "summarize")
    assert cells[1:3] == ["books/summarize", "5"] and cells[4].rstrip("~") == f"{expected_in:,}"
    # No key needed for an estimate; embed is free and says so.
    code, out, _ = run_cli(capsys, env, "cost", "--dataset", "tiny")
    assert code == 0 and "embed" in out and "nothing is paid" in out


def test_estimate_sees_the_cache_and_takes_more_rows(env, capsys):
    assert run_cli(capsys, env, "summarize", "--dataset", "tiny", "--provider", "embed")[0] == 0
    assert estimate(env, "tiny", "embed", cache_dir=env / "llm-cache").rows[0].cached == 5

    def training_rows(ctx):
        return [EstimateRow("books/score", "train", 7, 70, 7, 0.01, note="added by another step")]

    # A plugin adds rows through the register_cost_estimators hook.
    import types

    from llmhd_cli.hookspecs import hookimpl

    @hookimpl
    def register_cost_estimators(register):
        register(CostEstimator("another-step", "test rows", training_rows))

    module = types.ModuleType("another-step")
    module.register_cost_estimators = register_cost_estimators
    plugins.load_plugins()
    plugins.pm.register(module, "another-step")
    plugins._registries.clear()
    try:
        result = estimate(env, "tiny", "openai", "gpt-4o-mini")
        assert [r.template for r in result.rows] == ["books/summarize", "books/score"]
        assert result.total.prompts == 12
    finally:
        plugins.pm.unregister(module)
        plugins._registries.clear()


def test_cost_accepts_the_models_summarize_accepts_with_a_base_url(env, capsys, monkeypatch):
    # A model only a local OpenAI-compatible server knows: both commands accept it with the
    # server's URL (flag or environment) and refuse it without one.
    url = "http://127.0.0.1:9/v1"  # nothing is sent: summarize is only resolved, cost estimates
    args = ("--provider", "openai", "--model", "local-gemma")
    assert resolve_settings(provider="openai", model="local-gemma", base_url=url).base_url == url
    code, out, err = run_cli(capsys, env, "cost", "--dataset", "tiny", *args, "--base-url", url)
    assert code == 0, err
    row = table_row(out, "summarize")
    assert "openai/local-gemma" in out and row[2] == "5" and row[6] == "0.0000"  # "*": a local server is free
    monkeypatch.setenv("LLMHD_BASE_URL", url)
    assert resolve_settings(provider="openai", model="local-gemma").base_url == url
    code, out, err = run_cli(capsys, env, "cost", "--dataset", "tiny", *args)
    assert code == 0, err
    monkeypatch.delenv("LLMHD_BASE_URL")
    for command in ("summarize", "cost"):
        code, out, err = run_cli(capsys, env, command, "--dataset", "tiny", *args)
        assert code == 2 and "unknown model 'local-gemma'" in err, (command, err)


def test_spent_with_nothing_spent(env, capsys):
    code, out, _ = run_cli(capsys, env, "cost", "--spent")
    assert code == 0 and "nothing spent yet" in out


def write_run(workspace: Path, name: str, dataset: str, epochs: list[dict], runs: str = "runs", **params) -> None:
    """A run folder as `llmhd train` (or, with ``runs`` under experiments/, `llmhd experiment
    run`) leaves it: config.toml and one log line per epoch, whose ``denoiser.llm`` are the
    judge's counters (`JudgeStats`, as the llmhd denoiser logs them)."""
    import tomli_w

    from llmhd_plugins.llmhd.judge import JudgeStats

    run = workspace / runs / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(tomli_w.dumps({"dataset": dataset, "denoiser": "llmhd", "denoiser_params": params}))
    lines = [{"epoch": n, "denoiser": {"candidates": 5, **({"llm": vars(JudgeStats(**e))} if e is not None else {})}}
             for n, e in enumerate(epochs)]
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_spent_on_a_dataset_counts_its_training_runs(env, capsys):
    assert run_cli(capsys, env, "summarize", "--dataset", "tiny", "--provider", "oracle")[0] == 0
    paid = dict(calls=10, cache_hits=2, failures=1, input_tokens=1000, output_tokens=50, cost=0.25)
    write_run(env, "a", "tiny", [None, paid, {**paid, "calls": 5, "cost": 0.5}], provider="openai", model="gpt-4o-mini")
    write_run(env, "b", "tiny", [paid], provider="openai", model="gpt-4o-mini")
    write_run(env, "c", "tiny", [paid])  # no provider named: the defaults of its time
    write_run(env, "other", "elsewhere", [paid], provider="openai", model="gpt-4o-mini")
    write_run(env, "dry", "tiny", [dict.fromkeys(paid, 0)], provider="openai", model="gpt-4o-mini")  # spent nothing
    (env / "runs" / "broken").mkdir()
    (env / "runs" / "broken" / "config.toml").write_text("not toml [")
    rows = {(r.template, r.provider): r for r in dataset_spending(open_dataset(env, "tiny"))}
    train = rows[("train: score, update_fp, update_fn", "openai")]
    assert (train.model, train.runs, train.calls, train.cache_hits, train.failures) == ("gpt-4o-mini", 2, 25, 6, 3)
    assert (train.input_tokens, train.output_tokens, train.cost) == (3000, 150, pytest.approx(1.0))
    assert rows[("train: score, update_fp, update_fn", "(default)")].calls == 10
    assert rows[("books/summarize", "oracle")].runs == 1 and len(rows) == 3
    code, out, err = run_cli(capsys, env, "cost", "--spent", "--dataset", "tiny")
    assert code == 0, err
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert "train: score, update_fp, update_fn openai gpt-4o-mini 25 6 3 3,000 150 1.0000 2" in lines, out
    assert "total 40 8 4 4,000 200 1.2500 4" in lines, out  # with summarize's 5 oracle calls
    # A run of an experiment grid (experiments/<name>/runs/) paid too.
    write_run(env, "grid-run", "tiny", [paid], runs="experiments/table1/runs", provider="openai", model="gpt-4o-mini")
    code, out, err = run_cli(capsys, env, "cost", "--spent", "--dataset", "tiny")
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    assert code == 0 and "total 50 10 5 5,000 250 1.5000 5" in lines, out


# ------------------------------------------------------------------------------ settings


def test_provider_table_of_the_user_config_reaches_the_provider(env, tmp_path):
    from llmhd_cli.llm.client import make_provider

    (tmp_path / "config.toml").write_text(
        '[llm]\nprovider = "openai"\ntimeout = 7\n\n'
        '[llm.openai]\ntop_logprobs = 3\nstructured_output = "json_schema"\n\n'
        '[llm.anthropic]\ntop_logprobs = 99\n')
    settings = resolve_settings(require_key=False)
    assert settings.provider == "openai" and settings.timeout == 7.0
    assert settings.options == {"top_logprobs": 3, "structured_output": "json_schema"}
    provider = make_provider(settings)
    assert (provider.top_logprobs, provider.structured_output) == (3, "json_schema")
    # Only the chosen provider's table applies.
    assert resolve_settings(provider="embed").options == {}


def test_toml_is_read_without_tomllib_as_on_python_3_10(tmp_path):
    """requires-python >= 3.10: every TOML read goes through llmhd_cli.config's tomllib-or-tomli."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    direct = [f"{p.relative_to(root)}:{n}" for folder in ("llmhd_cli", "plugins", "prompts") for p in (root / folder).rglob("*.py")
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if re.match(r"\s*(import tomllib|from tomllib )", line) and p.name != "config.py"]
    assert direct == []
    config = tmp_path / "config.toml"
    config.write_text('[llm]\nprovider = "openai"\n')
    script = (
        "import sys; sys.modules['tomllib'] = None\n"  # as on Python 3.10: `import tomllib` fails
        "from llmhd_cli.llm.pricing import load_prices\n"
        "from llmhd_cli.config import user_config\n"
        "from llmhd_cli.cli import _parse_settings\n"
        "assert load_prices().get('openai', 'gpt-4o-mini').input == 0.15\n"
        "assert user_config()['llm']['provider'] == 'openai'\n"
        "assert _parse_settings(('n_layers=3',)) == {'n_layers': 3}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LLMHD_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
