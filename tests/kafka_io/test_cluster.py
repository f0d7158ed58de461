"""A 3-node Apache Kafka cluster (KRaft, every node a broker and a controller): registration,
replication of the topics ecseq creates, and a node killed and brought back.

The cluster starts once for the module (several seconds); the kill/restart test runs last.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kafka_io import (
    BrokerError,
    KafkaCluster,
    cluster_brokers,
    ensure_topics,
    partition_leaders,
    produce_json,
    read_topic,
    topic_config,
    topic_partitions,
)
from kafka_io.topics import admin_client
from tests.conftest import TopicNames
from tests.kafka_io.helpers import accepts, is_kafka_node, process_gone

STARTUP_BOUND_SECONDS = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    three = KafkaCluster(nodes=3, workdir=tmp_path_factory.mktemp("cluster3")).start()
    try:
        yield three
    finally:
        three.stop()


def describe(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The topic's partitions as the cluster's metadata lists them (leader, replicas, isr)."""

    async def job() -> list[dict[str, Any]]:
        async with admin_client(bootstrap, 10.0) as admin:
            described = await admin.describe_topics([topic])
        return sorted((p for d in described for p in d["partitions"]), key=lambda p: p["partition"])

    return asyncio.run(job())


def node_address(cluster: KafkaCluster, index: int) -> str:
    return f"127.0.0.1:{cluster.nodes[index].port}"


def test_three_nodes_start_and_register(cluster: KafkaCluster) -> None:
    assert cluster.startup_seconds is not None
    assert cluster.startup_seconds < STARTUP_BOUND_SECONDS, f"3-node start-up took {cluster.startup_seconds:.1f}s"
    assert cluster.running and [node.node_id for node in cluster.nodes] == [1, 2, 3]
    ports = [port for node in cluster.nodes for port in (node.port, node.controller_port)]
    assert len(set(ports)) == 6  # every listener on its own port
    assert cluster.bootstrap == ",".join(node_address(cluster, i) for i in range(3))
    for index in range(3):  # each node, asked alone, knows all three
        assert cluster_brokers(node_address(cluster, index), timeout=10) == {1, 2, 3}
    assert len({node.pid for node in cluster.nodes}) == 3
    assert all(node.pid is not None and is_kafka_node(node.pid) for node in cluster.nodes)


def test_ensure_topics_replicates_three_times_with_two_in_sync(cluster: KafkaCluster,
                                                               topic_names: TopicNames) -> None:
    events, table = topic_names("events"), topic_names("table")
    assert ensure_topics(cluster.bootstrap, {events: 3, table: 2}, compacted=[table]) == (3, 2)
    for name in (events, table):
        assert topic_config(cluster.bootstrap, name)["min.insync.replicas"] == "2"
        for partition in describe(cluster.bootstrap, name):
            assert sorted(partition["replicas"]) == [1, 2, 3], partition
            assert sorted(partition["isr"]) == [1, 2, 3], partition
    assert topic_config(cluster.bootstrap, table)["cleanup.policy"] == "compact"
    leaders = partition_leaders(cluster.bootstrap, events)
    assert sorted(leaders) == [0, 1, 2] and set(leaders.values()) <= {1, 2, 3}
    # acks=all with 2 in sync: every record acknowledged and read back, from any node
    produce_json(cluster.bootstrap, events, [(f"user-{i}", i) for i in range(30)])
    got = read_topic(node_address(cluster, 2), events)
    assert sorted(r.json() for r in got) == list(range(30))


def test_single_node_broker_gets_one_replica_and_one_in_sync(broker: KafkaCluster,
                                                            topic_names: TopicNames) -> None:
    name = topic_names("events")
    assert ensure_topics(broker.bootstrap, {name: 2}) == (1, 1)
    assert topic_config(broker.bootstrap, name)["min.insync.replicas"] == "1"
    partitions = describe(broker.bootstrap, name)
    assert [p["replicas"] for p in partitions] == [[1], [1]]
    assert partition_leaders(broker.bootstrap, name) == {0: 1, 1: 1}


def test_explicit_replication_settings_win(cluster: KafkaCluster, topic_names: TopicNames) -> None:
    name = topic_names("two")
    assert ensure_topics(cluster.bootstrap, {name: 2}, replication_factor=2, min_insync_replicas=1) == (2, 1)
    assert topic_config(cluster.bootstrap, name)["min.insync.replicas"] == "1"
    assert all(len(set(p["replicas"])) == 2 for p in describe(cluster.bootstrap, name))


def test_impossible_replication_is_refused_before_creating(cluster: KafkaCluster, topic_names: TopicNames) -> None:
    too_many, too_strict = topic_names("four"), topic_names("strict")
    with pytest.raises(BrokerError, match=r"replication factor 4 \(ECSEQ_REPLICATION_FACTOR\) needs 4 brokers; "
                                          r"the cluster has 3"):
        ensure_topics(cluster.bootstrap, {too_many: 1}, replication_factor=4)
    with pytest.raises(BrokerError, match=r"min.insync.replicas 3 \(ECSEQ_MIN_INSYNC_REPLICAS\) is above "
                                          r"the replication factor 2"):
        ensure_topics(cluster.bootstrap, {too_strict: 1}, replication_factor=2, min_insync_replicas=3)
    known = topic_partitions(cluster.bootstrap)
    assert too_many not in known and too_strict not in known


def test_kill_and_restart_bring_a_node_back(cluster: KafkaCluster, topic_names: TopicNames) -> None:
    name = topic_names("survivor")
    ensure_topics(cluster.bootstrap, {name: 3})
    produce_json(cluster.bootstrap, name, [(f"k{i}", i) for i in range(10)])
    node = cluster.nodes[2]
    old_pid = node.pid
    assert old_pid is not None

    cluster.restart(0)  # a running node: nothing to do
    assert cluster.nodes[0].running

    cluster.kill(2)
    assert process_gone(old_pid, within=1)
    assert not node.running and not cluster.running
    assert not accepts(node_address(cluster, 2))
    assert cluster.wait() == -signal.SIGKILL  # wait() reports the node that exited
    assert cluster_brokers(node_address(cluster, 0), timeout=10) <= {1, 2, 3}  # the others still answer

    cluster.restart(2)
    assert node.running and cluster.running
    assert node.pid is not None and node.pid != old_pid and is_kafka_node(node.pid)
    assert accepts(node_address(cluster, 2))
    assert cluster_brokers(node_address(cluster, 2), timeout=10) == {1, 2, 3}
    # back as a replica: it catches up and rejoins every in-sync set
    deadline = time.monotonic() + 60
    while True:
        partitions = describe(cluster.bootstrap, name)
        if all(sorted(p["isr"]) == [1, 2, 3] for p in partitions):
            break
        assert time.monotonic() < deadline, f"node 3 did not rejoin the in-sync replicas: {partitions}"
        time.sleep(0.5)
    produce_json(node_address(cluster, 2), name, [(f"k{i}", i) for i in range(10, 20)])
    assert sorted(r.json() for r in read_topic(node_address(cluster, 2), name)) == list(range(20))
