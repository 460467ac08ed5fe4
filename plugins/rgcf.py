"""RGCF (Tian et al., SIGIR 2022): graph denoising by structure, as the backbone ``rgcf``.

Our own port of the authors' RecBole model (ChangxinTian/RGCF) to RecBole 1.2.1, a
`GeneralRecommender` trained like every llmhd backbone: its BPR term goes through
``self.mf_loss``, which llmhd swaps for the loss seam, so the objective (BPR or BCE) and the
denoisers apply to it. Per mini-batch:

1. structural node representations, projected from the interaction rows: a user is the sum
   of learned vectors of its items (``user_linear``), an item the sum over its users
   (``item_linear``);
2. the reliability of every training edge, ``(cos + 1) / 2`` of its endpoints'
   representations; edges below ``prune_threshold`` get weight 0 (pruned), the rest keep
   their reliability as weight, and each row is normalised to sum 1;
3. LightGCN propagation (``n_layers``, layer mean) on that graph; BPR on the result, plus
   ``reg_weight`` times the L2 norm of the batch's structural representations;
4. with ``MIM_weight > 0``: a diversity-preserving augmentation adds the ``aug_ratio * |E|``
   most reliable of ``10 * aug_ratio * |E|`` randomly drawn unobserved user-item pairs,
   weighted by the median edge value, to the (detached) pruned graph, symmetrically
   normalised; an InfoNCE loss (temperature ``tau``) pulls each batch user's embedding on
   the pruned graph towards its embedding on the augmented one.

The reliability weights are differentiable: the graph structure is learned with the model.
Every edge-level step is a sparse kernel (SDDMM / SpMM on a fixed CSR pattern), never a Python
loop over edges. Departures from the authors' code are listed in docs/rgcf.md.

This module is the registration (settings, diagnostics, the `Backbone`) and imports neither
torch nor RecBole: ``llmhd --help`` loads every plugin module. The kernels and the model class
live in `llmhd_plugins.rgcf_model`, imported when the backbone registry checks the model class
or a run builds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhd_cli.backbones import Backbone
from llmhd_cli.errors import LLMHDError
from llmhd_cli.hookspecs import hookimpl

if TYPE_CHECKING:
    from llmhd_cli.plugins import Register
    from llmhd_plugins.rgcf_model import RGCF

__all__ = ["DEFAULTS", "PruneNoise", "RGCFSettings", "RGCF_BACKBONE", "epoch_diagnostics", "noise_auc",
           "pruned_edge_noise", "register_backbones"]

# The authors' config/model-rgcf.yaml (their learning rate, 4e-5, is a trainer setting: llmhd
# trains every backbone with the paper's --learning-rate 0.005).
DEFAULTS: dict[str, Any] = {
    "embedding_size": 64,
    "n_layers": 2,
    "reg_weight": 1e-5,
    "prune_threshold": 0.02,
    "aug_ratio": 0.1,
    "MIM_weight": 1e-6,
    "tau": 0.2,
}


@dataclass(frozen=True)
class RGCFSettings:
    """RGCF's hyperparameters, read from the RecBole config (``--set key=value``)."""

    embedding_size: int
    n_layers: int
    reg_weight: float
    prune_threshold: float
    aug_ratio: float
    MIM_weight: float
    tau: float

    @classmethod
    def from_config(cls, config: Any) -> RGCFSettings:
        """Validated settings; a bad value is a one-line `LLMHDError` naming the key."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = config[f.name]
            if value is None:
                value = DEFAULTS[f.name]
            integer = f.name in ("embedding_size", "n_layers")
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
                kind = "an integer" if integer else "a number"
                raise LLMHDError(f"--set {f.name}={value!r}: rgcf expects {kind}")
            values[f.name] = value if integer else float(value)
        rules = {
            "embedding_size": (values["embedding_size"] >= 1, "must be at least 1"),
            "n_layers": (values["n_layers"] >= 1, "must be at least 1 (the pruned graph is propagated)"),
            "reg_weight": (values["reg_weight"] >= 0, "must be >= 0"),
            "prune_threshold": (0 <= values["prune_threshold"] <= 1, "must be in [0, 1] (reliabilities are (cos + 1) / 2)"),
            "aug_ratio": (0 <= values["aug_ratio"] <= 1, "must be in [0, 1] (a share of the training edges)"),
            "MIM_weight": (values["MIM_weight"] >= 0, "must be >= 0"),
            "tau": (values["tau"] > 0, "must be > 0"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise LLMHDError(f"--set {name}={values[name]!r}: rgcf {name} {rule}")
        return cls(**values)


# ------------------------------------------------------------------------------ diagnostics


@dataclass
class PruneNoise:
    """How a set of pruned training edges matches the injected noise."""

    pruned_edges: int
    pruned_noise: int
    n_noise: int
    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pruned_edge_noise(pruned_users: np.ndarray, pruned_items: np.ndarray, train_users: np.ndarray,
                      train_items: np.ndarray, is_noise: np.ndarray, n_items: int) -> PruneNoise:
    """Precision/recall/F1 of pruned edges against the injected noise, by set (vectorised).

    An edge is a (user, item) pair; it is noise if a training row of that pair is injected
    noise (``is_noise`` is per training row). Duplicated pairs count once.
    """
    pruned = np.unique(np.asarray(pruned_users, dtype=np.int64) * n_items + np.asarray(pruned_items, dtype=np.int64))
    train_keys = np.asarray(train_users, dtype=np.int64) * n_items + np.asarray(train_items, dtype=np.int64)
    noise = np.unique(train_keys[np.asarray(is_noise, dtype=bool)])
    hits = int(np.isin(pruned, noise, assume_unique=True).sum())
    precision = hits / len(pruned) if len(pruned) else 0.0
    recall = hits / len(noise) if len(noise) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PruneNoise(int(len(pruned)), hits, int(len(noise)), precision, recall, f1)


def noise_auc(reliability: np.ndarray, edge_is_noise: np.ndarray) -> float | None:
    """P(a noise edge is less reliable than a clean one), ties counting half (Mann-Whitney)."""
    n_noise = int(edge_is_noise.sum())
    n_clean = len(edge_is_noise) - n_noise
    if n_noise == 0 or n_clean == 0:
        return None
    from scipy.stats import rankdata

    # Rank by reliability descending: a noise edge ranked below clean edges scores high.
    ranks = rankdata(-reliability)
    return float((ranks[edge_is_noise].sum() - n_noise * (n_noise + 1) / 2) / (n_noise * n_clean))


def epoch_diagnostics(model: RGCF, data: Any) -> dict[str, Any]:
    """What the model's current graph prunes, for the run log (JSON-ready).

    ``data`` is the run's RecBoleData. Keys: ``pruned_edges`` / ``edges`` / ``pruned_share``,
    ``pruned_rows`` (training-row indices of the pruned pairs, an int64 array: the loop's
    noise bookkeeping takes it), ``reliability_mean``, and with injected noise ``noise``
    (a `PruneNoise` dict) and ``noise_auc`` (how well reliability alone ranks the noise last).
    """
    reliability, pruned = model.edge_state()
    graph = model.graph
    users, items = graph.rows[pruned].cpu().numpy(), graph.cols[pruned].cpu().numpy()
    out: dict[str, Any] = {
        "edges": graph.n_edges,
        "pruned_edges": int(pruned.sum()),
        "pruned_share": float(pruned.float().mean()),
        "reliability_mean": float(reliability.mean()),
        "pruned_rows": np.flatnonzero(pruned[model.edge_of_row].cpu().numpy()),
    }
    if data.is_noise.any():
        out["noise"] = pruned_edge_noise(users, items, data.train_users, data.train_items, data.is_noise,
                                         data.n_items).to_dict()
        edge_noise = np.zeros(graph.n_edges, dtype=bool)
        edge_noise[model.edge_of_row.cpu().numpy()[data.is_noise]] = True
        out["noise_auc"] = noise_auc(reliability.cpu().numpy(), edge_noise)
    return out


RGCF_BACKBONE = Backbone(
    name="rgcf",
    model_class="llmhd_plugins.rgcf_model.RGCF",
    description="RGCF (Tian et al. 2022): LightGCN on a reliability-pruned graph with MI augmentation (llmhd's port)",
    defaults=dict(DEFAULTS),
    epoch_diagnostics=epoch_diagnostics,
)


@hookimpl
def register_backbones(register: Register) -> None:
    register(RGCF_BACKBONE)
