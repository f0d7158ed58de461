"""Where a rebuild's labelled sequences come from: an event file, or Kafka's events + late labels.

Both sources skip bad rows instead of failing (a rebuild must survive what production sends)
and count every skipped row under a reason, so the report and the metrics show what was lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ecseq.data.cleaning import BAD_LABEL, MISSING_FIELD, drop_bad_rows
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
from ecseq.decoding import (
    BAD_JSON,
    EMPTY,
    NOT_OBJECT,
    TOMBSTONE,
    EventSchema,
    decode_event,
    json_object,
)

if TYPE_CHECKING:
    from kafka_io.client import KafkaClientConfig

UNKNOWN_EVENT = "unknown_event"  # a label for an event id the events topic does not hold
UNKNOWN_USER = "unknown_user"  # a label whose user_id is not the user of its event
_LABEL_VALUES = {0: 0.0, 1: 1.0, "0": 0.0, "1": 1.0}
# The builder has always counted these as bad_json; other decode_event reasons are reported as they are.
_AS_BAD_JSON = {TOMBSTONE: BAD_JSON, EMPTY: BAD_JSON, NOT_OBJECT: BAD_JSON}


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


def read_kafka(kafka: KafkaClientConfig, events_topic: str, labels_topic: str, numeric: Sequence[str],
               categorical: Sequence[str], since: float | None = None) -> Gathered:
    """The events on `events_topic` joined with their latest labels from `labels_topic`.

    With `since` (seconds), both topics are read from their first records stamped within the last
    `since` seconds, so a rebuild reads the window, not the topics' whole length; the event-time
    window then applies as for a file. A label whose event was stamped before that is counted as
    an unknown event.
    """
    started = None if since is None else time.time() - since
    event_rows, skipped_events = _decode_events(_read(kafka, events_topic, started), numeric, categorical)
    frame = pd.DataFrame(event_rows, columns=[EVENT_ID, USER, TS, *numeric, *categorical])
    frame, more = drop_bad_rows(frame, numeric)
    skipped_events.update(more)
    labels, skipped_labels = _decode_labels(_read(kafka, labels_topic, started), frame)
    frame[LABEL] = frame[EVENT_ID].astype(str).map(labels).astype("float64")
    where = f"kafka {kafka.bootstrap} topics {events_topic} + {labels_topic}"
    return Gathered(_table(_within(frame, since), categorical, where), where,
                    {"events": skipped_events, "labels": skipped_labels})


def _read(kafka: KafkaClientConfig, topic: str, since: float | None) -> list:
    """A topic from its records stamped at `since` (epoch seconds; None: all of it); an unreachable or
    failing broker is one line for the operator.

    Kafka is imported here, not at the top: file builds never need it.
    """
    from aiokafka.errors import KafkaError

    from kafka_io.errors import BrokerError
    from kafka_io.topics import read_topic

    try:
        return read_topic(kafka, topic, since=since)
    except BrokerError as exc:  # names the cause (refused credentials, untrusted CA, ...)
        raise DataError(f"cannot read topic {topic}: {exc}") from None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise DataError(f"cannot read topic {topic} from Kafka at {kafka.bootstrap}: {exc}") from None


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


def _decode_events(records, numeric: Sequence[str], categorical: Sequence[str]) -> tuple[list[tuple], Counter]:
    """Rows (event_id, user_id, ts, *numeric, *categorical) of the events the worker would accept too."""
    schema = EventSchema(tuple(numeric), tuple(categorical))
    rows, skipped = [], Counter()
    for record in records:
        event = decode_event(record.value, schema)
        if isinstance(event, str):
            skipped[_AS_BAD_JSON.get(event, event)] += 1
            continue
        rows.append((event.event_id, event.user_id, event.ts, *event.numeric, *event.categorical))
    return rows, skipped


def _is_label(value) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool) and value in _LABEL_VALUES


def _decode_labels(records, events: pd.DataFrame) -> tuple[dict[str, float], Counter]:
    """event_id -> label (the latest record wins: labels may be corrected later)."""
    user_of = dict(zip(events[EVENT_ID].astype(str), events[USER].astype(str)))
    labels, skipped = {}, Counter()
    for record in records:
        value = json_object(record.value, max_bytes=None)
        if isinstance(value, str):
            skipped[BAD_JSON] += 1
        elif any(value.get(name) is None for name in (EVENT_ID, USER, LABEL)):
            skipped[MISSING_FIELD] += 1
        elif not _is_label(value[LABEL]):
            skipped[BAD_LABEL] += 1
        elif str(value[EVENT_ID]) not in user_of:
            skipped[UNKNOWN_EVENT] += 1
        elif user_of[str(value[EVENT_ID])] != str(value[USER]):
            skipped[UNKNOWN_USER] += 1
        else:
            labels[str(value[EVENT_ID])] = _LABEL_VALUES[value[LABEL]]
    return labels, skipped
