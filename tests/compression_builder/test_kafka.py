"""Builds from Kafka (events joined with late labels) against a real broker, and the builder service."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ecseq.artifacts import ArtifactStore
from ecseq_cli import main
from kafka_io.broker import free_port
from kafka_io.topics import ensure_topics, produce_json, read_topic
from tests.builds import FAST
from tests.processes import child, terminate

FEATURES = ("amount", "hour", "hours_since_prev", "mcc", "device", "country", "channel")


def _json_value(value):
    """A missing value is JSON null; NaN on the wire is a producer bug the builder skips."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _publish_stream(bootstrap: str, frame, events: str, labels: str) -> None:
    """Events without labels (keyed by user), then late labels for the labelled ones, plus garbage."""
    ensure_topics(bootstrap, {events: 2, labels: 2})
    records = [(row.user_id, {"event_id": row.event_id, "user_id": row.user_id, "ts": float(row.ts),
                              **{f: _json_value(getattr(row, f)) for f in FEATURES}})
               for row in frame.itertuples()]
    good = records[0][1]
    records += [
        ("u1", b"{not json"),  # bad_json
        ("u1", {k: v for k, v in good.items() if k != "amount"} | {"event_id": "x1"}),  # missing_field
        ("u1", good | {"event_id": "x2", "amount": "lots"}),  # bad_type
        ("u1", good | {"event_id": "x3", "amount": math.inf}),  # non_finite
        ("u1", good | {"event_id": "x4", "ts": "someday"}),  # bad_timestamp
        ("u1", good),  # duplicate_event
    ]
    produce_json(bootstrap, events, records)
    labelled = frame[frame["label"].notna()]
    label_records = [(row.user_id, {"event_id": row.event_id, "user_id": row.user_id, "label": int(row.label),
                                    "ts": float(row.ts) + 86400}) for row in labelled.itertuples()]
    label_records += [
        ("u1", b"\xff\xfe"),  # bad_json
        ("u1", {"event_id": good["event_id"], "user_id": good["user_id"]}),  # missing_field
        ("u1", {"event_id": good["event_id"], "user_id": good["user_id"], "label": 2}),  # bad_label
        ("u1", {"event_id": "nope", "user_id": "u1", "label": 1}),  # unknown_event
        ("u1", {"event_id": good["event_id"], "user_id": "someone-else", "label": 1}),  # unknown_event: not theirs
    ]
    produce_json(bootstrap, labels, label_records)


