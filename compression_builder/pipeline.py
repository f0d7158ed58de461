"""One rebuild: labelled sequences in, a gated, published artifact (or a reasoned refusal) out.

The encoder is frozen: a rebuild re-embeds the window's sequences with the serving artifact's
encoder (or a freshly trained one, for `ecseq train-encoder`), compresses them, trains the
GNN, and evaluates the candidate on the newest held-out labels against the encoder alone and
against the artifact now serving. Every build leaves a report, published or not.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from compression_builder.gate import GateConfig, check_data, check_quality
from compression_builder.report import (
    REPORT,
    refused_report_dir,
    report_files,
    report_json,
    write_files,
)
from compression_builder.sources import Gathered
from ecseq.artifacts import (
    ArtifactError,
    ArtifactStore,
    LoadedArtifact,
    ModelBundle,
    Published,
)
from ecseq.data.events import LABEL, TS, DataError, EventTable
from ecseq.data.splits import Split, split_by_time
from ecseq.encoders.models import SequenceEncoder, new_encoder
from ecseq.encoders.training import EncoderTrainConfig, embed_rows, train_encoder
from ecseq.evaluation.experiment import training_events
from ecseq.features import FeatureSpec
from ecseq.gnn_training import Labelled
from ecseq.graph import CompressedGraph, normalise
from ecseq.ranking import summarize
from ecseq.relation import RelationConfig, encoder_logits, fit_compressed
from ecseq.scoring import ScoreBatch
from ecseq.stages import StageClock
from ecseq.windows import SequenceWindows

log = logging.getLogger("ecseq.builder")
SCORE_BATCH = 4096


@dataclass(frozen=True)
class BuildConfig:
    relation: RelationConfig = field(default_factory=RelationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    val_fraction: float = 0.1  # GNN early stopping
    holdout_fraction: float = 0.2  # the newest labels: the gate's evaluation
    golden: int = 32  # held-out windows stored with the artifact, re-scored by every loader


@dataclass(frozen=True)
class EncoderConfig:
    """`ecseq train-encoder`: the sequence model and its training."""

    window: int = 50
    backbone: str = "lstm"
    hidden: int = 32
    train: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    seed: int = 0


@dataclass(frozen=True)
class FreshEncoder:
    feature_spec: FeatureSpec
    window: int
    encoder: SequenceEncoder
    info: dict


@dataclass
class BuildOutcome:
    published: Published | None
    refused: list[str]
    report: dict
    report_dir: Path
    stage_seconds: dict[str, float]


def split_for_build(table: EventTable, config: BuildConfig) -> Split:
    """Oldest labels fit, then validation, newest held out: as the model meets data in production."""
    fit = 1.0 - config.val_fraction - config.holdout_fraction
    return split_by_time(table, (fit, config.val_fraction, config.holdout_fraction))


def train_fresh_encoder(gathered: Gathered, build: BuildConfig, config: EncoderConfig,
                        clock: StageClock) -> FreshEncoder:
    """Feature spec and encoder from the window's oldest labels, early-stopped on the next ones."""
    table = gathered.table
    split = split_for_build(table, build)
    labels = table.frame[LABEL].to_numpy()
    if len(split.train) == 0 or len(np.unique(labels[split.train])) < 2 or len(np.unique(labels[split.val])) < 2:
        raise DataError("cannot train an encoder: the training and validation parts each need both labels")
    with clock("encoder"):
        spec = FeatureSpec.fit(table.frame[training_events(table, split.train, config.window)],
                               table.numeric, table.categorical)
        windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, config.window)
        torch.manual_seed(config.seed)
        encoder = new_encoder(config.backbone, spec.dim, config.hidden, config.window)
        trained = train_encoder(encoder, windows, split.train, labels[split.train], split.val, labels[split.val],
                                replace(config.train, seed=config.seed))
    log.info("encoder trained: best validation AUC %.4f at epoch %d in %.1f s",
             trained.best_val_auc, trained.best_epoch, trained.seconds)
    return FreshEncoder(spec, config.window, encoder.eval(),
                        {"best_val_auc": trained.best_val_auc, "best_epoch": trained.best_epoch,
                         "epochs": len(trained.history), "seconds": trained.seconds, "backbone": config.backbone})


