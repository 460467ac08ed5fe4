"""``llmhd train`` / ``llmhd evaluate`` end to end on a small real dataset, and the training core.

The dataset is MovieLens-100K as bundled with RecBole, cut to its first 150 users and prepared
once per module with a 10-core (about 150 users, 420 items, 6k training pairs with 5%
low-rating noise), so each run of a backbone takes seconds. CLI tests call
`llmhd_cli.cli.main` (the console-script entry point) and catch its SystemExit, as the
prepare tests do.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_user_error, call_main, run_cli, write_ml100k_cut
from ranking_helpers import FixedScores, csr, popularity_recall_at_10

from llmhd_cli.checkpoints import load_run_model
from llmhd_cli.config import read_toml
from llmhd_cli.denoising import Decision, Denoiser, SampleBatch
from llmhd_cli.evaluation import full_rank_metrics
from llmhd_cli.objectives import LossSeam, per_sample_losses
from llmhd_cli.training import NegativeSampler, TrainConfig, pairs_per_batch, train

DATASET = "small"
N_USERS = 150
BATCH = 2048  # 3 batches per epoch on the small dataset: fast, and still more than one batch
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


# ------------------------------------------------------------------------------- helpers


def train_args(run_dir: Path, *flags: str) -> list[str]:
    """A fast ``train`` on the small dataset into ``run_dir``; ``flags`` add to or override these."""
    return ["train", "-d", DATASET, "--batch-size", str(BATCH), "--device", "cpu", "--run-dir", str(run_dir), *flags]


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


# Settings under which every backbone learns in a few epochs on the small dataset (12 BPR
# batches per epoch); see test_backbone_learns_beyond_popularity.
LEARN = ("--batch-size", "512", "--lr", "0.01", "--early-stop", "0")


def training_pair_scores(run_dir: Path, workspace: Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved model's score of every training pair, and which pairs are injected noise."""
    from recbole.data.interaction import Interaction

    model, data, _ = load_run_model(run_dir, workspace, "cpu")
    users = torch.arange(data.n_users)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({model.USER_ID: users})).view(data.n_users, data.n_items)
    return scores[data.train_users, data.train_items].numpy(), data.is_noise


def auc(higher: np.ndarray, lower: np.ndarray) -> float:
    """P(a value of ``higher`` > one of ``lower``), ties counting half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([higher, lower]))
    return float((ranks[:len(higher)].sum() - len(higher) * (len(higher) + 1) / 2) / (len(higher) * len(lower)))


class Recording(Denoiser):
    """Wraps a denoiser and keeps, per epoch, every batch's samples and the decision on them."""

    def __init__(self, inner: Denoiser) -> None:
        self.inner = inner
        self.epochs: list[list[tuple[SampleBatch, Decision]]] = []

    def start_epoch(self, epoch: int) -> None:
        self.epochs.append([])
        self.inner.start_epoch(epoch)

    def decide(self, batch: SampleBatch) -> Decision:
        decision = self.inner.decide(batch)
        self.epochs[-1].append((batch, decision))
        return decision

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        return self.inner.end_epoch(epoch, model)

    def close(self) -> None:
        self.inner.close()


def recorded_train(workspace: Path, run_dir: Path, **settings: Any) -> tuple[Recording, Any]:
    """`train` on the small dataset with its denoiser wrapped in a `Recording`; also returns the context."""
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset

    config = TrainConfig(dataset=DATASET, device="cpu", **settings)
    spec = plugins.registry("denoiser").get(config.denoiser, "--denoiser")
    made: dict[str, Any] = {}

    def factory(options: dict[str, Any], context: Any) -> Denoiser:
        made["recording"], made["context"] = Recording(spec.factory(options, context)), context
        return made["recording"]

    train(config, open_dataset(workspace, DATASET), workspace / "runs", run_dir=run_dir, denoiser_factory=factory)
    return made["recording"], made["context"]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, isolated_user_config: None) -> Path:
    """A workspace holding the prepared small dataset."""
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), DATASET, N_USERS)
    ws = tmp_path_factory.mktemp("ws")
    code = call_main(ws, "prepare", "--dataset", DATASET, "--source", str(source), "--kcore", "10")
    assert code == 0
    return ws


@pytest.fixture(scope="module")
def n_train(workspace: Path) -> int:
    """Training interactions (injected noise included), as dataset.json counts them."""
    info = json.loads((workspace / "datasets" / DATASET / "dataset.json").read_text())
    return int(info["stats"]["train"])


@pytest.fixture(scope="module")
def split(workspace: Path) -> Any:
    """The small dataset as llmhd trains on it (id-mapped CSR splits, noise flags per training row)."""
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import load_recbole_data

    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")
    return load_recbole_data(open_dataset(workspace, DATASET), backbone, {}, 2024, torch.device("cpu"))


@pytest.fixture(scope="module")
def base_run(workspace: Path) -> Path:
    """LightGCN + BPR, 2 epochs: the run the evaluate and reproducibility tests read."""
    run_dir = workspace / "runs" / "base"
    assert call_main(workspace, *train_args(run_dir, "--backbone", "lightgcn", "--objective", "bpr", "--epochs", "2")) == 0
    return run_dir


# ------------------------------------------------------------------- backbones x objectives


