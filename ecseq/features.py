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
from dataclasses import asdict, dataclass

import numpy as np
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
        n = len(frame)
        out = np.zeros((n, self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        col = 1
        for f in self.numeric:
            values = pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=np.float64)
            missing = ~np.isfinite(values)
            if f.log:
                values = np.sign(values) * np.log1p(np.abs(values))
            scaled = np.clip((values - f.center) / f.scale, -CLIP, CLIP)
            out[:, col] = np.where(missing, 0.0, scaled)
            col += 1
            if f.has_missing:
                out[:, col] = missing
                col += 1
        for f in self.categorical:
            lookup = {v: i for i, v in enumerate(f.vocabulary)}
            codes = frame[f.name].astype(str).map(lookup).fillna(len(f.vocabulary)).to_numpy(dtype=np.int64)
            out[np.arange(n), col + codes] = 1.0
            col += f.width
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
