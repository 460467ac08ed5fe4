"""Third-party plugins: the example package installed for real, found through its entry point.

The install test pip-installs ``examples/llmhd-example-plugin`` into the running environment
(offline: no index, no build isolation, setuptools from this venv), drives the installed
``llmhd`` console script in subprocesses (a fresh process is what loads entry points), and
uninstalls the package afterwards so other tests see the built-ins only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

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
