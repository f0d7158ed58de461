"""`ecseq worker`: the stream worker in the foreground, configured by ECSEQ_* variables."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecseq.settings import Settings


def add_commands(sub, settings: Settings) -> None:
    worker = sub.add_parser("worker", help="score the events topic in real time (faust-streaming worker)")
    worker.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"))
    worker.set_defaults(run=cmd_worker, settings=settings)


def cmd_worker(args: argparse.Namespace) -> int:
    import faust  # the worker's dependencies load only for this command

    from worker.app import Worker

    settings: Settings = args.settings
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    worker = Worker(settings)
    # what `faust worker` does: signal handling (SIGTERM stops cleanly), logging, exit status
    runner = faust.Worker(worker.app, loglevel=args.loglevel, redirect_stdouts=False)
    # the terminal spinner would set the root logger to DEBUG: ~10 % of the CPU per event
    runner.spinner = None
    runner.execute_from_commandline()
    return 0
