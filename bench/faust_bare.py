"""The framework's ceiling: a minimal faust-streaming app that forwards raw JSON events.

One agent reads raw JSON events from the input topic in micro-batches
(``stream.take_events(n, within)``), parses each one for its user id and forwards the raw
bytes, keyed by user, to the output topic. With ``--table`` it also writes a small per-user
value (a running count) into a changelog-backed table, which is what the real worker pays
for its per-user sequence table. Every output send is awaited as a delivery future at the
end of its batch, so a batch is acknowledged only once its outputs are in the broker (the
at-least-once discipline the worker needs; see docs/faust-notes.md).

It is its own process, started by bench/bench_worker.py:

    python -m bench.faust_bare --bootstrap 127.0.0.1:PORT --input IN --output OUT

Faust's settings follow the worker's (worker/faust_settings.py) where they shape the
comparison: the group session timeout (``--session-timeout``, 6 s: Kafka refuses less by
default), acks=all, the stream buffer, and the worker's Faust patches
(``worker.internals.apply()``). Nothing listens beyond 127.0.0.1. The
``--hold-acks``/``--crash-app`` discipline is the fix docs/faust-notes.md argues for;
``--fail-at``, ``--store rocksdb://`` and ``--no-consistency-check`` exist for the
experiments described there. ``--direct-send``, ``--max-batch-bytes``, ``--pipeline`` and
``--gc-freeze`` handle the outputs the way the worker does (worker/app.py), so that the
bench compares like with like; without them it is Faust's own idiom (Topic.send, 16 KiB
producer batches, a batch's deliveries awaited before the next one is taken).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
from collections import deque
from pathlib import Path

# Nothing here needs more than one thread, and the bench shares two cores with the broker.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import faust

from kafka_io.client import KafkaClientConfig
from worker import internals
from worker.micro_batches import micro_batches
from worker.record_batches import PartitionBatches


def bare_settings(args: argparse.Namespace) -> dict:
    """Faust settings for the loopback broker the bench starts (see docs/faust-notes.md §3)."""
    return {
        "broker": [f"kafka://{host}" for host in KafkaClientConfig.of(args.bootstrap).hosts],
        "store": args.store,
        "datadir": args.datadir,
        "topic_partitions": args.partitions,
        "topic_allow_declare": True,  # lets Faust create the changelog topic
        "table_standby_replicas": 0,  # one worker in the bench: no standby reads
        "consumer_auto_offset_reset": "earliest",
        # as the worker's: Kafka's group.min.session.timeout.ms (6 s) is the floor
        "broker_session_timeout": args.session_timeout,
        "broker_heartbeat_interval": args.session_timeout / 6,
        "broker_rebalance_timeout": args.session_timeout,
        "broker_commit_interval": args.commit_interval,
        "broker_commit_every": 10_000,
        "recovery_consistency_check": not args.no_consistency_check,
        "stream_buffer_maxsize": 4096,
        "producer_linger": args.linger,
        "producer_max_batch_size": args.max_batch_bytes,
        "producer_acks": -1,
        "web_enabled": args.web_port > 0,
        "web_port": max(args.web_port, 1),
        "web_bind": "127.0.0.1",
        "web_host": "127.0.0.1",
        "web_metrics_enabled": False,
        "web_stats_enabled": False,
        "worker_redirect_stdouts": False,
        # An agent that raised takes the whole worker down (exit status != 0) instead of
        # being restarted alone by the default OneForOneSupervisor (docs/faust-notes.md §1).
        **({"agent_supervisor": "mode.CrashingSupervisor"} if args.crash_app else {}),
    }


def build_app(args: argparse.Namespace) -> faust.App:
    internals.apply()  # the worker's patches of Faust: the ceiling runs on the same framework
    app = faust.App(args.group, **bare_settings(args))
    source = app.topic(args.input, key_serializer="raw", value_serializer="raw",
                       partitions=args.partitions)
    sink = app.topic(args.output, key_serializer="raw", value_serializer="raw",
                     partitions=args.partitions)
    table = (
        # key_type/value_type=bytes is how a Table gets the "raw" serializer (no *_serializer kwargs)
        app.Table("bare-counts", default=None, partitions=args.partitions,
                  key_type=bytes, value_type=bytes)
        if args.table else None
    )
    stats = {"events": 0, "bad": 0, "batches": 0, "seen": 0}

    async def confirm(batch: list, pending: list) -> None:
        """--pipeline: the batch's outputs are delivered: drop the held reference (the last one acks)."""
        await asyncio.gather(*pending)
        for event in batch:
            if event.ack():
                message = event.message
                app.sensors.on_message_out(message.tp, message.offset, message)

    @app.task
    async def freeze_long_lived() -> None:
        if args.gc_freeze:  # what the worker does once its artifact is loaded
            gc.collect()
            gc.freeze()

    @app.agent(source, concurrency=1)
    async def forward(stream: faust.StreamT) -> None:
        unconfirmed: deque[asyncio.Task] = deque()
        batches = (micro_batches(stream, args.batch, args.within) if args.join_backlog
                   else stream.take_events(args.batch, within=args.within))
        async for batch in batches:
            if args.hold_acks and not args.join_backlog:  # micro_batches holds the reference itself
                # take_events() acks the whole batch in a ``finally`` when the agent asks for
                # the next one -- or when the generator is closed after the agent raised.
                # An extra reference per message keeps a batch that failed from being acked
                # (and so committed); it is dropped only once the batch fully succeeded.
                for event in batch:
                    event.message.incref()
            # what the worker does: one record batch per partition on the aiokafka producer, not Topic.send
            out = (PartitionBatches((await app.maybe_start_producer())._ensure_producer(), args.output)
                   if args.direct_send else None)
            pending = []
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
                    with _as_current(stream, event):
                        count = table.get(user)  # default=None: [] would raise KeyError
                        table[user] = b"%d" % (int(count) + 1 if count is not None else 1)
                if out is not None:
                    await out.append(user, raw)
                else:
                    pending.append(await sink.send(key=user, value=raw))
            if out is not None:
                pending.extend(sent.delivered for sent in await out.send())
            if args.pipeline:
                # the next batch is taken while this one's outputs are in flight (worker/app.py _confirm)
                unconfirmed.append(asyncio.ensure_future(confirm(batch, pending)))
                while unconfirmed and (unconfirmed[0].done() or len(unconfirmed) > args.pipeline):
                    await unconfirmed.popleft()
            else:
                if pending:
                    await asyncio.gather(*pending)  # outputs durable before the batch is acked
                if args.hold_acks or args.join_backlog:
                    for event in batch:
                        event.message.decref()
            stats["events"] += len(batch)
            stats["batches"] += 1

    @app.timer(interval=5.0)
    async def report() -> None:
        logging.getLogger("faust_bare").info("stats %s", stats)

    return app


