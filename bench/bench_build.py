"""Offline build time: embed 100k labelled sequences with a trained (frozen) encoder, compress
them to K = 500 nodes and train the GNN, stage by stage; the full-graph baseline's GNN training
on the same data is timed in the same run for a ratio. Target: ECSeq build <= 30 s on
this 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from bench.common import synthetic_windows, write_result
from ecseq.encoders.models import LSTMEncoder
from ecseq.encoders.training import EncoderTrainConfig, embed_rows, train_encoder
from ecseq.gnn_training import GNNTrainConfig, Labelled
from ecseq.relation import RelationConfig, encoder_logits, fit_compressed, fit_full_graph

TARGET_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="labelled sequences to build from")
    parser.add_argument("--skip-full-graph", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    data = synthetic_windows()
    order = rng.permutation(len(data.rows))
    fit, val = order[: args.n], order[args.n: args.n + 10_000]
    if len(fit) < args.n:
        print(f"note: only {len(fit)} labelled sequences available", file=sys.stderr)
    encoder = LSTMEncoder(data.windows.dim)
    warm = order[: 20_000]  # the encoder is trained beforehand; this part is not timed
    train_encoder(encoder, data.windows, data.rows[warm], data.labels[warm], data.rows[val], data.labels[val],
                  EncoderTrainConfig(epochs=2, batch_size=512, progress=False))
    val_emb = embed_rows(encoder, data.windows, data.rows[val])
    val_set = Labelled.of(val_emb, encoder_logits(encoder, val_emb), data.labels[val])
    config = RelationConfig(gnn=GNNTrainConfig(progress=False))

    started = time.perf_counter()
    emb = embed_rows(encoder, data.windows, data.rows[fit])
    embed_s = time.perf_counter() - started
    model = fit_compressed(encoder, emb, data.labels[fit], val_set, config)
    total_s = time.perf_counter() - started
    stages = {"embed_s": embed_s, **{f"{k}_s": v for k, v in model.stage_seconds.items()}, "total_s": total_s}
    result = {"n": len(fit), "k": model.graph.k, "threads": torch.get_num_threads(), "ecseq": stages}
    print(f"ECSeq build from {len(fit)} sequences: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    if not args.skip_full_graph:
        full = fit_full_graph(encoder, emb, data.labels[fit], val_set, config)
        full_s = embed_s + full.stage_seconds["gnn"]
        result["full_graph"] = {"total_s": full_s, "over_ecseq": full_s / total_s}
        print(f"full graph build: {full_s:.1f} s ({full_s / total_s:.1f}x ECSeq)")
    result["checks"] = {"build_le_30s": total_s <= TARGET_S}
    path = write_result("build", result)
    print(f"{'PASS' if total_s <= TARGET_S else 'FAIL'} build <= {TARGET_S:.0f} s; wrote {path}")
    return 0 if total_s <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
