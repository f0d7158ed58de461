"""The builder's settings: the artifact store, Kafka, and its schedule, window and gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ecseq.settings import PORT, Rule, StoreSettings, between, duration, one_of, text
from kafka_io.settings import KafkaSettings

GATE_METRICS = ("ap", "auc", "r_at_p90")


@dataclass(frozen=True)
class BuilderSettings(StoreSettings, KafkaSettings):
    build_every: str = "15m"  # builder service: time between rebuilds
    build_since: str = "30d"  # builder: event-time window of labelled data per rebuild
    gate_metric: str = "ap"  # quality gate: metric compared on held-out data (ap, auc, r_at_p90)
    gate_tolerance: float = 0.005  # publish if candidate >= reference - tolerance
    metrics_host: str = "127.0.0.1"  # address the builder's /metrics endpoint binds
    builder_metrics_port: int = 9102

    RULES: ClassVar[dict[str, Rule]] = {
        "build_every": duration, "build_since": duration,
        "gate_metric": one_of(GATE_METRICS), "gate_tolerance": between(0, 1),
        "metrics_host": text, "builder_metrics_port": PORT,
    }