class _as_current:
    """Make ``event`` the stream's current event (what Table.partition_for_key reads)."""

    def __init__(self, stream: faust.StreamT, event: faust.EventT) -> None:
        self.stream, self.event = stream, event

    def __enter__(self) -> None:
        import weakref

        from faust.streams import _current_event  # the contextvar current_event() reads

        self._token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc: object) -> None:
        from faust.streams import _current_event

        _current_event.reset(self._token)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", default="bench-bare")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--table", action="store_true", help="also write a per-user table value")
    parser.add_argument("--store", default="memory://", help="memory:// or rocksdb://")
    parser.add_argument("--datadir", default=None)
    parser.add_argument("--batch", type=int, default=500, help="take_events() max batch size")
    parser.add_argument("--within", type=float, default=0.02, help="take_events() timeout, s")
    parser.add_argument("--join-backlog", action="store_true",
                        help="take batches as the worker does: worker/micro_batches.py joins takes while behind")
    parser.add_argument("--linger", type=float, default=0.005, help="producer linger, s")
    parser.add_argument("--max-batch-bytes", type=int, default=16384,
                        help="producer_max_batch_size (Faust's default 16384; the worker uses 256 KiB)")
    parser.add_argument("--session-timeout", type=float, default=6.0,
                        help="consumer group session timeout, s (Kafka refuses less than 6 by default)")
    parser.add_argument("--no-consistency-check", action="store_true",
                        help="recovery_consistency_check=False")
    parser.add_argument("--hold-acks", action="store_true",
                        help="a batch that raised is never acked (at-least-once on agent errors)")
    parser.add_argument("--crash-app", action="store_true",
                        help="agent_supervisor=CrashingSupervisor: an agent error stops the worker")
    parser.add_argument("--fail-at", type=int, default=0,
                        help="experiment: raise once while processing the Nth event")
    parser.add_argument("--direct-send", action="store_true",
                        help="outputs as one record batch per partition on the aiokafka producer (as the "
                             "worker does, worker/record_batches.py), not Topic.send")
    parser.add_argument("--pipeline", type=int, default=0, metavar="N",
                        help="confirm a batch's outputs in the background, at most N batches in flight "
                             "(as the worker does; needs --hold-acks); 0: wait for them before the next batch")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() everything alive at start (as the worker does)")
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--web-port", type=int, default=0, help="0: no web server")
    parser.add_argument("--loglevel", default="warning")
    args = parser.parse_args(argv)
    if args.pipeline and not args.hold_acks:
        parser.error("--pipeline needs --hold-acks (the held reference is what _confirm releases)")
    if args.datadir is None:
        args.datadir = tempfile.mkdtemp(prefix="faust-bare-")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    app = build_app(args)
    Path(args.datadir).mkdir(parents=True, exist_ok=True)
    # Programmatic start (what `faust worker` does): signals handled, exits via sys.exit.
    worker = faust.Worker(app, loglevel=args.loglevel, redirect_stdouts=False)
    # At loglevel >= WARN the Worker's terminal spinner sets the *root logger* to DEBUG
    # (faust/worker.py _setup_spinner_handler), so every aiokafka/faust debug() call builds
    # a LogRecord: ~10% of the CPU per event here. No spinner, no DEBUG root.
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    sys.exit(main())
