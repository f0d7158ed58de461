"""The builder's follower: its ingest rate, its memory and disk over millions of events, and a rebuild
from its window store, each against a baseline measured in the same run.

Starts Apache Kafka (one node) on loopback. Events are the synthetic data set's rows as the
worker's producers send them (compact JSON, keyed by user, missing values null), and every event
gets a label record {"event_id", "user_id", "label"}. Kafka timestamps are the events' own times,
moved so that the last label is a minute old; a label is stamped its event's time plus a delay
drawn from an exponential distribution (mean ``--label-delay``, so a few land after the 7 d label
horizon). The topics keep everything (retention.ms=-1). Parts (``--parts``, default all):

  rate     the default synthetic set (3,000 users, 138,736 events and as many labels), produced
           first; then, ``--rounds`` times, alternating: a bare aiokafka consumer reads both
           topics to their end (every partition assigned, records touched, nothing else:
           bench/follow_reader.py ``bare``), and the builder's Follower catches up into a fresh
           WindowStore (default caps 80,000 / 20,000, window 50, the synthetic set's columns,
           horizon 7 d, every record read: ``catch-up``), each in a process of its own. A rate is
           records (events + labels) per second from the first fetch to the end (the follower's
           own "caught up ... in S s", which includes writing what it read); figures are medians,
           the ratio the median of per-round ratios. One more follower run under py-spy shows
           where its time goes (sampling slows it down; not timed).
           Targets: follower >= 0.5x bare, and >= 2x the stream worker's max rate
           (``--worker-rate``, 4,000 events/s on this machine: a label per event doubles the
           records the builder must read to keep up).
  bounded  ``--events`` events of the synthetic generator with ``--users`` users (the first
           events in time of a run long enough), and their labels, produced ``--chunk`` events
           at a time (each chunk's events, then the labels stamped before its last event) while
           the follower follows as the builder service does (``follow``: its own thread, the
           service's metrics, window ``--since`` 30 d, horizon 7 d, default caps, a consumer
           group); the producer stays at most ``--lead`` events ahead of it, so it follows a
           live stream rather than a backlog. Every ``--report-every`` events it reports its
           resident and peak memory and the store's samples, drops and bytes. Once the window
           is full (both caps have dropped samples, and the users' context, each one's last
           window - 1 events, and the windows' mean length are within 5 % of where the whole
           input takes them), resident and peak memory, the samples' segments and the users'
           state must stay flat (within 10 %). Before that the store grows with the users'
           histories, as it must: give each user more events than the window (the full run
           below: window 20, 50 events a user).
  rebuild  the bench_rebuild window (synthetic, labels on the newest 100,000 events, the rest
           context): an encoder is trained (2 epochs), the same events and labels go through the
           follower's Collector into a WindowStore (caps large enough to hold all 100k), then a
           rebuild from it (read_window_store + the pipeline, the builder service's gather) and a
           rebuild from the event file (bench_rebuild's), each from a copy of the store holding
           only the trained encoder, ``--rebuild-rounds`` times alternating. Both tables are
           checked to give every labelled event the same label and window, and the window
           store's read is timed in its two steps (with cProfile's top functions).
           Target: rebuild from the window store <= 30 s; the ratio to the file's.

Full size: ``python -m bench.bench_follow --parts bounded --events 5000000 --window 20`` (20 min on
this 2-core machine; its first 500,000 events, the default, took 61 s of it).
Results: bench/results/follow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench.bench_rebuild import CATEGORICAL as FILE_CATEGORICAL
from bench.bench_rebuild import labelled_newest
from bench.common import RESULTS, report_checks, write_result
from compression_builder.collector import Collector
from compression_builder.pipeline import BuildConfig, EncoderConfig, train_fresh_encoder
from compression_builder.service import BuildJob
from compression_builder.sources import Gathered, read_event_file, read_window_store, samples_table
from compression_builder.window_store import Caps, WindowStore
from ecseq.artifacts import ArtifactStore, ModelBundle
from ecseq.data.events import EventTable
from ecseq.data.synthetic import generate_synthetic
from ecseq.decoding import EventSchema
from ecseq.encoders.training import EncoderTrainConfig
from ecseq.gnn_training import GNNTrainConfig
from ecseq.relation import RelationConfig
from ecseq.settings import parse_duration
from kafka_io import KafkaClientConfig, KafkaCluster, topic_partitions
from kafka_io.jars import kafka_version
from kafka_io.topics import admin_client

PARTITIONS = 4
EVENT_FIELDS = ("event_id", "user_id", "ts", "amount", "hour", "hours_since_prev", "mcc", "device", "country",
                "channel")
NUMERIC, CATEGORICAL = ("amount", "hour", "hours_since_prev"), ("mcc", "device", "country", "channel")
SCHEMA_OPTIONS = ("--numeric", ",".join(NUMERIC), "--categorical", ",".join(CATEGORICAL))  # the synthetic set's
WINDOW, SINCE, HORIZON = 50, "30d", "7d"
HORIZON_S = 7 * 86400.0
CAPS = Caps(negatives=80_000, positives=20_000)  # compression_builder/settings.py defaults
RATIO_TARGET, WORKER_MULTIPLE = 0.5, 2.0
REBUILD_TARGET_S = 30.0
FLAT = 1.10  # "flat": at most 10 % above its value when the window filled
FILLED = 0.95  # the users' context and mean window this close to where the whole input takes them: "full"
EVENTS_PER_USER_DAY = 0.257  # the synthetic generator's average (4.63M events from 100k users in 180 days)


# ------------------------------------------------------------------------------------------
# Records: the data set's rows as the worker's producers send them, and their labels.
# ------------------------------------------------------------------------------------------
def label_delays(n: int, mean_days: float, seed: int) -> np.ndarray:
    """Seconds from each event to its label: exponential, so a few come after the label horizon."""
    return np.random.default_rng(seed).exponential(mean_days * 86400, n)


def kafka_times(ts: np.ndarray, delays_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kafka timestamps (ms) of each event and of its label: event time moved so that the last label is
    a minute old (Kafka refuses records stamped more than an hour ahead of its clock)."""
    event_ms = np.round(ts * 1000).astype(np.int64)
    label_ms = event_ms + np.round(delays_s * 1000).astype(np.int64) + 1
    shift = int(time.time() * 1000) - 60_000 - int(label_ms.max())
    return event_ms + shift, label_ms + shift


