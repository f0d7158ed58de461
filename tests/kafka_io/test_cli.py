"""`ecseq broker`: a foreground dev broker with the ecseq topics, stopped cleanly by SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys

from ecseq.settings import Settings
from kafka_io.broker import free_port
from kafka_io.topics import topic_config, topic_partitions
from tests.processes import child, terminate


def test_broker_command_creates_the_topics_and_stops_on_sigterm():
    port = free_port()
    with child([sys.executable, "-m", "ecseq_cli", "broker", "--port", str(port), "--partitions", "3"],
               stderr=subprocess.PIPE, text=True) as proc:
        lines = []
        while len(lines) < 10 and not any("Ctrl-C" in line for line in lines):  # log lines, then the banner
            lines.append(proc.stderr.readline())
        assert f"dev broker on 127.0.0.1:{port}" in lines[-1], lines
        partitions = topic_partitions(f"127.0.0.1:{port}")
        settings = Settings()
        for topic in (settings.events_topic, settings.labels_topic, settings.scores_topic,
                      settings.dead_letter_topic, settings.artifacts_topic):
            assert partitions[topic] == 3
        assert topic_config(f"127.0.0.1:{port}", settings.artifacts_topic).get("cleanup.policy") == "compact"
        assert terminate(proc) == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_broker_command_on_a_busy_port_says_so():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "ecseq_cli", "broker", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "already in use" in done.stderr and "Traceback" not in done.stderr
