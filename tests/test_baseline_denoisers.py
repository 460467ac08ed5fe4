"""T-CE and R-CE (Wang et al. 2021): their defaults against the authors' code, their schedules and rules.

The authors' code is github.com/WenjieWWJ/DenoisingRec (``T_CE/main.py``, ``T_CE/loss.py``,
``R_CE/main.py``, ``R_CE/loss.py``); docs/denoisers.md has the table these tests pin.
All tests drive the denoisers directly on hand-made batches: no training, well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llmhd_cli.denoising import SampleBatch
from llmhd_plugins.denoisers import DENOISERS, ReweightedLoss, TruncatedLoss


def spec(name: str):
    return next(s for s in DENOISERS if s.name == name)


def defaults(name: str) -> dict[str, object]:
    return {o.name: o.default for o in spec(name).options}


def bce_batch(pos_losses: list[float], neg_losses: list[float], scores: list[float] | None = None,
              step: int = 0) -> SampleBatch:
    """BCE: positives (rows 0..P-1) followed by as many sampled negatives (row -1)."""
    p, n = len(pos_losses), len(pos_losses) + len(neg_losses)
    labels = torch.cat([torch.ones(p), torch.zeros(len(neg_losses))])
    pair_index = torch.cat([torch.arange(p), torch.full((len(neg_losses),), -1)])
    zeros = torch.zeros(n, dtype=torch.long)
    return SampleBatch("bce", torch.tensor(pos_losses + neg_losses), torch.tensor(scores or [0.0] * n), labels,
                       zeros, torch.arange(n), None, pair_index, step, 0)


def bpr_batch(losses: list[float], margins: list[float] | None = None, step: int = 0) -> SampleBatch:
    n = len(losses)
    rows = torch.arange(n)
    return SampleBatch("bpr", torch.tensor(losses), torch.tensor(margins or [0.0] * n), torch.ones(n),
                       torch.zeros(n, dtype=torch.long), rows, rows, rows, step, 0)


# ------------------------------------------------------------------------------- defaults


def test_defaults_are_the_authors() -> None:
    # T_CE/main.py: --drop_rate 0.2, --num_gradual 30000 (--exponent 1, not offered).
    assert defaults("tce") == {"drop_rate": 0.2, "num_gradual": 30000}
    # R_CE/main.py: --alpha 0.2 (the released logs use 0.2-0.3; the LLMHD authors' RecCFDenoise 0.1).
    assert defaults("rce") == {"beta": 0.2}


# ------------------------------------------------------------------------------- T-CE


def authors_tce_dropped(n: int, d: float) -> int:
    """T_CE/loss.py keeps the ``int((1 - d) n)`` smallest of an n-sample batch: it drops ceil(d n)."""
    return n - int((1 - d) * n)


def test_tce_rate_rises_linearly_then_holds() -> None:
    tce = TruncatedLoss(drop_rate=0.2, num_gradual=30000)
    assert tce.rate(0) == 0.0
    assert [tce.rate(t) for t in (7500, 15000, 30000, 10 ** 6)] == pytest.approx([0.05, 0.1, 0.2, 0.2])
    # The authors' linspace(0, 0.2, 30000)[T] is 0.2 T / 29999: the same ramp to within G / (G - 1).
    authors = np.linspace(0, 0.2, 30000)
    for t in (1, 100, 12345, 29999):
        assert tce.rate(t) == pytest.approx(authors[t], rel=1 / 29999 + 1e-12)


@pytest.mark.parametrize("step", [0, 1, 500, 7500, 29999, 30000, 90000])
def test_tce_drops_the_authors_count_of_largest_losses(step: int) -> None:
    """BPR: the ceil(d N) largest losses go, exactly the authors' truncation."""
    tce = TruncatedLoss(drop_rate=0.2, num_gradual=30000)
    losses = list(np.random.default_rng(step).permutation(1024) / 100.0)  # distinct losses, shuffled
    decision = tce.decide(bpr_batch(losses, step=step))
    k = authors_tce_dropped(1024, tce.rate(step))
    assert int(decision.dropped.sum()) == k
    order = np.argsort(losses)[::-1]  # largest first
    assert set(decision.dropped.nonzero().flatten().tolist()) == set(order[:k].tolist())
    assert decision.weights.tolist() == (~decision.dropped).float().tolist()


def test_tce_bce_ranks_positives_only_and_counts_the_negatives() -> None:
    """BCE: N counts the negatives (the authors' mixed batches), but only positives are dropped."""
    tce = TruncatedLoss(drop_rate=0.25, num_gradual=1)
    pos = [0.1, 2.0, 0.3, 1.5, 0.2, 0.9, 0.05, 0.4]
    decision = tce.decide(bce_batch(pos, [9.0] * 8, step=5))
    # 16 samples at 0.25: 4 go, the 4 largest positive losses; the negatives' huge losses do not count.
    assert decision.dropped.nonzero().flatten().tolist() == [1, 3, 5, 7]
    # A rate that asks for more than the batch's positives stops at the positives.
    assert int(TruncatedLoss(0.9, 1).decide(bce_batch(pos, [9.0] * 8, step=5)).dropped.sum()) == 8


# ------------------------------------------------------------------------------- R-CE


def test_rce_weights_are_the_authors_for_bce() -> None:
    """R_CE/loss.py: weight = sigmoid(y)^alpha for positives, (1 - sigmoid(y))^alpha for negatives, detached."""
    scores = [2.0, -1.5, 0.3, -0.7, 1.1, -2.2]
    rce = ReweightedLoss(beta=defaults("rce")["beta"])
    decision = rce.decide(bce_batch([1.0] * 3, [1.0] * 3, scores))
    p = 1 / (1 + np.exp(-np.array(scores)))
    expected = np.where([1, 1, 1, 0, 0, 0], p, 1 - p) ** 0.2
    assert decision.weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert not decision.dropped.any()
    # The low-probability positive (score -1.5) gets the smallest weight of the positives.
    assert int(torch.argmin(decision.weights[:3])) == 1


def test_rce_bpr_weights_the_triple_by_its_margin() -> None:
    margins = [3.0, 0.0, -3.0]
    decision = ReweightedLoss(beta=0.5).decide(bpr_batch([1.0] * 3, margins))
    assert decision.weights.tolist() == pytest.approx([(1 / (1 + math.exp(-m))) ** 0.5 for m in margins])
    assert decision.weights[0] > decision.weights[1] > decision.weights[2]