@pytest.mark.parametrize("objective", ["bpr", "bce"])
@pytest.mark.parametrize("backbone", ["ngcf", "lightgcn", "sgl", "ncl"])
def test_backbone_objective_trains_and_evaluates(capsys: pytest.CaptureFixture, workspace: Path, n_train: int,
                                                 tmp_path: Path, backbone: str, objective: str) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, workspace, *train_args(run_dir, "--backbone", backbone, "--objective", objective,
                                                           "--epochs", "2"))
    assert code == 0, err
    assert f"run directory: {run_dir}" in out

    config = read_toml(run_dir / "config.toml")
    assert (config["backbone"], config["objective"], config["denoiser"], config["epochs"]) == (backbone, objective, "none", 2)
    log = read_log(run_dir)
    assert [r["epoch"] for r in log] == [0, 1]
    for record in log:
        # BPR: one (u, i+, i-) triple per training pair; BCE: each positive plus its negative.
        assert record["samples"] == n_train * (1 if objective == "bpr" else 2)
        assert record["dropped"] == 0
        assert math.isfinite(record["loss"]) and record["loss"] > 0
        assert set(record["valid"]) == set(METRICS)
    metrics = read_metrics(run_dir)
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (0, 1)
    assert all(0.0 <= metrics["test"][k] <= 1.0 for k in METRICS)
    assert (run_dir / "model.pt").exists()

    code, out, err = run_cli(capsys, workspace, "evaluate", str(run_dir), "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert (row["backbone"], row["objective"], row["denoiser"]) == (backbone, objective, "none")
    assert {k: row[k] for k in METRICS} == {k: metrics["test"][k] for k in METRICS}


# ------------------------------------------------------ the stored metrics are the checkpoint's


@pytest.mark.parametrize("backbone", ["ngcf", "lightgcn", "sgl", "ncl"])
def test_stored_test_metrics_are_a_fresh_evaluation_of_the_checkpoint(capsys: pytest.CaptureFixture, workspace: Path,
                                                                     tmp_path: Path, backbone: str) -> None:
    """The graph backbones cache propagated embeddings when they rank; validating the last epoch
    fills that cache. Restoring the best epoch must drop it, or the test split is ranked with
    the last epoch's embeddings while model.pt holds the best epoch's weights."""
    run_dir = tmp_path / "run"
    # A high learning rate and patience 1: validation peaks early and the run stops one epoch later.
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--backbone", backbone, "--lr", "0.05",
                                                         "--epochs", "20", "--early-stop", "1"))
    assert code == 0, err
    metrics = read_metrics(run_dir)
    assert metrics["best_epoch"] < metrics["epochs_run"] - 1  # the last validated epoch is not the best

    model, data, _ = load_run_model(run_dir, workspace, "cpu")  # a freshly built model from model.pt
    fresh = full_rank_metrics(model, data.test_csr, [data.train_csr, data.valid_csr])
    assert fresh == pytest.approx(metrics["test"], abs=1e-12)


@pytest.mark.parametrize("backbone_name", ["ngcf", "lightgcn", "sgl", "ncl"])
def test_bpr_through_the_seam_is_recboles_own_loss(workspace: Path, backbone_name: str) -> None:
    """With BPR and no denoiser, a backbone's batch loss through the seam (the swapped loss module,
    or SGL's replaced calc_bpr_loss) is RecBole's own calculate_loss, and the model is left as it was."""
    from recbole.data.interaction import Interaction

    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import build_model, load_recbole_data

    backbone = plugins.registry("backbone").get(backbone_name, "--backbone")
    data = load_recbole_data(open_dataset(workspace, DATASET), backbone, {}, 2024, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model(data, backbone)
    model.train()
    if backbone.on_epoch_start is not None:
        backbone.on_epoch_start(model, 0, data.config)  # NCL's E-step: its prototypes
    n = 64
    users, pos = torch.as_tensor(data.train_users[:n]).long(), torch.as_tensor(data.train_items[:n]).long()
    neg = torch.randint(1, data.n_items, (n,), generator=torch.Generator().manual_seed(1))
    inter = Interaction({model.USER_ID: users, model.ITEM_ID: pos, model.NEG_ITEM_ID: neg})
    epoch = int(data.config["warm_up_step"] or 0) + 1 if backbone_name == "ncl" else 0  # NCL: past warm-up
    seam = LossSeam("bpr", Denoiser())
    seam.set_batch(users, pos, neg, torch.arange(n), step=0, epoch=epoch)
    torch.manual_seed(2)  # NGCF's message dropout draws the same masks in both calls
    ours = backbone.batch_loss(model, inter, seam, epoch, data.config)
    torch.manual_seed(2)
    theirs = model.calculate_loss(inter)
    theirs = sum(theirs) if isinstance(theirs, tuple) else theirs
    assert seam.stats.samples == n  # the batch's BPR term went through the seam
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-5)
    assert "calc_bpr_loss" not in vars(model) and not any(m is seam for m in model.modules())


def test_embeddings_keep_sgl_training_subgraphs(workspace: Path) -> None:
    """Reading final embeddings puts the model in eval mode and back without train(True), which
    would make SGL redraw its random subgraphs in the middle of an epoch."""
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import build_model, load_recbole_data

    backbone = plugins.registry("backbone").get("sgl", "--backbone")
    data = load_recbole_data(open_dataset(workspace, DATASET), backbone, {}, 2024, torch.device("cpu"))
    model = build_model(data, backbone)
    model.train()
    graphs = (model.sub_graph1, model.sub_graph2)
    users, items = backbone.embeddings(model)
    assert (users.shape[0], items.shape[0]) == (data.n_users, data.n_items)
    assert model.training and all(m.training for m in model.modules())
    assert model.sub_graph1 is graphs[0] and model.sub_graph2 is graphs[1]  # not redrawn


def test_load_state_drops_the_cached_embeddings(split: Any) -> None:
    from recbole.data.interaction import Interaction

    from llmhd_cli import plugins
    from llmhd_cli.recbole_data import build_model

    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")
    torch.manual_seed(0)
    model, other = build_model(split, backbone), build_model(split, backbone)
    users = Interaction({model.USER_ID: torch.arange(1, 5)})
    model.eval()
    other.eval()
    with torch.no_grad():
        model.full_sort_predict(users)  # fills the cache with model's own weights
        assert model.restore_user_e is not None
        backbone.load_state(model, other.state_dict())
        assert model.restore_user_e is None and model.restore_item_e is None
        assert torch.equal(model.full_sort_predict(users), other.full_sort_predict(users))


