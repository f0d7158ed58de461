"""Where a rebuild's labelled sequences come from: an event file, or the window store that follows
Kafka's events and late labels (kept by the builder service, or filled for one build).

Both skip bad rows instead of failing (a rebuild must survive what production sends) and count
every skipped row under a reason, so the report and the metrics show what was lost.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from compression_builder.collector import EVENTS, LABELS, Collector
from compression_builder.window_store import Caps, Sample, WindowStore
from ecseq.data.cleaning import drop_bad_rows
from ecseq.data.events import (
    EVENT_ID,
    LABEL,
    RESERVED,
    TS,
    USER,
    DataError,
    EventTable,
    events_from_frame,
    parse_timestamps,
    read_frame,
)
from ecseq.decoding import EventSchema
from ecseq.history import UserHistory

if TYPE_CHECKING:
    from kafka_io.client import KafkaClientConfig



@dataclass
class Gathered:
    """The labelled event table of one rebuild and what was skipped to get it."""

    table: EventTable
    source: str
    skipped: dict[str, Counter] = field(default_factory=dict)  # "events" / "labels" -> reason -> rows

    def skipped_total(self) -> int:
        return sum(sum(c.values()) for c in self.skipped.values())


def read_event_file(path, categorical: Sequence[str] = (), numeric: Sequence[str] | None = None,
                    since: float | None = None) -> Gathered:
    """An event file in the ecseq event format; `numeric=None` infers numeric columns from their types."""
    return gather_frame(read_frame(path, categorical), categorical, numeric, since, f"events file {path}")


def gather_frame(frame: pd.DataFrame, categorical: Sequence[str], numeric: Sequence[str] | None,
                 since: float | None, where: str) -> Gathered:
    """Raw event rows (a file's, a built-in data set's) -> the rebuild's table, bad rows skipped."""
    if numeric is None:
        numeric = [c for c in frame.columns if c not in RESERVED and c not in categorical
                   and pd.api.types.is_numeric_dtype(frame[c])]
    _require_columns(frame.columns, [USER, TS, LABEL], where, "required")
    _require_columns(frame.columns, [*numeric, *categorical], where, "feature")
    frame, skipped = drop_bad_rows(frame, numeric)
    return Gathered(_table(_within(frame, since), categorical, where), where, {"events": skipped})


def read_kafka(kafka: KafkaClientConfig, events_topic: str, labels_topic: str, schema: EventSchema, window: int,
               since: float | None, horizon: float, caps: Caps) -> Gathered:
    """A one-off build's samples: both topics read as the builder service follows them, into a window
    store of its own (a temporary directory), from their records stamped within the last `since`
    seconds (None: all of them)."""
    from compression_builder.follower import Follower
    from kafka_io.errors import BrokerError

    where = f"kafka {kafka.bootstrap} topics {events_topic} + {labels_topic}"
    with tempfile.TemporaryDirectory(prefix="ecseq-window-") as tmp:
        store = WindowStore(tmp, caps)
        try:
            collector = Collector(store, schema, window, int(horizon * 1000), since)
            try:
                Follower(kafka, events_topic, labels_topic, collector, group=None, since=since).catch_up()
            except BrokerError as exc:  # names the cause (refused credentials, untrusted CA, ...)
                raise DataError(f"cannot read {events_topic} + {labels_topic}: {exc}") from None
            except (OSError, TimeoutError) as exc:
                raise DataError(f"cannot read {events_topic} + {labels_topic} from Kafka at {kafka.bootstrap}: "
                                f"{exc}") from None
            gathered = read_window_store(store, schema, window, since, where)
            for (kind, reason), records in store.counts().items():  # a service's follower counts these itself
                gathered.skipped.setdefault(kind, Counter())[reason] += records
            return gathered
        finally:
            store.close()


def read_window_store(store: WindowStore, schema: EventSchema, window: int, since: float | None,
                      where: str) -> Gathered:
    """The store's samples within `since` of its newest event, as the table a rebuild reads."""
    newest = store.newest_ts()
    samples = store.samples(None if since is None or newest is None else newest - since)
    return Gathered(samples_table(samples, schema, window, where), where, {EVENTS: Counter(), LABELS: Counter()})


