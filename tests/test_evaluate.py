"""``llmhd evaluate``: grouping, baselines, the tests over seeds and over users, leak marking.

Most tests build run folders by hand (config.toml, metrics.json, test_per_user.npz with
chosen per-user vectors), so every mean and p-value is known in advance; one slow test trains
a real small model and checks what training stores against a fresh recompute.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from cli_helpers import assert_user_error, call_main, run_cli, table_row, write_ml100k_cut
from ranking_helpers import FixedScores
from ranking_helpers import csr as rows_csr
from scipy import stats

from llmhd_cli import plugins, runs
from llmhd_cli.evaluation import METRICS, UserMetrics, evaluate_runs, full_rank_metrics
from llmhd_cli.llm.base import Provider

N_USERS = 60
USERS = np.arange(1, N_USERS + 1, dtype=np.int64)
SPLIT = "split-a"


def base_config(**changes: Any) -> dict[str, Any]:
    config = {"dataset": "toy", "backbone": "lightgcn", "objective": "bpr", "denoiser": "none", "epochs": 5,
              "batch_size": 1024, "learning_rate": 0.005, "seed": 1, "device": "cpu", "threads": 1,
              "backbone_params": {}, "denoiser_params": {}}
    for key, value in changes.items():
        if isinstance(value, dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def fake_run(root: Path, name: str, values: dict[str, np.ndarray] | None = None, split: str = SPLIT,
             users: np.ndarray = USERS, per_user: bool = True, **config: Any) -> Path:
    """A finished run folder with these per-user test values (a constant 0.1 for metrics not given)."""
    folder = root / name
    folder.mkdir(parents=True)
    runs.write_config(folder, base_config(**config))
    vectors = {m: np.full(len(users), 0.1) for m in METRICS}
    vectors.update(values or {})
    metrics = UserMetrics(users, vectors, split)
    if per_user:
        metrics.save(folder / runs.PER_USER)
    runs.write_metrics(folder, {"best_epoch": 1, "test": metrics.means()})
    return folder


def evaluate_json(capsys: pytest.CaptureFixture, *args: str) -> list[dict[str, Any]]:
    code, out, err = run_cli(capsys, None, "evaluate", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def by_denoiser(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["denoiser"]: row for row in rows}


# --------------------------------------------------------------------------- per-user metrics


def test_per_user_vectors_hand_computed(tmp_path: Path) -> None:
    def csr(rows: dict[int, list[int]]) -> sp.csr_matrix:
        return rows_csr(rows, (5, 5))

    model = FixedScores([[0] * 5, [0, 4, 3, 2, 1], [0, 1, 2, 3, 4], [0] * 5, [0, 4, 3, 2, 1]])
    truth = csr({1: [1, 3, 4], 2: [1], 4: [2]})  # user 3 has no test items: skipped
    got = full_rank_metrics(model, truth, [csr({})], ks=(2,), per_user=True, batch_users=2)
    np.testing.assert_array_equal(got.users, [1, 2, 4])
    # user 1 ranks 1, 2, 3, 4: one of three at rank 1; user 2 ranks 4, 3, 2, 1: miss; user 4: its one at rank 2
    np.testing.assert_allclose(got.values["recall@2"], [1 / 3, 0, 1])
    np.testing.assert_allclose(got.values["ndcg@2"], [1 / (1 + 1 / np.log2(3)), 0, 1 / np.log2(3)])
    assert got.means() == full_rank_metrics(model, truth, [csr({})], ks=(2,))
    got.save(tmp_path / "v.npz")
    again = UserMetrics.load(tmp_path / "v.npz")
    assert again.split == got.split and {k: list(v) for k, v in again.values.items()} == {
        k: list(v) for k, v in got.values.items()}
    other = full_rank_metrics(model, csr({1: [1, 3], 2: [2], 4: [4]}), [csr({})], ks=(2,), per_user=True)
    assert other.split != got.split  # another split, another fingerprint


# --------------------------------------------------------------------------- statistics


def two_settings(tmp_path: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """none and tce, two seeds each, on the same 60 users.

    recall@10: tce = none + 0.05 + user noise (a clear, consistent gain);
    ndcg@10: tce's seed-mean differs from none's by +c and -c on alternating users (mean 0);
    recall@5: tce's second seed scores everyone 0, so its per-user mean is half the first seed's.
    """
    rng = np.random.default_rng(0)
    none1, none2 = rng.uniform(0, 0.5, N_USERS), rng.uniform(0, 0.5, N_USERS)
    gain = 0.05 + rng.normal(0, 0.02, N_USERS)
    swing = np.where(np.arange(N_USERS) % 2 == 0, 0.1, -0.1)
    r5_tce1 = rng.uniform(0.2, 0.6, N_USERS)
    runs_ = [
        fake_run(tmp_path, "none-1", {"recall@10": none1, "ndcg@10": none1, "recall@5": none1}, seed=1),
        fake_run(tmp_path, "none-2", {"recall@10": none2, "ndcg@10": none2, "recall@5": none2}, seed=2),
        fake_run(tmp_path, "tce-1", {"recall@10": none1 + gain, "ndcg@10": none1 + swing, "recall@5": r5_tce1},
                 seed=1, denoiser="tce"),
        fake_run(tmp_path, "tce-2", {"recall@10": none2 + gain, "ndcg@10": none2 + swing,
                                     "recall@5": np.zeros(N_USERS)}, seed=2, denoiser="tce"),
    ]
    return runs_, {"none1": none1, "none2": none2, "gain": gain, "r5_tce1": r5_tce1}


def test_group_means_std_and_both_tests_match_scipy(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    paths, v = two_settings(tmp_path)
    rows = by_denoiser(evaluate_json(capsys, *map(str, paths), "--group", "--baseline", "denoiser=none"))
    none, tce = rows["none"], rows["tce"]
    assert (none["runs"], tce["runs"], tce["seeds"]) == (2, 2, "1,2")

    # means and std over the runs' means
    run_means = {"none": [v["none1"].mean(), v["none2"].mean()],
                 "tce": [(v["none1"] + v["gain"]).mean(), (v["none2"] + v["gain"]).mean()]}
    assert tce["recall@10 mean"] == pytest.approx(np.mean(run_means["tce"]), abs=1e-12)
    assert tce["recall@10 std"] == pytest.approx(np.std(run_means["tce"], ddof=1), abs=1e-12)

    # Welch over seeds: scipy on the runs' means
    welch = stats.ttest_ind(run_means["tce"], run_means["none"], equal_var=False).pvalue
    assert tce["p welch recall@10"] == pytest.approx(welch, rel=1e-9)
    # recall@5: unequal variances, where Welch's degrees of freedom differ from the pooled test's
    r5 = {"none": run_means["none"], "tce": [v["r5_tce1"].mean(), 0.0]}
    welch5 = stats.ttest_ind(r5["tce"], r5["none"], equal_var=False).pvalue
    assert tce["p welch recall@5"] == pytest.approx(welch5, rel=1e-9)
    assert welch5 != pytest.approx(stats.ttest_ind(r5["tce"], r5["none"]).pvalue, rel=1e-3)

    # paired t over users, by hand: d = tce's per-user seed mean - none's
    d = ((v["none1"] + v["gain"] + v["none2"] + v["gain"]) / 2) - (v["none1"] + v["none2"]) / 2
    t = d.mean() / (d.std(ddof=1) / np.sqrt(N_USERS))
    assert tce["p paired-t recall@10"] == pytest.approx(2 * stats.t.sf(abs(t), N_USERS - 1), rel=1e-9)
    assert tce["p paired-t recall@10"] < 1e-12  # a consistent gain of 0.05 per user

    # ndcg@10: per-user differences of exactly +-0.1, half each: no evidence at all
    assert tce["p paired-t ndcg@10"] == pytest.approx(1.0)

    # recall@5: the seeds are averaged per user before pairing (not one seed, not pooled)
    a5 = v["r5_tce1"] / 2
    b5 = (v["none1"] + v["none2"]) / 2
    assert tce["p paired-t recall@5"] == pytest.approx(stats.ttest_rel(a5, b5).pvalue, rel=1e-9)

    # every metric has both tests; the baseline's own row has none
    for m in METRICS:
        assert tce[f"p welch {m}"] is not None or m == "ndcg@5"  # ndcg@5: 0.1 everywhere, std 0
        assert none[f"p welch {m}"] is None and none[f"p paired-t {m}"] is None
    assert tce["p paired-t ndcg@5"] is None  # identical per-user values: nothing to test
    assert (none["baseline"], tce["baseline"]) == ("(baseline)", "denoiser=none")


def test_wilcoxon_on_request(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    paths, v = two_settings(tmp_path)
    rows = by_denoiser(evaluate_json(capsys, *map(str, paths), "--group", "--baseline", "none",
                                     "--paired-test", "wilcoxon"))
    a5 = v["r5_tce1"] / 2
    b5 = (v["none1"] + v["none2"]) / 2
    tce = rows["tce"]
    assert tce["p paired-wilcoxon recall@5"] == pytest.approx(stats.wilcoxon(a5, b5, zero_method="pratt").pvalue)
    assert tce["p paired-wilcoxon recall@10"] < 1e-6
    assert "p paired-t recall@10" not in tce


def test_group_table_shows_both_p_values(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    paths, _ = two_settings(tmp_path)
    rows = by_denoiser(evaluate_json(capsys, *map(str, paths), "--group", "--baseline", "none"))
    code, out, err = run_cli(capsys, None, "evaluate", *map(str, paths), "--group", "--baseline", "none")
    assert code == 0, err
    assert "toy · lightgcn · bpr" in out  # what all rows share is said once, in the title
    assert table_row(out, "none (baseline)")[1:3] == ["no", "2"]
    p_row = table_row(out, "p vs denoiser=none")  # under tce's row: Welch / paired, per metric
    tce = rows["tce"]
    assert p_row[2] == f"{tce['p welch recall@10']:.2g} / {tce['p paired-t recall@10']:.2g}"
    assert p_row[3] == "- / -"  # ndcg@5: the same everywhere
    assert "Welch t-test over seeds / paired t-test over test users" in " ".join(out.split())


# --------------------------------------------------------------------------- grouping


def test_seed_device_threads_and_run_dir_do_not_split_a_setting(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    paths = [
        fake_run(tmp_path, "a", seed=1, device="cpu", threads=1),
        fake_run(tmp_path, "b", seed=2, device="cuda", threads=0),
        fake_run(tmp_path, "c", seed=3, device="auto", threads=4, run_dir="/elsewhere/c"),
        fake_run(tmp_path, "d", seed=1, learning_rate=0.001),  # another setting
    ]
    rows = evaluate_json(capsys, *map(str, paths), "--group")
    assert [(r["runs"], r["seeds"]) for r in rows] == [(3, "1,2,3"), (1, "1")]
    assert [r["setting"] for r in rows] == ["learning_rate=0.005", "learning_rate=0.001"]


# --------------------------------------------------------------------------- baselines


@pytest.fixture()
def four_settings(tmp_path: Path) -> list[str]:
    return [str(p) for p in (
        fake_run(tmp_path, "none"),
        fake_run(tmp_path, "tce", denoiser="tce"),
        fake_run(tmp_path, "llmhd-500", denoiser="llmhd", denoiser_params={"alpha": 500.0}),
        fake_run(tmp_path, "llmhd-1e4", denoiser="llmhd", denoiser_params={"alpha": 10000.0}),
    )]


def test_baseline_named_by_setting_run_folder_or_denoiser(capsys: pytest.CaptureFixture, four_settings: list[str]) -> None:
    rows = evaluate_json(capsys, *four_settings, "--group", "--baseline", "denoiser=llmhd,alpha=500")
    assert [r["baseline"] for r in rows] == ["denoiser=llmhd alpha=500.0", "denoiser=llmhd alpha=500.0",
                                             "(baseline)", "alpha=500.0"]
    # the same, as a dotted key or by one of its runs
    assert evaluate_json(capsys, *four_settings, "--group", "--baseline", "denoiser_params.alpha=500") == rows
    assert evaluate_json(capsys, *four_settings, "--group", "--baseline", four_settings[2]) == rows
    # a bare denoiser name is denoiser=NAME
    rows = evaluate_json(capsys, *four_settings, "--group", "--baseline", "tce")
    assert [r["baseline"] for r in rows] == ["denoiser=tce", "(baseline)", "denoiser=tce", "denoiser=tce"]


def test_baseline_ambiguous_or_missing_lists_candidates(capsys: pytest.CaptureFixture, four_settings: list[str],
                                                        tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", "llmhd")
    assert_user_error(code, out, err, "2 settings match", "alpha=500.0", "alpha=10000.0")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", "denoiser=dcf")
    assert_user_error(code, out, err, "no setting matches", "denoiser=none", "denoiser=tce")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", "seed=1")
    assert_user_error(code, out, err, "'seed' is not part of a setting")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", "gamma=1")
    assert_user_error(code, out, err, "no run has a setting 'gamma'", "alpha")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", "denoiser=")
    assert_user_error(code, out, err, "key=value")
    other = fake_run(tmp_path / "elsewhere", "x")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--group", "--baseline", str(other))
    assert_user_error(code, out, err, "not among the runs evaluated")
    code, out, err = run_cli(capsys, None, "evaluate", *four_settings, "--baseline", "none")
    assert_user_error(code, out, err, "--group")


def test_baseline_per_block_or_across_backbones(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    paths = [str(p) for p in (
        fake_run(tmp_path, "lgn-none"), fake_run(tmp_path, "lgn-tce", denoiser="tce"),
        fake_run(tmp_path, "ncl-tce", backbone="ncl", denoiser="tce"),
    )]
    # denoiser=none is looked for within each backbone: NCL has none
    code, out, err = run_cli(capsys, None, "evaluate", *paths, "--group", "--baseline", "none")
    assert_user_error(code, out, err, "no setting matches among toy/ncl/bpr", "denoiser=tce")
    # naming the backbone makes LightGCN's none the baseline of both backbones
    rows = evaluate_json(capsys, *paths, "--group", "--baseline", "backbone=lightgcn,denoiser=none")
    assert [r["baseline"] for r in rows] == ["(baseline)", "denoiser=none", "backbone=lightgcn denoiser=none"]
    assert all(r["p paired-t recall@10"] is None for r in rows)  # every user scores 0.1 everywhere


def test_paired_test_refuses_other_datasets_and_splits(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    gain = {"recall@10": np.full(N_USERS, 0.2)}
    base = str(fake_run(tmp_path, "none"))
    other_dataset = str(fake_run(tmp_path, "tce-other", gain, dataset="other", denoiser="tce"))
    code, out, err = run_cli(capsys, None, "evaluate", base, other_dataset, "--group",
                             "--baseline", "dataset=toy,denoiser=none")
    assert_user_error(code, out, err, "'other' runs cannot be paired", "'toy'")

    other_split = str(fake_run(tmp_path, "tce-resplit", gain, split="split-b", denoiser="tce"))
    code, out, err = run_cli(capsys, None, "evaluate", base, other_split, "--group", "--baseline", "none")
    assert_user_error(code, out, err, "different test splits")

    second_seed = str(fake_run(tmp_path, "none-resplit", split="split-b", seed=2))
    tce = str(fake_run(tmp_path, "tce", gain, denoiser="tce"))
    code, out, err = run_cli(capsys, None, "evaluate", base, second_seed, tce, "--group", "--baseline", "none")
    assert_user_error(code, out, err, "one setting", "different test splits")

    old = str(fake_run(tmp_path, "tce-old", gain, per_user=False, denoiser="tce"))
    code, out, err = run_cli(capsys, None, "evaluate", base, old, "--group", "--baseline", "none")
    assert_user_error(code, out, err, "no per-user test metrics", "--recompute")
    # without a baseline nothing needs them
    assert len(evaluate_json(capsys, base, old, "--group")) == 2


# --------------------------------------------------------------------------- leaks


class _LeakyProvider(Provider):
    name = "leaky-test"
    models = ("clean", "peek")
    leaky_models = ("peek",)


class _LeakyByDefault(Provider):
    name = "leaky-default"
    models = ("peek",)
    leaky_models = ("peek",)


class _Plain:  # a provider class from before leaky_models existed
    name = "plain-test"
    models = ("peek",)


@pytest.fixture()
def leaky_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    items = plugins.registry("provider").items
    for cls in (_LeakyProvider, _LeakyByDefault, _Plain):
        monkeypatch.setitem(items, cls.name, cls)


def test_leaking_runs_are_marked_everywhere_and_grouped_apart(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                              leaky_providers: None) -> None:
    def llmhd_run(name: str, seed: int, **params: str) -> str:
        return str(fake_run(tmp_path, name, seed=seed, denoiser="llmhd", denoiser_params=params))

    paths = [llmhd_run("peek-1", 1, provider="leaky-test", model="peek"),
             llmhd_run("peek-2", 2, provider="leaky-test", model="peek"),
             llmhd_run("clean", 1, provider="leaky-test", model="clean"),
             llmhd_run("default", 1, provider="leaky-default"),  # its default model leaks
             llmhd_run("plain", 1, provider="plain-test", model="peek"),
             llmhd_run("unknown", 1, provider="not-installed", model="peek"),
             str(fake_run(tmp_path, "none", seed=1))]
    expected = [True, True, False, True, False, False, False]
    rows = evaluate_json(capsys, *paths)
    assert [r["leak"] for r in rows] == expected
    code, out, err = run_cli(capsys, None, "evaluate", *paths, "--format", "csv")
    assert [r["leak"] for r in csv.DictReader(io.StringIO(out))] == [str(x) for x in expected]
    code, out, err = run_cli(capsys, None, "evaluate", *paths, "--format", "markdown")
    header = [c.strip() for c in out.splitlines()[0].strip("|").split("|")]
    leak_col = header.index("leak")
    assert [line.strip("|").split("|")[leak_col].strip() for line in out.splitlines()[2:]] == [str(x) for x in expected]
    code, out, err = run_cli(capsys, None, "evaluate", *paths)
    assert table_row(out, "1")[1:3] == ["llmhd", "LEAK"] and table_row(out, "3")[1:3] == ["llmhd", "no"]
    assert "reads held-out labels" in " ".join(out.split())

    groups = evaluate_json(capsys, *paths, "--group")
    assert [(g["leak"], g["runs"]) for g in groups] == [(True, 2), (False, 1), (True, 1), (False, 1), (False, 1), (False, 1)]
    code, out, err = run_cli(capsys, None, "evaluate", *paths, "--group")
    assert table_row(out, "llmhd")[1:4] == ["provider=leaky-test model=peek", "LEAK", "2"]
    # a leak status tells settings apart for --baseline too
    code, out, err = run_cli(capsys, None, "evaluate", *paths[:3], "--group", "--baseline", "denoiser=llmhd")
    assert_user_error(code, out, err, "2 settings match", "leak=true", "leak=false")
    rows = evaluate_json(capsys, *paths[:3], "--group", "--baseline", "denoiser=llmhd,leak=false")
    assert [r["baseline"] for r in rows] == ["model=clean leak=false", "(baseline)"]


# --------------------------------------------------------------------------- a real run


@pytest.mark.slow
def test_training_stores_per_user_metrics_equal_to_a_recompute(capsys: pytest.CaptureFixture,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    source = write_ml100k_cut(tmp_path_factory.mktemp("source"), "small", 150)
    ws = tmp_path_factory.mktemp("ws")
    assert call_main(ws, "prepare", "--dataset", "small", "--source", str(source), "--kcore", "10") == 0
    common = ["train", "-d", "small", "--batch-size", "2048", "--device", "cpu", "--threads", "1", "--epochs", "3"]
    base, tce = ws / "runs" / "none", ws / "runs" / "tce"
    assert call_main(ws, *common, "--run-dir", str(base)) == 0
    assert call_main(ws, *common, "--denoiser", "tce", "--drop-rate", "0.3", "--num-gradual", "3",
                     "--run-dir", str(tce)) == 0

    with np.load(base / runs.PER_USER, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    stored_test = json.loads((base / runs.METRICS).read_text())["test"]
    n = len(arrays["users"])
    assert n > 100 and set(METRICS) <= set(arrays)
    for metric in METRICS:
        assert arrays[metric].shape == (n,)
        assert float(arrays[metric].sum() / n) == stored_test[metric]  # the stored means are these vectors' means
    assert arrays["recall@10"].max() > 0  # the model learned something user by user

    (fresh,) = evaluate_runs([base], ws, recompute=True, device="cpu")
    assert fresh.per_user is not None
    np.testing.assert_array_equal(fresh.per_user.users, arrays["users"])
    assert fresh.per_user.split == str(arrays["split"])
    for metric in METRICS:
        np.testing.assert_allclose(fresh.per_user.values[metric], arrays[metric], rtol=0, atol=1e-12)

    rows = by_denoiser(evaluate_json(capsys, str(base), str(tce), "--group", "--baseline", "none"))
    assert all(0 <= rows["tce"][f"p paired-t {m}"] <= 1 for m in METRICS)
    assert rows["tce"]["p welch recall@10"] is None  # one seed a side: no Welch test
