"""The builder service killed (SIGKILL) while following and while rebuilding, and its window store lost:
after restarting it has what an uninterrupted builder has, and its next build publishes. Against a real broker."""

from __future__ import annotations

import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from compression_builder.window_store import Caps, WindowStore
from ecseq.artifacts import ArtifactStore
from ecseq.data.synthetic import generate_synthetic
from kafka_io.broker import free_port
from kafka_io.topics import ensure_topics, produce_json
from tests.builds import FAST
from tests.processes import child, terminate

if TYPE_CHECKING:
    from kafka_io.broker import KafkaCluster

FEATURES = ("amount", "hour", "hours_since_prev", "mcc", "device", "country", "channel")
# Negatives are capped below what the topics hold, so restarts also replay evictions from a full class.
CAPS = Caps(negatives=10_000, positives=20_000)
FLUSH_EVERY = "50ms"  # many flushes, so kills land before, during and after them
PARTITIONS = 3
# the follower's first line says where it starts: from the store's offsets, or (a new or lost store) from the topics
RESUMED = "from the window store's offsets"
REBUILDING = "rebuilding it from the topics' records"
CAUGHT_UP = "window store caught up"
LOST = "lost (its consumer group has committed offsets)"
STAGE_ENDS = "ecseq_builder_stage_duration_seconds_count"
PUBLISHED = "ecseq_builder_builds_total"
# Stages a build ends before "report" and "publish", in this order (compress and gnn end together).
EARLY_STAGES = ("gather", "featurise", "embed", "gnn", "evaluate")


def _json_value(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _event(row: Any) -> tuple[str, dict]:
    return row.user_id, {"event_id": row.event_id, "user_id": row.user_id, "ts": float(row.ts),
                         **{f: _json_value(getattr(row, f)) for f in FEATURES}}


def _label(row: Any, label: int) -> tuple[str, dict]:
    return row.user_id, {"event_id": row.event_id, "user_id": row.user_id, "label": label}


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """The builder's /metrics as {(sample name, labels): value}; {} while it is not serving yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _metric(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Run:
    """One builder process, and the part of its builder's log it wrote."""

    proc: subprocess.Popen
    log: Path
    start: int  # where this run's lines begin in the log
    metrics_port: int

    def text(self) -> str:
        return self.log.read_bytes()[self.start:].decode(errors="replace")

    def alive(self, deadline: float, waiting_for: str) -> None:
        assert self.proc.poll() is None, f"builder exited ({self.proc.returncode}):\n{self.text()}"
        assert time.monotonic() < deadline, f"no {waiting_for} in time:\n{self.text()}"

    def wait_for(self, *lines: str, timeout: float = 90.0) -> str:
        """Until this run has logged one of `lines`; everything it logged."""
        deadline = time.monotonic() + timeout
        while not any(line in (text := self.text()) for line in lines):
            self.alive(deadline, " or ".join(map(repr, lines)))
            time.sleep(0.05)
        return text

    def metric(self, name: str, **labels: str) -> float:
        return _metric(_scrape(self.metrics_port), name, **labels)

    def wait_metric(self, at_least: float, name: str, timeout: float = 90.0, **labels: str) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name, **labels) < at_least:
            self.alive(deadline, f"{name}{labels} >= {at_least}")
            time.sleep(0.02)

    def records_read(self) -> float:
        metrics = _scrape(self.metrics_port)
        return sum(_metric(metrics, "ecseq_builder_follow_records_total", kind=k) for k in ("events", "labels"))

    def wait_for_segment(self, data_dir: Path, timeout: float = 60.0) -> None:
        """Until a segment file (or a half-written one) the window store did not have appears."""
        segments, deadline = data_dir / "window-store" / "segments", time.monotonic() + timeout
        before = set(segments.rglob("*"))
        while not set(segments.rglob("*")) - before:
            self.alive(deadline, "new segment file")
            time.sleep(0.001)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        assert terminate(self.proc) == 0, self.text()


