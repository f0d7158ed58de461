"""Topic setup, produce and read-back against the real dev broker."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

import pytest
from aiokafka.errors import KafkaError

from kafka_io import (
    DevBroker,
    Record,
    ensure_topics,
    free_port,
    produce_json,
    read_topic,
    topic_config,
    topic_partitions,
)
from tests.conftest import TopicNames


def test_ensure_topics_creates_requested_partitions(
    broker: DevBroker, topic_names: TopicNames
) -> None:
    events, scores = topic_names("events"), topic_names("scores")
    ensure_topics(broker.bootstrap, {events: 3, scores: 1})
    found = topic_partitions(broker.bootstrap)
    assert found[events] == 3 and found[scores] == 1


def test_ensure_topics_is_idempotent_and_leaves_existing_alone(
    broker: DevBroker, topic_names: TopicNames, caplog: pytest.LogCaptureFixture
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
    broker: DevBroker, topic_names: TopicNames
) -> None:
    table, plain = topic_names("changelog"), topic_names("plain")
    ensure_topics(broker.bootstrap, {table: 2, plain: 2}, compacted=[table])
    assert topic_config(broker.bootstrap, table).get("cleanup.policy") == "compact"
    assert (
        topic_config(broker.bootstrap, plain).get("cleanup.policy", "delete")
        == "delete"
    )


def test_ensure_topics_rejects_bad_requests() -> None:
    # Checked before any connection: no broker needed.
    with pytest.raises(ValueError, match="compacted"):
        ensure_topics("127.0.0.1:1", {"a": 1}, compacted=["b"])
    with pytest.raises(ValueError, match=">= 1"):
        ensure_topics("127.0.0.1:1", {"a": 0})


def test_round_trip_keeps_keys_partitions_and_order(
    broker: DevBroker, topic_names: TopicNames
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
    broker: DevBroker, topic_names: TopicNames
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


def test_reads_every_record_of_multi_record_batches(
    broker: DevBroker, topic_names: TopicNames
) -> None:
    """Tansu's ListOffsets reports the last batch's base offset + 1; the read must not stop there."""
    name = topic_names("batched")
    ensure_topics(broker.bootstrap, {name: 1})
    produce_json(broker.bootstrap, name, [("k", i) for i in range(25)])
    produce_json(broker.bootstrap, name, [("k", i) for i in range(25, 40)])
    got = read_topic(broker.bootstrap, name)
    assert [r.json() for r in got] == list(range(40))
    assert [r.offset for r in got] == list(range(40))


def test_empty_topic_reads_promptly(broker: DevBroker, topic_names: TopicNames) -> None:
    name = topic_names("empty")
    ensure_topics(broker.bootstrap, {name: 4})
    started = time.monotonic()
    assert read_topic(broker.bootstrap, name) == []
    assert time.monotonic() - started < 2.0


def test_missing_topic_reads_empty_without_creating_it(
    broker: DevBroker, topic_names: TopicNames
) -> None:
    name = topic_names("missing")
    assert read_topic(broker.bootstrap, name) == []
    assert name not in topic_partitions(broker.bootstrap)


def test_helpers_work_inside_a_running_event_loop(
    broker: DevBroker, topic_names: TopicNames
) -> None:
    name = topic_names("from-async")

    async def main() -> list[Record]:
        ensure_topics(broker.bootstrap, {name: 2})
        produce_json(broker.bootstrap, name, [("k", 1), ("k", 2)])
        return read_topic(broker.bootstrap, name)

    assert [r.json() for r in asyncio.run(main())] == [1, 2]


def test_unreachable_broker_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises((KafkaError, TimeoutError)):
        read_topic(f"127.0.0.1:{free_port()}", "t", timeout=1.0)
    assert time.monotonic() - started < 5.0


def test_record_json_of_a_tombstone_is_an_error() -> None:
    with pytest.raises(ValueError, match="tombstone"):
        Record("t", 0, 5, b"k", None, 0).json()
