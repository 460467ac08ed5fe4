"""``llmhd cost`` with training flags: a dry run of training with the llmhd denoiser.

The dataset is MovieLens-100K as bundled with RecBole (titles as item texts), cut to its
first 150 users and prepared once per module with a 10-core. The dry runs use a fast LD
schedule (--alpha 50) and --eps-gamma 2 so that a few epochs reach every template: T_score
from the third epoch (the score history needs two), T_fp / T_fn once a pair is flagged twice.
CLI tests call `llmhd_cli.cli.main` and catch its SystemExit (user errors: one line, exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run_cli, table_row, write_ml100k_cut

from llmhd_cli import plugins
from llmhd_cli.cli import main

DATASET = "small"
N_USERS = 150
FAST = ("--epochs", "4", "--alpha", "50", "--eps-gamma", "2", "--batch-size", "1024", "--device", "cpu")
OPENAI = ("--provider", "openai", "--model", "gpt-4o-mini")


def counts(out: str, name: str) -> tuple[int, int, int]:
    """(prompts, tokens in, tokens out) of a Table 4 row."""
    cells = table_row(out, name)
    numbers = [int(c.rstrip("~").replace(",", "")) for c in cells if re.fullmatch(r"[\d,]+~?", c)]
    prompts, _cached, tokens_in, tokens_out = numbers[:4]
    return prompts, tokens_in, tokens_out


@pytest.fixture(scope="module", autouse=True)
def clean_env() -> Iterator[None]:
    """No developer config, no provider settings, and an OpenAI endpoint that answers nothing."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("ANTHROPIC_API_KEY", "LLMHD_PROVIDER", "LLMHD_MODEL", "LLMHD_BASE_URL", "LLMHD_LLM_CACHE",
                    "LLMHD_CONCURRENCY", "LLMHD_MAX_COST", "LLMHD_PRICES", "LLMHD_WORKSPACE"):
            mp.delenv(var, raising=False)
        mp.setenv("LLMHD_CONFIG", "/nonexistent/llmhd-config.toml")
        mp.setenv("OPENAI_API_KEY", "sk-test-never-used")
        mp.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens on port 9 (discard)
        yield


@pytest.fixture(autouse=True)
def no_llm_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any client or provider call fails the test: a dry run sends nothing."""
    import llmhd_cli.llm.client as client

    def refuse(*args, **kwargs):
        raise AssertionError("the dry run built an LLM client")

    monkeypatch.setattr(client, "make_client", refuse)
    for cls in plugins.registry("provider").items.values():
        monkeypatch.setattr(cls, "complete", refuse)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, clean_env: None) -> Path:
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), DATASET, N_USERS, with_items=True)
    ws = tmp_path_factory.mktemp("ws")
    main(["--workspace", str(ws), "prepare", "--dataset", DATASET, "--source", str(source), "--kcore", "10",
          "--domain", "movies"])
    assert (ws / "datasets" / DATASET / "items.jsonl").exists()
    return ws


@pytest.fixture(scope="module")
def baseline(workspace: Path) -> str:
    """The table of one dry run with the fast settings and eps_v 0.5 (shared by several tests)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--workspace", str(workspace), "cost", "-d", DATASET, *OPENAI, *FAST, "--eps-v", "0.5"])
    return out.getvalue()


# ------------------------------------------------------------------------------ tests


def test_table4_rows_and_nothing_sent(workspace: Path, baseline: str, capsys: pytest.CaptureFixture) -> None:
    out = baseline
    flat = " ".join(out.split())  # notes wrap at the console width
    assert "ESTIMATE" in flat and "nothing sent" in flat and "Table 4" in flat, out
    assert "an ESTIMATE from a dry run: 4 epochs" in flat and "never called" in flat, out
    for name in ("T_sum", "T_score", "T_fp", "T_fn", "total"):
        table_row(out, name)
    assert table_row(out, "T_sum")[1:3] == ["summarize", "movies/summarize"]
    assert table_row(out, "T_score")[2] == "movies/score_list"  # listwise by default (docs/cost.md)
    score, fp, fn, total = (counts(out, n) for n in ("T_score", "T_fp", "T_fn", "total"))
    assert score[0] > 0 and fp[0] > 0 and fn[0] > 0, out
    assert total[0] == counts(out, "T_sum")[0] + score[0] + fp[0] + fn[0]
    # A list's answer is a line "<n>: <s>10</s>" (a few tokens) per item, at most 8 items (--list-size);
    # a profile rewrite is up to 100 words.
    assert score[2] <= 8 * 5 * score[0] and fp[2] > 100 * fp[0]
    assert "stand-ins" in flat  # no summaries yet: profiles made from the users' item texts
    # Nothing reached the cache or the ledger, and the workspace has no run from the dry run.
    code, spent, _ = run_cli(capsys, workspace, "cost", "--spent")
    assert code == 0 and "nothing spent yet" in spent
    assert not (workspace / "runs").exists()


def test_costs_money_for_a_priced_model(baseline: str) -> None:
    cells = table_row(baseline, "T_score")
    money = [float(c) for c in cells if re.fullmatch(r"\d+\.\d{4}", c)]
    assert money and money[0] > 0


