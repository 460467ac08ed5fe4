"""Backbone contract: a RecBole general recommender plus how llmhd trains it.

llmhd never re-implements a backbone. It builds RecBole's own model and, for every
mini-batch, runs the model's own ``calculate_loss`` with one part swapped: the pairwise loss
module (``mf_loss`` in NGCF/LightGCN/NCL) is replaced by a `LossSeam`, which receives the
positive and negative scores, turns them into per-sample losses of the chosen objective and
lets the denoiser drop or reweight samples. Regularisation and self-supervised terms stay
RecBole's. Models that do not route their loss through an attribute provide ``train_loss``.

Embedding-based denoisers (llmhd's score history) also need the model's score of a pair to be
the dot product of final user and item embedding tables, and a way to get those tables
(`Backbone.embeddings`). `Backbone.contract_problems` checks both when a plugin registers
the backbone; one that scores otherwise declares ``dot_product_scores=False`` and those
denoisers refuse it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from llmhd_cli import recbole_compat
from llmhd_cli.errors import LLMHDError

if TYPE_CHECKING:  # torch is imported where a model is used: plugins import this module at start-up
    import torch
    from recbole.model.abstract_recommender import GeneralRecommender

TrainLoss = Callable[["torch.nn.Module", Any, "torch.nn.Module", int, Any], "torch.Tensor"]


@dataclass
class Backbone:
    """How to build and train one RecBole model.

    - ``model_class``: dotted path of the RecBole model class.
    - ``defaults``: RecBole config values llmhd sets (users override them with ``--set``).
    - ``loss_attr``: the model attribute holding its pairwise loss module; llmhd swaps it
      for the seam during ``calculate_loss``. Set ``train_loss`` instead when there is none:
      ``train_loss(model, interaction, seam, epoch, config) -> scalar``.
    - ``on_epoch_start(model, epoch, config)``: per-epoch work RecBole's trainer would do (NCL's E-step).
    - ``adjust_config(params, n_users, n_items)``: fix values that depend on the data.
    - ``final_embeddings(model) -> (user_table, item_table)``: the embeddings whose dot
      product is the model's score (the LLMHD score history snapshots them); by default the
      first two outputs of ``model.forward()``, as NGCF, LightGCN and NCL return them. A model
      whose ``forward`` takes arguments (RecBole's BPR: ``forward(user, item)``) must set it.
    - ``epoch_diagnostics(model, data) -> dict``: after each epoch, what the model did to its
      training data (RGCF: the graph edges it pruned), JSON-ready for the run log; the key
      ``pruned_rows`` (training-row indices of positives the model took out of training) is
      popped by the loop and counted in the epoch's noise detection.
    - ``dot_product_scores``: False declares that the model does not score a pair by that dot
      product; denoisers that need final embeddings (llmhd) then refuse the backbone.
    """

    name: str
    model_class: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    loss_attr: str | None = "mf_loss"
    train_loss: TrainLoss | None = None
    on_epoch_start: Callable[[torch.nn.Module, int, Any], None] | None = None
    adjust_config: Callable[[dict[str, Any], int, int], dict[str, Any]] | None = None
    final_embeddings: Callable[[torch.nn.Module], tuple[torch.Tensor, torch.Tensor]] | None = None
    dot_product_scores: bool = True
    epoch_diagnostics: Callable[[torch.nn.Module, Any], dict[str, Any]] | None = None

    def contract_problems(self) -> list[str]:
        """What llmhd would miss to train this backbone ([] when nothing); checked at registration.

        Imports ``model_class`` (so a typo shows at once, not mid-run) and, for a dot-product
        backbone without ``final_embeddings``, checks that ``forward()`` takes no argument.
        """
        problems = []
        if self.loss_attr is None and self.train_loss is None:
            problems.append("neither loss_attr nor train_loss is set, so llmhd cannot put its loss seam into the model")
        try:
            cls = self.load_class()
        except (ImportError, AttributeError, ValueError) as exc:
            return [*problems, f"model_class '{self.model_class}' cannot be imported ({exc})"]
        if self.dot_product_scores and self.final_embeddings is None:
            params = list(inspect.signature(cls.forward).parameters.values())[1:]  # after self
            needed = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if needed:
                problems.append(
                    f"final_embeddings is not set and {cls.__name__}.forward() takes arguments ({', '.join(needed)}), "
                    "so llmhd cannot get the final user and item embedding tables whose dot product is the score: "
                    "set final_embeddings=lambda model: (user_table, item_table), or dot_product_scores=False if "
                    "the model does not score that way (embedding-based denoisers such as llmhd then refuse it)")
        return problems

    def require_embeddings(self, denoiser: str = "llmhd") -> None:
        """Raise `LLMHDError` when ``denoiser`` needs final embeddings this backbone does not score by."""
        if not self.dot_product_scores:
            raise LLMHDError(f"--backbone {self.name}: denoiser '{denoiser}' needs a model that scores by the dot "
                             "product of final user and item embeddings, and this backbone declares it does not "
                             "(dot_product_scores=False); use another backbone or denoiser")

    def embeddings(self, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embedding tables in eval mode (the model's mode is restored)."""
        import torch

        self.require_embeddings()
        with recbole_compat.eval_mode(model), torch.no_grad():
            if self.final_embeddings is not None:
                users, items = self.final_embeddings(model)
            else:
                out = model.forward()
                users, items = out[0], out[1]
        return users.detach(), items.detach()

    def load_state(self, model: torch.nn.Module, state: dict[str, Any]) -> None:
        """Load a state dict and drop every cache computed from the previous weights
        (`recbole_compat.drop_cached_embeddings`: RecBole's propagated embeddings)."""
        model.load_state_dict(state)
        recbole_compat.drop_cached_embeddings(model)

    def load_class(self) -> type[GeneralRecommender]:
        module, _, cls = self.model_class.rpartition(".")
        return getattr(importlib.import_module(module), cls)

    def batch_loss(self, model: GeneralRecommender, interaction: Any, seam: torch.nn.Module, epoch: int,
                   config: Any) -> torch.Tensor:
        """The training loss of one mini-batch, with the seam in place of the pairwise loss.

        ``config`` is the run's RecBole Config (models do not all keep theirs).
        """
        if self.train_loss is not None:
            return self.train_loss(model, interaction, seam, epoch, config)
        assert self.loss_attr is not None  # contract_problems: one of the two is set
        with recbole_compat.swapped_submodule(model, self.loss_attr, seam):
            losses = model.calculate_loss(interaction)
        return cast("torch.Tensor", sum(losses)) if isinstance(losses, tuple) else losses
