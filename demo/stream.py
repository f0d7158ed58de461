"""The live part of the demo: replay, read the results back, start the builder mid-stream, watch the swap.

One event loop runs the paced sender and the reader side by side; a tick every 0.1 s checks the
children, starts the builder once half the labels are out, reports the build and the swap as they
happen, and redraws the live line. After the replay it waits (bounded) until every valid event is
scored, every malformed one dead-lettered and the build decided.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from demo.builds import Build, gate_line, newest_build
from demo.processes import Children
from demo.progress import Display, Scores, follow, progress_line
from demo.replay import ReplayPlan, ReplayProgress, send
from ecseq.artifacts import ArtifactStore
from kafka_io.client import KafkaClientConfig
from kafka_io.settings import KafkaSettings

TICK = 0.1
DRAIN_SECONDS = 120.0  # after the replay: for the last scores and the build's verdict


@dataclass
class StreamResult:
    scores: Scores
    replay: ReplayProgress
    started: float  # wall clock when the replay began
    builder_step: int | None  # events sent when the builder was started
    build: Build | None
    complete: bool  # every valid event scored, every malformed one dead-lettered


def _complete(plan: ReplayPlan, scores: Scores) -> bool:
    return plan.valid_ids <= scores.seen.keys() and scores.dead_letters.total() >= sum(plan.injected.values())


async def run_stream(plan: ReplayPlan, rate: float, kafka: KafkaClientConfig, settings: KafkaSettings,
                     children: Children, start_builder: Callable[[], None], store: ArtifactStore, first: str,
                     display: Display) -> StreamResult:
    scores, replay, stop = Scores(), ReplayProgress(), asyncio.Event()
    reader = asyncio.create_task(follow(kafka, settings.scores_topic, settings.dead_letter_topic, scores, stop))
    started = time.time()
    sender = asyncio.create_task(send(plan, kafka, rate, replay))
    result = StreamResult(scores, replay, started, None, None, False)
    builder_started = deadline = None
    swapped = False
    try:
        while True:
            await asyncio.sleep(TICK)
            now = time.time()
            for task in (reader, sender):
                if task.done():
                    task.result()  # a Kafka failure surfaces here
            children.check()
            if builder_started is None and replay.events >= plan.builder_step:
                start_builder()
                builder_started, result.builder_step = now, replay.events
                display.note(f"builder: started after {replay.events:,} events and {replay.labels:,} labels, "
                             f"{now - started:.1f} s into the replay")
            if builder_started is not None and result.build is None:
                result.build = newest_build(store, first)
                if result.build is not None:
                    display.note(f"builder: {gate_line(result.build)} ({now - builder_started:.1f} s after its start)")
            if not swapped and len(scores.versions) > 1:
                swapped = True
                newer = max(scores.versions)
                display.note(f"worker: swapped to {newer} under load, {now - started:.1f} s into the replay, "
                             f"after {scores.versions[first]:,} events scored by {first}")
            display.update(progress_line(replay, plan.events, scores, now), now)
            if replay.done and deadline is None:
                deadline = now + DRAIN_SECONDS
                display.note(f"replay: {plan.events:,} events ({sum(plan.injected.values()):,} malformed) and "
                             f"{len(plan.labels):,} labels sent at {rate:g}/s ({replay.seconds:.1f} s)")
            if deadline is not None:
                result.complete = _complete(plan, scores)
                if (result.complete and result.build is not None) or now > deadline:
                    break
    finally:
        display.clear()
        stop.set()
        sender.cancel()
        await asyncio.gather(reader, sender, return_exceptions=True)
    return result
