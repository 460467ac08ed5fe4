"""RGCF's torch side: the sparse graph kernels and the RecBole model class (``rgcf`` backbone).

Imported when the backbone registry checks the model class (``llmhd_plugins.rgcf_model.RGCF``)
or a run builds the model; the registration, settings and diagnostics are in
`llmhd_plugins.rgcf`, which stays torch-free for ``llmhd --help``. The method and the
departures from the authors' code are described there and in docs/rgcf.md.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_uniform_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType

from llmhd_plugins.rgcf import RGCFSettings

__all__ = ["RGCF", "BipartiteGraph", "edge_dot", "edge_reliability", "graph_matmul", "row_normalised",
           "summed_cross_entropy"]


POOL_MULTIPLE = 10  # augmentation candidates drawn per added edge (the authors' pool_multi)
_EPS = 1e-7  # added to degrees before dividing, as the authors do


# ---------------------------------------------------------------------- sparse graph kernels


class BipartiteGraph:
    """A fixed user-item edge pattern as CSR index arrays in both orientations.

    Edge values live in *user-major* order (sorted by user, then item: ``rows``, ``cols``);
    ``to_item_major`` reorders them for the item x user orientation. Building a CSR tensor
    from these arrays costs nothing per batch, and the pattern never has to be coalesced again.
    Duplicate pairs are allowed (their values add up in a product).
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int,
                 ordered: bool = False) -> None:
        self.n_users, self.n_items = n_users, n_items
        if not ordered:  # ``ordered``: the pairs already come sorted by (user, item)
            order = torch.argsort(users * n_items + items)
            users, items = users[order], items[order]
        self.rows, self.cols = users, items
        self.user_crow = _crow(self.rows, n_users)

    @functools.cached_property
    def to_item_major(self) -> torch.Tensor:
        return torch.argsort(self.cols * self.n_users + self.rows)

    @functools.cached_property
    def to_user_major(self) -> torch.Tensor:
        return torch.argsort(self.to_item_major)

    @functools.cached_property
    def item_rows(self) -> torch.Tensor:
        return self.cols[self.to_item_major]

    @functools.cached_property
    def item_cols(self) -> torch.Tensor:
        return self.rows[self.to_item_major]

    @functools.cached_property
    def item_crow(self) -> torch.Tensor:
        return _crow(self.item_rows, self.n_items)

    @property
    def n_edges(self) -> int:
        return int(self.rows.shape[0])

    def csr(self, values: torch.Tensor, side: str) -> torch.Tensor:
        """users x items (``side="user"``, user-major values) or items x users (item-major values)."""
        if side == "user":
            return torch.sparse_csr_tensor(self.user_crow, self.cols, values, (self.n_users, self.n_items),
                                           check_invariants=False)
        return torch.sparse_csr_tensor(self.item_crow, self.item_cols, values, (self.n_items, self.n_users),
                                       check_invariants=False)


