"""`ecseq demo`: the whole system on one machine, from nothing, in a few minutes.

Starts Apache Kafka on loopback, trains the first artifact on older events of a real data set, runs a worker
and (mid-stream) the builder as separate processes, replays the newest events through Kafka with
late labels and a few malformed events, and ends with the online quality of what was streamed.
Every process it starts is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiokafka.errors import KafkaError

from compression_builder.report import REPORT
from demo.builds import Build, gate_line
from demo.data import DemoData, split_for_demo
from demo.plot import plot_demo
from demo.processes import PIDS_FILE, Children, child_env, ecseq_command, wait_ready
from demo.progress import Display
from demo.replay import plan_replay
from demo.stream import DRAIN_SECONDS, run_stream
from demo.summary import build_summary, format_summary
from ecseq.artifacts import ArtifactStore
from ecseq.data.builtin import DATASETS, load_dataset
from ecseq.data.events import DataError
from kafka_io.broker import KafkaCluster, free_port
from kafka_io.cli import TOPIC_FIELDS
from kafka_io.client import KafkaClientConfig
from kafka_io.jars import kafka_version
from kafka_io.settings import KafkaSettings
from kafka_io.topics import ensure_topics

DEFAULT_EVENTS = 40_000
DEFAULT_RATE = 500.0
ENCODER_EPOCHS = 3
PARTITIONS = 4  # of every demo topic, and so of the worker's table (ECSEQ_PARTITIONS)
READY_SECONDS = 120.0
BUILDER_SINCE = "3650d"  # every streamed event: the window is what the demo replayed, not a clock
BUILDER_EVERY = "1h"  # one build during the demo (the service builds at once when it starts)
# The rebuild is a batch job that shares the demo's 2 cores with the worker, the broker and the
# replay; in production it runs elsewhere. At normal priority its read and training take the
# worker's CPU and the event-to-score tail rises while it runs (docs/results.md).
BUILDER_NICENESS = 10
DEMO_MARKERS = (PIDS_FILE, "summary.json", "logs")  # what makes a directory safe to wipe


def add_commands(sub, settings: KafkaSettings) -> None:
    demo = sub.add_parser("demo", help="the whole system on one machine: broker, training, worker, builder, "
                                       "a replay through Kafka with a hot swap, and a summary")
    demo.add_argument("--dataset", choices=DATASETS, default="nycflights13", help="default nycflights13")
    demo.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                      help=f"newest events to replay (default {DEFAULT_EVENTS:,})")
    demo.add_argument("--rate", type=float, default=DEFAULT_RATE,
                      help=f"events per second of the replay (default {DEFAULT_RATE:g})")
    demo.add_argument("--work-dir", type=Path, default=Path("runs/demo"),
                      help="store, worker state, logs, summary.json, demo.png; wiped at start (default runs/demo)")
    demo.add_argument("--keep-running", action="store_true",
                      help="leave broker, worker and builder up after the summary, until Ctrl-C")
    demo.set_defaults(run=cmd_demo, settings=settings)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise DataError(f"--rate must be positive, got {args.rate:g}")
    settings: KafkaSettings = args.settings
    work = _fresh_work_dir(args.work_dir)
    _quiet_libraries()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: children too
    began = time.monotonic()
    children = Children(work)
    broker = KafkaCluster(nodes=1, workdir=work / "kafka")
    try:
        return _demo(args, settings, work, children, broker, began)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise DataError(f"demo failed talking to Kafka: {exc}; see {children.logs}") from None
    finally:
        children.stop_all()
        broker.stop()


def _demo(args: argparse.Namespace, settings: KafkaSettings, work: Path, children: Children, broker: KafkaCluster,
          began: float) -> int:
    steps: dict[str, float] = {}
    say = _stepper(steps)

    t = time.monotonic()
    broker.start()
    children.record("broker", broker.nodes[0].pid)
    topics = {getattr(settings, field): PARTITIONS for field in TOPIC_FIELDS} | {settings.artifacts_topic: 1}
    ensure_topics(broker.bootstrap, topics, compacted=[settings.artifacts_topic])
    say("broker", f"apache kafka {kafka_version()} on {broker.bootstrap} (up in {broker.startup_seconds:.1f}s), "
                  f"topics {', '.join(topics)}", t)

    t = time.monotonic()
    try:
        dataset = load_dataset(args.dataset, seed=0)
    except RuntimeError as exc:  # a data package's file is missing
        raise DataError(str(exc)) from None
    data = split_for_demo(dataset, args.events)
    train_file = work / "train.parquet"
    data.train.to_parquet(train_file)
    say("data", f"{data.name}: {len(data.train):,} older events to train on, the newest {len(data.replay):,} "
                f"to replay ({_span(data)})", t)

    store_dir = work / "store"
    env = child_env(broker=broker.bootstrap, store=store_dir.absolute(), metrics_host="127.0.0.1")
    t = time.monotonic()
    first = _train(children, data, train_file, store_dir, env)
    store = ArtifactStore(store_dir)
    say("train", f"train-encoder: {gate_line(Build(first, json.loads((store.path(first) / REPORT).read_text())))}", t)

    t = time.monotonic()
    web_port, builder_port = free_port(), free_port()
    urls = {"worker": f"http://127.0.0.1:{web_port}/metrics", "builder": f"http://127.0.0.1:{builder_port}/metrics"}
    worker_env = env | child_env(data_dir=(work / "worker-data").absolute(), web_host="127.0.0.1",
                                 web_port=web_port, partitions=PARTITIONS)
    worker = children.start("worker", ecseq_command("worker"), worker_env)
    ready = wait_ready(worker, f"http://127.0.0.1:{web_port}/ready", READY_SECONDS)
    say("worker", f"worker ready on http://127.0.0.1:{web_port}, serving {ready.get('artifact')}", t)

    plan = plan_replay(data.replay, data.numeric, data.categorical, settings.events_topic, settings.labels_topic)
    builder = ecseq_command("builder", "--kafka", broker.bootstrap, "--every", BUILDER_EVERY, "--since", BUILDER_SINCE,
                            "--store", str(store_dir.absolute()), "--data-dir", str((work / "builder-data").absolute()),
                            "--metrics-port", str(builder_port),
                            "--metrics-host", "127.0.0.1", "--threads", "1", "--quiet",
                            "--force")  # see demo.builds.FORCED_WHY
    display = Display()
    t = time.monotonic()
    result = asyncio.run(run_stream(plan, args.rate, KafkaClientConfig.of(broker.bootstrap), settings, children,
                                    lambda: children.start("builder", builder, env, niceness=BUILDER_NICENESS),
                                    store, first, display))
    say("stream", f"stream: {len(plan.valid_ids & result.scores.seen.keys()):,} of {len(plan.valid_ids):,} valid "
                  f"events scored, {result.scores.dead_letters.total():,} dead letters", t)

    summary = build_summary(dataset=data.name, rate=args.rate, plan=plan, result=result, first=first, urls=urls,
                            running=args.keep_running, pids=children.pids, steps=steps,
                            wall_seconds=time.monotonic() - began)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    swap = summary["swap"]
    plot_demo(list(result.scores.seen.values()), plan.labels, result.started, args.rate,
              swap["at_epoch"] if swap else None, f"ecseq demo: {data.name}, {len(plan.valid_ids):,} events",
              work / "demo.png")
    print(format_summary(summary))
    print(f"  files: {work / 'summary.json'}, {work / 'demo.png'}, logs in {children.logs}")
    if not result.complete:
        dead = result.scores.dead_letters.total()
        raise DataError(f"{DRAIN_SECONDS:.0f} s after the replay, {summary['scored']['missing']:,} valid events were "
                        f"unscored and {dead} of {sum(plan.injected.values())} dead letters in; "
                        f"see {children.log_path('worker')}")
    if args.keep_running:
        _serve_until_interrupted(children)
    return 0


def _train(children: Children, data: DemoData, train_file: Path, store_dir: Path, env: dict[str, str]) -> str:
    """The real `ecseq train-encoder` on the training file: publishes the first version."""
    argv = ecseq_command("train-encoder", "--events", str(train_file), "--store", str(store_dir.absolute()),
                         "--epochs", str(ENCODER_EPOCHS), "--quiet", "--force")  # see demo.builds.FORCED_WHY
    if data.categorical:
        argv += ["--categorical", ",".join(data.categorical)]
    status = children.run("train-encoder", argv, env)
    log = children.log_path("train-encoder")
    if status != 0:
        raise DataError(f"train-encoder failed (status {status}); see {log}")
    version = ArtifactStore(store_dir).current()
    if version is None:
        raise DataError(f"train-encoder published nothing; see {log}")
    return version


def _serve_until_interrupted(children: Children) -> None:
    print("broker, worker and builder keep running; Ctrl-C stops them", flush=True)
    try:
        while True:
            children.check()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping", flush=True)


def _fresh_work_dir(path: Path) -> Path:
    """Wipe and recreate the work directory, but only if it is empty or an earlier demo's, and idle."""
    if path.exists():
        if not path.is_dir() or (any(path.iterdir()) and not any((path / m).exists() for m in DEMO_MARKERS)):
            raise DataError(f"--work-dir {path} exists and is not a demo directory; choose another or remove it")
        running = [pid for pid in _recorded_pids(path) if _alive(pid)]
        if running:
            raise DataError(f"--work-dir {path} is in use by a running demo (pids {running}); stop it first")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _recorded_pids(path: Path) -> list[int]:
    try:
        return [int(pid) for pid in json.loads((path / PIDS_FILE).read_text()).values()]
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive all the same
        pass
    return True


def _quiet_libraries() -> None:
    """The demo speaks in steps; the broker wrapper's and aiokafka's INFO lines would interleave."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("kafka_io", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _stepper(steps: dict[str, float]) -> Callable[[str, str, float], None]:
    def say(name: str, text: str, since: float) -> None:
        steps[name] = time.monotonic() - since
        print(f"{text} ({steps[name]:.1f} s)", flush=True)
    return say


def _span(data: DemoData) -> str:
    first, last = (time.strftime("%Y-%m-%d", time.gmtime(ts)) for ts in (data.replay["ts"].iloc[0],
                                                                          data.replay["ts"].iloc[-1]))
    return f"{first} to {last}"
