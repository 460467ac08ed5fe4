"""Denoiser contract: what a denoiser sees of each mini-batch and what it may decide.

The training loop hands every mini-batch's per-sample losses and scores to the denoiser as a
`SampleBatch`; the denoiser answers with a `Decision` (per-sample weights and which samples it
dropped). The batch loss is ``sum(weight * loss) / (number of samples not dropped)``, so

- dropping (T-CE) sets weight 0 and ``dropped`` True,
- reweighting (R-CE) scales weights and drops nothing,
- relabelling (DCF) marks samples in ``relabel``: the seam trains them with the opposite
  label's loss (BCE: a positive as a negative; BPR: the triple with positive and negative
  swapped, ``softplus(margin)``), counted like any kept sample,
- the plain objective keeps every weight at 1.

Denoisers are registered with ``register_denoisers`` as a `DenoiserSpec`; each `Option` becomes
a ``llmhd train`` flag and a key of the ``[denoiser_params]`` table of a training config file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where tensors are made: plugins import this module at start-up
    import torch


@dataclass
class SampleBatch:
    """One mini-batch as samples of the chosen objective.

    BPR: one sample per (user, positive, negative) triple; ``scores`` is the margin
    y(u,i+) - y(u,i-), ``items`` the positives, ``neg_items`` the negatives, ``labels`` all 1.
    BCE: the batch's positives followed by their sampled negatives; ``scores`` the logits,
    ``labels`` 1/0, ``neg_items`` None.
    ``pair_index`` gives each positive sample's row in the training set (-1 for negatives),
    so diagnostics can compare dropped samples with injected-noise ground truth.
    ``step`` is the global iteration T (batches seen before this one), ``epoch`` t.
    """

    objective: str
    losses: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    users: torch.Tensor
    items: torch.Tensor
    neg_items: torch.Tensor | None
    pair_index: torch.Tensor
    step: int
    epoch: int


@dataclass
class Decision:
    weights: torch.Tensor  # detached, >= 0, one per sample
    dropped: torch.Tensor  # bool, one per sample
    relabel: torch.Tensor | None = None  # bool, one per sample: train with the opposite label; None = none

    @classmethod
    def keep_all(cls, batch: SampleBatch) -> Decision:
        import torch

        n = batch.losses.shape[0]
        return cls(torch.ones(n, device=batch.losses.device), torch.zeros(n, dtype=torch.bool, device=batch.losses.device))


class Denoiser:
    """Base class: keeps every sample. Subclasses override `decide` and optionally the epoch hooks."""

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch's first batch."""

    def decide(self, batch: SampleBatch) -> Decision:
        return Decision.keep_all(batch)

    def end_epoch(self, epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        """Called after each epoch; returns extra diagnostics for the run's log."""
        return {}

    def close(self) -> None:
        """Called once when the run ends, however it ends: release what the denoiser holds."""


@dataclass
class Option:
    """A denoiser hyperparameter: flag ``--<name with dashes>`` and config key ``name``."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass
class DenoiserSpec:
    """A registered denoiser: ``factory(options, context)`` builds it for one run.

    The factory may replace an option's ``None`` default in ``options`` by the value it
    resolved elsewhere (an environment variable, the user config): the run's config.toml is
    written after the factory returns, so it records what the run really used."""

    name: str
    description: str
    factory: Callable[[dict[str, Any], TrainContext], Denoiser]
    options: list[Option] = field(default_factory=list)


@dataclass
class TrainContext:
    """What a denoiser may know about the run it is built for."""

    objective: str
    n_users: int
    n_items: int
    n_train: int
    batches_per_epoch: int
    device: torch.device
    run_dir: Any = None
    dataset: Any = None  # the PreparedDataset
    backbone: Any = None  # the Backbone (final_embeddings for score histories)
    data: Any = None  # RecBoleData: id tokens, training pairs, injected-noise flags
    workspace: Any = None
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
