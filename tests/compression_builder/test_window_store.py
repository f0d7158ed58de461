"""The window store in process, fed by a collector: caps, retention, compaction, crash safety, its lock."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from compression_builder.collector import Collector
from compression_builder.window_store import Caps, Flush, Sample, WindowStore, WindowStoreError, day_of, event_hash
from ecseq.decoding import Event, EventSchema
from ecseq.history import UserHistory

SCHEMA = EventSchema(("amount",), ("channel",))
DAY = 86400
T0 = 1_700_006_400  # midnight UTC (2023-11-15)
WIDE = Caps(negatives=10_000, positives=10_000)
REPO = Path(__file__).resolve().parents[2]


def event(event_id: str, user_id: str, ts: float) -> bytes:
    return json.dumps({"event_id": event_id, "user_id": user_id, "ts": ts, "amount": 1.5, "channel": "web"}).encode()


def label(event_id: str, user_id: str, value: int) -> bytes:
    return json.dumps({"event_id": event_id, "user_id": user_id, "label": value}).encode()


def collector(root: Path, caps: Caps = WIDE, since: float | None = None) -> Collector:
    return Collector(WindowStore(root, caps), SCHEMA, 3, 365 * DAY * 1000, since)


def kept(store: WindowStore) -> dict[str, int]:
    return {s.event_id: s.label for s in store.samples()}


def parquet_files(root: Path) -> list[Path]:
    return sorted((root / "segments").rglob("*.parquet"))


def file_rows(root: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in parquet_files(root))


# -- caps --------------------------------------------------------------------------------------------


def test_caps_keep_each_class_s_smallest_hashes_whatever_the_order(tmp_path):
    rng = random.Random(5)
    truth = {f"e{i}": rng.choice([0, 1, 1, 0, 0]) for i in range(150)}
    caps = Caps(negatives=17, positives=9)
    expected = {}
    for cls in (0, 1):
        ids = sorted((e for e, value in truth.items() if value == cls), key=event_hash)
        expected.update({e: cls for e in ids[:caps.of(cls)]})
    offered = Counter(truth.values())
    assert offered[0] > caps.negatives and offered[1] > caps.positives

    for run in range(3):
        order = random.Random(run)
        coll = collector(tmp_path / f"run{run}", caps)
        ids = list(truth)
        order.shuffle(ids)
        coll.events([(event(e, f"u{int(e[1:]) % 7}", T0 + int(e[1:])), 1000) for e in sorted(truth)])
        dropped: Counter = Counter()
        while ids:
            size = order.randint(1, 20)
            batch, ids = ids[:size], ids[size:]
            coll.labels([(label(e, f"u{int(e[1:]) % 7}", truth[e]), 2000) for e in batch])
            if order.random() < 0.5:
                dropped += coll.flush().dropped
        dropped += coll.flush().dropped
        assert kept(coll.store) == expected
        assert dropped == Counter({("cap", 0): offered[0] - caps.negatives, ("cap", 1): offered[1] - caps.positives})
        assert coll.store.stats().samples == {0: caps.negatives, 1: caps.positives}
        coll.store.close()


def _ids_by_hash(count: int) -> list[str]:
    return sorted((f"h{i}" for i in range(count)), key=event_hash)


def test_a_held_sample_relabelled_into_a_full_class_where_it_does_not_fit_is_removed(tmp_path):
    ids = _ids_by_hash(12)  # ascending hashes
    positives = [ids[0], ids[1], ids[3]]
    negatives = [e for e in ids if e not in positives]
    coll = collector(tmp_path, Caps(negatives=100, positives=3))
    coll.events([(event(e, "u", T0 + n), 1000) for n, e in enumerate(sorted(ids))])
    coll.labels([(label(e, "u", 1), 1100) for e in positives] + [(label(e, "u", 0), 1100) for e in negatives])
    coll.flush()
    assert kept(coll.store) == {**dict.fromkeys(positives, 1), **dict.fromkeys(negatives, 0)}

    big = ids[-1]  # larger than every positive kept: does not fit the full class
    coll.labels([(label(big, "u", 1), 1200)])
    flushed = coll.flush()
    assert big not in kept(coll.store)  # the latest label wins, and that one is not kept
    assert flushed.dropped == Counter({("cap", 1): 1})

    staged = ids[-2]  # relabelled twice within one flush, the last into the full class
    coll.labels([(label(staged, "u", 1), 1300), (label(ids[-3], "u", 1), 1300), (label(ids[-3], "u", 0), 1301)])
    coll.flush()
    assert staged not in kept(coll.store) and kept(coll.store)[ids[-3]] == 0

    small = ids[2]  # smaller than the largest positive: it fits, and evicts that one
    coll.labels([(label(small, "u", 1), 1400)])
    flushed = coll.flush()
    assert {e for e, value in kept(coll.store).items() if value == 1} == {ids[0], ids[1], small}
    assert ids[3] not in kept(coll.store)
    assert flushed.dropped == Counter({("cap", 1): 1})
    coll.store.close()


def test_the_same_label_is_rewritten_only_when_the_window_differs(tmp_path):
    """Whether a sample changed is told by its label and its window's content (a replay changes nothing)."""
    def window(*ids: str) -> bytes:
        history = UserHistory.empty(SCHEMA)
        for n, e in enumerate(ids):
            history.append(Event(e, "u", T0 + n, (1.0,), ("web",)), 10)
        return history.to_bytes()

    store = WindowStore(tmp_path, WIDE)
    store.commit(Flush(samples={"b": Sample("b", "u", T0 + 1, 1, 1000, 1100, window("a", "b"))}))
    store.commit(Flush(samples={"b": Sample("b", "u", T0 + 1, 1, 1000, 1200, window("a", "b"))}))
    assert file_rows(tmp_path) == 1 and store.samples()[0].labelled_ms == 1100
    store.commit(Flush(samples={"b": Sample("b", "u", T0 + 1, 1, 1000, 1300, window("b"))}))
    assert file_rows(tmp_path) == 1 and store.samples()[0].window == window("b")
    store.close()


