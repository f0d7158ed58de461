"""`ecseq worker`: the stream worker in the foreground, configured by ECSEQ_* variables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ecseq.artifacts import ArtifactStore
from ecseq.errors import DataError
from ecseq.settings import variable
from worker.settings import WorkerSettings


def add_commands(sub, settings: WorkerSettings) -> None:
    worker = sub.add_parser("worker", help="score the events topic in real time (faust-streaming worker)")
    worker.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"))
    worker.set_defaults(run=cmd_worker, settings=settings)


def cmd_worker(args: argparse.Namespace) -> int:
    # the worker's dependencies load only for this command
    from kafka_io.client import KafkaClientConfig
    from worker import internals
    from worker.app import Worker, prepare_topics
    from worker.metrics import WorkerMetrics
    from worker.runner import WorkerRunner
    from worker.startup import wait_for_kafka

    settings: WorkerSettings = args.settings
    try:
        internals.apply()  # the process's patches of Faust, once, before any of it runs
    except internals.InternalsChanged as exc:
        print(f"ecseq: error: {exc}", file=sys.stderr)
        return 2
    kafka = KafkaClientConfig.from_settings(settings)
    _check_paths(settings)
    metrics = WorkerMetrics()
    replication = wait_for_kafka(settings, kafka, lambda: prepare_topics(settings, kafka), metrics)
    if replication is None:  # stopped while waiting
        return 0
    worker = Worker(settings, kafka, replication, metrics)
    # what `faust worker` does: signal handling (SIGTERM stops cleanly, within a bound), logging, exit status
    runner = WorkerRunner(worker.app, loglevel=args.loglevel, redirect_stdouts=False)
    # the terminal spinner would set the root logger to DEBUG, which costs CPU on every event
    runner.spinner = None
    runner.execute_from_commandline()
    return 0


def _check_paths(settings: WorkerSettings) -> None:
    """The store and the data directory are usable, before any wait for Kafka (DataError naming which)."""
    for name, make in (("store", ArtifactStore),
                       ("data_dir", lambda path: Path(path).mkdir(parents=True, exist_ok=True))):
        path = getattr(settings, name)
        try:
            make(path)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            raise DataError(f"{variable(name)}={path}: cannot use it ({exc.strerror or exc})") from None
