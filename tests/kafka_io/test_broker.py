"""DevBroker against the real Tansu binary: start, stop, port clashes, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kafka_io import BrokerError, DevBroker, topic_partitions

ROOT = Path(__file__).resolve().parents[2]


def accepts(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def process_gone(pid: int, within: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_session_broker_answers_metadata(broker: DevBroker) -> None:
    assert broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert accepts(broker.bootstrap)
    assert isinstance(topic_partitions(broker.bootstrap, timeout=5), dict)
    assert broker.startup_seconds is not None and broker.startup_seconds < 10


def test_start_stop_lifecycle(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "tansu.log"
    dev = DevBroker(log_path=log_path)
    assert not dev.running and dev.pid is None
    with dev:
        pid = dev.pid
        assert pid is not None and dev.running
        assert accepts(dev.bootstrap)
        assert dev.start() is dev  # already running: no second process
        assert dev.pid == pid
    assert not dev.running
    assert not accepts(dev.bootstrap)
    assert process_gone(pid, within=0.5)  # stop() reaps it: nothing left behind
    dev.stop()  # idempotent
    dev.stop(timeout=0.1)
    assert "listening on" in log_path.read_text()


def test_restart_on_same_port_after_stop() -> None:
    dev = DevBroker().start()
    port = dev.port
    dev.stop()
    try:
        dev.start()  # a just-closed port (TIME_WAIT) must not count as busy
        assert dev.port == port and accepts(dev.bootstrap)
    finally:
        dev.stop()


def test_second_broker_on_a_busy_port_fails_clearly(broker: DevBroker) -> None:
    other = DevBroker(port=broker.port)
    with pytest.raises(BrokerError, match=rf"port {broker.port} .* already in use"):
        other.start(timeout=5)
    assert other.pid is None
    assert broker.running and accepts(broker.bootstrap)


def test_missing_binary_is_a_broker_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "no-such-tansu"))
    with pytest.raises(BrokerError, match="binary not found"):
        DevBroker().start(timeout=2)


def test_wait_returns_when_the_broker_exits() -> None:
    dev = DevBroker().start()
    try:
        assert dev.pid is not None
        os.kill(dev.pid, signal.SIGTERM)
        assert isinstance(dev.wait(), int)
        assert not dev.running
    finally:
        dev.stop()


def test_wait_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError, match="not started"):
        DevBroker().wait()


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
)
def test_broker_dies_with_a_killed_parent() -> None:
    """SIGKILL skips every cleanup hook; the broker must still not outlive its parent."""
    script = textwrap.dedent(
        """
        import sys, time
        from kafka_io import DevBroker
        dev = DevBroker().start()
        print(dev.pid, dev.bootstrap, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid_text, bootstrap = parent.stdout.readline().split()
        pid = int(pid_text)
        assert accepts(bootstrap)
        parent.kill()
        parent.wait()
        assert process_gone(pid), f"tansu pid {pid} outlived its parent"
        assert not accepts(bootstrap)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
