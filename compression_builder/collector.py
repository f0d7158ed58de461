"""From the events and labels topics' records to the window store's samples; knows nothing of Kafka.

Per user it keeps the recent events in the worker's history format, with the order they arrived in,
so a label, however late, gets the window its event had when the worker scored it: the last L
events up to the event, among those that had arrived by then (a later event stamped earlier was
not in it). Events leave once no label can come for them any more (their Kafka timestamp is more
than the label horizon before the newest label's), keeping the L - 1 before the oldest that can.

A label's time is its record's Kafka timestamp, an event's the same: a label counts if it came
within the horizon of its event. A label that comes before its event waits for it (the two topics
are read side by side, so either may run ahead); one whose event never comes within the horizon is
counted as an unknown event, as is one naming another user than its event's. The latest label of
an event wins. Bad records are counted by
reason, never raised: the follower must survive what production sends.
"""

from __future__ import annotations

import itertools
import json
import struct
import sys
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from compression_builder.window_store import Flush, Sample, WindowStore
from ecseq.decoding import (
    BAD_JSON,
    MAX_EVENT_BYTES,
    MISSING_FIELD,
    Event,
    EventSchema,
    as_text,
    decode_event,
    json_object,
)
from ecseq.fields import EVENT_ID, LABEL, USER
from ecseq.history import MAX_LIMIT, NOT_KEPT, UserHistory

EVENTS, LABELS = "events", "labels"  # the two kinds of input, as counts and reports name them
BAD_LABEL = "bad_label"  # a label that is not 0 or 1
UNKNOWN_EVENT = "unknown_event"  # no event with this id came for this user within the horizon
AFTER_HORIZON = "after_horizon"  # a label that came more than the horizon after its event
DUPLICATE = "duplicate_event"  # an event id already held with the same content (a producer's retry)
ID_REUSED = "id_reused"  # an event id already held with other content
TOO_LATE = "too_late"  # older than every event of a full history
_LABEL_VALUES = {0: 0, 1: 1, "0": 0, "1": 1}
CACHED_USERS = 50_000  # decoded users kept between flushes (~6 KB each with a window of 50)
Source = tuple[str, int]  # where records were read: (topic, partition)
NO_SOURCE: Source = ("", 0)  # records from one place (a test, a replay)


def decode_label(raw: bytes | None) -> tuple[str, str, int] | str:
    """(event_id, user_id, label) of a label record, or the reason it is refused."""
    value = json_object(raw, max_bytes=None)
    if isinstance(value, str):
        return BAD_JSON
    if any(value.get(name) is None for name in (EVENT_ID, USER, LABEL)):
        return MISSING_FIELD
    label = value[LABEL]
    if isinstance(label, bool) or not isinstance(label, (int, float, str)) or label not in _LABEL_VALUES:
        return BAD_LABEL
    return as_text(value[EVENT_ID]), as_text(value[USER]), _LABEL_VALUES[label]  # ids as events' are


@dataclass(frozen=True)
class Flushed:
    """What one flush wrote: the offsets to resume from, records refused by (kind, reason), samples
    dropped by (cause, label)."""

    offsets: dict[tuple[str, int], int]
    counts: Counter
    dropped: Counter


