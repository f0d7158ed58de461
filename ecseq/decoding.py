"""One validator for JSON events, shared by the stream worker and the compression builder.

An event on the wire is a UTF-8 JSON object with ``event_id``, ``user_id``, ``ts`` and one field
per feature column. :func:`decode_event` turns its bytes into a normalised :class:`Event`, or
says in one word why it cannot: the reason strings below are the ones dead letters, builder
reports and metric labels use. The normalisation matches the event-table reader
(``ecseq.data.events``), so an event decoded here and the same event read from a file give the
same ids, timestamp and feature values:

- ids are text: strings as sent, integral numbers without a fractional part (``7`` and ``7.0``
  are both ``"7"``, like the reader's integral float columns), other numbers as Python prints them;
  ids and categories are at most MAX_TEXT_CHARS characters (state is kept per user and per event);
- every text is valid Unicode: JSON's ``"\ud800"`` escape (a lone UTF-16 surrogate) parses in
  Python but cannot be written as UTF-8 (to a key, a changelog, a file), so it is refused;
- ``ts`` is epoch seconds: numbers as sent, text parsed like ``parse_timestamps`` (ISO-8601, UTC
  when no zone is given; numeric text as a number);
- a JSON ``null`` feature value is a missing value (NaN for a numeric, ``None`` for a categorical),
  which the feature spec's missing indicator / out-of-vocabulary slot handles: it is not an error.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from ecseq.features import FeatureSpec
from ecseq.fields import BAD_TIMESTAMP, BAD_TYPE, EVENT_ID, MISSING_FIELD, NON_FINITE, TS, USER

MAX_EVENT_BYTES = 64 * 1024
MAX_TEXT_CHARS = 256  # an id or a category

# Why an event was refused (alongside MISSING_FIELD, BAD_TYPE, NON_FINITE, BAD_TIMESTAMP).
TOMBSTONE = "tombstone"  # no value at all (a Kafka record with a null value)
EMPTY = "empty"  # zero bytes
OVERSIZE = "oversize"  # more than max_bytes
BAD_JSON = "bad_json"  # not UTF-8, not JSON, or text that is not valid Unicode (a lone surrogate)
NOT_OBJECT = "not_object"  # JSON, but not an object
LONG_TEXT = "long_text"  # an id or a category longer than MAX_TEXT_CHARS
REASONS = (TOMBSTONE, EMPTY, OVERSIZE, BAD_JSON, NOT_OBJECT, MISSING_FIELD, BAD_TYPE, NON_FINITE, LONG_TEXT,
           BAD_TIMESTAMP)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ISO-8601 text that datetime.fromisoformat reads exactly as pandas does (at most microseconds);
# anything else goes through parse_timestamps itself, so both readers always agree.
_PLAIN_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


@dataclass(frozen=True)
class EventSchema:
    """The feature fields an event must carry, in the feature spec's order."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: FeatureSpec) -> EventSchema:
        return cls(tuple(f.name for f in spec.numeric), tuple(f.name for f in spec.categorical))

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


class Event(NamedTuple):
    """A validated event, normalised (see the module docstring); a tuple: one is made per event."""

    event_id: str
    user_id: str
    ts: float  # epoch seconds
    numeric: tuple[float, ...]  # in schema order; NaN = missing
    categorical: tuple[str | None, ...]  # in schema order; None = missing


# orjson parses faster than json, and equally wherever it succeeds, except for integers beyond
# 64 bits, which it turns into floats (an id would change): an object with a float that large is
# parsed again by json (nested values need not be checked: the readers use top-level fields only, and
# refuse a list or object where they expect a value).
_BEYOND_INT64 = 2.0 ** 63


def json_object(raw: bytes | bytearray | memoryview | None, max_bytes: int | None = MAX_EVENT_BYTES) -> dict | str:
    """The JSON object in `raw`, or the reason it is not one (TOMBSTONE, EMPTY, OVERSIZE, BAD_JSON,
    NOT_OBJECT)."""
    if raw is None:
        return TOMBSTONE
    if len(raw) == 0:
        return EMPTY
    if max_bytes is not None and len(raw) > max_bytes:
        return OVERSIZE
    raw = bytes(raw)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None  # json decides the reason (it also reads NaN and Infinity, which become NON_FINITE)
    if type(value) is dict and not any(type(v) is float and not -_BEYOND_INT64 < v < _BEYOND_INT64
                                       for v in value.values()):
        return value
    if value is None or isinstance(value, dict):
        try:
            value = json.loads(raw.decode("utf-8"))  # explicit: json.loads(bytes) would also take UTF-16/32
        except (UnicodeDecodeError, ValueError, RecursionError):
            return BAD_JSON
        if isinstance(value, dict) and not _valid_unicode(value):
            return BAD_JSON
    return value if isinstance(value, dict) else NOT_OBJECT


