"""Scorer: batched scores with case-based explanations, on a tiny random encoder and graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecseq.encoders.models import LSTMEncoder
from ecseq.full_graph import IndexAttacher
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.graph import Attachment, CompressedGraph, DenseAttacher
from ecseq.scoring import ScoreBatch, Scorer

IN_DIM, H, K, EXPLAIN = 3, 4, 8, 3




def _encoder() -> LSTMEncoder:
    torch.manual_seed(0)
    return LSTMEncoder(IN_DIM, hidden=H).eval()


def _gnn(layer: str = "sage_mean", seed: int = 1, residual: bool = True) -> RelationGNN:
    torch.manual_seed(seed)
    gnn = RelationGNN(H, H + 1, layer, hidden=6, residual=residual)
    with torch.no_grad():  # as if trained: a non-zero correction on top of the encoder
        gnn.out.weight.normal_(0, 1.0)
        gnn.out.bias.fill_(0.1)
    return gnn


def _graph(seed: int = 2, k: int = K) -> CompressedGraph:
    """Nodes spread around the positive orthant, so an all-negative embedding attaches to nothing."""
    rng = np.random.default_rng(seed)
    centroids = (np.abs(rng.normal(size=(k, H))) + rng.normal(0, 0.2, (k, H))).astype(np.float32)
    return CompressedGraph(centroids, rng.uniform(0, 1, k).astype(np.float32), rng.integers(1, 50, k))


def _scorer(layer: str = "sage_mean", epsilon: float = 0.5, graph: CompressedGraph | None = None) -> Scorer:
    model = RelationModel(_graph() if graph is None else graph, _gnn(layer), Attachment(epsilon))
    return Scorer(_encoder(), model, explain_k=EXPLAIN)


def _windows(n: int = 6, length: int = 4, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    windows = torch.randn(n, length, IN_DIM, generator=g)
    windows[:, :, 0] = 1.0
    windows[0, :2] = 0.0  # a short history, left-padded
    return windows


def _window_graph() -> CompressedGraph:
    """Nodes made of the encoder's own embeddings of other windows, so windows attach to them."""
    with torch.inference_mode():
        centroids = _encoder().embed(_windows(K, seed=9)).numpy()
    rng = np.random.default_rng(6)
    return CompressedGraph(centroids, rng.uniform(0, 1, K).astype(np.float32), rng.integers(1, 50, K))


