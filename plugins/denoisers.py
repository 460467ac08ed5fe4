"""Built-in denoisers: none (plain objective), T-CE and R-CE (Wang et al. 2021)."""

from __future__ import annotations

from typing import Any

from llmhd_cli.denoising import Decision, Denoiser, DenoiserSpec, Option, SampleBatch, TrainContext
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl


class TruncatedLoss(Denoiser):
    """T-CE: drop the largest-loss samples; the drop rate rises linearly to ``drop_rate``.

    rate(T) = drop_rate * min(T / num_gradual, 1). Under BCE only positives are dropped
    (as in the authors' code, which zeroes negatives' losses before ranking); under BPR the
    (u, i+, i-) triples with the largest loss are dropped.
    """

    def __init__(self, drop_rate: float, num_gradual: int) -> None:
        self.drop_rate = drop_rate
        self.num_gradual = max(1, num_gradual)

    def rate(self, step: int) -> float:
        return self.drop_rate * min(step / self.num_gradual, 1.0)

    def decide(self, batch: SampleBatch) -> Decision:
        import torch  # here, not at module level: llmhd --help imports every plugin module

        n = batch.losses.shape[0]
        n_drop = n - int((1.0 - self.rate(batch.step)) * n)
        dropped = torch.zeros(n, dtype=torch.bool, device=batch.losses.device)
        if n_drop > 0:
            ranked = batch.losses.detach() * batch.labels  # negatives rank last under BCE
            n_drop = min(n_drop, int(batch.labels.sum()))
            dropped[torch.topk(ranked, n_drop).indices] = True
        return Decision((~dropped).float(), dropped)


class ReweightedLoss(Denoiser):
    """R-CE: weight each sample's loss by its detached predicted probability to the power beta.

    BCE: p^beta for positives, (1 - p)^beta for negatives, p = sigmoid(logit); BPR: sigmoid(margin)^beta.
    Low-probability positives (likely noise) get small weights; nothing is dropped.
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def decide(self, batch: SampleBatch) -> Decision:
        import torch

        p = torch.sigmoid(batch.scores.detach())
        weights = torch.where(batch.labels > 0, p, 1 - p).pow(self.beta)
        return Decision(weights, torch.zeros_like(weights, dtype=torch.bool))


def _tce(options: dict[str, Any], context: TrainContext) -> Denoiser:
    if not 0 <= options["drop_rate"] < 1:
        raise LLMHDError(f"--drop-rate: must be in [0, 1), got {options['drop_rate']}")
    if not options["num_gradual"] > 0:
        raise LLMHDError(f"--num-gradual: must be > 0, got {options['num_gradual']}")
    return TruncatedLoss(options["drop_rate"], options["num_gradual"])


def _rce(options: dict[str, Any], context: TrainContext) -> Denoiser:
    if not options["beta"] >= 0:  # also rejects NaN
        raise LLMHDError(f"--beta: must be >= 0, got {options['beta']}")
    return ReweightedLoss(options["beta"])


DENOISERS = [
    DenoiserSpec("none", "the plain objective: every sample kept", lambda options, context: Denoiser()),
    DenoiserSpec(
        "tce",
        "T-CE, truncated loss (Wang et al. 2021): drop the largest-loss samples",
        _tce,
        [
            Option("drop_rate", float, 0.2, "T-CE: maximum fraction of each batch dropped"),
            Option("num_gradual", int, 30000, "T-CE: iterations over which the drop rate rises to its maximum"),
        ],
    ),
    DenoiserSpec(
        "rce",
        "R-CE, reweighted loss (Wang et al. 2021): down-weight low-probability samples",
        _rce,
        # The authors' default (R_CE/main.py --alpha 0.2); see docs/denoisers.md for their per-dataset values.
        [Option("beta", float, 0.2, "R-CE: exponent of the predicted probability used as weight")],
    ),
]


@hookimpl
def register_denoisers(register):
    for spec in DENOISERS:
        register(spec)
