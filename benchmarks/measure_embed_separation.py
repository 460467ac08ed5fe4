"""What the offline ``embed`` scorer separates, measured on a prepared dataset (not a speed benchmark).

Run after ``llmhd prepare`` and ``llmhd summarize --provider embed``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/measure_embed_separation.py --workspace /tmp/h3-ws

It scores pairs exactly as the llmhd judge asks for them (the ``score`` template rendered with
user_profile, item_profile, user_id, item_id, dataset_dir) straight through the provider (no
disk cache, so no stale answer can enter) and reports:

- noise: AUC of clean training positives against the injected noise pairs (both are training
  positives the profiles were summarized from), pooled over every pair (scores are calibrated
  per user, and LLMHD's thresholds are global) and averaged per user;
- held-out: AUC of each user's test items (rated >= --min-rating) against random unobserved
  items, averaged per user;
- quotation: the mean score of training positives whose own text is a line of the user's
  profile against those whose text is not, and the noise AUC within each group. Quoted items
  are the user's most representative ones (that is why the summary picked them), so a gap is
  expected even from a fair scorer; the counterfactual tells the two apart: a seeded sample of
  quoted pairs is scored again against the profile summarized *without* that item (its T_sum
  request minus the item). ``quotation_effect`` is the mean score drop: what quoting alone adds;
- calibration: how the scores of random unobserved items spread over 1..10 (and, where the
  provider exposes them, the deciles of their raw cosines: `DEFAULT_CUTS`).

``--provider-file`` measures another copy of ``providers_embed.py`` (e.g. an older one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmhd_cli.datasets import open_dataset
from llmhd_cli.llm.profiles import ProfileStore
from llmhd_cli.llm.prompts import template_set_for
from llmhd_cli.summarize import summarize_requests


def load_provider(path: str | None) -> Any:
    if path is None:
        from llmhd_plugins.providers_embed import EmbedProvider

        return EmbedProvider()
    spec = importlib.util.spec_from_file_location("measured_providers_embed", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.EmbedProvider()


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + P(pos == neg) / 2, by ranks (ties share their mean rank)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # scores are integers 1..10: few distinct values
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def by_user(users: np.ndarray, items: np.ndarray) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        out.setdefault(u, []).append(i)
    return out


def measure(workspace: Path, dataset_name: str, provider_file: str | None, negatives: int, seed: int,
            max_users: int | None, counterfactual: int) -> dict[str, Any]:
    dataset = open_dataset(workspace, dataset_name)
    provider = load_provider(provider_file)
    store = ProfileStore(dataset)
    profiles, origin = store.user_profiles(provider.name, provider.model)
    texts, _ = store.item_texts(provider.name, provider.model)
    tset = template_set_for(dataset.info.domain)
    template = tset.get("score")
    train = by_user(*dataset.read_split("train"))
    valid = by_user(*dataset.read_split("valid"))
    test = by_user(*dataset.read_split("test"))
    noise: set[tuple[str, str]] = set(zip(*dataset.read_noise(), strict=True))
    rng = np.random.default_rng(seed)
    users = sorted(u for u in train if u in profiles)
    if max_users is not None and max_users < len(users):
        users = sorted(rng.choice(users, size=max_users, replace=False).tolist())
    provider.embed(sorted(set(texts.values())))  # one batch: far faster than text by text
    all_items = np.array(sorted(texts))

    def score(user: str, item: str, profile: str | None = None) -> int:
        request = template.render({"user_profile": profiles[user] if profile is None else profile,
                                   "item_profile": texts[item], "user_id": user, "item_id": item,
                                   "dataset_dir": str(dataset.path)})
        return int(provider.complete(request).value)

    def cosine(user: str, item: str) -> float | None:
        if not hasattr(provider, "score_cosines"):  # an older provider file
            return None
        return provider.score_cosines(profiles[user], texts[item], str(dataset.path))[0]

    rows: list[tuple[int, bool, bool]] = []  # (score, noise, quoted) per training positive
    quoted_pairs: list[tuple[str, str]] = []
    user_noise_aucs, user_heldout_aucs, random_scores, random_cosines = [], [], [], []
    started = time.perf_counter()
    for user in users:
        lines = {" ".join(x.split()) for x in profiles[user].splitlines()}
        own = [(score(user, i), (user, i) in noise, " ".join(texts[i].split()) in lines)
               for i in dict.fromkeys(train[user]) if i in texts]
        rows += own
        quoted_pairs += [(user, i) for i in dict.fromkeys(train[user])
                         if i in texts and " ".join(texts[i].split()) in lines]
        s = np.array([r[0] for r in own], dtype=float)
        is_noise = np.array([r[1] for r in own])
        if is_noise.any() and (~is_noise).any():
            user_noise_aucs.append(auc(s[~is_noise], s[is_noise]))
        seen = set(train[user]) | set(valid.get(user, [])) | set(test.get(user, []))
        pool = [i for i in rng.choice(all_items, size=min(len(all_items), negatives * 3), replace=False).tolist()
                if i not in seen][:negatives]
        neg = np.array([score(user, i) for i in pool], dtype=float)
        random_scores += neg.tolist()
        random_cosines += [c for c in (cosine(user, i) for i in pool) if c is not None]
        pos = np.array([score(user, i) for i in test.get(user, []) if i in texts], dtype=float)
        if len(pos) and len(neg):
            user_heldout_aucs.append(auc(pos, neg))
    elapsed = time.perf_counter() - started
    # The counterfactual: each sampled quoted pair against the profile summarized without the item.
    summaries = {r.variables["user_id"]: r for r in summarize_requests(dataset, tset, texts)[0]}
    picked = rng.choice(len(quoted_pairs), size=min(counterfactual, len(quoted_pairs)), replace=False)
    as_quoted, unquoted_again = [], []
    for n in sorted(picked.tolist()):
        user, item = quoted_pairs[n]
        v = summaries[user].variables
        keep = [k for k, i in enumerate(v["item_ids"]) if i != item]
        without = tset.get("summarize").render({**v, "item_ids": [v["item_ids"][k] for k in keep],
                                                "item_profiles": [v["item_profiles"][k] for k in keep],
                                                "n_items": len(keep)})
        profile = str(provider.complete(without).value)
        if not profile:
            continue
        as_quoted.append(score(user, item))
        unquoted_again.append(score(user, item, profile))
    s = np.array([r[0] for r in rows], dtype=float)
    is_noise = np.array([r[1] for r in rows])
    quoted = np.array([r[2] for r in rows])
    counts = np.bincount(np.array(random_scores, dtype=int), minlength=11)[1:]
    return {
        "provider_file": provider_file or "llmhd_plugins.providers_embed",
        "profiles": origin, "users": len(users), "seconds": round(elapsed, 1),
        "training_positives": int(len(s)), "noise_pairs": int(is_noise.sum()),
        "noise_auc_pooled": auc(s[~is_noise], s[is_noise]),
        "noise_auc_per_user": float(np.mean(user_noise_aucs)), "noise_auc_users": len(user_noise_aucs),
        "heldout_auc_per_user": float(np.mean(user_heldout_aucs)), "heldout_auc_users": len(user_heldout_aucs),
        "quoted_share": float(quoted.mean()),
        "mean_score_quoted": float(s[quoted].mean()), "mean_score_unquoted": float(s[~quoted].mean()),
        "quoted_vs_unquoted_auc": auc(s[quoted], s[~quoted]),
        "noise_share_quoted": float(is_noise[quoted].mean()), "noise_share_unquoted": float(is_noise[~quoted].mean()),
        "noise_auc_quoted_only": auc(s[quoted & ~is_noise], s[quoted & is_noise]),
        "noise_auc_unquoted_only": auc(s[~quoted & ~is_noise], s[~quoted & is_noise]),
        "mean_score_clean": float(s[~is_noise].mean()), "mean_score_noise": float(s[is_noise].mean()),
        "random_score_share": [round(float(c) / max(int(counts.sum()), 1), 4) for c in counts],
        "random_mean_score": float(np.mean(random_scores)),
        "random_cosine_deciles": ([round(float(q), 3) for q in np.quantile(random_cosines, np.arange(1, 10) / 10)]
                                  if random_cosines else None),
        "counterfactual_pairs": len(as_quoted),
        "mean_score_quoted_sampled": float(np.mean(as_quoted)),
        "mean_score_summarized_without_item": float(np.mean(unquoted_again)),
        "quotation_effect": float(np.mean(np.array(as_quoted) - np.array(unquoted_again))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--provider-file", default=None, help="another providers_embed.py to measure")
    parser.add_argument("--negatives", type=int, default=50, help="random unobserved items per user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=None, help="a seeded sample of users (default: all)")
    parser.add_argument("--counterfactual", type=int, default=2000,
                        help="quoted pairs scored again against the profile summarized without the item")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    result = measure(args.workspace, args.dataset, args.provider_file, args.negatives, args.seed, args.users, args.counterfactual)
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
