"""The decisions behind the commands, called without Click (`llmhd_cli.command_options`), and the
help texts the CLI builds from the provider registry instead of naming providers."""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmhd_cli import command_options as co
from llmhd_cli.errors import LLMHDError

# --------------------------------------------------------------------------- defaults


def test_dataset_defaults_to_the_config_then_ml100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert co.dataset_or_default("mine") == "mine"
    assert co.dataset_or_default(None) == "ml-100k"
    config = tmp_path / "config.toml"
    config.write_text('default_dataset = "books-small"\n')
    monkeypatch.setenv("LLMHD_CONFIG", str(config))
    assert co.dataset_or_default(None) == "books-small"
    assert co.dataset_or_default("") == ""  # named, even if empty: check_name refuses it later


def test_summarize_options_fill_defaults_and_refuse_fallback_without_batch() -> None:
    from llmhd_cli.summarize import DEFAULT_MAX_ITEMS

    options = co.summarize_options(None, None, False, None)
    assert (options.dataset, options.max_items, options.items, options.batch) == ("ml-100k", DEFAULT_MAX_ITEMS, False, False)
    options = co.summarize_options("d", None, True, 7, batch=True, batch_fallback=True)
    assert (options.dataset, options.max_items, options.items, options.batch_fallback) == ("d", 7, True, True)
    with pytest.raises(LLMHDError, match="--batch-fallback: only with --batch"):
        co.summarize_options("d", None, False, None, batch_fallback=True)


# --------------------------------------------------------------------------- train


def test_train_flags_split_into_the_config_and_the_denoisers_options(tmp_path: Path) -> None:
    config = co.train_config_from_flags(None, {"denoiser": "tce", "drop_rate": 0.3, "epochs": 3}, {})
    assert (config.denoiser, config.epochs, config.denoiser_params) == ("tce", 3, {"drop_rate": 0.3})
    # A flag overrides the file's denoiser_params and keeps the file's other options.
    file = tmp_path / "train.toml"
    file.write_text('denoiser = "tce"\n[denoiser_params]\ndrop_rate = 0.1\nnum_gradual = 5\n')
    config = co.train_config_from_flags(file, {"drop_rate": 0.25}, {"n_layers": 2})
    assert config.denoiser_params == {"drop_rate": 0.25, "num_gradual": 5}
    assert config.backbone_params == {"n_layers": 2}


def test_a_denoiser_option_of_another_denoiser_names_its_owner() -> None:
    with pytest.raises(LLMHDError, match=r"^--drop-rate: an option of denoiser tce, not of 'none'$"):
        co.train_config_from_flags(None, {"drop_rate": 0.3}, {})
    with pytest.raises(LLMHDError, match=r"^--beta: an option of denoiser rce, not of 'tce'$"):
        co.train_config_from_flags(None, {"denoiser": "tce", "beta": 0.1}, {})
    with pytest.raises(LLMHDError, match="--denoiser"):  # an unknown denoiser with options: the registry says so
        co.train_config_from_flags(None, {"denoiser": "no-such", "drop_rate": 0.3}, {})


def test_train_config_checks_the_backbone_settings() -> None:
    with pytest.raises(LLMHDError, match="--set n_layer: not a setting of backbone 'lightgcn'"):
        co.train_config_from_flags(None, {}, {"n_layer": 3})
    with pytest.raises(LLMHDError, match="--backbone"):
        co.train_config_from_flags(None, {"backbone": "no-such-backbone"}, {})


# --------------------------------------------------------------------------- evaluate, experiment


@pytest.mark.parametrize("group,baseline,paired,error", [
    (False, None, "t", None),
    (True, None, "t", None),
    (True, "denoiser=none", "wilcoxon", None),
    (False, "denoiser=none", "t", "--baseline: only meaningful with --group"),
    (True, None, "wilcoxon", "--paired-test: only meaningful with --group --baseline"),
    (False, None, "wilcoxon", "--paired-test"),
])
def test_evaluate_flags_that_need_each_other(group: bool, baseline: str | None, paired: str, error: str | None) -> None:
    if error is None:
        co.check_evaluate_flags(group, baseline, paired)
    else:
        with pytest.raises(LLMHDError, match=error):
            co.check_evaluate_flags(group, baseline, paired)


