"""DCF's torch side: the `DoubleCorrection` denoiser (the rules are in `llmhd_plugins.dcf_denoiser`).

Imported when a run builds the ``dcf`` denoiser; the registration module stays torch-free so
that ``llmhd --help`` and ``llmhd train --help`` (which load every plugin) import no torch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from llmhd_cli.denoising import Decision, Denoiser, SampleBatch

log = logging.getLogger(__name__)


def damp(losses: torch.Tensor) -> torch.Tensor:
    """phi(l) = log(1 + l + l^2 / 2): the paper's non-decreasing damping function (losses >= 0)."""
    return torch.log1p(losses + losses * losses / 2)


def lower_bound_margin(v: torch.Tensor, t: float, n: torch.Tensor) -> torch.Tensor:
    """v (t + v log(2t) / t^2) / (n + 1 - v): what DCF subtracts from a sample's mean damped loss.

    t: epochs so far (epoch + 1); n: the sample's losses in its window; v: the variance term,
    capped at n by the caller so the denominator stays >= 1.
    """
    return v * (t + v * math.log(2 * t) / (t * t)) / (n + 1 - v)


class DoubleCorrection(Denoiser):
    """DCF: drop by a lower bound of each sample's damped mean loss; relabel the most certain noise.

    Per-sample state lives in arrays indexed by the training row (``SampleBatch.pair_index``):
    a ring buffer of the last ``time_step`` damped losses, how many losses each has seen, and
    whether it has been relabelled.
    """

    def __init__(self, n_train: int, device: torch.device | str, drop_rate: float = 0.2, num_gradual: int = 30000,
                 relabel_ratio: float = 0.05, time_step: int = 3, sigma2: float = 1e-4, variance: str = "fixed",
                 sigma_decay: int = 10, relabel: str = "batch", is_noise: Any = None) -> None:
        self.drop_rate, self.num_gradual, self.relabel_ratio = drop_rate, max(1, num_gradual), relabel_ratio
        self.relabel_mode = relabel
        self.time_step, self.sigma2, self.variance, self.sigma_decay = time_step, sigma2, variance, sigma_decay
        self.history = torch.zeros(n_train, time_step, device=device)
        self.seen = torch.zeros(n_train, dtype=torch.long, device=device)
        self.relabelled = torch.zeros(n_train, dtype=torch.bool, device=device)  # ever selected for relabelling
        self.is_noise = None if is_noise is None else torch.as_tensor(is_noise, dtype=torch.bool, device=device)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.n_dropped = self.n_relabelled = self.n_rescued = self.n_ranked = 0
        self.sum_mean = self.sum_bound = 0.0

    # -------------------------------------------------------------------------- schedules

    def rate(self, step: int) -> float:
        """d(T): the drop rate, rising linearly to ``drop_rate`` over ``num_gradual`` iterations."""
        return self.drop_rate * min(step / self.num_gradual, 1.0)

    def decay(self, epoch: int) -> float:
        """The variance term's factor: 1 at epoch 0, falling linearly to 0 at epoch sigma_decay - 1."""
        if self.sigma_decay <= 0:
            return 1.0
        return max(0.0, 1.0 - epoch / max(self.sigma_decay - 1, 1))

    # -------------------------------------------------------------------------- per batch

    def _observe(self, rows: torch.Tensor, damped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Add each row's damped loss to its window; return (mean, variance, count) over the window."""
        slot = self.seen[rows] % self.time_step
        self.history[rows, slot] = damped
        self.seen[rows] += 1
        count = self.seen[rows].clamp(max=self.time_step)
        window = self.history[rows]
        valid = torch.arange(self.time_step, device=rows.device)[None, :] < count[:, None]
        n = count.to(window.dtype)
        mean = (window * valid).sum(1) / n
        var = (((window - mean[:, None]) ** 2) * valid).sum(1) / n
        return mean, var, n

    def decide(self, batch: SampleBatch) -> Decision:
        n_samples = batch.losses.shape[0]
        device = batch.losses.device
        dropped = torch.zeros(n_samples, dtype=torch.bool, device=device)
        relabel = torch.zeros(n_samples, dtype=torch.bool, device=device)

        positive = batch.pair_index >= 0
        pos_idx = positive.nonzero().squeeze(1)
        rows = batch.pair_index[pos_idx]
        if self.relabel_mode == "persist":
            already = self.relabelled[rows]
            relabel[pos_idx[already]] = True  # relabelled earlier: trained with the flipped label from now on
        else:
            already = torch.zeros_like(rows, dtype=torch.bool)

        active, rows = pos_idx[~already], rows[~already]
        if len(rows):
            mean, var, n = self._observe(rows, damp(batch.losses.detach()[active]))
            base = self.sigma2 if self.variance == "fixed" else var
            v = torch.minimum(torch.as_tensor(base, dtype=mean.dtype, device=device) * self.decay(batch.epoch), n)
            margin = lower_bound_margin(v, float(batch.epoch + 1), n)
            bound = torch.relu(mean - margin)

            d = self.rate(batch.step)
            n_out = min(n_samples - int((1 - d) * n_samples), len(rows))
            n_flip = min(n_samples - int(((1 - self.relabel_ratio) + self.relabel_ratio * (1 - d)) * n_samples), n_out)
            if n_out > 0:
                top = torch.topk(bound, n_out).indices  # descending: the most certain noise first
                if self.relabel_mode != "keep":
                    relabel[active[top[:n_flip]]] = True
                dropped[active[top[n_flip:]]] = True
                self.relabelled[rows[top[:n_flip]]] = True
                # The plain-mean rule would have taken these out; the bound kept them (hard samples).
                by_mean = torch.zeros(len(rows), dtype=torch.bool, device=device)
                by_mean[torch.topk(mean, n_out).indices] = True
                by_mean[top] = False
                self.n_rescued += int(by_mean.sum())
            self.n_dropped += n_out - n_flip
            self.n_relabelled += n_flip
            self.n_ranked += len(rows)
            self.sum_mean += float(mean.sum())
            self.sum_bound += float(margin.sum())
        return Decision((~dropped).float(), dropped, relabel)

    # -------------------------------------------------------------------------- per epoch

    def start_epoch(self, epoch: int) -> None:
        self._reset_counters()

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        ranked = max(self.n_ranked, 1)
        total = int(self.relabelled.sum())
        out: dict[str, Any] = {
            "dropped": self.n_dropped,
            "relabelled": self.n_relabelled,
            "relabelled_total": total,
            "rescued_by_bound": self.n_rescued,
            "mean_damped_loss": self.sum_mean / ranked,
            "mean_bound_margin": self.sum_bound / ranked,
            "variance_decay": self.decay(epoch),
        }
        if self.is_noise is not None and bool(self.is_noise.any()):
            hits = int((self.is_noise & self.relabelled).sum())
            out["relabelled_noise_precision"] = hits / total if total else 0.0
            out["relabelled_noise_recall"] = hits / int(self.is_noise.sum())
        log.debug("dcf epoch %d: %s", epoch, out)
        return out
