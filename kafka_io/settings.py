"""How an ecseq process reaches Kafka and which topics it uses (part of every Kafka process's settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from ecseq.settings import EnvSettings, Rule, between, text

_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # a topic name (and so the worker's app id, a prefix of some)


def kafka_name(value: str) -> str | None:
    return None if _KAFKA_NAME.fullmatch(value) else "must be 1-249 of A-Z a-z 0-9 . _ - (a Kafka topic name)"


@dataclass(frozen=True)
class KafkaSettings(EnvSettings):
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
    max_event_bytes: int = 65536  # larger events are refused (worker: dead letters; builder: counted)

    RULES: ClassVar[dict[str, Rule]] = {
        "broker": text, "kafka_cache": text,
        "replication_factor": between(0, 32), "min_insync_replicas": between(0, 32),
        "events_topic": kafka_name, "scores_topic": kafka_name, "labels_topic": kafka_name,
        "dead_letter_topic": kafka_name, "artifacts_topic": kafka_name,
        "max_event_bytes": between(64, 16 * 1024 * 1024),
    }