# ------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("objective,batch_size,pairs", [("bpr", 2048, 2048), ("bce", 2048, 1024), ("bce", 2049, 1024)])
def test_batch_size_counts_samples_as_recbole_does(workspace: Path, n_train: int, tmp_path: Path, objective: str,
                                                   batch_size: int, pairs: int) -> None:
    """RecBole's train_batch_size counts samples after negative sampling: a BPR batch of 2,048 is
    2,048 triples, a BCE batch of 2,048 is 1,024 positives and their 1,024 negatives (an odd
    size rounds down; one positive at least). So BCE takes as many iterations per epoch as BPR at
    half the batch size, and iteration-based schedules (T-CE, LLMHD) run at the same pace."""
    epochs = 2
    recording, context = recorded_train(workspace, tmp_path / "run", objective=objective, batch_size=batch_size,
                                        epochs=epochs, early_stop=0)
    n_batches = -(-n_train // pairs)
    assert context.batches_per_epoch == n_batches
    assert [len(epoch) for epoch in recording.epochs] == [n_batches] * epochs
    steps = [batch.step for epoch in recording.epochs for batch, _ in epoch]
    assert steps == list(range(epochs * n_batches))
    per_sample = 1 if objective == "bpr" else 2
    sizes = [int(batch.labels.sum()) for batch, _ in recording.epochs[0]]  # positives per batch
    assert sizes == [pairs] * (n_batches - 1) + [n_train - pairs * (n_batches - 1)]
    assert all(batch.losses.shape[0] == per_sample * size for (batch, _), size in zip(recording.epochs[0], sizes, strict=True))
    assert max(batch.losses.shape[0] for batch, _ in recording.epochs[0]) <= batch_size


def test_pairs_per_batch() -> None:
    assert [pairs_per_batch("bpr", n) for n in (1, 2, 1023, 1024)] == [1, 2, 1023, 1024]
    assert [pairs_per_batch("bce", n) for n in (1, 2, 3, 1023, 1024)] == [1, 1, 1, 511, 512]


# ------------------------------------------------------------------------------- learning


@pytest.mark.parametrize("backbone,objective,epochs,lr", [
    ("lightgcn", "bpr", 5, 0.01),
    ("lightgcn", "bce", 5, 0.01),
    ("ncl", "bpr", 5, 0.01),
    ("ngcf", "bpr", 10, 0.02),
    ("sgl", "bpr", 10, 0.02),
])
def test_backbone_learns_beyond_popularity(capsys: pytest.CaptureFixture, workspace: Path, split: Any, tmp_path: Path,
                                           backbone: str, objective: str, epochs: int, lr: float) -> None:
    """A few epochs must rank the test items clearly better than item popularity does (0.12
    Recall@10 here; an untrained model, e.g. one whose optimizer never steps, scores about 0.03).
    Measured over seeds 1-3 and 2024: LightGCN 0.19-0.22, NCL 0.21, SGL 0.19-0.20, NGCF 0.15-0.17."""
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--backbone", backbone, "--objective", objective,
                                                         *LEARN, "--epochs", str(epochs), "--lr", str(lr)))
    assert code == 0, err
    popularity = popularity_recall_at_10(split)
    assert 0.08 < popularity < 0.16  # a real baseline on this dataset, not a degenerate one
    assert read_metrics(run_dir)["test"]["recall@10"] > 1.15 * popularity


# ------------------------------------------------------------------------------ denoisers


def test_none_keeps_the_noise_and_the_model_still_scores_it_lower(capsys: pytest.CaptureFixture, workspace: Path,
                                                                  tmp_path: Path) -> None:
    """The plain objective drops nothing, so none of the injected noise; the model it trains
    still scores the injected (low-rating) pairs below the clean ones, which is what loss-based
    denoisers rely on. (AUC 0.55-0.58 over seeds 1-4 and 2024; 0.5 would mean the noise flags
    are not aligned with the training rows.)"""
    run_dir = tmp_path / "none"
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, *LEARN, "--epochs", "5"))
    assert code == 0, err
    for record in read_log(run_dir):
        assert record["dropped"] == 0
        assert record["noise"] == {"dropped_positives": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert read_metrics(run_dir)["n_noise"] > 0
    scores, is_noise = training_pair_scores(run_dir, workspace)
    assert is_noise.sum() == read_metrics(run_dir)["n_noise"]
    assert auc(scores[~is_noise], scores[is_noise]) > 0.53



def tce_expected_drops(n_train: int, batch: int, epochs: int, drop_rate: Fraction, num_gradual: int,
                       objective: str) -> list[int]:
    """Per-epoch dropped samples of T-CE: ceil(rate(T) * n) per batch, rate(T) = r * min(T / G, 1).

    ``batch`` counts samples, as RecBole's train_batch_size: a BCE batch is batch // 2 positives
    and their negatives."""
    pairs = batch if objective == "bpr" else batch // 2
    sizes = [min(pairs, n_train - start) for start in range(0, n_train, pairs)]
    per_epoch, step = [], 0
    for _ in range(epochs):
        total = 0
        for size in sizes:
            n = size * (1 if objective == "bpr" else 2)
            rate = drop_rate * min(Fraction(step, num_gradual), Fraction(1))
            total += min(math.ceil(rate * n), size)  # under BCE only the batch's positives can go
            step += 1
        per_epoch.append(total)
    return per_epoch


def test_tce_drops_the_scheduled_fraction_of_positives(capsys: pytest.CaptureFixture, workspace: Path, n_train: int,
                                                       tmp_path: Path) -> None:
    # drop_rate 1/4 and num_gradual 4: every rate is a binary fraction, so the float schedule is exact.
    run_dir = tmp_path / "tce"
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--objective", "bce", "--denoiser", "tce",
                                                         "--drop-rate", "0.25", "--num-gradual", "4", "--epochs", "2"))
    assert code == 0, err
    log = read_log(run_dir)
    expected = tce_expected_drops(n_train, BATCH, 2, Fraction(1, 4), 4, "bce")
    assert [r["dropped"] for r in log] == expected
    assert expected[0] > 0 and expected[1] > expected[0]  # the rate rises
    # 6 BCE batches of 1,024 positives + 1,024 negatives per epoch: epoch 0 at rates 0, 1/16 .. 5/16
    # (capped at 1/4), epoch 1 at 1/4 throughout.
    assert len(range(0, n_train, BATCH // 2)) == 6
    assert log[1]["dropped"] / log[1]["samples"] == pytest.approx(0.25, abs=0.01)
    for record in log:
        # BCE: only positives are dropped, so every dropped sample is a training pair.
        assert record["noise"]["dropped_positives"] == record["dropped"]
        assert 0.0 <= record["noise"]["precision"] <= 1.0
    config = read_toml(run_dir / "config.toml")
    assert config["denoiser_params"] == {"drop_rate": 0.25, "num_gradual": 4}


def test_tce_drops_injected_noise_more_often_than_clean_positives(capsys: pytest.CaptureFixture, workspace: Path,
                                                                  n_train: int, tmp_path: Path) -> None:
    """T-CE drops the largest losses, and injected noise has larger losses: the share of noise
    among the dropped positives is clearly above its share of the training set (1.32-1.47x
    over seeds 1, 2, 5, 6, 7 and 2024; dropping at random gives 1.0 +- 0.08)."""
    run_dir = tmp_path / "tce"
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--objective", "bce", "--denoiser", "tce", *LEARN,
                                                         "--drop-rate", "0.1", "--num-gradual", "24", "--epochs", "5"))
    assert code == 0, err
    metrics = read_metrics(run_dir)
    noise_share = metrics["n_noise"] / n_train
    at_full_rate = read_log(run_dir)[1:]  # 24 batches per epoch: the rate is 0.1 from epoch 1 on
    dropped = sum(r["noise"]["dropped_positives"] for r in at_full_rate)
    noise_dropped = sum(r["noise"]["precision"] * r["noise"]["dropped_positives"] for r in at_full_rate)
    assert dropped > 0
    assert noise_dropped / dropped > 1.2 * noise_share
    assert metrics["noise_detection"]["recall"] > 0.1


