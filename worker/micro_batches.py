"""Micro-batches that stay small while the worker keeps up and fill up while it is behind.

Faust's ``take_events(size, within)`` cuts a batch after `within` (counted from when the agent asks
for it) or at `size` events. A short `within` bounds latency at normal load, but at full load it
also caps the batch: the buffer fills only while the agent waits, so a batch stays far below
`size` and per-batch costs (model calls, record batches, state writes, timers) dominate.

So takes are joined while at least the rest of a full batch is already waiting in Kafka (by
the high watermarks of the latest fetches): catching up after a restart or a burst, or at full
load. A batch never exceeds `size`, and one being joined is cut once it has been open
`JOIN_LIMIT` windows, whether or not another take comes: Faust stops fetching before a rebalance
or a shutdown and then waits until every taken event is acknowledged, so a batch waiting for
more would wait for ever. docs/results.md has what this changed in bench_worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import faust

JOIN_LIMIT = 10  # windows a batch may be held open while behind


async def micro_batches(stream: faust.StreamT, size: int, within: float) -> AsyncIterator[list[faust.EventT]]:
    """`stream.take_events(size, within)`, with takes joined while behind (see the module docstring).

    Every event carries one extra reference (``event.message.incref()``): take_events acks a take
    when the next one is asked for, which would let offsets be committed before a joined batch
    is scored. The caller drops the reference with ``event.ack()`` once the batch's outputs
    are delivered (the last reference commits the offset).
    """
    consumer = stream.app.consumer
    takes = stream.take_events(size, within=within).__aiter__()
    taken: list[faust.EventT] = []
    opened = 0.0
    next_take: asyncio.Future | None = None
    try:
        while True:
            if next_take is None:  # the next take runs as its own task, so a held batch can time out
                next_take = asyncio.ensure_future(takes.__anext__())
            if taken:
                await asyncio.wait((next_take,), timeout=max(opened + JOIN_LIMIT * within - time.monotonic(), 0.0))
                if not next_take.done():
                    batch, taken = taken, []
                    yield batch
                    continue
            try:
                events = await next_take
            except StopAsyncIteration:
                break
            next_take = None
            for event in events:
                event.message.incref()
            if not taken:
                opened = time.monotonic()
            taken.extend(events)
            while len(taken) >= size:
                batch, taken = taken[:size], taken[size:]
                opened = time.monotonic()
                yield batch
            if taken and _waiting(consumer, events) < size - len(taken):
                batch, taken = taken, []
                yield batch
        if taken:  # the stream is stopping: what was taken is scored too
            yield taken
    finally:
        if next_take is not None and not next_take.done():
            next_take.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_take
        await takes.aclose()  # acks its last take (each event keeps the reference taken above)


def _waiting(consumer: faust.types.ConsumerT, events: list[faust.EventT]) -> int:
    """Events already in Kafka after the last of `events`, on their partitions (the high watermark
    of each partition's latest fetch)."""
    last: dict = {}
    for event in events:
        message = event.message
        last[message.tp] = message.offset
    waiting = 0
    for tp, offset in last.items():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            waiting += max(highwater - offset - 1, 0)
    return waiting
