"""internals: the fetch and WAL patches, and the start-up check that refuses other versions or shapes of
what it touches."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.stores.rocksdb import RocksDBOptions, Store
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from kafka_io.topics import ensure_topics
from worker import internals


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


def _fill(db) -> None:
    for i in range(200):
        db[f"user-{i}".encode()] = b"x" * 1000


def test_table_partitions_are_written_without_rocksdb_wal(tmp_path):
    # the check can see a write-ahead log: a partition opened as Faust does fills one
    plain = RocksDBOptions().open(tmp_path / "plain.db")
    _fill(plain)
    assert _wal_bytes(tmp_path / "plain.db") > 0
    plain.close()

    internals.changelog_instead_of_wal()
    internals.changelog_instead_of_wal()  # idempotent
    options = RocksDBOptions()
    store = SimpleNamespace(partition_path=lambda p: tmp_path / f"sequences-{p}.db", rocksdb_options=options,
                            read_only=False)
    db = Store._open_for_partition(store, 0)
    _fill(db)
    assert _wal_bytes(tmp_path / "sequences-0.db") == 0
    assert db[b"user-7"] == b"x" * 1000
    db.close()


def test_another_version_of_a_package_it_reaches_into_is_refused_by_name(monkeypatch):
    internals.check()  # the installed versions are the tested ones
    monkeypatch.setitem(internals.TESTED, "aiokafka", "0.0.1")
    with pytest.raises(internals.InternalsChanged, match=r"aiokafka 0\.14\.0 is installed.*aiokafka==0\.0\.1"):
        internals.check()


def test_a_changed_shape_of_what_is_patched_or_read_is_refused(monkeypatch):
    from faust.transport.drivers.aiokafka import Producer

    monkeypatch.setattr(Producer, "_ensure_producer", lambda self, wait=True: None)
    with pytest.raises(internals.InternalsChanged, match=r"Producer\._ensure_producer changed"):
        internals.check()
    monkeypatch.delattr(Producer, "_ensure_producer")
    with pytest.raises(internals.InternalsChanged, match=r"_ensure_producer is gone"):
        internals.check()


def test_a_histogram_without_the_buckets_observe_many_reads_is_refused(monkeypatch):
    class Histogram:  # a prometheus-client whose histograms keep their buckets elsewhere
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._sum = None

    monkeypatch.setattr(internals, "Histogram", Histogram)
    with pytest.raises(internals.InternalsChanged, match=r"Histogram has no _upper_bounds, _buckets"):
        internals.check()


class _ConsumerThread:
    """The parts of Faust's AIOKafkaConsumerThread its getmany uses, around a real aiokafka consumer
    (Faust runs the same calls on its consumer thread)."""

    _ensure_consumer = AIOKafkaConsumerThread._ensure_consumer
    _fetch_records = AIOKafkaConsumerThread._fetch_records

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.consumer = SimpleNamespace(flow_active=True)

    async def call_thread(self, function, *args, **kwargs):
        return await function(*args, **kwargs)


def test_a_fetch_never_returns_partitions_paused_while_it_waits(broker, topic_names):
    """Recovery pauses the last active partitions while a fetch waits: aiokafka must not take the
    emptied set for "every partition" (the paused partitions' records would be dropped by Faust)."""
    internals.fetch_only_active_partitions()
    internals.fetch_only_active_partitions()  # idempotent
    topic = topic_names("fetch")
    ensure_topics(broker.bootstrap, {topic: 2})
    changelog, source = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def scenario() -> tuple[dict, dict, list[bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=50)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([changelog, source])
            await consumer.seek_to_beginning(changelog, source)
            thread = _ConsumerThread(consumer)
            active = {changelog}  # Faust's live set: the source partition is paused during recovery
            fetching = asyncio.ensure_future(AIOKafkaConsumerThread.getmany(thread, active, 20.0))
            await asyncio.sleep(0.5)  # the fetch now waits for records
            active.clear()  # "Done reading from changelog topics": the changelog partition is paused too
            for i in range(5):
                await producer.send_and_wait(topic, f"s{i}".encode(), partition=1)
                await producer.send_and_wait(topic, f"c{i}".encode(), partition=0)
            during = await fetching
            nothing = await AIOKafkaConsumerThread.getmany(thread, set(), 1.0)  # an empty set fetches nothing
            after: list[bytes] = []  # the source partition resumed: its records from the start
            while len(after) < 5:
                fetched = await AIOKafkaConsumerThread.getmany(thread, {source}, 5.0)
                if not fetched:
                    break  # aiokafka's position is past them: they are gone
                after += [r.value for r in fetched[source]]
            return during, nothing, after
        finally:
            await producer.stop()
            await consumer.stop()

    during, nothing, after = asyncio.run(scenario())
    assert source not in during, f"the paused source partition's records were returned: {during[source]}"
    assert nothing == {}
    assert after == [f"s{i}".encode() for i in range(5)]  # none skipped
