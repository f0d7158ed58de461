"""Two workers share the partitions; one is SIGKILLed under load and restarted on its own RocksDB state.

At-least-once: every event id sent gets a score (duplicates counted, every copy of a score equal,
and equal to the offline score), nothing else is scored, and each user's sequence state equals a
single uninterrupted, in-order replay of that user's events (computed here without Kafka): in the
changelog, and in every replica's RocksDB (active or standby) that claims to be up to date.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict

import numpy as np

from ecseq.artifacts import ArtifactStore
from ecseq.data.events import events_from_frame
from ecseq.decoding import EventSchema, decode_event
from ecseq.history import UserHistory
from ecseq.windows import SequenceWindows
from kafka_io.topics import produce_json, read_topic
from worker.app import history_limit

from .conftest import event_records

TABLE, OFFSET_KEY = "sequences", b"__faust\0offset__"  # faust/stores/rocksdb.py Store.offset_key
DURABLE = {"ECSEQ_STATE_STORE": "rocksdb://"}
EVENTS = 3000
CHUNK, PAUSE = 50, 0.1  # ~400 events/s with produce_json's own round trips ...
SLOW_PAUSE = 0.4  # ... and ~110/s while w2 is away, so that the stream still flows when it is back


class _Load(threading.Thread):
    """Produces `records` steadily, in chunks; it waits at each gate (index -> Event) until the
    Event is set, so the kill and the restart both happen while events are still coming."""

    def __init__(self, bootstrap: str, topic: str, records: list, gates: dict[int, threading.Event]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.records, self.gates = bootstrap, topic, records, gates
        self.sent = 0
        self.pause = PAUSE  # the test slows it down while w2 is away
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for start in range(0, len(self.records), CHUNK):
                if self.stopped.is_set():
                    return
                for at, gate in self.gates.items():
                    if start >= at and not gate.wait(timeout=120):
                        raise TimeoutError(f"load held at {start} events: gate {at} never opened")
                produce_json(self.bootstrap, self.topic, self.records[start:start + CHUNK])
                self.sent = min(start + CHUNK, len(self.records))
                time.sleep(self.pause)
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc

    def stop(self) -> None:
        """Stop early (a failed test): nothing more is sent, no gate is waited for."""
        self.stopped.set()
        for gate in self.gates.values():
            gate.set()

    def finish(self) -> None:
        self.join(timeout=120)
        assert not self.is_alive(), "load did not finish"
        if self.error is not None:
            raise self.error


def _scored(worker) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, body = worker.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "ecseq_worker_events_total" and sample.labels == {"outcome": "scored"}:
                return sample.value
    return 0.0


def _until(condition, what: str, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _all_scored(bootstrap: str, topic: str, expected: set[str]) -> list | None:
    """Every score record, once there is one for each expected event id."""
    records = read_topic(bootstrap, topic)
    return records if expected <= {r.json()["event_id"] for r in records} else None


def _unscored(deployment, expected: set[str], workers) -> str:
    """What a failed wait for every score saw: the unscored events by partition, the logs' warnings."""
    scored = {r.json()["event_id"] for r in read_topic(deployment.bootstrap, deployment.topic("scores"))}
    where = defaultdict(list)
    for r in read_topic(deployment.bootstrap, deployment.topic("events")):
        if r.json()["event_id"] in expected - scored:
            where[r.partition].append(r.offset)
    lines = [f"{len(expected - scored)} events never scored; partition: (count, first offset, last offset) "
             + str({p: (len(o), min(o), max(o)) for p, o in sorted(where.items())})]
    for worker in workers:
        noted = [line for line in worker.log.read_text(errors="replace").splitlines()
                 if "WARN" in line or "ERROR" in line or "Seek" in line or "ready" in line.lower()]
        lines += [f"--- {worker.log.name} ({'running' if worker.proc.poll() is None else worker.proc.poll()})",
                  *noted[-40:]]
    return "\n".join(lines)


