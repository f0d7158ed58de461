"""A full rebuild from 100k labelled sequences (file source), end to end, stage by stage.

Read the file, load the serving artifact, featurise, embed with the frozen encoder, compress,
train the GNN, evaluate against the encoder and the serving artifact, write the report and
plots, publish. The core fit (embed + compress + GNN, what bench_build times) is the baseline
of the same run: the ratio says what the product around it costs. Then the published artifact
is loaded the way a worker loads it. Targets (issue 3): rebuild <= 30 s, load <= 200 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import per_call_seconds, report_checks
from compression_builder.pipeline import BuildConfig, EncoderConfig, train_fresh_encoder
from compression_builder.service import BuildJob
from compression_builder.sources import read_event_file
from ecseq.artifacts import ArtifactStore
from ecseq.data.synthetic import generate_synthetic
from ecseq.encoders.training import EncoderTrainConfig
from ecseq.gnn_training import GNNTrainConfig
from ecseq.relation import RelationConfig

REBUILD_TARGET_S = 30.0
LOAD_TARGET_S = 0.200
CORE_STAGES = ("embed", "compress", "gnn")


def _event_file(directory: Path, labelled: int) -> Path:
    """The synthetic set with labels kept on its newest `labelled` events (older ones are context)."""
    frame = generate_synthetic(seed=0)
    newest = frame["ts"].rank(method="first", ascending=False) <= labelled
    frame.loc[~newest, "label"] = np.nan
    path = directory / "events.parquet"
    frame.to_parquet(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="labelled sequences in the rebuild's window")
    parser.add_argument("--loads", type=int, default=20, help="timed artifact loads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecseq-bench-") as tmp:
        events = _event_file(Path(tmp), args.n)
        store = ArtifactStore(Path(tmp) / "store")
        config = BuildConfig(relation=RelationConfig(gnn=GNNTrainConfig(progress=False)))

        def gather(spec):
            categorical = tuple(f.name for f in spec.categorical) if spec else ("mcc", "device", "country", "channel")
            numeric = [f.name for f in spec.numeric] if spec else None
            return read_event_file(events, categorical, numeric)

        job = BuildJob(store, gather, config)
        encoder = EncoderConfig(train=EncoderTrainConfig(epochs=2, progress=False))
        started = time.perf_counter()
        first = job.run(fresh=lambda g, clock: train_fresh_encoder(g, config, encoder, clock), force=True)
        print(f"setup: train-encoder (2 epochs) + first build {time.perf_counter() - started:.1f} s -> "
              f"{first.published.version}", file=sys.stderr)

        started = time.perf_counter()
        outcome = job.run(force=True)
        total_s = time.perf_counter() - started
        stages = outcome.stage_seconds
        core_s = sum(stages.get(s, 0.0) for s in CORE_STAGES)
        print(f"rebuild from {outcome.report['data']['labelled']} labelled sequences: {total_s:.1f} s "
              f"(core fit {core_s:.1f} s, {total_s / core_s:.2f}x)")
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))

        cold = per_call_seconds(lambda: store.load(), 1, warmup=0)[0]
        loads = per_call_seconds(lambda: store.load(), args.loads, warmup=1)
        load_s = float(np.median(loads))
        print(f"artifact load: median {load_s * 1e3:.1f} ms, max {loads.max() * 1e3:.1f} ms "
              f"(first in process {cold * 1e3:.1f} ms), K={store.load().manifest['model']['nodes']}")
        checks = {"rebuild_le_30s": total_s <= REBUILD_TARGET_S, "load_le_200ms": load_s <= LOAD_TARGET_S}
        result = {"labelled": outcome.report["data"]["labelled"], "events": outcome.report["data"]["events"],
                  "threads": torch.get_num_threads(), "total_s": total_s, "core_fit_s": core_s,
                  "total_over_core": total_s / core_s, "stage_seconds": stages,
                  "load_ms": {"median": load_s * 1e3, "max": float(loads.max()) * 1e3, "first": cold * 1e3},
                  "metrics": outcome.report["metrics"]}
    return report_checks("rebuild", result, checks)


if __name__ == "__main__":
    sys.exit(main())
