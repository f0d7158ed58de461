"""The stream worker: a faust-streaming app that scores every event against its user's sequence.

One agent reads the events topic (and the repartition topic, for producers that do not key by
user) in micro-batches. Per batch (decided by worker/batch_step.py, sent and written here):
decode and validate every record (bad ones go to the dead-letter topic with their bytes, reason
and origin), append each event to its user's history in a changelog-backed table (a redelivered
event id is not appended twice), score the whole batch in one call on the artifact served at
the start of the batch, send one score record per event, and only then let Faust acknowledge
the batch: at-least-once, with scores keyed by user and idempotent by event id.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time

import faust
import torch

from ecseq.artifacts import ArtifactStore
from ecseq.settings import parse_duration
from ecseq.stages import StageClock
from kafka_io.client import KafkaClientConfig
from kafka_io.topics import ensure_topics
from worker import internals, views
from worker.artifact_follower import SWAPPED, ArtifactFollower, announced_version
from worker.batch_step import InputRecord, score_batch
from worker.confirmations import InFlight, acknowledge
from worker.faust_settings import faust_settings
from worker.health import PROBE_SECONDS, Health
from worker.metrics import WorkerMetrics
from worker.micro_batches import micro_batches
from worker.outputs import Source
from worker.record_batches import PartitionBatches
from worker.settings import WorkerSettings
from worker.state import TABLE, HistoryTable

log = logging.getLogger("ecseq.worker")

# The producer's batch size bounds each record batch the worker builds (worker/record_batches.py). aiokafka
# keeps one produce request in flight per broker and hands over a partition's next batch only once
# the previous one is drained, so a micro-batch split into several batches per partition (Faust's
# 16 KB default holds ~24 score records or ~9 sequences) waits several broker round trips; one batch
# per partition per micro-batch needs room for it (the request limit, producer_max_request_size,
# stays 1 MB).
PRODUCER_TUNING = {"producer_max_batch_size": 256 * 1024}
# Events kept beyond the scoring window, so a redelivered event (replayed after a crash, up to a
# commit interval back) still finds its whole window and gets the score it got the first time.
HISTORY_SLACK = 8


def history_limit(window: int) -> int:
    return window + HISTORY_SLACK


def repartition_topic(settings: WorkerSettings) -> str:
    """Where events keyed by anything but their user are forwarded, keyed by user."""
    return f"{settings.app_id}-events-by-user"


def changelog_topic(settings: WorkerSettings) -> str:
    """The sequence table's changelog (Faust's name for it: ``{app id}-{table}-changelog``)."""
    return f"{settings.app_id}-{TABLE}-changelog"


def prepare_topics(settings: WorkerSettings, kafka: KafkaClientConfig) -> tuple[int, int]:
    """Create every topic the worker reads or writes that is missing, replicated to suit the cluster;
    returns (replication factor, min.insync.replicas). Fails with one line if Kafka refuses us."""
    partitioned = (settings.events_topic, settings.scores_topic, settings.dead_letter_topic,
                   repartition_topic(settings), changelog_topic(settings))
    return ensure_topics(kafka, {name: settings.partitions for name in partitioned} | {settings.artifacts_topic: 1},
                         compacted=(changelog_topic(settings), settings.artifacts_topic),
                         replication_factor=settings.replication_factor,
                         min_insync_replicas=settings.min_insync_replicas)


class Worker:
    """The Faust app with its topics, table, agents, timers and web views, built from WorkerSettings.

    The process applies `worker.internals` (its patches of Faust) before building one (worker/cli.py).
    """

    def __init__(self, settings: WorkerSettings, kafka: KafkaClientConfig, replication: tuple[int, int] = (1, 1),
                 metrics: WorkerMetrics | None = None) -> None:
        """``replication``: (replication factor, min.insync.replicas) of the topics Faust declares
        (the changelog and repartition topics), as `prepare_topics` chose them."""
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        if "OMP_NUM_THREADS" not in os.environ:
            # Scoring runs on the event loop's thread, one micro-batch at a time: intra-op threads
            # only spin against that thread, Faust's consumer thread and the broker (docs/results.md).
            torch.set_num_threads(1)
        self.follower = ArtifactFollower(ArtifactStore(settings.store, keep=settings.keep_versions), self.metrics)
        self._batch_within = parse_duration(settings.batch_within)
        self.app = faust.App(settings.app_id, **faust_settings(settings, kafka, replication[0]), **PRODUCER_TUNING)
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.repartition_topic = self.app.topic(repartition_topic(settings), **raw)
        self.dead_letter_topic = self.app.topic(settings.dead_letter_topic, **raw)
        self.artifacts_topic = self.app.topic(settings.artifacts_topic, **raw)
        self.histories = HistoryTable(self.app, settings.partitions, settings.state_cache_bytes,
                                       settings.max_state_bytes, self.metrics.trimmed_states,
                                       {"min.insync.replicas": str(replication[1])})
        self.served = asyncio.Event()
        self.assigned = False
        self.health = Health(kafka)
        self.metrics.ready.set_function(lambda: float(self.readiness()[0]))
        self.app.agent(self.app.topic(settings.events_topic, repartition_topic(settings), **raw), name="score",
                       concurrency=1)(self._score_stream)
        self.app.agent(self.artifacts_topic, name="artifacts")(self._announcements)
        self.app.timer(parse_duration(settings.swap_check_every))(self._check_artifact)
        self.app.timer(1.0)(self._record_lag)
        self.app.timer(PROBE_SECONDS)(self.health.probe)
        self.app.task(self._check_artifact)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        views.register(self)

    # --- artifact ---------------------------------------------------------------------------

    async def _check_artifact(self, *_: object) -> None:
        """Load and verify CURRENT off the event loop; swap between batches."""
        outcome = await asyncio.get_running_loop().run_in_executor(None, self.follower.check)
        if outcome == SWAPPED:
            freeze_long_lived()
        if self.follower.scorer is not None:
            self.served.set()

    async def _announcements(self, stream) -> None:
        async for message in stream:
            version = announced_version(message)
            self.metrics.announcements.labels("ignored" if version is None else "understood").inc()
            if version is None:
                log.warning("ignoring an unreadable announcement on %s", self.settings.artifacts_topic)
            elif version != self.follower.version:
                await self._check_artifact()

    # --- scoring ----------------------------------------------------------------------------

    async def _score_stream(self, stream) -> None:
        await self.served.wait()  # nothing is consumed before an artifact can score it
        in_flight = InFlight()  # the next batch is scored while this one's outputs are delivered
        async for events in micro_batches(stream, self.settings.batch_size, self._batch_within):
            pending, timestamps = await self._score_batch(events)
            await in_flight.add(self._confirm(events, pending, timestamps))

    async def _confirm(self, events: list[faust.EventT], pending: list[asyncio.Future],
                       timestamps: list[float]) -> None:
        """Acknowledge a batch once every output it sent (scores, dead letters, forwards) is delivered."""
        clock = StageClock(self.metrics.observe_stage)
        await asyncio.gather(*pending)
        clock.lap("deliver")
        self.metrics.observe_latencies(timestamps)
        acknowledge(self.app, events)
        self.health.progressed()

    async def _score_batch(self, events: list[faust.EventT]) -> tuple[list[asyncio.Future], list[float]]:
        """Score a batch and hand its outputs to the producer; returns their delivery futures and the
        scored events' Kafka timestamps (the agent confirms them with _confirm)."""
        scorer = self.follower.scorer  # one artifact for the whole batch
        metrics = self.metrics
        received = time.time()
        lap = StageClock(metrics.observe_stage).lap
        records = [InputRecord(message.key, message.value,
                               Source(message.topic, message.partition, message.offset, message.timestamp))
                   for message in (event.message for event in events)]
        step = score_batch(records, scorer, self.histories, history_limit(scorer.window), self.settings.max_event_bytes,
                           self.app.conf.producer_max_request_size, received, lap)

        pending: list[asyncio.Future] = []
        for _, (key, value, headers) in step.dead_letters:
            pending.append(await self.dead_letter_topic.send(key=key, value=value, headers=headers))
        for key, value in step.forwards:
            pending.append(await self.repartition_topic.send(key=key, value=value))
        # Straight to the aiokafka producer under Faust's, one record batch per partition (see
        # worker/record_batches.py): Topic.send's FutureMessage, callbacks and sensors cost more a record
        await self.app.maybe_start_producer()
        producer = internals.aiokafka_producer(self.app)
        pending.append(await self.histories.write(step.state, producer))
        out = PartitionBatches(producer, self.settings.scores_topic)
        for key, value in step.scores:
            await out.append(key, value)
        pending.extend(sent.delivered for sent in await out.send())
        # every output (dead letters, forwards, state, scores) handed to the producer; delivery is
        # confirmed (and timed) by _confirm
        lap("produce")

        for reason, count in step.dead_letters_by_reason().items():
            metrics.dead_letters.labels(reason).inc(count)
        metrics.events.labels("dead_letter").inc(len(step.dead_letters))
        metrics.events.labels("repartitioned").inc(step.repartitioned)
        metrics.events.labels("scored").inc(step.scored)
        metrics.duplicates.inc(step.duplicates)
        metrics.observe_neighbours(step.neighbours)
        metrics.batch_size.observe(len(events))
        return pending, step.timestamps

    # --- operations -------------------------------------------------------------------------

    async def _on_assigned(self, sender, assigned, **_: object) -> None:
        self.assigned = True
        self.health.progressed()
        self.metrics.lag.clear()  # partitions now on another replica stop being reported here

    async def _record_lag(self) -> None:
        """The group's committed offset (as the Monitor sensor saw it committed) against the high watermark."""
        if self.app.tables.recovery.in_recovery:
            self.health.progressed()  # the stuck clock does not run while state is being recovered
        consumer = self.app.consumer
        committed_offsets = self.app.monitor.tp_committed_offsets
        waiting = 0
        for tp in consumer.assignment():
            if tp.topic not in (self.settings.events_topic, self.repartition_topic.get_topic_name()):
                continue
            highwater = consumer.highwater(tp)
            committed = committed_offsets.get(tp)
            if highwater is not None:
                lag = max(highwater - (committed or 0), 0)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
                waiting += lag
        self.health.waiting = waiting

    def readiness(self) -> tuple[bool, str | None]:
        """What /ready reports: serving an artifact, assigned, recovered, Kafka answering and the agent
        making progress; else False and the first reason it is not."""
        if self.follower.scorer is None:
            return False, f"no artifact to serve (store {self.settings.store})"
        if not self.assigned:
            return False, "no partitions assigned yet"
        if self.app.tables.recovery.in_recovery:
            return False, "recovering state from the changelog"
        problem = self.health.problem()
        return problem is None, problem


def freeze_long_lived() -> None:
    """Keep the cyclic GC's full collections off everything that lives as long as the process.

    The app, Faust, torch and the served artifact are hundreds of thousands of tracked objects: a
    full collection traversed them all and paused the event loop for the worst latencies under
    load; frozen objects are skipped (docs/results.md). Called when an artifact starts being
    served; the unfreeze + collect lets a replaced one be freed (one such pause per swap).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
