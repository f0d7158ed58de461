"""The schedule survives failing builds and counts them; announcements that fail are counted too."""

from __future__ import annotations

import threading

from compression_builder.metrics import BuilderMetrics
from compression_builder.pipeline import BuildConfig
from compression_builder.service import AnnounceError, BuildJob, run_every
from compression_builder.sources import read_event_file
from ecseq.artifacts import ArtifactStore
from ecseq.data.events import DataError
from ecseq.gnn_training import GNNTrainConfig
from ecseq.relation import RelationConfig


def _count(metrics: BuilderMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("ecseq_builder_builds_total", {"result": result}) or 0.0


def test_failing_builds_are_counted_and_the_loop_goes_on(store):
    metrics = BuilderMetrics()
    stop = threading.Event()
    calls = []

    def gather(spec):
        calls.append(spec)
        if len(calls) >= 3:
            stop.set()
        raise DataError("the events topic is empty")

    job = BuildJob(ArtifactStore(store), gather, BuildConfig(), metrics)
    runner = threading.Thread(target=run_every, args=(job, 0.01, stop))
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert len(calls) == 3 and all(spec is not None for spec in calls)  # the serving spec was passed
    assert _count(metrics, "failed") == 3


def test_a_busy_store_skips_the_round(store):
    metrics = BuilderMetrics()
    stop = threading.Event()
    artifacts = ArtifactStore(store)
    job = BuildJob(artifacts, lambda spec: stop.set(), BuildConfig(), metrics)
    with artifacts.build_lock():
        runner = threading.Thread(target=run_every, args=(job, 0.01, stop))
        runner.start()
        while _count(metrics, "busy") < 2:
            runner.join(timeout=0.01)
        stop.set()
        runner.join(timeout=30)
    assert _count(metrics, "busy") >= 2 and _count(metrics, "failed") == 0


def test_a_failed_announcement_is_counted_not_fatal(store, events_csv):
    metrics = BuilderMetrics()

    def announce(message):
        raise AnnounceError(f"could not announce {message['version']}")

    def gather(bundle):
        spec = bundle.feature_spec
        return read_event_file(events_csv, tuple(f.name for f in spec.categorical), [f.name for f in spec.numeric])

    config = BuildConfig(relation=RelationConfig(k=40, positive_k=10, gnn=GNNTrainConfig(epochs=5, progress=False)))
    outcome = BuildJob(ArtifactStore(store), gather, config, metrics, announce, force=True).run()
    assert outcome.published.version == "v000002" and ArtifactStore(store).current() == "v000002"
    assert metrics.registry.get_sample_value("ecseq_builder_announce_failures_total") == 1.0
    assert _count(metrics, "published") == 1
