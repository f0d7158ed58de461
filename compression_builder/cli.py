"""`ecseq train-encoder`, `ecseq build`, `ecseq builder` and `ecseq artifacts ...`.

Exit codes: 0 done (published), 2 user error, 3 build refused by the quality gate,
75 another builder holds the store (try later).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from compression_builder.collector import Collector
from compression_builder.follower import Follower
from compression_builder.gate import GATE_METRICS, GateConfig
from compression_builder.metrics import BuilderMetrics
from compression_builder.pipeline import (
    BuildConfig,
    BuildOutcome,
    EncoderConfig,
    load_serving,
    train_fresh_encoder,
)
from compression_builder.report import REFUSED_DIR, REPORT
from compression_builder.service import (
    AnnounceError,
    BuildJob,
    follow,
    kafka_announcer,
    open_window_store,
    run_every,
)
from compression_builder.settings import BuilderSettings
from compression_builder.sources import Gathered, gather_frame, read_event_file, read_kafka, read_window_store
from compression_builder.window_store import Caps, WindowStoreError
from ecseq.artifacts import ArtifactError, ArtifactStore, LoadedArtifact, ModelBundle
from ecseq.artifacts.safe_json import parse_json
from ecseq.cli import (
    add_encoder_args,
    add_relation_args,
    check_positive,
    encoder_train_config,
    relation_config,
    set_threads,
)
from ecseq.data.builtin import DATASETS, load_dataset
from ecseq.data.events import DataError
from ecseq.decoding import EventSchema
from ecseq.settings import parse_duration, variable

if TYPE_CHECKING:
    from kafka_io.client import KafkaClientConfig

EXIT_REFUSED = 3


def add_commands(sub, settings: BuilderSettings) -> None:
    te = sub.add_parser("train-encoder", help="train the feature spec and encoder on an event table; "
                                              "publish a complete artifact built from the same data")
    _add_file_source(te)
    te.add_argument("--window", type=int, default=50, help="events per sequence window (default 50)")
    add_encoder_args(te)
    te.add_argument("--seed", type=int, default=0)
    _add_build_args(te, settings, since=None)
    te.set_defaults(run=cmd_train_encoder, settings=settings)

    build = sub.add_parser("build", help="one rebuild of the compressed graph with the serving encoder")
    source = _add_file_source(build)
    source.add_argument("--kafka", metavar="BOOTSTRAP", help="read events + late labels from this Kafka")
    _add_build_args(build, settings, since=None)
    _add_topic_args(build, settings)
    build.set_defaults(run=cmd_build, settings=settings)

    service = sub.add_parser("builder", help="rebuild from Kafka on a schedule (a service), with /metrics")
    service.add_argument("--kafka", metavar="BOOTSTRAP", default=settings.broker,
                         help=f"Kafka bootstrap servers (default ${variable('broker')} or {settings.broker})")
    service.add_argument("--every", default=settings.build_every, help="time between builds, e.g. 15m (default "
                         f"${variable('build_every')} or {settings.build_every})")
    service.add_argument("--metrics-port", type=int, default=settings.builder_metrics_port,
                         help="port of the /metrics endpoint (0: none)")
    service.add_argument("--metrics-host", default=settings.metrics_host, help="address /metrics binds")
    service.add_argument("--data-dir", default=settings.builder_data_dir,
                         help=f"where the window store lives (default ${variable('builder_data_dir')} or "
                              f"{settings.builder_data_dir})")
    _add_build_args(service, settings, since=settings.build_since)
    _add_topic_args(service, settings)
    service.set_defaults(run=cmd_builder, settings=settings)

    artifacts = sub.add_parser("artifacts", help="list, show, verify or roll back artifact versions")
    actions = artifacts.add_subparsers(dest="action", required=True)
    for name, helptext, run in (("list", "versions, newest last; * marks CURRENT", cmd_list),
                                ("show", "the manifest of a version (default: CURRENT)", cmd_show),
                                ("verify", "check every file, shape and golden score of a version", cmd_verify),
                                ("rollback", "point CURRENT at an older good version (default: the previous)",
                                 cmd_rollback)):
        action = actions.add_parser(name, help=helptext)
        _add_store_args(action, settings)
        if name != "list":
            action.add_argument("version", nargs="?", help="e.g. v000003")
        if name == "rollback":
            action.add_argument("--announce", metavar="BOOTSTRAP", help="announce the version on this Kafka")
            action.add_argument("--artifacts-topic", default=settings.artifacts_topic)
        action.set_defaults(run=run, settings=settings)


def _add_store_args(p: argparse.ArgumentParser, settings: BuilderSettings) -> None:
    p.add_argument("--store", type=Path, default=Path(settings.store),
                   help=f"artifact store directory (default ${variable('store')} or {settings.store})")
    p.add_argument("--keep", type=int, default=settings.keep_versions, help="versions kept (plus CURRENT)")


def _add_file_source(p: argparse.ArgumentParser):
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="event table (CSV or Parquet) in the ecseq event format")
    source.add_argument("--dataset", choices=DATASETS, help="a built-in data set")
    p.add_argument("--categorical", type=lambda t: tuple(c.strip() for c in t.split(",") if c.strip()), default=(),
                   metavar="COLS", help="comma-separated categorical feature columns (train-encoder)")
    return source


def _add_build_args(p: argparse.ArgumentParser, settings: BuilderSettings, since: str | None) -> None:
    _add_store_args(p, settings)
    p.add_argument("--since", default=since, help="use the events of this much event time before the newest, "
                                                  "e.g. 30d (default: " + (since or "all") + ")")
    p.add_argument("--gate-metric", choices=GATE_METRICS, default=settings.gate_metric)
    p.add_argument("--tolerance", type=float, default=settings.gate_tolerance,
                   help="publish if the candidate is at most this far below the encoder and the serving artifact")
    p.add_argument("--min-labelled", type=int, default=GateConfig().min_labelled)
    p.add_argument("--force", action="store_true", help="publish even if the quality gate refuses")
    p.add_argument("--wait", action="store_true", help="wait for another builder instead of exiting")
    p.add_argument("--announce", metavar="BOOTSTRAP", help="announce a published version on this Kafka")
    p.add_argument("--artifacts-topic", default=settings.artifacts_topic, help="where announcements go")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: its default); faiss uses 1")
    add_relation_args(p)


def _add_topic_args(p: argparse.ArgumentParser, settings: BuilderSettings) -> None:
    p.add_argument("--events-topic", default=settings.events_topic)
    p.add_argument("--labels-topic", default=settings.labels_topic)


def _build_config(args: argparse.Namespace) -> BuildConfig:
    try:
        gate = GateConfig(metric=args.gate_metric, tolerance=args.tolerance, min_labelled=args.min_labelled)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return BuildConfig(relation=relation_config(args), gate=gate)


def _store(args: argparse.Namespace) -> ArtifactStore:
    check_positive(args, "keep")
    try:
        return ArtifactStore(args.store, keep=args.keep)
    except OSError as exc:
        raise DataError(f"cannot use artifact store {args.store}: {exc.strerror or exc}") from None


def _since(args: argparse.Namespace) -> float | None:
    return parse_duration(args.since) if args.since else None


def _columns(bundle: ModelBundle | None, categorical: tuple[str, ...]) -> tuple[list[str] | None, tuple[str, ...]]:
    """Numeric and categorical columns: the serving model's, or (new encoder) inferred / as given."""
    if bundle is None:
        return None, categorical
    schema = EventSchema.from_spec(bundle.feature_spec)
    return list(schema.numeric), schema.categorical


