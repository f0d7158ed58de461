"""A full rebuild from 100k labelled sequences (file source), end to end, stage by stage.

Read the file, load the serving artifact, featurise, embed with the frozen encoder, compress,
train the GNN, evaluate against the encoder and the serving artifact, write the report and
plots, publish. The core fit (embed + compress + GNN, what bench_build times) is the baseline
of the same run: the ratio says what the product around it costs. Then the published artifact
is loaded the way a worker loads it. Targets: rebuild <= 30 s, load <= 200 ms.
`--source kafka` gathers the same window from Apache Kafka on loopback instead: the events and late
labels read into a window store of its own, as `ecseq build --kafka` does (caps large enough to keep
every labelled event, so both sources build from the same samples).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.common import per_call_seconds, report_checks
from compression_builder.pipeline import BuildConfig, EncoderConfig, train_fresh_encoder
from compression_builder.service import BuildJob
from compression_builder.sources import read_event_file, read_kafka
from compression_builder.window_store import Caps
from ecseq.artifacts import ArtifactStore, ModelBundle
from ecseq.data.synthetic import generate_synthetic
from ecseq.decoding import EventSchema
from ecseq.encoders.training import EncoderTrainConfig
from ecseq.gnn_training import GNNTrainConfig
from ecseq.relation import RelationConfig
from kafka_io import KafkaClientConfig, KafkaCluster, ensure_topics, produce_json

REBUILD_TARGET_S = 30.0
LOAD_TARGET_S = 0.200
CORE_STAGES = ("embed", "compress", "gnn")
CATEGORICAL = ("mcc", "device", "country", "channel")
EVENTS, LABELS = "bench.events", "bench.labels"
HORIZON_S = 7 * 86400.0  # the builder's default label horizon (the labels here come seconds after their events)


def labelled_newest(labelled: int) -> pd.DataFrame:
    """The synthetic set with labels kept on its newest `labelled` events (older ones are context)."""
    frame = generate_synthetic(seed=0)
    newest = frame["ts"].rank(method="first", ascending=False) <= labelled
    frame.loc[~newest, "label"] = np.nan
    return frame


def _to_kafka(kafka: KafkaClientConfig, frame: pd.DataFrame) -> None:
    """Events as the worker's producers send them, then their labels as late label records."""
    ensure_topics(kafka, {EVENTS: 4, LABELS: 4})
    events = frame.drop(columns=["label"]).astype(object).where(frame.drop(columns=["label"]).notna(), None)
    produce_json(kafka, EVENTS, ((r["user_id"], r) for r in events.to_dict("records")))
    labelled = frame[frame["label"].notna()]
    produce_json(kafka, LABELS, ((u, {"event_id": e, "user_id": u, "label": int(y), "ts": t})
                                 for e, u, y, t in zip(labelled["event_id"], labelled["user_id"],
                                                       labelled["label"], labelled["ts"])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="labelled sequences in the rebuild's window")
    parser.add_argument("--loads", type=int, default=20, help="timed artifact loads")
    parser.add_argument("--source", choices=("file", "kafka"), default="file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecseq-bench-") as tmp, contextlib.ExitStack() as stack:
        frame = labelled_newest(args.n)
        events = Path(tmp) / "events.parquet"
        frame.to_parquet(events)
        if args.source == "kafka":
            kafka = KafkaClientConfig.of(stack.enter_context(KafkaCluster(nodes=1)).bootstrap)
            _to_kafka(kafka, frame)
        store = ArtifactStore(Path(tmp) / "store")
        config = BuildConfig(relation=RelationConfig(gnn=GNNTrainConfig(progress=False)))

        def gather(bundle: ModelBundle | None):
            if bundle is None:  # the first artifact: train-encoder reads the file
                return read_event_file(events, CATEGORICAL)
            schema = EventSchema.from_spec(bundle.feature_spec)
            if args.source == "kafka":
                return read_kafka(kafka, EVENTS, LABELS, schema, bundle.window, None, HORIZON_S,
                                  Caps(negatives=args.n, positives=args.n))
            return read_event_file(events, schema.categorical, list(schema.numeric))

        job = BuildJob(store, gather, config, force=True)
        encoder = EncoderConfig(train=EncoderTrainConfig(epochs=2, progress=False))
        started = time.perf_counter()
        first = job.run(fresh=lambda g, clock: train_fresh_encoder(g, config, encoder, clock))
        print(f"setup: train-encoder (2 epochs) + first build {time.perf_counter() - started:.1f} s -> "
              f"{first.published.version}", file=sys.stderr)

        started = time.perf_counter()
        outcome = job.run()
        total_s = time.perf_counter() - started
        stages = outcome.stage_seconds
        core_s = sum(stages.get(s, 0.0) for s in CORE_STAGES)
        print(f"rebuild ({args.source}) from {outcome.report['data']['labelled']} labelled sequences: {total_s:.1f} s "
              f"(core fit {core_s:.1f} s, {total_s / core_s:.2f}x)")
        print("  " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))

        cold = per_call_seconds(lambda: store.load(), 1, warmup=0)[0]
        loads = per_call_seconds(lambda: store.load(), args.loads, warmup=1)
        load_s = float(np.median(loads))
        print(f"artifact load: median {load_s * 1e3:.1f} ms, max {loads.max() * 1e3:.1f} ms "
              f"(first in process {cold * 1e3:.1f} ms), K={store.load().manifest['model']['nodes']}")
        checks = {"rebuild_le_30s": total_s <= REBUILD_TARGET_S, "load_le_200ms": load_s <= LOAD_TARGET_S}
        data = outcome.report["data"]
        result = {"source": args.source, "labelled": data["labelled"], "events": data["events"],
                  "threads": torch.get_num_threads(), "total_s": total_s, "core_fit_s": core_s,
                  "total_over_core": total_s / core_s, "stage_seconds": stages,
                  "load_ms": {"median": load_s * 1e3, "max": float(loads.max()) * 1e3, "first": cold * 1e3},
                  "metrics": outcome.report["metrics"]}
    return report_checks(f"rebuild-{args.source}", result, checks)


if __name__ == "__main__":
    sys.exit(main())