def event_values(frame: pd.DataFrame) -> list[bytes]:
    """Compact JSON of each row's event fields (NaN as null, as the worker's producers send them)."""
    columns = [frame[name].tolist() for name in EVENT_FIELDS]
    return [orjson.dumps(dict(zip(EVENT_FIELDS, row, strict=True))) for row in zip(*columns, strict=True)]


def label_values(frame: pd.DataFrame) -> list[bytes]:
    return [orjson.dumps({"event_id": e, "user_id": u, "label": int(y)})
            for e, u, y in zip(frame["event_id"].tolist(), frame["user_id"].tolist(), frame["label"].tolist(),
                               strict=True)]


def create_topics(kafka: KafkaClientConfig, topics: list[str]) -> None:
    """Topics that keep every record (the default retention would delete records stamped > 7 d ago)."""
    async def job() -> None:
        async with admin_client(kafka, 30.0) as admin:
            await admin.create_topics([NewTopic(t, PARTITIONS, 1, topic_configs={"retention.ms": "-1",
                                                                                 "retention.bytes": "-1"})
                                       for t in topics])
    asyncio.run(job())
    while not set(topics) <= set(topic_partitions(kafka)):
        time.sleep(0.05)


class Producer:
    """Record batches per partition (the user's key picks it) with explicit timestamps, acks=all."""

    def __init__(self, kafka: KafkaClientConfig) -> None:
        self.kafka = kafka
        self.loop = asyncio.new_event_loop()
        self.producer = self.loop.run_until_complete(self._start())

    async def _start(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self.kafka.aiokafka(), acks="all", max_batch_size=512 * 1024,
                                    request_timeout_ms=60_000)
        await producer.start()
        return producer

    def send(self, topic: str, keys: list[bytes], values: list[bytes], stamps: np.ndarray) -> None:
        self.loop.run_until_complete(self._send(topic, keys, values, stamps.tolist()))

    async def _send(self, topic: str, keys: list[bytes], values: list[bytes], stamps: list[int]) -> None:
        batches, pending = {}, []
        for key, value, stamp in zip(keys, values, stamps, strict=True):
            partition = zlib.crc32(key) % PARTITIONS
            batch = batches.get(partition) or batches.setdefault(partition, self.producer.create_batch())
            if batch.append(key=key, value=value, timestamp=stamp) is None:
                pending.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=stamp)
        for partition, batch in batches.items():
            if batch.record_count():
                pending.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)

    def close(self) -> None:
        self.loop.run_until_complete(self.producer.stop())
        self.loop.close()


def produce_all(kafka: KafkaClientConfig, events_topic: str, labels_topic: str, frame: pd.DataFrame,
                event_ms: np.ndarray, label_ms: np.ndarray, chunk: int = 100_000) -> None:
    producer = Producer(kafka)
    try:
        for start in range(0, len(frame), chunk):
            part = frame.iloc[start:start + chunk]
            keys = [u.encode() for u in part["user_id"].tolist()]
            producer.send(events_topic, keys, event_values(part), event_ms[start:start + chunk])
            order = np.argsort(label_ms[start:start + chunk], kind="stable")
            labels = label_values(part)
            producer.send(labels_topic, [keys[i] for i in order], [labels[i] for i in order],
                          label_ms[start:start + chunk][order])
    finally:
        producer.close()


# ------------------------------------------------------------------------------------------
# The readers, each a process of its own (bench/follow_reader.py).
# ------------------------------------------------------------------------------------------
def reader_argv(reader: str, bootstrap: str, events_topic: str, labels_topic: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bench.follow_reader", reader, "--bootstrap", bootstrap,
            "--events-topic", events_topic, "--labels-topic", labels_topic, *extra]


