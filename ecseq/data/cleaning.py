"""Lenient intake for rebuilds: drop the rows a strict reader would reject, counted by reason.

`ecseq evaluate` stops at the first bad row, because a person is looking at one file. A
periodic rebuild reads whatever production sent; one bad row must not stop it, but every
skipped row must be visible, so each is counted under a reason that ends up in the report
and the builder's metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ecseq.data.events import (
    missing_values,
    parse_labels,
    parse_timestamps,
)
from ecseq.fields import (
    BAD_LABEL,
    BAD_TIMESTAMP,
    BAD_TYPE,
    DUPLICATE_EVENT,
    EVENT_ID,
    LABEL,
    MISSING_FIELD,
    NON_FINITE,
    TS,
    USER,
)


def drop_bad_rows(frame: pd.DataFrame, numeric: Sequence[str]) -> tuple[pd.DataFrame, Counter]:
    """Rows of `frame` that the strict event reader accepts, and how many were dropped, by reason.

    Each dropped row is counted once, under the first reason that applies. Missing numeric
    values are not an error (the feature spec has a missing indicator); text in a numeric
    column is, and so is an infinite number. The `numeric` columns come back as float64.
    """
    frame = frame.copy()
    keep = np.ones(len(frame), dtype=bool)
    skipped: Counter = Counter()

    def drop(mask: np.ndarray, reason: str) -> None:
        hit = mask & keep
        if hit.any():
            skipped[reason] += int(hit.sum())
            keep[hit] = False

    for column in (USER, TS, EVENT_ID):
        if column in frame.columns:
            drop(missing_values(frame[column]), MISSING_FIELD)
    drop(~np.isfinite(parse_timestamps(frame[TS]).to_numpy()), BAD_TIMESTAMP)
    if LABEL in frame.columns:
        drop(parse_labels(frame[LABEL])[1], BAD_LABEL)
    for column in numeric:
        values = frame[column]
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        drop(np.isnan(numbers) & ~missing_values(values), BAD_TYPE)
        drop(np.isinf(numbers), NON_FINITE)
        frame[column] = numbers
    if EVENT_ID in frame.columns:
        repeated = np.zeros(len(frame), dtype=bool)
        repeated[keep] = frame[EVENT_ID].astype(str)[keep].duplicated().to_numpy()  # first kept copy wins
        drop(repeated, DUPLICATE_EVENT)
    return frame[keep].reset_index(drop=True), skipped