def test_experiment_cost_epochs_cap() -> None:
    co.check_epochs_cap(None)
    co.check_epochs_cap(1)
    for bad in (0, -3):
        with pytest.raises(LLMHDError, match=f"--epochs: must be at least 1, got {bad}"):
            co.check_epochs_cap(bad)


# --------------------------------------------------------------------------- cost


NO_OVERRIDES = {"backbone": None, "objective": None, "batch_size": None, "seed": None, "device": None}


@pytest.mark.parametrize("fields", [
    {"with_training": True},
    {"structured": True},
    {"run_dir": Path("somewhere")},
    {"epochs": 2},
    {"overrides": {**NO_OVERRIDES, "seed": 7}},
    {"overrides": {**NO_OVERRIDES, "backbone": "ngcf"}},
    {"denoiser_options": {"eps_v": 0.5}},
    {"denoiser_options": {"eps_v": 0.5, "scoring": None}},
])
def test_any_training_flag_makes_cost_run_a_dry_run(fields: dict[str, Any]) -> None:
    assert co.CostRequest(**fields).dry_run


def test_no_training_flag_no_dry_run() -> None:
    assert not co.CostRequest().dry_run
    # Flags left at None (not given) are not training flags; --batch and --spent are not either.
    assert not co.CostRequest(overrides=NO_OVERRIDES, denoiser_options={"eps_v": None}, batch=True).dry_run
    assert not co.CostRequest(spent=True).dry_run


def test_spent_refuses_an_estimates_flags() -> None:
    co.CostRequest(spent=True).check_spent()
    co.CostRequest(with_training=True, batch=True).check_spent()  # an estimate may have both
    with pytest.raises(LLMHDError, match=r"cost --spent: the training flags .* are for an estimate"):
        co.CostRequest(spent=True, epochs=3).check_spent()
    with pytest.raises(LLMHDError, match="cost --spent: --batch is for an estimate"):
        co.CostRequest(spent=True, batch=True).check_spent()