class UserEvents:
    """One user's recent events (a UserHistory, in time order) with each one's arrival number and
    Kafka timestamp. Bytes: I history length | history | n x q arrivals | n x q timestamps."""

    __slots__ = ("arrivals", "history", "pending", "published")

    def __init__(self, history: UserHistory, arrivals: list[int], published: list[int], pending: int = 0) -> None:
        self.history, self.arrivals, self.published = history, arrivals, published
        self.pending = pending  # events a label can still come for, as the store last counted them

    @classmethod
    def empty(cls, schema: EventSchema) -> UserEvents:
        return cls(UserHistory.empty(schema), [], [])

    @classmethod
    def from_bytes(cls, data: bytes, schema: EventSchema, pending: int = 0) -> UserEvents:
        (size,) = struct.unpack_from("<I", data)
        history = UserHistory.from_bytes(data[4:4 + size], schema)
        rest = array("q", data[4 + size:])
        if sys.byteorder != "little":
            rest.byteswap()
        if len(rest) != 2 * len(history):
            raise ValueError("corrupt user events: arrivals do not match the history")
        return cls(history, rest[:len(history)].tolist(), rest[len(history):].tolist(), pending)

    def to_bytes(self) -> bytes:
        history = self.history.to_bytes()
        rest = array("q", self.arrivals + self.published)
        if sys.byteorder != "little":
            rest.byteswap()
        return struct.pack("<I", len(history)) + history + rest.tobytes()

    def add(self, event: Event, arrival: int, published_ms: int) -> str | None:
        """Keep `event`; None, or why it was not kept (DUPLICATE, ID_REUSED, TOO_LATE)."""
        if event.event_id in self.history:
            return DUPLICATE if self.history.holds(event) else ID_REUSED
        before = len(self.history)
        position = self.history.append(event, MAX_LIMIT)
        if position == NOT_KEPT:
            return TOO_LATE
        dropped = before + 1 - len(self.history)
        at = position + dropped  # where it went before the oldest were dropped
        self.arrivals.insert(at, arrival)
        self.published.insert(at, published_ms)
        if dropped:
            del self.arrivals[:dropped], self.published[:dropped]
        return None

    def window(self, position: int, length: int) -> tuple[bytes, float]:
        """The window of the event at `position` as history bytes (the last `length` events up to it
        among those that had arrived by then), and its time."""
        return self.history.selected_bytes(self._window_positions(position, length)), self.history.ts_at(position)

    def _window_positions(self, position: int, length: int) -> Sequence[int]:
        """Positions of the event's window: the last `length` up to it that had arrived by then."""
        first = max(0, position + 1 - length)
        arrival = self.arrivals[position]
        if max(self.arrivals[first:position + 1]) == arrival:  # none of them came later: the usual case
            return range(first, position + 1)
        positions = []
        for i in range(position, -1, -1):
            if self.arrivals[i] <= arrival:
                positions.append(i)
                if len(positions) == length:
                    break
        return positions[::-1]

    def prune(self, labelled_from_ms: int, length: int) -> tuple[int, int]:
        """Forget events no label can come for, but the L - 1 before the oldest one that can, any
        further back that a window of one that can holds (a late event it did not see sits in between),
        and the last L - 1 (the context of the next events); returns the events a label can still come
        for, and the events forgotten."""
        can = [i for i, published in enumerate(self.published) if published >= labelled_from_ms]
        keep = (can[0] if can else len(self.published)) - (length - 1)
        if any(a > b for a, b in zip(self.arrivals, self.arrivals[1:])):  # a late event: windows skip it, so
            keep = min([keep, *(self._window_positions(i, length)[0] for i in can)])  # may reach further back
        drop = max(0, keep)
        if drop:
            self.history.drop_oldest(drop)
            del self.arrivals[:drop], self.published[:drop]
        return len(can), drop


