"""The collector in process, over a window store in a temporary directory: records in, samples out.

Events and labels are JSON bytes with explicit Kafka timestamps, fed in the orders a follower could
read them; the samples must not depend on that order, on the batches or on where flushes fall."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from compression_builder import collector as collector_module
from compression_builder.collector import Collector, UserEvents
from compression_builder.sources import samples_table
from compression_builder.window_store import Caps, Sample, WindowStore, day_of
from ecseq.data.events import events_from_frame
from ecseq.decoding import EventSchema
from ecseq.history import UserHistory

SCHEMA = EventSchema(("amount",), ("channel",))
DAY_MS = 86_400_000
T0 = 1_700_000_000  # event time of the first events, epoch seconds
WIDE = Caps(negatives=10_000, positives=10_000)  # never binding

Record = tuple[bytes | None, int]  # (value, Kafka timestamp ms)


def event(event_id: str, user_id: str, ts: float, amount: float | None = 1.0, channel: str | None = "web") -> bytes:
    return json.dumps({"event_id": event_id, "user_id": user_id, "ts": ts, "amount": amount,
                       "channel": channel}).encode()


def label(event_id: str, user_id: str, value: object) -> bytes:
    return json.dumps({"event_id": event_id, "user_id": user_id, "label": value}).encode()


def collector(root: Path, window: int = 3, horizon_ms: int = DAY_MS, since: float | None = None,
              caps: Caps = WIDE, max_event_bytes: int = 64 * 1024) -> Collector:
    return Collector(WindowStore(root, caps), SCHEMA, window, horizon_ms, since, max_event_bytes)


def window_ids(sample: Sample) -> tuple[str, ...]:
    return UserHistory.from_bytes(sample.window, SCHEMA).event_ids


def by_id(store: WindowStore) -> dict[str, Sample]:
    return {s.event_id: s for s in store.samples()}


def sample_set(store: WindowStore) -> set[tuple[str, int, bytes]]:
    return {(s.event_id, s.label, s.window) for s in store.samples()}


# -- order independence ------------------------------------------------------------------------------


def _workload(rng: random.Random) -> tuple[dict[str, list[Record]], list[Record]]:
    """Per user its event records in their fixed order, and every label record in Kafka time order.

    Event Kafka times span 4 days and the horizon is 5 (an early label never expires before its event
    comes); labels come 0-8 days after their events (a third after the horizon), some events get two or
    three labels, some labels name another user, some records are duplicates or reuse an id."""
    events: dict[str, list[Record]] = {}
    labels: list[Record] = []
    for u in range(6):
        user = f"u{u}"
        records = []
        ts = T0 + rng.uniform(0, 3600)
        for i in range(14):
            ts += rng.uniform(600, 4 * 86400 / 14)
            event_id = f"{user}-e{i}"
            published = int(ts * 1000) + rng.randrange(0, 2000)
            value = event(event_id, user, ts, round(rng.uniform(0, 100), 2), rng.choice(["web", "app", None]))
            records.append((value, published))
            if i == 5:
                records.append((value, published + 10))  # a producer's retry: duplicate_event
            if i == 7:
                records.append((event(event_id, user, ts, 999.0), published + 20))  # id_reused
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
                labels.append((label(event_id, user, rng.choice([0, 1])), published + rng.randrange(0, 8 * DAY_MS)))
            if i == 3:
                labels.append((label(event_id, "u9", 1), published + 1000))  # names another user
        events[user] = records
    labels.sort(key=lambda record: record[1])
    return events, labels


def _feed(root: Path, events: dict[str, list[Record]], labels: list[Record], rng: random.Random) -> WindowStore:
    """The records in a random interleaving (each user's events and the labels keep their order), in
    random batches, with random flushes; a final settling flush."""
    coll = collector(root, window=4, horizon_ms=5 * DAY_MS, since=2 * 86400)
    queues = {user: list(records) for user, records in events.items()}
    pending_labels = list(labels)
    while any(queues.values()) or pending_labels:
        sources = [user for user, q in queues.items() if q] + (["labels"] if pending_labels else [])
        source = rng.choice(sources)
        size = rng.randint(1, 7)
        if source == "labels":
            batch, pending_labels = pending_labels[:size], pending_labels[size:]
            coll.labels(batch)
        else:
            batch, queues[source] = queues[source][:size], queues[source][size:]
            coll.events(batch)
        if rng.random() < 0.3:
            coll.flush()
    coll.flush(settle=True)
    return coll.store


def _expected(events: dict[str, list[Record]], labels: list[Record], window: int, horizon_ms: int,
              since: float) -> set[tuple[str, int, tuple[str, ...]]]:
    """(event id, label, window ids) computed directly: in-order events, each one's latest label that
    names its user and came within the horizon, days from the newest event's time - since."""
    held: dict[str, tuple[str, float, int, tuple[str, ...]]] = {}
    for user, records in events.items():
        ids: list[str] = []
        for value, published in records:
            fields = json.loads(value)
            if fields["event_id"] not in held:  # a repeated id is refused
                ids.append(fields["event_id"])
                held[fields["event_id"]] = (user, fields["ts"], published, tuple(ids[-window:]))
    latest = {}
    for value, labelled in labels:
        fields = json.loads(value)
        user, _, published, _ = held.get(fields["event_id"], (None, 0, 0, ()))
        if user == fields["user_id"] and labelled - published <= horizon_ms:
            latest[fields["event_id"]] = fields["label"]
    first_day = day_of(max(ts for _, ts, _, _ in held.values()) - since)
    return {(e, value, held[e][3]) for e, value in latest.items() if day_of(held[e][1]) >= first_day}


def test_samples_do_not_depend_on_interleaving_batches_flushes_or_the_users_cached(tmp_path, monkeypatch):
    events, labels = _workload(random.Random(7))
    results, event_counts = [], []
    for run in range(4):
        monkeypatch.setattr(collector_module, "CACHED_USERS", (0, 1, 3, 10_000)[run])  # every user read back .. none
        store = _feed(tmp_path / f"run{run}", events, labels, random.Random(100 + run))
        results.append(sample_set(store))
        event_counts.append({key: n for key, n in store.counts().items() if key[0] == "events"})
        assert store.counts()["labels", "after_horizon"] + store.counts()["labels", "unknown_event"] > 10
        store.close()
    expected = _expected(events, labels, window=4, horizon_ms=5 * DAY_MS, since=2 * 86400)
    assert len(expected) > 20 and {value for _, value, _ in expected} == {0, 1}
    assert {(e, value, UserHistory.from_bytes(w, SCHEMA).event_ids) for e, value, w in results[0]} == expected
    for other in results[1:]:
        assert other == results[0]
    assert event_counts[0] == {("events", "duplicate_event"): 6, ("events", "id_reused"): 6}
    assert all(counts == event_counts[0] for counts in event_counts)


# -- windows as the worker saw them ------------------------------------------------------------------


def test_a_late_event_is_only_in_the_windows_of_events_that_arrived_after_it(tmp_path):
    coll = collector(tmp_path, window=3)
    stamp = {"A": 1, "B": 2, "C": 3, "D": 5, "X": 4, "F": 6}
    coll.events([(event(e, "u", T0 + stamp[e]), 1000 * stamp[e]) for e in ("A", "B", "C", "D")])
    coll.labels([(label("D", "u", 1), 5100)])  # D's label before the late X arrives
    coll.flush()
    coll.events([(event("X", "u", T0 + 4), 5200), (event("F", "u", T0 + 6), 6000)])
    coll.labels([(label(e, "u", 0), 7000) for e in ("A", "B", "C", "X", "F")])
    coll.labels([(label("D", "u", 1), 7000)])  # D again, after X arrived: still the window it had
    coll.flush()

    windows = {e: window_ids(s) for e, s in by_id(coll.store).items()}
    assert windows == {"A": ("A",), "B": ("A", "B"), "C": ("A", "B", "C"), "D": ("B", "C", "D"),
                       "X": ("B", "C", "X"), "F": ("X", "D", "F")}
    for event_id, ids in windows.items():
        assert ids[-1] == event_id and len(ids) <= 3
    coll.store.close()


def test_a_late_events_gap_does_not_cut_a_window_when_old_events_are_pruned(tmp_path):
    """Kafka timestamps as the producer stamps them (the event's time): the late X is stamped before
    D, so pruning keeps D's window, which reaches past X, whole."""
    coll = collector(tmp_path, window=3, horizon_ms=1000)
    stamp = {"A": 1, "B": 2, "C": 3, "D": 5, "X": 4}
    coll.events([(event(e, "u", T0 + stamp[e]), 1000 * stamp[e]) for e in ("A", "B", "C", "D", "X")])
    coll.flush()
    coll.labels([(label("A", "u", 0), 5050)])  # after the horizon; only D (5000) can still be labelled
    coll.flush()
    coll.labels([(label("D", "u", 1), 5100)])
    coll.flush()
    assert window_ids(by_id(coll.store)["D"]) == ("B", "C", "D")
    assert coll.store.counts() == Counter({("labels", "after_horizon"): 1})
    coll.store.close()


def test_window_length_is_respected(tmp_path):
    coll = collector(tmp_path, window=4)
    coll.events([(event(f"e{i}", "u", T0 + i), 1000 + i) for i in range(10)])
    coll.labels([(label(f"e{i}", "u", i % 2), 2000) for i in range(10)])
    coll.flush()
    windows = {e: window_ids(s) for e, s in by_id(coll.store).items()}
    assert windows == {f"e{i}": tuple(f"e{j}" for j in range(max(0, i - 3), i + 1)) for i in range(10)}
    coll.store.close()


# -- early labels ------------------------------------------------------------------------------------


def test_an_early_label_is_applied_when_its_event_comes_across_flushes_and_a_reopen(tmp_path):
    coll = collector(tmp_path)
    coll.labels([(label("a", "u", 1), 1000), (label("b", "u", 0), 1000)])
    coll.flush()
    coll.labels([(label("b", "u", 1), 1500)])  # the latest early label is the one that waits
    coll.events([(event("a", "u", T0), 900)])
    coll.flush()
    assert {(s.event_id, s.label) for s in coll.store.samples()} == {("a", 1)}
    coll.store.close()

    coll = collector(tmp_path)
    assert coll.store.samples()[0].labelled_ms == 1000
    coll.events([(event("b", "u", T0 + 1), 950)])
    coll.flush()
    samples = by_id(coll.store)
    assert {e: s.label for e, s in samples.items()} == {"a": 1, "b": 1}
    assert (samples["b"].published_ms, samples["b"].labelled_ms) == (950, 1500)
    assert window_ids(samples["b"]) == ("a", "b")
    assert coll.store.counts() == Counter()
    coll.store.close()


def test_an_early_label_in_the_same_batch_as_its_event(tmp_path):
    coll = collector(tmp_path)
    coll.labels([(label("a", "u", 1), 1000)])
    coll.events([(event("a", "u", T0), 1000)])
    coll.flush(settle=True)
    assert {(s.event_id, s.label) for s in coll.store.samples()} == {("a", 1)}
    assert coll.store.counts() == Counter()
    coll.store.close()


def test_a_label_naming_another_user_ends_unknown_and_does_not_block_the_right_one(tmp_path):
    coll = collector(tmp_path, horizon_ms=10_000)
    coll.labels([(label("a", "intruder", 1), 1000), (label("a", "u", 0), 1001)])
    coll.flush()
    coll.events([(event("a", "u", T0), 900)])
    coll.flush()
    assert {(s.event_id, s.user_id, s.label) for s in coll.store.samples()} == {("a", "u", 0)}
    assert coll.store.counts() == Counter()  # the wrong user's label still waits ...
    coll.events([(event("later", "v", T0 + 100), 20_000)])  # ... until events are a horizon past it
    coll.flush()
    assert coll.store.counts() == Counter({("labels", "unknown_event"): 1})
    assert {(s.event_id, s.user_id, s.label) for s in coll.store.samples()} == {("a", "u", 0)}
    coll.store.close()


def test_settle_expires_every_waiting_label(tmp_path):
    coll = collector(tmp_path)
    coll.labels([(label("a", "u", 1), 1000), (label("b", "u", 1), 1000)])
    coll.flush()
    coll.labels([(label("c", "v", 0), 1000)])
    flushed = coll.flush()
    assert flushed.counts == Counter() and coll.store.counts() == Counter()
    flushed = coll.flush(settle=True)
    assert flushed.counts == Counter({("labels", "unknown_event"): 3})
    assert coll.store.counts() == Counter({("labels", "unknown_event"): 3})
    coll.events([(event("a", "u", T0), 1000)])  # too late for its label: it has gone
    coll.flush()
    assert coll.store.samples() == []
    coll.store.close()


# -- the horizon -------------------------------------------------------------------------------------


def test_a_label_after_the_horizon_is_counted_and_makes_no_sample(tmp_path):
    coll = collector(tmp_path, horizon_ms=1000)
    coll.events([(event("a", "u", T0), 5000), (event("b", "u", T0 + 1), 5000)])
    coll.labels([(label("a", "u", 1), 6001), (label("b", "u", 1), 6000)])  # a: 1 ms too late; b: just in
    flushed = coll.flush()
    assert flushed.counts == Counter({("labels", "after_horizon"): 1})
    assert {s.event_id for s in coll.store.samples()} == {"b"}
    coll.store.close()


def test_events_beyond_the_horizon_are_pruned_but_the_context_stays(tmp_path):
    coll = collector(tmp_path, window=3, horizon_ms=1000)
    coll.events([(event(f"e{i}", "u", T0 + i), 1000 * i) for i in range(10)])
    coll.flush()
    assert coll.store.stats().pending == 10
    coll.labels([(label("e9", "u", 1), 9500)])  # labels now reach 8500: only e9 can still be labelled
    coll.flush()
    assert coll.store.stats().pending == 1
    held = UserEvents.from_bytes(coll.store.users(["u"])["u"][0], SCHEMA)
    assert held.history.event_ids == ("e7", "e8", "e9")  # the L - 1 before e9 stay
    coll.events([(event("e10", "u", T0 + 10), 10_000)])
    coll.labels([(label("e10", "u", 0), 10_100)])
    coll.flush()
    assert window_ids(by_id(coll.store)["e10"]) == ("e8", "e9", "e10")
    coll.labels([(label("e2", "u", 1), 10_200)])  # its event is gone: it waits, then expires
    coll.flush(settle=True)
    assert coll.store.counts() == Counter({("labels", "unknown_event"): 1})
    coll.store.close()


def test_a_labels_source_read_behind_the_others_keeps_its_events_from_being_pruned(tmp_path):
    coll = collector(tmp_path, window=2, horizon_ms=60_000)
    coll.reads("labels", ("labels", 0))
    coll.reads("labels", ("labels", 1))  # not fetched yet: it may hold labels for the events held now
    coll.events([(event(f"a{i}", "a", T0 + i), 1000 * i) for i in range(5)], ("events", 0))
    coll.events([(event("b0", "b", T0 + 70), 70_000)], ("events", 0))
    coll.labels([(label("b0", "b", 1), 71_000)], ("labels", 0))  # 71 s: a0 is past the horizon for it
    coll.flush()
    assert coll.watermark("labels") == -1
    coll.labels([(label("a0", "a", 1), 30_000)], ("labels", 1))  # 30 s after a0: within its horizon
    coll.flush()
    assert set(by_id(coll.store)) == {"a0", "b0"}
    assert coll.watermark("labels") == 30_000 and coll.watermark("labels", idle=[("labels", 1)]) == 71_000
    coll.store.close()


# -- latest label wins -------------------------------------------------------------------------------


def _segment_rows(store: WindowStore) -> int:
    return sum(rows for (rows,) in store._db.execute("SELECT rows FROM segments"))


def test_the_latest_label_wins_and_the_same_label_again_writes_nothing(tmp_path):
    coll = collector(tmp_path)
    coll.events([(event("a", "u", T0), 1000), (event("b", "u", T0 + 1), 1000)])
    coll.labels([(label("a", "u", 0), 1100), (label("b", "u", 1), 1100)])
    coll.flush()
    coll.labels([(label("a", "u", 1), 1200)])
    coll.flush()
    assert by_id(coll.store)["a"].label == 1
    coll.labels([(label("a", "u", 0), 1300)])
    coll.flush()
    samples = by_id(coll.store)
    assert (samples["a"].label, samples["a"].labelled_ms, samples["b"].label) == (0, 1300, 1)
    rows = _segment_rows(coll.store)
    files = sorted(p.name for p in (tmp_path / "segments").rglob("*.parquet"))

    coll.labels([(label("a", "u", 0), 1400), (label("b", "u", 1), 1400)])  # the same labels again
    coll.flush()
    assert _segment_rows(coll.store) == rows
    assert sorted(p.name for p in (tmp_path / "segments").rglob("*.parquet")) == files
    assert by_id(coll.store)["a"].labelled_ms == 1300
    coll.labels([(label("a", "u", 1), 1500), (label("a", "u", 0), 1501)])  # within one flush: the last
    coll.flush()
    assert by_id(coll.store)["a"].label == 0
    assert len(coll.store.samples()) == 2
    coll.store.close()


# -- refusals ----------------------------------------------------------------------------------------


def test_refused_records_are_counted_by_reason(tmp_path):
    coll = collector(tmp_path, max_event_bytes=400)
    good = {"event_id": "g", "user_id": "u", "ts": T0, "amount": 1.0, "channel": "web"}

    def with_(**fields) -> bytes:
        return json.dumps({**good, **fields}).encode()

    coll.events([
        (None, 1), (b"", 1), (b"{" + b" " * 400 + b"}", 1), (b"{x", 1), (b"[1]", 1),
        (json.dumps({k: v for k, v in good.items() if k != "amount"}).encode(), 1),  # missing_field
        (with_(amount="lots"), 1), (b'{"event_id": "n", "user_id": "u", "ts": 1, "amount": NaN, "channel": "w"}', 1),
        (with_(channel="x" * 300), 1), (with_(ts="yesterday"), 1),
        (with_(), 1), (with_(), 2), (with_(amount=2.0), 3),  # kept, duplicate_event, id_reused
    ])
    coll.labels([
        (b"{x", 1), (None, 1), (b"[0]", 1), (label("g", "u", 2), 1), (label("g", "u", True), 1),
        (label("g", "u", "yes"), 1), (json.dumps({"event_id": "g", "label": 1}).encode(), 1),
        (json.dumps({"event_id": "g", "user_id": "u", "label": None}).encode(), 1),
    ])
    flushed = coll.flush()
    expected = Counter({
        ("events", "tombstone"): 1, ("events", "empty"): 1, ("events", "oversize"): 1, ("events", "bad_json"): 1,
        ("events", "not_object"): 1, ("events", "missing_field"): 1, ("events", "bad_type"): 1,
        ("events", "non_finite"): 1, ("events", "long_text"): 1, ("events", "bad_timestamp"): 1,
        ("events", "duplicate_event"): 1, ("events", "id_reused"): 1,
        ("labels", "bad_json"): 3, ("labels", "bad_label"): 3, ("labels", "missing_field"): 2,
    })
    assert flushed.counts == expected
    assert coll.store.counts() == expected
    coll.labels([(b"{x", 1)])
    coll.flush()
    assert coll.store.counts() == expected + Counter({("labels", "bad_json"): 1})
    coll.store.close()


def test_label_ids_are_read_as_event_ids_are(tmp_path):
    """7 and 7.0 are the same id in an event (as in the file reader): a label must find the event either way."""
    coll = collector(tmp_path)
    coll.events([(json.dumps({"event_id": 7, "user_id": 3, "ts": T0, "amount": 1.0, "channel": "web"}).encode(),
                  1000)])
    coll.labels([(json.dumps({"event_id": 7.0, "user_id": 3.0, "label": 1}).encode(), 1100)])
    coll.flush(settle=True)
    assert {(s.event_id, s.user_id, s.label) for s in coll.store.samples()} == {("7", "3", 1)}
    assert coll.store.counts() == Counter()
    coll.store.close()


# -- crash safety ------------------------------------------------------------------------------------


def _topics(rng: random.Random) -> dict[tuple[str, int], list[tuple[int, Record]]]:
    """Records of an events topic with two partitions (users keyed to one) and a labels topic, with
    offsets; timestamps within a wide horizon, so nothing is pruned or expires before the end."""
    parts: dict[tuple[str, int], list[Record]] = {("ev", 0): [], ("ev", 1): [], ("lb", 0): []}
    for u in range(8):
        for i in range(12):
            ts = T0 + u * 10 + i * 3600
            parts["ev", u % 2].append((event(f"u{u}-{i}", f"u{u}", ts, float(i), "web"), int(ts * 1000)))
            if rng.random() < 0.7:
                parts["lb", 0].append((label(f"u{u}-{i}", f"u{u}", rng.choice([0, 1])), int(ts * 1000) + 5000))
    parts["ev", 1].insert(10, (b"{broken", 0))
    parts["ev", 0].insert(5, parts["ev", 0][3])  # duplicate
    parts["lb", 0].insert(7, (label("u0-1", "u0", 3), 0))
    parts["lb", 0].append((label("never", "u1", 1), 0))
    parts["lb", 0].sort(key=lambda record: record[1])
    return {tp: [(offset, record) for offset, record in enumerate(records)] for tp, records in parts.items()}


def _read(coll: Collector, topics: dict[tuple[str, int], list[tuple[int, Record]]], rng: random.Random,
          flush_chance: float, stop_after: int | None = None) -> bool:
    """Apply the records (from each partition's resume offset) in random batches across partitions, as a
    follower does; flush at random. With `stop_after`, stop there without flushing: False."""
    resume = coll.store.offsets()
    queues = {tp: [item for item in items if item[0] >= resume.get(tp, 0)] for tp, items in topics.items()}
    for tp in topics:
        coll.consumed(*tp, resume.get(tp, 0))
    applied = 0
    while any(queues.values()):
        tp = rng.choice([tp for tp, q in queues.items() if q])
        size = rng.randint(1, 9)
        batch, queues[tp] = queues[tp][:size], queues[tp][size:]
        (coll.events if tp[0] == "ev" else coll.labels)([record for _, record in batch])
        coll.consumed(*tp, batch[-1][0] + 1)
        applied += 1
        if stop_after is not None and applied == stop_after:
            return False
        if rng.random() < flush_chance:
            coll.flush()
    coll.flush(settle=True)
    return True


def _snapshot(store: WindowStore) -> tuple:
    samples = {(s.event_id, s.user_id, s.ts, s.label, s.published_ms, s.labelled_ms, s.window)
               for s in store.samples()}
    stats = store.stats()
    return samples, store.counts(), store.offsets(), stats.samples, stats.pending


def test_a_killed_collector_resumed_from_the_stored_offsets_equals_an_uninterrupted_run(tmp_path):
    topics = _topics(random.Random(3))
    whole = collector(tmp_path / "whole", horizon_ms=30 * DAY_MS)
    assert _read(whole, topics, random.Random(1), flush_chance=0.2)
    expected = _snapshot(whole.store)
    whole.store.close()
    assert len(expected[0]) > 30 and expected[1][("labels", "unknown_event")] == 1

    killed = collector(tmp_path / "killed", horizon_ms=30 * DAY_MS)
    assert not _read(killed, topics, random.Random(2), flush_chance=0.15, stop_after=12)
    flushed_offsets = killed.store.offsets()
    killed.store.close()  # the staged records since the last flush are lost with the process
    for _ in range(2):  # and once more, killed again before any flush
        resumed = collector(tmp_path / "killed", horizon_ms=30 * DAY_MS)
        assert resumed.store.offsets() == flushed_offsets
        assert not _read(resumed, topics, random.Random(4), flush_chance=0.0, stop_after=5)
        resumed.store.close()
    resumed = collector(tmp_path / "killed", horizon_ms=30 * DAY_MS)
    assert _read(resumed, topics, random.Random(5), flush_chance=0.25)
    assert _snapshot(resumed.store) == expected
    resumed.store.close()


# -- the rebuild's table -----------------------------------------------------------------------------


def test_samples_table_of_in_order_events_equals_the_file_readers_table(tmp_path):
    rng = random.Random(11)
    rows = []
    for user in ("u2", "u10", "u1"):
        ts = T0 + rng.uniform(0, 1000)
        for i in range(9):
            ts += 0.0 if i == 4 else rng.choice([0.25, 60.5, 3600.0])  # one tie, kept in arrival order
            amount = math.nan if i == 2 else float(np.float32(rng.uniform(-50, 50)))
            channel = None if i in (1, 6) else rng.choice(["web", "app", "pos"])
            labelled = i not in (0, 3, 4) or user == "u1"  # some events only as context
            rows.append({"user_id": user, "ts": ts, "label": float(i % 2) if labelled else math.nan,
                         "event_id": f"{user}-{i}", "amount": amount, "channel": channel})
    coll = collector(tmp_path, window=4)
    coll.events([(event(r["event_id"], r["user_id"], r["ts"], None if math.isnan(r["amount"]) else r["amount"],
                        r["channel"]), 1000 + n) for n, r in enumerate(rows)])
    coll.labels([(label(r["event_id"], r["user_id"], int(r["label"])), 5000) for r in rows
                 if not math.isnan(r["label"])])
    coll.flush(settle=True)

    table = samples_table(coll.store.samples(), SCHEMA, 4, "test")
    frame = pd.DataFrame(rows).astype({"channel": object})
    frame["channel"] = frame["channel"].where(frame["channel"].notna(), np.nan)
    expected = events_from_frame(frame, categorical=["channel"])
    assert (table.numeric, table.categorical) == (expected.numeric, expected.categorical)
    pd.testing.assert_frame_equal(table.frame, expected.frame)
    np.testing.assert_array_equal(table.user_start, expected.user_start)
    coll.store.close()
