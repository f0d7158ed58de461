"""Scorer: windows of featurised events in, scores with case-based explanations out, batched.

Everything that depends only on the artifact (normalised node matrix, node messages) is computed
once at construction, so a batch costs one encoder pass, one (B, d) x (d, K) similarity product
and, for the default model, one compiled pass (serving_kernels) for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch.nn import functional as F

from ecseq.encoders.models import SequenceEncoder
from ecseq.gnn import RelationModel, SageMean
from ecseq.graph import Attacher, CompressedGraph, DenseAttacher
from ecseq.serving_kernels import sage_mean_scores

Lap = Callable[[str], None]  # told the name of each stage as it ends (the worker's latency metrics)


@dataclass(frozen=True)
class ScoreBatch:
    score: np.ndarray  # (B,) final score in [0, 1]
    encoder_score: np.ndarray  # (B,) encoder-only score in [0, 1]
    neighbours: np.ndarray  # (B,) int, edges the new node got
    top_nodes: np.ndarray  # (B, k) int64 graph node ids, -1 where there were fewer edges
    top_similarity: np.ndarray  # (B, k) float32
    top_contribution: np.ndarray  # (B, k) float32, share of the logit

    def explanations(self, graph: CompressedGraph) -> list[list[dict]]:
        """Per event, the compressed nodes its score leaned on most, strongest first (all events at
        once: a few array-to-list conversions instead of numpy scalars per entry)."""
        nodes = self.top_nodes
        known = np.where(nodes >= 0, nodes, 0)
        rows = zip(nodes.tolist(), self.top_similarity.tolist(), self.top_contribution.tolist(),
                   graph.size[known].tolist(), graph.positive_rate[known].tolist())
        return [
            [{"node": node, "similarity": sim, "contribution": contrib, "size": size, "positive_rate": rate}
             for node, sim, contrib, size, rate in zip(*row) if node >= 0]
            for row in rows
        ]


class Scorer:
    def __init__(self, encoder: SequenceEncoder, model: RelationModel, explain_k: int = 3,
                 attach: Attacher | None = None) -> None:
        """`attach`: how embeddings find their edges; a compressed (dense) model attaches to every
        node by default, a full-graph one needs ``ecseq.full_graph.IndexAttacher``."""
        self.encoder = encoder.eval()
        self.gnn = model.gnn.eval()
        self.graph = model.graph
        self.explain_k = explain_k
        if attach is None:
            if not model.dense:
                raise ValueError("a full-graph model attaches through an index: pass ecseq.full_graph.IndexAttacher")
            attach = DenseAttacher(model.graph, model.attachment, model.max_neighbours)
        self.attach = attach
        with torch.inference_mode():
            node_x = torch.from_numpy(model.graph.node_features(self.gnn.config["use_label_rate"]))
            self.messages = self.gnn.node_messages(node_x)
        self.fused = isinstance(attach, DenseAttacher) and self.gnn.config["layer"] == "sage_mean"
        if self.fused:
            self._messages_np = self.messages.numpy()
            self._out_w = self.gnn.out.weight.detach()[0].numpy().copy()
            self._out_b = float(self.gnn.out.bias.detach()[0])
            self._residual = bool(self.gnn.config["residual"])
            self.score_embeddings(torch.zeros(1, self.gnn.config["embedding_dim"]))  # compile/load kernels now

    @torch.inference_mode()
    def score_windows(self, windows: torch.Tensor, lap: Lap | None = None) -> ScoreBatch:
        """(B, L, dim) featurised windows -> scores and explanations."""
        embeddings = self.encoder.embed(windows)
        if lap is not None:
            lap("encode")
        return self._score(embeddings, lap)

    @torch.inference_mode()
    def score_embeddings(self, embeddings: torch.Tensor, lap: Lap | None = None) -> ScoreBatch:
        return self._score(embeddings, lap)

    def _score(self, embeddings: torch.Tensor, lap: Lap | None) -> ScoreBatch:
        base = self.encoder.score_embeddings(embeddings)
        if self.fused:
            return self._score_fused(embeddings, base, lap)
        nbrs = self.attach(embeddings)
        if lap is not None:
            lap("attach")
        logit, z, coef = self.gnn(embeddings, nbrs, self.messages, base)
        contrib = self.gnn.contributions(z, coef, nbrs, self.messages)
        k = min(self.explain_k, contrib.shape[1])
        top = (contrib.abs() * nbrs.weight - (1.0 - nbrs.weight)).topk(k, dim=1)  # empty slots rank last
        has_edge = nbrs.weight.gather(1, top.indices) > 0
        width = (0, self.explain_k - k)  # same (B, explain_k) shape as the fused path
        if lap is not None:
            lap("gnn")
        return ScoreBatch(
            score=torch.sigmoid(logit).numpy(),
            encoder_score=torch.sigmoid(base).numpy(),
            neighbours=nbrs.degree.to(torch.int64).numpy(),
            top_nodes=F.pad(torch.where(has_edge, nbrs.index.gather(1, top.indices), -1), width, value=-1).numpy(),
            top_similarity=F.pad(torch.where(has_edge, nbrs.similarity.gather(1, top.indices), 0.0), width).numpy(),
            top_contribution=F.pad(torch.where(has_edge, contrib.gather(1, top.indices), 0.0), width).numpy(),
        )

    def _score_fused(self, embeddings: torch.Tensor, base: torch.Tensor, lap: Lap | None) -> ScoreBatch:
        """The default model's hot path: same numbers as the torch modules, one compiled pass.

        Stages for `lap`: "attach" is the similarity to every node; the compiled pass that picks the
        top-k edges, aggregates and scores is "gnn".
        """
        # `fused` is only set (__init__) for a DenseAttacher and a sage_mean layer: mypy cannot follow the flag
        attach, layer = cast(DenseAttacher, self.attach), cast(SageMean, self.gnn.layer)
        sim = (embeddings @ attach.nodes_t).numpy()  # cosine up to a per-row scale, kept for later
        inv_norm = 1.0 / torch.linalg.vector_norm(embeddings, dim=1).clamp(min=1e-12).numpy()
        if lap is not None:
            lap("attach")
        own = layer.self_lin(embeddings).numpy()
        base_np = base.numpy()
        added = base_np if self._residual else np.zeros_like(base_np)
        logits, degree, nodes, sims, contrib = sage_mean_scores(
            sim, inv_norm, attach.slots, attach.attachment.epsilon, own, added,
            self._messages_np, self._out_w, self._out_b, self.explain_k)
        batch = ScoreBatch(_sigmoid(logits), _sigmoid(base_np), degree, nodes, sims, contrib)
        if lap is not None:
            lap("gnn")
        return batch


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))).astype(np.float32)
