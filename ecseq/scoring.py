"""Scorer: windows of featurised events in, scores with case-based explanations out, batched.

Everything that depends only on the artifact (normalised node matrix, node messages) is computed
once at construction, so a batch costs one encoder pass, one (B, d) x (d, K) similarity product,
one aggregation and a top-k for the explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ecseq.encoders.models import SequenceEncoder
from ecseq.graph import CompressedGraph, DenseAttacher, Edges, IndexAttacher
from ecseq.relation import RelationModel


@dataclass(frozen=True)
class ScoreBatch:
    score: np.ndarray  # (B,) final score in [0, 1]
    encoder_score: np.ndarray  # (B,) encoder-only score in [0, 1]
    neighbours: np.ndarray  # (B,) int, edges the new node got
    top_nodes: np.ndarray  # (B, k) int64 graph node ids, -1 where there were fewer edges
    top_similarity: np.ndarray  # (B, k) float32
    top_contribution: np.ndarray  # (B, k) float32, share of the logit

    def explanation(self, i: int, graph: CompressedGraph) -> list[dict]:
        """The compressed nodes event i's score leaned on most, strongest first."""
        return [
            {"node": int(node), "similarity": float(sim), "contribution": float(contrib),
             "size": int(graph.size[node]), "positive_rate": float(graph.positive_rate[node])}
            for node, sim, contrib in zip(self.top_nodes[i], self.top_similarity[i], self.top_contribution[i])
            if node >= 0
        ]


class Scorer:
    def __init__(self, encoder: SequenceEncoder, model: RelationModel, explain_k: int = 3) -> None:
        self.encoder = encoder.eval()
        self.gnn = model.gnn.eval()
        self.graph = model.graph
        self.explain_k = explain_k
        if model.dense:
            self.attach = DenseAttacher(model.graph, model.attachment)
        else:
            self.attach = IndexAttacher(model.graph, model.attachment, model.max_neighbours)
        with torch.inference_mode():
            node_x = torch.from_numpy(model.graph.node_features(self.gnn.config["use_label_rate"]))
            self.messages = self.gnn.node_messages(node_x)

    @torch.inference_mode()
    def score_windows(self, windows: torch.Tensor) -> ScoreBatch:
        """(B, L, dim) featurised windows -> scores and explanations."""
        return self.score_embeddings(self.encoder.embed(windows))

    @torch.inference_mode()
    def score_embeddings(self, embeddings: torch.Tensor) -> ScoreBatch:
        base = self.encoder.score_embeddings(embeddings)
        edges = self.attach(embeddings)
        logit, z, coef = self.gnn(embeddings, edges, self.messages, base)
        contrib = self.gnn.contributions(z, coef, edges, self.messages)
        slot, keep = _top_per_row(edges, contrib.abs(), self.explain_k)
        size = (edges.size, self.explain_k)
        return ScoreBatch(
            score=torch.sigmoid(logit).numpy(),
            encoder_score=torch.sigmoid(base).numpy(),
            neighbours=torch.bincount(edges.row, minlength=edges.size).numpy(),
            top_nodes=_scatter(size, edges.row[keep], slot, edges.node[keep], -1).numpy(),
            top_similarity=_scatter(size, edges.row[keep], slot, edges.similarity[keep], 0.0).numpy(),
            top_contribution=_scatter(size, edges.row[keep], slot, contrib[keep], 0.0).numpy(),
        )


def _top_per_row(edges: Edges, strength: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank edges within their row by strength: -> (rank of each kept edge, kept edge ids)."""
    # rows ascending, then strength descending: one sort on a combined key (strength scaled below 1)
    key = edges.row.to(torch.float64) - strength.to(torch.float64) / (float(strength.max()) + 1.0 if len(strength) else 1.0)
    order = torch.argsort(key)
    counts = torch.bincount(edges.row, minlength=edges.size)
    rank = torch.arange(len(order)) - (torch.cumsum(counts, 0) - counts)[edges.row[order]]
    kept = rank < k
    return rank[kept], order[kept]


def _scatter(size: tuple[int, int], row: torch.Tensor, slot: torch.Tensor, values: torch.Tensor,
             fill: float) -> torch.Tensor:
    out = torch.full(size, fill, dtype=values.dtype)
    out[row, slot] = values
    return out
