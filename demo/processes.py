"""The demo's child processes: each one logged to a file, recorded by pid, and always stopped.

Children run in their own session, so a Ctrl-C in the terminal reaches only the demo, which then
stops them in an order and within a time it controls; Linux also SIGTERMs them should the demo
die without cleaning up (the Kafka nodes' own safety net, reused).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecseq.data.events import DataError
from ecseq.settings import variable
from kafka_io.broker import die_with_parent

PIDS_FILE = "pids.json"
STOP_SECONDS = 5.0  # SIGTERM, then SIGKILL: a builder mid-build would otherwise finish it first


def ecseq_command(*args: str) -> list[str]:
    """The `ecseq` CLI of this very interpreter (the demo's venv), whatever is on PATH."""
    return [sys.executable, "-m", "ecseq_cli", *args]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path


class Children:
    """Started processes by name; `stop_all` ends every one that still runs (idempotent)."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, Child] = {}
        self._pids: dict[str, int] = {}

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def record(self, name: str, pid: int) -> None:
        """Note a pid in pids.json at once, so whoever checks for leftovers sees every process started."""
        self._pids[name] = pid
        (self.work_dir / PIDS_FILE).write_text(json.dumps(self._pids, indent=1))

    @property
    def pids(self) -> dict[str, int]:
        return dict(self._pids)

    def start(self, name: str, argv: list[str], env: dict[str, str], niceness: int = 0) -> Child:
        """Start a child; ``niceness`` > 0 lowers its CPU priority (a batch job next to the worker)."""
        log = self.log_path(name)
        with log.open("ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                    preexec_fn=_preexec(niceness))  # noqa: PLW1509 - prctl and nice only
        child = Child(name, proc, log)
        self._children[name] = child
        self.record(name, proc.pid)
        return child

    def run(self, name: str, argv: list[str], env: dict[str, str]) -> int:
        """Run to completion (a one-shot command); its exit status."""
        child = self.start(name, argv, env)
        try:
            return child.proc.wait()
        finally:
            self.stop(name)

    def check(self) -> None:
        """A service that exited on its own is a failure: say which, and where its log is."""
        for child in self._children.values():
            status = child.proc.poll()
            if status is not None:
                raise DataError(f"the {child.name} exited unexpectedly (status {status}); see {child.log}")

    def stop(self, name: str) -> None:
        child = self._children.pop(name, None)
        if child is not None:
            _stop([child.proc])

    def stop_all(self) -> None:
        """SIGTERM every child at once, SIGKILL whatever is left after STOP_SECONDS; newest first."""
        procs = [child.proc for child in reversed(self._children.values())]
        self._children.clear()
        _stop(procs)


def _preexec(niceness: int):
    dies_with_parent = die_with_parent()

    def preexec() -> None:
        if dies_with_parent is not None:
            dies_with_parent()
        if niceness:
            os.nice(niceness)

    return preexec


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(child: Child, url: str, timeout: float) -> dict:
    """Poll a worker's /ready until it answers 200; its JSON body (e.g. the artifact it serves)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise DataError(f"the {child.name} exited during start (status {child.proc.returncode}); "
                            f"see {child.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.25)
    raise DataError(f"the {child.name} was not ready within {timeout:.0f} s; see {child.log}")


def child_env(**settings: str | int) -> dict[str, str]:
    """This process's environment plus ECSEQ_* settings (name -> value), for a child."""
    return {**os.environ, **{variable(name): str(value) for name, value in settings.items()}}
