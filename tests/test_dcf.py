"""The DCF denoiser: its rules on synthetic batches, the relabel seam, and ``llmhd train --denoiser dcf``.

Unit tests drive `DoubleCorrection.decide` with hand-made `SampleBatch`es whose losses are chosen
so each rule decides differently from the rule it corrects (instantaneous loss vs mean over
time, plain mean vs lower bound). The end-to-end tests train on MovieLens-100K as bundled with
RecBole, cut to 150 users (as tests/test_train.py does), for 3 epochs with each objective.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_helpers import call_main, write_ml100k_cut

from llmhd_cli.config import read_toml
from llmhd_cli.denoising import Decision, Denoiser, SampleBatch
from llmhd_cli.errors import LLMHDError
from llmhd_cli.objectives import LossSeam, opposite_label_losses, per_sample_losses
from llmhd_plugins.dcf import DoubleCorrection, damp, lower_bound_margin
from llmhd_plugins.dcf_denoiser import SPEC, _check

DATASET = "small"
N_USERS = 150
BATCH = 2048


# ------------------------------------------------------------------------------- helpers


def bpr_batch(losses: list[float], rows: list[int] | None = None, step: int = 1, epoch: int = 0) -> SampleBatch:
    """BPR triples with the given per-sample losses (margins chosen to match), keyed by ``rows``."""
    loss = torch.tensor(losses, dtype=torch.float32)
    n = len(losses)
    margin = -torch.log(torch.expm1(loss))  # softplus(-margin) == loss
    rows_t = torch.arange(n) if rows is None else torch.tensor(rows)
    zeros = torch.zeros(n, dtype=torch.long)
    return SampleBatch("bpr", loss, margin, torch.ones(n), zeros, rows_t, zeros, rows_t, step, epoch)


def bce_batch(pos_losses: list[float], neg_losses: list[float], step: int = 1, epoch: int = 0) -> SampleBatch:
    """BCE: positives (rows 0..P-1) followed by as many negatives (row -1)."""
    p = len(pos_losses)
    losses = torch.tensor(pos_losses + neg_losses, dtype=torch.float32)
    labels = torch.cat([torch.ones(p), torch.zeros(len(neg_losses))])
    pair_index = torch.cat([torch.arange(p), torch.full((len(neg_losses),), -1)])
    zeros = torch.zeros(len(losses), dtype=torch.long)
    return SampleBatch("bce", losses, torch.zeros(len(losses)), labels, zeros, zeros, None, pair_index, step, epoch)


def make(n_train: int, **kw: Any) -> DoubleCorrection:
    return DoubleCorrection(n_train, "cpu", **kw)


# ------------------------------------------------------------------------------- formulas


def test_damping_function_and_bound_margin() -> None:
    loss = torch.tensor([0.0, 0.01, 1.0, 3.0, 100.0])
    assert torch.allclose(damp(loss), torch.log(1 + loss + loss ** 2 / 2))
    assert damp(loss)[1] == pytest.approx(0.01, rel=1e-2)  # ~linear for small losses
    assert float(damp(loss)[4]) < 2 * math.log(100) + 0.1  # only logarithmic for outliers
    v, t, n = torch.tensor(0.5), 3.0, torch.tensor(3.0)
    expected = 0.5 * (3 + 0.5 * math.log(6) / 9) / (3 + 1 - 0.5)
    assert float(lower_bound_margin(v, t, n)) == pytest.approx(expected)
    assert float(lower_bound_margin(torch.tensor(0.0), t, n)) == 0.0


def test_schedules() -> None:
    dcf = make(4, drop_rate=0.2, num_gradual=100, sigma_decay=10)
    assert [dcf.rate(s) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert [dcf.decay(e) for e in (0, 9, 20)] == pytest.approx([1.0, 0.0, 0.0])
    assert dcf.decay(3) == pytest.approx(1 - 3 / 9)  # the authors' linspace(1, 0, epochs)
    assert make(4, sigma_decay=0).decay(1000) == 1.0


def authors_counts(n: int, d: float, r: float) -> tuple[int, int]:
    """(taken out, relabelled) of an n-sample batch at drop rate d, as bruno686/DCF ``loss.py`` slices it.

    ``PLC_uncertain_discard`` sorts the batch ascending and keeps ``int((1 - d) n)``; everything
    from ``int(((1 - r) + r (1 - d)) n)`` on is the relabelled set. Both are truncations of
    n minus a share, so each count is ceil(share * n): one sample as soon as d > 0.
    """
    return n - int((1 - d) * n), n - int(((1 - r) + r * (1 - d)) * n)


@pytest.mark.parametrize("objective", ["bce", "bpr"])
def test_counts_follow_the_authors_schedule(objective: str) -> None:
    """Default schedule (drop 0.2 over 30000 iterations, relabel ratio 0.05), fresh rows every batch."""
    n_pos, steps = 512, [0, 1, 2, 100, 1000, 5000, 15000, 29999, 30000, 90000]
    dcf = make(n_pos * len(steps))
    rng = np.random.default_rng(0)
    seen = []
    for k, step in enumerate(steps):
        rows = list(range(k * n_pos, (k + 1) * n_pos))
        pos = list(rng.uniform(0.05, 3.0, n_pos))
        if objective == "bce":  # BCE: N counts the sampled negatives too, as the authors' mixed batches do
            batch = bce_batch(pos, list(rng.uniform(0.05, 3.0, n_pos)), step=step)
            batch.pair_index[:n_pos] = torch.tensor(rows)
        else:
            batch = bpr_batch(pos, rows=rows, step=step)
        decision = dcf.decide(batch)
        out, flip = authors_counts(len(batch.losses), dcf.rate(step), dcf.relabel_ratio)
        seen.append((int(decision.dropped.sum()) + int(decision.relabel.sum()), int(decision.relabel.sum())))
        assert seen[-1] == (out, flip), (step, seen[-1], (out, flip))
    assert seen[0] == (0, 0)  # iteration 0: the ramp is at 0, nothing is taken out
    # Iteration 1: r d N = 0.05 * 0.2 / 30000 * N is far below one sample, yet the authors' slicing
    # (and so this code) relabels one sample and drops none.
    assert seen[1] == (1, 1)
    n = 2 * n_pos if objective == "bce" else n_pos
    assert seen[-1] == (n - int(0.8 * n), n - int(0.99 * n))  # the plateau: d = 0.2, r d = 0.01


# ------------------------------------------------------------------------------- rules


def test_mean_over_time_keeps_a_one_off_spike() -> None:
    """Sample 0 spikes once; sample 1 is high every epoch. T-CE's rule would drop 0, DCF drops 1."""
    dcf = make(10, drop_rate=0.1, num_gradual=1, relabel_ratio=0.0, sigma2=0.0)
    history = [[0.2, 1.0] + [0.1] * 8, [0.2, 1.0] + [0.1] * 8, [3.0, 1.0] + [0.1] * 8]
    for epoch, losses in enumerate(history):
        decision = dcf.decide(bpr_batch(losses, epoch=epoch))
    assert decision.dropped.tolist() == [False, True] + [False] * 8
    assert decision.weights.tolist() == [1.0, 0.0] + [1.0] * 8


