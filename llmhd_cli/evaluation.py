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


def evaluation_rows(run_dirs: list, workspace, recompute: bool = False, device: str = "auto",
                    configs: list | None = None) -> list[dict]:
    """One row per run: its identity and test metrics (stored, or recomputed from the checkpoint).

    ``configs``, when given, receives each run's config (for `group_rows`).
    """
    from llmhd_cli import runs

    rows = []
    for path in run_dirs:
        record = runs.read_run(path)
        test = record.metrics.get("test", {})
        if recompute:
            from llmhd_cli.training import load_run_model

            model, data, _ = load_run_model(path, workspace, device)
            test = full_rank_metrics(model, data.test_csr, [data.train_csr, data.valid_csr])
        cfg = record.config
        row = {"run": record.path.name, "dataset": cfg.get("dataset"), "backbone": cfg.get("backbone"),
               "objective": cfg.get("objective"), "denoiser": cfg.get("denoiser"), "seed": cfg.get("seed"),
               "best_epoch": record.metrics.get("best_epoch")}
        row.update({k: float(test[k]) for k in METRICS if k in test})
        noise = record.metrics.get("noise_detection")
        if noise:
            row.update({"noise P": float(noise["precision"]), "noise R": float(noise["recall"]),
                        "noise F1": float(noise["f1"]), "noise kept hard": float(noise.get("kept_hard_share", float("nan")))})
        rows.append(row)
        if configs is not None:
            configs.append(cfg)
    # Same columns in every row (runs without injected noise have no noise numbers).
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k, float("nan")) for k in columns} for row in rows]


def render_rows(rows: list[dict], fmt: str) -> str:
    """Rows as json, csv or a markdown table."""
    import csv
    import io
    import json

    if fmt == "json":
        # NaN (undefined std or p-value) is not JSON: write null.
        clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()} for row in rows]
        return json.dumps(clean, indent=2) + "\n"
    columns = list(rows[0])
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if fmt == "markdown":
        def cell(v):
            return f"{v:.4f}" if isinstance(v, float) else str(v)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    raise ValueError(fmt)


METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
# What makes two runs the same setting (they may differ in seed, device and paths only).
_IGNORED_FOR_GROUPING = ("seed", "device")


def _setting(config: dict) -> str:
    import json

    return json.dumps({k: v for k, v in config.items() if k not in _IGNORED_FOR_GROUPING}, sort_keys=True)


def group_rows(rows: list[dict], configs: list[dict], baseline: str | None = None) -> list[dict]:
    """Mean and standard deviation over seeds of each setting; Welch t-test p-values against
    the ``baseline`` denoiser's runs of the same dataset, backbone and objective."""
    from scipy import stats

    groups: dict[str, list[dict]] = {}
    for row, config in zip(rows, configs):
        groups.setdefault(_setting(config), []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        summary = {k: first[k] for k in ("dataset", "backbone", "objective", "denoiser")}
        summary["runs"] = len(members)
        summary["seeds"] = ",".join(str(m["seed"]) for m in members)
        for metric in METRICS:
            values = np.array([m[metric] for m in members if metric in m], dtype=float)
            summary[f"{metric} mean"] = float(values.mean()) if len(values) else float("nan")
            summary[f"{metric} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        for extra in ("noise F1", "noise kept hard"):
            values = np.array([m.get(extra, np.nan) for m in members], dtype=float)
            summary[f"{extra} mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        summary["_values"] = {metric: [m[metric] for m in members if metric in m] for metric in METRICS}
        out.append(summary)
    if baseline:
        for summary in out:
            base = [g for g in out if g["denoiser"] == baseline and all(g[k] == summary[k] for k in ("dataset", "backbone", "objective"))]
            for metric in ("recall@10", "ndcg@10"):
                p = float("nan")
                if base and summary["denoiser"] != baseline:
                    a, b = summary["_values"][metric], base[0]["_values"][metric]
                    if len(a) > 1 and len(b) > 1:
                        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
                summary[f"p {metric} vs {baseline}"] = p
    for summary in out:
        del summary["_values"]
    return out