def _group(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, as the broker's coordinator sees it."""
    from aiokafka.errors import GroupCoordinatorNotAvailableError

    from kafka_io.topics import admin_client

    async def describe() -> tuple[str, int]:
        async with admin_client(bootstrap, 5.0) as admin:
            try:
                (response,) = await admin.describe_consumer_groups([group])
            except GroupCoordinatorNotAvailableError:  # the group's offsets partition has no leader yet
                return "no coordinator", 0
        (described,) = response.groups  # (error_code, group_id, state, protocol_type, protocol, members, ...)
        if described[0]:
            return f"error {described[0]}", 0
        return described[2], len(described[5])

    return asyncio.run(describe())


def _local_tables(data_dir, partitions: int) -> dict[int, tuple[int | None, dict[bytes, bytes]]]:
    """partition -> (persisted changelog offset, {key: value}) of a stopped worker's RocksDB table."""
    from rocksdict import AccessType, Options, Rdict

    out = {}
    for partition in range(partitions):
        (path,) = data_dir.glob(f"*/tables/{TABLE}-{partition}.db")  # Faust: <datadir>/v1/tables/...
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            items = dict(db.items())
        finally:
            db.close()
        offset = items.pop(OFFSET_KEY, None)
        out[partition] = (None if offset is None else int(offset), items)
    return out


def _offline_scores(loaded, frame) -> dict[str, tuple[float, float]]:
    """event_id -> (score, encoder score) from the core, on the same events and artifact."""
    bundle = loaded.bundle
    table = events_from_frame(frame.assign(label=0.0), [f.name for f in bundle.feature_spec.categorical])
    windows = SequenceWindows.build(bundle.feature_spec.transform(table.frame), table.user_start, bundle.window)
    batch = loaded.scorer.score_windows(windows.gather(np.arange(len(table.frame))))
    columns = zip(table.frame["event_id"], batch.score, batch.encoder_score, strict=True)
    return {eid: (float(s), float(e)) for eid, s, e in columns}


def _reference_state(records: list, schema: EventSchema, window: int) -> dict[str, UserHistory]:
    """Each user's history after one uninterrupted run: their events once, in the order sent."""
    histories: dict[str, UserHistory] = {}
    for user, value in records:
        event = decode_event(json.dumps(value).encode(), schema)  # the bytes produce_json sends
        assert not isinstance(event, str), (value, event)
        history = histories.setdefault(user, UserHistory.empty(schema))
        assert history.append(event, history_limit(window)) >= 0
    return histories


def _assert_same_history(got: UserHistory, want: UserHistory, user: str) -> None:
    assert got.user_id == want.user_id == user
    assert got.event_ids == want.event_ids, user
    got_events, want_events = got.events(), want.events()
    np.testing.assert_array_equal([e.ts for e in got_events], [e.ts for e in want_events], err_msg=user)
    # float32 as stored, NaN = missing on both sides
    np.testing.assert_array_equal(np.array([e.numeric for e in got_events], dtype=np.float32).reshape(len(got), -1),
                                  np.array([e.numeric for e in want_events], dtype=np.float32).reshape(len(want), -1),
                                  err_msg=user)
    assert [e.categorical for e in got_events] == [e.categorical for e in want_events], user


def test_sigkill_under_load_loses_no_event_and_recovers_the_same_sequences(deployment, store, events_frame):
    started = time.monotonic()
    frame = events_frame.sort_values("ts", kind="stable").head(EVENTS).reset_index(drop=True)
    records = event_records(frame)
    killed, restarted = threading.Event(), threading.Event()
    load = _Load(deployment.bootstrap, deployment.topic("events"), records,
                 {EVENTS // 2: killed, EVENTS * 3 // 4: restarted})

    group = deployment.env["ECSEQ_APP_ID"]  # Faust's consumer group is the app id
    try:
        with deployment.worker("w1", wait_ready=False, **DURABLE) as w1:
            with deployment.worker("w2", wait_ready=False, **DURABLE) as w2:  # both start at once
                _until(lambda: _group(deployment.bootstrap, group) == ("Stable", 2), "a group of two", every=0.3)
                w1.wait_ready()
                w2.wait_ready()
                load.start()
                load_started = time.monotonic()
                # the partitions are shared once both processes score events of the stream (nothing
                # was sent before the load started), and the kill comes a while into it
                _until(lambda: _scored(w1) > 0 and _scored(w2) > 0 and load.sent >= EVENTS // 5,
                       "both workers to score")
                assert load.sent < len(records)
                assert _group(deployment.bootstrap, group)[1] == 2
                w2.proc.kill()  # SIGKILL: no drain, no commit, no flush
                assert w2.proc.wait(timeout=10) == -9
                sent_at_kill, killed_time = load.sent, time.monotonic()
                load.pause = SLOW_PAUSE
                killed.set()
                # the broker expels w2 after the session timeout; w1 then takes over all partitions,
                # from its standby copy of the changelog, and scores w2's backlog
                _until(lambda: _group(deployment.bootstrap, group) == ("Stable", 1), "w2 to leave the group",
                       every=0.3)
            expelled_at = time.monotonic()
            with deployment.worker("w2", **DURABLE) as w2:  # same name: same data dir, its own RocksDB
                back_at = time.monotonic()
                sent_at_restart = load.sent
                load.pause = PAUSE
                restarted.set()
                load.finish()
                _until(lambda: _scored(w2) > 0, "the restarted worker to score")  # it got partitions back

                expected = {v["event_id"] for _, v in records}
                try:
                    scores = _until(lambda: _all_scored(deployment.bootstrap, deployment.topic("scores"), expected),
                                    "a score for every event", every=0.5)
                except AssertionError as timeout:
                    raise AssertionError(_unscored(deployment, expected, (w1, w2))) from timeout
                for worker in (w1, w2):
                    assert worker.proc.poll() is None, worker.log.read_text(errors="replace")[-3000:]
                    assert worker.get("/health")[0] == 200
                for worker in (w1, w2):  # SIGTERM both at once: each drains, commits and exits 0
                    worker.proc.terminate()
                assert [w.proc.wait(timeout=60) for w in (w1, w2)] == [0, 0]
    finally:
        load.stop()

    # at-least-once: every id scored, nothing else; copies of a score (replays) are equal
    values = [r.json() for r in scores]
    copies = Counter(v["event_id"] for v in values)
    assert set(copies) == expected
    duplicates = sum(copies.values()) - len(copies)
    assert read_topic(deployment.bootstrap, deployment.topic("dead_letter")) == []  # none too late, none bad
    by_id = defaultdict(list)
    for v in values:
        assert v["source"]["topic"] == deployment.topic("events")
        by_id[v["event_id"]].append((v["score"], v["encoder_score"]))
    loaded = ArtifactStore(store).load()
    offline = _offline_scores(loaded, frame)  # what a single uninterrupted run scores
    for event_id, pairs in by_id.items():
        np.testing.assert_allclose(pairs, [pairs[0]] * len(pairs), atol=1e-6, err_msg=event_id)
        np.testing.assert_allclose(pairs[0], offline[event_id], atol=1e-5, err_msg=event_id)

    # each user's sequence state, as the changelog holds it (last write per key), equals one in-order run's
    schema, window = EventSchema.from_spec(loaded.bundle.feature_spec), loaded.bundle.window
    want = _reference_state(records, schema, window)
    changelog = read_topic(deployment.bootstrap, f"{deployment.env['ECSEQ_APP_ID']}-{TABLE}-changelog")
    latest: dict[int, dict[bytes, bytes]] = defaultdict(dict)  # partition -> key -> last value
    ends: dict[int, int] = {}
    for r in changelog:  # by (partition, offset)
        latest[r.partition][r.key] = r.value
        ends[r.partition] = r.offset
    last = {key.decode(): value for per_key in latest.values() for key, value in per_key.items()}
    assert set(last) == set(want) and sum(map(len, latest.values())) == len(last)  # a user lives on one partition
    for user, value in last.items():
        assert value is not None, f"tombstone for {user}"
        _assert_same_history(UserHistory.from_bytes(value, schema), want[user], user)

    # ... and so does every replica's RocksDB that says it is current (its persisted offset is the
    # changelog's end): the restarted w2's own partitions, recovered from its files plus the
    # changelog's tail, and the standby copies, which a takeover would start from
    current = Counter()
    for name in ("w1", "w2"):
        tables = _local_tables(deployment.tmp / name, int(deployment.env["ECSEQ_PARTITIONS"]))
        for partition, (offset, items) in tables.items():
            if offset != ends.get(partition):
                print(f"{name}: partition {partition} at {offset}, changelog ends at {ends.get(partition)}")
                continue  # a standby that had not read the last records when it stopped
            current[partition] += 1
            assert items == latest[partition], (
                f"{name}'s RocksDB partition {partition} is at the changelog's end ({offset}) but misses "
                f"{len(set(latest[partition]) - set(items))} of its {len(latest[partition])} keys or differs")
    assert set(current) == set(ends), f"no replica is current for partitions {set(ends) - set(current)}"

    print(f"\nrecovery: {len(records)} events, {len(values)} scores, {duplicates} duplicates "
          f"({sum(1 for n in copies.values() if n > 1)} ids scored more than once); "
          f"killed {killed_time - load_started:.1f}s into the load ({sent_at_kill} sent), expelled after "
          f"{expelled_at - killed_time:.1f}s, back after {back_at - killed_time:.1f}s ({sent_at_restart} sent); "
          f"{len(changelog)} changelog records for {len(last)} users; current replicas per partition "
          f"{dict(sorted(current.items()))}; {time.monotonic() - started:.1f}s")


def test_a_restart_with_a_backlog_waiting_scores_every_event(deployment, events_frame):
    """Upstream #596: records fetched while recovery resumes the streams must not be skipped."""
    frame = events_frame.sort_values("ts", kind="stable").head(EVENTS).reset_index(drop=True)
    records = event_records(frame)
    first, backlog = records[:300], records[300:]
    with deployment.worker("w1", **DURABLE) as w1:
        produce_json(deployment.bootstrap, deployment.topic("events"), first)
        _until(lambda: _scored(w1) >= len(first), "the first events to be scored")
        w1.proc.terminate()
        assert w1.proc.wait(timeout=60) == 0
    produce_json(deployment.bootstrap, deployment.topic("events"), backlog)  # waits for the restart
    with deployment.worker("w1", **DURABLE):
        expected = {v["event_id"] for _, v in records}
        scores = _until(lambda: _all_scored(deployment.bootstrap, deployment.topic("scores"), expected),
                        f"a score for each of the {len(backlog)} waiting events", timeout=90, every=0.5)
    assert {r.json()["event_id"] for r in scores} == expected