def test_lower_bound_keeps_a_high_variance_sample_the_plain_mean_drops() -> None:
    """Sample 0: damped losses 1.61, 0.20, 1.61 (mean 1.14, high variance); sample 1: 1.07 every epoch.

    By the plain mean sample 0 is the noisiest; its lower bound (mean minus the variance
    margin) falls below sample 1's, so DCF keeps it (a hard sample) and drops sample 1.
    """
    history = [[2.0, 1.2] + [0.1] * 8, [0.2, 1.2] + [0.1] * 8, [2.0, 1.2] + [0.1] * 8]

    def last_decision(**kw: Any) -> tuple[Decision, dict]:
        dcf = make(10, drop_rate=0.1, num_gradual=1, relabel_ratio=0.0, **kw)
        for epoch, losses in enumerate(history):
            dcf.start_epoch(epoch)
            decision = dcf.decide(bpr_batch(losses, epoch=epoch))
        return decision, dcf.end_epoch(2, torch.nn.Module())

    plain, _ = last_decision(variance="fixed", sigma2=0.0)
    assert plain.dropped.nonzero().flatten().tolist() == [0]
    bound, diag = last_decision(variance="empirical", sigma_decay=0)
    assert bound.dropped.nonzero().flatten().tolist() == [1]
    assert diag["rescued_by_bound"] == 1 and diag["dropped"] == 1 and diag["mean_bound_margin"] > 0

    # The fixed sigma^2 of the authors' code (1e-4) is far too small to reorder these losses.
    default, _ = last_decision()
    assert default.dropped.nonzero().flatten().tolist() == [0]


def test_a_short_history_gets_a_wider_bound() -> None:
    """Same mean, fewer observations (n) -> larger margin -> lower bound: the less-seen sample is kept."""
    dcf = make(2, drop_rate=0.5, num_gradual=1, relabel_ratio=0.0, sigma2=0.5, sigma_decay=0, time_step=3)
    for epoch in range(3):  # row 0 is seen every epoch, row 1 only in the last one
        rows = [0, 1] if epoch == 2 else [0]
        losses = [1.0, 1.0] if epoch == 2 else [1.0]
        decision = dcf.decide(bpr_batch(losses, rows=rows, epoch=epoch))
    assert decision.dropped.tolist() == [True, False]


def test_relabelling_grows_progressively_and_sticks() -> None:
    """persist: drop 0.4 reached at T = 10, a quarter of it relabelled: about T relabels at step T; once relabelled, always."""
    n = 100
    dcf = make(n, drop_rate=0.4, num_gradual=10, relabel_ratio=0.25, sigma2=0.0, relabel="persist")
    rng = np.random.default_rng(0)
    relabel_counts, seen_relabelled = [], torch.zeros(n, dtype=torch.bool)
    for step in range(12):
        dcf.start_epoch(step)
        batch = bpr_batch(list(rng.uniform(0.05, 3.0, n)), step=step, epoch=step)
        decision = dcf.decide(batch)
        diag = dcf.end_epoch(step, torch.nn.Module())
        assert decision.relabel is not None
        # earlier relabels stay relabelled, are trained (weight 1) and are never dropped
        assert bool(decision.relabel[seen_relabelled].all())
        assert not bool((decision.dropped & decision.relabel).any())
        assert bool((decision.weights[decision.relabel] == 1).all())
        new = decision.relabel & ~seen_relabelled
        relabel_counts.append(int(new.sum()))
        assert diag["relabelled"] == relabel_counts[-1]
        seen_relabelled |= decision.relabel
        assert diag["relabelled_total"] == int(seen_relabelled.sum())
        d = 0.4 * min(step / 10, 1.0)
        assert diag["dropped"] + diag["relabelled"] == min(n - int((1 - d) * n), n - int(seen_relabelled.sum()) + diag["relabelled"])
    assert relabel_counts[0] == 0  # no correction before the drop rate has risen
    assert relabel_counts[2] > 0 and relabel_counts[10] > relabel_counts[2]  # rises with the schedule
    assert int(seen_relabelled.sum()) == sum(relabel_counts)


@pytest.mark.parametrize("mode", ["batch", "keep"])
def test_relabel_modes_batch_and_keep(mode: str) -> None:
    """batch: the flip holds for that batch only; keep: the selected samples stay with their label."""
    dcf = make(4, drop_rate=0.5, num_gradual=1, relabel_ratio=0.5, sigma2=0.0, relabel=mode)
    # N = 4, d = 0.5: 2 taken out; 4 - int((1 - 0.25) * 4) = 1 of them selected for relabelling.
    first = dcf.decide(bpr_batch([3.0, 2.0, 0.1, 0.1], epoch=0))
    assert first.dropped.tolist() == [False, True, False, False]
    assert first.relabel.tolist() == ([True, False, False, False] if mode == "batch" else [False] * 4)
    assert first.weights.tolist() == [1.0, 0.0, 1.0, 1.0]
    # Next epoch row 0 looks clean (mean 1.2 < row 1's, row 3 spikes): it is ranked afresh.
    second = dcf.decide(bpr_batch([0.01, 2.0, 0.1, 9.0], epoch=1))
    assert not bool(second.relabel[0]) and not bool(second.dropped[0])
    assert dcf.end_epoch(1, torch.nn.Module())["relabelled_total"] == 2  # rows ever selected: 0, then 3


