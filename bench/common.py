"""Shared set-up for the benchmarks: real featurised windows from the synthetic data set."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ecseq.data.builtin import load_dataset
from ecseq.data.events import EventTable
from ecseq.features import FeatureSpec
from ecseq.windows import SequenceWindows

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class BenchData:
    table: EventTable
    windows: SequenceWindows
    labels: np.ndarray  # label of every labelled row, aligned with `rows`
    rows: np.ndarray  # labelled rows


def synthetic_windows(window: int = 50) -> BenchData:
    table = load_dataset("synthetic").events()
    spec = FeatureSpec.fit(table.frame, table.numeric, table.categorical)
    windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, window)
    rows = table.labelled
    return BenchData(table, windows, table.frame["label"].to_numpy()[rows].astype(np.int64), rows)


def per_call_seconds(fn, repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - started
    return times


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                             "threads": torch.get_num_threads()}, **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def report_checks(name: str, result: dict, checks: dict[str, bool]) -> int:
    """Write the result with its checks, print PASS/FAIL per target; the exit code says whether all passed."""
    path = write_result(name, {**result, "checks": checks})
    for check, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'} {check}")
    print(f"wrote {path}")
    return 0 if all(checks.values()) else 1
