"""Each user's sequence: the changelog-backed Faust table, fronted by a cache of decoded histories.

The table (RocksDB or memory, replicated through its changelog topic) is the truth; reading a
user's bytes back and decoding them on every event was most of the worker's state time. The
cache keeps the decoded `UserHistory` of recently seen users (bounded by their stored bytes,
least recently used out) and is emptied on every rebalance: Faust signals a revocation only
once the in-flight batches are acknowledged, and another replica may own a user's partition in
between.

Bound: a user's stored sequence is at most `max_state_bytes` (far under Kafka's default record
limit): one that outgrows it (long ids and categories on every event) is stored without its
oldest events, counted. The event that made it grow was scored on its whole window; the user's
next windows are shorter than an offline replay's.

Writes do what a Faust table assignment does (the local store, a changelog record in the
partition of the event's input partition, the store's persisted offset once delivered), per
partition and micro-batch instead of per key: one RocksDB write batch, one Kafka record batch
(worker/record_batches.py), one persisted offset. Per key, Faust's path costs futures, callbacks and
codecs (once the largest cost of writing state; docs/results.md). The micro-batch is
acknowledged only after its changelog records are delivered.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict

import faust
from aiokafka import AIOKafkaProducer
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP
from prometheus_client import Counter
from rocksdict import WriteBatch

from ecseq.decoding import EventSchema
from ecseq.history import UserHistory
from worker import internals
from worker.record_batches import PartitionBatches, SentBatch

log = logging.getLogger("ecseq.worker")

TABLE = "sequences"


class HistoryTable:
    """Per-user histories: read through the cache, written to the table and the cache together."""

    def __init__(self, app: faust.App, partitions: int, cache_bytes: int, max_state_bytes: int, trimmed: Counter,
                 topic_configs: dict[str, str] | None = None) -> None:
        """``topic_configs``: extra configs of the changelog topic, should Faust create it."""
        # key_type/value_type=bytes is how a Faust Table stores raw bytes
        self.table = app.Table(TABLE, default=None, partitions=partitions, key_type=bytes, value_type=bytes,
                               extra_topic_configs=topic_configs or {})
        self.cache_bytes, self.max_state_bytes, self.trimmed = cache_bytes, max_state_bytes, trimmed
        self._cache: OrderedDict[str, tuple[UserHistory, int]] = OrderedDict()  # user -> (history, stored size)
        self._cached_bytes = 0
        app.on_partitions_revoked.connect(self._forget)
        app.on_partitions_assigned.connect(self._forget)

    def history(self, user: str, schema: EventSchema) -> UserHistory:
        """The user's history: append to it, then `write` it. A cached one is returned itself, not a
        copy (appending to it in place is what keeps its bytes cheap to rewrite, see UserHistory);
        a batch that fails stops the worker, and the cache with it."""
        cached = self._cache.get(user)
        if cached is not None:
            self._cache.move_to_end(user)
            history = cached[0]
            return history if history.schema == schema else history.with_schema(schema)
        stored = self.table.get(user.encode())  # bytes keys, as written here and as recovery restores them
        if stored is None:
            return UserHistory.empty(schema)
        try:
            return UserHistory.from_bytes(stored, schema)
        except ValueError as exc:  # never fatal: the user starts over, loudly
            log.error("unreadable sequence state for user %s (%s); starting it empty", user, exc)
            return UserHistory.empty(schema)

    async def write(self, updates: list[tuple[str, UserHistory, int]], producer: AIOKafkaProducer) -> asyncio.Future:
        """Store each (user, history, partition of its event) in that table (and changelog) partition;
        the returned future is done once the changelog holds them all."""
        changelog = PartitionBatches(producer, self.table.changelog_topic.get_topic_name())
        for partition, group in _by_partition(updates).items():
            stored = [(user, *self._within_limit(user, history)) for user, history, _ in group]
            values = [(user.encode(), value) for user, _, value in stored]
            self._store(partition, values)
            for key, value in values:
                await changelog.append(key, value, partition)
            for user, history, value in stored:
                self._remember(user, history, len(value))
        return asyncio.ensure_future(self._persisted(await changelog.send()))

    def _within_limit(self, user: str, history: UserHistory) -> tuple[UserHistory, bytes]:
        """The history to store and its bytes: without as many oldest events as it takes to fit."""
        value = history.to_bytes()
        if len(value) <= self.max_state_bytes:
            return history, value
        before = len(history)
        while len(value) > self.max_state_bytes and len(history) > 1:
            per_event = len(value) / len(history)
            drop = min(len(history) - 1, math.ceil((len(value) - self.max_state_bytes) / per_event))
            history = history.without_oldest(drop)
            value = history.to_bytes()
        self.trimmed.inc()
        log.warning("user %s: sequence state over %d bytes; stored its newest %d of %d events (%d bytes)",
                    user, self.max_state_bytes, len(history), before, len(value))
        return history, value

    def _remember(self, user: str, history: UserHistory, size: int) -> None:
        previous = self._cache.pop(user, None)
        if previous is not None:
            self._cached_bytes -= previous[1]
        self._cache[user] = (history, size)
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:  # least recently seen out
            self._cached_bytes -= self._cache.popitem(last=False)[1][1]

    def _store(self, partition: int, values: list[tuple[bytes, bytes]]) -> None:
        """Write one partition's values to the local store (what a table assignment does per key)."""
        store = self.table.data
        if isinstance(store, RocksDBStore):
            # one write batch per partition, as Faust's own changelog recovery writes (a put through
            # the table's store costs key/value codecs, a lookup of the current event and a locked
            # key index per key)
            batch = WriteBatch(raw_mode=True)
            for key, value in values:
                batch.put(key, value)
            internals.rocksdb_partition(store, partition).write(batch)
        else:  # the memory store is one dict for every partition
            for key, value in values:
                store[key] = value

    async def _persisted(self, sent: list[SentBatch]) -> None:
        """Record the changelog offsets the local store now holds (what recovery resumes from)."""
        latest: dict[TP, int] = {}
        for batch in sent:
            tp, offset = await batch.last_offset()
            latest[tp] = max(offset, latest.get(tp, -1))
        for tp, offset in latest.items():
            self.table.data.set_persisted_offset(tp, offset)

    async def _forget(self, *_: object, **__: object) -> None:
        self._cache.clear()
        self._cached_bytes = 0


def _by_partition(updates: list[tuple[str, UserHistory, int]]) -> dict[int, list]:
    groups: dict[int, list] = {}
    for update in updates:
        groups.setdefault(update[2], []).append(update)
    return groups