def test_rce_gives_injected_noise_lower_weights(workspace: Path, tmp_path: Path) -> None:
    """R-CE weights a positive by its predicted probability: by the last epoch the injected
    noise's mean weight is clearly below the clean positives' (0.92-0.94 of it over seeds 5-7 and
    2024). Weights as the denoiser gave them, batch by batch."""
    recording, context = recorded_train(workspace, tmp_path / "rce", objective="bce", denoiser="rce", epochs=5,
                                        batch_size=512, learning_rate=0.01, early_stop=0, denoiser_params={"beta": 1.0})
    is_noise = torch.as_tensor(context.data.is_noise)
    rows, weights = [], []
    for batch, decision in recording.epochs[-1]:
        positive = batch.pair_index >= 0
        rows.append(batch.pair_index[positive])
        weights.append(decision.weights[positive])
        assert not decision.dropped.any()
    rows, weights = torch.cat(rows), torch.cat(weights)
    assert sorted(rows.tolist()) == list(range(len(is_noise)))  # every training pair once per epoch
    noisy = is_noise[rows]
    assert float(weights[noisy].mean()) < 0.97 * float(weights[~noisy].mean())


def test_rce_reweights_without_dropping(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path,
                                        tmp_path: Path) -> None:
    run_dir = tmp_path / "rce"
    # recall@20 is outside the default Ks: early stopping ranks once more at that K
    code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--objective", "bpr", "--denoiser", "rce",
                                                         "--beta", "0.5", "--epochs", "1", "--valid-metric", "recall@20"))
    assert code == 0, err
    (record,) = read_log(run_dir)
    assert record["dropped"] == 0 and record["noise"]["dropped_positives"] == 0
    assert record["best"] and read_metrics(run_dir)["best_epoch"] == 0
    # Same seed, data and batches as the plain base run: only the weights differ, so the
    # first epoch's loss differs once the first reweighted step has been taken.
    assert record["loss"] != read_log(base_run)[0]["loss"]
    assert read_toml(run_dir / "config.toml")["denoiser_params"] == {"beta": 0.5}


# --------------------------------------------------------------------- reproducibility


def test_same_command_and_seed_give_identical_metrics(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path,
                                                      tmp_path: Path) -> None:
    again = tmp_path / "again"
    code, _, err = run_cli(capsys, workspace, *train_args(again, "--backbone", "lightgcn", "--objective", "bpr", "--epochs", "2"))
    assert code == 0, err
    first, second = read_metrics(base_run), read_metrics(again)
    assert (second["valid"], second["test"], second["best_epoch"]) == (first["valid"], first["test"], first["best_epoch"])
    assert [r["loss"] for r in read_log(again)] == [r["loss"] for r in read_log(base_run)]


def test_another_seed_gives_another_run(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path,
                                          tmp_path: Path) -> None:
    other = tmp_path / "seed7"
    code, _, err = run_cli(capsys, workspace, *train_args(other, "--backbone", "lightgcn", "--objective", "bpr",
                                                         "--epochs", "1", "--seed", "7"))
    assert code == 0, err
    assert read_log(other)[0]["loss"] != read_log(base_run)[0]["loss"]


