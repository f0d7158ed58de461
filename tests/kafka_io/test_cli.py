"""`ecseq broker`: Apache Kafka in the foreground with the ecseq topics; its first stdout line is the
bootstrap list, `--sasl-ssl` adds a client's ECSEQ_* settings, SIGTERM stops every node."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ecseq_cli.settings import Settings
from kafka_io import KafkaClientConfig, cluster_brokers, topic_config, topic_partitions
from tests.kafka_io.helpers import accepts, kafka_children, process_gone, read_lines
from tests.processes import child, terminate

BROKER = [sys.executable, "-m", "ecseq_cli", "broker"]
ADDRESS = re.compile(r"^127\.0\.0\.1:([1-9]\d*)$")
SETTINGS = Settings()
TOPICS = (SETTINGS.events_topic, SETTINGS.scores_topic, SETTINGS.labels_topic, SETTINGS.dead_letter_topic,
          SETTINGS.artifacts_topic)


def env_with_tmpdir(folder: Path) -> dict[str, str]:
    """The child's environment with its temporary folders (a cluster's own workdir) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(folder)}


def addresses(line: str) -> list[str]:
    servers = line.split(",")
    assert all(ADDRESS.match(server) for server in servers), line
    return servers


def test_broker_command_with_sasl_ssl_on_any_free_port(tmp_path: Path) -> None:
    sasl_dir, data_dir, stderr_path = tmp_path / "sasl", tmp_path / "data", tmp_path / "stderr.log"
    with open(stderr_path, "w") as stderr, \
            child([*BROKER, "--port", "0", "--sasl-ssl", str(sasl_dir), "--data-dir", str(data_dir),
                   "--partitions", "3"], stdout=subprocess.PIPE, stderr=stderr, text=True) as proc:
        assert proc.stdout is not None
        lines = read_lines(proc.stdout, 8)
        bootstrap = lines[0]
        (server,) = addresses(bootstrap)  # one node, on the port the OS picked
        assert lines[1] == f"# SASL_SSL clients (also in {sasl_dir / 'client.env'}):"
        printed = dict(line.split("=", 1) for line in lines[2:])
        assert printed == {
            "ECSEQ_BROKER": printed["ECSEQ_BROKER"],
            "ECSEQ_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "ECSEQ_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "ECSEQ_KAFKA_USERNAME": "ecseq",
            "ECSEQ_KAFKA_PASSWORD_FILE": str(sasl_dir / "password"),
            "ECSEQ_KAFKA_CA_FILE": str(sasl_dir / "ca.pem"),
        }
        (tls_server,) = addresses(printed["ECSEQ_BROKER"])
        assert tls_server != server
        assert (sasl_dir / "ca.pem").is_file()
        assert (sasl_dir / "client.env").read_text().splitlines() == lines[2:]

        # a Kafka client fetches metadata from the first line, and the topics are there
        partitions = topic_partitions(bootstrap, timeout=10)
        assert all(partitions[topic] == 3 for topic in TOPICS), partitions
        assert topic_config(bootstrap, SETTINGS.artifacts_topic)["cleanup.policy"] == "compact"
        # ... and a client configured from the printed settings gets in over SASL_SSL
        secure = KafkaClientConfig.from_settings(Settings.from_env(printed))
        assert set(TOPICS) <= set(topic_partitions(secure, timeout=10))

        nodes = kafka_children(proc.pid)
        assert len(nodes) == 1
        assert terminate(proc) == 0
    for pid in nodes:
        assert process_gone(pid), f"kafka node pid {pid} outlived `ecseq broker`"
    assert not accepts(server) and not accepts(tls_server)
    password = (sasl_dir / "password").read_text().strip()
    output = "\n".join(lines) + proc.stdout.read() + stderr_path.read_text()
    assert "up in" in output and "Ctrl-C stops it" in output
    assert password not in output and "Traceback" not in output
    assert (data_dir / "node1" / "server.properties").is_file()  # --data-dir is the caller's: kept


def test_broker_command_with_three_brokers(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    with child([*BROKER, "--port", "0", "--brokers", "3"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
               text=True, env=env_with_tmpdir(tmp)) as proc:
        assert proc.stdout is not None
        (bootstrap,) = read_lines(proc.stdout, 1)
        servers = addresses(bootstrap)
        assert len(servers) == 3 and len(set(servers)) == 3
        assert cluster_brokers(bootstrap, timeout=10) == {1, 2, 3}
        assert topic_config(bootstrap, SETTINGS.events_topic)["min.insync.replicas"] == "2"
        assert [p.name for p in tmp.iterdir()] != [] and all(p.name.startswith("ecseq-kafka-") for p in tmp.iterdir())
        nodes = kafka_children(proc.pid)
        assert len(nodes) == 3
        assert terminate(proc) == 0
    for pid in nodes:
        assert process_gone(pid), f"kafka node pid {pid} outlived `ecseq broker`"
    assert not any(accepts(server) for server in servers)
    assert list(tmp.iterdir()) == []  # its own temporary workdir is removed


def test_a_second_sigterm_does_not_cut_the_stop_short(tmp_path: Path) -> None:
    """`timeout`, or an impatient operator, signals twice: the stop must still finish and clean up."""
    tmp = tmp_path / "tmp"
    with child([*BROKER, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
               env=env_with_tmpdir(tmp)) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        lines = read_lines(proc.stdout, 1)
        assert lines, proc.stderr.read()  # it exited before printing: say why
        (bootstrap,) = lines
        nodes = kafka_children(proc.pid)
        assert len(nodes) == 1 and len(list(tmp.iterdir())) == 1
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)  # the first one is handled at once (Python wakes from sleep); the stop takes longer
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert all(process_gone(pid) for pid in nodes) and not accepts(bootstrap)
    assert list(tmp.iterdir()) == []
    assert "Traceback" not in err and "interrupted" not in err


def test_broker_command_on_a_busy_port_says_so(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run([*BROKER, "--port", str(port)], capture_output=True, text=True, timeout=120,
                              check=False, env=env_with_tmpdir(tmp))
    assert done.returncode == 2
    assert f"ecseq: error: port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert list(tmp.iterdir()) == []


def test_broker_command_default_port_is_9092() -> None:
    from ecseq_cli import build_parser

    args = build_parser(SETTINGS).parse_args(["broker"])
    assert (args.port, args.brokers, args.sasl_ssl, args.data_dir) == (9092, 1, None, None)
    assert build_parser(SETTINGS).parse_args(["broker", "--port", "0"]).port == 0
