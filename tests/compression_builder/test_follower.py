"""The follower against a real broker: what it writes to the window store is what the Kafka-free
collector makes of the same records, and a one-off Kafka build trains what the file build trains."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewPartitions

from compression_builder import follower as follower_module
from compression_builder.collector import Collector
from compression_builder.follower import Follower
from compression_builder.window_store import Caps, WindowStore
from ecseq.artifacts import ArtifactStore
from ecseq.artifacts.names import ENCODER, FEATURE_SPEC, GNN, GOLDEN, GRAPH
from ecseq.artifacts.safe_npz import read_npz
from ecseq.decoding import EventSchema
from ecseq.history import UserHistory
from ecseq_cli import main
from kafka_io.client import KafkaClientConfig
from kafka_io.topics import admin_client, ensure_topics, produce_json, read_topic
from tests.builds import FAST

SCHEMA = EventSchema(("amount",), ("channel",))
WINDOW = 4
HORIZON_MS = 60_000
CHANNELS = ("web", "app", "pos")

Stamped = tuple[int, str, object]  # (Kafka timestamp in ms, key, value: a dict, raw bytes or None)


def _produce_stamped(bootstrap: str, topic: str, records: Sequence[Stamped], partition: int | None = None) -> None:
    """Send records with explicit Kafka timestamps, in order, and wait for every acknowledgement
    (produce_json stamps records with the time they are sent; these tests need event and label times);
    to `partition` if given, else by key."""

    async def send_all() -> None:
        producer = AIOKafkaProducer(**KafkaClientConfig.of(bootstrap).aiokafka(), acks="all")
        await producer.start()
        try:
            sent = [await producer.send(topic, value if value is None or isinstance(value, bytes)
                                        else json.dumps(value).encode(), key=key.encode(), timestamp_ms=stamp,
                                        partition=partition)
                    for stamp, key, value in records]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send_all())


def _event(event_id: str, user: str, ts: float, amount: float, channel: str) -> dict:
    return {"event_id": event_id, "user_id": user, "ts": ts, "amount": amount, "channel": channel}


def _label(event_id: str, user: str, label: object) -> dict:
    return {"event_id": event_id, "user_id": user, "label": label}


class Stream:
    """Events of 8 users and their late labels in three phases, with every case the collector must
    handle. Times are Kafka timestamps in ms from `base`; an event's `ts` is its timestamp in seconds
    (except the one sent out of time order)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.events: list[list[Stamped]] = [[], []]  # phase 1 (before the follower starts), phase 2
        self.labels: list[list[Stamped]] = [[], [], []]  # phases 1, 2 (the after-horizon label), 3
        self.expected: dict[str, int] = {}  # event id -> the label its sample must have
        self.window_of: dict[str, list[str]] = {}  # event id -> its window's event ids, as the worker saw it
        self._phase_one()
        self._phase_two()

    def _add_event(self, phase: int, at_ms: int, event_id: str, user: str, number: int,
                   ts: float | None = None) -> None:
        event = _event(event_id, user, (self.base + at_ms) / 1000 if ts is None else ts, float(number % 7) + 0.25,
                       CHANNELS[number % 3])
        self.events[phase].append((self.base + at_ms, user, event))

    def _phase_one(self) -> None:
        sent: list[tuple[str, str, int, int]] = []  # (event id, user, number, Kafka timestamp from base)
        for i in range(120):  # 15 events per user, 150 ms apart
            user = f"u{i % 8}"
            self._add_event(0, i * 150, f"e{i}", user, i)
            sent.append((f"e{i}", user, i, i * 150))
            if i == 83:  # after u3's 11th event (e83) comes one whose time is between its 9th (e67) and 10th (e75)
                self._add_event(0, i * 150 + 10, "late3", user, 3, ts=(self.base + 67 * 150) / 1000 + 0.01)
                sent.append(("late3", user, 3, i * 150 + 10))
        # what the worker scored them on: late3 had not arrived when e75 and e83 were scored
        self.window_of = {"e75": ["e51", "e59", "e67", "e75"], "e83": ["e59", "e67", "e75", "e83"],
                          "late3": ["e51", "e59", "e67", "late3"], "e91": ["late3", "e75", "e83", "e91"]}
        good = self.events[0][5][2]
        self.events[0] += [(self.base + 18_100 + n, "u5", value) for n, value in enumerate([
            b"{not json", None, b"[1]",  # bad_json, tombstone, not_object
            {k: v for k, v in good.items() if k != "amount"} | {"event_id": "x1"},  # missing_field
            good | {"event_id": "x2", "amount": "lots"},  # bad_type
            good | {"event_id": "x3", "amount": math.inf},  # non_finite
            good | {"event_id": "x4", "ts": "someday"},  # bad_timestamp
            good,  # duplicate_event
            good | {"amount": 99.0},  # id_reused
        ])]
        labels: list[Stamped] = []
        for event_id, user, number, at in sent:
            if event_id == "e6" or number % 5 == 4:  # e6 is labelled after the horizon (phase 2); some never
                continue
            label = int(number % 3 == 0)
            labels.append((self.base + at + 20_000 + (number * 37) % 10_000, user, _label(event_id, user, label)))
            self.expected[event_id] = label
        e10 = next(stamp for stamp, _, value in labels if value["event_id"] == "e10")
        e11 = next(stamp for stamp, _, value in labels if value["event_id"] == "e11")
        labels += [
            (e10 + 500, "u2", _label("e10", "u2", 0)),  # the same label again
            (e11 + 500, "u3", _label("e11", "u3", 1)),  # a correction: the latest label wins
            (self.base + 2_000, "u1", _label("ghost1", "u1", 1)),  # an event that never comes
            (self.base + 3_000, "u5", _label("e2", "u5", 1)),  # e2 is u2's, not u5's
            (self.base + 30_000, "u4", b"\xff\xfe"),  # bad_json
            (self.base + 30_001, "u4", None),  # a tombstone is not JSON either
            (self.base + 30_002, "u4", {"event_id": "e4", "user_id": "u4"}),  # missing_field
            (self.base + 30_003, "u4", _label("e4", "u4", 2)),  # bad_label
            (self.base + 30_004, "u4", _label("e4", "u4", True)),  # bad_label
        ]
        self.expected["e11"] = 1
        self.labels[0] = sorted(labels, key=lambda record: record[0])  # label times never go back

    def _phase_two(self) -> None:
        # e6 was stamped at 900 ms: a label at 61.9 s is a second after its horizon
        self.labels[1] = [(self.base + 900 + HORIZON_MS + 1000, "u6", _label("e6", "u6", 1))]
        labels = []
        for j in range(40):  # 5 more events per user, then their labels
            number = 120 + j
            at = 63_000 + j * 400
            self._add_event(1, at, f"e{number}", f"u{number % 8}", number)
            if j % 4 != 3:
                label = int(number % 3 == 0)
                labels.append((self.base + at + 5_000 + (j * 53) % 5_000, f"u{number % 8}",
                               _label(f"e{number}", f"u{number % 8}", label)))
                self.expected[f"e{number}"] = label
        labels.append((self.base + 95_000, "u1", _label("ghost2", "u1", 0)))  # still waiting at the end
        self.labels[2] = sorted(labels, key=lambda record: record[0])


