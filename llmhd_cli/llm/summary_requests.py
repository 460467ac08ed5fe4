"""The prompts ``llmhd summarize`` sends: one T_sum request per user, one item_profile request
per item, rendered exactly as the run sends them and as ``llmhd cost`` counts them.
"""

from __future__ import annotations

import numpy as np

from llmhd_cli.datasets import PreparedDataset
from llmhd_cli.errors import LLMHDError
from llmhd_cli.llm.base import LLMRequest
from llmhd_cli.llm.prompts import TemplateSet

DEFAULT_MAX_ITEMS = 50  # items per T_sum prompt; users with more get a seeded sample


def user_histories(dataset: PreparedDataset) -> dict[str, list[str]]:
    """Training items per user (injected noise included: P_u is summarized from what training sees)."""
    users, items = dataset.read_split("train")
    out: dict[str, list[str]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        out.setdefault(u, []).append(i)
    return out


def require_item_texts(dataset: PreparedDataset) -> dict[str, str]:
    texts = dataset.item_texts()
    if not texts:
        raise LLMHDError(
            f"dataset '{dataset.name}' has no item texts ({dataset.items_file} is missing or empty); "
            f"summarize needs them: prepare it again from a source with item texts (e.g. --text-fields)"
        )
    return texts


def summarize_requests(dataset: PreparedDataset, tset: TemplateSet, item_texts: dict[str, str],
                       max_items: int = DEFAULT_MAX_ITEMS, structured: bool = False) -> tuple[list[LLMRequest], int]:
    """One T_sum request per user, and how many users had no item text at all.

    A user with more than ``max_items`` training items gets a sample of them, seeded by the
    dataset seed and the user id, so the prompts (and their cache keys) are reproducible.
    """
    template = tset.get("summarize")
    requests: list[LLMRequest] = []
    skipped = 0
    version = dataset.fingerprint()  # keys local scorers' cached answers to the dataset's content
    for user, items in sorted(user_histories(dataset).items()):
        known = [i for i in dict.fromkeys(items) if item_texts.get(i)]
        if not known:
            skipped += 1
            continue
        if len(known) > max_items:
            rng = np.random.default_rng([dataset.info.seed, abs(hash_id(user))])
            keep = sorted(rng.choice(len(known), size=max_items, replace=False).tolist())
            known = [known[k] for k in keep]
        profiles = [item_texts[i] for i in known]
        requests.append(template.render({
            "item_profiles": profiles, "n_items": len(profiles), "user_id": user, "item_ids": known,
            "dataset_dir": str(dataset.path), "dataset_version": version,
        }, structured=structured))
    return requests, skipped


def item_profile_requests(dataset: PreparedDataset, tset: TemplateSet) -> list[LLMRequest]:
    """One item_profile request per item of items.jsonl."""
    template = tset.get("item_profile")
    requests = []
    version = dataset.fingerprint()  # keys local scorers' cached answers to the dataset's content
    for row in dataset.read_items():
        requests.append(template.render({
            "item_id": str(row["item_id"]), "item_text": row.get("text", ""),
            "attributes": row.get("attributes") or {}, "dataset_dir": str(dataset.path),
            "dataset_version": version,
        }))
    return requests


def hash_id(text: str) -> int:
    """A stable (not per-process salted) integer from a string, for seeding."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
