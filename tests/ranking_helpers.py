"""Independent ranking references for tests: a popularity ranking computed without llmhd's
evaluation code, and a recommender with fixed scores to check the metrics by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


def popularity_recall_at_10(split: Any) -> float:
    """Test Recall@10 of ranking items by their training count, masked as llmhd masks (training
    and validation items, the padding id 0), computed here rather than by llmhd's evaluation.
    ``split`` has ``train_csr``, ``valid_csr`` and ``test_csr`` (RecBoleData does)."""
    counts = np.asarray(split.train_csr.sum(axis=0)).ravel().astype(float)
    seen = (split.train_csr + split.valid_csr).tocsr()
    recalls = []
    for user in np.flatnonzero(np.diff(split.test_csr.indptr)):
        scores = counts.copy()
        scores[0] = scores[seen[user].indices] = -np.inf
        top = np.argsort(-scores, kind="stable")[:10]
        truth = set(split.test_csr[user].indices.tolist())
        recalls.append(len(truth & set(top.tolist())) / len(truth))
    return float(np.mean(recalls))


class FixedScores(torch.nn.Module):
    """A recommender with a fixed user x item score matrix (the interface full ranking uses)."""

    USER_ID = "user_id"

    def __init__(self, scores: list[list[float]]) -> None:
        super().__init__()
        self.scores = torch.nn.Parameter(torch.tensor(scores, dtype=torch.float32), requires_grad=False)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        return self.scores[interaction[self.USER_ID]].flatten()


def csr(rows: dict[int, list[int]], shape: tuple[int, int]) -> sp.csr_matrix:
    """A 0/1 user x item matrix from {user: [items]}."""
    pairs = [(u, i) for u, items in rows.items() for i in items]
    return sp.csr_matrix((np.ones(len(pairs)), ([u for u, _ in pairs], [i for _, i in pairs])), shape=shape)
