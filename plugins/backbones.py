"""The paper's four backbones, RecBole's own models: NGCF, LightGCN, SGL, NCL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: llmhd --help imports every plugin module
    import torch

    from llmhd_cli.plugins import Register

from llmhd_cli import recbole_compat
from llmhd_cli.backbones import Backbone
from llmhd_cli.hookspecs import hookimpl


def _sgl_loss(model: Any, interaction: Any, seam: torch.nn.Module, epoch: int, config: Any) -> torch.Tensor:
    """SGL's own calculate_loss (its three graph passes, its SSL term) with only calc_bpr_loss replaced.

    SGL computes its BPR term inline in ``calc_bpr_loss`` (no loss module to swap), summed over
    the batch where other backbones average; the seam averages, so its loss is scaled back by the
    batch size to keep RecBole's balance with the SSL term. The regularisation is RecBole's.
    """

    def calc_bpr_loss(user_emd: torch.Tensor, item_emd: torch.Tensor, user_list: torch.Tensor,
                      pos_item_list: torch.Tensor, neg_item_list: torch.Tensor) -> torch.Tensor:
        u = user_emd[user_list]
        pos_scores = (u * item_emd[pos_item_list]).sum(dim=1)
        neg_scores = (u * item_emd[neg_item_list]).sum(dim=1)
        reg = model.reg_loss(model.user_embedding(user_list), model.item_embedding(pos_item_list),
                             model.item_embedding(neg_item_list))
        return seam(pos_scores, neg_scores) * len(user_list) + model.reg_weight * reg

    with recbole_compat.replaced_method(model, "calc_bpr_loss", calc_bpr_loss):
        return model.calculate_loss(interaction)


def _ncl_loss(model: Any, interaction: Any, seam: torch.nn.Module, epoch: int, config: Any) -> torch.Tensor:
    """NCL.calculate_loss with the seam, minus the prototype loss during warm-up (as NCLTrainer does)."""
    with recbole_compat.swapped_submodule(model, "mf_loss", seam):
        main, ssl, proto = model.calculate_loss(interaction)
    if epoch < config["warm_up_step"]:
        return main + ssl
    return main + ssl + proto


def _ncl_epoch_start(model: Any, epoch: int, config: Any) -> None:
    if epoch % config["m_step"] == 0:
        model.e_step()


def _ncl_adjust(params: dict[str, Any], n_users: int, n_items: int) -> dict[str, Any]:
    # k-means runs on users and on items. faiss wants at least 39 points per centroid (it warns
    # below that, and more clusters than points is an error), so small datasets get fewer prototypes.
    params["num_clusters"] = max(1, min(int(params.get("num_clusters", 1000)), n_users // 39, n_items // 39))
    return params


BACKBONES = [
    Backbone(
        name="lightgcn",
        model_class="recbole.model.general_recommender.LightGCN",
        description="LightGCN (He et al. 2020), RecBole's implementation",
    ),
    Backbone(
        name="ngcf",
        model_class="recbole.model.general_recommender.NGCF",
        description="NGCF (Wang et al. 2019), RecBole's implementation",
    ),
    Backbone(
        name="sgl",
        model_class="recbole.model.general_recommender.SGL",
        description="SGL (Wu et al. 2021), RecBole's implementation",
        loss_attr=None,
        train_loss=_sgl_loss,
        final_embeddings=lambda model: model.forward(model.train_graph),
    ),
    Backbone(
        name="ncl",
        model_class="recbole.model.general_recommender.NCL",
        description="NCL (Lin et al. 2022), RecBole's implementation",
        train_loss=_ncl_loss,
        on_epoch_start=_ncl_epoch_start,
        adjust_config=_ncl_adjust,
    ),
]


@hookimpl
def register_backbones(register: Register) -> None:
    for backbone in BACKBONES:
        register(backbone)
