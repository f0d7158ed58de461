"""Kafka plumbing shared by the compression builder, the stream worker, the demo and the benchmarks.

Kept out of ``ecseq/`` on purpose: the core library never talks to Kafka.
"""

from kafka_io.broker import KafkaCluster, free_port
from kafka_io.client import KafkaClientConfig
from kafka_io.errors import BrokerError
from kafka_io.topics import (
    Record,
    cluster_brokers,
    ensure_topics,
    partition_leaders,
    produce_json,
    read_topic,
    topic_config,
    topic_partitions,
)

__all__ = [
    "BrokerError",
    "KafkaClientConfig",
    "KafkaCluster",
    "Record",
    "cluster_brokers",
    "ensure_topics",
    "free_port",
    "partition_leaders",
    "produce_json",
    "read_topic",
    "topic_config",
    "topic_partitions",
]
