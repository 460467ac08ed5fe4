"""An example third-party llmhd plugin.

It adds, through the same hooks llmhd's built-ins use:

- the backbone ``mf``: matrix factorisation, i.e. RecBole's own ``BPR`` general recommender,
  with its final embeddings for embedding-based denoisers (``--denoiser llmhd``);
- the denoiser ``clip``: drop the positive samples whose loss exceeds mean + k * std of the
  batch's positive losses (option ``clip_k``, flag ``--clip-k``);
- the LLM provider ``compat-chat``: any OpenAI-compatible chat-completions server of your own,
  over plain HTTP, counting tokens with its own tokenizer (`llmhd_example_plugin.provider`).

Installed, it is found through the ``llmhd`` entry-point group in this package's
``pyproject.toml``; nothing in llmhd names it.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from llmhd_cli.backbones import Backbone
from llmhd_cli.denoising import Decision, Denoiser, DenoiserSpec, Option, SampleBatch, TrainContext
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl
from llmhd_example_plugin.provider import CompatChatProvider

__all__ = ["ClipDenoiser", "CompatChatProvider", "MF", "mf_embeddings", "register_backbones", "register_denoisers",
           "register_providers"]


def mf_embeddings(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """BPR's final user and item tables: it scores a pair by their dot product, but its
    ``forward(user, item)`` needs the pair, so llmhd cannot take the tables from ``forward()``."""
    users, items = cast(torch.nn.Embedding, model.user_embedding), cast(torch.nn.Embedding, model.item_embedding)
    return users.weight, items.weight


# RecBole's BPR computes its pairwise loss with `self.loss = BPRLoss()` and calls
# `self.loss(pos_scores, neg_scores)` in `calculate_loss`, so `loss` is the attribute llmhd
# swaps for its loss seam (BPR or BCE per-sample losses + the denoiser).
MF = Backbone(
    name="mf",
    model_class="recbole.model.general_recommender.BPR",
    description="MF: RecBole's BPR matrix factorisation (example plugin)",
    defaults={"embedding_size": 64},
    loss_attr="loss",
    final_embeddings=mf_embeddings,  # what the llmhd denoiser's score history snapshots
)


class ClipDenoiser(Denoiser):
    """Drop positives whose loss is more than ``k`` standard deviations above the batch mean.

    Only positive samples (label 1) are judged: injected noise is among the positives, and
    under BCE the sampled negatives are a different population whose losses would skew the
    statistics. Under BPR every sample is a (user, positive, negative) triple and has label 1.
    """

    def __init__(self, k: float) -> None:
        self.k = k

    def decide(self, batch: SampleBatch) -> Decision:
        losses = batch.losses.detach()
        positive = batch.labels > 0
        dropped = torch.zeros_like(positive)
        if int(positive.sum()) > 1:  # std of a single sample is undefined
            pos_losses = losses[positive]
            threshold = pos_losses.mean() + self.k * pos_losses.std()
            dropped = positive & (losses > threshold)
        return Decision((~dropped).float(), dropped)


def _clip(options: dict[str, Any], context: TrainContext) -> Denoiser:
    # Options arrive already converted to their declared type; range checks are the plugin's job.
    if not options["clip_k"] >= 0:  # also rejects NaN
        raise LLMHDError(f"--clip-k: must be >= 0, got {options['clip_k']}")
    return ClipDenoiser(options["clip_k"])


CLIP = DenoiserSpec(
    name="clip",
    description="drop positives whose loss exceeds mean + k*std of the batch (example plugin)",
    factory=_clip,
    options=[Option("clip_k", float, 2.0, "clip: drop positives with loss above mean + k*std of the batch")],
)


@hookimpl
def register_backbones(register):
    register(MF)


@hookimpl
def register_denoisers(register):
    register(CLIP)


@hookimpl
def register_providers(register):
    register(CompatChatProvider)