def run_reader(argv: list[str], timeout: float = 1800.0) -> dict:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:4])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_line(figures: dict) -> str:
    return f"RSS {figures['rss_mb']:.0f} MiB (peak {figures['peak_rss_mb']:.0f})"


# ------------------------------------------------------------------------------------------
# Part 1: follow rate against a bare consumer.
# ------------------------------------------------------------------------------------------
def part_rate(args: argparse.Namespace, bootstrap: str, tmp: Path) -> tuple[dict, dict[str, bool]]:
    kafka = KafkaClientConfig.of(bootstrap)
    frame = generate_synthetic(n_users=args.rate_users, seed=0)
    event_ms, label_ms = kafka_times(frame["ts"].to_numpy(), label_delays(len(frame), args.label_delay, 0))
    events_topic, labels_topic = "bench.rate.events", "bench.rate.labels"
    create_topics(kafka, [events_topic, labels_topic])
    started = time.perf_counter()
    produce_all(kafka, events_topic, labels_topic, frame, event_ms, label_ms)
    print(f"rate: produced {len(frame):,} events and as many labels in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    follower_options = [*SCHEMA_OPTIONS, "--since", "", "--start-all", "--window", str(WINDOW), "--horizon", HORIZON,
                        "--caps", str(CAPS.negatives), str(CAPS.positives)]
    bares, follows, ratios = [], [], []
    for round_ in range(args.rounds):
        bare = run_reader(reader_argv("bare", bootstrap, events_topic, labels_topic))
        store = tmp / f"rate-store-{round_}"
        follow = run_reader(reader_argv("catch-up", bootstrap, events_topic, labels_topic, "--store", str(store),
                                        "--group", f"bench-follow-{round_}", *follower_options))
        shutil.rmtree(store)
        bare_rate, follow_rate = bare["records"] / bare["read_s"], follow["records"] / follow["read_s"]
        bares.append(bare | {"rate": bare_rate})
        follows.append(follow | {"rate": follow_rate})
        ratios.append(follow_rate / bare_rate)
        print(f"  round {round_ + 1}: bare {bare_rate:,.0f} records/s ({bare['records']:,} in {bare['read_s']:.2f} s)"
              f", follower {follow_rate:,.0f} records/s ({follow['records']:,} in {follow['read_s']:.2f} s, "
              f"{rss_line(follow)}): {follow_rate / bare_rate:.3f}x", file=sys.stderr)
    profile = profile_follower(bootstrap, events_topic, labels_topic, tmp, follower_options) if args.profile else None
    bare_rate = float(np.median([b["rate"] for b in bares]))
    follow_rate = float(np.median([f["rate"] for f in follows]))
    ratio = float(np.median(ratios))
    last = follows[-1]
    print(f"follow rate ({len(frame):,} events + {len(frame):,} labels, {args.rounds} rounds, medians): "
          f"follower {follow_rate:,.0f} records/s, bare consumer {bare_rate:,.0f} records/s: {ratio:.3f}x "
          f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}); {follow_rate / args.worker_rate:.1f}x the worker's "
          f"{args.worker_rate:,.0f} events/s")
    print(f"  window store after catch-up: samples {last['store']['samples']}, dropped {last['store']['dropped']}, "
          f"{last['store']['store_bytes'] / 2**20:.1f} MiB; refused {last['refused']}")
    if profile is not None:
        print(f"  where the follower's time goes (py-spy, {profile['samples']} busy samples at 200 Hz "
              "while following):")
        for name, share in profile["inclusive"].items():
            print(f"    {share * 100:5.1f} %  {name}")
        print("  innermost code (self time):")
        for name, share in list(profile["self"].items())[:12]:
            print(f"    {share * 100:5.1f} %  {name}")
    result = {"events": len(frame), "labels": len(frame), "follower_records_per_s": follow_rate,
              "bare_records_per_s": bare_rate, "ratio": ratio, "round_ratios": ratios,
              "worker_events_per_s": args.worker_rate, "over_worker": follow_rate / args.worker_rate,
              "bare": bares, "follower": follows, "profile": profile}
    checks = {"follower_ge_0.5x_bare": ratio >= RATIO_TARGET,
              "follower_ge_2x_worker_rate": follow_rate >= WORKER_MULTIPLE * args.worker_rate}
    return result, checks


