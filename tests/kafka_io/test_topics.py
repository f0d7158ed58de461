"""Topic setup, produce and read-back against the session's Apache Kafka broker (PLAINTEXT listener)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import defaultdict

import pytest

from kafka_io import (
    BrokerError,
    KafkaCluster,
    Record,
    ensure_topics,
    free_port,
    produce_json,
    read_topic,
    topic_config,
    topic_partitions,
)
from kafka_io.topics import replication_for
from tests.conftest import TopicNames


def test_ensure_topics_creates_requested_partitions(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    events, scores = topic_names("events"), topic_names("scores")
    ensure_topics(broker.bootstrap, {events: 3, scores: 1})
    found = topic_partitions(broker.bootstrap)
    assert found[events] == 3 and found[scores] == 1


def test_ensure_topics_is_idempotent_and_leaves_existing_alone(
    broker: KafkaCluster, topic_names: TopicNames, caplog: pytest.LogCaptureFixture
) -> None:
    name, extra = topic_names("events"), topic_names("extra")
    ensure_topics(broker.bootstrap, {name: 2})
    produce_json(broker.bootstrap, name, [("k", 1)])
    with caplog.at_level(logging.WARNING, logger="kafka_io"):
        ensure_topics(broker.bootstrap, {name: 5, extra: 1})
    found = topic_partitions(broker.bootstrap)
    assert found[name] == 2 and found[extra] == 1
    assert "exists with 2 partitions" in caplog.text
    assert [r.json() for r in read_topic(broker.bootstrap, name)] == [
        1
    ]  # not recreated


def test_compacted_topic_gets_compact_policy(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    table, plain = topic_names("changelog"), topic_names("plain")
    ensure_topics(broker.bootstrap, {table: 2, plain: 2}, compacted=[table])
    assert topic_config(broker.bootstrap, table).get("cleanup.policy") == "compact"
    assert topic_config(broker.bootstrap, plain)["cleanup.policy"] == "delete"  # Kafka lists defaults too


def test_ensure_topics_rejects_bad_requests() -> None:
    # Checked before any connection: no broker needed.
    with pytest.raises(ValueError, match="compacted"):
        ensure_topics("127.0.0.1:1", {"a": 1}, compacted=["b"])
    with pytest.raises(ValueError, match=">= 1"):
        ensure_topics("127.0.0.1:1", {"a": 0})


def test_round_trip_keeps_keys_partitions_and_order(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    name = topic_names("events")
    ensure_topics(broker.bootstrap, {name: 3})
    sent = [(f"user-{i % 12}", {"seq": i, "amount": i * 1.5}) for i in range(60)]
    before_ms = int(time.time() * 1000)
    produce_json(broker.bootstrap, name, sent)
    after_ms = int(time.time() * 1000)

    got = read_topic(broker.bootstrap, name)

    assert len(got) == len(sent)
    assert {r.partition for r in got} == {0, 1, 2}  # 12 keys spread over all partitions
    by_partition: dict[int, list[Record]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for r in got:
        assert r.topic == name
        assert before_ms - 1000 <= r.timestamp_ms <= after_ms + 1000
        by_partition[r.partition].append(r)
        assert r.key is not None
        partition_of[r.key].add(r.partition)
    assert all(
        len(parts) == 1 for parts in partition_of.values()
    )  # a key sticks to a partition
    for records in by_partition.values():
        assert [r.offset for r in records] == list(range(len(records)))
    for key, _ in sent[:12]:
        seqs = [r.json()["seq"] for r in got if r.key == key.encode()]
        assert seqs == sorted(seqs)  # per-key order survives
    assert sorted((r.key.decode(), r.json()["seq"]) for r in got if r.key) == sorted(
        (k, v["seq"]) for k, v in sent
    )


def test_values_raw_bytes_nan_and_missing_keys(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    name = topic_names("mixed")
    ensure_topics(broker.bootstrap, {name: 1})
    garbage = b"\xff\x00not json{"
    produce_json(
        broker.bootstrap,
        name,
        [
            ("a", {"x": float("nan")}),
            (None, garbage),
            ("b", None),
            (b"raw-key", "text"),
        ],
    )
    got = read_topic(broker.bootstrap, name)
    assert [r.key for r in got] == [b"a", None, b"b", b"raw-key"]
    assert [r.offset for r in got] == [0, 1, 2, 3]
    assert math.isnan(got[0].json()["x"])
    assert got[1].value == garbage
    assert got[2].value == b"null" and got[2].json() is None
    assert got[3].json() == "text"


def test_empty_topic_reads_promptly(broker: KafkaCluster, topic_names: TopicNames) -> None:
    name = topic_names("empty")
    ensure_topics(broker.bootstrap, {name: 4})
    started = time.monotonic()
    assert read_topic(broker.bootstrap, name) == []
    assert time.monotonic() - started < 2.0


def test_missing_topic_reads_empty_without_creating_it(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    name = topic_names("missing")
    assert read_topic(broker.bootstrap, name) == []
    assert name not in topic_partitions(broker.bootstrap)


def test_helpers_work_inside_a_running_event_loop(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    name = topic_names("from-async")

    async def main() -> list[Record]:
        ensure_topics(broker.bootstrap, {name: 2})
        produce_json(broker.bootstrap, name, [("k", 1), ("k", 2)])
        return read_topic(broker.bootstrap, name)

    assert [r.json() for r in asyncio.run(main())] == [1, 2]


@pytest.mark.parametrize("helper", ["read_topic", "produce_json", "ensure_topics", "topic_partitions"])
def test_unreachable_broker_fails_fast_and_says_so(helper: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    calls = {"read_topic": lambda: read_topic(address, "t", timeout=2.0),
             "produce_json": lambda: produce_json(address, "t", [("k", 1)], timeout=2.0),
             "ensure_topics": lambda: ensure_topics(address, {"t": 1}, timeout=2.0),
             "topic_partitions": lambda: topic_partitions(address, timeout=2.0)}
    started = time.monotonic()
    with pytest.raises(BrokerError, match=rf"cannot connect to Kafka at {address} over PLAINTEXT: "
                                          rf"{address}: connection refused"):
        calls[helper]()
    assert time.monotonic() - started < 5.0


def test_record_json_of_a_tombstone_is_an_error() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        Record("t", 0, 5, b"k", None, 0).json()


def test_concurrent_ensure_topics_of_the_same_topic_all_succeed(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    """Two processes setting up at once: losing the creation race (TOPIC_ALREADY_EXISTS) is fine."""
    name = topic_names("raced")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_topics(broker.bootstrap, {name: 3}), range(4)))
    assert results == [(1, 1)] * 4
    assert topic_partitions(broker.bootstrap)[name] == 3


def test_producing_to_a_missing_topic_does_not_create_it(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    # auto.create.topics.enable=false: ecseq creates every topic it uses, so a typo cannot make one
    name = topic_names("typo")
    with pytest.raises(TimeoutError, match=f"produce to {name!r} did not finish within 2s"):
        produce_json(broker.bootstrap, name, [("k", 1)], timeout=2.0)
    assert name not in topic_partitions(broker.bootstrap)


def test_replication_beyond_the_single_broker_is_refused(
    broker: KafkaCluster, topic_names: TopicNames
) -> None:
    name = topic_names("replicated")
    with pytest.raises(BrokerError, match=r"replication factor 2 \(ECSEQ_REPLICATION_FACTOR\) needs 2 brokers; "
                                          r"the cluster has 1"):
        ensure_topics(broker.bootstrap, {name: 1}, replication_factor=2)
    assert name not in topic_partitions(broker.bootstrap)


@pytest.mark.parametrize(
    ("brokers", "factor", "insync", "expected"),
    [(1, 0, 0, (1, 1)), (2, 0, 0, (2, 1)), (3, 0, 0, (3, 2)), (5, 0, 0, (3, 2)),
     (5, 2, 0, (2, 1)), (3, 3, 3, (3, 3)), (3, 1, 0, (1, 1)), (3, 0, 1, (3, 1))],
)
def test_replication_for_suits_the_cluster(brokers: int, factor: int, insync: int,
                                           expected: tuple[int, int]) -> None:
    assert replication_for(brokers, factor, insync) == expected


def test_replication_for_refuses_what_the_cluster_cannot_hold() -> None:
    with pytest.raises(BrokerError, match=r"^replication factor 3 \(ECSEQ_REPLICATION_FACTOR\) needs 3 brokers; "
                                          r"the cluster has 2$"):
        replication_for(2, 3)
    with pytest.raises(BrokerError, match=r"^min.insync.replicas 2 \(ECSEQ_MIN_INSYNC_REPLICAS\) is above "
                                          r"the replication factor 1$"):
        replication_for(1, 0, 2)
