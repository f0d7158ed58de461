"""decode_event: every refusal reason from real bytes, and the normalisation of good events."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ecseq import decoding
from ecseq.data.events import events_from_frame, parse_timestamps
from ecseq.decoding import (
    BAD_JSON,
    BAD_TIMESTAMP,
    BAD_TYPE,
    EMPTY,
    LONG_TEXT,
    MAX_EVENT_BYTES,
    MAX_TEXT_CHARS,
    MISSING_FIELD,
    NON_FINITE,
    NOT_OBJECT,
    OVERSIZE,
    TOMBSTONE,
    Event,
    EventSchema,
    decode_event,
)
from ecseq.features import FeatureSpec

SCHEMA = EventSchema(("amount", "hour"), ("channel", "mcc"))
GOOD = {"event_id": "e1", "user_id": "u1", "ts": 1_704_067_200.5, "amount": 12.5, "hour": 3,
        "channel": "web", "mcc": "mcc01"}


def _bytes(value) -> bytes:
    return json.dumps(value).encode()


def _with(**changes) -> bytes:
    return _bytes({**GOOD, **changes})


def _without(name: str) -> bytes:
    return _bytes({k: v for k, v in GOOD.items() if k != name})


def test_reason_strings_are_the_builders_words():
    assert (MISSING_FIELD, BAD_TYPE, NON_FINITE, BAD_TIMESTAMP) == (
        "missing_field", "bad_type", "non_finite", "bad_timestamp")
    assert (BAD_JSON, NOT_OBJECT, EMPTY, OVERSIZE) == ("bad_json", "not_object", "empty", "oversize")
    assert (TOMBSTONE, LONG_TEXT) == ("tombstone", "long_text")
    assert set(decoding.REASONS) == {MISSING_FIELD, BAD_TYPE, NON_FINITE, BAD_TIMESTAMP, BAD_JSON, NOT_OBJECT,
                                    TOMBSTONE, EMPTY, OVERSIZE, LONG_TEXT}


def test_schema_from_spec_keeps_the_specs_column_order():
    frame = pd.DataFrame({"b": np.arange(20.0), "a": np.arange(20.0), "z": ["x", "y"] * 10, "c": ["p"] * 20})
    spec = FeatureSpec.fit(frame, ("b", "a"), ("z", "c"))
    assert EventSchema.from_spec(spec) == EventSchema(("b", "a"), ("z", "c"))


@pytest.mark.parametrize(("raw", "reason"), [
    (None, TOMBSTONE),
    (b"", EMPTY),
    (b" " * (MAX_EVENT_BYTES + 1), OVERSIZE),
    (b"{not json", BAD_JSON),
    (b"\xff\xfe{}", BAD_JSON),  # not UTF-8
    (json.dumps(GOOD).encode("utf-16"), BAD_JSON),  # JSON, but not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, OVERSIZE),
    (b"[" * 30_000 + b"]" * 30_000, BAD_JSON),  # nesting deeper than the parser's recursion
    (b"[1, 2]", NOT_OBJECT),
    (b'"e1"', NOT_OBJECT),
    (b"null", NOT_OBJECT),
    (_without("event_id"), MISSING_FIELD),
    (_without("user_id"), MISSING_FIELD),
    (_without("ts"), MISSING_FIELD),
    (_without("amount"), MISSING_FIELD),  # a schema field absent (null would be a missing value)
    (_without("mcc"), MISSING_FIELD),
    (_with(event_id=None), MISSING_FIELD),
    (_with(user_id=None), MISSING_FIELD),
    (_with(ts=None), MISSING_FIELD),
    (_with(user_id="  "), MISSING_FIELD),  # blank text is missing, as in the table reader
    (_with(ts=""), MISSING_FIELD),
    (_with(amount="12.5"), BAD_TYPE),  # numeric text is not a number
    (_with(amount=True), BAD_TYPE),
    (_with(hour=[3]), BAD_TYPE),
    (_with(user_id=["u1"]), BAD_TYPE),
    (_with(event_id={"id": 1}), BAD_TYPE),
    (_with(channel={"web": 1}), BAD_TYPE),
    (_with(mcc=["a"]), BAD_TYPE),
    (_with(amount=math.inf), NON_FINITE),  # json.dumps writes Infinity, json.loads reads it back
    (_with(hour=-math.inf), NON_FINITE),
    (_with(amount=math.nan), NON_FINITE),
    (b'{"event_id": "e1", "user_id": "u1", "ts": 1, "amount": 1e999, "hour": 1, "channel": "a", "mcc": "b"}',
     NON_FINITE),
    (_bytes({**GOOD, "amount": 10 ** 400}), NON_FINITE),  # an integer beyond float range
    (_with(user_id=math.inf), NON_FINITE),
    (_with(ts="someday"), BAD_TIMESTAMP),
    (_with(ts="2024-13-01"), BAD_TIMESTAMP),
    (_with(ts=math.inf), BAD_TIMESTAMP),
    (_with(ts=math.nan), MISSING_FIELD),  # NaN is how the table reader spells a missing time
    (_with(ts=True), BAD_TIMESTAMP),
    (_with(ts=[1]), BAD_TIMESTAMP),
    (_with(ts="inf"), BAD_TIMESTAMP),
    (_with(ts="now"), BAD_TIMESTAMP),  # pandas reads these as the clock's time
    (_with(ts="today"), BAD_TIMESTAMP),
    # a lone UTF-16 surrogate: json reads it, UTF-8 (a key, the changelog) cannot hold it
    (_with(user_id="\ud800"), BAD_JSON),
    (_with(event_id="e\udfff"), BAD_JSON),
    (_with(channel="\udc80web"), BAD_JSON),
    (_bytes({**GOOD, "\ud800": 1}), BAD_JSON),
    (_with(event_id="e" * (MAX_TEXT_CHARS + 1)), LONG_TEXT),
    (_with(user_id="\u00e9" * (MAX_TEXT_CHARS + 1)), LONG_TEXT),
    (_with(mcc="m" * (MAX_TEXT_CHARS + 1)), LONG_TEXT),
    (_with(user_id=10 ** 300), LONG_TEXT),  # an integral id is its digits
])
def test_every_reason(raw, reason):
    assert decode_event(raw, SCHEMA) == reason


def test_the_size_limit_is_a_parameter():
    raw = _bytes(GOOD)
    assert decode_event(raw, SCHEMA, max_bytes=len(raw)) != OVERSIZE
    assert decode_event(raw, SCHEMA, max_bytes=len(raw) - 1) == OVERSIZE
    assert decode_event(bytearray(raw), SCHEMA) == decode_event(memoryview(raw), SCHEMA) == decode_event(raw, SCHEMA)


def test_first_problem_wins():
    assert decode_event(_bytes({"event_id": None, "amount": "x"}), SCHEMA) == MISSING_FIELD
    assert decode_event(_with(amount="x", ts="someday"), SCHEMA) == BAD_TYPE
    assert decode_event(_with(amount=math.inf, hour="x"), SCHEMA) == NON_FINITE  # column order


def test_a_good_event_is_normalised():
    event = decode_event(_bytes({**GOOD, "extra": [1, 2], "label": 1}), SCHEMA)
    assert event == Event("e1", "u1", 1_704_067_200.5, (12.5, 3.0), ("web", "mcc01"))
    assert isinstance(event.numeric[1], float)


def test_nulls_are_missing_values_not_errors():
    event = decode_event(_with(amount=None, channel=None), SCHEMA)
    assert math.isnan(event.numeric[0]) and event.numeric[1] == 3.0
    assert event.categorical == (None, "mcc01")
    assert decode_event(_with(mcc=math.nan), SCHEMA).categorical == ("web", None)


@pytest.mark.parametrize(("value", "text"), [
    (7, "7"), (7.0, "7"), (-3.0, "-3"), (7.5, "7.5"), ("007", "007"), ("u 1", "u 1"), (True, "True"),
    (2 ** 70, str(2 ** 70)), (-(2 ** 63) - 1, str(-(2 ** 63) - 1)), (2 ** 64 - 1, str(2 ** 64 - 1)),
    (1e300, "1e+300"), ("ünï", "ünï"),
])
def test_ids_and_categories_are_text_like_the_table_reader(value, text):
    event = decode_event(_with(event_id=value, user_id=value, mcc=value), SCHEMA)
    assert (event.event_id, event.user_id, event.categorical[1]) == (text, text, text)


def test_integral_ids_read_the_same_as_from_an_event_table():
    """The reader turns a float column of whole numbers into text without '.0' (e.g. a CSV with a gap)."""
    frame = pd.DataFrame({"user_id": [7.0, 8.0, 9.0], "ts": [1, 2, 3], "label": [0, 1, 0],
                          "event_id": [10.0, 11.0, 12.0], "x": [1.0, 2.0, 3.0]})
    table = events_from_frame(frame)
    for row in table.frame.itertuples():
        event = decode_event(_bytes({"event_id": float(row.event_id), "user_id": float(row.user_id), "ts": row.ts,
                                     "x": row.x}), EventSchema(("x",), ()))
        assert (event.event_id, event.user_id) == (row.event_id, row.user_id)


@pytest.mark.parametrize("ts", [
    "2024-01-01T00:00:00Z", "2024-01-01T00:00:00", "2024-01-01 10:30", "2024-01-01", "2024-01-01T00:00:00+02:00",
    "2024-03-05T01:02:03.25-05:30", "2024-01-01T00:00:00.123456Z", "2024-01-01T00:00:00.123456789Z",
    "20240101", "1704067200", "1704067200.5", "1e9", " 17 ",
])
def test_text_times_are_parsed_exactly_as_the_table_reader_does(ts):
    event = decode_event(_with(ts=ts), SCHEMA)
    assert isinstance(event, Event)
    assert event.ts == parse_timestamps(pd.Series([ts], dtype=object)).iloc[0]


def test_many_random_iso_times_agree_with_the_table_reader():
    rng = np.random.default_rng(0)
    stamps = pd.to_datetime(rng.uniform(-1e9, 4e9, 500), unit="s", utc=True)
    texts = [t.strftime(fmt) + zone for t, fmt, zone in zip(
        stamps, rng.choice(["%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"], 500),
        rng.choice(["", "Z", "+02:00", "-05:30"], 500))]
    expected = parse_timestamps(pd.Series(texts, dtype=object)).to_numpy()
    got = np.array([decode_event(_with(ts=t), SCHEMA) for t in texts], dtype=object)
    for text, want, event in zip(texts, expected, got):
        if np.isnan(want):
            assert event == BAD_TIMESTAMP, text
        else:
            assert event.ts == want, text


def test_numeric_times_are_kept():
    assert decode_event(_with(ts=1_704_067_200), SCHEMA).ts == 1_704_067_200.0
    assert decode_event(_with(ts=-5.25), SCHEMA).ts == -5.25


def test_escaped_pairs_and_text_at_the_length_limit_are_accepted():
    emoji = decode_event(_with(user_id="\U0001F600", channel="\U0001F600"), SCHEMA)  # sent as \ud83d\ude00
    assert emoji.user_id == emoji.categorical[0] == "\U0001F600"
    assert decode_event(_with(event_id="e" * MAX_TEXT_CHARS), SCHEMA).event_id == "e" * MAX_TEXT_CHARS
