"""Fuzz: whatever bytes arrive, decode_event gives a valid Event or one of its reasons, never raises."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecseq.decoding import MAX_TEXT_CHARS, REASONS, Event, EventSchema, decode_event
from tests.fuzz import any_text, fuzz, json_values

pytestmark = pytest.mark.fuzz
SCHEMA = EventSchema(("amount", "hour"), ("channel", "mcc"))
FIELDS = ("event_id", "user_id", "ts", "amount", "hour", "channel", "mcc")
plausible = {"event_id": st.text(max_size=5) | st.integers(), "user_id": st.text(max_size=5) | st.integers(),
             "ts": st.floats(0, 2e9) | st.sampled_from(["2024-01-02T03:04:05Z", "now", "2024-13-01", ""]),
             "amount": st.floats(-1e6, 1e6) | st.none(), "hour": st.integers(0, 23),
             "channel": st.sampled_from(["web", "app"]) | st.none(), "mcc": st.text(max_size=4)}


def _check(result: Event | str) -> None:
    if isinstance(result, str):
        assert result in REASONS
        return
    texts = [result.event_id, result.user_id, *(c for c in result.categorical if c is not None)]
    for text in texts:
        text.encode("utf-8")  # every text can be a key, a changelog value, a file
        assert len(text) <= MAX_TEXT_CHARS
    assert result.event_id.strip() and result.user_id.strip()
    assert math.isfinite(result.ts)
    assert len(result.numeric) == 2 and all(math.isnan(x) or math.isfinite(x) for x in result.numeric)
    assert all(type(x) is float for x in result.numeric)


@fuzz(400)
@given(st.binary(max_size=300))
def test_any_bytes(raw):
    _check(decode_event(raw, SCHEMA))


@fuzz(400)
@given(st.fixed_dictionaries({}, optional={name: json_values for name in FIELDS}))
def test_any_json_object(value):
    _check(decode_event(json.dumps(value).encode(), SCHEMA))


@fuzz(400)
@given(st.fixed_dictionaries({name: st.one_of(strategy, json_values) for name, strategy in plausible.items()}),
       any_text)
def test_events_close_to_valid(value, extra):
    raw = json.dumps({**value, extra: value.get("mcc")}).encode()
    result = decode_event(raw, SCHEMA)
    _check(result)
    assert repr(decode_event(raw, SCHEMA)) == repr(result)  # the same bytes, the same answer
