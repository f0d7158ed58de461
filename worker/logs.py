"""Operator logs that stay readable when a dependency fails: the same warning or error from the same
place is written once per WINDOW_SECONDS, and the next one says how many were left out.

With the broker gone, aiokafka and Faust log the same few lines dozens of times a second; the
worker's own state changes (not ready, ready again) are logged once each (worker/health.py).
"""

from __future__ import annotations

import logging
import time

WINDOW_SECONDS = 10.0


class RepeatFilter(logging.Filter):
    """Passes a WARNING or worse once per window per (logger, message template); INFO and below pass."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}  # key -> (last written, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        last, left_out = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.window:
            self._seen[key] = (last, left_out + 1)
            return False
        if left_out:
            record.msg = f"{record.msg} ({left_out} more like this in the last {now - last:.0f}s)"
        if len(self._seen) > 1000:  # templates are few; anything else is a bug elsewhere, not a leak here
            self._seen.clear()
        self._seen[key] = (now, 0)
        return True
