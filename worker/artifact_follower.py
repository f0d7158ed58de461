"""Which artifact the worker serves, and swapping it without stopping the stream.

The store's CURRENT is the truth. A timer and the control topic's announcements only say
"look now": `check` loads and fully verifies CURRENT (checksums, shapes, golden scores) in a
worker thread, builds the scorer, and only then replaces the one reference the agent reads at
the start of every batch. A refused version is logged and counted once and the old one keeps
serving; a replayed stale announcement cannot move the worker off CURRENT. Whatever CURRENT or
a version holds, `check` returns a result and never raises: a refused version is remembered by
its on-disk fingerprint and not verified again until it changes.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from ecseq.artifacts import ArtifactError, ArtifactStore
from ecseq.artifacts.names import is_version_name
from ecseq.decoding import json_object
from ecseq.online import OnlineScorer
from worker.metrics import WorkerMetrics

log = logging.getLogger("ecseq.worker")

SWAPPED, UNCHANGED, REFUSED, NONE = "swapped", "unchanged", "refused", "none"
MAX_ANNOUNCEMENT_BYTES = 4096  # an announcement is a version, a path and a digest


def announced_version(raw: bytes | None) -> str | None:
    """The version a control-topic record announces, or None for anything else (any bytes at all:
    the topic is compacted, so a record that stopped the worker would stop every restart too)."""
    value = json_object(raw, MAX_ANNOUNCEMENT_BYTES)
    if isinstance(value, str):
        return None
    version = value.get("version")
    return version if is_version_name(version) else None


class ArtifactFollower:
    def __init__(self, store: ArtifactStore, metrics: WorkerMetrics) -> None:
        self.store = store
        self.metrics = metrics
        self.scorer: OnlineScorer | None = None  # the agent reads this once per batch
        self._refused: tuple[str, str] | None = None  # (what, fingerprint or message) already refused
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        return self.scorer.version if self.scorer is not None else None

    def check(self) -> str:
        """Serve CURRENT if it changed and verifies; blocking (run it off the event loop)."""
        with self._lock:
            try:
                current = self.store.current()
            except ArtifactError as exc:
                return self._refuse(("CURRENT", str(exc)), exc)
            if current is None:
                if self._refused != ("", NONE):
                    self._refused = ("", NONE)
                    log.warning("no artifact in %s yet; not consuming until one is published "
                                "(ecseq train-encoder)", self.store.root)
                return NONE
            if current == self.version:
                return UNCHANGED
            seen = (current, self.store.fingerprint(current))
            if self._refused == seen:
                return REFUSED
            try:
                loaded = self.store.load(current)
            except ArtifactError as exc:
                return self._refuse(seen, exc)
            scorer = OnlineScorer(loaded)
            previous, self.scorer = self.version, scorer
            self._refused = None
            self.metrics.swaps.labels(SWAPPED).inc()
            self.metrics.served(loaded.version, _timestamp(loaded.manifest.get("created_at")))
            log.info("serving artifact %s (was %s)", loaded.version, previous or "nothing")
            return SWAPPED

    def _refuse(self, seen: tuple[str, str], exc: ArtifactError) -> str:
        """Count and log a refusal once per thing refused (a version as it is on disk, or CURRENT's problem)."""
        if self._refused != seen:
            self._refused = seen
            self.metrics.swaps.labels(REFUSED).inc()
            log.error("refused artifact %s (%s); still serving %s: %s", seen[0], exc.reason,
                      self.version or "nothing", exc)
        return REFUSED


def _timestamp(iso: str | None) -> float:
    if not iso:
        return 0.0
    return datetime.fromisoformat(iso).timestamp()