@dataclass
class Builder:
    """How to start the builder service on a pair of topics with its own window store and consumer group;
    every start appends to one log."""

    bootstrap: str
    store: Path
    events: str
    labels: str
    data_dir: Path
    group: str

    @property
    def log(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @contextmanager
    def running(self, every: str = "1h") -> Iterator[Run]:
        port = free_port()
        args = [sys.executable, "-m", "ecseq_cli", "builder", "--store", str(self.store), "--kafka", self.bootstrap,
                "--events-topic", self.events, "--labels-topic", self.labels, "--artifacts-topic",
                f"{self.events}.artifacts", "--every", every, "--since", "365d", "--data-dir", str(self.data_dir),
                "--metrics-port", str(port), "--force", *FAST]
        env = os.environ | {"ECSEQ_FOLLOW_FLUSH_EVERY": FLUSH_EVERY, "ECSEQ_BUILDER_GROUP": self.group,
                            "ECSEQ_WINDOW_NEGATIVES": str(CAPS.negatives),
                            "ECSEQ_WINDOW_POSITIVES": str(CAPS.positives)}
        start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out, child(args, stdout=out, stderr=subprocess.STDOUT, env=env) as proc:
            yield Run(proc, self.log, start, port)

    def garbage(self) -> set[str]:
        """Segment files the window store's index does not name (a flush or compaction killed half-way);
        read without opening the store, which would delete them."""
        root = self.data_dir / "window-store"
        files = {p.relative_to(root).as_posix() for p in (root / "segments").rglob("*") if p.is_file()}
        with closing(sqlite3.connect(f"file:{root / 'state.sqlite'}?mode=ro", uri=True)) as db:
            return files - {name for (name,) in db.execute("SELECT name FROM segments")}

    def contents(self) -> tuple[set[tuple[str, int, bytes]], Counter]:
        """The window store's samples as (event id, label, window), and its refusal counts."""
        store = WindowStore(self.data_dir / "window-store", CAPS)
        try:
            return {(s.event_id, s.label, s.window) for s in store.samples()}, store.counts()
        finally:
            store.close()


def _builder(broker: KafkaCluster, store: Path, topics: tuple[str, str], data_dir: Path, group: str) -> Builder:
    return Builder(broker.bootstrap, store, *topics, data_dir, group)


def _topics(broker: KafkaCluster, topic_names: Callable[[str], str], events: list, labels: list) -> tuple[str, str]:
    names = topic_names("events"), topic_names("labels")
    ensure_topics(broker.bootstrap, dict.fromkeys(names, PARTITIONS))
    for name, records in zip(names, (events, labels), strict=True):
        produce_json(broker.bootstrap, name, records)
    return names


@dataclass
class Stream:
    """Records for the two topics in two batches: the second is produced while the builder is down."""

    events: list
    labels: list
    later_events: list
    later_labels: list
    positives: int  # events whose last label is 1
    negatives: int
    counts: Counter  # the refusals these records make

    @property
    def records(self) -> int:
        return len(self.events) + len(self.labels) + len(self.later_events) + len(self.later_labels)


def _stream(seed: int) -> Stream:
    """~21k events of 1500 users, keyed by user. Labels for all in the end: some before their event,
    some changed from positive to negative; late (out-of-order) events, duplicates, garbage."""
    rng = random.Random(seed)
    frame = generate_synthetic(n_users=1500, days=20, seed=seed)
    cut = frame["ts"].quantile(0.85)
    first, later = frame[frame["ts"] < cut], frame[frame["ts"] >= cut]
    labelled_first = first.sample(frac=0.85, random_state=seed)
    early = later.sample(frac=0.5, random_state=seed)  # labelled in the first batch, their events come later
    # copies of earlier events stamped just after them, arriving in the second batch: not in the windows of
    # the events after them, which had arrived before
    late = first.sample(n=200, random_state=seed + 1).copy()
    late["event_id"] = [f"late{i}" for i in range(len(late))]
    late["ts"] += 1.0
    late["label"] = [float(rng.random() < 0.3) for _ in range(len(late))]
    # positive to negative only: an event relabelled out of a full class (the negatives) leaves a gap that the
    # samples the cap dropped before cannot fill, so what is kept would depend on the order labels were read in
    relabelled = labelled_first[labelled_first["label"] == 1].sample(n=150, random_state=seed)
    duplicates = first.sample(n=50, random_state=seed + 2)

    events = [_event(row) for row in first.itertuples()]
    for at in (100, 5_000, 15_000):
        events.insert(at, ("u1", b"{not json"))
    labels = [_label(row, int(row.label)) for row in pd.concat([labelled_first, early]).itertuples()]
    labels[300:300] = [("u1", b"\xff"), ("u2", {"event_id": "e", "user_id": "u2", "label": 2}),
                       ("u3", {"event_id": "e", "user_id": "u3", "label": "yes"}), ("u4", b"[")]
    later_events = [_event(row) for row in pd.concat([later, late, duplicates]).itertuples()]
    later_labels = [_label(row, int(row.label)) for row in
                    pd.concat([first.drop(labelled_first.index), later.drop(early.index), late]).itertuples()]
    later_labels += [_label(row, 0) for row in relabelled.itertuples()]
    final = pd.concat([frame, late])["label"].astype(int)
    positives = int(final.sum()) - len(relabelled)
    return Stream(events, labels, later_events, later_labels, positives, len(final) - positives,
                  Counter({("events", "bad_json"): 3, ("events", "duplicate_event"): len(duplicates),
                           ("labels", "bad_json"): 2, ("labels", "bad_label"): 2}))


def _small_stream(frame: pd.DataFrame) -> tuple[list, list]:
    events = [_event(row) for row in frame.itertuples()] + [("u1", b"{")]
    labels = [_label(row, int(row.label)) for row in frame.itertuples()] + [("u1", b"\x00")]
    return events, labels


def test_a_builder_killed_while_following_ends_with_what_an_uninterrupted_one_has(broker, topic_names, store,
                                                                                  tmp_path):
    stream = _stream(seed=3)
    topics = _topics(broker, topic_names, stream.events, stream.labels)
    killed = _builder(broker, store, topics, tmp_path / "killed", topic_names("group"))
    steady = _builder(broker, store, topics, tmp_path / "steady", topic_names("group"))
    rng = random.Random(11)
    garbage = []  # left by each kill in a flush

    with ExitStack() as running:
        # builds would only slow the followers down: with the build lock held here, builders skip them
        running.enter_context(ArtifactStore(store).build_lock())
        uninterrupted = running.enter_context(steady.running())  # it follows the second batch as it comes
        for kill in range(4):
            with killed.running() as run:
                started = run.wait_for(RESUMED, REBUILDING)
                assert (RESUMED in started) == (kill > 0)  # each killed run had flushed some of its reading
                target, deadline = rng.uniform(1_000, 8_000), time.monotonic() + 60
                while run.records_read() < target:
                    run.alive(deadline, f"{target:.0f} records read")
                    time.sleep(0.02)
                if kill % 2:
                    time.sleep(rng.uniform(0.0, 0.1))  # anywhere between two flushes
                else:  # in a flush, between its segment files and its transaction, or during that
                    run.wait_for_segment(killed.data_dir)
                    time.sleep(rng.uniform(0.0, 0.03))
                assert CAUGHT_UP not in run.text()  # still reading what was there at its start
                run.kill()
                if not kill % 2:
                    garbage.append(killed.garbage())
            if kill == 1:  # records that come while the killed builder is down
                produce_json(broker.bootstrap, topics[0], stream.later_events)
                produce_json(broker.bootstrap, topics[1], stream.later_labels)
        last = running.enter_context(killed.running())
        last.wait_for(CAUGHT_UP)
        last.stop()
        deadline = time.monotonic() + 90
        while uninterrupted.records_read() < stream.records:
            uninterrupted.alive(deadline, f"all {stream.records} records read")
            time.sleep(0.05)
        uninterrupted.stop()

    assert any(garbage), "no kill came between a flush's segment files and its transaction"
    assert not killed.garbage()  # removed when the store was opened again
    samples, counts = killed.contents()
    expected, expected_counts = steady.contents()
    different = sorted({event_id for event_id, _, _ in samples ^ expected})
    assert not different, f"{len(different)} samples differ from the uninterrupted builder's: {different[:10]}"
    assert counts == expected_counts == stream.counts  # every refused record counted once, however often read
    assert stream.negatives > CAPS.negatives
    assert Counter(label for _, label, _ in samples) == {0: CAPS.negatives, 1: stream.positives}


def test_a_builder_killed_during_a_rebuild_publishes_after_restarting(broker, topic_names, store, events_frame,
                                                                      tmp_path):
    topics = _topics(broker, topic_names, *_small_stream(events_frame))
    builder = _builder(broker, store, topics, tmp_path / "builder", topic_names("group"))
    artifacts = ArtifactStore(store)
    staging = store / ".staging"
    rng = random.Random(5)

    with builder.running() as run:  # killed in its first build, after a stage and before it publishes
        run.wait_metric(1, STAGE_ENDS, stage=rng.choice(EARLY_STAGES))
        time.sleep(rng.uniform(0.0, 0.1))
        assert run.metric(PUBLISHED, result="published") == 0
        run.kill()
    assert artifacts.current() == "v000001" and not os.listdir(staging)

    with builder.running() as run:  # killed while publishing: its staging directory is half-written
        deadline = time.monotonic() + 90
        while not os.listdir(staging):
            run.alive(deadline, "publish")
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.02))
        run.kill()
    leftovers = os.listdir(staging)
    assert artifacts.current() == "v000001"

    with builder.running() as run:
        run.wait_metric(1, PUBLISHED, result="published")
        run.stop()
    published = artifacts.current()
    assert published > "v000001"
    artifacts.verify(published)
    assert not os.listdir(staging)
    assert not leftovers or f"cleaned {len(leftovers)} staging leftover(s)" in run.text()
    log = builder.log.read_text()
    assert "skipping this round" not in log and "another builder" not in log  # no lock outlived its process


def test_a_lost_window_store_is_rebuilt_from_the_topics(broker, topic_names, store, events_frame, tmp_path):
    topics = _topics(broker, topic_names, *_small_stream(events_frame))
    builder = _builder(broker, store, topics, tmp_path / "builder", topic_names("group"))

    with ArtifactStore(store).build_lock():
        with builder.running() as run:
            run.wait_for(CAUGHT_UP)
            run.stop()
        assert "is empty" in run.text()
        before = builder.contents()
        assert len(before[0]) == len(events_frame)

        shutil.rmtree(builder.data_dir)
        with builder.running() as run:
            run.wait_for(CAUGHT_UP)
            run.stop()
        assert LOST in run.text()
    assert builder.contents() == before
