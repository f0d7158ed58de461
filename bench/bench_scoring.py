"""Scoring cost per event: encoder alone vs ECSeq vs the full graph, all in one run.

One thread, batches of 256 featurised windows of 50 events, K = 500 compressed nodes, scores
with explanations out. The full graph is measured at N = 10k, 100k and 1M training sequences to
show that ECSeq's cost does not grow with N while the full graph's does.

Targets: ECSeq <= 2e-5 s/event and <= 1.3x the encoder alone; single-event latency
<= 250 us; at N = 100k the full graph >= 10x ECSeq.
"""

from __future__ import annotations

import argparse
import sys

import faiss
import numpy as np
import torch

from bench.common import per_call_seconds, report_checks, synthetic_windows
from ecseq.compression import compress
from ecseq.encoders.models import LSTMEncoder
from ecseq.encoders.training import embed_rows
from ecseq.full_graph import IndexAttacher
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.graph import CompressedGraph
from ecseq.relation import RelationConfig
from ecseq.scoring import Scorer

BATCH = 256


def reference_embeddings(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """N training embeddings drawn around the real ones (with jitter when N exceeds the pool)."""
    picked = pool[rng.integers(0, len(pool), n)] if n > len(pool) else pool[rng.permutation(len(pool))[:n]]
    jitter = rng.normal(scale=0.02 * pool.std(), size=picked.shape) if n > len(pool) else 0.0
    return (picked + jitter).astype(np.float32)


def relation_model(graph: CompressedGraph, dense: bool, config: RelationConfig) -> RelationModel:
    gnn = RelationGNN(graph.centroids.shape[1], graph.centroids.shape[1] + 1, config.layer)
    torch.nn.init.normal_(gnn.out.weight, std=0.1)  # a trained head is not zero; keep explanations honest
    return RelationModel(graph, gnn.eval(), config.attachment, dense=dense, max_neighbours=config.max_neighbours)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="N values for the growth table")
    parser.add_argument("--repeats", type=int, default=40, help="timed batches per method")
    args = parser.parse_args()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    config = RelationConfig()
    data = synthetic_windows()
    encoder = LSTMEncoder(data.windows.dim).eval()
    pool = embed_rows(encoder, data.windows, data.rows)
    batch = data.windows.gather(data.rows[rng.permutation(len(data.rows))[:BATCH]])
    singles = [data.windows.gather(data.rows[[i]]) for i in rng.permutation(len(data.rows))[:300]]

    with torch.inference_mode():
        encoder_s = float(np.median(per_call_seconds(lambda: encoder(batch), args.repeats))) / BATCH
        encoder_single = per_call_seconds(lambda: [encoder(x) for x in singles], 3) / len(singles)
    growth = []
    for n in (int(s) for s in args.sizes.split(",")):
        ref = reference_embeddings(pool, n, rng)
        labels = (rng.random(n) < 0.03).astype(np.int64)
        graph = CompressedGraph.from_assignment(ref, labels, compress(ref, labels, config.compression, config.k,
                                                                      config.positive_k))
        ecseq = Scorer(encoder, relation_model(graph, True, config))
        full_model = relation_model(CompressedGraph.from_members(ref, labels), False, config)
        full = Scorer(encoder, full_model, attach=IndexAttacher.for_model(full_model))
        ecseq_s = float(np.median(per_call_seconds(lambda s=ecseq: s.score_windows(batch), args.repeats))) / BATCH
        full_repeats = max(3, args.repeats // 8)
        full_s = float(np.median(per_call_seconds(lambda s=full: s.score_windows(batch), full_repeats))) / BATCH
        single = per_call_seconds(lambda s=ecseq: [s.score_windows(x) for x in singles], 3) / len(singles)
        growth.append({"n": n, "nodes": graph.k, "ecseq_s": ecseq_s, "full_graph_s": full_s,
                       "full_over_ecseq": full_s / ecseq_s, "ecseq_single_s": float(np.median(single))})
        print(f"N={n:>8}: ecseq {ecseq_s * 1e6:7.2f} us/event, full graph {full_s * 1e6:8.2f} us/event "
              f"({full_s / ecseq_s:5.1f}x), ecseq single {np.median(single) * 1e6:6.1f} us", flush=True)

    at_100k = next((g for g in growth if g["n"] == 100_000), growth[-1])
    ecseq_s = float(np.median([g["ecseq_s"] for g in growth]))
    single_s = float(np.median([g["ecseq_single_s"] for g in growth]))
    checks = {
        "ecseq_per_event_le_2e-5": ecseq_s <= 2e-5,
        "ecseq_over_encoder_le_1.3": ecseq_s / encoder_s <= 1.3,
        "single_event_le_250us": single_s <= 250e-6,
        "full_over_ecseq_at_100k_ge_10": at_100k["full_over_ecseq"] >= 10,
    }
    result = {"batch": BATCH, "window": data.windows.length, "k": config.k, "attachment": config.attachment.describe(),
              "encoder_s": encoder_s, "encoder_single_s": float(np.median(encoder_single)), "ecseq_s": ecseq_s,
              "ecseq_over_encoder": ecseq_s / encoder_s, "ecseq_single_s": single_s, "growth": growth}
    print(f"encoder alone {encoder_s * 1e6:.2f} us/event (single {np.median(encoder_single) * 1e6:.1f} us); "
          f"ecseq {ecseq_s * 1e6:.2f} us/event = {ecseq_s / encoder_s:.2f}x encoder; single {single_s * 1e6:.1f} us")
    return report_checks("scoring", result, checks)


if __name__ == "__main__":
    sys.exit(main())
