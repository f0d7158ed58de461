"""The event-table input contract: read, validate and normalise a table of user events.

One row per event with ``user_id``, ``ts``, ``label`` (0/1 on events to predict, empty on
context-only events), optional ``event_id``; every other column is a feature. Everything
downstream relies on the normalised form built here, so every problem with the user's data
is reported once, here, as a one-line :class:`DataError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ecseq.errors import DataError
from ecseq.fields import EVENT_ID, LABEL, TS, USER

REQUIRED = (USER, TS, LABEL)
RESERVED = (USER, TS, LABEL, EVENT_ID)
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_LABEL_TEXT = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
_EPOCH = pd.Timestamp(0, tz="UTC")
_CLOCK_WORDS = ("now", "today")


@dataclass(frozen=True)
class EventTable:
    """Normalised events, sorted by (user_id, ts) so each user's history is a contiguous run."""

    frame: pd.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    user_start: np.ndarray

    @property
    def labelled(self) -> np.ndarray:
        """Rows to predict (label present), ascending; the rest are context only."""
        return np.flatnonzero(self.frame[LABEL].notna().to_numpy()).astype(np.int64)

    @property
    def features(self) -> tuple[str, ...]:
        """All feature columns: numeric then categorical."""
        return self.numeric + self.categorical

    def describe(self) -> dict:
        """Headline counts, for logs and reports."""
        labels = self.frame[LABEL].to_numpy()[self.labelled]
        return {
            "users": int(self.frame[USER].nunique()),
            "events": len(self.frame),
            "labelled": len(labels),
            "positive_rate": float(labels.mean()) if len(labels) else 0.0,
        }


def read_events(path: str | os.PathLike, categorical: Sequence[str] = ()) -> EventTable:
    """Read a CSV or Parquet event file; errors name the file so the user knows which is wrong."""
    path = Path(path)
    frame = read_frame(path, categorical)
    try:
        return events_from_frame(frame, categorical, source=_stem(path))
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def events_from_frame(
    df: pd.DataFrame, categorical: Sequence[str] = (), source: str = "events"
) -> EventTable:
    """Validate and normalise an in-memory event table; ``source`` prefixes generated event ids."""
    _check_columns(df, categorical)
    df = df.reset_index(drop=True)
    columns = {
        USER: _user_ids(df[USER]),
        TS: _timestamps(df[TS]),
        LABEL: _labels(df[LABEL]),
        EVENT_ID: _event_ids(df, source),
    }
    if not columns[LABEL].notna().any():
        raise DataError("no labelled events (every label is empty)")
    numeric, categories = _feature_kinds(df, categorical)
    for column in df.columns:
        if column in numeric:
            columns[column] = _numeric_feature(df[column])
        elif column in categories:
            columns[column] = _text(df[column])
    frame = pd.DataFrame(columns)
    frame, user_start = _sort_by_user_time(frame)
    return EventTable(frame, numeric, categories, user_start)


