"""The core's `ecseq` subcommands (offline evaluation) and the argument helpers the others share.

The `ecseq` command itself is assembled in `ecseq_cli`, outside the core, so the core never
imports the Kafka-facing packages. User errors raise DataError (one line, exit 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import faiss
import torch

from ecseq.compression import METHODS as COMPRESSIONS
from ecseq.data.builtin import DATASETS, load_dataset
from ecseq.data.events import DataError, EventTable, read_events
from ecseq.data.splits import (
    Split,
    check_trainable,
    read_split_file,
    split_by_time,
    split_by_user,
)
from ecseq.encoders.models import BACKBONES
from ecseq.encoders.training import EncoderTrainConfig
from ecseq.evaluation.experiment import (
    METHODS,
    SCENARIOS,
    ExperimentConfig,
    run_experiment,
)
from ecseq.evaluation.report import format_table, write_report
from ecseq.gnn import LAYERS
from ecseq.gnn_training import GNNTrainConfig
from ecseq.graph import Attachment
from ecseq.relation import CENTROID_MODES, RelationConfig


def _csv_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _methods(text: str) -> tuple[str, ...]:
    chosen = _csv_list(text)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return chosen


def _add_data_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--events", type=Path, help="event table (CSV or Parquet) in the ecseq event format")
    source.add_argument("--dataset", choices=DATASETS, default="synthetic",
                        help="a built-in data set (default: synthetic)")
    p.add_argument("--categorical", type=_csv_list, default=(), metavar="COLS",
                   help="comma-separated feature columns to treat as categorical")
    p.add_argument("--window", type=int, default=50, help="events per sequence window (default 50)")
    p.add_argument("--split", choices=("time", "user"), default="time", help="split labelled events by time or user")
    p.add_argument("--split-file", type=Path, help="CSV user_id,split (train/val/test) made elsewhere")


def add_encoder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", choices=BACKBONES, default="lstm")
    p.add_argument("--hidden", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--epochs", type=int, default=EncoderTrainConfig().epochs,
                   help="max encoder epochs (early stopping on val AUC)")
    p.add_argument("--lr", type=float, default=EncoderTrainConfig().lr, help="encoder learning rate")


def add_relation_args(p: argparse.ArgumentParser) -> None:
    """Flags of the compressed graph and GNN, shared by evaluate and the builder commands."""
    p.add_argument("--compression", choices=COMPRESSIONS, default="balanced_kmeans")
    p.add_argument("--k", type=int, default=500, help="compressed nodes")
    p.add_argument("--positive-k", type=int, default=100, help="nodes for positives (balanced methods)")
    p.add_argument("--layer", choices=LAYERS, default="sage_mean", help="GNN layer")
    p.add_argument("--epsilon", type=float, default=RelationConfig().attachment.epsilon,
                   help="attach where cosine similarity > epsilon (-1: no threshold)")
    p.add_argument("--top-k", type=int, default=RelationConfig().attachment.top_k,
                   help="keep only the top-k most similar nodes")
    p.add_argument("--centroids", choices=CENTROID_MODES, default=RelationConfig().centroids,
                   help="build centroids from data disjoint from the GNN's batches, or shared")
    p.add_argument("--align-weight", type=float, default=GNNTrainConfig().align_weight,
                   help="weight of the real/compressed alignment loss (0: off)")
    p.add_argument("--no-label-rate", action="store_true", help="hide node positive rates from the GNN")
    p.add_argument("--no-residual", action="store_true", help="GNN scores from scratch, not on top of the encoder")
    p.add_argument("--gnn-epochs", type=int, default=GNNTrainConfig().epochs)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name, 1) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1")


def encoder_train_config(args: argparse.Namespace) -> EncoderTrainConfig:
    check_positive(args, "hidden", "epochs")
    return EncoderTrainConfig(epochs=args.epochs, lr=args.lr, progress=not args.quiet)


def relation_config(args: argparse.Namespace) -> RelationConfig:
    check_positive(args, "k", "positive_k", "gnn_epochs")
    try:
        attachment = Attachment(epsilon=args.epsilon, top_k=args.top_k)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    return RelationConfig(
        compression=args.compression, k=args.k, positive_k=args.positive_k, layer=args.layer,
        attachment=attachment, residual=not args.no_residual, use_label_rate=not args.no_label_rate,
        centroids=args.centroids,
        gnn=GNNTrainConfig(epochs=args.gnn_epochs, align_weight=args.align_weight, progress=not args.quiet))


def set_threads(threads: int) -> None:
    """torch threads (0: its default) and faiss threads (0: one; it fights torch for cores, bench/)."""
    if threads > 0:
        torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads or 1)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("evaluate", help="train and compare encoder, head, ECSeq and full graph offline")
    _add_data_args(ev)
    add_encoder_args(ev)
    add_relation_args(ev)
    ev.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="output directory")
    ev.add_argument("--scenario", choices=SCENARIOS, default="standard")
    ev.add_argument("--methods", type=_methods, default=METHODS, help="comma-separated subset of " + ",".join(METHODS))
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--repeats", type=int, default=1, help="runs with seeds seed..seed+N-1 (mean and std)")
    ev.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: torch default, faiss 1)")
    ev.set_defaults(run=cmd_evaluate)


def load_table(args: argparse.Namespace) -> tuple[str, EventTable]:
    if args.events is not None:
        return str(args.events), read_events(args.events, args.categorical)
    return args.dataset, load_dataset(args.dataset, seed=0).events(args.categorical)


def make_split(args: argparse.Namespace, table: EventTable, seed: int) -> Split:
    if args.split_file is not None:
        split = read_split_file(table, args.split_file)
    elif args.split == "user":
        split = split_by_user(table, seed=seed)
    else:
        split = split_by_time(table)
    check_trainable(table, split)
    return split


def experiment_config(args: argparse.Namespace) -> ExperimentConfig:
    check_positive(args, "window", "repeats")
    return ExperimentConfig(window=args.window, scenario=args.scenario, backbone=args.backbone, hidden=args.hidden,
                            encoder=encoder_train_config(args), relation=relation_config(args), methods=args.methods)


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = experiment_config(args)
    set_threads(args.threads)
    name, table = load_table(args)
    dataset = {"name": name, **table.describe()}
    print(f"data: {name}: {dataset['users']} users, {dataset['events']} events, {dataset['labelled']} labelled, "
          f"positive rate {dataset['positive_rate']:.4f}", file=sys.stderr)
    runs = []
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        split = make_split(args, table, seed)
        print(f"run {repeat + 1}/{args.repeats} (seed {seed}, scenario {config.scenario}): "
              f"train {len(split.train)}, val {len(split.val)}, test {len(split.test)}", file=sys.stderr)
        runs.append(run_experiment(table, split, config, seed))
    split_name = str(args.split_file) if args.split_file is not None else args.split
    report = write_report(args.out, dataset, {**_jsonable(dataclasses.asdict(config)), "split": split_name}, runs)
    print(format_table(report["methods"]))
    print(f"wrote {args.out / 'metrics.json'}, feature_spec.json and plots", file=sys.stderr)
    return 0


def _jsonable(value: object) -> Any:
    return json.loads(json.dumps(value, default=str))


