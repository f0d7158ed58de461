"""One GNN layer over a new node's edges from the (compressed) graph, plus a linear head.

Layers, all in plain torch: GraphSAGE-mean (default), GraphSAGE-max, GCN and GAT. Each layer
splits its work into `node_messages` (depends only on node features, so a server computes it
once per artifact) and `forward` (per batch, over each new node's neighbour slots). `forward`
also returns the coefficient every slot's message got, which makes per-neighbour contributions
to the score exact for the linear aggregators, hence the case-based explanations.

With `residual` (the default) the GNN adds a correction to the frozen encoder's own logit and
starts at exactly zero, so training begins from the encoder's score instead of from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import torch
from torch import nn
from torch.nn import functional as F

from ecseq.graph import Attachment, CompressedGraph, Neighbours

LAYERS = ("sage_mean", "sage_max", "gcn", "gat")


def _pad(h: torch.Tensor, width: int) -> torch.Tensor:
    """A new node's own features in node-feature space (unknown label rate = 0)."""
    return F.pad(h, (0, width - h.shape[1])) if width > h.shape[1] else h


def _weighted_sum(nbrs: Neighbours, coef: torch.Tensor, messages: torch.Tensor) -> torch.Tensor:
    """sum over each new node's slots of coef * message -> (B, H)."""
    return torch.bmm(coef.unsqueeze(1), messages[nbrs.index]).squeeze(1)


class SageMean(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.self_lin = nn.Linear(embedding_dim, hidden)
        self.nbr_lin = nn.Linear(node_dim, hidden, bias=False)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.nbr_lin(node_x)

    def forward(self, h: torch.Tensor, nbrs: Neighbours, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coef = nbrs.weight / nbrs.degree.clamp(min=1.0).unsqueeze(1)
        return self.self_lin(h) + _weighted_sum(nbrs, coef, messages), coef


class SageMax(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.self_lin = nn.Linear(embedding_dim, hidden)
        self.pool = nn.Linear(node_dim, hidden)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pool(node_x))

    def forward(self, h: torch.Tensor, nbrs: Neighbours, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # messages are >= 0, so zeroing empty slots keeps them out of the max; no edge gives 0
        per_slot = messages[nbrs.index] * nbrs.weight.unsqueeze(2)
        agg, winner = per_slot.max(dim=1)
        won = F.one_hot(winner, per_slot.shape[1]).transpose(1, 2).to(h.dtype) * (agg > 0).unsqueeze(1)
        return self.self_lin(h) + agg, won  # won (B, M, H): which slot gave each dimension


class GCN(nn.Module):
    """Shared weights for self and neighbours, mean over the closed neighbourhood."""

    def __init__(self, embedding_dim: int, node_dim: int, hidden: int) -> None:
        super().__init__()
        self.node_dim = node_dim
        self.lin = nn.Linear(node_dim, hidden, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.lin(node_x)

    def forward(self, h: torch.Tensor, nbrs: Neighbours, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = 1.0 / (nbrs.degree + 1.0).unsqueeze(1)
        coef = nbrs.weight * norm
        own = self.lin(_pad(h, self.node_dim)) * norm
        return own + _weighted_sum(nbrs, coef, messages) + self.bias, coef


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

    def forward(self, h: torch.Tensor, nbrs: Neighbours, messages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own = self.lin(_pad(h, self.node_dim))
        dst = (own @ self.att_dst).unsqueeze(1)
        scores = torch.cat([dst + (own @ self.att_src).unsqueeze(1), dst + (messages @ self.att_src)[nbrs.index]], 1)
        present = torch.cat([torch.ones_like(dst), nbrs.weight], 1) > 0
        alpha = torch.softmax(F.leaky_relu(scores, 0.2).masked_fill(~present, float("-inf")), dim=1)
        coef = alpha[:, 1:]
        return alpha[:, :1] * own + _weighted_sum(nbrs, coef, messages) + self.bias, coef


class GNNConfig(TypedDict):
    """RelationGNN's constructor arguments, as an artifact's manifest keeps them."""

    embedding_dim: int
    node_dim: int
    layer: str
    hidden: int
    residual: bool
    use_label_rate: bool


_LAYER_TYPES: dict[str, type[SageMean | SageMax | GCN | GAT]] = {
    "sage_mean": SageMean, "sage_max": SageMax, "gcn": GCN, "gat": GAT}


class RelationGNN(nn.Module):
    def __init__(self, embedding_dim: int, node_dim: int, layer: str = "sage_mean", hidden: int = 32,
                 residual: bool = True, use_label_rate: bool = True) -> None:
        super().__init__()
        if layer not in _LAYER_TYPES:
            raise ValueError(f"unknown GNN layer {layer!r}; choose from {', '.join(LAYERS)}")
        self.config: GNNConfig = {"embedding_dim": embedding_dim, "node_dim": node_dim, "layer": layer,
                                  "hidden": hidden, "residual": residual, "use_label_rate": use_label_rate}
        self.layer = _LAYER_TYPES[layer](embedding_dim, node_dim, hidden)
        self.out = nn.Linear(hidden, 1)
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def node_messages(self, node_x: torch.Tensor) -> torch.Tensor:
        return self.layer.node_messages(node_x)

    def forward(self, h: torch.Tensor, nbrs: Neighbours, messages: torch.Tensor,
                base_logit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (logits (B,), pre-activation z (B, H), per-slot coefficients)."""
        z, coef = self.layer(h, nbrs, messages)
        logit = self.out(F.relu(z)).squeeze(-1)
        if self.config["residual"]:
            logit = logit + base_logit
        return logit, z, coef

    def contributions(self, z: torch.Tensor, coef: torch.Tensor, nbrs: Neighbours,
                      messages: torch.Tensor) -> torch.Tensor:
        """Each slot's additive share of its node's logit, (B, M); exact to first order."""
        u = self.out.weight[0] * (z > 0)  # (B, H)
        per_dim = messages[nbrs.index] * u.unsqueeze(1)  # (B, M, H)
        if coef.dim() == 3:  # max pooling: a slot contributes on the dimensions it won
            return (per_dim * coef).sum(2)
        return per_dim.sum(2) * coef


@dataclass
class RelationModel:
    """What scoring needs of a fitted relation part: the graph, the GNN over it and the edge rule."""

    graph: CompressedGraph
    gnn: RelationGNN
    attachment: Attachment
    dense: bool = True  # compressed graph (dense attach) or full graph (ecseq.full_graph's faiss index)
    max_neighbours: int = 64  # full graph only: edges kept per new node
    stage_seconds: dict[str, float] = field(default_factory=dict)