# -- retention ---------------------------------------------------------------------------------------


def test_retention_drops_whole_days_before_the_window_and_deletes_their_files(tmp_path):
    coll = collector(tmp_path, since=2 * DAY)
    times = {f"d{d}-{h}": T0 + d * DAY + h * 3600 for d in range(6) for h in (1, 13)}
    first = {e: ts for e, ts in times.items() if ts < T0 + 3 * DAY}
    coll.events([(event(e, "u", ts), 1000) for e, ts in first.items()])
    coll.labels([(label(e, "u", 0), 1100) for e in first])
    flushed = coll.flush()
    assert set(kept(coll.store)) == set(first) and flushed.dropped == Counter()
    assert len({p.parent.name for p in parquet_files(tmp_path)}) == 3

    rest = {e: ts for e, ts in times.items() if e not in first}
    coll.events([(event(e, "u", ts), 2000) for e, ts in rest.items()])
    coll.labels([(label(e, "u", 1), 2100) for e in rest])
    flushed = coll.flush()
    newest = T0 + 5 * DAY + 13 * 3600
    first_day = day_of(newest - 2 * DAY)  # day 3: days 0-2 go
    assert set(kept(coll.store)) == {e for e, ts in times.items() if day_of(ts) >= first_day}
    assert flushed.dropped == Counter({("retention", 0): 6})
    assert {p.parent.name for p in parquet_files(tmp_path)} == {"day=2023-11-18", "day=2023-11-19", "day=2023-11-20"}
    since = newest - 2 * DAY
    assert {s.event_id for s in coll.store.samples(since=since)} == {e for e, ts in times.items() if ts >= since}
    assert coll.store.stats().oldest_ts == T0 + 3 * DAY + 3600

    # a late sample of a day that left is dropped at once; one of the first day kept is kept as that day's
    # others are, whichever came first (the read filters both by time)
    coll.events([(event("old", "v", T0 + DAY), 3000), (event("edge", "v", T0 + 3 * DAY + 2 * 3600), 3000)])
    coll.labels([(label("old", "v", 1), 3100), (label("edge", "v", 1), 3100)])
    flushed = coll.flush()
    assert flushed.dropped == Counter({("retention", 1): 1})
    assert "old" not in kept(coll.store) and "edge" in kept(coll.store)
    assert "edge" not in {s.event_id for s in coll.store.samples(since=since)}
    coll.store.close()


# -- compaction --------------------------------------------------------------------------------------


def test_many_small_flushes_on_one_day_are_compacted_and_dead_rows_go(tmp_path):
    coll = collector(tmp_path, Caps(negatives=10_000, positives=4))
    labels = {}
    for n in range(20):
        ids = [f"s{n}-{k}" for k in range(2)]
        coll.events([(event(e, "u", T0 + 60 * n + k), 1000) for k, e in enumerate(ids)])
        coll.labels([(label(e, "u", 0), 1100) for e in ids])
        labels.update(dict.fromkeys(ids, 0))
        coll.flush()
        assert len(parquet_files(tmp_path)) <= 8
        assert kept(coll.store) == labels and file_rows(tmp_path) == len(labels)  # every row written is live

    relabelled = sorted(labels)[:30]  # relabelled into a class capped at 4: 26 leave, their rows die
    coll.labels([(label(e, "u", 1), 1200) for e in relabelled])
    coll.flush()
    positives = sorted(relabelled, key=event_hash)[:4]
    labels = {**{e: 0 for e in labels if e not in relabelled}, **dict.fromkeys(positives, 1)}
    assert kept(coll.store) == labels
    assert file_rows(tmp_path) == len(labels) and len(parquet_files(tmp_path)) == 1

    largest = max(event_hash(e) for e in positives)  # relabelled into the full class, these leave without
    late = [e for e in (f"t{i}" for i in range(40)) if event_hash(e) > largest][:20]  # a write on their day
    stay = [f"k{i}" for i in range(5)]
    coll.events([(event(e, "u", T0 + 3600 + i), 1300) for i, e in enumerate(late + stay)])
    coll.labels([(label(e, "u", 0), 1300) for e in late + stay])
    coll.flush()
    labels.update(dict.fromkeys(stay, 0))
    assert file_rows(tmp_path) == len(labels) + 20
    coll.labels([(label(e, "u", 1), 1400) for e in late])
    flushed = coll.flush()
    assert flushed.dropped == Counter({("cap", 1): 20})
    assert kept(coll.store) == labels
    assert file_rows(tmp_path) == len(labels)  # 20 dead rows, 19 live: the day was rewritten
    registered = {name for (name,) in coll.store._db.execute("SELECT name FROM segments")}
    assert registered == {p.relative_to(tmp_path).as_posix() for p in parquet_files(tmp_path)}
    coll.store.close()


