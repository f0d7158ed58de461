"""Child processes in tests: never left running, whatever the test's outcome."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def child(args: list[str], **popen) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def terminate(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM, then the exit status: how an operator (or an orchestrator) stops a service."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)
