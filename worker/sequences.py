"""Each user's sequence: the changelog-backed Faust table, fronted by a cache of decoded histories.

The table (RocksDB or memory, replicated through its changelog topic) is the truth; reading a
user's bytes back and decoding them on every event was ~40% of the worker's state time. The
cache keeps the decoded `UserHistory` of recently seen users (bounded, least recently used out)
and is emptied on every rebalance: Faust signals a revocation only once the in-flight batches
are acknowledged, and another replica may own a user's partition in between.

Writes do what a Faust table assignment does (local store, then a changelog record in the
partition of the event's input partition, then the store's persisted offset once delivered),
without its per-key futures and callbacks (~40 us a key, the largest cost of the state stage),
and the persisted offset is written once per partition and batch instead of once per key.
The batch is acknowledged only after its changelog records are delivered.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import faust
from faust.streams import _current_event  # see _as_current
from faust.types import TP, ProducerT

from ecseq.data.records import EventSchema
from ecseq.history import UserHistory

log = logging.getLogger("ecseq.worker")

TABLE = "sequences"


class SequenceTable:
    """Per-user histories: read through the cache, written to the table and the cache together."""

    def __init__(self, app: faust.App, partitions: int, cache_users: int) -> None:
        # key_type/value_type=bytes is how a Faust Table stores raw bytes
        self.table = app.Table(TABLE, default=None, partitions=partitions, key_type=bytes, value_type=bytes)
        self.cache_users = cache_users
        self._cache: OrderedDict[str, UserHistory] = OrderedDict()
        app.on_partitions_revoked.connect(self._forget)
        app.on_partitions_assigned.connect(self._forget)

    def history(self, user: str, schema: EventSchema) -> UserHistory:
        """The user's history (a private copy: append to it, then `write` it)."""
        cached = self._cache.get(user)
        if cached is not None:
            self._cache.move_to_end(user)
            return cached.copy() if cached.schema == schema else cached.with_schema(schema)
        stored = self.table.get(user)
        if stored is None:
            return UserHistory.empty(schema)
        try:
            return UserHistory.from_bytes(stored, schema)
        except ValueError as exc:  # never fatal: the user starts over, loudly
            log.error("unreadable sequence state for user %s (%s); starting it empty", user, exc)
            return UserHistory.empty(schema)

    async def write(self, updates: list[tuple[str, UserHistory, faust.EventT]], producer: ProducerT) -> asyncio.Future:
        """Store each user's new history in the table (and changelog) partition of its event; the
        returned future is done once the changelog holds them all."""
        store, changelog = self.table.data, self.table.changelog_topic.get_topic_name()
        sent = []
        for user, history, event in updates:
            value = history.to_bytes()
            with _as_current(event):  # the RocksDB store takes the partition from the current event
                store[user] = value
            sent.append(await producer.send(changelog, user.encode(), value, event.message.partition, None, None))
            self._cache[user] = history
            self._cache.move_to_end(user)
        while len(self._cache) > self.cache_users:
            self._cache.popitem(last=False)
        return asyncio.ensure_future(self._persisted(sent))

    async def _persisted(self, sent: list[asyncio.Future]) -> None:
        """Record the changelog offsets the local store now holds (what recovery resumes from)."""
        latest: dict[TP, int] = {}
        for metadata in await asyncio.gather(*sent):
            latest[metadata.topic_partition] = max(metadata.offset, latest.get(metadata.topic_partition, -1))
        for tp, offset in latest.items():
            self.table.data.set_persisted_offset(tp, offset)

    async def _forget(self, *_: object, **__: object) -> None:
        self._cache.clear()


@contextmanager
def _as_current(event: faust.EventT) -> Iterator[None]:
    """Make `event` Faust's current event while writing its user's table entry.

    Faust picks a table write's changelog partition (and RocksDB partition) from the current
    event; in a micro-batch that is the batch's last event, whatever partition the user is on.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
