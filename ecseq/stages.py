"""One stage timer for every process: wall time per named stage, as the stages end.

The worker times each micro-batch's stages into a histogram, the builder each build stage into
its report and metrics, artifact loading its steps for the benchmark; all through this, so a
stage means the same thing everywhere: the wall time from the previous stage's end (or the
clock's start) to its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

OnStage = Callable[[str, float], None]  # (stage, seconds), told as each stage ends


class StageClock:
    """Seconds per stage, summed when a stage repeats; `on_stage` sees each one as it ends."""

    def __init__(self, on_stage: OnStage | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._on_stage = on_stage
        self._last = time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        """Count `seconds` (timed elsewhere) under `stage`."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        if self._on_stage is not None:
            self._on_stage(stage, seconds)

    def lap(self, stage: str) -> None:
        """End `stage` now: it took the time since the previous lap (or since the clock started)."""
        now = time.perf_counter()
        self.add(stage, now - self._last)
        self._last = now

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the block under `stage` (a failing block is not counted)."""
        started = time.perf_counter()
        yield
        now = time.perf_counter()
        self.add(stage, now - started)
        self._last = now
