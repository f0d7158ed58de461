"""Train / validation / test splits of the labelled events of an :class:`EventTable`.

Splits hold row indices into ``EventTable.frame`` and only ever contain labelled rows;
unlabelled rows are context only and belong to no part.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecseq.data.events import LABEL, TS, USER, DataError, EventTable

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Labelled row indices of each part, ascending."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_by_time(
    table: EventTable, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> Split:
    """Oldest labelled events train, newest test, as a model would meet them in production."""
    bounds = _cumulative(fractions)
    order = _time_order(table, table.labelled)
    cuts = _tie_safe_cuts(table.frame[TS].to_numpy()[order], bounds)
    return Split(*(np.sort(part) for part in np.split(order, cuts)))


def split_by_user(
    table: EventTable, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0
) -> Split:
    """Random users per part, whole users only, so no user is seen in training and tested on."""
    bounds = _cumulative(fractions)
    rows = table.labelled
    # A user's first row index identifies the user; users come out in user_id order.
    users, user_of_row = np.unique(table.user_start[rows], return_inverse=True)
    shuffled = np.random.default_rng(seed).permutation(len(users))
    position = np.empty_like(shuffled)
    position[shuffled] = np.arange(len(users))
    part_of_user = np.searchsorted(_cuts(len(users), bounds), position, side="right")
    part_of_row = part_of_user[user_of_row]
    return Split(*(rows[part_of_row == part] for part in range(len(PARTS))))


def read_split_file(table: EventTable, path: str | os.PathLike) -> Split:
    """Apply a user -> part assignment from a ``user_id,split`` CSV, e.g. one shared across runs."""
    assignment = _read_assignment(Path(path))
    rows = table.labelled
    part_of_row = table.frame[USER].iloc[rows].map(assignment).to_numpy()
    return Split(*(rows[part_of_row == part] for part in PARTS))


def split_rows_by_time(
    table: EventTable, rows: np.ndarray, fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into the oldest ``fraction`` and the rest, e.g. to retrain on older data."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"time split fraction must be between 0 and 1, got {fraction}")
    order = _time_order(table, np.asarray(rows, dtype=np.int64))
    cuts = _tie_safe_cuts(table.frame[TS].to_numpy()[order], [fraction])
    old, new = np.split(order, cuts)
    return np.sort(old), np.sort(new)


def check_trainable(table: EventTable, split: Split) -> None:
    """Refuse a split a model cannot learn from or be evaluated on, naming the part at fault."""
    for name in PARTS:
        if len(getattr(split, name)) == 0:
            raise DataError(f"the {name} split is empty (no labelled events)")
    train_labels = table.frame[LABEL].to_numpy()[split.train]
    if not (train_labels == 1).any():
        raise DataError("no positive labels in the training split")
    if not (train_labels == 0).any():
        raise DataError("no negative labels in the training split")


def _cumulative(fractions: Sequence[float]) -> list[float]:
    """Validate the three fractions; return the two inner cumulative bounds."""
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != (3,) or not np.all(values > 0) or not np.isclose(values.sum(), 1.0):
        raise DataError(
            f"split fractions must be three positive numbers summing to 1, got {tuple(fractions)}"
        )
    return np.cumsum(values)[:2].tolist()


def _time_order(table: EventTable, rows: np.ndarray) -> np.ndarray:
    """Rows sorted by ts; equal timestamps keep row order, so the result is deterministic."""
    return rows[np.argsort(table.frame[TS].to_numpy()[rows], kind="stable")]


def _cuts(n: int, bounds: Sequence[float]) -> list[int]:
    """Positions cutting n items at cumulative fractions; every part non-empty when n allows."""
    cuts = [round(n * bound) for bound in bounds]
    if n <= len(bounds):
        return cuts
    previous = 0
    for i, cut in enumerate(cuts):
        cuts[i] = previous = min(max(cut, previous + 1), n - (len(bounds) - i))
    return cuts


def _tie_safe_cuts(sorted_ts: np.ndarray, bounds: Sequence[float]) -> list[int]:
    """Cuts moved to the nearest edge of their run of equal timestamps.

    A timestamp then lands in one part only; a cut stays inside a run only when both edges
    would leave a part empty.
    """
    cuts = _cuts(len(sorted_ts), bounds)
    low = 0
    for i, cut in enumerate(cuts):
        high = cuts[i + 1] if i + 1 < len(cuts) else len(sorted_ts)
        if 0 < cut < len(sorted_ts):
            run = sorted_ts[cut]
            left = int(np.searchsorted(sorted_ts, run, side="left"))
            right = int(np.searchsorted(sorted_ts, run, side="right"))
            inside = [edge for edge in (left, right) if low < edge < high]
            cut = min(inside, key=lambda edge: abs(edge - cut)) if inside else cut
        cuts[i] = low = cut
    return cuts


def _read_assignment(path: Path) -> pd.Series:
    """Read and validate a split file into a user_id -> part mapping."""
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read split file {path}: {' '.join(str(err).split())}") from None
    missing = [column for column in (USER, "split") if column not in df.columns]
    if missing:
        raise DataError(f"split file {path} is missing column(s): {', '.join(missing)}")
    parts = df["split"].str.strip().str.lower()
    unknown = ~parts.isin(PARTS).to_numpy()
    if unknown.any():
        row = int(np.argmax(unknown)) + 1
        raise DataError(
            f"split file {path}: unknown split '{df['split'].iloc[row - 1]}' at row {row} "
            f"(expected one of {', '.join(PARTS)})"
        )
    no_user = df[USER].isna().to_numpy()
    if no_user.any():
        row = int(np.argmax(no_user)) + 1
        raise DataError(f"split file {path}: user_id is missing at row {row}")
    repeated = df[USER].duplicated().to_numpy()
    if repeated.any():
        user = df[USER].iloc[int(np.argmax(repeated))]
        raise DataError(f"split file {path}: user '{user}' is listed more than once")
    return pd.Series(parts.to_numpy(), index=df[USER].to_numpy())
