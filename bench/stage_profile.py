"""py-spy samples of an app under test, sorted into the stages of its work by the module of each frame.

A stage is a set of modules, each named by its imported module object (a package stands for
every module under it), so a product module that is moved or renamed fails here at import,
instead of leaving its samples to an "other" category. A sample belongs to the outermost frame
of its task (below the event loop) that is in a mapped module other than the app's own code
(every worker module outside the stages, and the bare app): that is the call the app made, so a
changelog send made by the state table counts as state, not as a send. It is labelled by the
innermost frame of the same stage, so the scoring call splits into featurise, encode and
attach. Framework time under the app's own code is marked [agent].
"""

from __future__ import annotations

import asyncio.base_events
import functools
import inspect
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import aiohttp
import aiokafka.client
import aiokafka.conn
import aiokafka.consumer
import aiokafka.consumer.group_coordinator
import aiokafka.producer
import faust.channels
import faust.events
import faust.sensors
import faust.stores
import faust.streams
import faust.tables
import faust.topics
import faust.transport.conductor
import faust.transport.consumer
import faust.transport.producer
import faust.types.tuples
import faust.web
import mode.timers
import mode.utils.queues
import prometheus_client

import ecseq.artifacts
import ecseq.decoding
import ecseq.encoders
import ecseq.features
import ecseq.gnn
import ecseq.graph
import ecseq.history
import ecseq.online
import ecseq.scoring
import ecseq.serving_kernels
import ecseq.stages
import worker.app
import worker.artifact_follower
import worker.health
import worker.metrics
import worker.outputs
import worker.record_batches
import worker.state
import worker.views
from bench import faust_bare

# (stage, label, modules) of the apps' own work; a stage's labels split it by the innermost frame
STAGES: tuple[tuple[str, str, tuple[ModuleType, ...]], ...] = (
    ("decode", "decode", (ecseq.decoding, json)),  # json: the bare apps' parse
    ("state", "state: UserHistory (append, to/from bytes)", (ecseq.history,)),
    ("state", "state: table store (RocksDB) and changelog sends", (worker.state, faust.tables, faust.stores)),
    ("scoring", "scoring: featurise and results", (ecseq.online, ecseq.features)),
    ("scoring", "scoring: encode", (ecseq.encoders,)),
    ("scoring", "scoring: attach and gnn", (ecseq.scoring, ecseq.serving_kernels, ecseq.graph, ecseq.gnn)),
    ("produce", "produce (records, JSON, hand-off)", (worker.outputs, worker.record_batches)),
    ("metrics", "metrics", (worker.metrics, ecseq.stages, prometheus_client)),
    ("operations", "operations (health probe, web views, artifact checks)",
     (worker.health, worker.views, worker.artifact_follower, ecseq.artifacts)),
)
# (label, modules) of the framework's own work
FRAMEWORK: tuple[tuple[str, tuple[ModuleType, ...]], ...] = (
    ("framework: commits, heartbeats, timers, web",
     (aiokafka.consumer.group_coordinator, faust.sensors, faust.web, aiohttp, mode.timers)),
    ("framework: producer (batches, requests, delivery callbacks)",
     (aiokafka.producer, faust.transport.producer, faust.topics)),
    ("framework: consumer (fetch, conductor, stream, take_events)",
     (aiokafka.consumer, faust.transport.consumer, faust.transport.conductor, faust.streams, faust.channels,
      faust.events, faust.types.tuples, mode.utils.queues)),
    ("framework: Kafka connections (aiokafka)", (aiokafka.conn, aiokafka.client)),
)
EVENT_LOOP = asyncio.base_events.__file__  # the loop itself: every task step and callback runs below it
APP = "app"  # the stage of the app's own code: passed through when looking for the call it made
AGENT_LOOP = "agent loop (the app's own code)"
OTHER = "framework: other (asyncio, faust, aiokafka)"


