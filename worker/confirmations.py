"""Acknowledging micro-batches once their outputs are delivered, while the next ones are processed.

aiokafka keeps one produce request in flight per broker, so waiting for a batch's deliveries
before taking the next batch left the loop idle for a broker round trip per batch. Instead up to
`limit` batches are confirmed in the background. Each event holds the extra reference
`micro_batches` took until its batch is confirmed: a failed batch stays unacknowledged and is
redelivered after the restart the failure causes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any

import faust

log = logging.getLogger("ecseq.worker")

MAX_UNCONFIRMED = 2  # processed micro-batches whose outputs may be in flight while the next one is processed


def acknowledge(app: faust.App, events: Iterable[faust.EventT]) -> None:
    """Drop each event's extra reference; the last one (take_events may still hold one) lets its
    offset commit, which Faust's sensors are told as its own acks would tell them."""
    sensors = app.sensors
    for event in events:
        if event.ack():
            message = event.message
            sensors.on_message_out(message.tp, message.offset, message)


class InFlight:
    """Batch confirmations running in the background, at most `limit` of them at once."""

    def __init__(self, limit: int = MAX_UNCONFIRMED) -> None:
        self.limit = limit
        self._confirming: deque[asyncio.Task] = deque()

    async def add(self, confirmation: Coroutine[Any, Any, None]) -> None:
        """Start confirming a batch; wait while more than `limit` are unconfirmed. A failed delivery
        raises here, in order, and so stops the agent."""
        task = asyncio.ensure_future(confirmation)
        task.add_done_callback(_report_failed_delivery)
        self._confirming.append(task)
        while self._confirming and (self._confirming[0].done() or len(self._confirming) > self.limit):
            await self._confirming.popleft()


def _report_failed_delivery(task: asyncio.Task) -> None:
    """Say at once that a batch's outputs failed (the agent raises it when it next awaits the task)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("delivering a batch's outputs failed; it stays unacknowledged: %r", task.exception())
