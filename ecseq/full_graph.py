"""The full-graph baseline's attachment: every training sequence is a node, searched with faiss.

Offline only (evaluation and the scoring benchmark): artifacts hold compressed graphs, which
attach densely (``ecseq.graph.DenseAttacher``), so serving never loads faiss.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from ecseq.gnn import RelationModel
from ecseq.graph import Attachment, CompressedGraph, Neighbours, normalise


class IndexAttacher:
    """Attaches through a faiss inner-product index: the full-graph baseline over N nodes.

    Same rule as DenseAttacher; exhaustive (flat) search, so the cost is the honest cost of
    looking at all N training sequences.
    """

    def __init__(self, graph: CompressedGraph, attachment: Attachment, max_neighbours: int = 64,
                 exclude_self: bool = False) -> None:
        self.index = faiss.IndexFlatIP(graph.centroids.shape[1])
        self.index.add(normalise(graph.centroids))
        self.attachment = attachment
        self.slots = attachment.slots(max_neighbours)
        self.exclude_self = exclude_self

    @classmethod
    def for_model(cls, model: RelationModel) -> IndexAttacher:
        """The attacher a full-graph model scores with (``Scorer(..., attach=...)``)."""
        return cls(model.graph, model.attachment, model.max_neighbours)

    def __call__(self, embeddings: torch.Tensor) -> Neighbours:
        query = normalise(embeddings.detach().numpy())
        extra = int(self.exclude_self)
        sim, idx = self.index.search(query, self.slots + extra)
        if extra:  # training on the graph's own members (query i is node i): drop each query's own node
            # not simply the first hit: identical embeddings tie with the query in any order
            own = idx == np.arange(len(idx))[:, None]
            own[:, -1] |= ~own.any(1)  # own node not among the hits (many ties): drop the weakest
            sim, idx = sim[~own].reshape(len(idx), self.slots), idx[~own].reshape(len(idx), self.slots)
        return Neighbours.from_search(sim, idx, self.attachment.epsilon)
