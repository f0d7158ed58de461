"""Online scoring equals offline scoring: the same events, replayed one by one through
decode_event -> UserHistory -> OnlineScorer, get the core's scores (SequenceWindows + Scorer)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ecseq.artifacts import ArtifactStore
from ecseq.data.events import events_from_frame
from ecseq.data.synthetic import CATEGORICAL, generate_synthetic
from ecseq.decoding import Event, EventSchema, decode_event
from ecseq.encoders.models import LSTMEncoder
from ecseq.encoders.training import EncoderTrainConfig, embed_rows, train_encoder
from ecseq.features import FeatureSpec
from ecseq.gnn_training import GNNTrainConfig, Labelled
from ecseq.history import UserHistory
from ecseq.online import OnlineScorer
from ecseq.relation import RelationConfig, encoder_logits, fit_compressed
from ecseq.windows import SequenceWindows

WINDOW = 8  # short, so many users have more events than a window holds


@pytest.fixture(scope="module")
def table():
    return events_from_frame(generate_synthetic(n_users=200, days=30), CATEGORICAL, source="synthetic")


@pytest.fixture(scope="module")
def artifact(table, tmp_path_factory):
    """A real (briefly trained) artifact, published to and loaded from a store like a worker does."""
    from ecseq.artifacts import ModelBundle

    spec = FeatureSpec.fit(table.frame, table.numeric, table.categorical)
    windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, WINDOW)
    rows = table.labelled
    labels = table.frame["label"].to_numpy()[rows].astype(np.int64)
    cut = len(rows) * 7 // 10
    torch.manual_seed(0)
    encoder = LSTMEncoder(spec.dim, 16)
    train_encoder(encoder, windows, rows[:cut], labels[:cut], rows[cut:], labels[cut:],
                  EncoderTrainConfig(epochs=2, progress=False))
    embeddings = embed_rows(encoder, windows, rows)
    val = Labelled.of(embeddings[cut:], encoder_logits(encoder, embeddings[cut:]), labels[cut:])
    relation = fit_compressed(encoder, embeddings[:cut], labels[:cut], val,
                              RelationConfig(k=20, positive_k=5, gnn=GNNTrainConfig(epochs=10, progress=False)))
    with torch.no_grad():  # a residual GNN that learnt nothing scores exactly as the encoder: make it matter
        seeded = torch.Generator().manual_seed(1)
        relation.gnn.out.weight.copy_(torch.randn(relation.gnn.out.weight.shape, generator=seeded))
    store = ArtifactStore(tmp_path_factory.mktemp("online") / "store")
    store.publish(ModelBundle(spec, WINDOW, encoder.eval(), relation), windows.gather(rows[:4]).numpy(),
                  parent=None, encoder_version=None, data={}, metrics={})
    return store.load()


@pytest.fixture(scope="module")
def offline(table, artifact):
    """The core's scores for every event of the table, and the featurised windows they came from."""
    spec = artifact.bundle.feature_spec
    windows = SequenceWindows.build(spec.transform(table.frame), table.user_start, WINDOW).gather(
        np.arange(len(table.frame)))
    return artifact.scorer.score_windows(windows), windows.numpy()


def _wire(row, table) -> bytes:
    """An event as a producer sends it: JSON, null for a missing value."""
    value = {"event_id": row["event_id"], "user_id": row["user_id"], "ts": float(row["ts"])}
    for name in table.features:
        v = row[name]
        value[name] = None if isinstance(v, float) and math.isnan(v) else v
    return json.dumps(value).encode()


def _replay(table, scorer: OnlineScorer, batch_sizes, limit: int):
    """Every event in time order through decode_event -> UserHistory.append -> OnlineScorer.score."""
    frame = table.frame
    order = np.argsort(frame["ts"].to_numpy(), kind="stable")  # ties keep the table's order
    raws = [_wire(frame.iloc[i], table) for i in order]
    histories: dict[str, UserHistory] = {}
    scores, start, k = {}, 0, 0
    while start < len(raws):
        size = batch_sizes[k % len(batch_sizes)]
        items = []
        for raw in raws[start:start + size]:
            event = decode_event(raw, scorer.schema)
            assert isinstance(event, Event), event
            history = histories.setdefault(event.user_id, UserHistory.empty(scorer.schema))
            position = history.append(event, limit)
            items.append((history.copy(), position))  # a snapshot: the same user may come again in this batch
        for result in scorer.score([h for h, _ in items], [p for _, p in items]):
            scores[result.event_id] = result
        start, k = start + size, k + 1
    return scores, histories


@pytest.mark.parametrize("limit", [WINDOW, 3 * WINDOW])
def test_online_scores_equal_offline_scores(table, artifact, offline, limit):
    batch, _ = offline
    scorer = OnlineScorer(artifact)
    scores, _ = _replay(table, scorer, (1, 7, 64), limit)
    ids = table.frame["event_id"].tolist()
    assert set(scores) == set(ids)
    explanations = batch.explanations(artifact.scorer.graph)
    differing = 0
    for i, event_id in enumerate(ids):
        got = scores[event_id]
        assert got.user_id == table.frame["user_id"].iloc[i]
        assert got.score == pytest.approx(float(batch.score[i]), abs=1e-5)
        assert got.encoder_score == pytest.approx(float(batch.encoder_score[i]), abs=1e-5)
        assert got.neighbours == int(batch.neighbours[i])
        expected = explanations[i]
        assert [e["node"] for e in got.explanation] == [e["node"] for e in expected]
        for mine, theirs in zip(got.explanation, expected):
            assert mine["similarity"] == pytest.approx(theirs["similarity"], abs=1e-5)
            assert mine["contribution"] == pytest.approx(theirs["contribution"], abs=1e-5)
            assert (mine["size"], mine["positive_rate"]) == (theirs["size"], theirs["positive_rate"])
        differing += got.score != got.encoder_score
    assert differing > len(ids) // 2  # the GNN is really in play
    assert any(len(s.explanation) for s in scores.values())


