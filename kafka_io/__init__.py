"""Kafka plumbing shared by the compression builder and the stream worker.

Kept out of ``ecseq/`` on purpose: the core library never talks to Kafka.
"""

from kafka_io.broker import BrokerError, DevBroker, free_port
from kafka_io.topics import (
    Record,
    ensure_topics,
    produce_json,
    read_topic,
    topic_config,
    topic_partitions,
)

__all__ = [
    "BrokerError",
    "DevBroker",
    "Record",
    "ensure_topics",
    "free_port",
    "produce_json",
    "read_topic",
    "topic_config",
    "topic_partitions",
]
