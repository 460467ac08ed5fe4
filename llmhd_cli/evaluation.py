"""Full-ranking evaluation (Recall@K, NDCG@K) and run comparison tables.

Every item is ranked for every user; items the user interacted with in the masked splits
(training for validation; training and validation for test) and RecBole's padding item are
excluded. Users without ground-truth items in the evaluated split are skipped. Definitions
follow RecBole: Recall@K = hits / |truth|; NDCG@K = DCG@K / IDCG@K with IDCG over
min(|truth|, K) hits.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
import torch

DEFAULT_KS = (5, 10)


@torch.no_grad()
def full_rank_metrics(
    model: torch.nn.Module,
    truth: sp.csr_matrix,
    masks: Sequence[sp.csr_matrix],
    ks: Sequence[int] = DEFAULT_KS,
    batch_users: int = 1024,
) -> dict[str, float]:
    """Recall@K and NDCG@K of ``model`` (a RecBole general recommender) on ``truth``."""
    from recbole.data.interaction import Interaction

    model.eval()
    device = next(model.parameters()).device
    n_items = truth.shape[1]
    counts = np.diff(truth.indptr)
    users = np.flatnonzero(counts)
    mask = masks[0].copy()
    for m in masks[1:]:
        mask = mask + m
    mask = mask.tocsr()
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg")}
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        inter = Interaction({model.USER_ID: torch.as_tensor(batch, dtype=torch.long, device=device)})
        scores = model.full_sort_predict(inter).view(len(batch), n_items)
        scores[:, 0] = -torch.inf  # RecBole's padding item
        rows, cols = mask[batch].nonzero()
        scores[torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)] = -torch.inf
        top = torch.topk(scores, max_k, dim=1).indices.cpu().numpy()
        # hits[u, r]: is the item at rank r in u's ground truth
        hits = np.take_along_axis(truth[batch].toarray() > 0, top, axis=1)
        n_truth = counts[batch]
        for k in ks:
            hit_k = hits[:, :k]
            sums[f"recall@{k}"] += float((hit_k.sum(1) / n_truth).sum())
            dcg = (hit_k * discounts[:k]).sum(1)
            ideal = np.cumsum(discounts[:k])[np.minimum(n_truth, k) - 1]
            sums[f"ndcg@{k}"] += float((dcg / ideal).sum())
    n = max(len(users), 1)
    return {key: value / n for key, value in sums.items()}