def _gather_file(args: argparse.Namespace, bundle: ModelBundle | None):
    spec = None if bundle is None else bundle.feature_spec
    numeric, categorical = _columns(bundle, args.categorical)
    if args.events is not None:
        return read_event_file(args.events, categorical, numeric, _since(args))
    dataset = load_dataset(args.dataset, seed=0)
    categorical = categorical if spec is not None else dataset.categorical + args.categorical
    return gather_frame(dataset.frame, categorical, numeric, _since(args), f"data set {args.dataset}")


def _kafka(args: argparse.Namespace, bootstrap: str) -> KafkaClientConfig:
    """The one Kafka client configuration (ECSEQ_KAFKA_* settings), for the servers a flag named."""
    from kafka_io.client import KafkaClientConfig

    return KafkaClientConfig.from_settings(args.settings, bootstrap=bootstrap)


def _replication(args: argparse.Namespace) -> tuple[int, int]:
    return args.settings.replication_factor, args.settings.min_insync_replicas


def _caps(settings: BuilderSettings) -> Caps:
    return Caps(negatives=settings.window_negatives, positives=settings.window_positives)


def _gather_kafka(args: argparse.Namespace, bundle: ModelBundle):
    """A one-off build from Kafka: the topics from `now - since`, through a window store of its own."""
    return read_kafka(_kafka(args, args.kafka), args.events_topic, args.labels_topic,
                      EventSchema.from_spec(bundle.feature_spec), bundle.window, _since(args),
                      parse_duration(args.settings.label_horizon), _caps(args.settings))


