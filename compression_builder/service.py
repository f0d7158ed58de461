"""Running builds: one on demand, or one every interval as a service, with metrics and announcements.

A build holds the store's build lock from start to end, so two builders never interleave;
the one that finds it held exits (one-shot) or skips the round (service). After a publish the
new version is announced on the control topic so workers swap at once instead of at their
next poll of CURRENT; an announcement that fails is counted, not fatal (CURRENT is the truth).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from compression_builder.metrics import BuilderMetrics
from compression_builder.pipeline import (
    BuildConfig,
    BuildOutcome,
    FreshEncoder,
    load_serving,
    rebuild,
)
from compression_builder.sources import Gathered
from compression_builder.window_store import Caps, WindowStore, WindowStoreError
from ecseq.artifacts import ArtifactError, ArtifactStore, ModelBundle, StoreBusy
from ecseq.data.events import DataError
from ecseq.decoding import EventSchema
from ecseq.stages import StageClock
from kafka_io.errors import BrokerError

if TYPE_CHECKING:
    from compression_builder.follower import Follower
    from kafka_io.client import KafkaClientConfig

log = logging.getLogger("ecseq.builder")

Announcer = Callable[[dict], None]


class AnnounceError(RuntimeError):
    """The control topic could not take an announcement (broker down, timeout)."""


def kafka_announcer(kafka: KafkaClientConfig, topic: str, replication: tuple[int, int] = (0, 0)) -> Announcer:
    """Send `{"version", "path", "manifest_sha256"}` to the control topic, keyed so compaction keeps the latest.

    The topic (one partition, compacted) is created on the first announcement if it is missing,
    replicated as ``replication`` (the ECSEQ_REPLICATION_FACTOR / ECSEQ_MIN_INSYNC_REPLICAS pair).
    """
    from aiokafka.errors import KafkaError

    from kafka_io.errors import BrokerError
    from kafka_io.topics import ensure_topics, produce_json

    ensured = False

    def announce(message: dict) -> None:
        nonlocal ensured
        try:
            if not ensured:
                ensure_topics(kafka, {topic: 1}, compacted=[topic], replication_factor=replication[0],
                              min_insync_replicas=replication[1])
                ensured = True
            produce_json(kafka, topic, [("artifact", message)])
        except (KafkaError, BrokerError, OSError, TimeoutError) as exc:
            raise AnnounceError(f"could not announce {message['version']} on {kafka.bootstrap} {topic}: "
                                f"{exc}") from None
        log.info("announced %s on %s", message["version"], topic)
    return announce


@dataclass
class BuildJob:
    store: ArtifactStore
    gather: Callable[[ModelBundle | None], Gathered]  # the serving model says which columns and window to read
    config: BuildConfig
    metrics: BuilderMetrics | None = None
    announce: Announcer | None = None
    wait_for_lock: bool = False
    force: bool = False  # publish even if the quality gate refuses

    def run(self, fresh: Callable[[Gathered, StageClock], FreshEncoder] | None = None) -> BuildOutcome:
        """One build under the store's build lock; `fresh` trains a new encoder first (train-encoder)."""
        clock = StageClock(self.metrics.observe_stage if self.metrics else None)
        with self.store.build_lock(wait=self.wait_for_lock):
            with clock("load_serving"):
                serving, problem = load_serving(self.store)
            if fresh is None and serving is None:
                raise DataError(f"artifact store {self.store.root} has no loadable artifact ({problem}); "
                                "run `ecseq train-encoder` first")
            with clock("gather"):
                gathered = self.gather(serving.bundle if fresh is None else None)
            encoder = fresh(gathered, clock) if fresh is not None else None
            outcome = rebuild(self.store, gathered, self.config, serving, problem, clock, encoder, self.force)
        if self.metrics is not None:
            self.metrics.observe(outcome)
        if outcome.published is not None and self.announce is not None:
            self._announce(outcome.published.announcement())
        return outcome

    def _announce(self, message: dict) -> None:
        try:
            self.announce(message)
        except AnnounceError as exc:  # the version is published; workers still find it through CURRENT
            log.error("%s", exc)
            if self.metrics is not None:
                self.metrics.announce_failures.inc()


def open_window_store(root: Path, schema: EventSchema, window: int, caps: Caps) -> WindowStore:
    """The service's window store; one made for other columns or another window length cannot feed
    this encoder, so it starts again (the follower then fills it from the topics)."""
    made_for = json.dumps({"numeric": schema.numeric, "categorical": schema.categorical, "window": window})
    store = WindowStore(root, caps)
    held = store.meta("made_for")
    if held is not None and held != made_for:
        log.warning("window store %s was made for %s, the serving artifact needs %s: starting it again",
                    root, held, made_for)
        store.close()
        shutil.rmtree(root)
        store = WindowStore(root, caps)
    store.set_meta("made_for", made_for)
    return store


def follow(make: Callable[[], Follower], stop: threading.Event, retry: float = 10.0) -> None:
    """Run followers until `stop`; one that fails (the broker gone, the disk full) is logged and a new
    one resumes from the store's offsets after `retry` seconds."""
    while not stop.is_set():
        try:
            make().run(stop)
        except (BrokerError, KafkaError, OSError, TimeoutError, WindowStoreError, sqlite3.Error) as exc:
            log.error("follower stopped: %s; resuming in %.0f s", exc, retry)
        except Exception:
            log.exception("follower failed unexpectedly; resuming in %.0f s", retry)
        stop.wait(retry)


def run_every(job: BuildJob, every: float, stop: threading.Event) -> None:
    """Build now and then every `every` seconds until `stop` is set; a failed build never stops the loop."""
    log.info("builder started: every %.0f s on store %s", every, job.store.root)
    while not stop.is_set():
        try:
            job.run()
        except StoreBusy as exc:
            log.info("skipping this round: %s", exc)
            _count(job, "busy")
        except (DataError, ArtifactError) as exc:
            log.error("build failed: %s", exc)
            _count(job, "failed")
        except Exception:
            log.exception("build failed unexpectedly")
            _count(job, "failed")
        stop.wait(every)
    log.info("builder stopped")


def _count(job: BuildJob, result: str) -> None:
    if job.metrics is not None:
        job.metrics.builds.labels(result).inc()