def _embeddings(seed: int = 4) -> torch.Tensor:
    """Rows with many, few (row 1) and no (rows 2, 4) neighbours on `_graph()`."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(6, H, generator=g).abs() + 0.1 * torch.randn(6, H, generator=g)
    emb[2] = -emb[2].abs() - 0.1
    emb[4] = torch.tensor([1.0, -0.5, -0.5, -0.5])  # none above 0.5 either
    return emb


def test_scores_are_probabilities_with_fixed_shapes():
    scorer = _scorer()
    batch = scorer.score_windows(_windows())
    assert batch.score.shape == batch.encoder_score.shape == batch.neighbours.shape == (6,)
    assert batch.top_nodes.shape == batch.top_similarity.shape == batch.top_contribution.shape == (6, EXPLAIN)
    assert batch.top_nodes.dtype == np.int64
    for values in (batch.score, batch.encoder_score):
        assert np.all((values >= 0) & (values <= 1)) and np.all(np.isfinite(values))
    assert not np.allclose(batch.score, batch.encoder_score)  # the GNN does change the score


def test_windows_path_is_encoder_then_embeddings():
    scorer = _scorer()
    windows = _windows()
    with torch.inference_mode():
        embedded = scorer.encoder.embed(windows)
    via_windows, via_embeddings = scorer.score_windows(windows), scorer.score_embeddings(embedded)
    np.testing.assert_allclose(via_windows.score, via_embeddings.score, rtol=1e-6)
    np.testing.assert_array_equal(via_windows.top_nodes, via_embeddings.top_nodes)


def _assert_batch_equals_single(scorer: Scorer, windows: torch.Tensor) -> None:
    batch = scorer.score_windows(windows)
    assert batch.neighbours.max() > EXPLAIN and batch.neighbours.min() < EXPLAIN
    for i in range(len(windows)):
        single = scorer.score_windows(windows[i:i + 1])
        assert single.score[0] == pytest.approx(batch.score[i], abs=1e-6)
        assert single.encoder_score[0] == pytest.approx(batch.encoder_score[i], abs=1e-6)
        assert single.neighbours[0] == batch.neighbours[i]
        np.testing.assert_array_equal(single.top_nodes[0], batch.top_nodes[i])
        np.testing.assert_allclose(single.top_similarity[0], batch.top_similarity[i], atol=1e-6)
        np.testing.assert_allclose(single.top_contribution[0], batch.top_contribution[i], atol=1e-6)
        one, many = single.explanations(scorer.graph)[0], batch.explanations(scorer.graph)[i]
        assert [e["node"] for e in one] == [e["node"] for e in many]
        for a, b in zip(one, many):
            assert a["contribution"] == pytest.approx(b["contribution"], abs=1e-6)


@pytest.mark.parametrize("layer,fused", [("sage_mean", True), ("sage_mean", False), ("sage_max", False),
                                         ("gcn", False), ("gat", False)])
def test_batch_equals_single_events(layer, fused):
    scorer = _scorer(layer, epsilon=0.9, graph=_window_graph())
    assert scorer.fused is (layer == "sage_mean")
    scorer.fused = fused
    _assert_batch_equals_single(scorer, _windows())


def test_non_default_layer_on_dense_graph_uses_generic_path():
    scorer = _scorer("gat", epsilon=0.9, graph=_window_graph())
    assert isinstance(scorer.attach, DenseAttacher) and scorer.fused is False
    _assert_batch_equals_single(scorer, _windows())


@pytest.mark.parametrize("layer,fused", [("sage_mean", True), ("sage_mean", False), ("gat", False)])
def test_explanations_are_the_strongest_real_neighbours(layer, fused):
    scorer = _scorer(layer, epsilon=0.6)
    scorer.fused = fused
    graph = scorer.graph
    emb = _embeddings()
    batch = scorer.score_embeddings(emb)
    # reference: attach and take contributions independently of the scorer
    nbrs = DenseAttacher(graph, Attachment(0.6))(emb)
    with torch.no_grad():
        _, z, coef = scorer.gnn(emb, nbrs, scorer.messages, scorer.encoder.score_embeddings(emb))
        contrib = scorer.gnn.contributions(z, coef, nbrs, scorer.messages)
    degree = nbrs.degree.to(torch.int64).numpy()
    np.testing.assert_array_equal(batch.neighbours, degree)
    assert degree.max() > EXPLAIN and 0 < degree[1] < EXPLAIN and degree[2] == 0
    assert torch.all(contrib[nbrs.weight == 0] == 0)  # empty slots contribute nothing
    explanations = batch.explanations(graph)
    for i in range(len(emb)):
        mine = nbrs.weight[i] > 0
        assert len(set(nbrs.index[i, mine].tolist())) == degree[i]  # no node twice
        by_node = dict(zip(nbrs.index[i, mine].tolist(),
                           zip(nbrs.similarity[i, mine].tolist(), contrib[i, mine].tolist())))
        explanation = explanations[i]
        assert len(explanation) == min(degree[i], EXPLAIN)
        strongest = sorted(by_node, key=lambda n: -abs(by_node[n][1]))[:EXPLAIN]
        assert [e["node"] for e in explanation] == strongest
        strengths = [abs(e["contribution"]) for e in explanation]
        assert strengths == sorted(strengths, reverse=True)
        for entry in explanation:
            sim, c = by_node[entry["node"]]
            assert entry["similarity"] == pytest.approx(sim, abs=1e-6) and entry["similarity"] > 0.6
            assert entry["contribution"] == pytest.approx(c, abs=1e-6)
            assert entry["size"] == graph.size[entry["node"]]
            assert entry["positive_rate"] == pytest.approx(float(graph.positive_rate[entry["node"]]))
        padding = slice(len(explanation), EXPLAIN)
        assert np.all(batch.top_nodes[i, padding] == -1)
        assert np.all(batch.top_similarity[i, padding] == 0) and np.all(batch.top_contribution[i, padding] == 0)


def test_zero_neighbour_event_gets_empty_explanation():
    scorer = _scorer()
    emb = _embeddings()
    batch = scorer.score_embeddings(emb)
    assert batch.neighbours[2] == 0
    assert batch.explanations(scorer.graph)[2] == []
    assert np.all(batch.top_nodes[2] == -1)
    assert 0 <= batch.score[2] <= 1
    alone = scorer.score_embeddings(emb[2:3])
    assert alone.neighbours.tolist() == [0] and alone.explanations(scorer.graph)[0] == []
    assert alone.score[0] == pytest.approx(batch.score[2], abs=1e-6)
    nothing = scorer.score_embeddings(-emb.abs() - 0.1)  # a batch with no edges at all
    assert nothing.neighbours.tolist() == [0] * 6 and np.all(nothing.top_nodes == -1)


def test_explain_k_zero_and_large():
    model = RelationModel(_graph(), _gnn(), Attachment(0.0))
    emb = _embeddings()
    none = Scorer(_encoder(), model, explain_k=0).score_embeddings(emb)
    assert none.top_nodes.shape == (6, 0) and none.explanations(model.graph)[0] == []
    wide = Scorer(_encoder(), model, explain_k=K + 2).score_embeddings(emb)
    for explanation, neighbours in zip(wide.explanations(model.graph), wide.neighbours):
        assert len(explanation) == neighbours
    np.testing.assert_allclose(none.score, wide.score)


def test_full_graph_scorer():
    rng = np.random.default_rng(5)
    members = np.abs(rng.normal(size=(30, H))).astype(np.float32)
    graph = CompressedGraph.from_members(members, rng.integers(0, 2, 30))
    gnn = _gnn()
    attachment = Attachment(0.2, 4)
    full_model = RelationModel(graph, gnn, attachment, dense=False, max_neighbours=4)
    full = Scorer(_encoder(), full_model, explain_k=EXPLAIN, attach=IndexAttacher.for_model(full_model))
    dense = Scorer(_encoder(), RelationModel(graph, gnn, attachment), explain_k=EXPLAIN)
    assert full.fused is False and dense.fused is True  # the fused kernel is for the dense attachment only
    emb = _embeddings()
    got, want = full.score_embeddings(emb), dense.score_embeddings(emb)
    assert np.all((got.score >= 0) & (got.score <= 1))
    np.testing.assert_allclose(got.score, want.score, atol=1e-5)
    np.testing.assert_array_equal(got.neighbours, want.neighbours)
    np.testing.assert_array_equal(got.top_nodes, want.top_nodes)
    assert got.neighbours[2] == 0 and got.neighbours.max() == 4
    for entry in got.explanations(graph)[0]:
        assert entry["size"] == 1 and entry["positive_rate"] in (0.0, 1.0)
    # epsilon-only full graph: at most max_neighbours edges per event
    capped_model = RelationModel(graph, gnn, Attachment(0.0), dense=False, max_neighbours=5)
    capped = Scorer(_encoder(), capped_model, attach=IndexAttacher.for_model(capped_model))
    assert capped.score_embeddings(emb).neighbours.tolist() == [5, 5, 0, 5, 5, 5]


def _assert_same_batch(fused: ScoreBatch, generic: ScoreBatch, graph: CompressedGraph, explain_k: int) -> None:
    """The fused kernel against the torch modules, to float32 round-off."""
    np.testing.assert_allclose(fused.score, generic.score, atol=1e-5)
    np.testing.assert_allclose(fused.encoder_score, generic.encoder_score, atol=1e-6)
    np.testing.assert_array_equal(fused.neighbours, generic.neighbours)
    assert fused.top_nodes.shape == generic.top_nodes.shape == (len(fused.score), explain_k)
    width = explain_k
    np.testing.assert_array_equal(fused.top_nodes[:, :width], generic.top_nodes[:, :width])
    np.testing.assert_allclose(fused.top_similarity[:, :width], generic.top_similarity[:, :width], atol=1e-5)
    np.testing.assert_allclose(fused.top_contribution[:, :width], generic.top_contribution[:, :width], atol=1e-5)
    for i, (a, b) in enumerate(zip(fused.explanations(graph), generic.explanations(graph))):
        assert len(a) == min(explain_k, int(generic.neighbours[i]))
        assert [e["node"] for e in a] == [e["node"] for e in b]
        for x, y in zip(a, b):
            assert x["similarity"] == pytest.approx(y["similarity"], abs=1e-5)
            assert x["contribution"] == pytest.approx(y["contribution"], abs=1e-5)


# (attachment, dense max_neighbours, expected degrees of _embeddings() on _graph())
ATTACHMENTS = {
    "top-k": (Attachment(-1.0, 10), 64, [K] * 6),  # k > K: every node, negative similarities too
    "top-k above epsilon": (Attachment(0.8, 3), 64, [3, 1, 0, 2, 0, 3]),
    "epsilon capped": (Attachment(0.0), 3, [3, 3, 0, 3, 3, 3]),  # uncapped: [8, 8, 0, 8, 3, 8]
    "high epsilon": (Attachment(0.9), 64, [3, 0, 0, 1, 0, 2]),
}


@pytest.mark.parametrize("explain_k", [0, EXPLAIN, K + 2])
@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("attachment", list(ATTACHMENTS))
def test_fused_path_equals_generic_torch_path(attachment, residual, explain_k):
    rule, max_neighbours, degrees = ATTACHMENTS[attachment]
    graph = _graph()
    model = RelationModel(graph, _gnn(residual=residual), rule, max_neighbours=max_neighbours)
    scorer = Scorer(_encoder(), model, explain_k=explain_k)
    assert scorer.fused is True
    emb = _embeddings()

    def both(x: torch.Tensor) -> tuple[ScoreBatch, ScoreBatch]:
        scorer.fused = True
        fused = scorer.score_embeddings(x)
        scorer.fused = False
        return fused, scorer.score_embeddings(x)

    fused, generic = both(emb)
    assert generic.neighbours.tolist() == degrees
    assert not np.allclose(generic.score, generic.encoder_score)  # the GNN term is really compared
    _assert_same_batch(fused, generic, graph, explain_k)
    for i in range(len(emb)):  # a batch of one, also against the batch
        one_fused, one_generic = both(emb[i:i + 1])
        _assert_same_batch(one_fused, one_generic, graph, explain_k)
        assert one_fused.score[0] == pytest.approx(fused.score[i], abs=1e-6)
        np.testing.assert_array_equal(one_fused.top_nodes[0], fused.top_nodes[i])


@pytest.mark.parametrize("rule,max_neighbours", [(Attachment(-1.0, 3), 64), (Attachment(0.5), 4)])
def test_fused_path_equals_generic_on_a_wider_graph(rule, max_neighbours):
    """64 nodes and few slots: the top-k search takes its chunk-maxima shortcut in both paths."""
    graph = _graph(seed=7, k=64)
    scorer = Scorer(_encoder(), RelationModel(graph, _gnn(), rule, max_neighbours=max_neighbours), explain_k=EXPLAIN)
    emb = _embeddings()
    fused = scorer.score_embeddings(emb)
    scorer.fused = False
    generic = scorer.score_embeddings(emb)
    assert generic.neighbours.max() == rule.slots(max_neighbours)
    _assert_same_batch(fused, generic, graph, EXPLAIN)
    # and against a brute-force attachment: the top slots really are the most similar nodes
    normalize = torch.nn.functional.normalize
    cos = normalize(emb, dim=1) @ normalize(torch.from_numpy(graph.centroids), dim=1).T
    expected = ((cos > rule.epsilon).sum(1).clamp(max=rule.slots(max_neighbours))).numpy()
    np.testing.assert_array_equal(fused.neighbours, expected)


def test_explanation_width_does_not_depend_on_the_path():
    model = RelationModel(_graph(), _gnn(), Attachment(-1.0, 10))
    scorer = Scorer(_encoder(), model, explain_k=K + 2)
    fused = scorer.score_embeddings(_embeddings())
    scorer.fused = False
    generic = scorer.score_embeddings(_embeddings())
    assert fused.top_nodes.shape == generic.top_nodes.shape