# Where the follower's samples go: (name, a function that must be on the stack), outermost first.
PHASES = (
    ("fetch: AIOKafkaConsumer.getmany (aiokafka's fetch, record parsing)", "AIOKafkaConsumer.getmany"),
    ("apply events: Collector.events", "Collector.events"),
    ("  decode_event", "decode_event"),
    ("  UserEvents.add (UserHistory.append)", "UserEvents.add"),
    ("apply labels: Collector.labels", "Collector.labels"),
    ("  WindowStore.admits (the caps' hash threshold)", "WindowStore.admits"),
    ("a sample's window as history bytes: UserEvents.window (from a label, or an event it waited for)",
     "UserEvents.window"),
    ("load users: Collector._load (WindowStore.users, UserEvents.from_bytes)", "Collector._load"),
    ("flush: Collector.flush", "Collector.flush"),
    ("  UserEvents.prune + to_bytes", "UserEvents.to_bytes"),
    ("  WindowStore.commit", "WindowStore.commit"),
    ("    segments: _write_segments (Arrow table, Parquet, fsync)", "WindowStore._write_segments"),
    ("    index: _index (SQLite, a row per sample)", "WindowStore._index"),
    ("    _enforce_caps + _retain", "WindowStore._enforce_caps"),
    ("    users, early labels, offsets: _apply_state", "WindowStore._apply_state"),
    ("    compaction: _compact_if_needed", "WindowStore._compact_if_needed"),
    ("metrics: observe_flush + WindowStore.stats", "WindowStore.stats"),
    ("lag gauge: AIOKafkaConsumer.position / highwater", "AIOKafkaConsumer.position"),
)
SELF_GROUPS = (  # the innermost frame's code, first match
    ("pyarrow (Parquet)", "/pyarrow/"),
    ("aiokafka", "/aiokafka/"),
    ("decoding (ecseq/decoding.py, orjson)", "/ecseq/decoding.py"),
    ("UserHistory (ecseq/history.py)", "/ecseq/history.py"),
    ("collector (compression_builder/collector.py)", "/compression_builder/collector.py"),
    ("window store: SQLite calls, hashing (window_store.py)", "/compression_builder/window_store.py"),
    ("follower (compression_builder/follower.py)", "/compression_builder/follower.py"),
    ("prometheus_client", "/prometheus_client/"),
    ("asyncio, selectors (the event loop)", "/asyncio/"),
    ("other site-packages", "/site-packages/"),
    ("standard library", "/lib/python3"),
)
FOLLOWING = ("Follower.catch_up (", "Follower.run (")  # samples outside these are the process's start-up