class Collector:
    """Applies records in the order the follower reads them and stages a `Flush` for the store."""

    def __init__(self, store: WindowStore, schema: EventSchema, window: int, horizon_ms: int,
                 since: float | None, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.store, self.schema, self.window = store, schema, window
        self.horizon_ms, self.since, self.max_event_bytes = horizon_ms, since, max_event_bytes
        self.arrival = int(store.meta("arrivals") or 0)
        self.newest_ts = store.newest_ts()
        # per kind, per source (a topic partition) the newest Kafka timestamp read there
        self.newest_ms: dict[str, dict[str, int]] = json.loads(store.meta("newest_ms") or "null") or {
            EVENTS: {}, LABELS: {}}
        self.records = 0  # applied since the last flush
        self._flush = Flush()
        # Decoded users, least recently used first: the store's state plus the staged changes. Kept
        # across flushes (up to CACHED_USERS), so an active user's next records skip a read and decode.
        self._users: dict[str, UserEvents] = {}
        self._touched: set[str] = set()  # users with records since the last flush
        self._changed: set[str] = set()  # ... whose events changed: written at the flush

    def events(self, records: Iterable[tuple[bytes | None, int]], source: Source = NO_SOURCE) -> None:
        """(value, Kafka timestamp in ms) of event records, in the order they were read from `source`."""
        decoded = []
        for value, published_ms in records:
            self.records += 1
            event = decode_event(value, self.schema, self.max_event_bytes)
            if isinstance(event, str):
                self._flush.counts[EVENTS, event] += 1
            else:
                decoded.append((event, published_ms))
        self._load(event.user_id for event, _ in decoded)
        early = self.store.early((e.event_id, e.user_id) for e, _ in decoded
                                 if self.store.has_early((e.event_id, e.user_id)))
        for event, published_ms in decoded:
            self.arrival += 1
            refused = self._users[event.user_id].add(event, self.arrival, published_ms)
            if refused is not None:
                self._flush.counts[EVENTS, refused] += 1
                continue
            self._changed.add(event.user_id)
            self._seen(EVENTS, source, published_ms)
            self.newest_ts = event.ts if self.newest_ts is None else max(self.newest_ts, event.ts)
            key = (event.event_id, event.user_id)
            waiting = self._flush.early.pop(key, None) or early.get(key)
            if waiting is not None:
                self._flush.early_done.add(key)
                self._sample(event.event_id, event.user_id, *waiting)

    def labels(self, records: Iterable[tuple[bytes | None, int]], source: Source = NO_SOURCE) -> None:
        """(value, Kafka timestamp in ms) of label records, in the order they were read from `source`."""
        decoded = []
        for value, labelled_ms in records:
            self.records += 1
            label = decode_label(value)
            if isinstance(label, str):
                self._flush.counts[LABELS, label] += 1
            else:
                decoded.append((label, labelled_ms))
        self._load(user_id for (_, user_id, _), _ in decoded)
        for (event_id, user_id, label), labelled_ms in decoded:
            self._seen(LABELS, source, labelled_ms)
            if not self._sample(event_id, user_id, label, labelled_ms):
                self._flush.early[event_id, user_id] = (label, labelled_ms)  # the latest one waits
                self._flush.early_done.discard((event_id, user_id))

    def _sample(self, event_id: str, user_id: str, label: int, labelled_ms: int) -> bool:
        """Stage the event's sample; False if this user holds no such event (yet)."""
        events = self._users[user_id]
        position = events.history.position(event_id)
        if position is None:
            return False
        published_ms = events.published[position]
        if labelled_ms - published_ms > self.horizon_ms:
            self._flush.counts[LABELS, AFTER_HORIZON] += 1
        elif not self.store.admits(event_id, label):
            self._flush.dropped["cap", label] += 1
            self._flush.samples.pop(event_id, None)  # an earlier label of this flush is replaced too
        else:
            window, ts = events.window(position, self.window)
            self._flush.samples[event_id] = Sample(event_id, user_id, ts, label, published_ms, labelled_ms, window)
        return True

    def consumed(self, topic: str, partition: int, next_offset: int) -> None:
        """Where to resume `topic`/`partition` once the records applied so far are flushed."""
        self._flush.offsets[topic, partition] = next_offset

    def reads(self, kind: str, source: Source) -> None:
        """Say that `source` holds records of `kind`: until it is read to its end, its timestamps hold
        pruning back (a partition not fetched yet may hold labels for events held now)."""
        self.newest_ms[kind].setdefault(f"{source[0]}/{source[1]}", -1)

    def _seen(self, kind: str, source: Source, ms: int) -> None:
        newest = self.newest_ms[kind]
        key = f"{source[0]}/{source[1]}"
        if ms > newest.get(key, -1):
            newest[key] = ms

    def watermark(self, kind: str, idle: Collection[Source] = ()) -> int:
        """How far `kind` has been read, in Kafka time: the newest timestamp of its least advanced
        source, not counting `idle` ones (at their end: nothing more is pending there). Pruning and
        expiry go by it, so a source read behind the others does not lose its labels' events."""
        newest = self.newest_ms[kind]
        skip = {f"{topic}/{partition}" for topic, partition in idle}
        moving = [ms for key, ms in newest.items() if key not in skip]
        return min(moving) if moving else max(newest.values(), default=0)

    def flush(self, settle: bool = False, idle: Collection[Source] = ()) -> Flushed:
        """Write the staged changes in one store transaction; `settle`: no more records will come
        (a one-off build), so labels still waiting for their event are unknown events now; `idle`:
        the sources read to their end."""
        flush, self._flush = self._flush, Flush()
        labelled_from = self.watermark(LABELS, idle) - self.horizon_ms
        for user_id in self._touched:
            events = self._users[user_id]
            pending, dropped = events.prune(labelled_from, self.window)
            if dropped or user_id in self._changed:
                flush.users[user_id] = (events.to_bytes(), pending)
            elif pending != events.pending:
                flush.pending[user_id] = pending
            flush.pending_change += pending - events.pending
            events.pending = pending
        self._touched, self._changed = set(), set()
        flush.early_expire_before_ms = (1 << 62) if settle else self.watermark(EVENTS, idle) - self.horizon_ms
        if self.since is not None and self.newest_ts is not None:
            flush.retain_from = self.newest_ts - self.since
        flush.meta.update(arrivals=str(self.arrival), newest_ms=json.dumps(self.newest_ms))
        if self.newest_ts is not None:
            flush.meta["newest_ts"] = repr(self.newest_ts)
        self.records = 0
        dropped = self.store.commit(flush)
        self._evict()
        return Flushed(flush.offsets, flush.counts, dropped)

    def _load(self, user_ids: Iterable[str]) -> None:
        """Put these users last in the cache, reading from the store those not in it."""
        missing = set()
        for user_id in user_ids:
            if user_id not in self._touched:
                self._touched.add(user_id)
                events = self._users.pop(user_id, None)
                if events is None:
                    missing.add(user_id)
                else:
                    self._users[user_id] = events
        for user_id, (data, pending) in self.store.users(missing).items():
            self._users[user_id] = UserEvents.from_bytes(data, self.schema, pending)
        for user_id in missing.difference(self._users):
            self._users[user_id] = UserEvents.empty(self.schema)

    def _evict(self) -> None:
        """Forget the least recently used users above CACHED_USERS (all written by now)."""
        for user_id in list(itertools.islice(self._users, max(0, len(self._users) - CACHED_USERS))):
            del self._users[user_id]
