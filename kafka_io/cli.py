"""`ecseq broker`: Apache Kafka on loopback in the foreground, one node or a cluster, optionally SASL_SSL."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from kafka_io.broker import KafkaCluster
from kafka_io.jars import kafka_version
from kafka_io.settings import KafkaSettings
from kafka_io.topics import ensure_topics

TOPIC_FIELDS = ("events_topic", "scores_topic", "labels_topic", "dead_letter_topic", "artifacts_topic")


def add_commands(sub, settings: KafkaSettings) -> None:
    broker = sub.add_parser("broker", help=f"run Apache Kafka {kafka_version()} (KRaft) on loopback in the foreground")
    broker.add_argument("--port", type=int, default=9092, help="client port of the first node (0: any free port)")
    broker.add_argument("--brokers", type=int, default=1, help="nodes in the cluster (each a broker and a controller)")
    broker.add_argument("--sasl-ssl", type=Path, metavar="DIR",
                        help="also listen for SASL_SSL clients; writes a fresh CA, certificate and SCRAM user to DIR")
    broker.add_argument("--data-dir", type=Path, help="keep the nodes' storage here (default: a temporary folder)")
    broker.add_argument("--partitions", type=int, default=4, help="partitions of the ecseq topics it creates")
    broker.set_defaults(run=cmd_broker, settings=settings)


def cmd_broker(args: argparse.Namespace) -> int:
    # SIGTERM stops every node like Ctrl-C; each node also dies with this process (PR_SET_PDEATHSIG)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = KafkaCluster(nodes=args.brokers, port=args.port, sasl_ssl=args.sasl_ssl, workdir=args.data_dir)
    try:
        cluster.start()
        settings: KafkaSettings = args.settings
        topics = {getattr(settings, field): args.partitions for field in TOPIC_FIELDS}
        ensure_topics(cluster.bootstrap, topics, compacted=[settings.artifacts_topic],
                      replication_factor=settings.replication_factor,
                      min_insync_replicas=settings.min_insync_replicas)
        print(cluster.bootstrap, flush=True)
        if cluster.material is not None:
            print(f"# SASL_SSL clients (also in {cluster.material.folder / 'client.env'}):", flush=True)
            for name, value in cluster.client_settings().items():
                print(f"{name}={value}", flush=True)
        print(f"apache kafka {kafka_version()}: {args.brokers} node(s), up in {cluster.startup_seconds:.1f}s; "
              f"topics {', '.join(topics)}; Ctrl-C stops it", file=sys.stderr, flush=True)
        status = cluster.wait()
        print(f"ecseq: error: a kafka node exited with status {status}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # a second Ctrl-C / SIGTERM (`timeout` signals the process and its group) must not cut the
        # stop short: that left the nodes' temporary storage behind and exited 130
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            cluster.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