def _follow(broker, events: str, labels: str, group: str, store: WindowStore, stream: Stream) -> None:
    """Run a service follower over `store` while the stream's phases are sent: the first before it
    starts, each next one once it read the last (so no later label makes the collector forget an
    event a label still to come needs); stopped once it read everything."""
    collector = Collector(store, SCHEMA, WINDOW, HORIZON_MS, since=None)
    caught_up, stop, failed = threading.Event(), threading.Event(), []
    follower = Follower(KafkaClientConfig.of(broker.bootstrap), events, labels, collector, group=group, since=None,
                        flush_every=0.05, caught_up=caught_up)

    def run() -> None:
        try:
            follower.run(stop)
        except BaseException as exc:  # the test's thread reports it
            failed.append(exc)

    def read_all(expected: int) -> None:
        deadline = time.monotonic() + 30
        while sum(follower.ingested.values()) < expected:
            assert not failed, f"the follower failed: {failed[0]!r}"
            assert time.monotonic() < deadline, f"the follower read {follower.ingested} of {expected} records"
            time.sleep(0.02)
        assert sum(follower.ingested.values()) == expected

    phases = [(stream.events[0], stream.labels[0]), (stream.events[1], stream.labels[1]), ([], stream.labels[2])]
    sent = 0
    thread = threading.Thread(target=run, name="follower")
    try:
        for number, (phase_events, phase_labels) in enumerate(phases):
            _produce_stamped(broker.bootstrap, events, phase_events)
            _produce_stamped(broker.bootstrap, labels, phase_labels)
            sent += len(phase_events) + len(phase_labels)
            if number == 0:
                thread.start()
                assert caught_up.wait(30), "the follower did not catch up"
            read_all(sent)
            time.sleep(0.2)  # a few flushes before the next phase
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
    assert not thread.is_alive() and not failed, failed