def _job(args: argparse.Namespace, gather, metrics: BuilderMetrics | None = None) -> BuildJob:
    set_threads(args.threads)
    announce = args.announce or getattr(args, "kafka", None)
    return BuildJob(_store(args), partial(gather, args), _build_config(args), metrics,
                    kafka_announcer(_kafka(args, announce), args.artifacts_topic, _replication(args))
                    if announce else None, wait_for_lock=args.wait, force=args.force)


def _finish(outcome: BuildOutcome, metric: str) -> int:
    metrics = outcome.report.get("metrics", {})
    scores = ", ".join(f"{name} {values[metric]:.4f}" for name, values in metrics.items())
    scores = f" ({metric}: {scores})" if scores else ""
    if outcome.published is not None:
        forced = " despite " + ", ".join(outcome.refused) + " (--force)" if outcome.refused else ""
        print(f"published {outcome.published.version}{forced}{scores}; report: {outcome.report_dir / REPORT}")
        return 0
    print(f"refused: {', '.join(outcome.refused)}{scores}; report: {outcome.report_dir / REPORT}")
    return EXIT_REFUSED


def cmd_train_encoder(args: argparse.Namespace) -> int:
    check_positive(args, "window")
    encoder = EncoderConfig(window=args.window, backbone=args.backbone, hidden=args.hidden,
                            train=encoder_train_config(args), seed=args.seed)
    job = _job(args, _gather_file)
    outcome = job.run(fresh=lambda gathered, clock: train_fresh_encoder(gathered, job.config, encoder, clock))
    return _finish(outcome, job.config.gate.metric)


def cmd_build(args: argparse.Namespace) -> int:
    job = _job(args, _gather_kafka if args.kafka else _gather_file)
    return _finish(job.run(), job.config.gate.metric)