def test_evaluate_recompute_equals_stored_metrics(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path) -> None:
    code, out, err = run_cli(capsys, workspace, "evaluate", str(base_run), "--recompute", "--device", "cpu", "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    stored = read_metrics(base_run)["test"]
    assert {k: row[k] for k in METRICS} == pytest.approx({k: stored[k] for k in METRICS}, abs=1e-12)


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_formats(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path) -> None:
    stored = read_metrics(base_run)
    runs = [str(base_run), str(base_run)]  # two rows: one per run argument

    code, out, err = run_cli(capsys, workspace, "evaluate", *runs, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2
    expected = {"run": "base", "dataset": DATASET, "backbone": "lightgcn", "objective": "bpr", "denoiser": "none",
                "seed": 2024, "best_epoch": stored["best_epoch"], **stored["test"]}
    assert {k: rows[0][k] for k in expected} == expected  # further columns (noise detection) may follow

    code, out, err = run_cli(capsys, workspace, "evaluate", *runs, "--format", "csv")
    assert code == 0, err
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert list(parsed[0]) == list(rows[0]) and len(parsed) == 2
    assert float(parsed[0]["ndcg@10"]) == stored["test"]["ndcg@10"]

    code, out, err = run_cli(capsys, workspace, "evaluate", *runs, "--format", "markdown")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "| " + " | ".join(rows[0]) + " |"
    assert lines[1] == "|" + "---|" * len(rows[0])
    assert len(lines) == 4 and f"| {stored['test']['ndcg@10']:.4f} |" in lines[2]

    code, out, err = run_cli(capsys, workspace, "evaluate", str(base_run))
    assert code == 0, err
    assert "test metrics" in out and f"{stored['test']['ndcg@10']:.4f}" in out and str(base_run.name) in out


# ----------------------------------------------------------------------- config files


def test_config_file_then_flags_and_resolved_config_reruns(capsys: pytest.CaptureFixture, workspace: Path,
                                                           tmp_path: Path) -> None:
    config_file = tmp_path / "train.toml"
    config_file.write_text(
        f'dataset = "{DATASET}"\nbackbone = "lightgcn"\nobjective = "bce"\nepochs = 1\nseed = 5\n'
        f'batch_size = {BATCH}\ndevice = "cpu"\ndenoiser = "rce"\n'
        "[backbone_params]\nembedding_size = 32\n"
        "[denoiser_params]\nbeta = 0.3\n"
    )
    first = tmp_path / "first"
    code, _, err = run_cli(capsys, workspace, "train", "--config", str(config_file), "--seed", "11", "--beta", "0.5",
                           "--set", "n_layers=1", "--run-dir", str(first))
    assert code == 0, err
    resolved = read_toml(first / "config.toml")
    assert resolved["objective"] == "bce" and resolved["epochs"] == 1  # from the file
    assert resolved["seed"] == 11 and resolved["denoiser_params"] == {"beta": 0.5}  # flags win
    assert resolved["backbone_params"] == {"embedding_size": 32, "n_layers": 1}  # --set adds to the file's table
    assert resolved["learning_rate"] == 0.005  # neither: the default
    assert read_log(first)[0]["samples"] > 0

    rerun = tmp_path / "rerun"
    code, _, err = run_cli(capsys, workspace, "train", "--config", str(first / "config.toml"), "--run-dir", str(rerun))
    assert code == 0, err
    assert read_toml(rerun / "config.toml") == resolved
    assert read_metrics(rerun)["test"] == read_metrics(first)["test"]
    assert read_metrics(rerun)["valid"] == read_metrics(first)["valid"]


def test_user_config_then_config_file_then_flags(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    user_config = tmp_path / "user.toml"
    user_config.write_text(f'default_dataset = "{DATASET}"\n[train]\nepochs = 1\nseed = 3\nbatch_size = {BATCH}\n'
                           'learning_rate = 0.01\n')
    monkeypatch.setenv("LLMHD_CONFIG", str(user_config))
    config_file = tmp_path / "train.toml"
    config_file.write_text("seed = 5\nlearning_rate = 0.02\n")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, workspace, "train", "--config", str(config_file), "--lr", "0.03", "--device", "cpu",
                           "--run-dir", str(run_dir))
    assert code == 0, err
    resolved = read_toml(run_dir / "config.toml")
    assert resolved["dataset"] == DATASET and resolved["epochs"] == 1 and resolved["batch_size"] == BATCH  # user config
    assert resolved["seed"] == 5  # the --config file beats the user config
    assert resolved["learning_rate"] == 0.03  # the flag beats both


@pytest.mark.slow
def test_design_card_example_prepares_ml100k_on_first_use(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``llmhd train --backbone ncl --objective bce`` with no dataset named and nothing prepared."""
    monkeypatch.setenv("LLMHD_WORKSPACE", str(tmp_path / "ws"))
    # The card's command plus cost limits only: one epoch, in 13 BCE batches of 8192 samples instead of 101 of 1024.
    code, out, err = run_cli(capsys, None, "train", "--backbone", "ncl", "--objective", "bce", "--epochs", "1",
                             "--batch-size", "8192", "--device", "cpu")
    assert code == 0, err
    assert "dataset 'ml-100k' was not prepared; prepared it with default options" in out
    assert (tmp_path / "ws" / "datasets" / "ml-100k" / "dataset.json").exists()
    (run_dir,) = (tmp_path / "ws" / "runs").iterdir()
    config = read_toml(run_dir / "config.toml")
    assert (config["dataset"], config["backbone"], config["objective"]) == ("ml-100k", "ncl", "bce")
    assert read_metrics(run_dir)["epochs_run"] == 1


# -------------------------------------------------------------------------- bad input


def _config_with(text: str) -> Callable[[Path], list[str]]:
    def make(tmp_path: Path) -> list[str]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        return ["--config", str(path)]
    return make


BAD_TRAIN = [
    ("other-denoisers-flag", lambda p: ["--denoiser", "rce", "--drop-rate", "0.1"], ["--drop-rate", "denoiser tce", "not of 'rce'"]),
    ("flag-without-denoiser", lambda p: ["--beta", "0.1"], ["--beta", "denoiser rce", "not of 'none'"]),
    ("set-without-equals", lambda p: ["--set", "n_layers"], ["--set: expected KEY=VALUE, got 'n_layers'"]),
    ("set-without-key", lambda p: ["--set", "=3"], ["--set: expected KEY=VALUE, got '=3'"]),
    ("config-missing", lambda p: ["--config", str(p / "absent.toml")], ["absent.toml", "not found"]),
    ("config-invalid-toml", _config_with("epochs = = 3\n"), ["bad.toml", "invalid TOML"]),
    ("config-unknown-key", _config_with("epoch = 3\n"), ["bad.toml", "unknown key 'epoch'", "epochs"]),
    ("config-bad-option", _config_with('denoiser = "tce"\n[denoiser_params]\ndrop = 0.1\n'),
     ["denoiser 'tce' has no option 'drop'", "drop_rate, num_gradual"]),
    ("bad-valid-metric", lambda p: ["--valid-metric", "mrr@10"], ["--valid-metric", "recall@K or ndcg@K", "'mrr@10'"]),
    ("epochs-zero", lambda p: ["--epochs", "0"], ["--epochs: must be at least 1, got 0"]),
    ("num-gradual-zero", lambda p: ["--denoiser", "tce", "--num-gradual", "0"], ["--num-gradual: must be > 0, got 0"]),
    ("drop-rate-out-of-range", lambda p: ["--denoiser", "tce", "--drop-rate", "1.5"], ["--drop-rate", "[0, 1)", "1.5"]),
    ("lr-nan", lambda p: ["--lr", "nan"], ["'learning_rate' must be a finite number, got nan"]),  # click takes "nan"
    ("weight-decay-inf", lambda p: ["--weight-decay", "inf"], ["'weight_decay' must be a finite number, got inf"]),
    ("weight-decay-negative", lambda p: ["--weight-decay", "-0.1"], ["--weight-decay", ">= 0", "-0.1"]),
    ("early-stop-negative", lambda p: ["--early-stop", "-1"], ["--early-stop: must be 0 (disabled) or more, got -1"]),
    ("seed-negative", lambda p: ["--seed", "-1"], ["--seed", "[0, 2^32)", "-1"]),
]


@pytest.mark.parametrize("make_args,words", [(m, w) for _, m, w in BAD_TRAIN], ids=[c for c, _, _ in BAD_TRAIN])
def test_train_bad_input(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path,
                         make_args: Callable[[Path], list[str]], words: list[str]) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, workspace, *train_args(run_dir, "--epochs", "1", *make_args(tmp_path)))
    assert_user_error(code, out, err, *words)


def test_a_diverging_loss_stops_with_one_line_and_keeps_the_earlier_epochs(capsys: pytest.CaptureFixture, workspace: Path,
                                                                          tmp_path: Path) -> None:
    # lr 1e30 sends the weights to inf after the first step; RecBole's trainer would stop too.
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, workspace, *train_args(run_dir, "--epochs", "3", "--lr", "1e30"))
    assert_user_error(code, out, err, "epoch 0, batch 2 of 3", "NaN or infinite", "lower --learning-rate (now 1e+30)",
                      str(run_dir))
    assert (run_dir / "config.toml").is_file() and not (run_dir / "metrics.json").exists()


# A wrong type in a --config file: one line naming the file and the key, no run folder. Each
# file is complete (epochs = 1) so that a check that lets the value through fails fast.
BAD_CONFIG_TYPES = [
    ("epochs-string", 'epochs = "ten"\n', ["'epochs' must be an integer, got 'ten' (a string)"]),
    ("batch-size-float", "epochs = 1\nbatch_size = 1024.0\n", ["'batch_size' must be an integer, got 1024.0 (a number)"]),
    ("early-stop-bool", "epochs = 1\nearly_stop = true\n", ["'early_stop' must be an integer, got true (a boolean)"]),
    ("seed-string", 'epochs = 1\nseed = "7"\n', ["'seed' must be an integer, got '7' (a string)"]),
    ("lr-string", 'epochs = 1\nlearning_rate = "0.01"\n', ["'learning_rate' must be a number, got '0.01' (a string)"]),
    ("lr-bool", "epochs = 1\nlearning_rate = true\n", ["'learning_rate' must be a number, got true (a boolean)"]),
    ("lr-nan", "epochs = 1\nlearning_rate = nan\n", ["'learning_rate' must be a finite number, got nan"]),
    ("weight-decay-inf", "epochs = 1\nweight_decay = inf\n", ["'weight_decay' must be a finite number, got inf"]),
    ("backbone-int", "epochs = 1\nbackbone = 3\n", ["'backbone' must be a string, got 3 (an integer)"]),
    ("denoiser-params-not-a-table", "epochs = 1\ndenoiser_params = 3\n", ["'denoiser_params' must be a table, got 3"]),
    ("backbone-params-not-a-table", "epochs = 1\nbackbone_params = 3\n", ["'backbone_params' must be a table, got 3"]),
    ("early-stop-negative", "epochs = 1\nearly_stop = -1\n", ["--early-stop: must be 0 (disabled) or more, got -1"]),
    ("denoiser-option-float-for-int", 'epochs = 1\ndenoiser = "tce"\n[denoiser_params]\nnum_gradual = 2.5\n',
     ["--num-gradual", "'num_gradual' must be an integer, got 2.5"]),
    ("denoiser-option-bool-for-float", 'epochs = 1\ndenoiser = "rce"\n[denoiser_params]\nbeta = true\n',
     ["--beta", "'beta' must be a number, got true"]),
    ("denoiser-option-not-a-choice", 'epochs = 1\ndenoiser = "llmhd"\n[denoiser_params]\nvariant = "nope"\n',
     ["--variant: expected one of", "full", "'nope'"]),
]


@pytest.mark.parametrize("text,words", [(t, w) for _, t, w in BAD_CONFIG_TYPES], ids=[c for c, _, _ in BAD_CONFIG_TYPES])
def test_train_config_file_wrong_type(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path, text: str,
                                      words: list[str]) -> None:
    config_file = tmp_path / "bad.toml"
    config_file.write_text(text)
    run_dir, runs_before = tmp_path / "run", set((workspace / "runs").glob("*"))
    code, out, err = run_cli(capsys, workspace, "train", "-d", DATASET, "--device", "cpu", "--config", str(config_file),
                             "--run-dir", str(run_dir))
    # value checks (early_stop < 0, denoiser options) name the flag, which is the key with dashes
    file_named = [str(config_file)] if "--" not in words[0] else []
    assert_user_error(code, out, err, *file_named, *words)
    assert not run_dir.exists() and set((workspace / "runs").glob("*")) == runs_before


def test_a_bad_flag_is_not_blamed_on_the_config_file(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "good.toml"
    config_file.write_text("epochs = 1\n")
    code, out, err = run_cli(capsys, workspace, "train", "-d", DATASET, "--config", str(config_file), "--lr", "nan",
                             "--run-dir", str(tmp_path / "run"))
    assert_user_error(code, out, err, "command line", "'learning_rate' must be a finite number")
    assert str(config_file) not in err and not (tmp_path / "run").exists()


BAD_USER_CONFIG = [
    ("train-epochs-string", '[train]\nepochs = "ten"\n', ["[train]: 'epochs' must be an integer, got 'ten' (a string)"]),
    ("train-batch-size-float", "[train]\nbatch_size = 512.5\n", ["[train]: 'batch_size' must be an integer, got 512.5"]),
    ("train-threads-bool", "[train]\nthreads = false\n", ["[train]: 'threads' must be an integer, got false (a boolean)"]),
    ("train-backbone-params-not-a-table", "[train]\nbackbone_params = 3\n", ["[train]: 'backbone_params' must be a table"]),
    ("train-unknown-key", "[train]\nepoch = 3\n", ["[train]: unknown key 'epoch'", "epochs"]),
    ("train-not-a-table", "train = 3\n", ["[train] must be a table"]),
    ("workspace-int", "workspace = 5\n", ["'workspace' must be a string, got 5 (an integer)"]),
    ("default-dataset-int", "default_dataset = 7\n", ["'default_dataset' must be a string, got 7 (an integer)"]),
]


@pytest.mark.parametrize("text,words", [(t, w) for _, t, w in BAD_USER_CONFIG], ids=[c for c, _, _ in BAD_USER_CONFIG])
def test_train_user_config_wrong_type(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, text: str, words: list[str]) -> None:
    user_config = tmp_path / "user.toml"
    user_config.write_text(text)
    monkeypatch.setenv("LLMHD_CONFIG", str(user_config))
    run_dir, runs_before = tmp_path / "run", set((workspace / "runs").glob("*"))
    code, out, err = run_cli(capsys, workspace, *train_args(run_dir, "--epochs", "1"))
    assert_user_error(code, out, err, str(user_config), *words)
    assert not run_dir.exists() and set((workspace / "runs").glob("*")) == runs_before


def test_train_config_accepts_an_int_for_a_float_and_stores_a_float() -> None:
    config = TrainConfig.from_dict({"learning_rate": 1, "weight_decay": 0})
    assert (config.learning_rate, config.weight_decay) == (1.0, 0.0)
    assert isinstance(config.learning_rate, float) and isinstance(config.weight_decay, float)


@pytest.mark.parametrize("kind,builtins", [("backbone", ["lightgcn", "ncl", "ngcf", "sgl"]), ("denoiser", ["none", "rce", "tce"])])
def test_train_unknown_backbone_or_denoiser_lists_known(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path,
                                                        kind: str, builtins: list[str]) -> None:
    from llmhd_cli import plugins

    known = plugins.registry(kind).names()  # the built-ins plus whatever plugins are installed
    assert set(builtins) <= set(known)
    code, out, err = run_cli(capsys, workspace, *train_args(tmp_path / "run", f"--{kind}", "nope"))
    assert_user_error(code, out, err, f"--{kind}: unknown {kind} 'nope'", f"(known: {', '.join(known)})")
    assert not (tmp_path / "run").exists()


def test_train_unprepared_dataset_names_the_prepare_command(capsys: pytest.CaptureFixture, workspace: Path,
                                                            tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, workspace, "train", "-d", "lastfm", "--run-dir", str(tmp_path / "run"))
    assert_user_error(code, out, err, "dataset 'lastfm' is not prepared", "run: llmhd prepare --dataset lastfm --source DIR")
    assert not (workspace / "datasets" / "lastfm").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_cuda(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path) -> None:
    args = train_args(tmp_path / "run", "--epochs", "1")
    args[args.index("--device") + 1] = "cuda"
    code, out, err = run_cli(capsys, workspace, *args)
    assert_user_error(code, out, err, "--device cuda", "no CUDA device")
    assert not (tmp_path / "run").exists()


def test_train_click_level_errors_exit_2(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, workspace, *train_args(tmp_path / "run", "--objective", "mse"))
    assert code == 2 and "'mse' is not one of 'bpr', 'bce'" in err
    code, out, err = run_cli(capsys, workspace, *train_args(tmp_path / "run", "--epochs", "two"))
    assert code == 2 and "'two' is not a valid integer" in err


def test_evaluate_not_a_run_folder(capsys: pytest.CaptureFixture, workspace: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, workspace, "evaluate", str(tmp_path))
    assert_user_error(code, out, err, str(tmp_path), "not a run directory", "llmhd train")


def test_evaluate_unfinished_run(capsys: pytest.CaptureFixture, workspace: Path, base_run: Path, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(base_run / "config.toml", unfinished / "config.toml")
    shutil.copy(base_run / "log.jsonl", unfinished / "log.jsonl")
    code, out, err = run_cli(capsys, workspace, "evaluate", str(base_run), str(unfinished))
    assert_user_error(code, out, err, str(unfinished), "did not finish", "metrics.json")


# ------------------------------------------------------------------------ core: units


def test_negative_sampler_never_returns_a_training_positive() -> None:
    # Dense case: user 1 has every item but 5, user 2 every item but 1 and 2, so nearly every
    # first draw clashes and must be redrawn.
    users = np.array([1, 1, 1, 1, 2, 2, 2], dtype=np.int64)
    items = np.array([1, 2, 3, 4, 3, 4, 5], dtype=np.int64)
    data = SimpleNamespace(n_items=6, train_users=users, train_items=items)
    sampler = NegativeSampler(data, np.random.default_rng(0))
    query = np.repeat(np.array([1, 2, 3]), 2000)  # user 3 has no positives
    neg = sampler.sample(query)
    assert set(neg[query == 1]) == {5}
    assert set(neg[query == 2]) == {1, 2}
    assert set(neg[query == 3]) == {1, 2, 3, 4, 5}  # uniform over real items; never the padding id 0


def test_negative_sampler_on_the_prepared_dataset(workspace: Path) -> None:
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import load_recbole_data

    backbone = plugins.registry("backbone").get("lightgcn", "--backbone")
    data = load_recbole_data(open_dataset(workspace, DATASET), backbone, {}, 2024, torch.device("cpu"))
    sampler = NegativeSampler(data, np.random.default_rng(1))
    positives = set(zip(data.train_users.tolist(), data.train_items.tolist(), strict=True))
    for _ in range(5):
        neg = sampler.sample(data.train_users)
        assert not positives & set(zip(data.train_users.tolist(), neg.tolist(), strict=True))
        assert neg.min() >= 1 and neg.max() < data.n_items


def _batch(losses: list[float], labels: list[float], scores: list[float] | None = None, step: int = 0) -> SampleBatch:
    n = len(losses)
    return SampleBatch(
        objective="bce", losses=torch.tensor(losses), scores=torch.tensor(scores or [0.0] * n),
        labels=torch.tensor(labels), users=torch.zeros(n, dtype=torch.long), items=torch.arange(n),
        neg_items=None, pair_index=torch.arange(n), step=step, epoch=0,
    )


def test_tce_schedule_and_choice() -> None:
    from llmhd_plugins.denoisers import TruncatedLoss

    tce = TruncatedLoss(drop_rate=0.2, num_gradual=10)
    assert [tce.rate(t) for t in (0, 5, 10, 20)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    losses = [0.1, 5.0, 0.3, 4.0, 0.2, 3.0, 0.5, 0.4, 0.6, 0.7]
    assert not tce.decide(_batch(losses, [1.0] * 10, step=0)).dropped.any()
    # step 5: rate 0.1 of 10 samples -> the single largest loss goes
    decision = tce.decide(_batch(losses, [1.0] * 10, step=5))
    assert decision.dropped.nonzero().flatten().tolist() == [1]
    assert decision.weights.tolist() == [1.0, 0.0] + [1.0] * 8
    # past num_gradual: rate 0.2 -> two largest
    assert tce.decide(_batch(losses, [1.0] * 10, step=50)).dropped.nonzero().flatten().tolist() == [1, 3]
    # BCE: negatives are never dropped, however large their loss
    labels = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert tce.decide(_batch(losses, labels, step=50)).dropped.nonzero().flatten().tolist() == [8, 9]


def test_rce_weights() -> None:
    from llmhd_plugins.denoisers import ReweightedLoss

    scores = [2.0, -1.0, 0.5, 3.0]
    labels = [1.0, 1.0, 0.0, 0.0]
    decision = ReweightedLoss(beta=0.5).decide(_batch([1.0] * 4, labels, scores))
    p = torch.sigmoid(torch.tensor(scores))
    expected = [p[0] ** 0.5, p[1] ** 0.5, (1 - p[2]) ** 0.5, (1 - p[3]) ** 0.5]
    assert decision.weights.tolist() == pytest.approx([float(e) for e in expected])
    assert not decision.dropped.any()
    # beta 0 is the plain objective
    assert ReweightedLoss(beta=0.0).decide(_batch([1.0] * 4, labels, scores)).weights.tolist() == [1.0] * 4


def test_per_sample_losses_match_torch() -> None:
    from recbole.model.loss import BPRLoss

    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(64, generator=gen) * 3, torch.randn(64, generator=gen) * 3
    losses, margin, labels = per_sample_losses("bpr", pos, neg)
    # Equal up to float32 rounding (different but equivalent formulas).
    assert torch.allclose(losses, -F.logsigmoid(pos - neg), atol=1e-6)
    assert torch.equal(margin, pos - neg) and torch.equal(labels, torch.ones(64))
    assert float(losses.mean()) == pytest.approx(float(BPRLoss()(pos, neg)), abs=1e-6)  # RecBole's own

    losses, logits, labels = per_sample_losses("bce", pos, neg)
    target = torch.cat([torch.ones(64), torch.zeros(64)])
    assert torch.equal(labels, target) and torch.equal(logits, torch.cat([pos, neg]))
    assert torch.allclose(losses, F.binary_cross_entropy_with_logits(logits, target, reduction="none"), atol=1e-6)
    with pytest.raises(ValueError):
        per_sample_losses("mse", pos, neg)


def test_loss_seam_averages_weighted_losses_over_kept_samples() -> None:
    from llmhd_plugins.denoisers import TruncatedLoss

    seam = LossSeam("bpr", TruncatedLoss(drop_rate=0.5, num_gradual=1))
    n = 4
    seam.set_batch(torch.zeros(n, dtype=torch.long), torch.arange(n), torch.arange(n), torch.arange(n), step=1, epoch=0)
    pos = torch.tensor([3.0, -2.0, 1.0, -4.0], requires_grad=True)
    loss = seam(pos, torch.zeros(n))
    per = -F.logsigmoid(pos.detach())
    assert float(loss.detach()) == pytest.approx(float((per[0] + per[2]) / 2))  # the two largest losses dropped
    assert (seam.stats.samples, seam.stats.dropped) == (4, 2)
    assert sorted(seam.stats.dropped_pairs[0].tolist()) == [1, 3]
    loss.backward()
    assert pos.grad[1] == 0 and pos.grad[3] == 0 and pos.grad[0] != 0


def test_full_rank_metrics_hand_computed() -> None:
    shape = (4, 6)  # users 1..3 and items 1..5; id 0 is RecBole's padding
    model = FixedScores([
        [0, 0, 0, 0, 0, 0],
        [9, 10, 5, 4, 3, 1],  # user 1: padding and the masked item 1 score highest
        [0, 5, 4, 3, 2, 1],   # user 2
        [0, 1, 1, 1, 1, 1],   # user 3: nothing in the test split, so skipped
    ])
    truth = csr({1: [2, 4], 2: [5]}, shape)
    train = csr({1: [1], 2: [1]}, shape)
    # user 1 ranks 2, 3, 4, 5 (1 masked): hits at ranks 1 and 3 of 2 relevant
    # user 2 ranks 2, 3, 4, 5 (1 masked): its item 5 is 4th
    got = full_rank_metrics(model, truth, [train], ks=(1, 3))
    ndcg3_u1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got == pytest.approx({
        "recall@1": (1 / 2 + 0) / 2,
        "ndcg@1": (1 + 0) / 2,
        "recall@3": (1 + 0) / 2,
        "ndcg@3": (ndcg3_u1 + 0) / 2,
    })
    # a second mask (valid, for test scoring) removes item 2 from user 2's ranking: 5 moves to rank 3
    valid = csr({2: [2]}, shape)
    got = full_rank_metrics(model, truth, [train, valid], ks=(3,))
    assert got["recall@3"] == pytest.approx((1 + 1) / 2)
    assert got["ndcg@3"] == pytest.approx((ndcg3_u1 + 1 / math.log2(4)) / 2)
