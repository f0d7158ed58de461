"""The `ecseq` command: one parser assembled from each package's subcommands.

It lives outside the core so that `ecseq/` never imports the Kafka-facing packages. Every
user-facing failure (bad path, column, value, refused artifact, busy store, broker problem)
prints one `ecseq: error:` line and exits non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from compression_builder import cli as builder_cli
from demo import cli as demo_cli
from ecseq import cli as core_cli
from ecseq.artifacts import ArtifactError, StoreBusy
from ecseq.errors import DataError
from ecseq_cli.settings import Settings
from kafka_io import cli as kafka_cli
from kafka_io.broker import BrokerError
from worker import cli as worker_cli

EXIT_USAGE = 2
EXIT_BUSY = 75  # EX_TEMPFAIL: another builder holds the store; try again later


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecseq",
                                     description="ECSeq: sequence scoring with compressed relation graphs")
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="default INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    core_cli.add_commands(sub)
    builder_cli.add_commands(sub, settings)
    kafka_cli.add_commands(sub, settings)
    worker_cli.add_commands(sub, settings)
    demo_cli.add_commands(sub, settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except DataError as exc:
        print(f"ecseq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser(settings).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except StoreBusy as exc:
        print(f"ecseq: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (DataError, ArtifactError, BrokerError) as exc:
        print(f"ecseq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ecseq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
