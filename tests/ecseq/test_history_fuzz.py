"""Fuzz: UserHistory's bytes round-trip any valid events, and any damaged bytes are a ValueError."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecseq.decoding import MAX_TEXT_CHARS, Event, EventSchema
from ecseq.history import NOT_KEPT, UserHistory
from tests.ecseq.test_history import _same
from tests.fuzz import fuzz

pytestmark = pytest.mark.fuzz
SCHEMA = EventSchema(("amount", "hour"), ("channel", "mcc"))
valid_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=MAX_TEXT_CHARS).filter(str.strip)
events = st.builds(
    lambda event_id, ts, numeric, categorical: Event(event_id, "u1", ts, numeric, categorical),
    valid_text | st.integers(0, 30).map(str),  # small ids repeat: redeliveries
    st.floats(-1e10, 1e10),
    st.tuples(st.floats(allow_infinity=False), st.floats(allow_infinity=False)),
    st.tuples(st.none() | valid_text, st.none() | st.sampled_from(["a", "b", "c"])))


def _history(batch: list[Event], limit: int) -> UserHistory:
    history = UserHistory.empty(SCHEMA)
    for event in batch:
        position = history.append(event, limit)
        assert position == NOT_KEPT or 0 <= position < len(history)
    return history


@fuzz(200)
@given(st.lists(events, max_size=40), st.integers(1, 20))
def test_any_valid_events_round_trip(batch, limit):
    history = _history(batch, limit)
    assert len(history) <= limit and len(set(history.event_ids)) == len(history)
    times = [event.ts for event in history.events()]
    assert times == sorted(times)
    _same(UserHistory.from_bytes(history.to_bytes(), SCHEMA), history)


@fuzz(300)
@given(st.lists(events, min_size=1, max_size=10), st.data())
def test_damaged_bytes_are_a_value_error(batch, data):
    raw = bytearray(_history(batch, 10).to_bytes())
    body = raw[:-4]
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and at < len(body):
            body[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[at:at + data.draw(st.integers(1, 8))]
        else:
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    resealed = data.draw(st.booleans())  # with a valid checksum the parser itself must hold
    damaged = bytes(body) + (struct.pack("<I", zlib.crc32(body)) if resealed else bytes(raw[-4:]))
    try:
        history = UserHistory.from_bytes(damaged, SCHEMA)
    except ValueError:
        return
    history.to_bytes()  # whatever was accepted is a usable history
    for event in history.events():
        assert event.user_id == history.user_id
