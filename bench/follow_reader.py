"""The readers bench_follow measures, each in a process of its own (so its memory is its own):

- ``bare``: an aiokafka consumer assigned every partition of both topics, reading them from the
  start to their end offsets and touching each record, nothing else; the same consumer settings
  and batch size as the builder's follower (the ceiling of what the follower could ingest).
- ``catch-up``: the builder's `Follower` into a fresh `WindowStore`, read to the end offsets and
  settled, as a one-off build does (``Follower.catch_up``).
- ``follow``: the `Follower` running as the builder service runs it (``Follower.run`` in a thread,
  with the service's metrics), while the benchmark produces; every ``--report-every`` events it
  reports the process's memory and the window store's size (and, more often, how far it read), and
  it stops once ``--expect-events`` and ``--expect-labels`` records were read.

Every line on stdout is one JSON object; the last one is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from compression_builder.collector import EVENTS, LABELS, Collector
from compression_builder.follower import FETCH_RECORDS, Follower
from compression_builder.metrics import BuilderMetrics
from compression_builder.window_store import Caps, WindowStore
from ecseq.decoding import EventSchema
from ecseq.settings import parse_duration
from kafka_io import KafkaClientConfig, topic_partitions

CAUGHT_UP = re.compile(r"caught up: (\d+) events and (\d+) labels read in ([0-9.]+) s")


def memory_mb() -> dict[str, float]:
    """This process's resident memory now and its peak (VmHWM), in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_rss_mb": round(fields["VmHWM"], 1)}


def directory_bytes(root: Path) -> dict[str, int]:
    """Bytes on disk under the store: its SQLite state (with the WAL, also apart) and its sample segments."""
    state = sum(p.stat().st_size for p in root.glob("state.sqlite*"))
    wal = root / "state.sqlite-wal"
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    segments = files = 0
    for path in (root / "segments").rglob("*.parquet"):
        segments += path.stat().st_size
        files += 1
    return {"state_bytes": state, "wal_bytes": wal_bytes, "segment_bytes": segments, "segment_files": files}


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


