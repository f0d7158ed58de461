"""The stream worker's settings: the artifact store, Kafka, and its own (Faust, state, web)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ecseq.settings import PORT, Rule, StoreSettings, between, duration, one_of, text
from kafka_io.settings import KafkaSettings, kafka_name

STATE_STORES = ("rocksdb://", "memory://")


@dataclass(frozen=True)
class WorkerSettings(StoreSettings, KafkaSettings):
    app_id: str = "ecseq-worker"  # consumer group and table/changelog prefix: replicas share it
    partitions: int = 4  # partitions of the topics the worker creates (its parallelism limit)
    batch_size: int = 200  # events scored in one call
    batch_within: str = "5ms"  # ... or fewer, once the agent has waited this long (unless behind)
    state_store: str = "rocksdb://"  # per-user sequence table: rocksdb:// (durable) or memory://
    state_cache_bytes: int = 256 * 1024 * 1024  # user sequences kept decoded in front of the table, by stored size
    max_state_bytes: int = 256 * 1024  # one user's stored sequence; beyond it the oldest events are dropped
    data_dir: str = "./worker-data"  # local state (RocksDB) of this replica
    web_host: str = "127.0.0.1"  # /health, /ready, /metrics
    web_port: int = 6066
    swap_check_every: str = "5s"  # how often the worker looks at the store's CURRENT
    session_timeout: str = "6s"  # a dead replica loses its partitions after this (groups form in ~half)

    RULES: ClassVar[dict[str, Rule]] = {
        "app_id": kafka_name, "data_dir": text, "web_host": text, "web_port": PORT,
        "batch_within": duration, "swap_check_every": duration, "session_timeout": duration,
        "partitions": between(1, 10_000), "batch_size": between(1, 100_000),
        "state_store": one_of(STATE_STORES), "state_cache_bytes": between(1 << 20, 1 << 40),
        # under the 1 MB a Kafka producer request holds by default, with room for the record's overhead
        "max_state_bytes": between(64 * 1024, 900_000),
    }