def profile_follower(bootstrap: str, events_topic: str, labels_topic: str, tmp: Path,
                     options: list[str]) -> dict:
    """One follower catch-up under py-spy (no --idle: only samples where it runs), summarised by phase
    (inclusive: a frame of that function on the stack) and by the innermost frame's code."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = tmp / "follower.pyspy"
    store = tmp / "profile-store"
    argv = [py_spy, "record", "--rate", "200", "--format", "raw", "--full-filenames", "--output", str(out), "--",
            *reader_argv("catch-up", bootstrap, events_topic, labels_topic, "--store", str(store), *options)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not out.exists():
        return {"error": done.stderr[-2000:]}
    shutil.rmtree(store, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, RESULTS / "follow-profile.txt")  # the raw stacks, for a closer look
    return summarise_stacks(out.read_text())


def summarise_stacks(raw: str) -> dict:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = startup = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        if not any(f.startswith(FOLLOWING) for f in frames):
            startup += n
            continue
        total += n
        names = {f.partition(" (")[0] for f in frames}
        for phase, function in PHASES:
            if function in names:
                inclusive[phase] += n
        innermost = frames[-1]
        own[next((group for group, part in SELF_GROUPS if part in innermost), "other: " + innermost[:80])] += n
    return {"samples": total, "startup_samples": startup,
            "inclusive": {phase: inclusive[phase] / max(total, 1) for phase, _ in PHASES},
            "self": {group: n / max(total, 1) for group, n in own.most_common()}}


# ------------------------------------------------------------------------------------------
# Part 2: millions of events through a running follower, memory and store size against input.
# ------------------------------------------------------------------------------------------
def bounded_frame(events: int, users: int) -> pd.DataFrame:
    """The first `events` events in time of a synthetic run just long enough to hold them."""
    days = max(30, math.ceil(events / (users * EVENTS_PER_USER_DAY) * 1.05))
    while len(frame := generate_synthetic(n_users=users, days=days, seed=0)) < events:
        days = math.ceil(days * events / len(frame) * 1.05)
    return frame.iloc[:events].reset_index(drop=True)


def part_bounded(args: argparse.Namespace, bootstrap: str, tmp: Path) -> tuple[dict, dict[str, bool]]:
    need = int(args.events * 2 * 300 * 1.5)  # events and labels in Kafka's logs, and the store, with room
    free = shutil.disk_usage(tmp).free
    if free < need:
        raise SystemExit(f"{tmp} has {free / 2**30:.1f} GiB free; {args.events:,} events need ~{need / 2**30:.1f}")
    kafka = KafkaClientConfig.of(bootstrap)
    started = time.perf_counter()
    frame = bounded_frame(args.events, args.users)
    event_ms, label_ms = kafka_times(frame["ts"].to_numpy(), label_delays(len(frame), args.label_delay, 1))
    span_days = (frame["ts"].iloc[-1] - frame["ts"].iloc[0]) / 86400
    print(f"bounded: {len(frame):,} events of {frame['user_id'].nunique():,} users over {span_days:.0f} days "
          f"(made in {time.perf_counter() - started:.0f} s), {len(frame):,} labels "
          f"({frame['label'].mean() * 100:.1f} % positive)", file=sys.stderr)
    events_topic, labels_topic = "bench.bounded.events", "bench.bounded.labels"
    create_topics(kafka, [events_topic, labels_topic])
    store = tmp / "bounded-store"
    argv = reader_argv("follow", bootstrap, events_topic, labels_topic, "--store", str(store), *SCHEMA_OPTIONS,
                       "--window", str(args.window), "--since", args.since, "--horizon", HORIZON,
                       "--caps", str(CAPS.negatives), str(CAPS.positives), "--group", "bench-follow",
                       "--report-every", str(args.report_every), "--expect-events", str(len(frame)),
                       "--expect-labels", str(len(frame)))
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    read = [0, 0]  # events, labels the follower has read
    ready = threading.Event()

    def read_lines() -> None:
        assert child.stdout is not None
        for text in child.stdout:
            line = json.loads(text)
            if "progress" in line:
                read[:] = line["progress"]
                continue
            lines.append(line)
            ready.set()
            if is_report(line):
                print_report(line)

    def follower_reached(events: int) -> None:
        while read[0] < events:
            if child.poll() is not None or not reader.is_alive():
                raise RuntimeError(f"the follower exited ({child.returncode}):\n{child.stderr.read()[-3000:]}")
            time.sleep(0.05)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    print_report_header()
    producer = Producer(kafka)
    try:
        if not ready.wait(120):
            raise RuntimeError("the follower did not start")
        produce_chunks(producer, events_topic, labels_topic, frame, event_ms, label_ms, args.chunk,
                       lambda start: follower_reached(start - args.lead))
        produced_s = time.perf_counter() - started
        child.wait(timeout=args.timeout)
    finally:
        producer.close()
        if child.poll() is None:
            child.terminate()
            child.wait(30)
    reader.join(10)
    if child.returncode != 0 or not lines or "reader" not in lines[-1]:
        raise RuntimeError(f"the follower failed ({child.returncode}):\n{child.stderr.read()[-3000:]}")
    final = lines[-1]
    reports = [line for line in lines if is_report(line)]
    return bounded_result(args, frame, lines[0], reports, final, produced_s)


def produce_chunks(producer: Producer, events_topic: str, labels_topic: str, frame: pd.DataFrame,
                   event_ms: np.ndarray, label_ms: np.ndarray, chunk: int, wait: Callable[[int], None]) -> None:
    """Events in time order, `chunk` at a time, each chunk followed by the labels stamped before its
    end; `wait(start)` before each chunk holds the producer until the follower is close enough."""
    keys_all = frame["user_id"].to_numpy()
    label_order = np.argsort(label_ms, kind="stable")
    sorted_label_ms = label_ms[label_order]
    labelled = 0
    for start in range(0, len(frame), chunk):
        wait(start)
        stop = min(start + chunk, len(frame))
        part = frame.iloc[start:stop]
        producer.send(events_topic, [u.encode() for u in part["user_id"].tolist()], event_values(part),
                      event_ms[start:stop])
        until = len(frame) if stop == len(frame) else int(np.searchsorted(sorted_label_ms, event_ms[stop - 1],
                                                                          side="right"))
        rows = label_order[labelled:until]
        producer.send(labels_topic, [u.encode() for u in keys_all[rows].tolist()], label_values(frame.iloc[rows]),
                      label_ms[rows])
        labelled = until


def is_report(line: dict) -> bool:
    return "events" in line and "rss_mb" in line and "reader" not in line


def print_report_header() -> None:
    print(f"{'events':>10} {'labels':>10} {'s':>7} {'RSS MiB':>8} {'peak':>6} {'neg':>7} {'pos':>7} "
          f"{'cap drops':>10} {'ret. drops':>10} {'pending':>8} {'state MiB':>9} {'(WAL)':>7} "
          f"{'segments MiB':>12} {'files':>5}", flush=True)


def print_report(line: dict) -> None:
    print(f"{line['events']:>10,} {line['labels']:>10,} {line['seconds']:>7.0f} {line['rss_mb']:>8.0f} "
          f"{line['peak_rss_mb']:>6.0f} {line['samples']['0']:>7,} {line['samples']['1']:>7,} "
          f"{drops(line, 'cap'):>10,} {drops(line, 'retention'):>10,} {line['pending']:>8,} "
          f"{line['state_bytes'] / 2**20:>9.1f} {line['wal_bytes'] / 2**20:>7.1f} "
          f"{line['segment_bytes'] / 2**20:>12.1f} {line['segment_files']:>5}", flush=True)


def drops(line: dict, cause: str) -> int:
    return line["dropped"][f"{cause}_0"] + line["dropped"][f"{cause}_1"]


def bounded_result(args: argparse.Namespace, frame: pd.DataFrame, ready: dict, reports: list[dict], final: dict,
                   produced_s: float) -> tuple[dict, dict[str, bool]]:
    print(f"bounded: {final['events']:,} events and {final['labels']:,} labels followed in {final['seconds']:.0f} s "
          f"({(final['events'] + final['labels']) / final['seconds']:,.0f} records/s, production included: "
          f"{produced_s:.0f} s); before following {rss_line(ready)}, at the end {rss_line(final)}")
    print(f"  at the end: samples {final['samples']}, dropped {final['dropped']}, pending {final['pending']:,}, "
          f"state {final['state_bytes'] / 2**20:.1f} MiB (after the last checkpoint), segments "
          f"{final['segment_bytes'] / 2**20:.1f} MiB in {final['segment_files']} files; refused {final['refused']}")
    per_user = frame.groupby("user_id", sort=False).size()
    bound = int(np.minimum(per_user.to_numpy(), args.window - 1).sum())
    print(f"  users' recent events are bounded by users x (window - 1) context (+ those within the horizon): "
          f"{bound:,} events here ({bound / len(frame) * 100:.0f} % of the input; {per_user.mean():.0f} events a "
          f"user on average)")
    workload(frame, args.window, parse_duration(args.since), [*reports, final])
    # Full: both caps have dropped samples (from then on, retention and the caps hold the samples), and
    # the users' context and the windows' mean length are within 5 % of where the whole input takes them
    # (before that, the store grows with the users' histories, as it must).
    full = next((i for i, r in enumerate(reports) if r["dropped"]["cap_0"] and r["dropped"]["cap_1"]
                 and r["context_events"] >= FILLED * bound and r["mean_window"] >= FILLED * final["mean_window"]),
                None)
    checks = {"caps_bind": any(r["dropped"]["cap_0"] and r["dropped"]["cap_1"] for r in [*reports, final]),
              "within_caps": all(r["samples"]["0"] <= CAPS.negatives and r["samples"]["1"] <= CAPS.positives
                                 for r in [*reports, final]),
              "retention_acts": final["dropped"]["retention_0"] > 0,
              "window_fills": full is not None}
    growth = {}
    if full is not None:
        at_full, tail = reports[full], reports[full:] + [final]
        for name, key in (("rss_mb", "rss_mb"), ("peak_rss_mb", "peak_rss_mb"), ("segments_bytes", "segment_bytes"),
                          ("state_bytes", "state_bytes")):
            growth[f"{name}_at_full"] = at_full[key]
            growth[f"{name}_after_full_max"] = max(r[key] for r in tail)
            checks[f"{name}_flat_after_full"] = growth[f"{name}_after_full_max"] <= FLAT * at_full[key]
        growth["window_full_at_events"] = at_full["events"]
        print(f"  window full (caps dropping, context and windows at their length) at {at_full['events']:,} events: "
              f"RSS then {at_full['rss_mb']:.0f} MiB, max after {growth['rss_mb_after_full_max']:.0f} MiB (peak "
              f"{growth['peak_rss_mb_at_full']:.0f} -> {growth['peak_rss_mb_after_full_max']:.0f}); segments then "
              f"{at_full['segment_bytes'] / 2**20:.1f} MiB, max after "
              f"{growth['segments_bytes_after_full_max'] / 2**20:.1f} MiB; state then "
              f"{at_full['state_bytes'] / 2**20:.1f} MiB, max after {growth['state_bytes_after_full_max'] / 2**20:.1f} "
              "MiB")
    else:
        print("  the window never filled: give more events per user (--events / --users) or a shorter --window")
    result = {"events": len(frame), "labels": len(frame), "users": int(per_user.size), "window": args.window,
              "since": args.since, "horizon": HORIZON, "caps": [CAPS.negatives, CAPS.positives],
              "report_every": args.report_every, "before": ready, "reports": reports, "final": final,
              "produced_s": produced_s, "context_bound_events": bound, **growth}
    return result, checks


def workload(frame: pd.DataFrame, window: int, since_s: float, reports: list[dict]) -> None:
    """What the store must hold at each report, from the input read so far: the users' context (each
    user's last window - 1 events), and the mean window length of the events within `since` of the
    newest (the samples are a uniform sample of them). Adds the store's bytes per unit of each to the
    reports and prints them: these stay flat while the totals grow with the users' histories."""
    users = pd.factorize(frame["user_id"])[0]
    length = np.minimum(frame.groupby("user_id", sort=False).cumcount().to_numpy() + 1, window)
    cumulative = np.concatenate([[0], np.cumsum(length)])
    ts = frame["ts"].to_numpy()
    print(f"{'events':>10} {'context':>10} {'state B/context event':>22} {'mean window':>11} "
          f"{'segment B/window event':>23}")
    for report in reports:
        read = min(report["events"], len(frame))
        context = int(np.minimum(np.bincount(users[:read]), window - 1).sum())
        first = int(np.searchsorted(ts[:read], ts[read - 1] - since_s))
        mean_window = float(cumulative[read] - cumulative[first]) / max(read - first, 1)
        samples = report["samples"]["0"] + report["samples"]["1"]
        report |= {"context_events": context, "mean_window": mean_window,
                   "state_per_context": report["state_bytes"] / max(context, 1),
                   "segments_per_window_event": report["segment_bytes"] / max(samples * mean_window, 1)}
        print(f"{report['events']:>10,} {context:>10,} {report['state_per_context']:>22.0f} {mean_window:>11.1f} "
              f"{report['segments_per_window_event']:>23.1f}")


