"""The worker against a real broker: malformed input, offline equality, hot swap under load."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd

from ecseq.artifacts import ArtifactStore
from ecseq.data.events import events_from_frame
from ecseq.windows import SequenceWindows
from ecseq_cli import main
from kafka_io.topics import produce_json, read_topic
from tests.builds import FAST
from tests.processes import terminate

from .conftest import event_records


def _wait_for(bootstrap: str, topic: str, count: int, timeout: float = 90.0) -> list:
    deadline = time.monotonic() + timeout
    records = []
    while time.monotonic() < deadline:
        records = read_topic(bootstrap, topic)
        if len(records) >= count:
            return records
        time.sleep(0.5)
    raise AssertionError(f"{len(records)} of {count} records on {topic}")


def _malformed(good: dict) -> list[tuple[str | None, bytes | dict, str]]:
    """(key, value, expected reason): with _large, 40 kinds of hostile input."""

    def without(*keys: str) -> dict:
        return {k: v for k, v in good.items() if k not in keys}

    return [
        ("u-bad", b"{not json", "bad_json"),
        ("u-bad", b"\xff\xfe{}", "bad_json"),
        ("u-bad", b"", "empty"),
        ("u-bad", b"[1, 2]", "not_object"),
        ("u-bad", without("event_id"), "missing_field"),
        ("u-bad", without("user_id"), "missing_field"),
        ("u-bad", without("amount"), "missing_field"),
        ("u-bad", {**good, "event_id": "bad-1", "amount": "lots"}, "bad_type"),
        ("u-bad", {**good, "event_id": "bad-2", "amount": True}, "bad_type"),
        ("u-bad", {**good, "event_id": "bad-3", "user_id": {"id": 1}}, "bad_type"),
        ("u-bad", {**good, "event_id": "bad-4", "amount": float("nan")}, "non_finite"),  # NaN on the wire
        ("u-bad", {**good, "event_id": "bad-5", "ts": "someday"}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-6", "pad": "x" * 70_000}, "oversize"),
        # lone UTF-16 surrogates: they parse, and would fail later as a key, a changelog value
        ("u-bad", {**good, "event_id": "bad-7", "user_id": "\ud800"}, "bad_json"),
        ("u-bad", {**good, "event_id": "\udfff"}, "bad_json"),
        ("u-bad", {**good, "event_id": "bad-8", "channel": "\udc80web"}, "bad_json"),
        ("u-bad", {**good, "event_id": "x" * 300}, "long_text"),
        ("u-bad", {**good, "event_id": "bad-9", "user_id": "u" * 300}, "long_text"),
        ("u-bad", {**good, "event_id": "bad-10", "ts": "now"}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-12", "ts": "today"}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-13", "ts": True}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-14", "ts": [1]}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-15", "ts": 1e308 * 10}, "bad_timestamp"),  # inf on the wire
        ("u-bad", {**good, "event_id": "bad-16", "ts": "9999-99-99"}, "bad_timestamp"),
        ("u-bad", {**good, "event_id": "bad-17", "ts": float("nan")}, "missing_field"),
        ("u-bad", {**good, "event_id": "", "user_id": "u1"}, "missing_field"),
        ("u-bad", {**good, "event_id": "bad-18", "user_id": "   "}, "missing_field"),
        ("u-bad", without("ts"), "missing_field"),
        ("u-bad", {**good, "event_id": "bad-19", "amount": "12"}, "bad_type"),
        ("u-bad", {**good, "event_id": ["bad-20"]}, "bad_type"),
        ("u-bad", {**good, "event_id": "bad-21", "channel": ["web"]}, "bad_type"),
        ("u-bad", b'{"event_id": "bad-22", "amount": 1e999}' , "missing_field"),  # absent fields first
        ("u-bad", json.dumps({**good, "event_id": "bad-23"}).replace('"amount": ', '"amount": 1e999, "x": ')
         .encode(), "non_finite"),
        ("u-bad", json.dumps({**good, "event_id": "bad-24"}).replace('"amount": ', '"amount": ' + "9" * 400 + ', "x": ')
         .encode(), "non_finite"),  # an integer beyond float range
        ("u-bad", b"\xef\xbb\xbf" + json.dumps({**good, "event_id": "bad-25"}).encode(), "bad_json"),  # a BOM
        ("u-bad", json.dumps({**good, "event_id": "bad-26"}).encode("utf-16"), "bad_json"),
        ("u-bad", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "bad_json"),  # deeper than any parser's recursion
        ("u-bad", b"[" * 70_000 + b"]" * 70_000, "oversize"),
        ("u-bad", b"true", "not_object"),
        ("u-bad", b"123", "not_object"),
        ("u-bad", b"null", "not_object"),
        ("u-bad", b"\x00" * 16, "bad_json"),
    ]


def _large(good: dict) -> list[tuple[bytes, bytes | None, str]]:
    """(key, value, expected reason) that produce_json cannot send: a null value, and records whose
    dead letter would exceed the producer's request size unless cut."""
    return [
        (b"u-bad", None, "tombstone"),
        (b"u-bad", json.dumps({**good, "event_id": "bad-11", "pad": "x" * 1_040_000}).encode(), "oversize"),
        (b"k" * 990_000, b"{not json", "bad_json"),
    ]


