"""What /ready says beyond "recovered, assigned, serving": Kafka answers, and the agent makes progress.

Faust keeps a worker whose cluster vanished looking alive (aiokafka reconnects in silence), and an
agent that stopped taking batches leaves every Faust state as it was. So a probe opens one
connection to the cluster every PROBE_SECONDS (the client configuration's own check, which names
the cause), and the agent marks each batch it finishes: with events waiting and no batch for
STUCK_SECONDS, the worker is stuck. Either makes /ready 503 with the reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka_io.client import KafkaClientConfig
from kafka_io.errors import BrokerError

log = logging.getLogger("ecseq.worker")

PROBE_SECONDS = 3.0
STUCK_SECONDS = 30.0


class Health:
    def __init__(self, kafka: KafkaClientConfig, stuck_seconds: float = STUCK_SECONDS) -> None:
        self.kafka = kafka
        self.stuck_seconds = stuck_seconds
        self.kafka_problem: str | None = None
        self.waiting = 0  # events in assigned input partitions past the committed offsets
        self._last_batch = time.monotonic()
        # the client arguments, built once they build: an SSL context (the CA store parsed) on the
        # event loop every probe would cost the batches around it; the app's clients keep theirs too
        self._client: dict[str, Any] | None = None

    async def probe(self) -> None:
        """One connection attempt; logs a change of state once, not every probe."""
        try:
            if self._client is None:
                self._client = self.kafka.aiokafka()
            await self.kafka.check(timeout=PROBE_SECONDS, kwargs=self._client)
        except Exception as exc:  # noqa: BLE001 - a timer that raises stops the worker; a probe must not
            problem = str(exc) if isinstance(exc, BrokerError) else f"Kafka probe failed: {exc!r}"
            if self.kafka_problem is None:
                log.error("not ready: %s", problem)
            self.kafka_problem = problem
        else:
            if self.kafka_problem is not None:
                log.info("Kafka answers again at %s", self.kafka.describe())
            self.kafka_problem = None

    def progressed(self) -> None:
        """A batch was finished, or the partitions changed hands (the clock starts again)."""
        self._last_batch = time.monotonic()

    def problem(self) -> str | None:
        """Why the worker is not ready on these counts, or None."""
        if self.kafka_problem is not None:
            return self.kafka_problem
        idle = time.monotonic() - self._last_batch
        if self.waiting > 0 and idle > self.stuck_seconds:
            return f"stuck: no batch scored for {idle:.0f}s while {self.waiting} events wait"
        return None
