"""Which events train the first artifact and which are replayed: a split by time, the newest replayed.

The training slice is the events just before the replay, so the encoder is as fresh as it can be
without having seen a replayed label. It grows with the replay (three times as many events) within
bounds that keep `ecseq train-encoder` well under a minute on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ecseq.data.datasets import Dataset
from ecseq.data.events import LABEL, DataError

TRAIN_PER_REPLAYED = 3
TRAIN_MIN_EVENTS = 20_000
TRAIN_MAX_EVENTS = 80_000
TRAIN_FLOOR = 5_000  # fewer older events than this cannot train an encoder worth showing


@dataclass(frozen=True)
class DemoData:
    name: str
    train: pd.DataFrame
    replay: pd.DataFrame
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]


def training_size(events: int) -> int:
    """Training events for a replay of `events`."""
    return min(TRAIN_MAX_EVENTS, max(TRAIN_MIN_EVENTS, TRAIN_PER_REPLAYED * events))


def split_for_demo(dataset: Dataset, events: int) -> DemoData:
    """The newest `events` events to replay and the slice of older events before them to train on."""
    frame = dataset.frame  # sorted by time (make_dataset)
    older = len(frame) - events
    if events < 1:
        raise DataError(f"--events must be positive, got {events}")
    if older < TRAIN_FLOOR:
        raise DataError(f"--events {events} leaves {max(older, 0)} older events of {dataset.name} to train on; "
                        f"use at most {len(frame) - TRAIN_FLOOR}")
    replay = frame.iloc[older:].reset_index(drop=True)
    if not replay[LABEL].isin((0.0, 1.0)).any():
        raise DataError(f"the newest {events} events of {dataset.name} carry no labels; replay more of them")
    train = frame.iloc[max(older - training_size(events), 0):older].reset_index(drop=True)
    return DemoData(dataset.name, train, replay, dataset.categorical, dataset.numeric)
