"""The demo's replay plan and data split, without Kafka: what is sent, in which order, and why it is refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from demo.data import TRAIN_FLOOR, split_for_demo, training_size
from demo.replay import (
    BUILDER_AT,
    LABEL_DELAY_EVENTS,
    MALFORMED_EVERY,
    MALFORMED_KINDS,
    malformed_event,
    plan_replay,
)
from ecseq.data.datasets import make_dataset
from ecseq.data.events import DataError
from ecseq.decoding import EventSchema, decode_event

NUMERIC = ("amount", "hours")
CATEGORICAL = ("shop",)
SCHEMA = EventSchema(NUMERIC, CATEGORICAL)


def frame(n: int, labelled_every: int = 1) -> pd.DataFrame:
    """n events of 7 users in time order; labels on every `labelled_every`-th event, NaN amounts now and then."""
    rows = np.arange(n)
    return pd.DataFrame({
        "user_id": [f"u{i % 7}" for i in rows], "ts": 1_700_000_000.0 + 60.0 * rows,
        "label": [float(i % 13 == 0) if i % labelled_every == 0 else math.nan for i in rows],
        "event_id": [f"e{i}" for i in rows],
        "amount": [math.nan if i % 10 == 3 else 1.5 * i for i in rows], "hours": rows % 24.0,
        "shop": [None if i % 11 == 5 else f"s{i % 4}" for i in rows],
    })


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_malformed_kind_is_refused_for_the_reason_it_is_named_after(kind: str) -> None:
    value = {"event_id": "e1", "user_id": "u1", "ts": 1.0, "amount": 2.0, "hours": 3.0, "shop": "s1"}
    assert not isinstance(decode_event(json.dumps(value).encode(), SCHEMA), str)  # the original is valid
    assert decode_event(malformed_event(value, kind, "amount"), SCHEMA) == kind


def test_the_plan_sends_every_event_once_in_time_order_with_a_few_malformed_ones() -> None:
    events = frame(1_000)
    plan = plan_replay(events, NUMERIC, CATEGORICAL, "ev", "lb")
    sent = [step.event for step in plan.steps]
    assert {m.topic for m in sent} == {"ev"}
    decoded = [decode_event(m.value, SCHEMA) for m in sent]
    valid = [d for d in decoded if not isinstance(d, str)]
    assert [d.event_id for d in valid] == list(events["event_id"])
    assert all(m.key == d.user_id.encode() for m, d in zip(sent, decoded) if not isinstance(d, str))
    refused = [d for d in decoded if isinstance(d, str)]
    assert len(refused) == 1_000 // MALFORMED_EVERY == sum(plan.injected.values())
    assert {reason: refused.count(reason) for reason in set(refused)} == plan.injected
    assert plan.valid_ids == set(events["event_id"]) and plan.events == len(sent)


def test_each_label_follows_its_event_by_the_label_delay_and_the_builder_starts_at_half() -> None:
    events = frame(1_000, labelled_every=2)  # unlabelled events are context: no label record
    plan = plan_replay(events, NUMERIC, CATEGORICAL, "ev", "lb")
    index, sent_after, records = {}, {}, {}  # event id -> its place among valid events / the label's
    for step in plan.steps:
        decoded = decode_event(step.event.value, SCHEMA)
        if isinstance(decoded, str):
            assert not step.labels
            continue
        index[decoded.event_id] = len(index)
        for message in step.labels:
            record = json.loads(message.value)
            sent_after[record["event_id"]], records[record["event_id"]] = index[decoded.event_id], record
    assert set(records) == set(plan.labels) == set(events["event_id"][::2])
    for event_id, after in sent_after.items():
        assert after == min(index[event_id] + LABEL_DELAY_EVENTS, len(index) - 1)
        assert records[event_id]["label"] == plan.labels[event_id]
        assert records[event_id]["user_id"] == f"u{int(event_id[1:]) % 7}"
    out = np.cumsum([len(step.labels) for step in plan.steps])
    assert out[plan.builder_step - 1] >= BUILDER_AT * len(plan.labels) > out[plan.builder_step - 2]


def test_the_split_replays_the_newest_events_and_trains_on_the_ones_just_before() -> None:
    dataset = make_dataset("t", frame(30_000), CATEGORICAL)
    data = split_for_demo(dataset, 2_000)
    assert list(data.replay["event_id"]) == list(dataset.frame["event_id"][-2_000:])
    assert len(data.train) == training_size(2_000) == 20_000
    assert data.train["ts"].max() <= data.replay["ts"].min()
    assert list(data.train["event_id"]) == list(dataset.frame["event_id"][-22_000:-2_000])
    with pytest.raises(DataError, match="use at most"):
        split_for_demo(dataset, 30_000 - TRAIN_FLOOR + 1)
    with pytest.raises(DataError, match="positive"):
        split_for_demo(dataset, 0)