def test_build_from_kafka_joins_late_labels_counts_bad_rows_and_announces(broker, topic_names, store,
                                                                          events_frame, capsys):
    events, labels, control = topic_names("events"), topic_names("labels"), topic_names("artifacts")
    _publish_stream(broker.bootstrap, events_frame, events, labels)
    code = main(["build", "--store", str(store), "--kafka", broker.bootstrap, "--events-topic", events,
                 "--labels-topic", labels, "--artifacts-topic", control, "--force", *FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    loaded = ArtifactStore(store).load()
    assert loaded.version == "v000002"
    report = json.loads((loaded.path / "report.json").read_text())
    assert report["data"]["skipped"] == {
        "events": {"bad_json": 1, "missing_field": 1, "bad_type": 1, "non_finite": 1, "bad_timestamp": 1,
                   "duplicate_event": 1},
        "labels": {"bad_json": 1, "missing_field": 1, "bad_label": 1, "unknown_event": 2},
    }
    assert report["data"]["labelled"] == int(events_frame["label"].notna().sum())
    assert report["data"]["users"] == events_frame["user_id"].nunique()

    announced = [r.json() for r in read_topic(broker.bootstrap, control)]
    manifest_sha = hashlib.sha256((loaded.path / "manifest.json").read_bytes()).hexdigest()
    assert announced == [{"version": "v000002", "path": str(loaded.path.resolve()), "manifest_sha256": manifest_sha}]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_builder_service_rebuilds_on_schedule_serves_metrics_and_stops_on_sigterm(broker, topic_names, store,
                                                                                   events_frame, tmp_path):
    events, labels, control = topic_names("events"), topic_names("labels"), topic_names("artifacts")
    _publish_stream(broker.bootstrap, events_frame, events, labels)
    port = free_port()
    log = tmp_path / "builder.log"
    with child(
        [sys.executable, "-m", "ecseq_cli", "builder", "--store", str(store), "--kafka", broker.bootstrap,
         "--events-topic", events, "--labels-topic", labels, "--artifacts-topic", control, "--every", "1s",
         "--since", "365d", "--metrics-port", str(port), "--keep", "2", "--force", "--data-dir", str(tmp_path),
         *FAST], stdout=log.open("w"), stderr=subprocess.STDOUT) as proc:
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            assert proc.poll() is None, log.read_text()
            try:
                text = _scrape(port)
            except OSError:
                continue
            if (_sample(text, "ecseq_builder_builds_total", result="published") or 0) >= 2:
                break
        assert (_sample(text, "ecseq_builder_builds_total", result="published") or 0) >= 2, log.read_text()
        assert _sample(text, "ecseq_builder_last_success_timestamp_seconds") > time.time() - 120
        assert _sample(text, "ecseq_builder_stage_duration_seconds_count", stage="gnn") >= 2
        # the follower counts a refused record once, however many builds read the store
        assert _sample(text, "ecseq_builder_follow_refused_total", kind="labels", reason="bad_label") == 1
        assert _sample(text, "ecseq_builder_follow_refused_total", kind="events", reason="bad_timestamp") == 1
        labelled = int(events_frame["label"].notna().sum())
        assert sum(_sample(text, "ecseq_builder_window_samples", label=y) for y in ("0", "1")) == labelled
        assert _sample(text, "ecseq_builder_follow_records_total", kind="labels") == labelled + 5
        assert all(_sample(text, "ecseq_builder_follow_lag", topic=t, partition=p) == 0
                   for t in (events, labels) for p in ("0", "1"))
        assert _sample(text, "ecseq_builder_window_bytes") > 0
        assert _sample(text, "ecseq_builder_samples", part="holdout") > 0
        assert 0.5 < _sample(text, "ecseq_builder_evaluation", model="serving", metric="auc") <= 1.0
        assert terminate(proc) == 0
    versions = [r.json()["version"] for r in read_topic(broker.bootstrap, control)]
    assert len(versions) >= 2 and versions == sorted(versions)
    artifacts = ArtifactStore(store)
    assert artifacts.current() == versions[-1]
    assert len(artifacts.versions()) <= 3  # keep 2, plus CURRENT
    for version in artifacts.versions():
        artifacts.verify(version)


def test_rollback_points_current_back_and_announces(broker, topic_names, store, events_csv, capsys):
    control = topic_names("artifacts")
    assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST]) == 0
    code = main(["artifacts", "rollback", "--store", str(store), "--announce", broker.bootstrap,
                 "--artifacts-topic", control])
    out = capsys.readouterr().out
    assert code == 0 and "CURRENT -> v000001 (was v000002)" in out
    assert ArtifactStore(store).current() == "v000001"
    [message] = [r.json() for r in read_topic(broker.bootstrap, control)]
    assert message["version"] == "v000001"


