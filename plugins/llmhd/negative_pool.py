"""Recurring reference negatives for LLM scoring (``--negatives pool``).

The negatives a training sample carries are drawn anew every epoch, so with ``--negatives
fresh`` almost every negative the LLM is asked about is a new (user, item) pair, and an epoch
keeps asking for new scores however long the run. With ``--negatives pool`` the LLM never
scores a sample's own sampled negative: each user has a small seeded pool of ``size`` items
the user has no training interaction with (drawn once per run like the training sampler's
negatives, uniformly), and the negative side of a judged sample is the mean score of the
user's pool. The pool recurs across epochs, so each (user, profile version, pool item) is
scored at most once per run, in the same list as the user's first positive
(``--scoring listwise``). Training itself is unchanged: the model still learns from the
sampler's fresh negatives; only what the LLM is asked is.

The draw is a pure function of (seed, user, slot, attempt) (splitmix64, as the judge's
simulated error), so a user's pool does not depend on the order users are met in, and a rerun
with the same seed draws the same pools.
"""

from __future__ import annotations

import numpy as np

from llmhd_plugins.llmhd.judge import _mix

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MAX_ATTEMPTS = 64  # per slot: a user with nearly every item in training keeps fewer pool items


class NegativePool:
    """Per user: ``size`` distinct items (ids 1..n_items-1) outside the user's training items."""

    def __init__(self, n_items: int, train_users: np.ndarray, train_items: np.ndarray, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError("a negative pool needs at least one item")
        self.n_items = int(n_items)
        self.size = int(size)
        self.seed = int(seed)
        users = np.asarray(train_users, dtype=np.int64)
        self._seen = set((users * self.n_items + np.asarray(train_items, dtype=np.int64)).tolist())
        self._pools: dict[int, np.ndarray] = {}

    def _draw(self, user: int, slot: int, attempt: int) -> int:
        with np.errstate(over="ignore"):
            h = _mix(np.array([self.seed % 2**64], dtype=np.uint64) + _GOLDEN)
            for part in (user, slot, attempt):
                h = _mix(h ^ (np.uint64(part) + _GOLDEN))
        return 1 + int(h[0] % np.uint64(self.n_items - 1))

    def pool(self, user: int) -> np.ndarray:
        """The user's pool items (fewer than ``size`` only if too few unseen items were found)."""
        user = int(user)
        if user not in self._pools:
            chosen: list[int] = []
            for slot in range(self.size):
                for attempt in range(MAX_ATTEMPTS):
                    item = self._draw(user, slot, attempt)
                    if item not in chosen and user * self.n_items + item not in self._seen:
                        chosen.append(item)
                        break
            self._pools[user] = np.asarray(chosen, dtype=np.int64)
        return self._pools[user]

    def items(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sample index, pool item) pairs for ``users``: each sample's user's pool, flattened."""
        index, items = [], []
        for n, user in enumerate(np.asarray(users).tolist()):
            pool = self.pool(user)
            index.append(np.full(len(pool), n, dtype=np.int64))
            items.append(pool)
        if not items:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(index), np.concatenate(items)


def mean_by_sample(index: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """Per sample 0..n-1, the mean of its known (non-NaN) scores; NaN when it has none."""
    known = ~np.isnan(scores)
    sums = np.bincount(index[known], weights=scores[known], minlength=n)
    counts = np.bincount(index[known], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