def rebuild(store: ArtifactStore, gathered: Gathered, config: BuildConfig, serving: LoadedArtifact | None,
            serving_problem: str | None = None, clock: StageClock | None = None, fresh: FreshEncoder | None = None,
            force: bool = False) -> BuildOutcome:
    """Build a candidate from `gathered` and publish it if the gate passes (or `force`).

    The candidate uses `fresh`'s encoder if given, else the serving artifact's (then required).
    """
    clock = clock or StageClock()
    if fresh is None and serving is None:
        raise ValueError("a rebuild needs the serving artifact's encoder or a fresh one")
    spec, window, encoder = ((fresh.feature_spec, fresh.window, fresh.encoder) if fresh is not None else
                             (serving.bundle.feature_spec, serving.bundle.window, serving.bundle.encoder))
    table = gathered.table
    split = split_for_build(table, config)
    labels = table.frame[LABEL].to_numpy()
    report = _base_report(gathered, split, labels, serving, serving_problem, fresh, config)
    refused = check_data(len(table.labelled), int(labels[split.train].sum()),
                         set(labels[split.test].astype(int).tolist()), config.gate)
    if refused:  # nothing to train on: no --force can help
        return _refuse(store, refused, report, {}, clock)

    with clock("featurise"):
        windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, window)
    with clock("embed"):
        fit_emb, val_emb, hold_emb = (embed_rows(encoder, windows, rows)
                                      for rows in (split.train, split.val, split.test))
    val = Labelled.of(val_emb, encoder_logits(encoder, val_emb), labels[split.val])
    model = fit_compressed(encoder, fit_emb, labels[split.train].astype(np.int64), val, config.relation)
    for stage, seconds in model.stage_seconds.items():
        clock.add(stage, seconds)

    bundle = ModelBundle(spec, window, encoder, model)
    with clock("evaluate"):
        y = labels[split.test].astype(np.int64)
        candidate = _score(bundle.scorer(), hold_emb)
        scores = {"candidate": candidate.score, "encoder": candidate.encoder_score}
        if serving is not None:
            missing = [c for c in serving.bundle.feature_spec.columns if c not in table.frame.columns]
            if missing:  # a new encoder on new columns: the old artifact cannot score this data
                report["serving"]["problem"] = f"cannot score this data: no column(s) {', '.join(missing)}"
            else:
                scores["serving"] = _serving_scores(serving, hold_emb, fresh is None, table, split.test)
        metrics = {name: summarize(y, s) for name, s in scores.items()}
        metrics["candidate"].update(_neighbour_stats(candidate, hold_emb, model.graph))
        if "serving" in metrics:
            metrics["serving"]["version"] = serving.version
    report["metrics"] = metrics
    report["graph"] = _graph_stats(model.graph)
    refused = check_quality(metrics["candidate"], metrics["encoder"], metrics.get("serving"), config.gate)
    report.update(result="refused" if refused and not force else "published", refused=refused)
    with clock("report"):
        files = report_files(report, y, scores, model.graph)
    if refused and not force:
        return _refuse(store, refused, report, files, clock)

    report["stage_seconds"] = dict(clock.seconds)
    with clock("publish"):
        published = store.publish(
            bundle, windows.gather(split.test[:config.golden]).numpy(),
            parent=store.current(), encoder_version=None if fresh is not None else serving.manifest["encoder_version"],
            data=report["data"], metrics={"holdout": metrics, "gate": report["gate"], "forced": bool(refused)},
            extra_files={REPORT: report_json(report), **files})
    report.update(version=published.version, stage_seconds=clock.seconds)
    log.info("build published %s: %s %.4f (encoder %.4f, serving %s) from %d labelled sequences in %.1f s",
             published.version, config.gate.metric, metrics["candidate"][config.gate.metric],
             metrics["encoder"][config.gate.metric],
             f"{metrics['serving'][config.gate.metric]:.4f}" if "serving" in metrics else "none",
             len(table.labelled), sum(clock.seconds.values()))
    return BuildOutcome(published, refused, report, published.path, dict(clock.seconds))


def load_serving(store: ArtifactStore) -> tuple[LoadedArtifact | None, str | None]:
    """The artifact now serving, or why there is none (a broken one is replaced by a good build)."""
    if store.current() is None:
        return None, "no current version"
    try:
        return store.load(), None
    except ArtifactError as err:
        log.warning("serving artifact refused, building without it: %s", err)
        return None, str(err)


