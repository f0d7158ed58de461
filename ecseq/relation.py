"""Fitting the relation part of ECSeq on frozen-encoder embeddings: compress, then train the GNN.

Shared by offline evaluation and (later) the compression builder, so both build the graph the
same way. With centroids="disjoint" (the default) the compressed nodes are built from one half
of the labelled sequences and the GNN trains on the other half: otherwise each training sequence
sits inside a centroid whose positive rate already includes its own label, and the GNN learns to
trust neighbour labels more than it should at serving time. "shared" (the paper's way) scored
higher AP in the 3-seed refresh ablations but trains the GNN on about twice the time (build
times and the ablation are in docs/results.md): read them before changing this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ecseq.compression import compress
from ecseq.encoders.models import SequenceEncoder
from ecseq.full_graph import IndexAttacher
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.gnn_training import GNNTrainConfig, Labelled, train_gnn
from ecseq.graph import Attachment, CompressedGraph, DenseAttacher
from ecseq.stages import StageClock

CENTROID_MODES = ("disjoint", "shared")


@dataclass(frozen=True)
class RelationConfig:
    compression: str = "balanced_kmeans"
    k: int = 500
    positive_k: int = 100
    layer: str = "sage_mean"
    # Measured on the synthetic set (README, ablation): top-10 beats cos > 0.99, which leaves
    # events without neighbours and links an under-trained encoder's events to most nodes.
    attachment: Attachment = Attachment(epsilon=-1.0, top_k=10)
    residual: bool = True
    use_label_rate: bool = True
    centroids: str = "disjoint"
    gnn: GNNTrainConfig = field(default_factory=GNNTrainConfig)
    max_neighbours: int = 64  # edge cap per new node when no top_k is set


def _new_gnn(dim: int, config: RelationConfig) -> RelationGNN:
    """A GNN initialised from the config's seed alone, so the same data and seed rebuild the same model
    whatever ran before in the process (the builder service rebuilds in one long-lived process)."""
    with torch.random.fork_rng():
        torch.manual_seed(config.gnn.seed)
        return RelationGNN(dim, dim + int(config.use_label_rate), config.layer, residual=config.residual,
                           use_label_rate=config.use_label_rate)


def _halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 50/50 split, stratified by label so both halves see the positives."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for value in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == value))
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def encoder_logits(encoder: SequenceEncoder, embeddings: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return encoder.score_embeddings(torch.from_numpy(embeddings)).numpy()


def fit_compressed(encoder: SequenceEncoder, embeddings: np.ndarray, labels: np.ndarray, val: Labelled,
                   config: RelationConfig) -> RelationModel:
    """Compress labelled embeddings into K nodes and train the GNN against them."""
    labels = np.asarray(labels, dtype=np.int64)
    if config.centroids == "disjoint":
        graph_idx, train_idx = _halves(labels, config.gnn.seed)
    elif config.centroids == "shared":
        graph_idx = train_idx = np.arange(len(labels))
    else:
        raise ValueError(f"unknown centroid mode {config.centroids!r}; choose from {', '.join(CENTROID_MODES)}")
    clock = StageClock()
    assign = compress(embeddings[graph_idx], labels[graph_idx], config.compression, config.k,
                      config.positive_k, seed=config.gnn.seed)
    graph = CompressedGraph.from_assignment(embeddings[graph_idx], labels[graph_idx], assign)
    clock.lap("compress")
    gnn = _new_gnn(embeddings.shape[1], config)
    attacher = DenseAttacher(graph, config.attachment, config.max_neighbours)
    train = Labelled.of(embeddings[train_idx], encoder_logits(encoder, embeddings[train_idx]), labels[train_idx])
    align = Labelled.of(graph.centroids, encoder_logits(encoder, graph.centroids), graph.positive_rate)
    node_x = torch.from_numpy(graph.node_features(config.use_label_rate))
    train_gnn(gnn, node_x, train, attacher, val, attacher, config.gnn, align=align)
    clock.lap("gnn")
    return RelationModel(graph, gnn, config.attachment, stage_seconds=clock.seconds)


def fit_full_graph(encoder: SequenceEncoder, embeddings: np.ndarray, labels: np.ndarray, val: Labelled,
                   config: RelationConfig) -> RelationModel:
    """The uncompressed baseline: every labelled sequence is a node; same GNN, same training."""
    clock = StageClock()
    graph = CompressedGraph.from_members(embeddings, labels)
    gnn = _new_gnn(embeddings.shape[1], config)
    own = IndexAttacher(graph, config.attachment, config.max_neighbours, exclude_self=True)
    other = IndexAttacher(graph, config.attachment, config.max_neighbours)
    train = Labelled.of(embeddings, encoder_logits(encoder, embeddings), labels)
    node_x = torch.from_numpy(graph.node_features(config.use_label_rate))
    train_gnn(gnn, node_x, train, own, val, other, config.gnn)
    clock.lap("gnn")
    return RelationModel(graph, gnn, config.attachment, dense=False, max_neighbours=config.max_neighbours,
                         stage_seconds=clock.seconds)