class FakeEstimator:
    """Records what `CostRequest.dry_run_config` asks of a training estimator."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def train_config(self, *args: Any) -> str:
        self.calls.append(args)
        return "config"


def test_dry_run_config_passes_the_request_and_checks_its_run_dir(tmp_path: Path) -> None:
    request = co.CostRequest(epochs=4, overrides={"seed": 1}, denoiser_options={"eps_v": 0.5}, structured=True,
                             run_dir=tmp_path / "new")
    estimator = FakeEstimator()
    assert request.dry_run_config(estimator, "d", "p", "m", None, "http://x") == "config"
    assert estimator.calls == [("d", "p", "m", None, 4, {"seed": 1}, {"eps_v": 0.5, "structured": True}, "http://x")]
    co.CostRequest(structured=False).dry_run_config(estimator, "d", "p", "m", None, None)
    assert estimator.calls[-1][6] == {"structured": None}  # not given: the estimator's default
    (tmp_path / "empty").mkdir()
    co.CostRequest(run_dir=tmp_path / "empty").dry_run_config(estimator, "d", "p", "m", None, None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(LLMHDError, match="--run-dir .*full: folder is not empty"):
        co.CostRequest(run_dir=tmp_path / "full").dry_run_config(estimator, "d", "p", "m", None, None)


def test_dry_run_needs_a_registered_estimator() -> None:
    with pytest.raises(LLMHDError, match="need a plugin that dry-runs training"):
        co.CostRequest(with_training=True).dry_run_config(None, "d", "p", "m", None, None)


def test_spending_reads_the_ledger_filters_by_provider_and_adds_a_total(tmp_path: Path) -> None:
    from llmhd_cli.llm.ledger import Ledger

    cache = tmp_path / "cache"
    empty = co.spending(tmp_path, cache)
    assert (empty.rows, empty.where, empty.per_run) == ([], str(cache), False)
    ledger = Ledger(cache)
    ledger.add("books/summarize", "openai", "gpt-4o-mini", calls=3, input_tokens=30, output_tokens=6, cost=0.5)
    ledger.add("books/score", "oracle", "train", calls=10, cache_hits=4)
    ledger.close()
    shown = co.spending(tmp_path, cache)
    assert [(r.template, r.provider, r.calls) for r in shown.rows] == [
        ("books/score", "oracle", 10), ("books/summarize", "openai", 3), ("total", "", 13)]
    assert shown.rows[-1].cost == pytest.approx(0.5) and shown.rows[-1].cache_hits == 4
    assert shown.title == f"spent (ledger of {cache})"
    only = co.spending(tmp_path, cache, provider="openai")
    assert [(r.template, r.calls, r.input_tokens) for r in only.rows] == [("books/summarize", 3, 30), ("total", 3, 30)]
    assert co.spending(tmp_path, cache, provider="anthropic").rows == []


def test_spending_of_a_missing_dataset_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(LLMHDError, match="no-such"):
        co.spending(tmp_path, tmp_path / "cache", dataset="no-such")


# --------------------------------------------------------------------------- help from the registry


@contextlib.contextmanager
def provider_plugin(*classes: type) -> Iterator[None]:
    """A plugin registering provider ``classes``, for a block (registering drops built registries)."""
    from llmhd_cli import plugins
    from llmhd_cli.hookspecs import hookimpl

    @hookimpl
    def register_providers(register):
        for cls in classes:
            register(cls)

    module = types.ModuleType("test-cli-library-providers")
    module.register_providers = register_providers  # type: ignore[attr-defined]
    plugins.load_plugins().register(module, module.__name__)
    try:
        yield
    finally:
        plugins.pm.unregister(name=module.__name__)


def _providers() -> tuple[type, type]:
    from llmhd_cli.llm.base import Provider

    class Peek(Provider):
        name = "peek-labels"
        description = "a test diagnostic that reads the labels"
        models = ("all",)
        generative = False
        upper_bound = True
        needs_key = False
        key_env = None

    class Batchy(Provider):
        name = "batchy"
        description = "a test provider with a batch API"
        models = ("b-1",)
        key_env = "BATCHY_KEY"
        supports_batch = True

    return Peek, Batchy


def test_provider_help_is_built_from_the_registry_when_shown() -> None:
    from llmhd_cli.commands.common import _provider_help, batch_help, provider_names

    before = _provider_help()
    assert "peek-labels" not in before
    peek, batchy = _providers()
    with provider_plugin(peek, batchy):
        text = _provider_help()
        assert "peek-labels (UPPER BOUND diagnostic" in text and ", batchy," in text
        assert "batchy (" not in text  # a generative provider without marks is just its name
        assert "peek-labels" in provider_names(upper_bound=True) and "batchy" not in provider_names(upper_bound=True)
        assert "batchy" in provider_names(supports_batch=True)
        assert "batchy" in batch_help("Send them in batches")()
    assert "peek-labels" not in _provider_help()


def test_stats_table_marks_upper_bound_rows_by_the_registry() -> None:
    from rich.console import Console

    from llmhd_cli.commands.render import stats_table
    from llmhd_cli.llm.ledger import SpentRow

    peek, _ = _providers()
    rows = [SpentRow("books/score", "peek-labels", "all", 1), SpentRow("books/score", "openai", "gpt-4o-mini", 1)]
    with provider_plugin(peek):
        console = Console(width=200, record=True)
        console.print(stats_table("t", rows))
    text = console.export_text()
    assert "peek-labels (upper bound)" in text and "openai (upper bound)" not in text
