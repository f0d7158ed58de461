"""UserHistory: time order, dedupe, the bound, and the compact bytes (round trip, corruption, schema change)."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from ecseq.decoding import Event, EventSchema
from ecseq.history import FORMAT_VERSION, NOT_KEPT, UserHistory

SCHEMA = EventSchema(("amount", "hour"), ("channel", "mcc"))


def _event(i: int, ts: float | None = None, user: str = "u1", amount: float = 1.5, channel: str | None = "web",
           mcc: str | None = None) -> Event:
    return Event(f"e{i}", user, float(i) if ts is None else ts, (amount, float(i % 24)),
                 (channel, f"mcc{i % 5:02d}" if mcc is None else mcc))


def _history(n: int, limit: int = 50) -> UserHistory:
    history = UserHistory.empty(SCHEMA)
    for i in range(n):
        history.append(_event(i, amount=float(i) * 1.25), limit)
    return history


def _same(a: UserHistory, b: UserHistory) -> None:
    assert a.user_id == b.user_id and a.event_ids == b.event_ids
    for x, y in zip(a.events(), b.events()):
        assert (x.event_id, x.user_id, x.ts, x.categorical) == (y.event_id, y.user_id, y.ts, y.categorical)
        np.testing.assert_array_equal(x.numeric, y.numeric)  # NaN == NaN here


def test_appends_in_time_order_and_returns_positions():
    history = UserHistory.empty(SCHEMA)
    assert len(history) == 0 and history.user_id is None
    assert history.append(_event(1, ts=10.0), 5) == 0
    assert history.append(_event(2, ts=30.0), 5) == 1
    assert history.append(_event(3, ts=20.0), 5) == 1  # late: inserted where its time puts it
    assert history.append(_event(4, ts=20.0), 5) == 2  # a tie goes after the events already there
    assert history.append(_event(5, ts=5.0), 5) == 0
    assert history.event_ids == ("e5", "e1", "e3", "e4", "e2")
    assert [e.ts for e in history.events()] == [5.0, 10.0, 20.0, 20.0, 30.0]
    assert history.user_id == "u1" and len(history) == 5


def test_a_duplicate_is_not_appended_again():
    history = _history(4)
    before = history.to_bytes()
    assert history.append(_event(2, ts=99.0, amount=7.0), 50) == 2  # same id, even with other content
    assert history.to_bytes() == before


def test_never_more_than_limit_events_the_oldest_go_first():
    history = UserHistory.empty(SCHEMA)
    for i in range(10):
        assert history.append(_event(i), 4) == min(i, 3)
    assert history.event_ids == ("e6", "e7", "e8", "e9")
    assert history.append(_event(10, ts=7.5), 4) == 1  # late but not the oldest: e6 goes
    assert history.event_ids == ("e7", "e10", "e8", "e9")
    assert history.append(_event(11, ts=1.0), 4) == NOT_KEPT  # older than all of a full history
    assert history.event_ids == ("e7", "e10", "e8", "e9")
    assert history.append(_event(3), 4) == NOT_KEPT  # an evicted event redelivered: still too old
    assert history.append(_event(12), 2) == 1  # a smaller limit trims to it
    assert history.event_ids == ("e9", "e12")


def test_a_limit_must_be_a_positive_int():
    for limit in (0, -1, True, 2.0, 70_000):
        with pytest.raises(ValueError, match="limit"):
            UserHistory.empty(SCHEMA).append(_event(1), limit)


def test_refuses_events_that_do_not_belong():
    history = _history(2)
    with pytest.raises(ValueError, match="user 'u2'"):
        history.append(_event(5, user="u2"), 50)
    with pytest.raises(ValueError, match="schema"):
        history.append(Event("x", "u1", 1.0, (1.0,), ("a", "b")), 50)
    with pytest.raises(ValueError, match="non-finite ts"):
        history.append(Event("x", "u1", math.nan, (1.0, 2.0), ("a", "b")), 50)
    assert len(history) == 2


def test_copy_is_a_snapshot():
    history = _history(3, limit=3)
    snapshot = history.copy()
    history.append(_event(3), 3)
    history.append(_event(4, channel="new"), 3)
    assert snapshot.event_ids == ("e0", "e1", "e2") and history.event_ids == ("e2", "e3", "e4")
    snapshot.append(_event(9, channel="other"), 5)
    assert snapshot.event(3).categorical[0] == "other" and history.event(2).categorical[0] == "new"


def test_appends_in_place_never_change_copies_or_columns_handed_out_before():
    history = _history(3, limit=5)
    snapshot = history.copy()
    numeric, codes, _ = history.columns(0, 3)
    kept = numeric.copy(), codes.copy()
    for i in range(3, 40):  # drops the oldest and outgrows the column buffers several times
        history.append(_event(i, amount=float(i) * 1.25), 5)
        if i == 4:
            snapshot.append(_event(20, amount=-1.0), 5)  # the copy appends too, into buffers of its own
            _same(history, _history(5, limit=5))
    _same(history, _history(40, limit=5))
    assert snapshot.event_ids == ("e0", "e1", "e2", "e20")
    assert [e.numeric[0] for e in snapshot.events()] == [0.0, 1.25, 2.5, -1.0]
    np.testing.assert_array_equal(numeric, kept[0])
    np.testing.assert_array_equal(codes, kept[1])


def test_numerics_are_float32_missing_is_nan_and_huge_values_are_clamped():
    history = UserHistory.empty(SCHEMA)
    history.append(Event("a", "u", 1.0, (0.1, math.nan), (None, "x")), 5)
    history.append(Event("b", "u", 2.0, (1e300, -1e300), ("y", None)), 5)
    a, b = history.events()
    assert a.numeric[0] == float(np.float32(0.1)) and math.isnan(a.numeric[1])
    assert b.numeric == (float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max))
    assert (a.categorical, b.categorical) == ((None, "x"), ("y", None))


def test_round_trip():
    history = _history(30)
    history.append(Event("odd é ☃", "u1", 12.5, (math.nan, -0.0), (None, "ünï")), 50)
    history.append(Event("", "u1", 13.5, (3.0, 4.0), ("", "mcc01")), 50)  # empty strings are values
    data = history.to_bytes()
    assert data[0] == FORMAT_VERSION
    again = UserHistory.from_bytes(data, SCHEMA)
    _same(again, history)
    assert again.to_bytes() == data
    assert UserHistory.from_bytes(bytearray(data), SCHEMA).to_bytes() == data
    empty = UserHistory.empty(SCHEMA)
    assert len(UserHistory.from_bytes(empty.to_bytes(), SCHEMA)) == 0
    assert UserHistory.from_bytes(empty.to_bytes(), SCHEMA).user_id is None


def test_a_history_behaves_the_same_after_a_round_trip():
    history = _history(10, limit=10)
    again = UserHistory.from_bytes(history.to_bytes(), SCHEMA)
    for i in (10, 11):
        assert history.append(_event(i, ts=4.5 + i / 100), 10) == again.append(_event(i, ts=4.5 + i / 100), 10)
    assert history.to_bytes() == again.to_bytes()


def test_values_no_event_uses_are_not_stored():
    history = UserHistory.empty(SCHEMA)
    for i in range(200):
        history.append(_event(i, channel=f"ch{i}", mcc=f"m{i}"), 3)  # every event brings new values
    fresh = UserHistory.empty(SCHEMA)
    for event in history.events():
        fresh.append(event, 3)
    assert history.to_bytes() == fresh.to_bytes()  # as if the dropped events had never been there
    assert len(history.columns(0, 3)[2]) <= 2 * 3 * 2 + 16  # and memory does not grow either


def test_bytes_kept_up_to_date_across_appends_equal_bytes_built_afresh():
    # to_bytes keeps per-value use counts, id lengths and the values' bytes, and append updates them:
    # after any mix of late events, drops, new and missing values, unicode ids and copies, the bytes
    # must equal those computed from scratch
    rng = np.random.default_rng(7)
    history, limit = UserHistory.empty(SCHEMA), 6
    for i in range(300):
        event = Event(f"é{i}" if i % 7 == 0 else f"e{i}", "u1", float(i) - float(rng.integers(0, 4)),
                      (float(i), 1.0), (None if i % 5 == 0 else f"c{rng.integers(0, 9)}", f"m{rng.integers(0, 3)}"))
        if history.append(event, limit) == NOT_KEPT:
            continue
        if i % 3 == 0:
            history = history.copy()
        if i % 2 == 0:
            # the same events and values, through another schema and back: a twin with nothing kept
            twin = history.with_schema(EventSchema((*SCHEMA.numeric, "extra"), SCHEMA.categorical)).with_schema(SCHEMA)
            assert history.to_bytes() == twin.to_bytes(), i
            _same(UserHistory.from_bytes(history.to_bytes(), SCHEMA), history)


def test_selected_bytes_and_drops_in_place_equal_histories_built_afresh():
    # the builder's windows: the bytes of some of a history's events (contiguous or not, after late
    # events, drops and to_bytes' kept sections) equal those of a history holding just them, values
    # numbered by first use; a drop in place equals a copy without the oldest
    rng = np.random.default_rng(11)
    history, limit = UserHistory.empty(SCHEMA), 12
    for i in range(400):
        event = Event(f"é{i}" if i % 7 == 0 else f"e{i}", "u1", float(i) - float(rng.integers(0, 4)),
                      (float(i), math.nan if i % 6 == 0 else 1.0),
                      (None if i % 5 == 0 else f"c{rng.integers(0, 9)}", f"m{rng.integers(0, 3)}"))
        if history.append(event, limit) == NOT_KEPT:
            continue
        if i % 4 == 0:
            history.to_bytes()
        n = len(history)
        first = int(rng.integers(0, n))
        positions = list(range(first, n)) if i % 2 else sorted(
            rng.choice(np.arange(first, n), size=int(rng.integers(1, n - first + 1)), replace=False).tolist())
        afresh = UserHistory.empty(SCHEMA)
        for position in positions:
            afresh.append(history.event(position), limit)
        assert history.selected_bytes(positions) == afresh.to_bytes(), i
        if i % 9 == 0 and n > 2:
            expected = history.without_oldest(2).to_bytes()
            history.drop_oldest(2)
            assert history.to_bytes() == expected, i


def test_many_distinct_values_widen_the_codes():
    history = UserHistory.empty(SCHEMA)
    for i in range(300):
        history.append(_event(i, channel=f"c{i}", mcc=f"m{i}"), 300)
    _same(UserHistory.from_bytes(history.to_bytes(), SCHEMA), history)


def test_size_for_fifty_events_of_the_synthetic_schema():
    schema = EventSchema(("amount", "hour", "hours_since_prev"), ("mcc", "device", "country", "channel"))
    rng = np.random.default_rng(0)
    history = UserHistory.empty(schema)
    for i in range(80):
        history.append(Event(f"ev{100_000 + i}", "u00042", 1_704_067_200.0 + 3600.0 * i,
                             (float(rng.lognormal(3, 1)), float(rng.integers(24)), float(rng.exponential(20))),
                             (f"mcc{rng.integers(20):02d}", f"dev{rng.integers(2)}", "US",
                              str(rng.choice(["web", "app"])))),
                       50)
    size = len(history.to_bytes())
    # 50 x (2 + 8 id, 8 ts, 3 x 4 numerics, 4 codes) = 1,700 plus names, user, values and checksum
    assert 1_700 < size < 2_000, size


def _corrupt(data: bytes, at: int, value: int) -> bytes:
    return data[:at] + bytes([value]) + data[at + 1:]


def _resealed(body: bytes) -> bytes:
    """Bytes with a valid checksum, to reach the checks behind it."""
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: b"", "too short"),
    (lambda d: d[:3], "too short"),
    (lambda d: d[:-1], "checksum"),
    (lambda d: d[:-10] + d[-4:], "checksum"),
    (lambda d: d + b"\x00", "checksum"),
    (lambda d: _corrupt(d, 40, d[40] ^ 0x01), "checksum"),
    (lambda d: _resealed(_corrupt(d, 0, 9)[:-4]), "version 9"),
    (lambda d: _resealed(d[:-20]), "truncated"),
    (lambda d: _resealed(d[:-4] + b"\x00\x00"), "trailing"),
    (lambda d: _resealed(d[:-5] + b"\x09"), "out of range"),
    (lambda d: b"\x80" * 64, "checksum"),
])
def test_corrupt_bytes_raise_a_clear_value_error(make, message):
    data = _history(5).to_bytes()
    with pytest.raises(ValueError, match=message):
        UserHistory.from_bytes(make(data), SCHEMA)


def test_inconsistent_content_behind_a_valid_checksum_is_refused():
    history = _history(3)
    history._ts = history._ts[::-1].copy()  # times out of order
    with pytest.raises(ValueError, match="in order"):
        UserHistory.from_bytes(history.to_bytes(), SCHEMA)
    history = _history(3)
    history._ids[1] = "e0"
    with pytest.raises(ValueError, match="repeated event id"):
        UserHistory.from_bytes(history.to_bytes(), SCHEMA)


def test_a_new_schema_maps_columns_by_name():
    history = _history(4)
    history.append(Event("x", "u1", 10.0, (math.nan, 5.0), (None, "m")), 50)
    new = EventSchema(("hour", "amount", "fresh"), ("mcc", "channel", "amount_bucket", "hour"))
    mapped = UserHistory.from_bytes(history.to_bytes(), new)
    assert mapped.schema == new and mapped.event_ids == history.event_ids
    for old, now in zip(history.events(), mapped.events()):
        np.testing.assert_array_equal(now.numeric, (old.numeric[1], old.numeric[0], math.nan))
        assert now.categorical == (old.categorical[1], old.categorical[0], None, None)  # hour: kind changed
    assert mapped.append(Event("y", "u1", 11.0, (1.0, 2.0, 3.0), ("a", "b", "c", "d")), 50) == 5
    _same(UserHistory.from_bytes(mapped.to_bytes(), new), mapped)


@pytest.mark.parametrize("schema", [EventSchema(("x",), ()), EventSchema((), ("c",)), EventSchema((), ())])
def test_schemas_with_one_kind_of_column_or_none(schema):
    history = UserHistory.empty(schema)
    for i in range(5):
        history.append(Event(f"e{i}", "u", float(i), (float(i),) * len(schema.numeric),
                             ("v",) * len(schema.categorical)), 3)
    again = UserHistory.from_bytes(history.to_bytes(), schema)
    _same(again, history)
    assert again.event_ids == ("e2", "e3", "e4")


def test_holds_tells_a_redelivery_from_a_reused_id():
    history = _history(5)
    stored = history.event(2)
    assert history.holds(_event(2, amount=2.5))  # as sent: the same content (2 * 1.25)
    assert history.holds(stored)
    assert not history.holds(stored._replace(ts=stored.ts + 1))
    assert not history.holds(stored._replace(numeric=(stored.numeric[0] + 1, stored.numeric[1])))
    assert not history.holds(stored._replace(categorical=("app", stored.categorical[1])))
    assert not history.holds(_event(99))
    nan = UserHistory.empty(SCHEMA)
    nan.append(_event(1, amount=math.nan, channel=None), 10)
    assert nan.holds(_event(1, amount=math.nan, channel=None))  # missing equals missing
    wider = _history(3).with_schema(EventSchema(("amount", "hour", "new"), ("channel", "mcc", "kind")))
    assert wider.holds(Event("e1", "u1", 1.0, (1.25, 1.0, 7.0), ("web", "mcc01", "x")))  # new columns: not compared
