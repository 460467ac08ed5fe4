"""Objectives (BPR, BCE) as per-sample losses, and the seam that applies the denoiser.

`LossSeam` stands in for a backbone's pairwise loss module: RecBole's ``calculate_loss``
computes positive and negative scores for the batch's (user, pos, neg) triples and calls it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmhd_cli.denoising import Decision, Denoiser, SampleBatch

OBJECTIVES = ("bpr", "bce")


def per_sample_losses(objective: str, pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(losses, scores, labels) of the batch's samples under ``objective``."""
    if objective == "bpr":
        margin = pos_scores - neg_scores
        return F.softplus(-margin), margin, torch.ones_like(margin)
    if objective == "bce":
        logits = torch.cat([pos_scores, neg_scores])
        labels = torch.cat([torch.ones_like(pos_scores), torch.zeros_like(neg_scores)])
        # BCE with logits, written as softplus for numerical stability.
        return F.softplus(-logits) * labels + F.softplus(logits) * (1 - labels), logits, labels
    raise ValueError(objective)


def opposite_label_losses(objective: str, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample losses with each label flipped: what a relabelled sample is trained on.

    BPR (labels all 1): softplus(margin), the triple with positive and negative swapped.
    BCE: a positive's label-0 loss softplus(logit), a negative's label-1 loss softplus(-logit).
    """
    if objective not in OBJECTIVES:
        raise ValueError(objective)
    return F.softplus(scores) * labels + F.softplus(-scores) * (1 - labels)


class BatchStats:
    """Per-epoch counters the seam keeps for the run log.

    The seam records each batch as on-device tensors and they are read back once, when a
    counter is first read after the epoch: reading a value to the host every batch would make
    the CPU wait for the accelerator at every step.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self._loss_sums: list[torch.Tensor] = []
        self._n_dropped: list[torch.Tensor] = []
        self._dropped_index: list[torch.Tensor] = []  # pair_index where dropped, else -1
        self._readout: tuple[int, float, list[torch.Tensor]] | None = None

    def record(self, losses: torch.Tensor, dropped: torch.Tensor, pair_index: torch.Tensor) -> None:
        """One batch: its per-sample losses, dropped mask and pair indices (no host read)."""
        self.samples += int(losses.shape[0])
        self._loss_sums.append(losses.detach().sum())
        self._n_dropped.append(dropped.sum())
        self._dropped_index.append(torch.where(dropped, pair_index, -1))
        self._readout = None

    def _read(self) -> tuple[int, float, list[torch.Tensor]]:
        if self._readout is None:
            dropped, loss_sum, pairs = 0, 0.0, []
            if self._loss_sums:
                # Python float additions in batch order: the same sum as reading each batch's
                # float32 total as it came.
                for value in torch.stack(self._loss_sums).tolist():
                    loss_sum += value
                dropped = int(torch.stack(self._n_dropped).sum())
                if dropped:
                    index = torch.cat(self._dropped_index)
                    pairs = [index[index >= 0].cpu()]
            self._readout = (dropped, loss_sum, pairs)
        return self._readout

    @property
    def dropped(self) -> int:
        return self._read()[0]

    @property
    def loss_sum(self) -> float:
        return self._read()[1]

    @property
    def dropped_pairs(self) -> list[torch.Tensor]:
        """Training-set rows of the dropped positive samples, in batch order."""
        return self._read()[2]


class LossSeam(torch.nn.Module):
    """Callable as ``seam(pos_scores, neg_scores)`` -> the denoised mean loss of the batch.

    Before each batch the trainer calls `set_batch` with the batch's ids and position; the
    seam builds the `SampleBatch`, asks the denoiser, and records what was dropped.
    """

    def __init__(self, objective: str, denoiser: Denoiser) -> None:
        super().__init__()
        self.objective = objective
        self.denoiser = denoiser
        self.stats = BatchStats()
        self._batch: dict = {}

    def set_batch(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, pair_index: torch.Tensor, step: int, epoch: int) -> None:
        self._batch = dict(users=users, pos=pos, neg=neg, pair_index=pair_index, step=step, epoch=epoch)

    def forward(self, pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
        b = self._batch
        losses, scores, labels = per_sample_losses(self.objective, pos_scores, neg_scores)
        if self.objective == "bpr":
            users, items, neg_items, pair_index = b["users"], b["pos"], b["neg"], b["pair_index"]
        else:
            users = torch.cat([b["users"], b["users"]])
            items = torch.cat([b["pos"], b["neg"]])
            neg_items = None
            pair_index = torch.cat([b["pair_index"], torch.full_like(b["pair_index"], -1)])
        batch = SampleBatch(self.objective, losses, scores.detach(), labels, users, items, neg_items, pair_index, b["step"], b["epoch"])
        decision: Decision = self.denoiser.decide(batch)
        if decision.relabel is not None and bool(decision.relabel.any()):
            losses = torch.where(decision.relabel, opposite_label_losses(self.objective, scores, labels), losses)
        kept = (~decision.dropped).sum().clamp(min=1)
        loss = (decision.weights.detach() * losses).sum() / kept
        self.stats.record(losses, decision.dropped, pair_index)
        return loss
