"""FeatureSpec: turns event rows into fixed-size float vectors, learned from training data only.

Numeric columns are standardised (log1p first when a non-negative column is heavy-tailed) and
clipped, with a missing-value indicator where training data had gaps. Categorical columns are
one-hot over their most frequent training values plus an out-of-vocabulary bucket, so values
never seen in training (or missing) still map somewhere. Column 0 is always 1.0 ("an event is
here"), which lets a sequence model tell a real event from the zero padding of short windows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CLIP = 5.0


@dataclass(frozen=True)
class NumericFeature:
    name: str
    center: float
    scale: float
    log: bool
    has_missing: bool


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    vocabulary: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.vocabulary) + 1  # last slot: out-of-vocabulary / missing

    @cached_property
    def codes(self) -> dict[str | None, int]:
        """Vocabulary value -> its slot; anything else (missing too) goes to the last slot (len(vocabulary)).
        Keyed by ``str | None``: it is looked up with missing (None) values too, which are never in it."""
        return {v: i for i, v in enumerate(self.vocabulary)}


@dataclass(frozen=True)
class FeatureSpec:
    numeric: tuple[NumericFeature, ...] = ()
    categorical: tuple[CategoricalFeature, ...] = ()

    @property
    def dim(self) -> int:
        return 1 + sum(1 + f.has_missing for f in self.numeric) + sum(f.width for f in self.categorical)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric) + tuple(f.name for f in self.categorical)

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        numeric: tuple[str, ...],
        categorical: tuple[str, ...],
        max_vocabulary: int = 30,
        min_count: int = 5,
    ) -> FeatureSpec:
        """Learn scaling and vocabularies from `frame` (the training events only)."""
        nums = tuple(_fit_numeric(name, frame[name].to_numpy(dtype=np.float64)) for name in numeric)
        cats = tuple(_fit_categorical(name, frame[name], max_vocabulary, min_count) for name in categorical)
        return cls(nums, cats)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Events (rows of `frame`, any extra columns ignored) -> float32 matrix (n, dim)."""
        import pandas as pd  # frames are the offline path: serving featurises arrays and never loads pandas

        numeric = np.empty((len(frame), len(self.numeric)), dtype=np.float64)
        for j, f in enumerate(self.numeric):
            numeric[:, j] = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=np.float64)
        slots = np.empty((len(frame), len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            slots[:, j] = frame[c.name].astype(str).map(c.codes).fillna(len(c.vocabulary)).to_numpy(dtype=np.int64)
        return self.transform_slots(numeric, slots)

    def transform_arrays(self, numeric: np.ndarray, categorical: Sequence[Sequence[str | None]]) -> np.ndarray:
        """`transform` without pandas, for the serving hot path: the same numbers, exactly.

        `numeric` is (n, len(self.numeric)), columns in spec order, NaN (or any non-finite value)
        for missing; `categorical` holds one sequence of n values per categorical column, in spec
        order: text, or None for missing (the out-of-vocabulary slot, as `transform` gives a missing cell).
        """
        if len(categorical) != len(self.categorical):
            raise ValueError(f"categorical must hold {len(self.categorical)} columns, got {len(categorical)}")
        return self.transform_slots(numeric, self._slots(categorical, len(numeric)))

    def category_slots(self, values: Sequence[str | None]) -> np.ndarray:
        """(len(values), n_categorical) int64: the one-hot slot each value takes in every categorical
        column, for featurising many events that share few distinct values (see transform_slots)."""
        return self._slots([values] * len(self.categorical), len(values))

    def _slots(self, columns: Sequence[Sequence[str | None]], n: int) -> np.ndarray:
        slots = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, (f, values) in enumerate(zip(self.categorical, columns)):
            if len(values) != n:
                raise ValueError(f"categorical column {f.name} has {len(values)} values for {n} rows")
            slots[:, j] = np.fromiter(map(f.codes.get, values, repeat(len(f.vocabulary))), dtype=np.int64, count=n)
        return slots

    def transform_slots(self, numeric: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """`transform` from (n, numeric columns) values (non-finite = missing) and (n, categorical
        columns) one-hot slots (as category_slots gives) -> (n, dim) float32."""
        numeric = np.asarray(numeric, dtype=np.float64)
        slots = np.asarray(slots, dtype=np.int64)
        n = numeric.shape[0] if numeric.ndim == 2 else -1
        if numeric.shape != (n, len(self.numeric)) or slots.shape != (n, len(self.categorical)):
            raise ValueError(f"expected (n, {len(self.numeric)}) numeric values and (n, {len(self.categorical)}) "
                             f"slots, got {numeric.shape} and {slots.shape}")
        widths = np.array([f.width for f in self.categorical], dtype=np.int64)
        if slots.size and ((slots < 0) | (slots >= widths)).any():
            raise ValueError("a categorical slot is outside its column's vocabulary (+1 out-of-vocabulary slot)")
        out = np.zeros((n, self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        col = 1
        for j, f in enumerate(self.numeric):
            values = numeric[:, j]
            missing = ~np.isfinite(values)
            if f.log:
                values = np.sign(values) * np.log1p(np.abs(values))
            scaled = np.clip((values - f.center) / f.scale, -CLIP, CLIP)
            out[:, col] = np.where(missing, 0.0, scaled)
            col += 1
            if f.has_missing:
                out[:, col] = missing
                col += 1
        rows = np.arange(n)
        for j, c in enumerate(self.categorical):
            out[rows, col + slots[:, j]] = 1.0
            col += c.width
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"numeric": [asdict(f) for f in self.numeric],
             "categorical": [{"name": f.name, "vocabulary": list(f.vocabulary)} for f in self.categorical]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        return cls(
            tuple(NumericFeature(**f) for f in data["numeric"]),
            tuple(CategoricalFeature(f["name"], tuple(f["vocabulary"])) for f in data["categorical"]),
        )

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSpec:
        with open(path, encoding="utf-8") as fh:
            return cls.from_json(fh.read())


def _fit_numeric(name: str, values: np.ndarray) -> NumericFeature:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return NumericFeature(name, 0.0, 1.0, False, True)
    median = float(np.median(finite))
    # Heavy tail on a non-negative column (amounts, counts, gaps): scale in log space.
    log = bool(finite.min() >= 0 and np.quantile(finite, 0.99) > 20 * max(median, 1e-9))
    if log:
        finite = np.log1p(finite)
    scale = float(finite.std())
    return NumericFeature(name, float(finite.mean()), scale if scale > 1e-9 else 1.0, log,
                          bool(finite.size < values.size))


def _fit_categorical(name: str, values: pd.Series, max_vocabulary: int, min_count: int) -> CategoricalFeature:
    counts = values.dropna().astype(str).value_counts()
    kept = counts[counts >= min_count].index[:max_vocabulary]
    return CategoricalFeature(name, tuple(sorted(kept)))
