"""One offline evaluation run: encoder alone, retrained head, ECSeq and the full graph, tested on
the same held-out events in the same process.

Scenario "standard" fits everything on the training split. Scenario "refresh" is how the product
is used: the encoder is trained on the oldest half of the training window only and then frozen,
while the head, the compressed graph and the GNN are refitted on the newer half with its fresh
labels, and all are tested on the latest period.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ecseq.data.events import EventTable
from ecseq.data.splits import Split, split_rows_by_time
from ecseq.encoders.models import SequenceEncoder, new_encoder
from ecseq.encoders.training import EncoderTrainConfig, embed_rows, train_encoder
from ecseq.evaluation.head import LogisticHead
from ecseq.features import FeatureSpec
from ecseq.full_graph import IndexAttacher
from ecseq.gnn import RelationModel
from ecseq.gnn_training import Labelled
from ecseq.graph import CompressedGraph
from ecseq.ranking import summarize
from ecseq.relation import (
    RelationConfig,
    encoder_logits,
    fit_compressed,
    fit_full_graph,
)
from ecseq.scoring import Scorer
from ecseq.windows import SequenceWindows

METHODS = ("encoder", "head", "ecseq", "full_graph")
# fit_compressed or fit_full_graph: (encoder, embeddings, labels, validation set, config) -> fitted model
RelationFit = Callable[[SequenceEncoder, np.ndarray, np.ndarray, Labelled, RelationConfig], RelationModel]
SCENARIOS = ("standard", "refresh")
TIMING_BATCH = 256


@dataclass(frozen=True)
class ExperimentConfig:
    window: int = 50
    scenario: str = "standard"
    backbone: str = "lstm"
    hidden: int = 32
    encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)
    relation: RelationConfig = field(default_factory=RelationConfig)
    methods: tuple[str, ...] = METHODS


@dataclass
class MethodResult:
    scores: np.ndarray  # test scores, aligned with RunResult.y_test
    fit_seconds: float
    score_seconds_per_event: float
    extra: dict = field(default_factory=dict)
    graph: CompressedGraph | None = None  # the relation methods' graph, for the report's plots

    def metrics(self, y: np.ndarray) -> dict[str, float]:
        return {**summarize(y, self.scores), "fit_seconds": self.fit_seconds,
                "score_seconds_per_event": self.score_seconds_per_event, **self.extra}


@dataclass
class RunResult:
    y_test: np.ndarray
    methods: dict[str, MethodResult]
    info: dict
    feature_spec: FeatureSpec


def training_events(table: EventTable, rows: np.ndarray, window: int) -> np.ndarray:
    """Boolean mask of the events that appear in the windows ending at `rows`."""
    starts = np.maximum(table.user_start[rows], rows - window + 1)
    diff = np.zeros(len(table.frame) + 1, dtype=np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, rows + 1, -1)
    return np.cumsum(diff[:-1]) > 0


def _per_event_seconds(fn: Callable[[torch.Tensor], np.ndarray], windows: SequenceWindows,
                       rows: np.ndarray) -> tuple[np.ndarray, float]:
    """Run `fn` over batches of featurised windows; time only `fn` (windows are its input)."""
    outputs, spent = [], 0.0
    for _, batch in windows.batches(rows, TIMING_BATCH):
        started = time.perf_counter()
        outputs.append(fn(batch))
        spent += time.perf_counter() - started
    return np.concatenate(outputs), spent / max(len(rows), 1)


@dataclass
class Prepared:
    """A trained, frozen encoder and its embeddings of the sequences the relation part fits on."""

    encoder: SequenceEncoder
    windows: SequenceWindows
    fit_embeddings: np.ndarray
    fit_labels: np.ndarray
    val: Labelled
    test_rows: np.ndarray
    y_test: np.ndarray
    encoder_scores: MethodResult
    info: dict
    feature_spec: FeatureSpec


def prepare(table: EventTable, split: Split, config: ExperimentConfig, seed: int = 0) -> Prepared:
    """Features, encoder training and embeddings: everything the methods share."""
    labels = table.frame["label"].to_numpy()
    if config.scenario == "refresh":
        encoder_rows, fit_rows = split_rows_by_time(table, split.train, 0.5)
    else:
        encoder_rows = fit_rows = split.train
    spec = FeatureSpec.fit(table.frame[training_events(table, encoder_rows, config.window)],
                           table.numeric, table.categorical)
    windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, config.window)

    torch.manual_seed(seed)
    encoder = new_encoder(config.backbone, spec.dim, config.hidden, config.window)
    trained = train_encoder(encoder, windows, encoder_rows, labels[encoder_rows], split.val, labels[split.val],
                            replace(config.encoder, seed=seed))
    val_emb = embed_rows(encoder, windows, split.val)
    with torch.inference_mode():
        scores, per_event = _per_event_seconds(lambda b: torch.sigmoid(encoder(b)).numpy(), windows, split.test)
    info = {"train_rows": len(split.train), "encoder_rows": len(encoder_rows), "fit_rows": len(fit_rows),
            "feature_dim": spec.dim, "encoder_best_val_auc": trained.best_val_auc,
            "encoder_epochs": len(trained.history)}
    return Prepared(encoder, windows, embed_rows(encoder, windows, fit_rows), labels[fit_rows].astype(np.int64),
                    Labelled.of(val_emb, encoder_logits(encoder, val_emb), labels[split.val]), split.test,
                    labels[split.test].astype(np.int64),
                    MethodResult(scores, trained.seconds, per_event, {"best_epoch": trained.best_epoch}), info, spec)


def run_experiment(table: EventTable, split: Split, config: ExperimentConfig, seed: int = 0) -> RunResult:
    p = prepare(table, split, config, seed)
    results: dict[str, MethodResult] = {"encoder": p.encoder_scores}
    if "head" in config.methods:
        started = time.perf_counter()
        head = LogisticHead.fit(p.fit_embeddings, p.fit_labels)
        fit_s = time.perf_counter() - started
        with torch.inference_mode():
            scores, per_event = _per_event_seconds(
                lambda b: 1 / (1 + np.exp(-head.logits(p.encoder.embed(b).numpy()))), p.windows, p.test_rows)
        results["head"] = MethodResult(scores, fit_s, per_event)
    for name, fit in (("ecseq", fit_compressed), ("full_graph", fit_full_graph)):
        if name in config.methods:
            results[name] = fit_and_score(p, fit, relation_for_seed(config.relation, seed))
    return RunResult(p.y_test, {m: results[m] for m in config.methods if m in results}, p.info, p.feature_spec)


def relation_for_seed(relation: RelationConfig, seed: int) -> RelationConfig:
    return replace(relation, gnn=replace(relation.gnn, seed=seed))


def fit_and_score(p: Prepared, fit: RelationFit, relation: RelationConfig) -> MethodResult:
    """Fit a relation model (fit_compressed or fit_full_graph) and score the test events with it."""
    started = time.perf_counter()
    model = fit(p.encoder, p.fit_embeddings, p.fit_labels, p.val, relation)
    return _score_relation(p.encoder, model, p.windows, p.test_rows, time.perf_counter() - started)


def _score_relation(encoder: SequenceEncoder, model: RelationModel, windows: SequenceWindows,
                    rows: np.ndarray, fit_seconds: float) -> MethodResult:
    scorer = Scorer(encoder, model, attach=None if model.dense else IndexAttacher.for_model(model))
    neighbours: list[np.ndarray] = []

    def score(batch: torch.Tensor) -> np.ndarray:
        out = scorer.score_windows(batch)
        neighbours.append(out.neighbours)
        return out.score

    scores, per_event = _per_event_seconds(score, windows, rows)
    degree = np.concatenate(neighbours)
    extra = {"nodes": model.graph.k, "mean_neighbours": float(degree.mean()),
             "zero_neighbour_rate": float((degree == 0).mean())}
    return MethodResult(scores, fit_seconds, per_event, extra, model.graph)
