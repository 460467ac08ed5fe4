"""The paper's four backbones, RecBole's own models: NGCF, LightGCN, SGL, NCL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: llmhd --help imports every plugin module
    import torch

from llmhd_cli.backbones import Backbone
from llmhd_cli.hookspecs import hookimpl


def _sgl_loss(model: Any, interaction: Any, seam: torch.nn.Module, epoch: int, config: Any) -> torch.Tensor:
    """SGL.calculate_loss with its inline BPR sum replaced by the seam.

    SGL sums its BPR term over the batch (other backbones average); the seam averages, so it
    is scaled back by the batch size to keep RecBole's balance with the SSL term.
    """
    model.restore_user_e, model.restore_item_e = None, None
    users, pos, neg = interaction[model.USER_ID], interaction[model.ITEM_ID], interaction[model.NEG_ITEM_ID]
    user_emb, item_emb = model.forward(model.train_graph)
    user_sub1, item_sub1 = model.forward(model.sub_graph1)
    user_sub2, item_sub2 = model.forward(model.sub_graph2)
    u = user_emb[users]
    pos_scores = (u * item_emb[pos]).sum(dim=1)
    neg_scores = (u * item_emb[neg]).sum(dim=1)
    main = seam(pos_scores, neg_scores) * len(users)
    reg = model.reg_loss(model.user_embedding(users), model.item_embedding(pos), model.item_embedding(neg))
    ssl = model.calc_ssl_loss(users, pos, user_sub1, user_sub2, item_sub1, item_sub2)
    return main + model.reg_weight * reg + ssl


def _ncl_loss(model: Any, interaction: Any, seam: torch.nn.Module, epoch: int, config: Any) -> torch.Tensor:
    """NCL.calculate_loss with the seam, minus the prototype loss during warm-up (as NCLTrainer does)."""
    original = model._modules["mf_loss"]
    model._modules["mf_loss"] = seam
    try:
        main, ssl, proto = model.calculate_loss(interaction)
    finally:
        model._modules["mf_loss"] = original
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
def register_backbones(register):
    for backbone in BACKBONES:
        register(backbone)