def test_bce_never_drops_or_relabels_negatives() -> None:
    dcf = make(4, drop_rate=0.75, num_gradual=1, relabel_ratio=0.5, sigma2=0.0)
    # N = 8 samples: 6 go out by the rate, capped at the 4 positives; the negatives' huge losses don't count.
    decision = dcf.decide(bce_batch([0.1, 0.5, 2.0, 3.0], [9.0, 9.0, 9.0, 9.0]))
    assert not bool(decision.dropped[4:].any()) and not bool(decision.relabel[4:].any())
    # relabelled: 8 - int((1 - 0.5 * 0.75) * 8) = 3, the largest losses; the 4th positive is dropped
    assert decision.relabel[:4].tolist() == [False, True, True, True]
    assert decision.dropped[:4].tolist() == [True, False, False, False]
    # no history is written for negatives (row -1 would index the last row)
    assert int(dcf.seen[3]) == 1


def test_relabelled_noise_diagnostics() -> None:
    is_noise = np.array([True, False, False, False])
    dcf = DoubleCorrection(4, "cpu", drop_rate=0.25, num_gradual=1, relabel_ratio=1.0, sigma2=0.0, is_noise=is_noise)
    dcf.decide(bpr_batch([3.0, 0.1, 0.1, 0.1]))
    diag = dcf.end_epoch(0, torch.nn.Module())
    assert diag["relabelled_total"] == 1
    assert diag["relabelled_noise_precision"] == 1.0 and diag["relabelled_noise_recall"] == 1.0


# ------------------------------------------------------------------------------- the seam


class Fixed(Denoiser):
    def __init__(self, dropped: list[bool], relabel: list[bool] | None) -> None:
        self.dropped, self.relabel = torch.tensor(dropped), None if relabel is None else torch.tensor(relabel)

    def decide(self, batch: SampleBatch) -> Decision:
        return Decision((~self.dropped).float(), self.dropped, self.relabel)


@pytest.mark.parametrize("objective", ["bpr", "bce"])
def test_seam_without_relabel_is_unchanged(objective: str) -> None:
    pos, neg = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.3])
    n = 2 if objective == "bpr" else 4
    dropped = [False, True] + [False] * (n - 2)
    results = []
    for relabel in (None, [False] * n):
        seam = LossSeam(objective, Fixed(dropped, relabel))
        seam.set_batch(torch.zeros(2, dtype=torch.long), torch.arange(2), torch.arange(2), torch.arange(2), 0, 0)
        results.append(float(seam(pos, neg)))
    losses, _, _ = per_sample_losses(objective, pos, neg)
    keep = ~torch.tensor(dropped)
    assert results[0] == pytest.approx(float(losses[keep].sum() / keep.sum()))
    assert results[1] == results[0]


def test_seam_relabel_swaps_to_the_opposite_label_loss() -> None:
    pos, neg = torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([0.5, 0.3])
    # BPR: the relabelled triple is trained with positive and negative swapped.
    seam = LossSeam("bpr", Fixed([False, False], [True, False]))
    seam.set_batch(torch.zeros(2, dtype=torch.long), torch.arange(2), torch.arange(2), torch.arange(2), 0, 0)
    loss = seam(pos, neg)
    margin = pos.detach() - neg
    expected = (F.softplus(margin[0]) + F.softplus(-margin[1])) / 2
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()
    assert pos.grad[0] > 0  # gradient descent now lowers the relabelled positive's score
    # BCE: the relabelled positive is trained as a negative; its sampled negative is untouched.
    seam = LossSeam("bce", Fixed([False] * 4, [True, False, False, False]))
    seam.set_batch(torch.zeros(2, dtype=torch.long), torch.arange(2), torch.arange(2), torch.arange(2), 0, 0)
    logits = torch.tensor([1.0, -2.0, 0.5, 0.3])
    expected = (F.softplus(logits[0]) + F.softplus(-logits[1]) + F.softplus(logits[2]) + F.softplus(logits[3])) / 4
    assert float(seam(logits[:2], logits[2:])) == pytest.approx(float(expected))


