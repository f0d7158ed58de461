"""The worker's web views: /health (alive), /ready (serving, assigned, recovered, Kafka answering, making
progress; else 503 with the reason), /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import generate_latest

# prometheus_client's CONTENT_TYPE_LATEST carries a charset, which aiohttp refuses here
PROMETHEUS_TEXT = "text/plain; version=0.0.4"

if TYPE_CHECKING:
    from worker.app import Worker


def register(worker: Worker) -> None:
    app = worker.app

    @app.page("/health")
    async def health(web, request):
        return web.json({"status": "alive"})

    @app.page("/ready")
    async def ready(web, request):
        ready, reason = worker.readiness()
        state = {"ready": ready, "artifact": worker.follower.version, "assigned": worker.assigned,
                 "recovering": bool(app.tables.recovery.in_recovery)}
        if reason is not None:
            state["reason"] = reason
        return web.json(state, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(generate_latest(worker.metrics.registry), content_type=PROMETHEUS_TEXT)
