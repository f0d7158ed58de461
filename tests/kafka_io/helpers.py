"""Process and socket checks shared by the Kafka tests (loopback only)."""

from __future__ import annotations

import queue
import socket
import threading
import time
from pathlib import Path
from typing import IO


def accepts(address: str) -> bool:
    """True if something accepts TCP connections at ``host:port`` (one address, not a list)."""
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1", address  # these tests never talk to anything but loopback
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def is_kafka_node(pid: int) -> bool:
    """``pid`` runs (not a zombie) and is a Kafka node (``java ... kafka.Kafka server.properties``)."""
    return _state(pid) not in (None, "Z", "X") and "kafka.Kafka" in cmdline(pid)


def process_gone(pid: int, within: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _state(pid) in (None, "Z", "X"):
            return True
        time.sleep(0.02)
    return False


def kafka_children(parent: int) -> list[int]:
    """Pids of the Kafka nodes whose parent is ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(stat.parent.name)
        if ppid == parent and is_kafka_node(pid):
            found.append(pid)
    return sorted(found)


def read_lines(stream: IO[str], count: int, timeout: float = 120.0) -> list[str]:
    """The next ``count`` lines of ``stream`` (fewer if it ends), failing the test after ``timeout``."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for _ in range(count):
            line = stream.readline()
            lines.put(line)
            if not line:
                return

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise AssertionError(f"no line {len(out) + 1} within {timeout:g}s; got {out}") from None
        if not line:
            break
        out.append(line.rstrip("\n"))
    return out