def test_opposite_label_losses() -> None:
    scores, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    flipped = opposite_label_losses("bce", scores, labels)
    assert torch.allclose(flipped, F.binary_cross_entropy_with_logits(scores, 1 - labels, reduction="none"))
    with pytest.raises(ValueError):
        opposite_label_losses("mse", scores, labels)


# ------------------------------------------------------------------------------- options


def _defaults(**over: Any) -> dict[str, Any]:
    return {**{o.name: o.default for o in SPEC.options}, **over}


@pytest.mark.parametrize("over, flag", [
    (dict(dcf_drop_rate=1.0), "--dcf-drop-rate"),
    (dict(dcf_drop_rate=-0.1), "--dcf-drop-rate"),
    (dict(dcf_relabel_ratio=1.5), "--dcf-relabel-ratio"),
    (dict(dcf_num_gradual=0), "--dcf-num-gradual"),
    (dict(dcf_time_step=0), "--dcf-time-step"),
    (dict(dcf_sigma2=-1.0), "--dcf-sigma2"),
    (dict(dcf_sigma2=float("nan")), "--dcf-sigma2"),
    (dict(dcf_sigma_decay=-1), "--dcf-sigma-decay"),
    (dict(dcf_variance="bogus"), "--dcf-variance"),
    (dict(dcf_relabel="sometimes"), "--dcf-relabel"),
])
def test_bad_options(over: dict[str, Any], flag: str) -> None:
    with pytest.raises(LLMHDError, match=flag):
        _check(_defaults(**over))


def test_defaults() -> None:
    """bruno686/DCF main.py's values (docs/denoisers.md has the table), and the measured relabel mode."""
    assert _defaults() == {
        "dcf_drop_rate": 0.2, "dcf_num_gradual": 30000, "dcf_relabel_ratio": 0.05, "dcf_time_step": 3,
        "dcf_sigma2": 1e-4, "dcf_variance": "fixed", "dcf_sigma_decay": 10, "dcf_relabel": "batch",
    }
    assert make(1).relabel_mode == "batch"  # the class's own default agrees with the option's


def test_flags_are_unique_and_registered() -> None:
    from llmhd_cli import plugins

    assert plugins.registry("denoiser").get("dcf", "--denoiser") is SPEC
    others = {o.name for s in plugins.registry("denoiser").items.values() if s is not SPEC for o in s.options}
    assert not others & {o.name for o in SPEC.options}
    assert all(o.name.startswith("dcf_") for o in SPEC.options)


# ------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace holding the 150-user cut of ml-100k, prepared with a 10-core."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMHD_CONFIG", str(tmp_path_factory.mktemp("cfg") / "absent.toml"))
        mp.delenv("LLMHD_WORKSPACE", raising=False)
        source = write_ml100k_cut(tmp_path_factory.mktemp("source"), DATASET, N_USERS)
        ws = tmp_path_factory.mktemp("ws")
        assert call_main(ws, "prepare", "--dataset", DATASET, "--source", str(source), "--kcore", "10") == 0
        yield ws


def _train(workspace: Path, run_dir: Path, *flags: str) -> int:
    return call_main(workspace, "train", "-d", DATASET, "--batch-size", str(BATCH), "--device", "cpu",
                 "--run-dir", str(run_dir), "--denoiser", "dcf", *flags)


RANDOM_NOISE = "small-random"