def _produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_048_000, acks="all")
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in records])
        finally:
            await producer.stop()

    asyncio.run(send())


def _offline_scores(store, frame: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """event_id -> (score, encoder score) from the core, on the same events and artifact."""
    loaded = ArtifactStore(store).load()
    bundle = loaded.bundle
    table = events_from_frame(frame.assign(label=np.nan).astype({"label": float}).fillna({"label": 0.0}),
                              [f.name for f in bundle.feature_spec.categorical])
    windows = SequenceWindows.build(bundle.feature_spec.transform(table.frame), table.user_start, bundle.window)
    rows = np.arange(len(table.frame))
    batch = loaded.scorer.score_windows(windows.gather(rows))
    return {eid: (float(s), float(e)) for eid, s, e in zip(table.frame["event_id"], batch.score, batch.encoder_score)}


def test_malformed_messages_go_to_dead_letters_and_valid_ones_match_offline_scores(deployment, store, events_frame):
    frame = events_frame.sort_values("ts", kind="stable").head(1200).reset_index(drop=True)
    frame.loc[5, "channel"] = "teleport"  # a category never seen in training: the OOV slot, not an error
    records = event_records(frame)
    last_of = {user: i for i, (user, _) in enumerate(records)}
    unkeyed = max(last_of.values())  # a user's last event, sent without a key: repartitioned by user
    records[unkeyed] = (None, records[unkeyed][1])
    bad = _malformed(records[0][1])
    large = _large(records[0][1])
    # a user's newest event so far, its id sent again with other content (a producer reusing ids)
    user, last = records[599][0], records[599][1]
    bad.append((user, {**last, "amount": (last["amount"] or 0.0) + 1.0}, "id_reused"))
    with deployment.worker() as worker:
        produce_json(deployment.bootstrap, deployment.topic("events"),
                     records[:600] + [(k, v) for k, v, _ in bad] + records[600:])
        _produce_raw(deployment.bootstrap, deployment.topic("events"), [(k, v) for k, v, _ in large])
        bad += large
        scores = _wait_for(deployment.bootstrap, deployment.topic("scores"), len(records))
        dead = _wait_for(deployment.bootstrap, deployment.topic("dead_letter"), len(bad))
        status, _ = worker.get("/ready")
        assert status == 200 and worker.proc.poll() is None  # never died from input
        assert worker.get("/health") == (200, b'{"status":"alive"}')
        user = records[0][0]  # Faust's table and router views would show this user's history
        for path in (f"/table/sequences/{user}/", "/table/sequences/", f"/router/sequences/{user}/", "/router/"):
            assert worker.get(path)[0] == 404, path
        for reason, count in Counter(reason for _, _, reason in bad).items():
            assert _metric(worker, "ecseq_worker_dead_letters_total", reason=reason) == count
        assert _metric(worker, "ecseq_worker_events_total", outcome="scored") == len(records)
        assert _metric(worker, "ecseq_worker_events_total", outcome="repartitioned") == 1
        assert _metric(worker, "ecseq_worker_event_to_score_seconds_count") == len(records)
        for stage in ("decode", "state", "featurise", "encode", "attach", "gnn", "produce"):
            assert _metric(worker, "ecseq_worker_stage_duration_seconds_count", stage=stage) > 0
        assert terminate(worker.proc) == 0
    with deployment.worker() as again:  # a restart: nothing committed is replayed, nothing stops it
        time.sleep(3)
        assert again.get("/ready")[0] == 200 and again.proc.poll() is None
        assert _metric(again, "ecseq_worker_events_total", outcome="dead_letter") == 0
    assert len(read_topic(deployment.bootstrap, deployment.topic("dead_letter"))) == len(bad)

    # as produce_json sends them; the last two are too large to be resent whole
    sent = {(json.dumps(v).encode() if isinstance(v, dict) else v) for _, v, _ in bad[:-2]}
    cut = [r for r in dead if "ecseq.truncated" in dict(r.headers)]
    assert {r.value for r in dead if r not in cut} == sent  # the bytes, untouched
    assert len(cut) == 2  # too large to resend: the first bytes, the original's size and digest
    for record, (key, value, _) in zip(sorted(cut, key=lambda r: len(r.key)), large[1:]):
        headers = dict(record.headers)
        for name, original, kept in (("key", key, record.key), ("value", value, record.value)):
            if f"ecseq.original.{name}.bytes" in headers:
                assert original.startswith(kept) and len(kept) < len(original)
                assert int(headers[f"ecseq.original.{name}.bytes"]) == len(original)
                assert headers[f"ecseq.original.{name}.sha256"].decode() == hashlib.sha256(original).hexdigest()
            else:
                assert kept == original
    headers = [dict(r.headers) for r in dead]
    assert Counter(h["ecseq.reason"].decode() for h in headers) == Counter(reason for _, _, reason in bad)
    for h in headers:
        assert h["ecseq.source.topic"].decode() == deployment.topic("events")
        assert int(h["ecseq.source.offset"]) >= 0 and int(h["ecseq.source.partition"]) in range(4)

    streamed = {}
    for record in scores:
        value = record.json()
        streamed[value["event_id"]] = value
        assert record.key == value["user_id"].encode()
        assert value["artifact_version"] == "v000001"
    assert set(streamed) == set(frame["event_id"])
    offline = _offline_scores(store, frame)
    for event_id, value in streamed.items():
        np.testing.assert_allclose([value["score"], value["encoder_score"]], offline[event_id], atol=1e-5,
                                   err_msg=event_id)


def _produce_steadily(bootstrap: str, topic: str, records: list, chunk: int = 50, pause: float = 0.1) -> None:
    for start in range(0, len(records), chunk):
        produce_json(bootstrap, topic, records[start:start + chunk])
        time.sleep(pause)


def _metric(worker, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, body = worker.get("/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


HOSTILE_ANNOUNCEMENTS = [  # the control topic is compacted: one that stopped the worker would stop every restart
    None,  # a tombstone
    b"\xff\xfe",
    b"[" * 2000 + b"]" * 2000,  # deeper than the parsers' recursion, within the size limit
    b'{"version": ' + b"[" * 1500 + b"]" * 1500 + b"}",
    b'{"version": 12}',
    b'{"version": "../../v000001"}',
    b'{"version": "v000002", "pad": "' + b"x" * 5000 + b'"}',  # larger than any announcement
]


def test_swap_under_load_loses_nothing_and_a_corrupt_announcement_is_refused(deployment, store, events_frame,
                                                                             events_csv, capsys):
    frame = events_frame.sort_values("ts", kind="stable").head(3600).reset_index(drop=True)
    records = event_records(frame)
    events, control = deployment.topic("events"), deployment.topic("artifacts")
    with deployment.worker() as worker:
        load = threading.Thread(target=_produce_steadily, args=(deployment.bootstrap, events, records[:2400]))
        load.start()
        time.sleep(1.0)
        assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", "--announce",
                     deployment.bootstrap, "--artifacts-topic", control, *FAST]) == 0
        load.join()
        _produce_steadily(deployment.bootstrap, events, records[2400:3000])  # after the swap for sure
        _wait_for(deployment.bootstrap, deployment.topic("scores"), 3000)

        # a corrupt version becomes CURRENT and is announced: refused, v000002 keeps scoring
        assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST]) == 0
        capsys.readouterr()
        gnn = store / "versions" / "v000003" / "gnn.npz"
        gnn.write_bytes(gnn.read_bytes()[:-7])
        produce_json(deployment.bootstrap, control, [("artifact", {"version": "v000003", "path": str(gnn.parent),
                                                                   "manifest_sha256": "0" * 64})])
        _produce_raw(deployment.bootstrap, control, [(b"artifact", value) for value in HOSTILE_ANNOUNCEMENTS])
        _produce_steadily(deployment.bootstrap, events, records[3000:])
        scores = _wait_for(deployment.bootstrap, deployment.topic("scores"), len(records))
        assert _metric(worker, "ecseq_worker_swaps_total", result="refused") == 1
        assert _metric(worker, "ecseq_worker_swaps_total", result="swapped") == 2
        assert _metric(worker, "ecseq_worker_announcements_total", outcome="understood") == 2
        deadline = time.monotonic() + 30
        while _metric(worker, "ecseq_worker_announcements_total", outcome="ignored") < len(HOSTILE_ANNOUNCEMENTS):
            assert time.monotonic() < deadline and worker.proc.poll() is None, "hostile announcements not all read"
            time.sleep(0.2)
        assert worker.get("/ready")[0] == 200
        assert terminate(worker.proc) == 0  # SIGTERM: in-flight batch done, offsets committed

    values = sorted((r.json() for r in scores), key=lambda v: v["timestamps"]["scored"])
    assert {v["event_id"] for v in values} == set(frame["event_id"])  # nothing lost
    versions = [v["artifact_version"] for v in values]
    switch = versions.index("v000002")
    assert set(versions[:switch]) == {"v000001"} and set(versions[switch:]) == {"v000002"}  # one clean switch
    assert switch > 0
    late = {eid for _, v in records[3000:] for eid in [v["event_id"]]}
    assert {v["artifact_version"] for v in values if v["event_id"] in late} == {"v000002"}


