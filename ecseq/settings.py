"""One settings object for every ecseq process, read from ``ECSEQ_*`` environment variables.

Each field's environment variable is ``ECSEQ_`` + its name in upper case (``store`` ->
``ECSEQ_STORE``); command-line flags default to these values, so a container configures
everything through its environment. docs/configuration.md lists the same names.
Every value is checked when the object is made (type, then range or form): a bad one is one
line naming the variable, before any process starts work on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ecseq.data.events import DataError

PREFIX = "ECSEQ_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # a topic name (and so the app id, a prefix of some)
GATE_METRICS = ("ap", "auc", "r_at_p90")
STATE_STORES = ("rocksdb://", "memory://")


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
    state_cache_bytes: int = 256 * 1024 * 1024  # user sequences kept decoded in front of the table, by stored size
    max_state_bytes: int = 256 * 1024  # one user's stored sequence; beyond it the oldest events are dropped
    data_dir: str = "./worker-data"  # local state (RocksDB) of this replica
    web_host: str = "127.0.0.1"  # /health, /ready, /metrics
    web_port: int = 6066
    swap_check_every: str = "5s"  # how often the worker looks at the store's CURRENT
    session_timeout: str = "6s"  # a dead replica loses its partitions after this (groups form in ~half)
    max_event_bytes: int = 65536  # larger events go to the dead-letter topic

    def __post_init__(self) -> None:
        for name, rule in _RULES.items():
            problem = rule(getattr(self, name))
            if problem:
                raise DataError(f"{self.variable(name)}={getattr(self, name)!r}: {problem}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for item in dataclasses.fields(cls):
            name = PREFIX + item.name.upper()
            if name not in env:
                continue
            kind = type(item.default)
            try:
                values[item.name] = kind(env[name])
            except ValueError:
                raise DataError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    @staticmethod
    def variable(field_name: str) -> str:
        return PREFIX + field_name.upper()


def _between(low: float, high: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        if not math.isfinite(value) or not low <= value <= high:
            return f"must be a number from {_plain(low)} to {_plain(high)}"
        return None
    return check


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _duration(value: str) -> str | None:
    try:
        parse_duration(value)
    except DataError as exc:
        return str(exc)
    return None


def _text(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _kafka_name(value: str) -> str | None:
    return None if _KAFKA_NAME.fullmatch(value) else "must be 1-249 of A-Z a-z 0-9 . _ - (a Kafka topic name)"


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


_PORT = _between(1, 65535)
_RULES: dict[str, Callable] = {
    "store": _text, "broker": _text, "kafka_cache": _text, "data_dir": _text,
    "metrics_host": _text, "web_host": _text,
    "replication_factor": _between(0, 32), "min_insync_replicas": _between(0, 32),
    "events_topic": _kafka_name, "scores_topic": _kafka_name, "labels_topic": _kafka_name,
    "dead_letter_topic": _kafka_name, "artifacts_topic": _kafka_name, "app_id": _kafka_name,
    "keep_versions": _between(1, 10_000),
    "build_every": _duration, "build_since": _duration, "batch_within": _duration,
    "swap_check_every": _duration, "session_timeout": _duration,
    "gate_metric": _one_of(GATE_METRICS), "gate_tolerance": _between(0, 1),
    "builder_metrics_port": _PORT, "web_port": _PORT,
    "partitions": _between(1, 10_000), "batch_size": _between(1, 100_000),
    "state_store": _one_of(STATE_STORES), "state_cache_bytes": _between(1 << 20, 1 << 40),
    # under the 1 MB a Kafka producer request holds by default, with room for the record's overhead
    "max_state_bytes": _between(64 * 1024, 900_000),
    "max_event_bytes": _between(64, 16 * 1024 * 1024),
}