@pytest.fixture(scope="module")
def random_noise(workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cut, its 5% noise drawn from unobserved pairs, in the same workspace.

    Low-rating noise (prepare's default) is movies the users did watch; on 150 users trained
    for a few epochs their losses look like clean pairs' (measured: the noise share of DCF's
    dropped positives stays at the 5% base rate), so a noise test on it would test nothing.
    Random pairs have no such support, and a working loss-based rule must find them.
    """
    source = write_ml100k_cut(tmp_path_factory.mktemp("random-source"), RANDOM_NOISE, N_USERS)
    assert call_main(workspace, "prepare", "--dataset", RANDOM_NOISE, "--source", str(source), "--kcore", "10",
                     "--noise-source", "random") == 0
    return workspace


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_dcf_learns_and_takes_out_injected_noise(random_noise: Path, tmp_path: Path, seed: int) -> None:
    """BCE, default relabel mode, drop rate 0.05 reached in 60 iterations (about 2.5 epochs), 5 epochs.

    Measured over seeds 1-4: the noise share of the positives DCF drops in epochs 2-4 is
    0.12-0.15 against a base rate of 0.048, and test NDCG@10 0.23-0.26.
    """
    run_dir = tmp_path / "dcf"
    code = call_main(random_noise, "train", "-d", RANDOM_NOISE, "--device", "cpu", "--seed", str(seed),
                     "--run-dir", str(run_dir), "--objective", "bce", "--batch-size", "256", "--epochs", "5",
                     "--early-stop", "0", "--denoiser", "dcf", "--dcf-drop-rate", "0.05", "--dcf-num-gradual", "60")
    assert code == 0
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((random_noise / "datasets" / RANDOM_NOISE / "dataset.json").read_text())

    # The model learned: its training loss fell (0.69 -> 0.54 measured) and test NDCG@10 is far above chance.
    assert log[-1]["loss"] < log[0]["loss"] - 0.05, [r["loss"] for r in log]
    assert metrics["test"]["ndcg@10"] > 0.15, metrics["test"]

    # What DCF takes out is injected noise at well over the noise's share of the training pairs.
    share = metrics["n_noise"] / int(info["stats"]["train"])
    late = log[2:]
    dropped = sum(r["noise"]["dropped_positives"] for r in late)
    hits = sum(r["noise"]["precision"] * r["noise"]["dropped_positives"] for r in late)
    assert dropped > 0.05 * 3 * int(info["stats"]["train"])  # the scheduled share was taken out
    assert hits / dropped > 2 * share, (hits / dropped, share)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["bpr", "bce"])
def test_train_with_dcf(workspace: Path, tmp_path: Path, objective: str) -> None:
    run_dir = tmp_path / "dcf"
    code = _train(workspace, run_dir, "--objective", objective, "--epochs", "3", "--dcf-num-gradual", "3",
                  "--dcf-relabel-ratio", "0.25", "--dcf-variance", "empirical", "--dcf-relabel", "persist")
    assert code == 0
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    diag = [r["denoiser"] for r in log]
    for record, d in zip(log, diag, strict=True):
        assert record["dropped"] == d["dropped"]  # the seam counts what DCF reports
        assert math.isfinite(record["loss"])
        assert {"relabelled", "relabelled_total", "rescued_by_bound", "mean_damped_loss"} <= set(d)
    totals = [d["relabelled_total"] for d in diag]
    assert totals == sorted(totals) and totals[-1] > 0 and diag[-1]["dropped"] > 0
    assert totals[-1] == sum(d["relabelled"] for d in diag)
    assert "relabelled_noise_precision" in diag[-1]  # the prepared data carries injected noise
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    params = read_toml(run_dir / "config.toml")["denoiser_params"]
    assert params["dcf_relabel_ratio"] == 0.25 and params["dcf_variance"] == "empirical" and params["dcf_time_step"] == 3


@pytest.mark.parametrize("flags, words", [
    (["--dcf-drop-rate", "1.5"], ["--dcf-drop-rate", "[0, 1)"]),
    (["--dcf-time-step", "0"], ["--dcf-time-step"]),
])
def test_train_bad_dcf_values_exit_2(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     flags: list[str], words: list[str]) -> None:
    capsys.readouterr()
    code = _train(workspace, tmp_path / "bad", "--epochs", "1", *flags)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out + err
    assert all(w in lines[0] for w in words)


def test_dcf_flag_needs_the_dcf_denoiser(workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = call_main(workspace, "train", "-d", DATASET, "--device", "cpu", "--run-dir", str(tmp_path / "r"),
                 "--denoiser", "tce", "--dcf-sigma2", "0.1")
    _, err = capsys.readouterr()
    assert code == 2 and "an option of denoiser dcf" in err
