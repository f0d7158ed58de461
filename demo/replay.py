"""The replay: held-out events into Kafka in time order at a steady rate, each label a fixed number of
events after its event (labels arrive late in production too), and a few malformed events in between
so the dead-letter path shows. Everything is planned up front, so the pacing loop only sends bytes.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from aiokafka import AIOKafkaProducer

from ecseq.data.cleaning import BAD_TYPE, MISSING_FIELD, NON_FINITE
from ecseq.data.events import EVENT_ID, LABEL, TS, USER
from ecseq.decoding import BAD_JSON
from kafka_io.client import KafkaClientConfig

LABEL_DELAY_EVENTS = 200  # a label is sent right after the event this many events later
MALFORMED_EVERY = 200  # one malformed event after every 200th valid one: 0.5 %
# Each kind is named by the dead-letter reason the worker must give it.
MALFORMED_KINDS = (BAD_JSON, MISSING_FIELD, NON_FINITE, BAD_TYPE)
BUILDER_AT = 0.2  # the builder starts once this share of the labels is out (it needs 15-25 s to publish)


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Step:
    """One paced slot: an event (valid or not), then the labels that fall due with it."""

    event: Message
    labels: tuple[Message, ...] = ()


@dataclass(frozen=True)
class ReplayPlan:
    steps: list[Step]
    labels: dict[str, float]  # event id -> label, for every labelled replayed event
    valid_ids: frozenset[str]
    injected: dict[str, int]  # dead-letter reason -> malformed events planned
    builder_step: int  # steps sent before the builder starts

    @property
    def events(self) -> int:
        return len(self.steps)


@dataclass
class ReplayProgress:
    events: int = 0  # sent, valid or not
    labels: int = 0
    done: bool = False
    seconds: float = 0.0


def event_values(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> list[dict]:
    """Events as producers send them: ids, ts and features, missing values as null, no label."""
    columns = [EVENT_ID, USER, TS, *numeric, *categorical]
    part = frame[columns].astype(object)
    return part.where(frame[columns].notna(), None).to_dict("records")


def malformed_event(value: dict, kind: str, numeric_field: str) -> bytes:
    """A broken copy of a valid event, under a new event id, that the worker refuses with reason `kind`."""
    bad = {**value, EVENT_ID: f"{value[EVENT_ID]}-{kind}"}
    if kind == BAD_JSON:
        text = json.dumps(bad).encode()
        return text[: len(text) // 2]  # cut off mid-object
    if kind == MISSING_FIELD:
        del bad[USER]
    elif kind == NON_FINITE:
        bad[numeric_field] = math.inf  # json.dumps writes Infinity, which JSON readers may accept
    elif kind == BAD_TYPE:
        bad[numeric_field] = "n/a"  # text where a number belongs
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(bad).encode()


def label_value(value: dict, label: float) -> dict:
    """A late label as the builder reads it from the labels topic."""
    return {EVENT_ID: value[EVENT_ID], USER: value[USER], LABEL: int(label), TS: value[TS]}


def plan_replay(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], events_topic: str,
                labels_topic: str) -> ReplayPlan:
    """Steps in time order: every event, a malformed one after each MALFORMED_EVERY-th, and each label
    LABEL_DELAY_EVENTS events after its event (the last ones with the final event)."""
    if not numeric:
        raise ValueError("malformed events need a numeric feature to break")
    values = event_values(frame, numeric, categorical)
    labels = frame[LABEL].to_numpy()
    steps: list[Step] = []
    due: list[list[Message]] = [[] for _ in values]  # labels sent with valid event i
    injected: Counter = Counter()
    known: dict[str, float] = {}
    for i, (value, label) in enumerate(zip(values, labels)):
        if not math.isnan(label):
            known[value[EVENT_ID]] = float(label)
            message = Message(labels_topic, value[USER].encode(), json.dumps(label_value(value, label)).encode())
            due[min(i + LABEL_DELAY_EVENTS, len(values) - 1)].append(message)
    builder_labels, labels_out, builder_step = math.ceil(BUILDER_AT * len(known)), 0, 0
    for i, value in enumerate(values):
        key = value[USER].encode()
        steps.append(Step(Message(events_topic, key, json.dumps(value).encode()), tuple(due[i])))
        labels_out += len(due[i])
        if not builder_step and labels_out >= builder_labels:
            builder_step = len(steps)
        if (i + 1) % MALFORMED_EVERY == 0:
            kind = MALFORMED_KINDS[injected.total() % len(MALFORMED_KINDS)]
            injected[kind] += 1
            steps.append(Step(Message(events_topic, key, malformed_event(value, kind, numeric[0]))))
    return ReplayPlan(steps, known, frozenset(v[EVENT_ID] for v in values), dict(injected),
                      builder_step or len(steps))


async def send(plan: ReplayPlan, kafka: KafkaClientConfig, rate: float, progress: ReplayProgress) -> None:
    """Send the plan at `rate` events/s (labels ride along), then wait until the broker has it all."""
    producer = AIOKafkaProducer(**kafka.aiokafka(), acks="all")
    await producer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending: list[asyncio.Future] = []
    try:
        for i, step in enumerate(plan.steps):
            ahead = started + i / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)
            for message in (step.event, *step.labels):
                pending.append(await producer.send(message.topic, message.value, key=message.key))
            progress.events += 1
            progress.labels += len(step.labels)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    progress.seconds = loop.time() - started
    progress.done = True
