"""The worker on a SASL_SSL listener: it scores with the right credentials, and with wrong ones it says
why on /ready and in its log, consumes nothing, and stops on SIGTERM."""

from __future__ import annotations

import json
import time

import pytest

from kafka_io.topics import produce_json, read_topic
from tests.processes import terminate

from .conftest import event_records


def _secured(broker) -> dict[str, str]:
    return broker.client_settings()  # ECSEQ_BROKER is the SASL_SSL listener, the password by file


def test_worker_scores_over_sasl_ssl(deployment, broker, events_frame):
    records = event_records(events_frame.sort_values("ts", kind="stable").head(200))
    with deployment.worker("w1", **_secured(broker)) as worker:
        produce_json(deployment.bootstrap, deployment.topic("events"), records)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scores = read_topic(deployment.bootstrap, deployment.topic("scores"))
            if len(scores) >= len(records):
                break
            time.sleep(0.5)
        assert {r.json()["event_id"] for r in scores} == {v["event_id"] for _, v in records}
        status, _ = worker.get("/ready")
        assert status == 200
        assert terminate(worker.proc) == 0
    log = worker.log.read_text(errors="replace")
    assert broker.material.password not in log
    assert "over SASL_SSL, user ecseq (SCRAM-SHA-512)" in log  # which connection, never the secret


def _refused(broker, tmp_path, case: str) -> tuple[dict[str, str], str]:
    settings = _secured(broker)
    if case == "wrong password":
        wrong = tmp_path / "wrong-password"
        wrong.write_text("not-the-password\n")
        return settings | {"ECSEQ_KAFKA_PASSWORD_FILE": str(wrong)}, "authentication failed for user 'ecseq'"
    if case == "untrusted CA":
        return settings | {"ECSEQ_KAFKA_CA_FILE": ""}, "TLS certificate is not trusted"
    assert case == "plaintext on the TLS port"
    return settings | {"ECSEQ_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "the broker closed the connection"


@pytest.mark.parametrize("case", ["wrong password", "untrusted CA", "plaintext on the TLS port"])
def test_refused_credentials_keep_the_worker_unready_with_the_reason_and_consume_nothing(deployment, broker,
                                                                                          events_frame, tmp_path,
                                                                                          case):
    settings, reason = _refused(broker, tmp_path, case)
    produce_json(deployment.bootstrap, deployment.topic("events"), event_records(events_frame.head(20)))
    with deployment.worker("w1", wait_ready=False, **settings) as worker:
        deadline = time.monotonic() + 60
        body: dict = {}
        while time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.log.read_text(errors="replace")[-3000:]
            try:
                status, raw = worker.get("/ready")
            except OSError:
                time.sleep(0.2)
                continue
            body = json.loads(raw)
            if reason in body.get("reason", ""):
                break
            time.sleep(0.2)
        assert status == 503 and reason in body["reason"], body
        assert worker.get("/health")[0] == 200
        assert worker.get("/metrics")[0] == 200
        time.sleep(1.0)
        assert terminate(worker.proc, timeout=30) == 0
    log = worker.log.read_text(errors="replace")
    refusals = [line for line in log.splitlines() if reason in line]
    assert refusals and all("not ready:" in line for line in refusals), log[-2000:]
    assert "Traceback" not in log and broker.material.password not in log
    assert read_topic(deployment.bootstrap, deployment.topic("scores")) == []  # nothing scored
    assert read_topic(deployment.bootstrap, deployment.topic("dead_letter")) == []