def test_windows_are_the_offline_windows(table, artifact, offline):
    """Featurised and left-padded like SequenceWindows (up to the float32 storage of numerics)."""
    _, expected = offline
    scorer = OnlineScorer(artifact)
    frame = table.frame
    histories, positions, rows = {}, [], []
    for i in np.argsort(frame["ts"].to_numpy(), kind="stable")[:600]:
        event = decode_event(_wire(frame.iloc[i], table), scorer.schema)
        history = histories.setdefault(event.user_id, UserHistory.empty(scorer.schema))
        position = history.append(event, WINDOW)
        positions.append((history.copy(), position))
        rows.append(i)
    got = scorer.windows([h for h, _ in positions[-50:]], [p for _, p in positions[-50:]])
    assert got.shape == (50, WINDOW, artifact.bundle.feature_spec.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected[rows[-50:]], atol=1e-6, rtol=0)
    assert (got[:, :, 0] == 0).any()  # some short histories were padded


def test_a_redelivered_event_scores_the_same_and_leaves_the_history_alone(table, artifact):
    scorer = OnlineScorer(artifact)
    frame = table.frame
    user = frame["user_id"].value_counts().index[0]
    mine = frame[frame["user_id"] == user]
    history = UserHistory.empty(scorer.schema)
    for _, row in mine.iterrows():
        history.append(decode_event(_wire(row, table), scorer.schema), WINDOW)
    raw = _wire(mine.iloc[-3], table)  # still in the history
    before = history.to_bytes()
    first = scorer.score([history], [history.append(decode_event(raw, scorer.schema), WINDOW)])
    again = scorer.score([history], [history.append(decode_event(raw, scorer.schema), WINDOW)])
    assert first == again and first[0].event_id == mine["event_id"].iloc[-3]
    assert history.to_bytes() == before


def test_a_history_stored_under_other_columns_is_mapped_by_name(table, artifact):
    scorer = OnlineScorer(artifact)
    old = EventSchema(tuple(reversed(scorer.schema.numeric)) + ("retired",), tuple(reversed(scorer.schema.categorical)))
    frame = table.frame
    user = frame["user_id"].value_counts().index[0]
    same, other = UserHistory.empty(scorer.schema), UserHistory.empty(old)
    for _, row in frame[frame["user_id"] == user].iterrows():
        same.append(decode_event(_wire(row, table), scorer.schema), WINDOW)
        event = decode_event(json.dumps({**json.loads(_wire(row, table)), "retired": 1.0}).encode(), old)
        other.append(event, WINDOW)
    restored = UserHistory.from_bytes(other.to_bytes(), scorer.schema)
    positions = list(range(len(same)))
    want = scorer.score([same] * len(same), positions)
    assert scorer.score([other] * len(same), positions) == want  # mapped on the fly
    assert scorer.score([restored] * len(same), positions) == want


def test_scorer_identity_and_argument_checks(artifact):
    scorer = OnlineScorer(artifact)
    assert scorer.version == artifact.version
    assert scorer.window == WINDOW
    assert scorer.schema == EventSchema.from_spec(artifact.bundle.feature_spec)
    assert scorer.score([], []) == []
    assert scorer.windows([], []).shape == (0, WINDOW, artifact.bundle.feature_spec.dim)
    history = UserHistory.empty(scorer.schema)
    history.append(Event("e", "u", 1.0, (1.0,) * len(scorer.schema.numeric), ("x",) * len(scorer.schema.categorical)),
                   WINDOW)
    with pytest.raises(ValueError, match="outside"):
        scorer.score([history], [1])
    with pytest.raises(ValueError, match="outside"):
        scorer.score([history], [-1])
    with pytest.raises(ValueError, match="positions"):
        scorer.score([history, history], [0])
    [result] = scorer.score([history], [0])
    assert (result.event_id, result.user_id) == ("e", "u") and 0.0 <= result.score <= 1.0


def test_stages_are_reported_in_order_with_the_same_scores(table, artifact):
    """The worker's per-stage latency metrics hang on these laps; timing must not change a score."""
    scorer = OnlineScorer(artifact)
    frame = table.frame
    history = UserHistory.empty(scorer.schema)
    positions = [history.append(decode_event(_wire(row, table), scorer.schema), WINDOW)
                 for _, row in frame[frame["user_id"] == frame["user_id"].iloc[0]].iterrows()]
    stages: list[str] = []
    timed = scorer.score([history], positions[-1:], stages.append)
    assert stages == ["featurise", "encode", "attach", "gnn"]
    assert timed == scorer.score([history], positions[-1:])
