"""The ``rgcf`` backbone (RGCF, Tian et al. 2022): kernels, pruning, diagnostics, training.

Small data: RecBole's bundled ml-100k cut to its first 150 users, 10-core (about 6k training
pairs with 5% low-rating noise), as in test_train.py. The learning test (slow) runs on the
whole ml-100k with 5% low-rating noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import assert_user_error, call_main, run_cli, write_ml100k_cut
from ranking_helpers import popularity_recall_at_10

from llmhd_plugins.rgcf import epoch_diagnostics, noise_auc, pruned_edge_noise
from llmhd_plugins.rgcf_model import (
    BipartiteGraph,
    edge_dot,
    graph_matmul,
    row_normalised,
    summed_cross_entropy,
)

DATASET = "small"
BATCH = 2048


def train_args(run_dir: Path, *flags: str, dataset: str = DATASET) -> list[str]:
    return ["train", "-d", dataset, "--backbone", "rgcf", "--batch-size", str(BATCH), "--device", "cpu",
            "--threads", "1", "--run-dir", str(run_dir), *flags]


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def read_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def rgcf_data(workspace: Path, dataset: str = DATASET, **params: Any) -> Any:
    from llmhd_cli import plugins
    from llmhd_cli.datasets import open_dataset
    from llmhd_cli.recbole_data import load_recbole_data

    backbone = plugins.registry("backbone").get("rgcf", "--backbone")
    return load_recbole_data(open_dataset(workspace, dataset), backbone, params, 2024, torch.device("cpu"))


def rgcf_model(data: Any) -> torch.nn.Module:
    from recbole.utils import init_seed

    from llmhd_cli import plugins
    from llmhd_cli.recbole_data import build_model

    init_seed(2024, reproducibility=True)
    return build_model(data, plugins.registry("backbone").get("rgcf", "--backbone"))


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, isolated_user_config: None) -> Path:
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), DATASET, 150)
    ws = tmp_path_factory.mktemp("ws")
    assert call_main(ws, "prepare", "--dataset", DATASET, "--source", str(source), "--kcore", "10") == 0
    return ws


@pytest.fixture(scope="module")
def data(workspace: Path) -> Any:
    return rgcf_data(workspace)


# ------------------------------------------------------------------------------- kernels


def small_graph() -> BipartiteGraph:
    # 3 users x 3 items (ids 1..3, 0 is padding), pairs given out of order.
    users = torch.tensor([1, 2, 1, 3, 3, 2, 1])
    items = torch.tensor([2, 1, 1, 3, 1, 3, 3])
    return BipartiteGraph(users, items, 4, 4)


def test_kernels_equal_dense_products_and_their_gradients() -> None:
    graph = small_graph()
    assert graph.rows.tolist() == [1, 1, 1, 2, 2, 3, 3] and graph.cols.tolist() == [1, 2, 3, 1, 3, 1, 3]
    torch.manual_seed(0)
    values = torch.rand(graph.n_edges, dtype=torch.double, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    dense = torch.zeros(4, 4, dtype=torch.double)
    dense[graph.rows, graph.cols] = values.detach()
    assert torch.allclose(graph_matmul(values, x, graph, "user"), dense @ x)
    assert torch.allclose(graph_matmul(values[graph.to_item_major], x, graph, "item"), dense.t() @ x)
    assert torch.allclose(edge_dot(x, y, graph), (x[graph.rows] * y[graph.cols]).sum(1))
    # The hand-written backward passes (SDDMM for the values, transposed SpMM for x).
    assert torch.autograd.gradcheck(lambda v, a: graph_matmul(v, a, graph, "user"), (values, x))
    assert torch.autograd.gradcheck(lambda v, a: graph_matmul(v, a, graph, "item"), (values, x))
    assert torch.autograd.gradcheck(lambda a, b: edge_dot(a, b, graph), (x, y))


def test_infonce_cross_entropy_equals_torch_and_its_gradient() -> None:
    torch.manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
    c = torch.randn(7, 3, dtype=torch.double, requires_grad=True)
    target = torch.tensor([0, 3, 3, 6, 1])
    expected = F.cross_entropy(a @ c.t(), target, reduction="sum")
    assert torch.allclose(summed_cross_entropy(a, c, target), expected)
    assert torch.autograd.gradcheck(lambda x, y: summed_cross_entropy(x, y, target), (a, c))
    # With a reused logits buffer (as training does): every step's gradients are its own.
    buffer = torch.empty(5, 7, dtype=torch.double)
    for scale in (1.0, 3.0):
        x, y = (a * scale).detach().requires_grad_(), c.detach().requires_grad_()
        summed_cross_entropy(x, y, target, out=buffer).backward()
        ref_x, ref_y = (a * scale).detach().requires_grad_(), c.detach().requires_grad_()
        F.cross_entropy(ref_x @ ref_y.t(), target, reduction="sum").backward()
        assert torch.allclose(x.grad, ref_x.grad) and torch.allclose(y.grad, ref_y.grad)


def test_row_normalisation_gives_each_row_weight_one() -> None:
    graph = small_graph()
    weights = torch.tensor([0.5, 0.0, 0.25, 1.0, 1.0, 0.2, 0.6])  # user-major; edge (1, 2) pruned
    user_values, item_values = row_normalised(weights, graph)
    assert torch.allclose(user_values, torch.tensor([2 / 3, 0, 1 / 3, 0.5, 0.5, 0.25, 0.75]), atol=1e-6)
    # item-major: item 1 <- users 1, 2, 3; item 2 <- user 1; item 3 <- users 1, 2, 3
    expected = torch.tensor([0.5 / 1.7, 1 / 1.7, 0.2 / 1.7, 0.0, 0.25 / 1.85, 1 / 1.85, 0.6 / 1.85])
    assert torch.allclose(item_values, expected, atol=1e-6)


# --------------------------------------------------------------------------- diagnostics


def test_pruned_edge_noise_on_a_hand_made_graph() -> None:
    n_items = 10
    # training rows: (1,1) clean, (1,2) noise, (2,3) noise, (2,4) clean, (3,5) noise, (3,6) clean, (1,2) again
    train_users = np.array([1, 1, 2, 2, 3, 3, 1])
    train_items = np.array([1, 2, 3, 4, 5, 6, 2])
    is_noise = np.array([False, True, True, False, True, False, True])
    # pruned: (1,2) noise, (2,4) clean, and (1,2) listed twice: two distinct edges, one of them noise
    result = pruned_edge_noise(np.array([1, 2, 1]), np.array([2, 4, 2]), train_users, train_items, is_noise, n_items)
    assert (result.pruned_edges, result.pruned_noise, result.n_noise) == (2, 1, 3)
    assert result.precision == pytest.approx(1 / 2) and result.recall == pytest.approx(1 / 3)
    assert result.f1 == pytest.approx(0.4)

    everything = pruned_edge_noise(np.array([3, 2, 1]), np.array([5, 3, 2]), train_users, train_items, is_noise, n_items)
    assert (everything.precision, everything.recall, everything.f1) == (1.0, 1.0, 1.0)
    nothing = pruned_edge_noise(np.array([], dtype=int), np.array([], dtype=int), train_users, train_items, is_noise, n_items)
    assert (nothing.pruned_edges, nothing.precision, nothing.recall, nothing.f1) == (0, 0.0, 0.0, 0.0)


def test_noise_auc_counts_noise_below_clean_pairs() -> None:
    # (noise, clean) pairs: (0.1, 0.9) (0.1, 0.5) (0.5, 0.9) below, (0.5, 0.5) a tie -> 3.5 / 4
    reliability = np.array([0.1, 0.9, 0.5, 0.5])
    assert noise_auc(reliability, np.array([True, False, True, False])) == pytest.approx(0.875)
    assert noise_auc(reliability, np.array([False, True, False, False])) == pytest.approx(0.0)
    assert noise_auc(reliability, np.zeros(4, dtype=bool)) is None


# ------------------------------------------------------------------------ the model itself


def test_forward_is_lightgcn_on_the_pruned_row_normalised_graph(data: Any) -> None:
    """The propagated embeddings equal a dense computation: reliabilities (cos + 1) / 2 of the
    structural representations, edges below the threshold removed, rows normalised, layer mean."""
    model = rgcf_model(data)
    reliability, _ = model.edge_state()
    model.prune_threshold = float(reliability.median())  # prune about half the edges
    reliability, pruned = model.edge_state()
    assert 0.3 < float(pruned.float().mean()) < 0.7

    with torch.no_grad():
        inter = torch.zeros(model.n_users, model.n_items)
        inter[torch.as_tensor(data.train_users), torch.as_tensor(data.train_items)] = 1.0
        users0 = inter @ model.user_linear.weight.t()
        items0 = inter.t() @ model.item_linear.weight.t()
        cos = F.normalize(users0, dim=1)[model.graph.rows] * F.normalize(items0, dim=1)[model.graph.cols]
        assert torch.allclose((cos.sum(1) + 1) / 2, reliability, atol=1e-5)
        weights = torch.zeros(model.n_users, model.n_items)
        kept = reliability >= model.prune_threshold
        weights[model.graph.rows[kept], model.graph.cols[kept]] = reliability[kept]
        to_users = weights / (weights.sum(1, keepdim=True) + 1e-7)
        to_items = weights.t() / (weights.t().sum(1, keepdim=True) + 1e-7)
        user_layers, item_layers, u, i = [users0], [items0], users0, items0
        for _ in range(model.n_layers):
            u, i = to_users @ i, to_items @ u
            user_layers.append(u)
            item_layers.append(i)
        user_e, item_e = model.forward()
    assert torch.allclose(user_e, torch.stack(user_layers).mean(0), atol=1e-5)
    assert torch.allclose(item_e, torch.stack(item_layers).mean(0), atol=1e-5)


def test_bce_and_bpr_go_through_the_seam(workspace: Path, data: Any) -> None:
    """RGCF's pairwise term is the seam's: under BCE it is the mean BCE of the positive and
    negative logits (with reg and MI off, the whole loss), and the seam sees 2 samples per pair."""
    from recbole.data.interaction import Interaction

    from llmhd_cli import plugins
    from llmhd_cli.denoising import Denoiser
    from llmhd_cli.objectives import LossSeam

    backbone = plugins.registry("backbone").get("rgcf", "--backbone")
    model = rgcf_model(rgcf_data(workspace, reg_weight=0.0, MIM_weight=0.0))
    users = torch.as_tensor(data.train_users[:64]).long()
    pos = torch.as_tensor(data.train_items[:64]).long()
    neg = torch.as_tensor((data.train_items[:64] % (data.n_items - 1)) + 1).long()
    inter = Interaction({model.USER_ID: users, model.ITEM_ID: pos, model.NEG_ITEM_ID: neg})
    user_e, item_e = model.forward()
    pos_scores, neg_scores = (user_e[users] * item_e[pos]).sum(1), (user_e[users] * item_e[neg]).sum(1)
    for objective, expected in [
        ("bce", F.binary_cross_entropy_with_logits(torch.cat([pos_scores, neg_scores]),
                                                   torch.cat([torch.ones(64), torch.zeros(64)]))),
        ("bpr", F.softplus(neg_scores - pos_scores).mean()),
    ]:
        seam = LossSeam(objective, Denoiser())
        seam.set_batch(users, pos, neg, torch.arange(64), 0, 0)
        loss = backbone.batch_loss(model, inter, seam, 0, data.config)
        assert seam.stats.samples == (128 if objective == "bce" else 64)
        assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert model.mf_loss.__class__.__name__ == "BPRLoss"  # the seam was swapped back


def test_full_sort_cache_follows_recbole_graph_models(data: Any) -> None:
    from recbole.data.interaction import Interaction

    model = rgcf_model(data)
    assert model.other_parameter_name == ["restore_user_e", "restore_item_e"]
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(Interaction({model.USER_ID: torch.tensor([1, 2])}))
    assert model.restore_user_e is not None and model.restore_item_e is not None
    model.train()
    batch = Interaction({model.USER_ID: torch.tensor([1]), model.ITEM_ID: torch.tensor([int(data.train_items[0])]),
                         model.NEG_ITEM_ID: torch.tensor([1])})
    model.calculate_loss(batch)
    assert model.restore_user_e is None and model.restore_item_e is None


def test_importing_the_plugin_does_not_import_torch_or_recbole() -> None:
    code = "import sys, llmhd_plugins.rgcf; assert 'recbole' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


# ----------------------------------------------------------------------- training (CLI)


def test_pruning_is_nonempty_changes_the_model_and_is_reproducible(capsys: pytest.CaptureFixture, workspace: Path,
                                                                  data: Any, tmp_path: Path) -> None:
    from llmhd_cli.checkpoints import load_run_model

    runs = {}
    for name, threshold in [("pruned", 0.45), ("again", 0.45), ("unpruned", 0.0)]:
        runs[name] = tmp_path / name
        code, _, err = run_cli(capsys, workspace, *train_args(runs[name], "--epochs", "3", "--early-stop", "0",
                                                              "--set", f"prune_threshold={threshold}"))
        assert code == 0, err

    model, run_data, _ = load_run_model(runs["pruned"], workspace, "cpu")
    diag = epoch_diagnostics(model, run_data)
    assert 0 < diag["pruned_edges"] < diag["edges"]
    # pruned_rows are the training rows of exactly the pruned pairs
    rows = diag["pruned_rows"]
    _, pruned = model.edge_state()
    pairs = set(zip(model.graph.rows[pruned].tolist(), model.graph.cols[pruned].tolist(), strict=True))
    assert set(zip(run_data.train_users[rows].tolist(), run_data.train_items[rows].tolist(), strict=True)) == pairs
    expected = pruned_edge_noise(run_data.train_users[rows], run_data.train_items[rows], run_data.train_users,
                                 run_data.train_items, run_data.is_noise, run_data.n_items)
    assert diag["noise"] == expected.to_dict() and diag["noise"]["n_noise"] == int(run_data.is_noise.sum()) > 0
    assert 0.0 <= diag["noise_auc"] <= 1.0

    # The training loop logs every epoch's pruned edges, and counts them as the run's removed
    # positives in the noise detection that evaluate shows.
    log = [json.loads(line) for line in (runs["pruned"] / "log.jsonl").read_text().splitlines()]
    for record in log:
        assert 0 < record["backbone"]["pruned_edges"] == record["noise"]["dropped_positives"]
        assert record["backbone"]["noise"]["precision"] == pytest.approx(record["noise"]["precision"])
        assert "pruned_rows" not in record["backbone"]
    assert read_metrics(runs["pruned"])["noise_detection"]["pruned"] == log[-1]["backbone"]["noise"]
    assert all(r["noise"]["dropped_positives"] == 0 for r in
               map(json.loads, (runs["unpruned"] / "log.jsonl").read_text().splitlines()))

    unpruned, _, _ = load_run_model(runs["unpruned"], workspace, "cpu")
    assert epoch_diagnostics(unpruned, run_data)["pruned_edges"] == 0
    weights = lambda m: torch.cat([p.detach().ravel() for p in m.parameters()])  # noqa: E731
    assert not torch.allclose(weights(model), weights(unpruned))
    assert read_metrics(runs["pruned"])["test"] != read_metrics(runs["unpruned"])["test"]
    assert read_metrics(runs["pruned"])["test"] == read_metrics(runs["again"])["test"]  # same seed, same run


@pytest.mark.parametrize("setting, words", [
    ("prune_threshold=-0.1", ["prune_threshold", "[0, 1]"]),
    ("prune_threshold=1.5", ["prune_threshold", "[0, 1]"]),
    ("aug_ratio=1.2", ["aug_ratio", "[0, 1]"]),
    ("aug_ratio=-0.5", ["aug_ratio", "[0, 1]"]),
    ("MIM_weight=-1e-6", ["MIM_weight", ">= 0"]),
    ("tau=0", ["tau", "> 0"]),
    ("n_layers=0", ["n_layers"]),
    ("prune_threshold=high", ["prune_threshold", "a number"]),
])
def test_bad_hyperparameters_are_one_line_errors_before_a_run_folder(capsys: pytest.CaptureFixture, workspace: Path,
                                                                     tmp_path: Path, setting: str, words: list[str]) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, workspace, *train_args(run_dir, "--epochs", "1", "--set", setting))
    assert_user_error(code, out, err, "--set", *words)
    assert not run_dir.exists()


@pytest.mark.slow
def test_trains_learns_and_evaluates_on_ml100k_with_noise(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    """ml-100k with 5% low-rating noise, BPR and BCE: a few epochs rank the test items well
    above item popularity, `evaluate --recompute` reproduces the stored test metrics, and the
    pruning diagnostics are measured against the injected noise."""
    from llmhd_cli.checkpoints import load_run_model

    workspace = tmp_path / "ws"
    assert call_main(workspace, "prepare", "--dataset", "ml-100k") == 0
    split = rgcf_data(workspace, "ml-100k")
    popularity = popularity_recall_at_10(split)
    assert 0.05 < popularity < 0.2
    for objective in ("bpr", "bce"):
        run_dir = tmp_path / objective
        code, _, err = run_cli(capsys, workspace, *train_args(run_dir, "--objective", objective, "--epochs", "3",
                                                              "--batch-size", "1024", "--lr", "5e-4",
                                                              "--early-stop", "0", dataset="ml-100k"))
        assert code == 0, err
        log = read_log(run_dir)
        assert [r["samples"] for r in log] == [len(split.train_users) * (2 if objective == "bce" else 1)] * 3
        assert log[-1]["loss"] < log[0]["loss"]
        test = read_metrics(run_dir)["test"]
        assert test["recall@10"] > 1.5 * popularity, (objective, test, popularity)

        code, out, err = run_cli(capsys, workspace, "evaluate", str(run_dir), "--recompute", "--format", "json")
        assert code == 0, err
        recomputed = json.loads(out)[0]
        for key, value in test.items():
            assert recomputed[key] == pytest.approx(value, abs=1e-6)

    model, data, _ = load_run_model(tmp_path / "bpr", workspace, "cpu")
    diag = epoch_diagnostics(model, data)
    assert diag["edges"] == len(data.train_users) and diag["noise"]["n_noise"] == int(data.is_noise.sum()) > 2000