def _score(scorer, embeddings: np.ndarray) -> ScoreBatch:
    parts = [scorer.score_embeddings(torch.from_numpy(embeddings[i:i + SCORE_BATCH]))
             for i in range(0, len(embeddings), SCORE_BATCH)]
    return ScoreBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in ScoreBatch.__dataclass_fields__))


def _serving_scores(serving: LoadedArtifact, embeddings: np.ndarray, same_encoder: bool, table: EventTable,
                    rows: np.ndarray) -> np.ndarray:
    """The serving artifact's scores on the held-out rows, through its own encoder if it differs."""
    if same_encoder:
        return _score(serving.scorer, embeddings).score
    bundle = serving.bundle
    windows = SequenceWindows.build(bundle.feature_spec.transform(table.frame), table.user_start, bundle.window)
    return _score(serving.scorer, embed_rows(bundle.encoder, windows, rows)).score


def _neighbour_stats(batch: ScoreBatch, embeddings: np.ndarray, graph: CompressedGraph) -> dict:
    """How held-out events attach: with a threshold, drift shows as events with no neighbour at all;
    with pure top-k, as a falling cosine similarity to the nearest node."""
    best = (normalise(embeddings) @ normalise(graph.centroids).T).max(axis=1)
    return {"zero_neighbour_rate": float((batch.neighbours == 0).mean()),
            "mean_neighbours": float(batch.neighbours.mean()), "best_similarity": _quantiles(best)}


def _graph_stats(graph: CompressedGraph) -> dict:
    purity = np.maximum(graph.positive_rate, 1.0 - graph.positive_rate)
    return {"nodes": graph.k, "size": _quantiles(graph.size), "purity": _quantiles(purity),
            "positive_nodes": int((graph.positive_rate > 0.5).sum())}


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.0, 0.5, 0.9, 1.0])
    return {"min": float(q[0]), "median": float(q[1]), "p90": float(q[2]), "max": float(q[3])}


def _iso(seconds: float) -> str:
    """Fixed-width UTC time, so reports can compare them as text."""
    return datetime.fromtimestamp(float(seconds), tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _part(table: EventTable, labels: np.ndarray, rows: np.ndarray) -> dict:
    ts = table.frame[TS].to_numpy()[rows]
    return {"rows": len(rows), "positives": int(labels[rows].sum()),
            "from": _iso(ts.min()) if len(rows) else None, "to": _iso(ts.max()) if len(rows) else None}


def _base_report(gathered: Gathered, split: Split, labels: np.ndarray, serving: LoadedArtifact | None,
                 serving_problem: str | None, fresh: FreshEncoder | None, config: BuildConfig) -> dict:
    table = gathered.table
    ts = table.frame[TS].to_numpy()
    holdout = _part(table, labels, split.test)
    serving_fit_to = serving.manifest.get("data", {}).get("fit", {}).get("to") if serving is not None else None
    return {
        "result": None, "version": None, "refused": [],
        "created_at": _iso(time.time()),
        "source": gathered.source,
        "data": {"source": gathered.source, "events": len(table.frame), "users": int(table.frame["user_id"].nunique()),
                 "labelled": len(table.labelled), "from": _iso(ts.min()), "to": _iso(ts.max()),
                 "fit": _part(table, labels, split.train), "val": _part(table, labels, split.val), "holdout": holdout,
                 "skipped": {kind: dict(c) for kind, c in gathered.skipped.items()}},
        "serving": {"version": serving.version if serving is not None else None, "problem": serving_problem,
                    # a serving artifact trained on these labels looks better than it is: the gate is then strict
                    "saw_holdout": bool(serving_fit_to and holdout["from"] and serving_fit_to >= holdout["from"])},
        "encoder": {"fresh": fresh is not None, **(fresh.info if fresh is not None else {})},
        "gate": asdict(config.gate),
        "config": {"relation": _jsonable(asdict(config.relation)), "val_fraction": config.val_fraction,
                   "holdout_fraction": config.holdout_fraction},
    }


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _refuse(store: ArtifactStore, reasons: list[str], report: dict, files: dict[str, bytes],
            clock: StageClock) -> BuildOutcome:
    report.update(result="refused", refused=reasons, stage_seconds=clock.seconds)
    out = refused_report_dir(store.root, keep=store.keep)
    write_files(out, report, files)
    log.warning("build refused (%s); report in %s", ", ".join(reasons), out)
    return BuildOutcome(None, reasons, report, out, dict(clock.seconds))
