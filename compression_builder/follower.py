"""The builder's follower: the events and labels topics, read continuously into the window store.

It reads every partition of both topics (one builder serves all worker replicas) in its own
consumer group, and looks every minute for partitions added since it started. Where to resume is
the window store's: the offsets are written in the same transaction as the state they produced, so
a killed follower neither loses nor repeats a record. The group's committed offsets follow each
flush, for the lag a Kafka operator watches; a store that is new or lost starts from the records
stamped within the window (`now - since`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from compression_builder.collector import EVENTS, LABELS, Collector
from kafka_io.client import KafkaClientConfig
from kafka_io.topics import first_offsets, partition_counts

if TYPE_CHECKING:
    from compression_builder.metrics import BuilderMetrics

log = logging.getLogger("ecseq.builder")

FLUSH_RECORDS = 100_000  # ... or after this many records, whichever comes first
FETCH_RECORDS = 5_000  # records taken from the consumer at once
TOPICS_POLL = 5.0  # seconds between looks for topics that do not exist yet
PARTITIONS_POLL = 60.0  # seconds between looks for partitions added to the topics while following


class Follower:
    def __init__(self, kafka: KafkaClientConfig, events_topic: str, labels_topic: str, collector: Collector,
                 group: str | None, since: float | None, flush_every: float = 5.0,
                 metrics: BuilderMetrics | None = None, caught_up: threading.Event | None = None) -> None:
        self.kafka, self.collector, self.group, self.since = kafka, collector, group, since
        self.caught_up = caught_up  # set once the follower has read up to where the topics ended at its start
        self.kinds = {events_topic: EVENTS, labels_topic: LABELS}
        self.flush_every, self.metrics = flush_every, metrics
        self.ingested: Counter = Counter()  # records read, by kind (events, labels)

    def run(self, stop: threading.Event) -> None:
        """Follow until `stop` is set, then flush what was read."""
        asyncio.run(self._follow(stop, until_end=False))

    def catch_up(self) -> None:
        """Read both topics up to their end offsets as of now, then flush (a one-off build)."""
        asyncio.run(self._follow(threading.Event(), until_end=True))

    async def _follow(self, stop: threading.Event, until_end: bool) -> None:
        # The collector makes objects by the million; without this, every full collection of the
        # garbage collector would walk all the process holds already (its modules, the serving model).
        gc.freeze()
        kwargs = self.kafka.aiokafka()
        consumer = AIOKafkaConsumer(**kwargs, group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        try:
            await self.kafka.check(kwargs=kwargs)
            await consumer.start()
            tps = await self._partitions(stop, wait=not until_end)
            if not tps:
                return
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)
            await self._seek(consumer, tps, end, once=until_end)
            started = flushed = looked = time.monotonic()
            behind = True
            while not stop.is_set():
                if not behind and time.monotonic() - looked >= PARTITIONS_POLL:
                    tps, looked = await self._added(consumer, tps), time.monotonic()
                if behind and all([await consumer.position(tp) >= end[tp] for tp in tps]):
                    behind = False
                    await self._flush(consumer)
                    log.info("window store caught up: %d events and %d labels read in %.1f s",
                             self.ingested[EVENTS], self.ingested[LABELS], time.monotonic() - started)
                    if self.caught_up is not None:
                        self.caught_up.set()
                    if until_end:
                        break
                for tp, messages in (await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)).items():
                    self._apply(tp, messages)
                if self.metrics is not None:
                    for tp in tps:
                        lag = await _lag(consumer, tp)
                        if lag is not None:
                            self.metrics.follow_lag.labels(tp.topic, str(tp.partition)).set(lag)
                if self.collector.records >= FLUSH_RECORDS or time.monotonic() - flushed >= self.flush_every:
                    await self._flush(consumer)
                    flushed = time.monotonic()
            await self._flush(consumer, settle=until_end)
        finally:
            await consumer.stop()

    async def _partitions(self, stop: threading.Event, wait: bool) -> list[TopicPartition]:
        """Every partition of both topics; a service waits for topics not created yet."""
        said = False
        while True:
            counts = await partition_counts(self.kafka)
            missing = [topic for topic in self.kinds if not counts.get(topic)]
            if not missing or not wait or stop.is_set():
                return [TopicPartition(topic, p) for topic in self.kinds for p in range(counts.get(topic, 0))]
            if not said:
                log.info("waiting for topic(s) %s on %s", ", ".join(missing), self.kafka.bootstrap)
                said = True
            await asyncio.sleep(TOPICS_POLL)

    async def _added(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> list[TopicPartition]:
        """Also follow the partitions added to the topics since the start, from their beginning (all
        their records came after it); returns every partition followed."""
        counts = await partition_counts(self.kafka)
        new = [TopicPartition(topic, p) for topic in self.kinds for p in range(counts.get(topic, 0))
               if TopicPartition(topic, p) not in tps]
        if not new:
            return tps
        positions = {tp: await consumer.position(tp) for tp in tps}
        consumer.assign(tps + new)  # a new assignment forgets every position: all are set again here
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        first = await consumer.beginning_offsets(new)
        for tp in new:
            consumer.seek(tp, first[tp])
            self.collector.consumed(tp.topic, tp.partition, first[tp])
            self.collector.reads(self.kinds[tp.topic], (tp.topic, tp.partition))
        log.info("following %d partition(s) added since the start: %s", len(new),
                 ", ".join(f"{tp.topic}/{tp.partition}" for tp in new))
        return tps + new

    async def _seek(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], end: dict, once: bool) -> None:
        """Resume where the store's last flush ended; a new or lost store starts at `now - since`.
        `once`: a one-off build, whose store always starts empty (news only to a service)."""
        store = self.collector.store
        resume = store.offsets()
        start = None if resume or self.since is None else time.time() - self.since
        if resume:
            log.info("following %s from the window store's offsets", " and ".join(self.kinds))
        else:
            lost = self.group is not None and any([await consumer.committed(tp) is not None for tp in tps])
            log.log(logging.INFO if once else logging.WARNING,
                    "window store %s is %s: rebuilding it from the topics' records %s", store.root,
                    "lost (its consumer group has committed offsets)" if lost else "empty",
                    "from the start" if start is None else f"stamped since {_iso(start)}")
        first = await first_offsets(consumer, [tp for tp in tps if (tp.topic, tp.partition) not in resume],
                                    start, end)
        for tp in tps:
            offset = resume.get((tp.topic, tp.partition), first.get(tp, 0))
            consumer.seek(tp, offset)
            self.collector.consumed(tp.topic, tp.partition, offset)  # every partition's place is kept
            self.collector.reads(self.kinds[tp.topic], (tp.topic, tp.partition))

    def _apply(self, tp: TopicPartition, messages: list) -> None:
        kind = self.kinds[tp.topic]
        records = [(m.value, m.timestamp) for m in messages]
        if kind == EVENTS:
            self.collector.events(records, (tp.topic, tp.partition))
        else:
            self.collector.labels(records, (tp.topic, tp.partition))
        self.collector.consumed(tp.topic, tp.partition, messages[-1].offset + 1)
        self.ingested[kind] += len(messages)
        if self.metrics is not None:
            self.metrics.follow_records.labels(kind).inc(len(messages))

    async def _flush(self, consumer: AIOKafkaConsumer, settle: bool = False) -> None:
        idle = [(tp.topic, tp.partition) for tp in consumer.assignment() if await _lag(consumer, tp) == 0]
        flushed = self.collector.flush(settle, idle)
        if self.group is not None and flushed.offsets:
            await consumer.commit({TopicPartition(t, p): n for (t, p), n in flushed.offsets.items()})
        if self.metrics is not None:
            self.metrics.observe_flush(flushed, self.collector.store.stats())


async def _lag(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """Records between the position and the partition's end; None until fetched (no end known yet:
    such a partition is behind, not idle)."""
    end = consumer.highwater(tp)
    return None if end is None else max(0, end - await consumer.position(tp))


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")
