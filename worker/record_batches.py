"""A micro-batch's outputs to one topic, sent as one Kafka record batch per partition.

aiokafka's per-record `send` costs a coroutine, a delivery future and its callback per record,
more than scoring the event (the figures are in docs/results.md). Its record-batch API appends
each record in C and resolves one future per batch: the records of a micro-batch for one
partition travel in one produce request either way.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from faust.types import TP

if TYPE_CHECKING:  # what producer.create_batch() returns
    from aiokafka.producer.message_accumulator import BatchBuilder


@dataclass(frozen=True)
class SentBatch:
    """One record batch handed to the producer: its delivery gives the first record's offset."""

    records: int
    delivered: asyncio.Future

    async def last_offset(self) -> tuple[TP, int]:
        metadata = await self.delivered
        return metadata.topic_partition, metadata.offset + self.records - 1


class PartitionBatches:
    """Records for `topic`, gathered into one open record batch per partition until `send`."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self._open: dict[int, BatchBuilder] = {}
        self._partitions: int | None = None
        self.sent: list[SentBatch] = []

    async def append(self, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Add a record; with no partition, to the one Faust's producer would pick for its key (the Java
        client's default partitioner)."""
        if partition is None:
            if self._partitions is None:  # waits for the topic's metadata the first time
                self._partitions = len(await self.producer.partitions_for(self.topic))
            partition = _keyed_partition(key, self._partitions)
        batch = self._open.get(partition)
        if batch is None:
            batch = self._open[partition] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            await self._send(partition)
            batch = self._open[partition] = self.producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # a batch always takes its first record

    async def send(self) -> list[SentBatch]:
        """Hand every open batch to the producer; all the batches sent so far."""
        for partition in list(self._open):
            await self._send(partition)
        return self.sent

    async def _send(self, partition: int) -> None:
        batch = self._open.pop(partition)
        delivered = await self.producer.send_batch(batch, self.topic, partition=partition)
        self.sent.append(SentBatch(batch.record_count(), delivered))


@functools.lru_cache(maxsize=100_000)
def _keyed_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions
