"""Third-party plugins: the example package installed for real, found through its entry point.

The install test pip-installs ``examples/llmhd-example-plugin`` into the running environment
(offline: no index, no build isolation, setuptools from this venv), drives the installed
``llmhd`` console script in subprocesses (a fresh process is what loads entry points), and
uninstalls the package afterwards so other tests see the built-ins only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import assert_user_error, call_main, run_cli, table_row, write_ml100k_cut

from llmhd_cli.denoising import SampleBatch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "llmhd-example-plugin"
DIST = "llmhd-example-plugin"


def _installed() -> bool:
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=300)


def _llmhd_command() -> list[str]:
    script = Path(sys.executable).parent / "llmhd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "llmhd_cli"]


@pytest.fixture(scope="module")
def example_plugin() -> Iterator[None]:
    """The example plugin pip-installed for this module; uninstalled again afterwards."""
    was_installed = _installed()
    if not was_installed:
        result = _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "-e", str(EXAMPLE))
        assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield
    finally:
        if not was_installed:  # leave a developer's own install alone
            result = _pip("uninstall", "-y", DIST)
            assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the CLI subprocesses: a private workspace, no user config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHD_")}
    env["LLMHD_WORKSPACE"] = str(tmp_path_factory.mktemp("ws"))
    env["LLMHD_CONFIG"] = str(tmp_path_factory.mktemp("cfg") / "absent.toml")
    return env


def llmhd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_llmhd_command(), *args], capture_output=True, text=True, env=env, timeout=600)


def small_source(folder: Path, n_users: int = 150) -> Path:
    """RecBole's bundled MovieLens-100K, first ``n_users`` users, as atomic files."""
    import recbole

    frame = pd.read_csv(Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.inter", sep="\t")
    users = np.sort(frame["user_id:token"].unique())[:n_users]
    folder.mkdir(parents=True, exist_ok=True)
    frame[frame["user_id:token"].isin(users)].to_csv(folder / "small.inter", sep="\t", index=False)
    return folder


@pytest.mark.slow
def test_installed_plugin_lists_trains_and_evaluates(example_plugin: None, cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    listing = llmhd(cli_env, "plugins")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"example\s*│\s*backbone\s*│\s*mf\s*│", listing.stdout), listing.stdout
    assert re.search(r"example\s*│\s*denoiser\s*│\s*clip\s*│", listing.stdout), listing.stdout
    assert re.search(r"example\s*│\s*provider\s*│\s*compat-chat\s*│", listing.stdout), listing.stdout
    assert re.search(r"llmhd_plugins\.backbones\s*│\s*backbone\s*│\s*lightgcn, ncl, ngcf, sgl", listing.stdout)

    helptext = llmhd(cli_env, "train", "--help")
    assert "--clip-k FLOAT" in helptext.stdout and "clip: drop positives" in helptext.stdout

    prepared = llmhd(cli_env, "prepare", "--dataset", "small", "--source", str(small_source(tmp_path / "src")), "--kcore", "10")
    assert prepared.returncode == 0, prepared.stderr

    run_dir = tmp_path / "run"
    trained = llmhd(cli_env, "train", "-d", "small", "--backbone", "mf", "--denoiser", "clip", "--clip-k", "1.5",
                    "--epochs", "2", "--batch-size", "2048", "--device", "cpu", "--run-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    assert "training mf (bpr, denoiser clip)" in trained.stdout
    config = (run_dir / "config.toml").read_text()
    assert 'backbone = "mf"' in config and "clip_k = 1.5" in config
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2
    for record in log:
        # The seam was in BPR's `loss` attribute (else nothing would be judged): a few
        # positives lie beyond 1.5 standard deviations, most do not.
        assert 0 < record["dropped"] < 0.2 * record["samples"]
    metrics = json.loads((run_dir / "metrics.json").read_text())

    evaluated = llmhd(cli_env, "evaluate", str(run_dir), "--format", "json")
    assert evaluated.returncode == 0, evaluated.stderr
    (row,) = json.loads(evaluated.stdout)
    assert (row["backbone"], row["denoiser"]) == ("mf", "clip")
    assert {k: row[k] for k in metrics["test"]} == metrics["test"]

    recomputed = llmhd(cli_env, "evaluate", str(run_dir), "--recompute", "--device", "cpu", "--format", "json")
    assert recomputed.returncode == 0, recomputed.stderr
    (again,) = json.loads(recomputed.stdout)
    assert {k: again[k] for k in metrics["test"]} == pytest.approx(metrics["test"], abs=1e-12)

    refused = llmhd(cli_env, "train", "-d", "small", "--backbone", "mf", "--denoiser", "clip", "--clip-k", "-1",
                    "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == ["error: --clip-k: must be >= 0, got -1.0"]
    wrong = llmhd(cli_env, "train", "-d", "small", "--denoiser", "tce", "--clip-k", "1", "--epochs", "1")
    assert wrong.returncode == 2 and "--clip-k: an option of denoiser clip, not of 'tce'" in wrong.stderr


def test_clip_denoiser_drops_outlying_positives_only() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from llmhd_example_plugin import ClipDenoiser
    finally:
        sys.path.remove(str(EXAMPLE))

    # nine positives with loss 1 and one with loss 10 (mean 1.9, std 2.846): 10 > 1.9 + 2 * 2.846
    losses = torch.tensor([1.0] * 9 + [10.0, 50.0])
    labels = torch.tensor([1.0] * 10 + [0.0])  # the last sample is a negative (BCE)
    n = len(losses)
    batch = SampleBatch("bce", losses, torch.zeros(n), labels, torch.zeros(n, dtype=torch.long), torch.arange(n), None,
                        torch.arange(n), step=0, epoch=0)
    decision = ClipDenoiser(k=2.0).decide(batch)
    assert decision.dropped.nonzero().flatten().tolist() == [9]
    assert decision.weights.tolist() == [1.0] * 9 + [0.0, 1.0]
    assert not ClipDenoiser(k=3.0).decide(batch).dropped.any()  # 10 < 1.9 + 3 * 2.846


# ------------------------------------------------------------------ the backbone contract, in process

SMALL = "small"


def _example_module():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import llmhd_example_plugin
    finally:
        sys.path.remove(str(EXAMPLE))
    return llmhd_example_plugin


@contextlib.contextmanager
def registered(name: str, *backbones: Any) -> Iterator[None]:
    """A plugin ``name`` registering ``backbones``, loaded as an entry point would be, for a block."""
    from llmhd_cli import plugins
    from llmhd_cli.hookspecs import hookimpl

    @hookimpl
    def register_backbones(register):
        for backbone in backbones:
            register(backbone)

    module = types.ModuleType(name)
    module.register_backbones = register_backbones
    # Registering (and unregistering) drops the registries built so far: nothing else to reset.
    plugins.load_plugins().register(module, name)
    try:
        yield
    finally:
        plugins.pm.unregister(name=name)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ml-100k's first 150 users with item texts, prepared and summarized by the oracle (no model)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMHD_CONFIG", str(tmp_path_factory.mktemp("cfg") / "absent.toml"))
        for name in [k for k in os.environ if k.startswith("LLMHD_") and k != "LLMHD_CONFIG"]:
            mp.delenv(name)
        source = write_ml100k_cut(tmp_path_factory.mktemp("src"), SMALL, 150, with_items=True)
        ws = tmp_path_factory.mktemp("ws")
        assert call_main(ws, "prepare", "-d", SMALL, "--source", str(source), "--kcore", "10", "--domain", "movies") == 0
        assert call_main(ws, "summarize", "-d", SMALL, "--provider", "oracle") == 0
        yield ws


@pytest.mark.parametrize("change,words", [
    (dict(final_embeddings=None), ["final_embeddings is not set", "BPR.forward() takes arguments (user, item)",
                                   "dot_product_scores=False"]),
    (dict(model_class="recbole.model.general_recommender.NoSuchModel"), ["model_class", "NoSuchModel", "cannot be imported"]),
    (dict(loss_attr=None), ["neither loss_attr nor train_loss"]),
])
def test_a_backbone_that_breaks_the_contract_is_refused_at_registration(change: dict, words: list[str],
                                                                         capsys: pytest.CaptureFixture) -> None:
    from llmhd_cli import plugins
    from llmhd_cli.errors import LLMHDError

    broken = dataclasses.replace(_example_module().MF, name="mf2", **change)
    with registered("broken-plugin", broken):
        with pytest.raises(LLMHDError) as error:
            plugins.registry("backbone")
        for word in ["plugin 'broken-plugin' registers backbone 'mf2'", *words]:
            assert word in str(error.value)
        code, out, err = run_cli(capsys, None, "plugins")
        assert_user_error(code, out, err, "broken-plugin", "mf2")
    assert "mf2" not in plugins.registry("backbone").items


def test_a_registered_object_that_is_not_a_backbone_is_refused() -> None:
    from llmhd_cli import plugins
    from llmhd_cli.errors import LLMHDError

    with registered("odd-plugin", types.SimpleNamespace(name="odd")):
        with pytest.raises(LLMHDError, match="plugin 'odd-plugin' registers backbone 'odd' .*not a llmhd_cli.backbones.Backbone"):
            plugins.registry("backbone")


@pytest.mark.slow
def test_mf_trains_with_the_llmhd_denoiser(workspace: Path, capsys: pytest.CaptureFixture) -> None:
    """The example's mf through the whole llmhd method (oracle scores: no model to load)."""
    with registered("example-in-process", _example_module().MF):
        run_dir = workspace / "runs" / "mf-llmhd"  # where `cost --spent -d` looks for training runs
        code, out, err = run_cli(capsys, workspace, "train", "-d", SMALL, "--backbone", "mf", "--denoiser", "llmhd",
                                 "--provider", "oracle", "--alpha", "50", "--eps-gamma", "2", "--epochs", "4",
                                 "--batch-size", "256", "--learning-rate", "0.01", "--early-stop", "0",
                                 "--device", "cpu", "--threads", "1", "--run-dir", str(run_dir))
        assert code == 0, err
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    last = log[-1]["denoiser"]
    # The score history had mf's embeddings: variance pruning chose hard candidates the LLM scored.
    assert last["hard_candidates"] > 0 and last["scored_pairs"] > 0, last
    assert last["llm"]["calls"] + last["llm"]["cache_hits"] > 0 and last["llm"]["failures"] == 0
    assert log[-1]["valid"]["ndcg@10"] > 2 * log[0]["valid"]["ndcg@10"] > 0  # it learned
    # What the run asked the LLM is counted with the dataset's spending.
    code, out, err = run_cli(capsys, workspace, "cost", "--spent", "-d", SMALL)
    assert code == 0, err
    calls = sum(record["denoiser"]["llm"]["calls"] for record in log)
    cells = table_row(out, "train: score, update_fp, update_fn")
    assert cells[1:4] == ["oracle (upper bound)", "train", f"{calls:,}"], out  # runs record the resolved model


def test_a_backbone_without_dot_product_scores_is_refused_by_llmhd(workspace: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import llmhd_cli.training

    opted_out = dataclasses.replace(_example_module().MF, name="mf-nodot", final_embeddings=None, dot_product_scores=False)
    with registered("nodot-plugin", opted_out):
        base = ("-d", SMALL, "--backbone", "mf-nodot", "--epochs", "1", "--device", "cpu")
        with monkeypatch.context() as mp:  # the cost dry run refuses it before training
            mp.setattr(llmhd_cli.training, "train", lambda *a, **k: pytest.fail("the dry run trained"))
            code, out, err = run_cli(capsys, workspace, "cost", *base, "--provider", "oracle")
        assert_user_error(code, out, err, "--backbone mf-nodot", "denoiser 'llmhd'", "dot_product_scores=False")
        train = ("train", *base, "--threads", "1")
        code, out, err = run_cli(capsys, workspace, *train, "--denoiser", "llmhd", "--variant", "ld",
                                 "--run-dir", str(tmp_path / "refused"))
        assert_user_error(code, out, err, "--backbone mf-nodot", "denoiser 'llmhd'")
        assert not (tmp_path / "refused").exists()  # refused before the first epoch: no run folder left
        # Denoisers that need no embeddings train it as before.
        code, out, err = run_cli(capsys, workspace, *train, "--denoiser", "tce", "--run-dir", str(tmp_path / "tce"))
        assert code == 0, err


def test_registries_are_built_through_pluggys_hook_calls() -> None:
    """Hook monitoring (pluggy's tracing) sees every registry being built: no hook implementation
    is called behind pluggy's back."""
    from llmhd_cli import plugins

    called: list[str] = []
    undo = plugins.load_plugins().add_hookcall_monitoring(lambda name, impls, kwargs: called.append(name),
                                                          lambda outcome, name, impls, kwargs: None)
    try:
        with registered("monitored-plugin", dataclasses.replace(_example_module().MF, name="mf-monitored")):
            assert plugins.registry("backbone").owners["mf-monitored"] == "monitored-plugin"
    finally:
        undo()
    assert "register_backbones" in called
    assert "mf-monitored" not in plugins.registry("backbone").items  # gone with its plugin


# ------------------------------------------------------------------ choosing the entry-point plugins


@pytest.fixture
def fake_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution with an `llmhd` entry point 'fakeplug' (a dist-info folder on
    sys.path, as pip leaves one), registering the denoiser 'fake'."""
    (tmp_path / "llmhd_fakeplug.py").write_text(
        "from llmhd_cli.denoising import DenoiserSpec\n"
        "from llmhd_cli.hookspecs import hookimpl\n\n"
        "@hookimpl\n"
        "def register_denoisers(register):\n"
        "    register(DenoiserSpec('fake', 'a test plugin', lambda options, context: None))\n")
    info = tmp_path / "llmhd_fakeplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmhd-fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[llmhd]\nfakeplug = llmhd_fakeplug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("LLMHD_LOAD_PLUGINS", "LLMHD_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    return "fakeplug"


def _loaded_names() -> set[str]:
    from llmhd_cli import plugins

    manager = plugins.load_into(plugins.new_manager())  # a manager of its own: the process's stays as it is
    return {name for name, plugin in manager.list_name_plugin() if plugin is not None}


@pytest.mark.parametrize("env,loaded", [
    ({}, True),
    ({"LLMHD_LOAD_PLUGINS": "fakeplug"}, True),
    ({"LLMHD_LOAD_PLUGINS": " fakeplug ,"}, True),
    ({"LLMHD_LOAD_PLUGINS": ""}, False),  # empty: no entry-point plugin
    ({"LLMHD_DISABLE_PLUGINS": "fakeplug"}, False),
    ({"LLMHD_LOAD_PLUGINS": "fakeplug", "LLMHD_DISABLE_PLUGINS": "fakeplug"}, False),
])
def test_environment_selects_the_entry_point_plugins(fake_installed: str, monkeypatch: pytest.MonkeyPatch,
                                                     env: dict[str, str], loaded: bool) -> None:
    from llmhd_cli import plugins

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    names = _loaded_names()
    assert ("fakeplug" in names) is loaded
    assert set(plugins.DEFAULT_PLUGINS) <= names  # the built-ins always load


@pytest.mark.parametrize("env,words", [
    ({"LLMHD_LOAD_PLUGINS": "fakeplgu"}, ["LLMHD_LOAD_PLUGINS: no installed plugin 'fakeplgu'", "fakeplug"]),
    ({"LLMHD_DISABLE_PLUGINS": "nope"}, ["LLMHD_DISABLE_PLUGINS: no installed plugin 'nope'"]),
    ({"LLMHD_DISABLE_PLUGINS": "llmhd_plugins.backbones"}, ["'llmhd_plugins.backbones' is built in and always loads"]),
])
def test_a_plugin_name_that_is_not_installed_is_one_line(fake_installed: str, monkeypatch: pytest.MonkeyPatch,
                                                         env: dict[str, str], words: list[str]) -> None:
    from llmhd_cli.errors import LLMHDError

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LLMHDError) as error:
        _loaded_names()
    for word in words:
        assert word in str(error.value)


def test_the_cli_reports_a_bad_plugin_selection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHD_")}
    env.update(LLMHD_CONFIG=str(tmp_path / "absent.toml"), LLMHD_LOAD_PLUGINS="no-such-plugin")
    result = subprocess.run([sys.executable, "-m", "llmhd_cli", "providers"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: LLMHD_LOAD_PLUGINS: no installed plugin 'no-such-plugin'"), line