def samples_table(samples: Sequence[Sample], schema: EventSchema, window: int, where: str) -> EventTable:
    """Samples as an event table whose windows are theirs: a user's samples share one run of rows
    while each window continues the run (as with in-order events, unlabelled events between them
    becoming context rows), else a sample starts a run of its own (an event that arrived out of
    time order saw other events before it).

    Users in user id order, each one's samples by time, ties in arrival order, as an event file's
    table: a rebuild from the same events and labels reads the same rows in the same order.
    """
    if not samples:
        raise DataError(f"{where}: no labelled samples in the window")
    columns: dict[str, list] = {USER: [], TS: [], LABEL: [], EVENT_ID: [],
                                **{name: [] for name in schema.numeric + schema.categorical}}
    user_start: list[int] = []
    run: list[str] = []
    run_user, run_start = None, 0
    for sample, history in _in_table_order(samples, schema):
        ids = list(history.event_ids)
        shared = _continues(run, ids, window) if run_user == sample.user_id else 0
        if not shared:
            run, run_user, run_start = [], sample.user_id, len(user_start)
        for position in range(shared, len(ids)):
            event = history.event(position)
            columns[USER].append(event.user_id)
            columns[TS].append(event.ts)
            columns[LABEL].append(float(sample.label) if position == len(ids) - 1 else np.nan)
            columns[EVENT_ID].append(event.event_id)
            for name, value in zip(schema.numeric, event.numeric, strict=True):
                columns[name].append(value)
            for name, text in zip(schema.categorical, event.categorical, strict=True):
                columns[name].append(np.nan if text is None else text)
            user_start.append(run_start)
            run.append(event.event_id)
    frame = pd.DataFrame({name: pd.Series(values, dtype=object if name in (USER, EVENT_ID, *schema.categorical)
                                          else "float64") for name, values in columns.items()})
    return EventTable(frame, schema.numeric, schema.categorical, np.asarray(user_start, dtype=np.int64))


def _continues(run: list[str], ids: list[str], window: int) -> int:
    """How many of a window's events the run already ends with (0: none, or the window cannot be the
    run's last rows): the window's events up to the run's last one must be the run's tail, and a
    window shorter than `window` must be the whole run."""
    if not run or run[-1] not in ids[:-1]:
        return 0
    shared = ids.index(run[-1]) + 1
    if run[-shared:] != ids[:shared] or (len(ids) < window and len(run) != shared):
        return 0
    return shared


def _in_table_order(samples: Sequence[Sample], schema: EventSchema) -> list[tuple[Sample, UserHistory]]:
    """(sample, its window) by user id, then time; samples of one user at the same time in arrival
    order, which their windows tell: a later one's window holds the earlier ones (the worker's
    history orders ties by arrival)."""
    ordered = sorted(((s, UserHistory.from_bytes(s.window, schema)) for s in samples),
                     key=lambda pair: (pair[0].user_id, pair[0].ts, pair[0].published_ms, pair[0].event_id))
    out: list[tuple[Sample, UserHistory]] = []
    for _, group in groupby(ordered, key=lambda pair: (pair[0].user_id, pair[0].ts)):
        tied = list(group)
        if len(tied) > 1:
            ids = {sample.event_id for sample, _ in tied}
            tied.sort(key=lambda pair: len(ids.intersection(pair[1].event_ids)))  # stable: else as before
        out.extend(tied)
    return out


def _require_columns(present, needed: Sequence[str], where: str, kind: str) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(f"{where} lacks {kind} column(s) {', '.join(missing)}")


def _within(frame: pd.DataFrame, since: float | None) -> pd.DataFrame:
    """Only the events of the last `since` seconds of event time (relative to the newest event)."""
    if since is None or frame.empty:
        return frame
    ts = parse_timestamps(frame[TS]).to_numpy()
    return frame[ts >= np.nanmax(ts) - since].reset_index(drop=True)


def _table(frame: pd.DataFrame, categorical: Sequence[str], where: str) -> EventTable:
    if frame.empty:
        raise DataError(f"{where}: no usable events")
    if LABEL not in frame.columns or not frame[LABEL].notna().any():
        raise DataError(f"{where}: no labelled events in the window")
    return events_from_frame(frame, categorical, source="events")
