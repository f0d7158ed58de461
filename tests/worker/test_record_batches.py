"""PartitionBatches against the real broker: keyed records land where per-record sends put them, full
batches split, and the offsets it reports are the records' own."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from kafka_io.topics import ensure_topics, read_topic
from worker.record_batches import PartitionBatches


def _send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int | None]], max_batch_size: int):
    async def job() -> list[tuple]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=max_batch_size)
        await producer.start()
        try:
            out = PartitionBatches(producer, topic)
            for key, value, partition in records:
                await out.append(key, value, partition)
            return [await sent.last_offset() for sent in await out.send()]
        finally:
            await producer.stop()

    return asyncio.run(job())


def _per_record(bootstrap: str, topic: str, keys: list[bytes]) -> dict[bytes, int]:
    """Where aiokafka's own send (Faust's producer's default partitioner) puts each key."""
    async def job() -> dict[bytes, int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            return {key: (await (await producer.send(topic, b"x", key=key))).partition for key in keys}
        finally:
            await producer.stop()

    return asyncio.run(job())


def test_keyed_records_go_where_per_record_sends_put_them_in_order(broker, topic_names):
    topic, reference = topic_names("out"), topic_names("reference")
    ensure_topics(broker.bootstrap, {topic: 5, reference: 5})
    records = [(f"user{i % 37}".encode(), f"v{i}".encode(), None) for i in range(400)]
    last = _send(broker.bootstrap, topic, records, max_batch_size=16384)

    expected = _per_record(broker.bootstrap, reference, sorted({key for key, _, _ in records}))
    read = read_topic(broker.bootstrap, topic)
    assert len(read) == len(records)
    assert {record.key: record.partition for record in read} == expected
    for partition in range(5):
        mine = [value for key, value, _ in records if expected[key] == partition]
        assert [r.value for r in read if r.partition == partition] == mine  # in the order appended
    assert sorted((tp.partition, offset) for tp, offset in last) == sorted(
        (partition, max(r.offset for r in read if r.partition == partition)) for partition in {*expected.values()})


def test_a_full_batch_is_sent_and_another_started_with_offsets_per_batch(broker, topic_names):
    topic = topic_names("changelog")
    ensure_topics(broker.bootstrap, {topic: 2})
    value = b"x" * 900
    records = [(f"k{i}".encode(), value, 1) for i in range(10)]  # ~1 KB each into 4 KB batches
    last = _send(broker.bootstrap, topic, records, max_batch_size=4096)

    read = read_topic(broker.bootstrap, topic)
    assert [r.key for r in read] == [key for key, _, _ in records] and {r.partition for r in read} == {1}
    assert len(last) >= 3  # split into several batches ...
    offsets = [offset for _, offset in last]
    assert offsets == sorted(offsets) and offsets[-1] == read[-1].offset  # ... each reporting its last record