def cmd_builder(args: argparse.Namespace) -> int:
    """Follow the topics into the window store (a thread) and rebuild from it every `--every`."""
    metrics = BuilderMetrics()
    every, since = parse_duration(args.every), _since(args)
    if args.metrics_port:
        try:
            port = metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as exc:
            raise DataError(f"cannot serve /metrics on {args.metrics_host}:{args.metrics_port}: "
                            f"{exc.strerror or exc}") from None
        print(f"builder metrics on http://{args.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # finish the build in progress, flush the follower, then exit
    serving = _first_artifact(_store(args), stop)
    if serving is None:
        return 0
    settings: BuilderSettings = args.settings
    schema, window = EventSchema.from_spec(serving.bundle.feature_spec), serving.bundle.window
    try:
        windows = open_window_store(Path(args.data_dir) / "window-store", schema, window, _caps(settings))
    except WindowStoreError as exc:
        raise DataError(str(exc)) from None
    kafka, caught_up = _kafka(args, args.kafka), threading.Event()

    def follower() -> Follower:
        collector = Collector(windows, schema, window, int(parse_duration(settings.label_horizon) * 1000), since,
                              settings.max_event_bytes)
        return Follower(kafka, args.events_topic, args.labels_topic, collector, settings.builder_group, since,
                        parse_duration(settings.follow_flush_every), metrics, caught_up)

    def gather(_: argparse.Namespace, bundle: ModelBundle) -> Gathered:
        while not caught_up.wait(1.0):  # the first build waits for the store to hold the topics' window
            if stop.is_set():
                raise DataError("stopping before the window store caught up")
        return read_window_store(windows, EventSchema.from_spec(bundle.feature_spec), bundle.window, since,
                                 f"window store {windows.root}")

    following = threading.Thread(target=follow, args=(follower, stop), name="follower")
    following.start()
    try:
        run_every(_job(args, gather, metrics), every, stop)
    finally:
        stop.set()
        following.join()
        windows.close()
    return 0


def _first_artifact(store: ArtifactStore, stop: threading.Event) -> LoadedArtifact | None:
    """The serving artifact, waited for (the follower needs its columns and window); None if stopped."""
    said = False
    while not stop.is_set():
        serving, problem = load_serving(store)
        if serving is not None:
            return serving
        if not said:
            print(f"builder: waiting for a loadable artifact in {store.root} ({problem}); run `ecseq train-encoder`",
                  file=sys.stderr, flush=True)
            said = True
        stop.wait(5.0)
    return None


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    current, broken = _current(store)
    print(f"{'':2}{'version':<10}{'created':<26}{'parent':<10}{'encoder':<10}{'AP':>8}  status")
    for version in store.versions():
        status, manifest = _status(store, version)
        ap = _holdout_ap(manifest)
        print(f"{'*' if version == current else '':2}{version:<10}{manifest.get('created_at', '?')!s:<26}"
              f"{manifest.get('parent') or '-'!s:<10}{manifest.get('encoder_version', '?')!s:<10}"
              f"{'-' if ap is None else format(ap, '.4f'):>8}  {status}")
    if not store.versions():
        print(f"(no versions in {store.root})")
    if broken:
        print(f"CURRENT is broken: {broken}")
    refused = sorted((store.root / REFUSED_DIR).glob(f"*/{REPORT}"))
    if refused:
        try:
            last = parse_json(refused[-1].read_bytes())
            when, reasons = last["created_at"], ", ".join(map(str, last["refused"]))
        except (OSError, ValueError, KeyError, TypeError):
            when, reasons = "?", "its report is unreadable"
        print(f"last refused build: {when} ({reasons}); {len(refused)} report(s) under {store.root / REFUSED_DIR}")
    return 0


def _current(store: ArtifactStore) -> tuple[str | None, str | None]:
    """(CURRENT's version, None), or (None, why it is broken)."""
    try:
        return store.current(), None
    except ArtifactError as exc:
        return None, str(exc)


def _holdout_ap(manifest: dict) -> float | None:
    """The candidate's held-out AP the builder records, if the manifest has it as a number."""
    ap = manifest.get("metrics")
    for key in ("holdout", "candidate", "ap"):
        ap = ap.get(key) if isinstance(ap, dict) else None
    return float(ap) if isinstance(ap, int | float) and not isinstance(ap, bool) else None


def _status(store: ArtifactStore, version: str) -> tuple[str, dict]:
    """'ok' or why the version is refused, and its manifest if it can be read at all."""
    try:
        manifest = store.manifest(version)
    except ArtifactError as exc:
        return f"REFUSED: {exc.reason}", {}
    try:
        store.verify(version)
    except ArtifactError as exc:
        return f"REFUSED: {exc.reason}", manifest
    return "ok", manifest


def _version(store: ArtifactStore, version: str | None) -> str:
    chosen = version or store.current()
    if chosen is None:
        raise DataError(f"artifact store {store.root} has no CURRENT version; name one")
    return chosen


def cmd_show(args: argparse.Namespace) -> int:
    store = _store(args)
    print(json.dumps(store.manifest(_version(store, args.version)), indent=1))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    loaded = store.verify(_version(store, args.version))
    print(f"{loaded.version} ok: {len(loaded.manifest['files'])} files checked, "
          f"{loaded.manifest['model']['nodes']} nodes, golden scores match")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = _store(args)
    current, broken = _current(store)
    before = current or ("a broken CURRENT" if broken else "none")
    loaded: LoadedArtifact = store.rollback(args.version)
    print(f"CURRENT -> {loaded.version} (was {before})")
    if args.announce:
        try:
            announce = kafka_announcer(_kafka(args, args.announce), args.artifacts_topic, _replication(args))
            announce(loaded.announcement())
        except AnnounceError as exc:  # CURRENT has moved; workers polling it will still follow
            print(f"ecseq: warning: {exc}", file=sys.stderr)
            return 1
    return 0