def test_the_followers_window_store_equals_a_kafka_free_replay_of_the_same_records(broker, topic_names, tmp_path):
    events, labels = topic_names("events"), topic_names("labels")
    ensure_topics(broker.bootstrap, {events: 2, labels: 2})
    stream = Stream(base=int(time.time() * 1000) - 600_000)
    followed = WindowStore(tmp_path / "followed", Caps(negatives=1000, positives=1000))
    replayed = WindowStore(tmp_path / "replayed", Caps(negatives=1000, positives=1000))
    try:
        _follow(broker, events, labels, topic_names("group"), followed, stream)

        # the Kafka-free replay: every event record in (partition, offset) order, then every label record
        event_records, label_records = read_topic(broker.bootstrap, events), read_topic(broker.bootstrap, labels)
        assert {r.partition for r in event_records} == {r.partition for r in label_records} == {0, 1}
        replay = Collector(replayed, SCHEMA, WINDOW, HORIZON_MS, since=None)
        replay.events([(r.value, r.timestamp_ms) for r in event_records])
        replay.labels([(r.value, r.timestamp_ms) for r in label_records])
        for topic, records in ((events, event_records), (labels, label_records)):
            for partition in (0, 1):
                replay.consumed(topic, partition, max(r.offset for r in records if r.partition == partition) + 1)
        replay.flush()

        samples = set(followed.samples())
        assert samples == set(replayed.samples())  # every field, the window's bytes included
        assert followed.counts() == replayed.counts() == Counter({
            ("events", "bad_json"): 1, ("events", "tombstone"): 1, ("events", "not_object"): 1,
            ("events", "missing_field"): 1, ("events", "bad_type"): 1, ("events", "non_finite"): 1,
            ("events", "bad_timestamp"): 1, ("events", "duplicate_event"): 1, ("events", "id_reused"): 1,
            ("labels", "bad_json"): 2, ("labels", "missing_field"): 1, ("labels", "bad_label"): 2,
            # ghost1 and e2-for-u5 expired once events came more than the horizon after them
            ("labels", "after_horizon"): 1, ("labels", "unknown_event"): 2})
        assert followed.offsets() == replayed.offsets()
        assert followed.has_early(("ghost2", "u1")) and replayed.has_early(("ghost2", "u1"))  # within the horizon

        by_id = {sample.event_id: sample for sample in samples}
        assert {event_id: sample.label for event_id, sample in by_id.items()} == stream.expected
        assert by_id["e11"].label == 1  # corrected from 0
        assert "e6" not in by_id  # its only label came after the horizon
        for event_id, window in stream.window_of.items():
            assert list(UserHistory.from_bytes(by_id[event_id].window, SCHEMA).event_ids) == window, event_id
        assert by_id["late3"].ts < by_id["e75"].ts  # out of time order: earlier than the event before it
    finally:
        followed.close()
        replayed.close()


def _add_partitions(bootstrap: str, topics: Sequence[str], total: int) -> None:
    async def add() -> None:
        async with admin_client(bootstrap, 30.0) as admin:
            await admin.create_partitions({topic: NewPartitions(total_count=total) for topic in topics})

    asyncio.run(add())