def test_deterministic_for_a_seed(workspace: Path, baseline: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, workspace, "cost", "-d", DATASET, *OPENAI, *FAST, "--eps-v", "0.5")
    assert code == 0, err
    for name in ("T_score", "T_fp", "T_fn"):
        assert counts(out, name) == counts(baseline, name)


def test_larger_eps_v_scores_at_least_as_many(workspace: Path, baseline: str, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, workspace, "cost", "-d", DATASET, *OPENAI, *FAST, "--eps-v", "0.1")
    assert code == 0, err
    low, high = counts(out, "T_score")[0], counts(baseline, "T_score")[0]
    assert 0 < low <= high
    # PU does not depend on eps_v: in a dry run the same samples are dropped whatever B_HC is.
    assert counts(out, "T_fp") == counts(baseline, "T_fp")


def test_stored_profiles_are_used_and_variant_ld_scores_nothing(workspace: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    from llmhd_cli.datasets import open_dataset
    from llmhd_plugins.llmhd.dry_run import DryRunReport, dry_run, dry_run_config

    dataset = open_dataset(workspace, DATASET)
    users, _ = dataset.read_split("train")
    shipped = dataset.path / "user_profiles.jsonl"
    shipped.write_text("".join(json.dumps({"user_id": u, "profile": f"PROFILE-{u} likes films"}) + "\n"
                               for u in sorted(set(users.tolist()))))
    try:
        config = dry_run_config(DATASET, "openai", "gpt-4o-mini", epochs=3,
                                overrides={"batch_size": 1024, "device": "cpu"}, llmhd={"alpha": 50.0})
        report = dry_run(workspace, dataset, config, run_dir=tmp_path / "run")
        assert isinstance(report, DryRunReport) and not report.stand_in_profiles
        assert report.requests["score_list"] and all("PROFILE-" in r.prompt for r in report.requests["score_list"])
        assert (tmp_path / "run" / "log.jsonl").exists()  # --run-dir keeps the dry run's directory
        config = dry_run_config(DATASET, "openai", "gpt-4o-mini", epochs=3,
                                overrides={"batch_size": 1024, "device": "cpu"}, llmhd={"alpha": 50.0, "variant": "ld"})
        assert dry_run(workspace, dataset, config).requests == {}
    finally:
        shipped.unlink()


def test_a_model_only_the_base_url_serves(workspace: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # The URL as a flag must reach the dry run's judge too (it resolves its settings again).
    monkeypatch.delenv("OPENAI_BASE_URL")
    local = ("--provider", "openai", "--model", "local-gemma", "--base-url", "http://127.0.0.1:9/v1")
    code, out, err = run_cli(capsys, workspace, "cost", "-d", DATASET, *local, *FAST, "--epochs", "3")
    assert code == 0, err
    assert "openai/local-gemma" in out and counts(out, "T_score")[0] > 0


def test_without_training_flags_only_t_sum(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(capsys, workspace, "cost", "-d", DATASET, *OPENAI)
    assert code == 0, err
    assert table_row(out, "summarize")[1] == "movies/summarize"
    assert "T_score" not in out and "dry run" not in out


@pytest.mark.parametrize("args,words", [
    (("--eps-v", "1.5"), ["--eps-v", "[0, 1]"]),
    (("--eps-l-max", "-0.1"), ["--eps-l-max", "[0, 1]"]),
    (("--alpha", "0"), ["--alpha", "> 0"]),
    (("--epochs", "0"), ["--epochs", "at least 1"]),
    (("--eps-gamma", "0"), ["--eps-gamma", "at least 1"]),
    (("--variant", "nope"), ["--variant", "expected one of", "full"]),
    (("--backbone", "nope"), ["--backbone", "unknown backbone 'nope'"]),
    (("--objective", "nope"), ["--objective", "bpr"]),
    (("--device", "tpu"), ["--device", "auto, cpu or cuda"]),
    (("--spent", "--eps-v", "0.5"), ["--spent", "for an estimate"]),
    (("--train", "-d", "lastfm"), ["lastfm", "llmhd prepare"]),
])
def test_bad_flags_one_line_exit_2(workspace: Path, capsys: pytest.CaptureFixture, args: tuple[str, ...],
                                   words: list[str]) -> None:
    if "-d" not in args:
        args = ("-d", DATASET, *args)
    code, out, err = run_cli(capsys, workspace, "cost", *args)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in out + err


def test_run_dir_must_be_empty(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    code, out, err = run_cli(capsys, workspace, "cost", "-d", DATASET, "--train", "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "not empty" in err


@pytest.mark.slow
def test_design_card_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """``llmhd cost --eps-v 0.5``: default dataset (ml-100k, prepared on first use), provider and model."""
    monkeypatch.setenv("LLMHD_WORKSPACE", str(tmp_path / "ws"))
    code, out, err = run_cli(capsys, None, "cost", "--eps-v", "0.5")
    assert code == 0, err
    assert "dataset 'ml-100k' was not prepared" in err
    flat = " ".join(out.split())
    assert "ESTIMATE for ml-100k with embed" in flat and "dry run: 10 epochs" in flat, out
    for name in ("T_sum", "T_score", "T_fp", "T_fn", "total"):
        table_row(out, name)
    assert counts(out, "T_score")[0] > 0
    assert not (tmp_path / "ws" / "runs").exists()
