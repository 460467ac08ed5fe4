"""Score history of (user, item) pairs over the last m epochs (LLMHD Eq. 17).

All four paper backbones score a pair by the dot product of final user and item embeddings,
so instead of a per-pair ring buffer (sampled negatives change every epoch) the history keeps
the last m epochs' embedding tables and rescores any pair on demand: m x (users + items) x d
floats, whatever the number of pairs.
"""

from __future__ import annotations

from collections import deque

import torch


class ScoreHistory:
    """The last ``m`` snapshots of (user table, item table)."""

    def __init__(self, m: int) -> None:
        if m < 2:
            raise ValueError("a variance needs at least two epochs of history")
        self.m = m
        self._users: deque[torch.Tensor] = deque(maxlen=m)
        self._items: deque[torch.Tensor] = deque(maxlen=m)
        self._stacked: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self._users)

    @property
    def ready(self) -> bool:
        """True once two epochs are recorded: the first point at which a variance means anything."""
        return len(self._users) >= 2

    def add(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self._users.append(users.detach().clone())
        self._items.append(items.detach().clone())
        self._stacked = None

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stacked is None:
            self._stacked = (torch.stack(list(self._users)), torch.stack(list(self._items)))
        return self._stacked

    @torch.no_grad()
    def scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[epochs, n] predictions of the pairs at each recorded epoch."""
        user_tables, item_tables = self._tables()
        return (user_tables[:, users] * item_tables[:, items]).sum(-1)

    @torch.no_grad()
    def variance(self, users: torch.Tensor, items: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Population variance of each pair's prediction over the recorded epochs (0 before two)."""
        if not self.ready:
            return torch.zeros(len(users), device=users.device)
        parts = [self.scores(users[s:s + chunk], items[s:s + chunk]).var(dim=0, unbiased=False)
                 for s in range(0, len(users), chunk)]
        return torch.cat(parts) if parts else torch.zeros(0, device=users.device)
