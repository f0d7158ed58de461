"""`ecseq demo` end to end as a user runs it: a real broker, train-encoder, worker and builder as child
processes. One complete run (small synthetic replay), and one interrupted with SIGINT once the worker
is ready; after both, no child process may be left."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.replay import MALFORMED_EVERY, MALFORMED_KINDS

EVENTS = 6_000
RATE = 200  # 30 s of replay: room for the builder (~7 s start, catch-up, build) to publish mid-stream
READY_MARKER = "worker ready on"
CHILDREN = {"broker", "train-encoder", "worker", "builder"}


def demo_command(work: Path) -> list[str]:
    return [sys.executable, "-m", "ecseq_cli", "demo", "--dataset", "synthetic", "--events", str(EVENTS),
            "--rate", str(RATE), "--work-dir", str(work)]


def recorded_pids(work: Path) -> dict[str, int]:
    path = work / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: dict[str, int], timeout: float = 5.0) -> dict[str, int]:
    """The recorded processes still running after `timeout` (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = {name: pid for name, pid in pids.items() if alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """The demo's work dir; whatever the test's outcome, no process the demo recorded outlives it."""
    path = tmp_path / "demo"
    yield path
    for pid in recorded_pids(path).values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_demo_runs_end_to_end_and_leaves_nothing_running(work: Path) -> None:
    done = subprocess.run(demo_command(work), check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr

    summary = json.loads((work / "summary.json").read_text())
    for score in ("score", "encoder_score"):
        for metric in ("auc", "ap"):
            assert math.isfinite(summary["quality"][score][metric]), (score, metric)
    versions = summary["versions"]
    assert list(versions) == ["v000001", "v000002"], done.stdout[-3000:]
    assert versions["v000001"]["last_scored"] < versions["v000002"]["first_scored"]
    assert summary["swap"]["ordered"] and summary["swap"]["to"] == "v000002"
    assert summary["build"]["result"] == "published"

    injected = summary["dead_letters"]["injected"]
    assert set(injected) == set(MALFORMED_KINDS) and sum(injected.values()) == EVENTS // MALFORMED_EVERY
    assert summary["dead_letters"]["by_reason"] == injected

    scored = summary["scored"]
    assert scored["valid_events"] == EVENTS and scored["scored"] == EVENTS and scored["missing"] == 0
    assert summary["quality"]["labelled"] == EVENTS
    assert (work / "demo.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    pids = recorded_pids(work)
    assert set(pids) == CHILDREN and summary["pids"] == pids
    assert wait_gone(pids) == {}


def _as_at_a_terminal() -> None:
    """A run in the background of a shell inherits SIGINT ignored (and keeps it ignored through exec):
    this test is a Ctrl-C at a terminal, whatever started the test suite."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_once_the_worker_is_ready_exits_130_and_stops_every_child(work: Path) -> None:
    demo = subprocess.Popen(demo_command(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_as_at_a_terminal)  # noqa: PLW1509 - a signal disposition only
    try:
        output = _read_until(demo, READY_MARKER, timeout=120)
        demo.send_signal(signal.SIGINT)
        status = demo.wait(timeout=30)
        output += demo.stdout.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert status == 130, output[-3000:]
    assert output.rstrip().endswith("ecseq: interrupted"), output[-3000:]
    assert "Traceback" not in output
    pids = recorded_pids(work)
    assert {"broker", "train-encoder", "worker"} <= set(pids)
    assert wait_gone(pids) == {}


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """The process's output up to and including the first line holding `marker` (killed after `timeout`)."""
    watchdog, lines = threading.Timer(timeout, proc.kill), []
    watchdog.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                return "".join(lines)
    finally:
        watchdog.cancel()
    raise AssertionError(f"no {marker!r} in the demo's output:\n" + "".join(lines)[-3000:])