def _stem(path: Path) -> str:
    """File name without its data suffix, used to prefix generated event ids."""
    name = path.name
    for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_frame(path: str | os.PathLike, categorical: Sequence[str] = ()) -> pd.DataFrame:
    """The raw rows of a CSV or Parquet event file, not yet validated; any read failure is one line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"events file not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith(CSV_SUFFIXES):
            # Ids, labels and declared categoricals stay text, so "007" or code "-2" survive.
            as_text = {column: str for column in (USER, LABEL, EVENT_ID, *categorical)}
            return pd.read_csv(path, dtype=as_text)
        if name.endswith(PARQUET_SUFFIXES):
            return pd.read_parquet(path)
    except (OSError, ValueError, EOFError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read events file {path}: {reason}") from None
    supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    raise DataError(f"unsupported events file type: {path} (expected {supported})")


def _check_columns(df: pd.DataFrame, categorical: Sequence[str]) -> None:
    """Fail early on structural problems, before any per-value checks."""
    missing = [column for column in REQUIRED if column not in df.columns]
    if missing:
        raise DataError(f"missing required column(s): {', '.join(missing)}")
    if len(df) == 0:
        raise DataError("events table is empty")
    for column in categorical:
        if column in RESERVED:
            raise DataError(f"column '{column}' cannot be categorical: it is a reserved column")
        if column not in df.columns:
            raise DataError(f"categorical column '{column}' is not in the events table")
    if not [column for column in df.columns if column not in RESERVED]:
        raise DataError("no feature columns (columns other than user_id, ts, label, event_id)")


def _first_row(mask: np.ndarray) -> int:
    """1-based data row number of the first flagged row, as the user sees it in the file."""
    return int(np.argmax(mask)) + 1


def missing_values(values: pd.Series) -> np.ndarray:
    """Missing means NaN/None/NaT or blank text."""
    missing = values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return missing
    return missing | values.astype(str).str.strip().eq("").to_numpy()


def _require_present(values: pd.Series, column: str) -> None:
    """Say how many rows lack a required value and where the first one is."""
    missing = missing_values(values)
    if missing.any():
        raise DataError(
            f"{column} is missing on {int(missing.sum())} row(s) (first: row {_first_row(missing)})"
        )


def _text(values: pd.Series) -> pd.Series:
    """Object column of str, NaN for missing.

    Integral floats lose their '.0' so codes read the same from CSV and from Parquet.
    """
    present = values.notna().to_numpy()
    if pd.api.types.is_float_dtype(values) and np.all(np.mod(values.to_numpy()[present], 1) == 0):
        values = values.astype("Int64")
    out = np.full(len(values), np.nan, dtype=object)
    out[present] = values[present].astype(str).to_numpy(dtype=object)
    return pd.Series(out, index=values.index, dtype=object)


def _user_ids(values: pd.Series) -> pd.Series:
    """User ids as text; every event must belong to a user."""
    _require_present(values, USER)
    return _text(values)


def _timestamps(values: pd.Series) -> pd.Series:
    """Seconds as float64: numbers kept; ISO-8601 text and datetimes become UTC epoch seconds."""
    _require_present(values, TS)
    seconds = parse_timestamps(values)
    bad = ~np.isfinite(seconds.to_numpy())
    if bad.any():
        row = _first_row(bad)
        raise DataError(
            f"ts cannot be parsed at row {row}: '{values.iloc[row - 1]}' "
            "(expected a number or ISO-8601 time)"
        )
    return seconds


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Epoch seconds as float64, NaN where a value is missing or cannot be parsed."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _epoch_seconds(values)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    # Parse as text so Python numbers in an object column are not mistaken for nanoseconds.
    text = values.astype(str)
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    # pandas reads "now" and "today" as the clock's time: an event's time is never the reader's
    parsed = parsed.mask(text.isin(_CLOCK_WORDS))
    # e.g. year 1: a real date, but outside what nanosecond timestamps hold
    parsed = parsed.where(parsed.between(pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")))
    seconds = _epoch_seconds(parsed)
    as_number = seconds.isna()
    if as_number.any():
        seconds[as_number] = pd.to_numeric(text[as_number], errors="coerce")
    return seconds


def _epoch_seconds(times: pd.Series) -> pd.Series:
    """UTC epoch seconds of datetimes; naive times are taken as UTC."""
    if times.dt.tz is None:
        times = times.dt.tz_localize("UTC")
    return (times - _EPOCH) / pd.Timedelta(seconds=1)


def _labels(values: pd.Series) -> pd.Series:
    """Labels as 0.0/1.0/NaN; accepts 0/1 as numbers, as text ("0", "1.0") or as true/false."""
    labels, bad = parse_labels(values)
    if bad.any():
        row = _first_row(bad)
        raise DataError(f"label must be 0, 1 or empty; row {row} has '{values.iloc[row - 1]}'")
    return labels


def parse_labels(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(labels as 0.0/1.0/NaN, mask of values that are present but not a 0/1 label)."""
    blank = missing_values(values)
    if pd.api.types.is_numeric_dtype(values):
        labels = values.astype("float64")
    else:
        labels = values.astype(str).str.strip().str.lower().map(_LABEL_TEXT).astype("float64")
    bad = ~blank & ~labels.isin([0.0, 1.0]).to_numpy()
    return labels, bad


def _event_ids(df: pd.DataFrame, source: str) -> pd.Series:
    """Given ids must be present and unique; absent ids are generated from the file row number."""
    if EVENT_ID not in df.columns:
        rows = pd.Series(np.arange(1, len(df) + 1)).astype(str)
        return pd.Series((f"{source}-" + rows).to_numpy(dtype=object), dtype=object)
    _require_present(df[EVENT_ID], EVENT_ID)
    ids = _text(df[EVENT_ID])
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        row = _first_row(repeated)
        value = ids.iloc[row - 1]
        first = _first_row((ids == value).to_numpy())
        raise DataError(f"duplicate event_id {value!r} (rows {first} and {row})")
    return ids


def _feature_kinds(
    df: pd.DataFrame, categorical: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Numeric and categorical feature columns in file order; ``categorical`` overrides dtype."""
    declared = set(categorical)
    features = [column for column in df.columns if column not in RESERVED]
    numeric = tuple(
        c for c in features if c not in declared and pd.api.types.is_numeric_dtype(df[c])
    )
    return numeric, tuple(c for c in features if c not in numeric)


def _numeric_feature(values: pd.Series) -> np.ndarray:
    """float64 with inf/-inf as NaN, so missing values have a single representation."""
    numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isfinite(numbers), numbers, np.nan)


def _sort_by_user_time(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Stable sort by (user_id, ts) and the index of each row's first same-user row."""
    codes, _ = pd.factorize(frame[USER], sort=True)
    order = np.lexsort((frame[TS].to_numpy(), codes))
    frame = frame.iloc[order].reset_index(drop=True)
    codes = codes[order]
    starts_here = np.r_[True, codes[1:] != codes[:-1]]
    user_start = np.maximum.accumulate(np.where(starts_here, np.arange(len(codes)), 0))
    return frame, user_start.astype(np.int64)
