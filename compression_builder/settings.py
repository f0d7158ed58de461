"""The builder's settings: the artifact store, Kafka, and its schedule, window and gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ecseq.settings import PORT, Rule, StoreSettings, between, duration, one_of, text
from kafka_io.settings import KafkaSettings, kafka_name

GATE_METRICS = ("ap", "auc", "r_at_p90")


@dataclass(frozen=True)
class BuilderSettings(StoreSettings, KafkaSettings):
    build_every: str = "15m"  # builder service: time between rebuilds
    build_since: str = "30d"  # builder: event-time window of labelled data per rebuild
    gate_metric: str = "ap"  # quality gate: metric compared on held-out data (ap, auc, r_at_p90)
    gate_tolerance: float = 0.005  # publish if candidate >= reference - tolerance
    metrics_host: str = "127.0.0.1"  # address the builder's /metrics endpoint binds
    builder_metrics_port: int = 9102
    builder_data_dir: str = "./builder-data"  # builder service: its window store (keep it on a volume)
    builder_group: str = "ecseq-builder"  # builder service: consumer group of the events and labels topics
    label_horizon: str = "7d"  # a label counts if it comes at most this long after its event
    window_positives: int = 20_000  # labelled samples kept per class in the window store: positives ...
    window_negatives: int = 80_000  # ... and negatives (above a cap, a uniform sample by event id hash)
    follow_flush_every: str = "5s"  # builder service: how often what it read is written to the store

    RULES: ClassVar[dict[str, Rule]] = {
        "build_every": duration, "build_since": duration,
        "gate_metric": one_of(GATE_METRICS), "gate_tolerance": between(0, 1),
        "metrics_host": text, "builder_metrics_port": PORT,
        "builder_data_dir": text, "builder_group": kafka_name, "label_horizon": duration,
        "window_positives": between(1, 100_000_000), "window_negatives": between(1, 100_000_000),
        "follow_flush_every": duration,
    }
