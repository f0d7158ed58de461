"""CompressedGraph and how a new sequence embedding attaches to it.

A compressed node stands for a cluster of training sequences: its feature is the members' mean
embedding, with their positive rate and count kept for the GNN and for explanations. New nodes
get directed edges *from* graph nodes whose cosine similarity passes epsilon (or from their top-k
most similar nodes); new nodes never link to each other, so a batch scores exactly like single
events. The same attachment also serves the full-graph baseline, where every training sequence
is its own node and a faiss index does the search.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import torch


@dataclass(frozen=True)
class CompressedGraph:
    centroids: np.ndarray  # (K, d) float32, mean member embedding
    positive_rate: np.ndarray  # (K,) float32
    size: np.ndarray  # (K,) int64, member count

    @classmethod
    def from_assignment(cls, embeddings: np.ndarray, labels: np.ndarray, assign: np.ndarray) -> CompressedGraph:
        """Column-normalised assignment: node feature = member mean, label = member positive rate."""
        k = int(assign.max()) + 1
        size = np.bincount(assign, minlength=k).astype(np.int64)
        sums = np.zeros((k, embeddings.shape[1]), dtype=np.float64)
        np.add.at(sums, assign, embeddings)
        positives = np.bincount(assign, weights=np.asarray(labels, dtype=np.float64), minlength=k)
        keep = size > 0
        denom = np.maximum(size, 1)
        return cls((sums / denom[:, None])[keep].astype(np.float32),
                   (positives / denom)[keep].astype(np.float32), size[keep])

    @classmethod
    def from_members(cls, embeddings: np.ndarray, labels: np.ndarray) -> CompressedGraph:
        """The uncompressed graph: every training sequence is a node of size 1."""
        n = len(embeddings)
        return cls(np.ascontiguousarray(embeddings, dtype=np.float32),
                   np.asarray(labels, dtype=np.float32), np.ones(n, dtype=np.int64))

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    def node_features(self, use_label_rate: bool) -> np.ndarray:
        """What the GNN sees of each node: the centroid, plus its positive rate if asked."""
        if not use_label_rate:
            return self.centroids
        return np.hstack([self.centroids, self.positive_rate[:, None]]).astype(np.float32)


@dataclass(frozen=True)
class Attachment:
    """Edge rule: every node with cosine > epsilon, kept to the top_k most similar if top_k is set.

    epsilon = -1 with a top_k gives pure top-k attachment.
    """

    epsilon: float = 0.99
    top_k: int | None = None

    def __post_init__(self) -> None:
        if not -1.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [-1, 1), got {self.epsilon}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    def describe(self) -> str:
        rule = f"cos>{self.epsilon:g}" if self.epsilon > -1 else "any"
        return rule if self.top_k is None else f"{rule}, top-{self.top_k}"


@dataclass(frozen=True)
class Edges:
    """Directed edges graph node -> new node for a batch of `size` new nodes, sorted by row.

    An edge list (not a dense B x K mask) so the cost follows the number of edges, which is what
    keeps single-event latency low and lets the compressed and the full graph share one GNN.
    """

    size: int
    row: torch.Tensor  # (E,) int64, index of the new node in the batch, ascending
    node: torch.Tensor  # (E,) int64, graph node
    similarity: torch.Tensor  # (E,) float32

    @property
    def degree(self) -> torch.Tensor:
        return torch.bincount(self.row, minlength=self.size).to(torch.float32)

    @classmethod
    def from_candidates(cls, node: torch.Tensor, sim: torch.Tensor, valid: torch.Tensor) -> Edges:
        """From (B, M) candidate matrices and a validity mask."""
        row, slot = torch.nonzero(valid, as_tuple=True)
        return cls(valid.shape[0], row, node[row, slot], sim[row, slot])

    def take(self, rows: torch.Tensor) -> Edges:
        """The edges of a subset of the new nodes, renumbered 0..len(rows)-1."""
        counts = torch.bincount(self.row, minlength=self.size)
        starts = torch.cumsum(counts, 0) - counts
        picked = counts[rows]
        offsets = torch.arange(int(picked.sum())) - torch.repeat_interleave(torch.cumsum(picked, 0) - picked, picked)
        source = torch.repeat_interleave(starts[rows], picked) + offsets
        return Edges(len(rows), torch.repeat_interleave(torch.arange(len(rows)), picked),
                     self.node[source], self.similarity[source])


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class DenseAttacher:
    """Compares against every node with one (B, d) x (d, K) product: right for K in the hundreds."""

    def __init__(self, graph: CompressedGraph, attachment: Attachment) -> None:
        self.nodes_t = torch.from_numpy(normalise(graph.centroids)).T.contiguous()
        self.attachment = attachment

    def __call__(self, embeddings: torch.Tensor) -> Edges:
        sim = torch.nn.functional.normalize(embeddings, dim=1) @ self.nodes_t
        top_k = self.attachment.top_k
        if top_k is None or top_k >= sim.shape[1]:
            row, node = torch.nonzero(sim > self.attachment.epsilon, as_tuple=True)
            return Edges(sim.shape[0], row, node, sim[row, node])
        best = sim.topk(top_k, dim=1)
        return Edges.from_candidates(best.indices, best.values, best.values > self.attachment.epsilon)


class IndexAttacher:
    """Attaches through a faiss inner-product index: the full-graph baseline over N nodes.

    Keeps at most top_k (else `max_neighbours`) most similar nodes above epsilon; exhaustive (flat)
    search, so the cost is the honest cost of looking at all N training sequences.
    """

    def __init__(self, graph: CompressedGraph, attachment: Attachment, max_neighbours: int = 64,
                 exclude_self: bool = False) -> None:
        self.index = faiss.IndexFlatIP(graph.centroids.shape[1])
        self.index.add(normalise(graph.centroids))
        self.attachment = attachment
        self.slots = attachment.top_k if attachment.top_k is not None else max_neighbours
        self.exclude_self = exclude_self

    def __call__(self, embeddings: torch.Tensor) -> Edges:
        query = normalise(embeddings.detach().numpy())
        extra = int(self.exclude_self)
        sim, idx = self.index.search(query, self.slots + extra)
        if extra:  # training on the graph's own members (query i is node i): drop each query's own node
            # not simply the first hit: identical embeddings tie with the query in any order
            own = idx == np.arange(len(idx))[:, None]
            own[:, -1] |= ~own.any(1)  # own node not among the hits (many ties): drop the weakest
            sim, idx = sim[~own].reshape(len(idx), self.slots), idx[~own].reshape(len(idx), self.slots)
        sim_t, idx_t = torch.from_numpy(sim), torch.from_numpy(idx)
        return Edges.from_candidates(idx_t, sim_t, (idx_t >= 0) & (sim_t > self.attachment.epsilon))
