"""`ecseq broker`: the Tansu dev broker in the foreground, for development and the demo."""

from __future__ import annotations

import argparse
import signal
import sys

from ecseq.settings import Settings
from kafka_io.broker import DevBroker
from kafka_io.topics import ensure_topics

TOPIC_FIELDS = ("events_topic", "scores_topic", "labels_topic", "dead_letter_topic", "artifacts_topic")


def add_commands(sub, settings: Settings) -> None:
    broker = sub.add_parser("broker", help="run a Kafka-compatible dev broker (Tansu, memory storage) on loopback")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--partitions", type=int, default=4, help="partitions of the ecseq topics it creates")
    broker.set_defaults(run=cmd_broker, settings=settings)


def cmd_broker(args: argparse.Namespace) -> int:
    dev = DevBroker(port=args.port, host=args.host).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        topics = {getattr(args.settings, field): args.partitions for field in TOPIC_FIELDS}
        ensure_topics(dev.bootstrap, topics, compacted=[args.settings.artifacts_topic])
        print(f"dev broker on {dev.bootstrap} (memory storage: stopping it loses every topic); "
              f"topics: {', '.join(topics)}; Ctrl-C stops it", file=sys.stderr, flush=True)
        dev.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    return 0
