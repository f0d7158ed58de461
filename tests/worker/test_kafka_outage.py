"""The only broker dies under a running worker and comes back: /ready says so with the reason and
recovers, the log stays readable, every event is scored; SIGTERM with the broker gone still ends
the worker within its bound."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from kafka_io.broker import KafkaCluster
from kafka_io.topics import ensure_topics, produce_json
from worker.runner import STOP_SECONDS

from .conftest import Deployment, event_records
from .test_recovery import _all_scored, _until


@pytest.fixture(scope="module")
def lone_broker(tmp_path_factory) -> Iterator[KafkaCluster]:
    """A node of this module's own: killing it leaves the session's broker to the other tests."""
    node = KafkaCluster(nodes=1, workdir=tmp_path_factory.mktemp("lone")).start()
    try:
        yield node
    finally:
        node.stop()


def _ready(worker) -> tuple[int, dict]:
    status, body = worker.get("/ready")
    return status, json.loads(body)


def test_ready_tells_the_truth_while_kafka_is_gone(lone_broker, store, topic_names, tmp_path, events_frame):
    env = {"ECSEQ_BROKER": lone_broker.bootstrap, "ECSEQ_STORE": str(store), "ECSEQ_SWAP_CHECK_EVERY": "1s",
           "ECSEQ_PARTITIONS": "4", "ECSEQ_APP_ID": topic_names("app")}
    for name in ("events", "scores", "labels", "dead_letter", "artifacts"):
        env[f"ECSEQ_{name.upper()}_TOPIC"] = topic_names(name)
    deployment = Deployment(env, lone_broker.bootstrap, tmp_path)
    ensure_topics(lone_broker.bootstrap, {deployment.topic("events"): 4})
    records = event_records(events_frame.sort_values("ts", kind="stable").head(600).reset_index(drop=True))
    ids = {v["event_id"] for _, v in records}
    with deployment.worker("w1") as worker:
        produce_json(lone_broker.bootstrap, deployment.topic("events"), records[:300])
        _until(lambda: _all_scored(lone_broker.bootstrap, deployment.topic("scores"),
                                   {v["event_id"] for _, v in records[:300]}), "the first events scored")

        lone_broker.kill(0)
        killed = time.monotonic()
        _until(lambda: _ready(worker)[0] == 503, "/ready 503", timeout=15, every=0.2)
        noticed = time.monotonic() - killed
        reason = _ready(worker)[1]["reason"]
        assert "Kafka" in reason and "connection refused" in reason, reason
        lines = len(worker.log.read_text(errors="replace").splitlines())
        time.sleep(10)
        written = len(worker.log.read_text(errors="replace").splitlines()) - lines
        assert written <= 30, f"{written} log lines in 10 s with the broker gone"
        assert worker.proc.poll() is None and worker.get("/health")[0] == 200

        lone_broker.restart(0)
        _until(lambda: _ready(worker)[0] == 200, "/ready 200 again", timeout=90, every=0.5)
        back = time.monotonic() - killed
        produce_json(lone_broker.bootstrap, deployment.topic("events"), records[300:])
        scores = _until(lambda: _all_scored(lone_broker.bootstrap, deployment.topic("scores"), ids),
                        "every event scored", timeout=90, every=0.5)
        assert {r.json()["event_id"] for r in scores} == ids

        lone_broker.kill(0)  # and stopped while it is gone: within the bound, whatever Kafka does
        _until(lambda: _ready(worker)[0] == 503, "/ready 503 before SIGTERM", timeout=15, every=0.2)
        signalled = time.monotonic()
        worker.proc.terminate()
        status = worker.proc.wait(timeout=STOP_SECONDS + 15)
        stopped = time.monotonic() - signalled
    lone_broker.restart(0)
    print(f"\nkafka outage: /ready 503 {noticed:.1f}s after the kill, 200 again {back:.1f}s after it "
          f"(restart included); {written} log lines in 10 s down; SIGTERM with Kafka gone: exit {status} "
          f"in {stopped:.1f}s")
    assert status in (0, 1) and stopped <= STOP_SECONDS + 5