def _crow(sorted_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    counts = torch.bincount(sorted_rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


class _GraphMatmul(torch.autograd.Function):
    """``W @ x`` for W on the graph's pattern with differentiable values.

    torch's own sparse autograd builds the gradient of the values through a sparse-dense
    product and coalescing (about 30x slower here); the values' gradient is exactly an SDDMM,
    ``(grad @ x.T)`` sampled on the pattern, and x's is the transposed SpMM.
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, x: torch.Tensor, graph: BipartiteGraph, side: str) -> torch.Tensor:
        ctx.save_for_backward(values, x)
        ctx.graph, ctx.side = graph, side
        return torch.sparse.mm(graph.csr(values.detach(), side), x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        values, x = ctx.saved_tensors
        graph, side = ctx.graph, ctx.side
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            other = "item" if side == "user" else "user"
            reorder = graph.to_item_major if side == "user" else graph.to_user_major
            grad_x = torch.sparse.mm(graph.csr(values.detach()[reorder], other), grad.contiguous())
        if ctx.needs_input_grad[0]:
            pattern = graph.csr(torch.zeros_like(values), side)
            grad_values = torch.sparse.sampled_addmm(pattern, grad.contiguous(), x.detach().t(), beta=0.0).values()
        return grad_values, grad_x, None, None


class _EdgeDot(torch.autograd.Function):
    """Per-edge dot products ``<users[u], items[i]>`` in user-major order (an SDDMM)."""

    @staticmethod
    def forward(ctx: Any, users: torch.Tensor, items: torch.Tensor, graph: BipartiteGraph) -> torch.Tensor:
        ctx.save_for_backward(users, items)
        ctx.graph = graph
        pattern = graph.csr(users.new_zeros(graph.n_edges), "user")
        return torch.sparse.sampled_addmm(pattern, users.detach(), items.detach().t(), beta=0.0).values()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        users, items = ctx.saved_tensors
        graph = ctx.graph
        grad_users = grad_items = None
        if ctx.needs_input_grad[0]:
            grad_users = torch.sparse.mm(graph.csr(grad, "user"), items.detach())
        if ctx.needs_input_grad[1]:
            grad_items = torch.sparse.mm(graph.csr(grad[graph.to_item_major], "item"), users.detach())
        return grad_users, grad_items, None


def graph_matmul(values: torch.Tensor, x: torch.Tensor, graph: BipartiteGraph, side: str) -> torch.Tensor:
    """Users x items (``side="user"``) or items x users product of the weighted graph with ``x``."""
    return _GraphMatmul.apply(values, x, graph, side)


def edge_dot(users: torch.Tensor, items: torch.Tensor, graph: BipartiteGraph) -> torch.Tensor:
    return _EdgeDot.apply(users, items, graph)


class _SummedCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(a @ c.T, target, reduction="sum")`` in fewer passes over the logits.

    The batch x candidates logits (1024 x 11,000 on Amazon-books) dominate RGCF's step; this
    keeps only their softmax for the backward instead of torch's log-softmax output plus a
    zero-filled NLL gradient, and never writes the batch x candidates matrix in the backward.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, c: torch.Tensor, target: torch.Tensor,
                out: torch.Tensor | None) -> torch.Tensor:
        probs = torch.mm(a, c.t(), out=out) if out is not None else a @ c.t()
        top = probs.amax(1, keepdim=True)
        probs.sub_(top).exp_()
        total = probs.sum(1, keepdim=True)
        probs.div_(total)
        target_logits = (a * c[target]).sum(1)
        ctx.save_for_backward(a, c, target, probs)
        return (total.log().squeeze(1) + top.squeeze(1) - target_logits).sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        a, c, target, probs = ctx.saved_tensors
        # d/dlogits = softmax - onehot(target); the onehot part is applied to the small
        # operands (a gather and an index_add) rather than to the batch x candidates matrix.
        grad_a = grad_c = None
        if ctx.needs_input_grad[0]:
            grad_a = grad * (probs @ c - c[target])
        if ctx.needs_input_grad[1]:
            grad_c = grad * (probs.t() @ a - torch.zeros_like(c).index_add_(0, target, a))
        return grad_a, grad_c, None, None


def summed_cross_entropy(a: torch.Tensor, c: torch.Tensor, target: torch.Tensor,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over rows b of ``-log softmax_j(a_b . c_j)`` at ``j = target_b``.

    ``out`` (len(a) x len(c), contiguous) receives the logits and keeps the softmax until the
    backward: a buffer reused across training steps. A fresh matrix this size (45 MB on
    Amazon-books) is an mmap that the allocator hands back to the system when freed, so every
    step would page-fault it in again: that cost as much as the matrix product itself.
    """
    return _SummedCrossEntropy.apply(a, c, target, out)


def edge_reliability(user_repr: torch.Tensor, item_repr: torch.Tensor, graph: BipartiteGraph) -> torch.Tensor:
    """``(cos + 1) / 2`` of each edge's endpoint representations, user-major (differentiable)."""
    return (edge_dot(F.normalize(user_repr, dim=1, eps=1e-8), F.normalize(item_repr, dim=1, eps=1e-8), graph) + 1) / 2


def row_normalised(weights: torch.Tensor, graph: BipartiteGraph) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge values of ``D^-1 A`` for both orientations: (user rows, user-major; item rows, item-major)."""
    user_deg = weights.new_zeros(graph.n_users).index_add(0, graph.rows, weights) + _EPS
    item_deg = weights.new_zeros(graph.n_items).index_add(0, graph.cols, weights) + _EPS
    return weights / user_deg[graph.rows], (weights / item_deg[graph.cols])[graph.to_item_major]


# ---------------------------------------------------------------------------------- the model


class RGCF(GeneralRecommender):
    """RGCF on RecBole 1.2.1: LightGCN propagation on a learned, pruned graph + MI augmentation."""

    input_type = InputType.PAIRWISE

    def __init__(self, config: Any, dataset: Any) -> None:
        super().__init__(config, dataset)
        s = RGCFSettings.from_config(config)
        self.settings = s
        self.embedding_size, self.n_layers, self.reg_weight = s.embedding_size, s.n_layers, s.reg_weight
        self.prune_threshold, self.aug_ratio, self.MIM_weight, self.tau = (
            s.prune_threshold, s.aug_ratio, s.MIM_weight, s.tau)

        # The training edges (duplicates merged) and, per training row, its edge.
        inter = dataset.inter_matrix(form="csr")
        inter.sum_duplicates()
        coo = inter.tocoo()
        dev = self.device
        self.graph = BipartiteGraph(torch.as_tensor(coo.row, dtype=torch.long, device=dev),
                                    torch.as_tensor(coo.col, dtype=torch.long, device=dev), self.n_users, self.n_items)
        self.edge_keys = self.graph.rows * self.n_items + self.graph.cols  # sorted (user-major)
        feat = dataset.inter_feat
        row_keys = (torch.as_tensor(feat[self.USER_ID]).long() * self.n_items + torch.as_tensor(feat[self.ITEM_ID]).long()).to(dev)
        self.edge_of_row = torch.searchsorted(self.edge_keys, row_keys)
        self.ones = torch.ones(self.graph.n_edges, device=dev)

        # Structural representations: user = sum of its items' rows of user_linear.weight.T.
        self.user_linear = torch.nn.Linear(self.n_items, self.embedding_size, bias=False)
        self.item_linear = torch.nn.Linear(self.n_users, self.embedding_size, bias=False)
        self.mf_loss = BPRLoss()  # llmhd swaps this for its loss seam
        self.reg_loss = EmbLoss()

        # storage variables for full sort evaluation acceleration (cleared in calculate_loss)
        self.restore_user_e: torch.Tensor | None = None
        self.restore_item_e: torch.Tensor | None = None
        self._logits_buffer: torch.Tensor | None = None  # InfoNCE logits, reused across steps
        self.apply(xavier_uniform_initialization)
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]

    # -- graph
    def structural(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Users' and items' representations projected from their interaction rows."""
        users = graph_matmul(self.ones, self.user_linear.weight.t(), self.graph, "user")
        items = graph_matmul(self.ones, self.item_linear.weight.t(), self.graph, "item")
        return users, items

    def pruned_weights(self, reliability: torch.Tensor) -> torch.Tensor:
        if self.prune_threshold <= 0:
            return reliability
        return torch.where(reliability < self.prune_threshold, torch.zeros_like(reliability), reliability)

    @torch.no_grad()
    def edge_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(reliability, pruned mask) of every edge under the current weights, user-major."""
        reliability = edge_reliability(*self.structural(), self.graph)
        return reliability, reliability < self.prune_threshold

    def propagate(self, users: torch.Tensor, items: torch.Tensor, user_values: torch.Tensor,
                  item_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LightGCN layers on the training graph (edge values per orientation), mean over layers."""
        user_layers, item_layers = [users], [items]
        for _ in range(self.n_layers):
            users, items = (graph_matmul(user_values, items, self.graph, "user"),
                            graph_matmul(item_values, users, self.graph, "item"))
            user_layers.append(users)
            item_layers.append(items)
        return torch.stack(user_layers).mean(0), torch.stack(item_layers).mean(0)

    def _forward(self) -> tuple:
        users, items = self.structural()
        weights = self.pruned_weights(edge_reliability(users, items, self.graph))
        user_values, item_values = row_normalised(weights, self.graph)
        user_e, item_e = self.propagate(users, items, user_values, item_values)
        return user_e, item_e, users, items, user_values, item_values

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward()[:2]

    # -- augmentation
    @torch.no_grad()
    def augmentation_edges(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The most reliable of a random pool of unobserved pairs (padding ids excluded)."""
        n_add = int(self.graph.n_edges * self.aug_ratio)
        size = (n_add * POOL_MULTIPLE,)
        keys = (torch.randint(1, self.n_users, size, device=self.device) * self.n_items
                + torch.randint(1, self.n_items, size, device=self.device))
        # Sorted and unique, the pool is a CSR pattern: its cosines are one SDDMM, and the
        # lookup of observed pairs reads the edge keys in order.
        keys = torch.unique(keys)
        pool = BipartiteGraph(keys // self.n_items, keys % self.n_items, self.n_users, self.n_items, ordered=True)
        cos = edge_dot(F.normalize(users, dim=1, eps=1e-8), F.normalize(items, dim=1, eps=1e-8), pool)
        at = torch.searchsorted(self.edge_keys, keys).clamp(max=len(self.edge_keys) - 1)
        cos = cos.masked_fill(self.edge_keys[at] == keys, -torch.inf)  # observed pairs are not candidates
        top = torch.topk(cos, min(n_add, len(keys))).indices
        return pool.rows[top], pool.cols[top]

    def augmented_users(self, users: torch.Tensor, items: torch.Tensor, user_values: torch.Tensor,
                        item_values: torch.Tensor) -> torch.Tensor:
        """User embeddings on D^-1/2 (A + B) D^-1/2: A the pruned graph (detached), B the added edges."""
        aug_users, aug_items = self.augmentation_edges(users, items)
        added = BipartiteGraph(aug_users, aug_items, self.n_users, self.n_items)
        median = torch.median(torch.cat([user_values, item_values]).detach())
        user_values, item_values = user_values.detach(), item_values.detach()
        g = self.graph
        user_deg = user_values.new_zeros(self.n_users).index_add(0, g.rows, user_values)
        item_deg = item_values.new_zeros(self.n_items).index_add(0, g.item_rows, item_values)
        user_deg = user_deg + median * torch.bincount(aug_users, minlength=self.n_users) + _EPS
        item_deg = item_deg + median * torch.bincount(aug_items, minlength=self.n_items) + _EPS
        user_scale, item_scale = user_deg.pow(-0.5)[:, None], item_deg.pow(-0.5)[:, None]
        added_values = median.expand(added.n_edges)
        user_layers, u, i = [users], users, items
        for layer in range(self.n_layers):
            su, si = user_scale * u, item_scale * i
            next_u = user_scale * (graph_matmul(user_values, si, g, "user") + graph_matmul(added_values, si, added, "user"))
            if layer < self.n_layers - 1:
                i = item_scale * (graph_matmul(item_values, su, g, "item") + graph_matmul(added_values, su, added, "item"))
            u = next_u
            user_layers.append(u)
        return torch.stack(user_layers).mean(0)

    def info_nce(self, anchor: torch.Tensor, candidates: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of -log softmax_j(cos(anchor_b, candidates_j) / tau) at j = target_b.

        The authors' InfoNCE: each user's own augmented view is the positive, every user's
        (its own included) the denominator; that is a cross-entropy over the candidates,
        with 1/tau scaling the anchors instead of the batch x users logits.
        """
        shape = (anchor.shape[0], candidates.shape[0])
        buffer = self._logits_buffer
        if buffer is None or buffer.shape[0] < shape[0] or buffer.shape[1] != shape[1] or buffer.device != anchor.device:
            buffer = self._logits_buffer = anchor.new_empty(shape)
        # Safe to reuse: training runs one forward per backward, and the buffer is read only by that backward.
        return summed_cross_entropy(F.normalize(anchor) / self.tau, F.normalize(candidates), target,
                                    out=buffer[:shape[0]])

    # -- RecBole API
    def calculate_loss(self, interaction: Any) -> torch.Tensor:
        # clear the storage variable when training
        if self.restore_user_e is not None or self.restore_item_e is not None:
            self.restore_user_e, self.restore_item_e = None, None
        user, pos_item, neg_item = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_e, item_e, users, items, user_values, item_values = self._forward()
        u = user_e[user]
        pos_scores = (u * item_e[pos_item]).sum(1)
        neg_scores = (u * item_e[neg_item]).sum(1)
        loss = self.mf_loss(pos_scores, neg_scores)
        if self.reg_weight > 0:
            loss = loss + self.reg_weight * self.reg_loss(users[user], items[pos_item], items[neg_item]).squeeze()
        if self.MIM_weight > 0 and self.aug_ratio > 0:
            aug_users = self.augmented_users(users, items, user_values, item_values)
            # Candidates: every user but RecBole's padding id 0.
            loss = loss + self.MIM_weight * self.info_nce(u, aug_users[1:], user - 1)
        return loss

    def predict(self, interaction: Any) -> torch.Tensor:
        user_e, item_e = self.forward()
        return (user_e[interaction[self.USER_ID]] * item_e[interaction[self.ITEM_ID]]).sum(1)

    def full_sort_predict(self, interaction: Any) -> torch.Tensor:
        if self.restore_user_e is None or self.restore_item_e is None:
            self.restore_user_e, self.restore_item_e = self.forward()
        user_e, item_e = self.restore_user_e, self.restore_item_e
        scores = user_e[interaction[self.USER_ID]] @ item_e.t()
        return scores.view(-1)
