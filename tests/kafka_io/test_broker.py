"""KafkaCluster against real Apache Kafka: lifecycle, port clashes, set-up errors, no orphans."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from kafka_io import BrokerError, KafkaCluster, cluster_brokers, free_port, topic_partitions
from kafka_io.jars import KafkaSetupError, kafka_libs, kafka_version
from tests.kafka_io.helpers import accepts, is_kafka_node, process_gone
from tests.processes import child

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make this test's tmp_path the folder tempfile.mkdtemp uses, so a cluster's own workdir lands there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_session_broker_serves_both_listeners(broker: KafkaCluster) -> None:
    assert broker.running and len(broker.nodes) == 1
    node = broker.nodes[0]
    assert broker.bootstrap == f"127.0.0.1:{node.port}"
    assert broker.sasl_ssl_bootstrap == f"127.0.0.1:{node.sasl_ssl_port}"
    assert node.sasl_ssl_port not in (None, node.port, node.controller_port)
    assert accepts(broker.bootstrap) and accepts(broker.sasl_ssl_bootstrap)
    assert cluster_brokers(broker.bootstrap, timeout=10) == {1}
    assert isinstance(topic_partitions(broker.bootstrap, timeout=10), dict)
    assert broker.startup_seconds is not None and 0 < broker.startup_seconds < 60, broker.startup_seconds
    assert node.pid is not None and is_kafka_node(node.pid)
    assert "Kafka Server started" in node.log_path.read_text(errors="replace")
    assert repr(broker) == f"KafkaCluster({broker.bootstrap}, nodes=1, running=True)"


def test_start_stop_lifecycle_leaves_no_process_and_no_workdir(private_tmp: Path) -> None:
    port = free_port()
    cluster = KafkaCluster(port=port)
    assert not cluster.running and cluster.nodes == [] and cluster.workdir is None
    assert "not started" in repr(cluster)
    with cluster:
        node = cluster.nodes[0]
        pid, workdir = node.pid, cluster.workdir
        assert pid is not None and is_kafka_node(pid)
        assert workdir is not None and workdir.parent == private_tmp and workdir.name.startswith("ecseq-kafka-")
        assert node.log_path.is_file() and node.log_path.is_relative_to(workdir)
        assert cluster.bootstrap == f"127.0.0.1:{port}" and accepts(cluster.bootstrap)
        assert cluster_brokers(cluster.bootstrap, timeout=10) == {1}
        assert cluster.start() is cluster and cluster.nodes[0].pid == pid  # already running: no second node
        assert cluster.sasl_ssl_bootstrap == "" and node.sasl_ssl_port is None
        with pytest.raises(BrokerError, match="no SASL_SSL listener"):
            cluster.client_settings()
        assert cluster.startup_seconds is not None and cluster.startup_seconds < 60, cluster.startup_seconds
    assert not cluster.running and cluster.nodes == []
    assert process_gone(pid, within=0.5)  # stop() waited for it: nothing left behind
    assert not accepts(f"127.0.0.1:{port}")
    assert not workdir.exists() and cluster.workdir is None
    assert list(private_tmp.iterdir()) == []
    cluster.stop()  # idempotent
    cluster.stop(timeout=0.1)

    # the same port again at once: a just-closed port (TIME_WAIT) must not count as busy
    cluster.start()
    try:
        assert cluster.bootstrap == f"127.0.0.1:{port}" and cluster.running
        second_pid = cluster.nodes[0].pid
        assert second_pid is not None and second_pid != pid
    finally:
        cluster.stop()
    assert process_gone(second_pid, within=0.5)
    assert list(private_tmp.iterdir()) == []


def test_a_busy_port_fails_with_a_clear_error(broker: KafkaCluster, private_tmp: Path) -> None:
    port = broker.nodes[0].port
    other = KafkaCluster(port=port)
    with pytest.raises(BrokerError, match=rf"^port {port} on 127\.0\.0\.1 is already in use .*port 0$"):
        other.start()
    assert other.nodes == [] and not other.running
    assert list(private_tmp.iterdir()) == []  # its temporary workdir is gone too
    assert broker.running and cluster_brokers(broker.bootstrap, timeout=10) == {1}


def test_a_cluster_needs_a_node() -> None:
    with pytest.raises(BrokerError, match="at least one node, not 0"):
        KafkaCluster(nodes=0)


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool reads "--cluster-id -x..." as a missing argument (it failed 1 run in 64)."""
    from kafka_io import broker

    draws = iter([b"\xf8" + bytes(15), bytes(range(16))])  # the first encodes to "-AAA..."
    monkeypatch.setattr(broker.secrets, "token_bytes", lambda n: next(draws))
    cluster_id = broker._cluster_id()
    assert cluster_id == "AAECAwQFBgcICQoLDA0ODw" and len(cluster_id) == 22


def test_wait_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError, match="not started"):
        KafkaCluster().wait()


def test_missing_java_is_a_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       private_tmp: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-such-jdk"))
    with pytest.raises(KafkaSetupError, match=r"no Java found \(Kafka needs Java 17\+\)"):
        KafkaCluster().start()
    assert list(private_tmp.iterdir()) == []


def test_too_old_java_is_a_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "jdk11" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk11"))
    with pytest.raises(KafkaSetupError, match=rf"is Java 11; Kafka {kafka_version()} needs Java 17\+"):
        KafkaCluster().start()


def test_missing_jars_without_maven_is_a_setup_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECSEQ_KAFKA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no mvn to fetch them with
    with pytest.raises(KafkaSetupError, match=rf"Apache Kafka {kafka_version()} is not in .*Maven is not installed"):
        kafka_libs()


def test_every_node_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL skips every cleanup hook; no node may outlive the process that started it."""
    script = textwrap.dedent(
        """
        import sys, time
        from kafka_io import KafkaCluster
        cluster = KafkaCluster(nodes=2, workdir=sys.argv[1]).start()
        print(cluster.bootstrap, *[node.pid for node in cluster.nodes], flush=True)
        time.sleep(300)
        """
    )
    with child([sys.executable, "-c", script, str(tmp_path / "nodes")], cwd=ROOT,
               stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        bootstrap, *pid_texts = parent.stdout.readline().split()
        pids = [int(text) for text in pid_texts]
        addresses = bootstrap.split(",")
        assert len(pids) == 2 and len(addresses) == 2
        assert all(is_kafka_node(pid) for pid in pids)
        assert all(accepts(address) for address in addresses)
        parent.kill()
        parent.wait()
        try:
            for pid in pids:
                assert process_gone(pid, within=45), f"kafka node pid {pid} outlived its parent"
            assert not any(accepts(address) for address in addresses)
        finally:
            for pid in pids:  # never leave a node behind, even when the assertion fails
                if is_kafka_node(pid):
                    os.kill(pid, 9)
