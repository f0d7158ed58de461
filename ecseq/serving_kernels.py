"""Fused serving path for the default model (compressed graph, GraphSAGE-mean).

After one BLAS product of the raw embeddings with the normalised nodes, everything that follows
for a new node (its top-k edges, the mean aggregation, the head, each edge's contribution and
the explanation ranking) is arithmetic on k x H numbers. As a chain of torch ops that is dozens
of dispatches per batch, which dominates single-event latency; here it is one compiled pass. The
torch modules stay the reference: tests check this path against them.
"""

from __future__ import annotations

import numba
import numpy as np

from ecseq.graph import insert_descending, top_k_row


@numba.njit(cache=True, nogil=True, fastmath=True)
def sage_mean_scores(sim: np.ndarray, inv_norm: np.ndarray, slots: int, epsilon: float, own: np.ndarray,
                     base: np.ndarray, messages: np.ndarray, out_w: np.ndarray, out_b: float, explain_k: int,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sim: (B, K) raw embeddings x normalised nodes; inv_norm: (B,) 1/|embedding|, so sim * inv_norm
    is the cosine; own: (B, H) the layer's self term; base: (B,) logit the GNN adds to (zeros
    without residual).

    Returns logits (B,), degrees (B,), and the explain_k strongest edges per node by absolute
    contribution: node ids (-1 = none), similarities, contributions.
    """
    rows, cols = sim.shape
    hidden = own.shape[1]
    slots = max(1, min(slots, cols))
    logits = np.empty(rows, dtype=np.float32)
    degree = np.zeros(rows, dtype=np.int64)
    top_nodes = np.full((rows, explain_k), -1, dtype=np.int64)
    top_sim = np.zeros((rows, explain_k), dtype=np.float32)
    top_contrib = np.zeros((rows, explain_k), dtype=np.float32)
    values = np.empty(slots, dtype=np.float32)
    index = np.empty(slots, dtype=np.int64)
    maxima = np.empty(cols // 8, dtype=np.float32)
    z = np.empty(hidden, dtype=np.float32)
    u = np.empty(hidden, dtype=np.float32)
    strength = np.empty(explain_k, dtype=np.float32)
    rank = np.empty(explain_k, dtype=np.int64)
    for b in range(rows):
        values[:] = -np.inf
        index[:] = -1
        top_k_row(sim[b], values, index, maxima)
        d = 0
        for m in range(slots):
            values[m] *= inv_norm[b]
            if index[m] >= 0 and values[m] > epsilon:
                d += 1
        inv = np.float32(1.0) / max(d, 1)
        degree[b] = d
        for f in range(hidden):
            z[f] = own[b, f]
        for m in range(d):  # slots are sorted, so the edges are the first d
            node = index[m]
            for f in range(hidden):
                z[f] += messages[node, f] * inv
        acc = np.float32(out_b) + base[b]
        for f in range(hidden):
            u[f] = out_w[f] if z[f] > 0 else np.float32(0.0)
            acc += u[f] * z[f]
        logits[b] = acc
        strength[:] = -1.0
        rank[:] = -1
        for m in range(d):
            node = index[m]
            c = np.float32(0.0)
            for f in range(hidden):
                c += u[f] * messages[node, f]
            s = abs(c * inv)
            if explain_k > 0 and s > strength[explain_k - 1]:
                insert_descending(strength, rank, s, m)
        for e in range(explain_k):
            m = rank[e]
            if m >= 0:
                node = index[m]
                c = np.float32(0.0)
                for f in range(hidden):
                    c += u[f] * messages[node, f]
                top_nodes[b, e] = node
                top_sim[b, e] = values[m]
                top_contrib[b, e] = c * inv
    return logits, degree, top_nodes, top_sim, top_contrib