def _valid_unicode(value: dict) -> bool:
    """No lone surrogate in a top-level name or text (the only ones readers use; orjson, which
    parses nearly every event, refuses them everywhere, so only json's results need this)."""
    try:
        for name, item in value.items():
            name.encode("utf-8")
            if type(item) is str:
                item.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_event(raw: bytes | bytearray | memoryview | None, schema: EventSchema,
                 max_bytes: int = MAX_EVENT_BYTES) -> Event | str:
    """The validated event in `raw`, or the reason (one of REASONS) it was refused.

    Checks run in this order, and the first failure is the reason: the bytes (EMPTY, OVERSIZE,
    BAD_JSON, NOT_OBJECT); every field present, ids and ts not null, NaN or blank (MISSING_FIELD);
    ids and categoricals not lists or objects (BAD_TYPE); each numeric field, in schema order,
    null or a number (BAD_TYPE; a bool is not a number) and finite (NON_FINITE); numeric ids
    finite (NON_FINITE); ids and categories as text at most MAX_TEXT_CHARS long (LONG_TEXT); ts
    a finite number or time text (BAD_TIMESTAMP). Fields beyond the schema's are ignored.
    """
    value = json_object(raw, max_bytes)
    if isinstance(value, str):
        return value
    return event_from_object(value, schema)


def event_from_object(value: dict, schema: EventSchema) -> Event | str:
    """`decode_event` for an already-parsed JSON object."""
    try:
        ids, ts = (value[EVENT_ID], value[USER]), value[TS]
        numeric = [value[name] for name in schema.numeric]
        categorical = [value[name] for name in schema.categorical]
    except KeyError:
        return MISSING_FIELD
    if _blank(ids[0]) or _blank(ids[1]) or _blank(ts):
        return MISSING_FIELD
    if any(isinstance(v, (list, dict)) for v in (*ids, *categorical)):
        return BAD_TYPE
    for i, raw in enumerate(numeric):
        if type(raw) is float and math.isfinite(raw):  # the common case, without _number's checks
            continue
        number = _number(raw)
        if isinstance(number, str):
            return number
        numeric[i] = number
    if any(isinstance(v, float) and not math.isfinite(v) for v in ids):
        return NON_FINITE
    event_id, user_id = as_text(ids[0]), as_text(ids[1])
    texts = tuple(v if type(v) is str else None if _missing(v) else as_text(v) for v in categorical)
    if len(event_id) > MAX_TEXT_CHARS or len(user_id) > MAX_TEXT_CHARS or any(
            t is not None and len(t) > MAX_TEXT_CHARS for t in texts):
        return LONG_TEXT
    ts = _timestamp(ts)
    if ts is None:
        return BAD_TIMESTAMP
    return Event(event_id, user_id, ts, tuple(numeric), texts)


def as_text(value: str | bool | float) -> str:
    """An id or category as the event-table reader writes it: integral numbers lose their '.0'."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0 ** 63:
        return str(int(value))
    return str(value)


def _blank(value: object) -> bool:
    """Missing like the table reader's missing_values: null, NaN, or blank text."""
    return _missing(value) or (isinstance(value, str) and not value.strip())


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value: object) -> float | str:
    """A numeric feature value as float (NaN for null), or the reason it is refused."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return BAD_TYPE
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return NON_FINITE
    return number if math.isfinite(number) else NON_FINITE


def _timestamp(value: object) -> float | None:
    """Epoch seconds, or None if `value` is not a finite time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        seconds = _parse_text_time(value)
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def _parse_text_time(value: str) -> float:
    if _PLAIN_ISO.fullmatch(value):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            delta = when - _EPOCH
            nanoseconds = ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000
            return float(nanoseconds) / 1e9  # as pandas divides timedelta64[ns] by one second
    # Rare forms (nanoseconds, numeric text, garbage) go through the file reader's own parser, so
    # both readers agree on every text; pandas loads on the first such event, never at import.
    import pandas as pd

    from ecseq.data.events import parse_timestamps

    try:
        return float(parse_timestamps(pd.Series([value], dtype=object)).iloc[0])
    except (ValueError, OverflowError):  # pandas' OutOfBoundsDatetime is a ValueError
        return math.nan