def test_partitions_added_while_following_are_followed_from_their_beginning(broker, topic_names, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(follower_module, "PARTITIONS_POLL", 0.2)
    events, labels = topic_names("events"), topic_names("labels")
    ensure_topics(broker.bootstrap, {events: 1, labels: 1})
    base = int(time.time() * 1000) - 60_000
    _produce_stamped(broker.bootstrap, events, [(base + i, "u1", _event(f"a{i}", "u1", 1000.0 + i, 1.0, "web"))
                                                for i in range(3)])
    store = WindowStore(tmp_path / "store", Caps(negatives=100, positives=100))
    caught_up, stop, failed = threading.Event(), threading.Event(), []
    follower = Follower(KafkaClientConfig.of(broker.bootstrap), events, labels,
                        Collector(store, SCHEMA, WINDOW, HORIZON_MS, since=None), group=None,  # no committed
                        since=None, flush_every=0.05, caught_up=caught_up)  # offsets to fall back on: positions kept

    def run() -> None:
        try:
            follower.run(stop)
        except BaseException as exc:  # the test's thread reports it
            failed.append(exc)

    thread = threading.Thread(target=run, name="follower")
    thread.start()
    try:
        assert caught_up.wait(30), "the follower did not catch up"
        _add_partitions(broker.bootstrap, [events, labels], 2)
        _produce_stamped(broker.bootstrap, events, [(base + 10 + i, "u2", _event(f"b{i}", "u2", 2000.0 + i, 2.0, "app"))
                                                    for i in range(3)], partition=1)
        _produce_stamped(broker.bootstrap, labels, [(base + 20, "u1", _label("a2", "u1", 1)),
                                                    (base + 21, "u2", _label("b2", "u2", 0))], partition=1)
        deadline = time.monotonic() + 30
        while sum(follower.ingested.values()) < 8 and time.monotonic() < deadline and not failed:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and not failed, failed
    try:
        assert follower.ingested == Counter({"events": 6, "labels": 2})  # partition 0 was not read again
        assert store.offsets() == {(events, 0): 3, (events, 1): 3, (labels, 0): 0, (labels, 1): 2}
        windows = {s.event_id: (s.label, UserHistory.from_bytes(s.window, SCHEMA).event_ids) for s in store.samples()}
        assert windows == {"a2": (1, ("a0", "a1", "a2")), "b2": (0, ("b0", "b1", "b2"))}
        assert not store.counts()
    finally:
        store.close()


# -- a rebuild from Kafka equals the build from the same events in a file ------------------------------------


def _exact_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Numerics as float32 values: the window store keeps them as float32 (the worker's history format)."""
    frame = frame.copy()
    for column in ("amount", "hour", "hours_since_prev"):
        frame[column] = frame[column].to_numpy(dtype=np.float32).astype(np.float64)
    return frame


def _json_value(value: object) -> object:
    return None if isinstance(value, float) and math.isnan(value) else value


def _arrays(version: Path, name: str) -> dict[str, np.ndarray]:
    return read_npz((version / name).read_bytes(), name, version.name)


def test_a_build_from_kafka_trains_what_the_file_build_of_the_same_events_trains(broker, topic_names, store,
                                                                                tmp_path, events_frame):
    users = sorted(events_frame["user_id"].unique())[:150]
    frame = _exact_floats(events_frame[events_frame["user_id"].isin(users)]).reset_index(drop=True)
    # unlabelled events too: every user's last one (after every window) and every 5th one (context)
    last = frame.groupby("user_id").cumcount(ascending=False) == 0
    frame.loc[last | (frame.index % 5 == 2), "label"] = np.nan
    csv = tmp_path / "events.csv"
    frame.to_csv(csv, index=False)

    events, labels = topic_names("events"), topic_names("labels")
    ensure_topics(broker.bootstrap, {events: 2, labels: 2})
    columns = [c for c in frame.columns if c != "label"]
    produce_json(broker.bootstrap, events, [(row["user_id"], {c: _json_value(row[c]) for c in columns})
                                            for row in frame.to_dict("records")])
    labelled = frame[frame["label"].notna()]
    produce_json(broker.bootstrap, labels, [(row.user_id, {"event_id": row.event_id, "user_id": row.user_id,
                                                           "label": int(row.label)}) for row in labelled.itertuples()])

    from_file = tmp_path / "file-store"
    shutil.copytree(store, from_file)
    assert main(["build", "--store", str(store), "--kafka", broker.bootstrap, "--events-topic", events,
                 "--labels-topic", labels, "--artifacts-topic", topic_names("artifacts"), "--force", *FAST]) == 0
    assert main(["build", "--store", str(from_file), "--events", str(csv), "--force", *FAST]) == 0

    kafka_built, file_built = ArtifactStore(store).load(), ArtifactStore(from_file).load()
    assert kafka_built.version == file_built.version == "v000002"
    assert (kafka_built.path / FEATURE_SPEC).read_bytes() == (file_built.path / FEATURE_SPEC).read_bytes()
    for name in (GRAPH, GNN, ENCODER, GOLDEN):
        ours, theirs = _arrays(kafka_built.path, name), _arrays(file_built.path, name)
        assert ours.keys() == theirs.keys(), name
        for key in ours:  # first the tensors, which say where they differ
            assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), (name, key)
        assert (kafka_built.path / name).read_bytes() == (file_built.path / name).read_bytes(), name

    kafka_data, file_data = kafka_built.manifest["data"], file_built.manifest["data"]
    for key in ("labelled", "from", "fit", "val", "holdout"):
        assert kafka_data[key] == file_data[key], key
    # a Kafka build only sees the labelled events' windows: not the users without a label, nor the
    # events after a user's last label (the file's newest event is one of those)
    assert file_data["users"] == len(users) and kafka_data["users"] == labelled["user_id"].nunique() < len(users)
    assert kafka_data["to"] == file_data["holdout"]["to"] < file_data["to"]
    assert file_data["events"] == len(frame)
