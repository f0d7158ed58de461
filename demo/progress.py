"""What the worker produced, as the demo reads it back: score records and dead letters, and the live line.

Scores are read from the scores topic the way any consumer would (no group, from the beginning),
deduplicated by event id (delivery is at-least-once), and timed on arrival: the event-to-score
latency is the input record's Kafka timestamp (set when the demo sent it) to the moment the demo
read the score, so it includes both trips through the broker.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from demo.replay import ReplayProgress
from kafka_io.client import KafkaClientConfig
from kafka_io.topics import partition_counts
from worker.outputs import HEADER_PREFIX

REASON_HEADER = HEADER_PREFIX + "reason"
TTY_EVERY = 0.25  # seconds between redraws of the one live line on a terminal
LOG_EVERY = 5.0  # ... and between printed lines otherwise
WINDOW = 5.0  # seconds of recent scores behind the live rate and percentiles


@dataclass(frozen=True)
class Seen:
    """One event's first score record, with the time the demo read it."""

    event_id: str
    score: float
    encoder_score: float
    version: str
    neighbours: int
    sent: float  # Kafka timestamp of the input event (the demo's clock when it sent it)
    scored: float  # when the worker scored it
    read: float  # when the demo read the score

    @property
    def latency(self) -> float:
        """Event sent -> scored (the demo and the worker share the machine's clock)."""
        return self.scored - self.sent

    @property
    def read_latency(self) -> float:
        """Event sent -> its score read back by the demo (adds delivery and the demo's read rounds)."""
        return self.read - self.sent


@dataclass
class Scores:
    seen: dict[str, Seen] = field(default_factory=dict)  # event id -> first score, in read order
    duplicates: int = 0
    dead_letters: Counter = field(default_factory=Counter)  # reason -> count
    versions: Counter = field(default_factory=Counter)  # artifact version -> events it scored

    def add_score(self, record: dict, read: float) -> None:
        event_id = record["event_id"]
        if event_id in self.seen:
            self.duplicates += 1
            return
        stamps = record["timestamps"]
        self.seen[event_id] = Seen(event_id, record["score"], record["encoder_score"], record["artifact_version"],
                                   record["neighbours"], stamps["kafka"], stamps["scored"], read)
        self.versions[record["artifact_version"]] += 1

    def recent(self, now: float, window: float = WINDOW) -> list[Seen]:
        """Scores read in the last `window` seconds (newest are at the end: dicts keep read order)."""
        out = []
        for seen in reversed(self.seen.values()):
            if seen.read < now - window:
                break
            out.append(seen)
        return out


async def follow(kafka: KafkaClientConfig, scores_topic: str, dead_letter_topic: str, scores: Scores,
                 stop: asyncio.Event) -> None:
    """Read both topics from the beginning into `scores` until `stop` is set."""
    counts = await partition_counts(kafka)
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in (scores_topic, dead_letter_topic)
                      for p in range(counts.get(topic, 0))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, messages in batches.items():
                for message in messages:
                    if tp.topic == scores_topic:
                        scores.add_score(json.loads(message.value), now)
                    else:
                        reason = dict(message.headers or ()).get(REASON_HEADER, b"unknown").decode()
                        scores.dead_letters[reason] += 1
    finally:
        await consumer.stop()


def progress_line(replay: ReplayProgress, total: int, scores: Scores, now: float) -> str:
    """sent, scored, events/s, p50/p99 latency, dead letters, the version serving now: one short line."""
    recent = scores.recent(now)
    latency = "-/-"
    if recent:
        p50, p99 = np.percentile([s.latency for s in recent], [50, 99]) * 1e3
        latency = f"{p50:.0f}/{p99:.0f}"
    span = min(WINDOW, now - next(iter(scores.seen.values())).read) if scores.seen else WINDOW
    rate = len(recent) / max(span, 1.0)
    serving = max(scores.versions) if scores.versions else "-"
    return (f"sent {replay.events:,}/{total:,}  scored {len(scores.seen):,}  {rate:,.0f} ev/s  "
            f"p50/p99 {latency} ms  dead letters {scores.dead_letters.total():,}  serving {serving}")


class Display:
    """The live line: rewritten in place on a terminal, printed every few seconds elsewhere."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = TTY_EVERY if self.tty else LOG_EVERY
        self._last = 0.0
        self._shown = False

    def update(self, line: str, now: float) -> None:
        if now - self._last < self.every:
            return
        self._last = now
        if self.tty:  # cut to the terminal's width: a wrapped line could not be rewritten in place
            self.out.write("\r\033[K" + line[:shutil.get_terminal_size().columns - 1])
            self._shown = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of its own (a step, an event), printed above the live line."""
        self.clear()
        print(text, file=self.out, flush=True)

    def clear(self) -> None:
        if self._shown:
            self.out.write("\r\033[K")
            self._shown = False
        self._last = 0.0  # redraw at the next update
