"""The builder's Prometheus metrics, in base units, on its own registry and /metrics endpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from compression_builder.pipeline import BuildOutcome

if TYPE_CHECKING:
    from compression_builder.collector import Flushed
    from compression_builder.window_store import StoreStats

BUILD_RESULTS = ("published", "refused", "failed", "busy")
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class BuilderMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram("ecseq_builder_stage_duration_seconds", "Wall time of one build stage.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.builds = Counter("ecseq_builder_builds", "Builds by result (published, refused, failed, busy).",
                              ["result"], registry=r)
        self.refusals = Counter("ecseq_builder_refusals", "Refused builds by gate reason.", ["reason"], registry=r)
        self.skipped_rows = Counter("ecseq_builder_skipped_rows", "Input rows skipped by a build, by reason.",
                                    ["source", "reason"], registry=r)
        self.announce_failures = Counter("ecseq_builder_announce_failures",
                                         "Published versions that could not be announced on the control topic.",
                                         registry=r)
        self.last_success = Gauge("ecseq_builder_last_success_timestamp_seconds",
                                  "When the last build finished without error (published or refused).", registry=r)
        self.last_publish = Gauge("ecseq_builder_last_publish_timestamp_seconds",
                                  "When the last build published an artifact.", registry=r)
        self.samples = Gauge("ecseq_builder_samples", "Labelled sequences in the last build, by part.",
                             ["part"], registry=r)
        self.evaluation = Gauge("ecseq_builder_evaluation",
                                "Held-out quality of the last build: model is serving (after the build), "
                                "candidate or encoder; metric is auc, ap or r_at_p90.",
                                ["model", "metric"], registry=r)
        self.started = Gauge("ecseq_builder_start_time_seconds",
                             "When this builder process started (before its first build, last success is 0).",
                             registry=r)
        self.started.set_to_current_time()
        self._follow_metrics(r)
        for result in BUILD_RESULTS:  # every series exists from the start, so increase() sees the first one
            self.builds.labels(result)

    def _follow_metrics(self, r: CollectorRegistry) -> None:
        self.follow_records = Counter("ecseq_builder_follow_records", "Records the follower read, by kind "
                                      "(events, labels).", ["kind"], registry=r)
        self.follow_refused = Counter("ecseq_builder_follow_refused", "Records the follower counted and left "
                                      "out, by kind and reason.", ["kind", "reason"], registry=r)
        self.follow_lag = Gauge("ecseq_builder_follow_lag", "Records behind the end of each partition the "
                                "follower reads.", ["topic", "partition"], registry=r)
        self.window_samples = Gauge("ecseq_builder_window_samples", "Labelled samples in the window store, by "
                                    "label.", ["label"], registry=r)
        self.window_dropped = Counter("ecseq_builder_window_dropped", "Samples the window store dropped, by cause "
                                      "(cap, retention) and label.", ["cause", "label"], registry=r)
        self.window_bytes = Gauge("ecseq_builder_window_bytes", "The window store's size on disk.", registry=r)
        self.window_oldest = Gauge("ecseq_builder_window_oldest_event_timestamp_seconds",
                                   "Event time of the oldest sample in the window store.", registry=r)
        self.window_newest = Gauge("ecseq_builder_window_newest_event_timestamp_seconds",
                                   "Event time of the newest sample in the window store.", registry=r)
        self.pending = Gauge("ecseq_builder_pending_events", "Events held that a label may still come for "
                             "(within the label horizon).", registry=r)
        self.last_flush = Gauge("ecseq_builder_last_flush_timestamp_seconds",
                                "When the follower last wrote to the window store.", registry=r)
        for label in ("0", "1"):
            self.window_samples.labels(label)
            for cause in ("cap", "retention"):
                self.window_dropped.labels(cause, label)

    def observe_flush(self, flushed: Flushed, stats: StoreStats) -> None:
        for (kind, reason), records in flushed.counts.items():
            self.follow_refused.labels(kind, reason).inc(records)
        for (cause, label), samples in flushed.dropped.items():
            self.window_dropped.labels(cause, str(label)).inc(samples)
        for label, samples in stats.samples.items():
            self.window_samples.labels(str(label)).set(samples)
        self.window_bytes.set(stats.bytes)
        self.pending.set(stats.pending)
        if stats.oldest_ts is not None:
            self.window_oldest.set(stats.oldest_ts)
            self.window_newest.set(stats.newest_ts)
        self.last_flush.set_to_current_time()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def observe(self, outcome: BuildOutcome) -> None:
        now = time.time()
        self.last_success.set(now)
        report = outcome.report
        if outcome.published is not None:
            self.builds.labels("published").inc()
            self.last_publish.set(now)
        else:
            self.builds.labels("refused").inc()
            for reason in outcome.refused:
                self.refusals.labels(reason).inc()
        for source, reasons in report["data"]["skipped"].items():
            for reason, rows in reasons.items():
                self.skipped_rows.labels(source, reason).inc(rows)
        for part in ("fit", "val", "holdout"):
            self.samples.labels(part).set(report["data"][part]["rows"])
        metrics = report.get("metrics", {})
        # after a publish the candidate is what serves
        serving = metrics.get("candidate") if outcome.published is not None else metrics.get("serving")
        for model, values in (("candidate", metrics.get("candidate")), ("encoder", metrics.get("encoder")),
                              ("serving", serving)):
            for metric in ("auc", "ap", "r_at_p90"):
                if values is not None:
                    self.evaluation.labels(model, metric).set(values[metric])

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics HTTP endpoint in a daemon thread; returns the bound port (port 0: any free one)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_address[1])