def test_a_user_whose_state_outgrows_its_byte_limit_keeps_being_scored(deployment, events_frame):
    """Ids and categories at their length limit, 4-byte characters, a new value on every event: the
    user's stored sequence would pass 64 KiB; it is stored without its oldest events instead."""
    good = event_records(events_frame.head(1))[0][1]
    wide = "\U0001F600" * 250
    records = [("u-wide", {**good, "user_id": "u-wide", "event_id": f"{i:03d}{wide}", "ts": 1_700_000_000.0 + i,
                           **{name: f"{i:03d}{wide}" for name in ("mcc", "device", "country", "channel")}})
               for i in range(60)]
    with deployment.worker(ECSEQ_MAX_STATE_BYTES="65536") as worker:
        produce_json(deployment.bootstrap, deployment.topic("events"), records)
        scores = _wait_for(deployment.bootstrap, deployment.topic("scores"), len(records))
        assert _metric(worker, "ecseq_worker_trimmed_states_total") > 0
        assert worker.get("/ready")[0] == 200
    assert {r.json()["event_id"] for r in scores} == {v["event_id"] for _, v in records}
    changelog = read_topic(deployment.bootstrap, f"{deployment.env['ECSEQ_APP_ID']}-sequences-changelog")
    assert changelog and max(len(r.value) for r in changelog) <= 65536
