"""One GNN layer over a new node's edges from the (compressed) graph, plus a linear head.

Layers, all in plain torch: GraphSAGE-mean (default), GraphSAGE-max, GCN and GAT. Each layer
splits its work into `node_messages` (depends only on node features, so a server computes it once
per artifact) and `forward` (per batch, over an edge list). `forward` also returns the coefficient every edge's
message got, which makes per-neighbour contributions to the score exact for the linear
aggregators, hence the case-based explanations.

With `residual` (the default) the GNN adds a correction to the frozen encoder's own logit and
starts at exactly zero, so training begins from the encoder's score instead of from scratch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ecseq.graph import Edges

LAYERS = ("sage_mean", "sage_max", "gcn", "gat")


def _pad(h: torch.Tensor, width: int) -> torch.Tensor:
    """A new node's own features in node-feature space (unknown label rate = 0)."""
    return F.pad(h, (0, width - h.shape[1])) if width > h.shape[1] else h


def _weighted_sum(edges: Edges, coef: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
    """sum over each new node's edges of coef * message -> (B, H)."""
    out = messages.new_zeros(edges.size, messages.shape[1])
    return out.index_add_(0, edges.row, messages[edges.node] * coef.unsqueeze(1))


class SageMean(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.self_lin = nn.Linear(embedding_dim, hidden)
        self.nbr_lin = nn.Linear(node_dim, hidden, bias=False)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.nbr_lin(node_x)

    def forward(self, h, edges: Edges, messages):
        coef = (1.0 / edges.degree.clamp(min=1.0))[edges.row]
        return self.self_lin(h) + _weighted_sum(edges, coef, messages), coef


class SageMax(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.self_lin = nn.Linear(embedding_dim, hidden)
        self.pool = nn.Linear(node_dim, hidden)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pool(node_x))

    def forward(self, h, edges: Edges, messages):
        per_edge = messages[edges.node]
        # messages are >= 0, so a zero start is the identity of max and "no neighbour" gives 0
        agg = per_edge.new_zeros(edges.size, per_edge.shape[1]).index_reduce_(0, edges.row, per_edge, "amax")
        won = ((per_edge == agg[edges.row]) & (per_edge > 0)).to(h.dtype)  # (E, H)
        return self.self_lin(h) + agg, won


class GCN(nn.Module):
    """Shared weights for self and neighbours, mean over the closed neighbourhood."""

    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.node_dim = node_dim
        self.lin = nn.Linear(node_dim, hidden, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.lin(node_x)

    def forward(self, h, edges: Edges, messages):
        norm = 1.0 / (edges.degree + 1.0)
        coef = norm[edges.row]
        own = self.lin(_pad(h, self.node_dim)) * norm.unsqueeze(1)
        return own + _weighted_sum(edges, coef, messages) + self.bias, coef


class GAT(nn.Module):
    """Single-head graph attention over the new node itself and its neighbours."""

    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.node_dim = node_dim
        self.lin = nn.Linear(node_dim, hidden, bias=False)
        self.att_src = nn.Parameter(torch.randn(hidden) * 0.1)
        self.att_dst = nn.Parameter(torch.randn(hidden) * 0.1)
        self.bias = nn.Parameter(torch.zeros(hidden))

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.lin(node_x)

    def forward(self, h, edges: Edges, messages):
        own = self.lin(_pad(h, self.node_dim))
        dst = own @ self.att_dst
        e_self = F.leaky_relu(dst + own @ self.att_src, 0.2)
        e_edge = F.leaky_relu(dst[edges.row] + (messages @ self.att_src)[edges.node], 0.2)
        top = e_self.index_reduce(0, edges.row, e_edge, "amax")  # per-node max for a stable softmax
        w_self = torch.exp(e_self - top)
        w_edge = torch.exp(e_edge - top[edges.row])
        denom = w_self.index_add(0, edges.row, w_edge)
        coef = w_edge / denom[edges.row]
        return (w_self / denom).unsqueeze(1) * own + _weighted_sum(edges, coef, messages) + self.bias, coef


_LAYER_TYPES = {"sage_mean": SageMean, "sage_max": SageMax, "gcn": GCN, "gat": GAT}


class RelationGNN(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, layer: str = "sage_mean", hidden: int = 32,
                 residual: bool = True, use_label_rate: bool = True) -> None:
        super().__init__()
        if layer not in _LAYER_TYPES:
            raise ValueError(f"unknown GNN layer {layer!r}; choose from {', '.join(LAYERS)}")
        self.config = {"embedding_dim": embedding_dim, "node_dim": node_dim, "layer": layer, "hidden": hidden,
                       "residual": residual, "use_label_rate": use_label_rate}
        self.layer = _LAYER_TYPES[layer](embedding_dim, node_dim, hidden)
        self.out = nn.Linear(hidden, 1)
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.layer.node_messages(node_x)

    def forward(self, h: torch.Tensor, edges: Edges, messages: torch.Tensor,
                base_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (logits (B,), pre-activation z (B, H), per-edge coefficients)."""
        z, coef = self.layer(h, edges, messages)
        logit = self.out(F.relu(z)).squeeze(-1)
        if self.config["residual"]:
            logit = logit + base_logit
        return logit, z, coef

    def contributions(self, z: torch.Tensor, coef: torch.Tensor, edges: Edges,
                      messages: torch.Tensor) -> torch.Tensor:
        """Each edge's additive share of its node's logit, (E,); exact to first order."""
        u = (self.out.weight[0] * (z > 0))[edges.row]
        per_dim = u * messages[edges.node]
        if coef.dim() == 2:  # max pooling: an edge contributes on the dimensions it won
            return (per_dim * coef).sum(1)
        return per_dim.sum(1) * coef