# -- crash safety ------------------------------------------------------------------------------------


def test_unregistered_segment_files_are_deleted_on_open(tmp_path):
    coll = collector(tmp_path)
    coll.events([(event(f"e{i}", "u", T0 + i), 1000) for i in range(5)])
    coll.labels([(label(f"e{i}", "u", i % 2), 1100) for i in range(5)])
    coll.flush()
    before, files = kept(coll.store), parquet_files(tmp_path)
    coll.store.close()
    day = files[0].parent
    stray = day / "999999999999.parquet"
    shutil.copy(files[0], stray)  # written, never registered: a flush killed before its transaction
    other_day = tmp_path / "segments" / "day=2020-01-01"
    other_day.mkdir()
    (other_day / "000000000001.tmp").write_bytes(b"half a file")

    store = WindowStore(tmp_path, WIDE)
    assert not stray.exists() and not (other_day / "000000000001.tmp").exists()
    assert parquet_files(tmp_path) == files
    assert kept(store) == before
    store.close()


def test_a_flush_that_fails_in_its_transaction_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    """The service's follower retries with a new collector on the same open store, then, restarted, on
    a reopened one: both must see the store as the last committed flush left it."""
    records = [(event("a", "u", T0), 1000), (event("b", "u", T0 + 1), 1000)]
    coll = collector(tmp_path)
    coll.events(records[:1])
    coll.labels([(label("a", "u", 1), 1100), (label("b", "u", 0), 1100)])  # b's label waits for b
    coll.consumed("ev", 0, 1)
    coll.flush()
    files, store = parquet_files(tmp_path), coll.store
    coll.events(records[1:])
    coll.consumed("ev", 0, 2)

    def fail(*args) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(WindowStore, "_empty_segments", fail)  # after the state is written, before commit
    with pytest.raises(OSError):
        coll.flush()
    monkeypatch.undo()
    assert len(parquet_files(tmp_path)) == len(files) + 1  # b's segment was written
    assert kept(store) == {"a": 1} and store.offsets() == {("ev", 0): 1} and store.stats().pending == 1

    retry = Collector(store, SCHEMA, 3, 365 * DAY * 1000, None)
    retry.events(records[store.offsets()["ev", 0]:])
    retry.consumed("ev", 0, 2)
    retry.flush()
    assert kept(store) == {"a": 1, "b": 0} and store.stats().pending == 2
    store.close()

    store = WindowStore(tmp_path, WIDE)
    assert len(parquet_files(tmp_path)) == len(files) + 1  # the failed flush's file, never registered, is gone
    assert kept(store) == {"a": 1, "b": 0} and store.stats().pending == 2
    store.close()


# -- the lock ----------------------------------------------------------------------------------------

_OPEN_IN_CHILD = """
import sys
from compression_builder.window_store import Caps, WindowStore, WindowStoreError
try:
    WindowStore(sys.argv[1], Caps(1, 1)).close()
except WindowStoreError as exc:
    print("refused:", exc)
else:
    print("opened")
"""


def _open_in_child(root: Path) -> str:
    done = subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, str(root)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_second_open_fails_while_the_store_is_in_use(tmp_path):
    import os

    store = WindowStore(tmp_path, WIDE)
    answer = _open_in_child(tmp_path)
    assert answer.startswith("refused:") and f"pid {os.getpid()}" in answer
    with pytest.raises(WindowStoreError, match="another builder"):  # flock is per open file: in-process too
        WindowStore(tmp_path, WIDE)
    store.close()
    assert _open_in_child(tmp_path) == "opened"


def test_an_unusable_directory_fails_and_is_not_left_locked(tmp_path):
    (tmp_path / "state.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(WindowStoreError, match="cannot use window store"):
        WindowStore(tmp_path, WIDE)
    (tmp_path / "state.sqlite").unlink()
    store = WindowStore(tmp_path, WIDE)  # the failed open did not keep the lock
    assert store.samples() == []
    store.close()