@pytest.mark.parametrize("missing", ["events"])
def test_build_from_an_empty_topic_says_so(broker, topic_names, store, capsys, missing):
    code = main(["build", "--store", str(store), "--kafka", broker.bootstrap, "--events-topic",
                 topic_names(missing), "--labels-topic", topic_names("labels"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "no labelled samples in the window" in err and len(err.strip().splitlines()) == 1


def test_an_unreachable_broker_is_one_line(store, capsys):
    code = main(["build", "--store", str(store), "--kafka", f"127.0.0.1:{free_port()}", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "cannot read ecseq.events + ecseq.labels" in err and "connection refused" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_build_and_rollback_over_sasl_ssl(broker, topic_names, store, events_frame, capsys, monkeypatch):
    events, labels, control = topic_names("events"), topic_names("labels"), topic_names("artifacts")
    _publish_stream(broker.bootstrap, events_frame, events, labels)
    secured = broker.client_settings()
    for name, value in secured.items():
        monkeypatch.setenv(name, value)
    code = main(["build", "--store", str(store), "--kafka", secured["ECSEQ_BROKER"], "--events-topic", events,
                 "--labels-topic", labels, "--artifacts-topic", control, "--force", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert ArtifactStore(store).current() == "v000002"
    code = main(["artifacts", "rollback", "--store", str(store), "--announce", secured["ECSEQ_BROKER"],
                 "--artifacts-topic", control])
    captured = capsys.readouterr()
    assert code == 0 and "CURRENT -> v000001" in captured.out, captured
    assert [r.json()["version"] for r in read_topic(broker.bootstrap, control)] == ["v000002", "v000001"]
    assert broker.material.password not in captured.out + captured.err


@pytest.mark.parametrize(("override", "reason"), [
    ({"ECSEQ_KAFKA_PASSWORD": "not-the-password", "ECSEQ_KAFKA_PASSWORD_FILE": ""},
     "authentication failed for user 'ecseq' (SCRAM-SHA-512)"),
    ({"ECSEQ_KAFKA_CA_FILE": ""}, "TLS certificate is not trusted"),
    ({"ECSEQ_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "the broker closed the connection"),
], ids=["wrong password", "untrusted CA", "plaintext on the TLS port"])
def test_a_build_with_refused_credentials_is_one_line_naming_the_problem(broker, topic_names, store, capsys,
                                                                          monkeypatch, override, reason):
    secured = broker.client_settings() | override
    for name, value in secured.items():
        monkeypatch.setenv(name, value)
    code = main(["build", "--store", str(store), "--kafka", secured["ECSEQ_BROKER"], "--events-topic",
                 topic_names("events"), "--labels-topic", topic_names("labels"), *FAST])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ecseq:")]
    assert code == 2 and len(lines) == 1 and reason in lines[0], err
    assert "Traceback" not in err and "not-the-password" not in err and broker.material.password not in err
    assert ArtifactStore(store).current() == "v000001"  # nothing built


def test_a_kafka_build_reads_only_the_records_stamped_within_since(broker, topic_names):
    from collections import Counter

    from compression_builder.collector import UNKNOWN_EVENT
    from compression_builder.sources import read_kafka
    from compression_builder.window_store import Caps
    from ecseq.decoding import EventSchema
    from kafka_io.client import KafkaClientConfig

    def read(since: float | None):
        return read_kafka(KafkaClientConfig.of(broker.bootstrap), events, labels, EventSchema(("amount",), ()), 50,
                          since, horizon=86400.0, caps=Caps(1000, 1000))

    events, labels = topic_names("events"), topic_names("labels")
    ensure_topics(broker.bootstrap, {events: 2, labels: 2})

    def batch(first: int) -> None:
        ids = range(first, first + 6)
        produce_json(broker.bootstrap, events, [(f"u{i % 3}", {"event_id": f"e{i}", "user_id": f"u{i % 3}",
                                                                "ts": 5000.0 + i / 100, "amount": float(i)})
                                                for i in ids])
        produce_json(broker.bootstrap, labels, [(f"u{i % 3}", {"event_id": f"e{i}", "user_id": f"u{i % 3}",
                                                                "label": i % 2}) for i in ids])

    batch(0)
    time.sleep(1.5)  # the first batch is stamped well before the window
    opened = time.time() - 0.5
    batch(6)
    produce_json(broker.bootstrap, labels, [("u0", {"event_id": "e0", "user_id": "u0", "label": 1})])  # old event

    gathered = read(time.time() - opened)
    frame = gathered.table.frame
    assert dict(zip(frame["event_id"], frame["label"])) == {f"e{i}": i % 2 for i in range(6, 12)}
    assert gathered.skipped["labels"] == Counter({UNKNOWN_EVENT: 1})
    assert len(read(None).table.frame) == 12
