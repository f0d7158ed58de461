"""The framework's ceiling: the worker's own Faust pipeline forwarding raw JSON events, minus decoding, state, scoring.

One agent takes raw JSON events from the input topic, parses each one for its user id and
forwards the raw bytes, keyed by user, to the output topic. Everything around that is the
worker's own, imported rather than copied, so that a change to the worker's pipeline moves this
baseline too: its settings (WorkerSettings from the same ECSEQ_* variables; the flags name only
this app's own topics, group, partitions and data directory), its Faust settings, producer
tuning, Faust patches and process runner, its micro-batches (takes joined while behind, every
event held until its batch is confirmed), its outputs (one record batch per partition on the
aiokafka producer, confirmed in the background with at most MAX_UNCONFIRMED batches in flight;
an event is acknowledged only once every output of its batch is delivered: at-least-once,
docs/faust-notes.md §1) and its GC freeze of long-lived objects.

With ``--table`` it also writes a small per-user value (a running count) into a changelog-backed
Faust table: what plain Faust state costs per event. ``--faust-io`` sends the outputs in Faust's
own idiom instead, for reference: Topic.send per record, Faust's 16 KiB producer batches, a
batch's deliveries awaited before the next one is taken, no GC freeze.

It is its own process, started by bench/bench_worker.py:

    python -m bench.faust_bare --bootstrap 127.0.0.1:PORT --input IN --output OUT

``--fail-at``, ``--store rocksdb://`` and ``--no-consistency-check`` exist for the experiments
described in docs/faust-notes.md. Nothing listens: the worker's web server serves its own views.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import tempfile
from collections.abc import Awaitable
from pathlib import Path

import faust

from ecseq.settings import parse_duration
from kafka_io.client import KafkaClientConfig
from worker import internals
from worker.app import PRODUCER_TUNING, freeze_long_lived
from worker.confirmations import MAX_UNCONFIRMED, InFlight, acknowledge
from worker.faust_settings import faust_settings
from worker.micro_batches import micro_batches
from worker.record_batches import PartitionBatches
from worker.runner import WorkerRunner
from worker.settings import WorkerSettings

# Topic.send hands records to the producer one at a time: a 5 ms linger lets them gather into
# Faust's 16 KiB batches (the --faust-io figures in docs/results.md were measured with it).
FAUST_IO_PRODUCER = {"producer_linger": 0.005}


def bare_settings(args: argparse.Namespace) -> WorkerSettings:
    """The worker's settings from ECSEQ_* variables, with this app's own names and storage."""
    return dataclasses.replace(WorkerSettings.from_env(), broker=args.bootstrap, app_id=args.group,
                               partitions=args.partitions, state_store=args.store, data_dir=args.datadir)


def bare_faust_settings(settings: WorkerSettings, args: argparse.Namespace) -> dict:
    """The worker's Faust settings and producer tuning (Faust's own with --faust-io), without a web server."""
    return {**faust_settings(settings, KafkaClientConfig.from_settings(settings)),
            **(FAUST_IO_PRODUCER if args.faust_io else PRODUCER_TUNING),
            "web_enabled": False,
            "recovery_consistency_check": not args.no_consistency_check}


def build_app(args: argparse.Namespace) -> faust.App:
    """The forwarder on the worker's building blocks (see the module docstring)."""
    settings = bare_settings(args)
    internals.apply()  # the worker's patches of Faust: the ceiling runs on the same framework
    app = faust.App(settings.app_id, **bare_faust_settings(settings, args))
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source, sink = app.topic(args.input, **raw), app.topic(args.output, **raw)
    table = (
        # key_type/value_type=bytes is how a Table gets the "raw" serializer (no *_serializer kwargs)
        app.Table("bare-counts", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
        if args.table else None
    )
    # batches whose outputs may still be in flight while the next one is taken (--faust-io: none)
    limit = 0 if args.faust_io else MAX_UNCONFIRMED
    stats = {"events": 0, "bad": 0, "batches": 0, "seen": 0}

    async def confirm(batch: list[faust.EventT], pending: list[Awaitable[object]]) -> None:
        """Acknowledge a batch once every output it sent is delivered, as the worker confirms its
        batches (without its metrics): the last reference of each event lets its offset commit."""
        await asyncio.gather(*pending)
        acknowledge(app, batch)
        stats["events"] += len(batch)
        stats["batches"] += 1

    async def send(batch: list[faust.EventT]) -> list[Awaitable[object]]:
        """Forward a batch's events keyed by user; their delivery futures."""
        pending: list[Awaitable[object]] = []
        out = None
        if not args.faust_io:
            await app.maybe_start_producer()
            out = PartitionBatches(internals.aiokafka_producer(app), args.output)
        for event in batch:
            stats["seen"] += 1
            if stats["seen"] == args.fail_at:
                raise RuntimeError(f"injected failure at event {args.fail_at}")
            raw = event.message.value
            try:
                user = str(json.loads(raw)["user_id"]).encode()
            except (ValueError, KeyError, TypeError):
                stats["bad"] += 1
                continue
            if table is not None:
                # Table writes use the *current event's* partition for the changelog
                # (co-partitioning), so they must happen while that event is current.
                with internals.current_event(event):
                    count = table.get(user)  # default=None: [] would raise KeyError
                    table[user] = b"%d" % (int(count) + 1 if count is not None else 1)
            if out is None:
                pending.append(await sink.send(key=user, value=raw))
            else:
                await out.append(user, raw)
        if out is not None:
            pending.extend(sent.delivered for sent in await out.send())
        return pending

    if not args.faust_io:
        @app.task
        async def freeze_at_start() -> None:
            freeze_long_lived()  # the worker's: it freezes once it serves an artifact

    @app.agent(source, concurrency=1)
    async def forward(stream: faust.StreamT) -> None:
        in_flight = InFlight(limit)
        async for batch in micro_batches(stream, settings.batch_size, parse_duration(settings.batch_within)):
            await in_flight.add(confirm(batch, await send(batch)))  # a failed delivery stops the app

    @app.timer(interval=5.0)
    async def report() -> None:
        logging.getLogger("faust_bare").info("stats %s", stats)

    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default="bench-bare", help="consumer group and table prefix (the app id)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--datadir", default=None, help="default: a new temporary directory")
    parser.add_argument("--table", action="store_true", help="also write a per-user table value")
    parser.add_argument("--store", default="memory://", help="the table's store: memory:// or rocksdb://")
    parser.add_argument("--faust-io", action="store_true",
                        help="outputs in Faust's own idiom (Topic.send, 16 KiB producer batches, deliveries "
                             "awaited before the next batch, no GC freeze), not the worker's")
    parser.add_argument("--no-consistency-check", action="store_true", help="recovery_consistency_check=False")
    parser.add_argument("--fail-at", type=int, default=0,
                        help="experiment: raise once while processing the Nth event")
    parser.add_argument("--loglevel", default="warning")
    args = parser.parse_args(argv)
    if args.datadir is None:
        args.datadir = tempfile.mkdtemp(prefix="faust-bare-")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = build_app(args)
    Path(args.datadir).mkdir(parents=True, exist_ok=True)
    # what `ecseq worker` does: the worker's runner (signals, a bounded stop, the exit status), and
    # no terminal spinner, which would set the root logger to DEBUG (faust/worker.py
    # _setup_spinner_handler) so that every aiokafka/faust debug() call builds a LogRecord
    runner = WorkerRunner(app, loglevel=args.loglevel, redirect_stdouts=False)
    runner.spinner = None
    runner.execute_from_commandline()


if __name__ == "__main__":
    main()
