"""The builder's Prometheus metrics, in base units, on its own registry and /metrics endpoint."""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from compression_builder.pipeline import BuildOutcome

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
        for result in BUILD_RESULTS:  # every series exists from the start, so increase() sees the first one
            self.builds.labels(result)

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
