"""The pieces /ready and the logs rely on: the stuck clock and the repeat filter (in-process)."""

from __future__ import annotations

import asyncio
import logging

from kafka_io.broker import free_port
from kafka_io.client import KafkaClientConfig
from worker.health import Health
from worker.logs import RepeatFilter


def test_stuck_only_with_events_waiting_and_no_batch_for_a_while(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("worker.health.time.monotonic", lambda: clock[0])
    health = Health(KafkaClientConfig("127.0.0.1:1"), stuck_seconds=30)
    clock[0] += 60
    assert health.problem() is None  # idle, nothing waiting: fine
    health.waiting = 12
    assert health.problem() == "stuck: no batch scored for 60s while 12 events wait"
    health.progressed()
    clock[0] += 29
    assert health.problem() is None


def test_an_unreachable_cluster_is_the_reason_and_logged_once(caplog):
    health = Health(KafkaClientConfig(f"127.0.0.1:{free_port()}"))
    with caplog.at_level(logging.INFO, logger="ecseq.worker"):
        asyncio.run(health.probe())
        asyncio.run(health.probe())
    assert "connection refused" in health.problem()
    assert [r.levelname for r in caplog.records] == ["ERROR"]


def _record(msg: str, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_the_same_warning_passes_once_per_window_and_then_says_how_many_were_left_out(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("worker.logs.time.monotonic", lambda: clock[0])
    repeat = RepeatFilter(window=10)
    assert repeat.filter(_record("Unable connect to %s"))
    assert not any(repeat.filter(_record("Unable connect to %s")) for _ in range(64))
    assert repeat.filter(_record("another %s"))  # another template, another key
    assert repeat.filter(_record("Unable connect to %s", name="faust"))  # another logger too
    assert repeat.filter(_record("scored %d", level=logging.INFO)) and repeat.filter(_record("scored %d", logging.INFO))
    clock[0] = 10.5
    again = _record("Unable connect to %s")
    assert repeat.filter(again) and again.msg == "Unable connect to %s (64 more like this in the last 10s)"


def test_an_unexpected_probe_error_is_a_reason_not_a_crash(monkeypatch):
    health = Health(KafkaClientConfig("127.0.0.1:1"))

    async def broken(timeout: float, kwargs: dict) -> None:
        raise ValueError("odd")

    monkeypatch.setattr(health.kafka.__class__, "check", lambda self, timeout, kwargs: broken(timeout, kwargs))
    asyncio.run(health.probe())
    assert health.problem() == "Kafka probe failed: ValueError('odd')"
