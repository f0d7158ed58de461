"""Before the Faust app starts: reach Kafka, authenticate and create the topics, saying why not meanwhile.

A worker that cannot reach its cluster (down, wrong password, untrusted CA, TLS port spoken to in
plaintext) must not sit in aiokafka's silent reconnect loop looking alive. Until Kafka answers,
this serves /health (200), /ready (503 with the reason) and /metrics on the worker's own port,
logs one line per attempt (every `RETRY_SECONDS`, the password file re-read each time, so a
rotated secret is picked up), consumes and scores nothing, and stops on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import generate_latest

from kafka_io.client import KafkaClientConfig
from kafka_io.errors import BrokerError
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.views import PROMETHEUS_TEXT

log = logging.getLogger("ecseq.worker")

RETRY_SECONDS = 10.0


async def _wait(settings: WorkerSettings, attempt: Callable[[], tuple[int, int]], metrics: WorkerMetrics,
                retry_seconds: float) -> tuple[int, int] | None:
    reason = "connecting to Kafka"

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": False, "reason": reason, "artifact": None, "assigned": False,
                                  "recovering": False}, status=503)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": PROMETHEUS_TEXT})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner: web.AppRunner | None = None
    try:
        while True:
            try:
                return await asyncio.to_thread(attempt)
            except (BrokerError, KafkaError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                log.error("not ready: %s (retrying in %gs)", reason, retry_seconds)
            if runner is None:  # only a worker that must wait serves these; Faust serves them afterwards
                app = web.Application()
                app.router.add_get("/ready", ready)
                app.router.add_get("/health", health)
                app.router.add_get("/metrics", scrape)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, settings.web_host, settings.web_port).start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
            if stop.is_set():
                log.info("stopped before Kafka could be reached")
                return None
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if runner is not None:
            await runner.cleanup()


def wait_for_kafka(settings: WorkerSettings, kafka: KafkaClientConfig, attempt: Callable[[], tuple[int, int]],
                   metrics: WorkerMetrics, retry_seconds: float = RETRY_SECONDS) -> tuple[int, int] | None:
    """Run ``attempt`` (connect and create topics) until it succeeds; None if stopped first."""
    log.info("connecting to Kafka at %s", kafka.describe())
    try:
        return asyncio.run(_wait(settings, attempt, metrics, retry_seconds))
    finally:
        asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run leaves none behind; Faust asks for one
