"""One settings object for every ecseq process, read from ``ECSEQ_*`` environment variables.

Each field's environment variable is ``ECSEQ_`` + its name in upper case (``store`` ->
``ECSEQ_STORE``); command-line flags default to these values, so a container configures
everything through its environment. The README's configuration table lists the same names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ecseq.data.events import DataError

PREFIX = "ECSEQ_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'15m' -> 900.0; units ms, s, m, h, d; a bare number is seconds."""
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise DataError(f"not a positive duration: {text!r} (examples: 30s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class Settings:
    store: str = "./artifacts"  # artifact store directory
    broker: str = "localhost:9092"  # Kafka bootstrap servers (comma-separated host:port)
    # how every Kafka client of ecseq connects (kafka_io/client.py)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # with SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    kafka_username: str = ""  # SASL user
    kafka_password: str = field(default="", repr=False)  # SASL password (or kafka_password_file)
    kafka_password_file: str = ""  # file holding the SASL password (read at each connection attempt)
    kafka_ca_file: str = ""  # PEM CA bundle that signed the brokers' certificates (default: the system's)
    kafka_cert_file: str = ""  # PEM client certificate, for brokers that require mTLS
    kafka_key_file: str = ""  # PEM private key of kafka_cert_file
    replication_factor: int = 0  # of every topic ecseq creates; 0: min(3, brokers in the cluster)
    min_insync_replicas: int = 0  # of every topic ecseq creates; 0: 2 when replicated 3+ times, else 1
    kafka_cache: str = "~/.cache/ecseq/kafka"  # where `ecseq broker` keeps Apache Kafka's jars
    events_topic: str = "ecseq.events"
    scores_topic: str = "ecseq.scores"
    labels_topic: str = "ecseq.labels"
    dead_letter_topic: str = "ecseq.dead-letter"
    artifacts_topic: str = "ecseq.artifacts"  # control topic: published / rolled-back versions
    keep_versions: int = 5  # artifact versions kept in the store (plus the current one)
    build_every: str = "15m"  # builder service: time between rebuilds
    build_since: str = "30d"  # builder: event-time window of labelled data per rebuild
    gate_metric: str = "ap"  # quality gate: metric compared on held-out data (ap, auc, r_at_p90)
    gate_tolerance: float = 0.005  # publish if candidate >= reference - tolerance
    metrics_host: str = "127.0.0.1"  # address the /metrics endpoints bind
    builder_metrics_port: int = 9102
    # the stream worker
    app_id: str = "ecseq-worker"  # consumer group and table/changelog prefix: replicas share it
    partitions: int = 4  # partitions of the topics the worker creates (its parallelism limit)
    batch_size: int = 200  # events scored in one call
    batch_within: str = "5ms"  # ... or fewer, once the agent has waited this long (unless behind)
    state_store: str = "rocksdb://"  # per-user sequence table: rocksdb:// (durable) or memory://
    state_cache_users: int = 100_000  # decoded user sequences kept in memory in front of the table
    data_dir: str = "./worker-data"  # local state (RocksDB) of this replica
    web_host: str = "127.0.0.1"  # /health, /ready, /metrics
    web_port: int = 6066
    swap_check_every: str = "5s"  # how often the worker looks at the store's CURRENT
    session_timeout: str = "6s"  # a dead replica loses its partitions after this (groups form in ~half)
    max_event_bytes: int = 65536  # larger events go to the dead-letter topic

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for field in dataclasses.fields(cls):
            name = PREFIX + field.name.upper()
            if name not in env:
                continue
            kind = type(field.default)
            try:
                values[field.name] = kind(env[name])
            except ValueError:
                raise DataError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    @staticmethod
    def variable(field_name: str) -> str:
        return PREFIX + field_name.upper()