# ------------------------------------------------------------------------------------------
# Part 3: a rebuild from the window store against one from the event file.
# ------------------------------------------------------------------------------------------
def part_rebuild(args: argparse.Namespace, tmp: Path) -> tuple[dict, dict[str, bool]]:
    frame = labelled_newest(args.n)
    events = tmp / "rebuild-events.parquet"
    frame.to_parquet(events)
    store = ArtifactStore(tmp / "rebuild-artifacts")
    config = BuildConfig(relation=RelationConfig(gnn=GNNTrainConfig(progress=False)))
    encoder = EncoderConfig(train=EncoderTrainConfig(epochs=2, progress=False))
    started = time.perf_counter()
    BuildJob(store, lambda _: read_event_file(events, FILE_CATEGORICAL), config, force=True).run(
        fresh=lambda g, clock: train_fresh_encoder(g, config, encoder, clock))
    bundle = store.load().bundle
    schema = EventSchema.from_spec(bundle.feature_spec)
    print(f"rebuild: setup, train-encoder (2 epochs) {time.perf_counter() - started:.1f} s; serving columns "
          f"{schema.numeric + schema.categorical}, window {bundle.window}", file=sys.stderr)

    labelled = frame[frame["label"].notna()]
    windows = WindowStore(tmp / "rebuild-window", Caps(negatives=len(labelled), positives=len(labelled)))
    fill_s = fill_store(windows, frame, schema, bundle.window)
    stats = windows.stats()
    print(f"  window store filled through the Collector in {fill_s:.1f} s "
          f"({2 * len(frame) - frame['label'].isna().sum():,} records, "
          f"{(2 * len(frame) - frame['label'].isna().sum()) / fill_s:,.0f} records/s without Kafka): samples "
          f"{stats.samples}, {stats.bytes / 2**20:.1f} MiB", file=sys.stderr)

    def from_file(b: ModelBundle) -> Gathered:
        schema = EventSchema.from_spec(b.feature_spec)
        return read_event_file(events, schema.categorical, list(schema.numeric))

    def from_window(b: ModelBundle) -> Gathered:
        return read_window_store(windows, EventSchema.from_spec(b.feature_spec), b.window, None,
                                 f"window store {windows.root}")

    reading = gather_parts(windows, schema, bundle.window, args.profile)
    same = same_windows(from_file(bundle).table, from_window(bundle).table, bundle.window)
    print(f"  read_window_store: samples() {reading['samples_s']:.2f} s + samples_table() {reading['table_s']:.2f} s; "
          f"every labelled event has the same label and window as the file's: {same}", file=sys.stderr)
    for line in reading.get("profile", []):
        print("    " + line, file=sys.stderr)

    runs: dict[str, list[dict]] = {"file": [], "window": []}
    try:
        for round_ in range(args.rebuild_rounds):
            for source, gather in (("window", from_window), ("file", from_file)):
                copy = tmp / f"rebuild-{source}-{round_}"
                shutil.copytree(store.root, copy)
                started = time.perf_counter()
                outcome = BuildJob(ArtifactStore(copy), gather, config, force=True).run()
                total_s = time.perf_counter() - started
                shutil.rmtree(copy)
                data = outcome.report["data"]
                runs[source].append({"total_s": total_s, "stage_seconds": outcome.stage_seconds,
                                     "labelled": data["labelled"], "events": data["events"],
                                     "metrics": outcome.report["metrics"]})
                print(f"  round {round_ + 1} {source}: {total_s:.1f} s from {data['labelled']:,} labelled sequences "
                      f"({data['events']:,} events): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in outcome.stage_seconds.items()), file=sys.stderr)
    finally:
        windows.close()
    window_s = float(np.median([r["total_s"] for r in runs["window"]]))
    file_s = float(np.median([r["total_s"] for r in runs["file"]]))
    print(f"rebuild from the window store ({runs['window'][0]['labelled']:,} labelled samples): {window_s:.1f} s, "
          f"from the event file: {file_s:.1f} s: {window_s / file_s:.2f}x (median of {args.rebuild_rounds}); "
          f"gather {np.median([r['stage_seconds']['gather'] for r in runs['window']]):.2f} s vs "
          f"{np.median([r['stage_seconds']['gather'] for r in runs['file']]):.2f} s")
    result = {"labelled": int(len(labelled)), "events": len(frame), "fill_s": fill_s,
              "window_total_s": window_s, "file_total_s": file_s, "ratio": window_s / file_s,
              "same_windows": same, "read_window_store": reading, "runs": runs}
    checks = {"window_rebuild_le_30s": window_s <= REBUILD_TARGET_S, "same_windows_as_the_file": same}
    return result, checks


def gather_parts(store: WindowStore, schema: EventSchema, window: int, profile: bool) -> dict:
    """read_window_store's two steps timed apart (the Parquet read, the table), and cProfile's top
    functions of the second."""
    started = time.perf_counter()
    samples = store.samples()
    samples_s = time.perf_counter() - started
    started = time.perf_counter()
    samples_table(samples, schema, window, "bench")
    out = {"samples_s": samples_s, "table_s": time.perf_counter() - started}
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(samples_table, samples, schema, window, "bench")
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
        lines = [line for line in text.getvalue().splitlines() if line.strip()]
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        out["profile"] = ["samples_table under cProfile, by own time:", *lines[start:]]
    return out


def same_windows(file: EventTable, window_store: EventTable, window: int) -> bool:
    """Whether both tables label the same events alike and give each the same window (its first
    event and its length)."""
    def windows(table: EventTable) -> dict:
        rows = table.labelled
        first = np.maximum(table.user_start[rows], rows - window + 1)
        ids = table.frame["event_id"].to_numpy()
        labels = table.frame["label"].to_numpy()[rows]
        return dict(zip(ids[rows].tolist(), zip(labels.tolist(), ids[first].tolist(), (rows - first).tolist(),
                                                strict=True), strict=True))
    return windows(file) == windows(window_store)


def fill_store(store: WindowStore, frame: pd.DataFrame, schema: EventSchema, window: int) -> float:
    """The frame's events and labels through the follower's Collector, in Kafka-time order, in the
    follower's batches (5,000 records, a flush every 50,000)."""
    # within the horizon, so that the window store holds every labelled event, as the file does
    delays = np.random.default_rng(2).uniform(60.0, 86400.0, len(frame))
    event_ms, label_ms = kafka_times(frame["ts"].to_numpy(), delays)
    labelled = frame["label"].notna().to_numpy()
    values = event_values(frame)
    labels = label_values(frame[labelled])
    records = sorted([(ms, 0, i) for i, ms in enumerate(event_ms.tolist())]
                     + [(ms, 1, j) for j, ms in enumerate(label_ms[labelled].tolist())])
    collector = Collector(store, schema, window, int(HORIZON_S * 1000), None)
    started = time.perf_counter()
    for kind, batch in _runs(records, 5_000):
        if kind == 0:
            collector.events((values[i], ms) for ms, _, i in batch)
        else:
            collector.labels((labels[j], ms) for ms, _, j in batch)
        if collector.records >= 50_000:
            collector.flush()
    collector.flush(settle=True)
    return time.perf_counter() - started


def _runs(records: list[tuple[int, int, int]], size: int) -> Iterator[tuple[int, list]]:
    """Consecutive records of one kind, at most `size` at a time."""
    batch: list = []
    for record in records:
        if batch and (record[1] != batch[0][1] or len(batch) >= size):
            yield batch[0][1], batch
            batch = []
        batch.append(record)
    if batch:
        yield batch[0][1], batch


# ------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="rate,rebuild,bounded", help="in this order (the long one last)")
    parser.add_argument("--rounds", type=int, default=3, help="rate: bare / follower rounds")
    parser.add_argument("--rate-users", type=int, default=3000, help="rate: users of the synthetic set")
    parser.add_argument("--worker-rate", type=float, default=4000.0, help="the stream worker's max events/s")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="rate: no py-spy run; rebuild: no cProfile of reading the window store")
    parser.add_argument("--events", type=int, default=500_000, help="bounded: events (the full run: 5000000)")
    parser.add_argument("--users", type=int, default=100_000, help="bounded: users")
    parser.add_argument("--window", type=int, default=WINDOW, help="bounded: the window length")
    parser.add_argument("--report-every", type=int, default=250_000, help="bounded: events between reports")
    parser.add_argument("--chunk", type=int, default=25_000, help="bounded: events produced at a time")
    parser.add_argument("--lead", type=int, default=50_000,
                        help="bounded: events the producer may be ahead of the follower")
    parser.add_argument("--since", default=SINCE, help="bounded: the window's event time span")
    parser.add_argument("--timeout", type=float, default=7200.0, help="bounded: seconds to wait for the follower")
    parser.add_argument("--label-delay", type=float, default=1.5, help="mean days from an event to its label")
    parser.add_argument("--n", type=int, default=100_000, help="rebuild: labelled samples")
    parser.add_argument("--rebuild-rounds", type=int, default=1)
    parser.add_argument("--name", default="follow", help="results file name")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"rate", "bounded", "rebuild"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    result: dict = {"kafka": kafka_version(), "load_before": os.getloadavg(), "args": vars(args)}
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="ecseq-bench-follow-") as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        if "rate" in parts or "bounded" in parts:
            cluster = stack.enter_context(KafkaCluster(nodes=1))
            print(f"apache kafka {kafka_version()} at {cluster.bootstrap}", file=sys.stderr)
        for part in parts:
            started = time.perf_counter()
            if part == "rate":
                result["rate"], part_checks = part_rate(args, cluster.bootstrap, tmp)
            elif part == "bounded":
                result["bounded"], part_checks = part_bounded(args, cluster.bootstrap, tmp)
            else:
                result["rebuild"], part_checks = part_rebuild(args, tmp)
            result[part]["seconds"] = time.perf_counter() - started
            result[part]["load_after"] = os.getloadavg()
            checks |= {f"{part}: {name}": ok for name, ok in part_checks.items()}
            write_result(args.name, {**result, "checks": checks})  # what is done so far, should a later part fail
            print(f"({part}: {result[part]['seconds']:.0f} s, load average after {os.getloadavg()[0]:.2f})",
                  file=sys.stderr)
    return report_checks(args.name, result, checks)


if __name__ == "__main__":
    sys.exit(main())
