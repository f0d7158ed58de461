"""A broker of a 3-node cluster dies under load and comes back: nothing is lost, the worker stays ready.

Every topic the project creates (the worker's changelog and repartition topics included) is
replicated 3 times with min.insync.replicas 2 and written with acks=all, so losing the broker
that leads most of the events partitions costs a leader election, not data.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

from ecseq.artifacts import ArtifactStore
from ecseq.decoding import EventSchema
from ecseq.history import UserHistory
from kafka_io.broker import KafkaCluster
from kafka_io.topics import ensure_topics, partition_leaders, read_topic, topic_config

from .conftest import Deployment, event_records
from .test_recovery import _all_scored, _assert_same_history, _Load, _reference_state, _scored, _until

EVENTS = 2400
DOWN_SECONDS = 15.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[KafkaCluster]:
    nodes = KafkaCluster(nodes=3, workdir=tmp_path_factory.mktemp("cluster")).start()
    print(f"\n3-node cluster up in {nodes.startup_seconds:.1f}s")
    try:
        yield nodes
    finally:
        nodes.stop()


def test_a_dead_leader_loses_no_event_and_no_state_and_the_worker_stays_ready(cluster, store, topic_names,
                                                                              tmp_path, events_frame):
    env = {"ECSEQ_BROKER": cluster.bootstrap, "ECSEQ_STORE": str(store), "ECSEQ_SWAP_CHECK_EVERY": "1s",
           "ECSEQ_PARTITIONS": "4", "ECSEQ_APP_ID": topic_names("app")}
    for name in ("events", "scores", "labels", "dead_letter", "artifacts"):
        env[f"ECSEQ_{name.upper()}_TOPIC"] = topic_names(name)
    deployment = Deployment(env, cluster.bootstrap, tmp_path)
    assert ensure_topics(cluster.bootstrap, {deployment.topic("events"): 4}) == (3, 2)
    frame = events_frame.sort_values("ts", kind="stable").head(EVENTS).reset_index(drop=True)
    records = event_records(frame)
    killed = threading.Event()
    load = _Load(cluster.bootstrap, deployment.topic("events"), records, {})
    try:
        with deployment.worker("w1") as worker:
            for topic in (deployment.topic("scores"), f"{env['ECSEQ_APP_ID']}-sequences-changelog",
                          f"{env['ECSEQ_APP_ID']}-events-by-user"):  # created by the worker itself
                assert topic_config(cluster.bootstrap, topic)["min.insync.replicas"] == "2", topic
            load.start()
            _until(lambda: _scored(worker) > 0 and load.sent >= EVENTS // 4, "scores under load")
            leaders = Counter(partition_leaders(cluster.bootstrap, deployment.topic("events")).values())
            victim_id = leaders.most_common(1)[0][0]
            victim = next(i for i, node in enumerate(cluster.nodes) if node.node_id == victim_id)
            cluster.kill(victim)
            killed_at, sent_at_kill = time.time(), load.sent
            killed.set()
            time.sleep(DOWN_SECONDS)
            scored_while_down = _scored(worker)
            cluster.restart(victim)
            back_at = time.time()
            load.finish()
            expected = {v["event_id"] for _, v in records}
            scores = _until(lambda: _all_scored(cluster.bootstrap, deployment.topic("scores"), expected),
                            "a score for every event", timeout=120, every=0.5)
            ready = _until(lambda: worker.get("/ready")[0] == 200, "/ready after the restart", timeout=60)
            assert ready and worker.proc.poll() is None
            worker.proc.terminate()
            assert worker.proc.wait(timeout=60) == 0
    finally:
        load.stop()

    values = [r.json() for r in scores]
    assert {v["event_id"] for v in values} == expected  # every event id, nothing else
    assert read_topic(cluster.bootstrap, deployment.topic("dead_letter")) == []
    # scores kept coming while the broker was down (the leaders moved), not only after it came back
    stamps = sorted(r.timestamp_ms / 1000 for r in scores)
    during = [t for t in stamps if killed_at < t < back_at]
    assert during, "no score while the broker was down"
    window = [t for t in stamps if t >= killed_at - 5]
    gap = max(b - a for a, b in zip(window, window[1:], strict=False))

    # no user's state is lost: the changelog's last value per user equals one uninterrupted run's
    loaded = ArtifactStore(store).load()
    schema = EventSchema.from_spec(loaded.bundle.feature_spec)
    want = _reference_state(records, schema, loaded.bundle.window)
    latest: dict[bytes, bytes] = defaultdict(bytes)
    for r in read_topic(cluster.bootstrap, f"{env['ECSEQ_APP_ID']}-sequences-changelog"):
        latest[r.key] = r.value
    assert {k.decode() for k in latest} == set(want)
    for key, value in latest.items():
        _assert_same_history(UserHistory.from_bytes(value, schema), want[key.decode()], key.decode())
    print(f"\nbroker failure: node {victim_id} led {leaders[victim_id]} of 4 events partitions; killed with "
          f"{sent_at_kill} of {EVENTS} sent, down {back_at - killed_at:.1f}s, {len(during)} scores while down "
          f"({scored_while_down:.0f} scored by then); longest gap without scores {gap:.2f}s; {len(values)} scores "
          f"for {len(expected)} events")