async def bare(kafka: KafkaClientConfig, topics: list[str]) -> dict:
    counts = topic_partitions(kafka)
    tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        records = payload = 0
        started = time.perf_counter()
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            for _, messages in (await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)).items():
                for message in messages:
                    records += 1
                    payload += len(message.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        read_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {"reader": "bare", "records": records, "value_bytes": payload, "read_s": read_s, **memory_mb()}


class CaughtUp(logging.Handler):
    """Keeps the follower's own "caught up: N events and M labels read in S s" figures."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: tuple[int, int, float] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = CAUGHT_UP.search(record.getMessage())
        if match:
            self.figures = (int(match.group(1)), int(match.group(2)), float(match.group(3)))


def make_follower(args: argparse.Namespace, kafka: KafkaClientConfig, metrics: BuilderMetrics,
                  store: WindowStore) -> Follower:
    schema = EventSchema(tuple(args.numeric.split(",")), tuple(args.categorical.split(",")))
    since = parse_duration(args.since) if args.since else None
    collector = Collector(store, schema, args.window, int(parse_duration(args.horizon) * 1000), since)
    # a service's follower starts a new store at `now - since`; --start-all reads every record there is
    return Follower(kafka, args.events_topic, args.labels_topic, collector, args.group,
                    None if args.start_all else since, parse_duration(args.flush_every), metrics)


def store_figures(metrics: BuilderMetrics, root: Path) -> dict:
    """The window store as the service's metrics saw it at the last flush, and its directory now."""
    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    return {"samples": {label: int(value("ecseq_builder_window_samples", label=label)) for label in ("0", "1")},
            "dropped": {f"{cause}_{label}": int(value("ecseq_builder_window_dropped_total", cause=cause, label=label))
                        for cause in ("cap", "retention") for label in ("0", "1")},
            "pending": int(value("ecseq_builder_pending_events")),
            "store_bytes": int(value("ecseq_builder_window_bytes")),
            "oldest_ts": value("ecseq_builder_window_oldest_event_timestamp_seconds"),
            "newest_ts": value("ecseq_builder_window_newest_event_timestamp_seconds"),
            **directory_bytes(root)}


def refused(metrics: BuilderMetrics) -> dict[str, int]:
    out = {}
    for family in metrics.registry.collect():
        if family.name == "ecseq_builder_follow_refused":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.value:
                    out[f"{sample.labels['kind']}.{sample.labels['reason']}"] = int(sample.value)
    return out


def catch_up(args: argparse.Namespace, kafka: KafkaClientConfig) -> dict:
    handler = CaughtUp()
    logging.getLogger("ecseq.builder").addHandler(handler)
    logging.getLogger("ecseq.builder").setLevel(logging.INFO)
    metrics = BuilderMetrics()
    store = WindowStore(args.store, Caps(*args.caps))
    try:
        follower = make_follower(args, kafka, metrics, store)
        before = memory_mb()
        started = time.perf_counter()
        follower.catch_up()
        wall_s = time.perf_counter() - started
    finally:
        store.close()
    if handler.figures is None:
        raise SystemExit("the follower never logged that it caught up")
    events, labels, read_s = handler.figures
    return {"reader": "follower", "events": events, "labels": labels, "records": events + labels,
            "read_s": read_s, "wall_s": wall_s, "memory_before": before, **memory_mb(),
            "store": store_figures(metrics, Path(args.store)), "refused": refused(metrics)}


def follow(args: argparse.Namespace, kafka: KafkaClientConfig) -> dict:
    """Follow as the service does and report memory and store size every --report-every events."""
    metrics = BuilderMetrics()
    store = WindowStore(args.store, Caps(*args.caps))
    follower = make_follower(args, kafka, metrics, store)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            follower.run(stop)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)
            stop.set()

    emit({"ready": True, **memory_mb()})
    started = time.perf_counter()
    thread = threading.Thread(target=run, name="follower")
    thread.start()
    next_report, reports, said = args.report_every, 0, (0, 0)
    try:
        while not stop.is_set():
            time.sleep(0.2)
            events, labels = follower.ingested[EVENTS], follower.ingested[LABELS]
            if (events, labels) != said:  # for the producer, which keeps only so far ahead
                emit({"progress": [events, labels]})
                said = (events, labels)
            if events >= next_report:
                emit({"events": events, "labels": labels, "seconds": round(time.perf_counter() - started, 2),
                      **memory_mb(), **store_figures(metrics, Path(args.store))})
                reports += 1
                next_report = (events // args.report_every + 1) * args.report_every
            if events >= args.expect_events and labels >= args.expect_labels:
                stop.set()
        thread.join()
    finally:
        stop.set()
        thread.join()
        store.close()
    if failure:
        raise failure[0]
    return {"reader": "follow", "events": follower.ingested[EVENTS], "labels": follower.ingested[LABELS],
            "seconds": time.perf_counter() - started, **memory_mb(), **store_figures(metrics, Path(args.store)),
            "refused": refused(metrics)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reader", choices=("bare", "catch-up", "follow"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--labels-topic", required=True)
    parser.add_argument("--store", help="the window store's directory (follower only)")
    parser.add_argument("--numeric", default="amount,hour,hours_since_prev")
    parser.add_argument("--categorical", default="mcc,device,country,channel")
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--since", default="30d", help="the window's event time span ('' = all)")
    parser.add_argument("--start-all", action="store_true", help="a new store reads every record, not now - since")
    parser.add_argument("--horizon", default="7d")
    parser.add_argument("--caps", type=int, nargs=2, default=(80_000, 20_000), metavar=("NEGATIVES", "POSITIVES"))
    parser.add_argument("--group", default=None)
    parser.add_argument("--flush-every", default="5s")
    parser.add_argument("--report-every", type=int, default=250_000)
    parser.add_argument("--expect-events", type=int, default=0)
    parser.add_argument("--expect-labels", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    kafka = KafkaClientConfig.of(args.bootstrap)
    if args.reader == "bare":
        result = asyncio.run(bare(kafka, [args.events_topic, args.labels_topic]))
    elif args.reader == "catch-up":
        result = catch_up(args, kafka)
    else:
        result = follow(args, kafka)
    emit({"pid": os.getpid(), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
