"""The worker's Prometheus metrics: seconds with sub-millisecond buckets, on its own registry.

Served by the worker's web server at /metrics (the Faust sensor's own metrics are in
milliseconds and are not used here).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from ecseq.decoding import REASONS
from worker.internals import observe_many
from worker.outputs import ID_REUSED, TOO_LATE

DEAD_LETTER_REASONS = (*REASONS, TOO_LATE, ID_REUSED)
# 50 us .. 10 s: one stage of a batch is often well under a millisecond
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# event to score: fine around a tens-of-milliseconds SLO (the default alert is on p99 > 50 ms)
END_TO_END_BUCKETS = (2.5e-3, 5e-3, 1e-2, 1.5e-2, 2e-2, 2.5e-2, 3e-2, 4e-2, 5e-2, 6e-2, 7.5e-2, 0.1, 0.15, 0.25, 0.5,
                      1.0, 2.5, 10.0, 60.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "ecseq_worker_stage_duration_seconds",
            "Wall time of one stage for one micro-batch (decode, state, featurise, encode, attach, gnn, produce; "
            "deliver overlaps the next batch).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.event_to_score = Histogram(
            "ecseq_worker_event_to_score_seconds",
            "From the input record's Kafka timestamp to its score's delivery being confirmed.",
            buckets=END_TO_END_BUCKETS, registry=r)
        self.events = Counter("ecseq_worker_events", "Input events by outcome (scored, dead_letter, repartitioned).",
                              ["outcome"], registry=r)
        self.dead_letters = Counter("ecseq_worker_dead_letters", "Events sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=r)
        self.duplicates = Counter("ecseq_worker_duplicate_events",
                                  "Events whose id was already in the user's sequence (redelivery): scored again, "
                                  "not appended.", registry=r)
        self.artifact = Info("ecseq_worker_artifact", "The artifact version being served.", registry=r)
        self.artifact_created = Gauge("ecseq_worker_artifact_created_timestamp_seconds",
                                      "Creation time of the served artifact (age = time() - this).", registry=r)
        self.swaps = Counter("ecseq_worker_swaps", "Artifact swaps by result (swapped, refused).",
                             ["result"], registry=r)
        self.announcements = Counter("ecseq_worker_announcements",
                                     "Control-topic records by outcome (understood, ignored: not an announcement).",
                                     ["outcome"], registry=r)
        self.neighbours = Histogram("ecseq_worker_neighbours", "Compressed nodes each scored event attached to.",
                                    buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100), registry=r)
        self.trimmed_states = Counter("ecseq_worker_trimmed_states",
                                      "User sequences that outgrew ECSEQ_MAX_STATE_BYTES and were stored without "
                                      "their oldest events.", registry=r)
        self.zero_neighbours = Counter("ecseq_worker_zero_neighbour_events",
                                       "Scored events with no compressed node above epsilon (drift).", registry=r)
        self.lag = Gauge("ecseq_worker_consumer_lag", "Records behind the high watermark, per input partition.",
                         ["topic", "partition"], registry=r)
        self.ready = Gauge("ecseq_worker_ready", "1 when recovered, assigned and serving an artifact (as /ready).",
                           registry=r)
        self.batch_size = Histogram("ecseq_worker_batch_size", "Events per scored micro-batch.",
                                    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=r)

        # every labelled series exists from the start (at 0), so rate() and increase() see the first event
        for outcome in ("scored", "dead_letter", "repartitioned"):
            self.events.labels(outcome)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for result in ("swapped", "refused"):
            self.swaps.labels(result)
        for outcome in ("understood", "ignored"):
            self.announcements.labels(outcome)

    def served(self, version: str, created_at: float) -> None:
        self.artifact.info({"version": version})
        self.artifact_created.set(created_at)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def observe_neighbours(self, neighbours: np.ndarray) -> None:
        """Per scored event, the compressed nodes it attached to (none: drift)."""
        observe_many(self.neighbours, neighbours)
        self.zero_neighbours.inc(int(np.count_nonzero(neighbours == 0)))

    def observe_latencies(self, record_timestamps_s: Sequence[float], now: float | None = None) -> None:
        latencies = (now or time.time()) - np.asarray(record_timestamps_s, dtype=np.float64)
        observe_many(self.event_to_score, np.maximum(latencies, 0.0))