def _places(module: ModuleType) -> list[Path]:
    """Where a module's code is: its file, or a package's directory."""
    if hasattr(module, "__path__"):
        return [Path(place) for place in module.__path__ if Path(place).is_dir()]
    return [Path(inspect.getfile(module))]


def _owners() -> dict[Path, tuple[str, str]]:
    """File or package directory -> (stage, label). Every module of the worker not in a stage is the
    app's own code, like the bare app's."""
    owners = {place: (APP, AGENT_LOOP) for place in (Path(inspect.getfile(worker.app)).parent, *_places(faust_bare))}
    for stage, label, modules in (*STAGES, *((label, label, modules) for label, modules in FRAMEWORK)):
        for place in (place for module in modules for place in _places(module)):
            if place in owners:
                raise ValueError(f"{place} is in two stages: {owners[place][1]!r} and {label!r}")
            owners[place] = (stage, label)
    return owners


OWNERS = _owners()
_FRAMEWORK_STAGES = {label for label, _ in FRAMEWORK}


@functools.cache
def _owner(path: str) -> tuple[str, str] | None:
    """(stage, label) of a frame's file: its own module's, else its innermost mapped package's."""
    where = Path(path)
    return next((OWNERS[place] for place in (where, *where.parents) if place in OWNERS), None)


def _frame_parts(frame: str) -> tuple[str, str]:
    """'Class.func (/path/file.py:12)' -> ('Class.func', '/path/file.py')."""
    name, _, where = frame.partition(" (")
    return name.strip(), where.rsplit(":", 1)[0]


def classify(frames: list[str]) -> str:
    """Category of one sample (frames root first, as py-spy's raw format writes them)."""
    paths = [_frame_parts(frame)[1] for frame in frames]
    # only what runs in the event loop counts: the process's entry point above it is the app's code too
    loop = next((depth for depth, path in enumerate(paths) if path == EVENT_LOOP), 0)
    owners = [_owner(path) for path in paths[loop:]]
    in_app = False
    for depth, owner in enumerate(owners):
        if owner is None:
            continue
        if owner[0] == APP:
            in_app = True
            continue
        label = next(inner[1] for inner in reversed(owners[depth:]) if inner is not None and inner[0] == owner[0])
        return f"{label} [agent]" if in_app and owner[0] in _FRAMEWORK_STAGES else label
    if not in_app:
        return OTHER
    return AGENT_LOOP if owners[-1] is not None else f"{OTHER} [agent]"


def summarise_profile(raw: str) -> dict:
    """Shares of the main (event-loop) thread's samples by category; idle = waiting in the selector."""
    main_busy: Counter[str] = Counter()
    other_threads: Counter[str] = Counter()
    idle = total_main = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        n = int(count)
        leaf = _frame_parts(frames[-1]) if frames else ("", "")
        waiting = ("selectors.py" in leaf[1] or "concurrent/futures/thread.py" in leaf[1]
                   or leaf[0].endswith(("wait", "select", "poll", "acquire")))
        if thread.endswith("MainThread"):
            total_main += n
            if "selectors.py" in leaf[1]:
                idle += n
            else:
                main_busy[classify(frames)] += n
        elif not waiting:
            other_threads[f"{thread.split(': ', 1)[-1]}: {classify(frames)}"] += n
    busy = sum(main_busy.values())
    return {"main_thread_samples": total_main,
            "main_thread_idle_share": round(idle / total_main, 4) if total_main else None,
            "main_thread_busy_share": {k: round(v / busy, 4) for k, v in main_busy.most_common()} if busy else {},
            "other_threads_busy_samples": dict(other_threads.most_common(12))}  # fmt: skip


class Profiler:
    """py-spy sampling one process (and its threads) until stopped; raw collapsed stacks with full
    file names (what the stages are matched on)."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.out = out
        self.proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                      "--idle", "--threads", "--full-filenames", "--output", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        time.sleep(0.5)  # attached

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return {"error": (err or b"").decode(errors="replace")[-1000:]}
        return summarise_profile(self.out.read_text())
