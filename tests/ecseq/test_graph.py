"""CompressedGraph construction, the attachment rule, the top-k kernel, the two attachers and
padded neighbour slots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecseq.full_graph import IndexAttacher
from ecseq.graph import (
    Attachment,
    CompressedGraph,
    DenseAttacher,
    Neighbours,
    normalise,
    top_k_rows,
)


def _random(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _graph(k: int = 12, seed: int = 0) -> CompressedGraph:
    rng = np.random.default_rng(seed)
    return CompressedGraph.from_members(_random(k, seed=seed), rng.integers(0, 2, k))


def _cosine(queries: np.ndarray, graph: CompressedGraph) -> np.ndarray:
    return normalise(queries).astype(np.float64) @ normalise(graph.centroids).astype(np.float64).T


def _rows(nbrs: Neighbours) -> list[list[int]]:
    """Per new node, its graph nodes in slot order (edges only)."""
    return [[int(n) for n, w in zip(idx, wt) if w > 0] for idx, wt in zip(nbrs.index.tolist(), nbrs.weight.tolist())]


def _edge_set(nbrs: Neighbours) -> set[tuple[int, int]]:
    return {(r, n) for r, nodes in enumerate(_rows(nbrs)) for n in nodes}


def _check_well_formed(nbrs: Neighbours, queries: np.ndarray, graph: CompressedGraph) -> None:
    """Shapes and dtypes, 0/1 weights, empty slots zeroed and after the edges, edges sorted by
    decreasing similarity, similarities equal to the cosine, no node twice in a row."""
    b, m = nbrs.index.shape
    assert b == len(queries)
    assert nbrs.similarity.shape == nbrs.weight.shape == (b, m)
    assert nbrs.index.dtype == torch.int64
    assert nbrs.similarity.dtype == nbrs.weight.dtype == torch.float32
    assert set(torch.unique(nbrs.weight).tolist()) <= {0.0, 1.0}
    empty = nbrs.weight == 0
    assert torch.all(nbrs.index[empty] == 0) and torch.all(nbrs.similarity[empty] == 0)
    assert torch.all(nbrs.weight[:, 1:] <= nbrs.weight[:, :-1])  # edges first, then padding
    assert torch.all(nbrs.index >= 0) and torch.all(nbrs.index < graph.k)
    cos = _cosine(queries, graph)
    for r, nodes in enumerate(_rows(nbrs)):
        assert len(set(nodes)) == len(nodes)
        sims = nbrs.similarity[r, :len(nodes)].numpy()
        np.testing.assert_allclose(sims, cos[r, nodes], atol=1e-5)
        assert np.all(np.diff(sims) <= 1e-6)
    torch.testing.assert_close(nbrs.degree, torch.tensor([float(len(n)) for n in _rows(nbrs)]))


# ---------------------------------------------------------------- CompressedGraph


def test_from_assignment_means_rates_and_sizes():
    emb = np.array([[0, 0], [2, 4], [1, 1], [3, 3], [5, 7]], dtype=np.float32)
    labels = np.array([1, 0, 1, 1, 0])
    assign = np.array([0, 0, 1, 1, 1])
    graph = CompressedGraph.from_assignment(emb, labels, assign)
    assert graph.k == 2
    np.testing.assert_allclose(graph.centroids, [[1, 2], [3, 11 / 3]], rtol=1e-6)
    np.testing.assert_allclose(graph.positive_rate, [0.5, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(graph.size, [2, 3])
    assert graph.centroids.dtype == graph.positive_rate.dtype == np.float32
    assert graph.size.dtype == np.int64


def test_from_assignment_drops_empty_clusters():
    emb = np.array([[1, 0], [3, 0], [0, 5]], dtype=np.float32)
    graph = CompressedGraph.from_assignment(emb, np.array([0, 1, 1]), np.array([0, 0, 3]))
    assert graph.k == 2
    np.testing.assert_allclose(graph.centroids, [[2, 0], [0, 5]])
    np.testing.assert_allclose(graph.positive_rate, [0.5, 1.0])
    np.testing.assert_array_equal(graph.size, [2, 1])


def test_from_members_and_node_features():
    emb = _random(4, d=3)
    graph = CompressedGraph.from_members(emb, np.array([0, 1, 1, 0]))
    assert graph.k == 4
    np.testing.assert_array_equal(graph.centroids, emb)
    np.testing.assert_array_equal(graph.positive_rate, [0, 1, 1, 0])
    np.testing.assert_array_equal(graph.size, [1, 1, 1, 1])
    np.testing.assert_array_equal(graph.node_features(False), emb)
    with_rate = graph.node_features(True)
    assert with_rate.shape == (4, 4) and with_rate.dtype == np.float32
    np.testing.assert_array_equal(with_rate[:, -1], [0, 1, 1, 0])


# ---------------------------------------------------------------- Attachment


@pytest.mark.parametrize("kwargs", [{"epsilon": 1.0}, {"epsilon": -1.5}, {"epsilon": 0.5, "top_k": 0}])
def test_attachment_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Attachment(**kwargs)


def test_attachment_accepts_edges_of_range_and_describes():
    assert Attachment(-1.0, 5).describe() == "any, top-5"
    assert Attachment(0.5).describe() == "cos>0.5"
    assert Attachment(0.9, 3).describe() == "cos>0.9, top-3"


def test_attachment_slots():
    assert Attachment(0.5, 3).slots(64) == 3
    assert Attachment(0.5, 100).slots(64) == 100  # an explicit top_k is not capped
    assert Attachment(0.5).slots(64) == 64
    assert Attachment(-1.0).slots(7) == 7


# ---------------------------------------------------------------- top_k_rows


@pytest.mark.parametrize("k", [1, 3, 10, 20])
def test_top_k_rows_matches_torch_topk(k):
    sim = np.random.default_rng(k).normal(size=(9, 20)).astype(np.float32)
    values, index = top_k_rows(sim, k)
    expected = torch.topk(torch.from_numpy(sim), k, dim=1)
    assert values.shape == index.shape == (9, k)
    assert values.dtype == np.float32 and index.dtype == np.int64
    np.testing.assert_array_equal(values, expected.values.numpy())
    np.testing.assert_array_equal(index, expected.indices.numpy())
    np.testing.assert_array_equal(np.take_along_axis(sim, index, 1), values)


def test_top_k_rows_more_than_columns_is_clamped():
    sim = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    values, index = top_k_rows(sim, 9)
    expected = torch.topk(torch.from_numpy(sim), 5, dim=1)
    assert values.shape == index.shape == (4, 5)
    np.testing.assert_array_equal(values, expected.values.numpy())
    np.testing.assert_array_equal(index, expected.indices.numpy())


def test_top_k_rows_pads_with_minus_inf_and_minus_one():
    """Columns that never beat the empty buffer (-inf) leave slots unfilled: -inf / -1."""
    sim = np.array([[0.5, -np.inf, 0.2, -np.inf], [-np.inf] * 4, [0.1, 0.3, 0.2, 0.4]], dtype=np.float32)
    values, index = top_k_rows(sim, 3)
    np.testing.assert_array_equal(values, np.float32([[0.5, 0.2, -np.inf], [-np.inf] * 3, [0.4, 0.3, 0.2]]))
    np.testing.assert_array_equal(index, [[0, 2, -1], [-1, -1, -1], [3, 1, 2]])


def test_top_k_rows_ties_keep_the_lowest_columns_first():
    sim = np.array([[0.5, 0.9, 0.5, 0.9, 0.5, 0.1],
                    [0.7] * 6,
                    [0.1, 0.5, 0.5, 0.5, 0.5, 0.9]], dtype=np.float32)
    values, index = top_k_rows(sim, 4)
    np.testing.assert_array_equal(values, np.float32([[0.9, 0.9, 0.5, 0.5], [0.7] * 4, [0.9, 0.5, 0.5, 0.5]]))
    np.testing.assert_array_equal(index, [[1, 3, 0, 2], [0, 1, 2, 3], [5, 1, 2, 3]])
    # tied values are whatever torch.topk keeps, too (its order among ties is unspecified)
    expected = torch.topk(torch.from_numpy(sim), 4, dim=1)
    np.testing.assert_array_equal(values, expected.values.numpy())


def test_top_k_rows_empty_batch():
    values, index = top_k_rows(np.zeros((0, 5), dtype=np.float32), 3)
    assert values.shape == index.shape == (0, 3)


# ---------------------------------------------------------------- Neighbours


def test_from_search_drops_invalid_and_below_epsilon_slots():
    sim = np.array([[0.9, 0.6, 0.5, 0.2], [0.8, -3.4e38, -3.4e38, -3.4e38], [0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    idx = np.array([[3, 1, 4, 0], [2, -1, -1, -1], [5, 6, 7, 8]])
    nbrs = Neighbours.from_search(sim, idx, 0.5)
    assert nbrs.index.dtype == torch.int64
    assert nbrs.similarity.dtype == nbrs.weight.dtype == torch.float32
    # 0.5 is not above epsilon = 0.5; -1 is no hit; empty slots are zeroed
    assert nbrs.weight.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert nbrs.index.tolist() == [[3, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]]
    torch.testing.assert_close(nbrs.similarity, torch.tensor([[0.9, 0.6, 0, 0], [0.8, 0, 0, 0], [0, 0, 0, 0]]))
    assert nbrs.degree.tolist() == [2.0, 1.0, 0.0]


def test_from_search_epsilon_minus_one_keeps_every_hit_but_not_missing_ones():
    sim = np.array([[0.2, -0.99, -np.inf]], dtype=np.float32)
    idx = np.array([[4, 2, -1]])
    nbrs = Neighbours.from_search(sim, idx, -1.0)
    assert nbrs.weight.tolist() == [[1, 1, 0]]
    assert nbrs.index.tolist() == [[4, 2, 0]]
    assert torch.isfinite(nbrs.similarity).all()


def _toy() -> Neighbours:
    # new node 0: nodes 4, 2; new node 1: none; new node 2: 7; new node 3: 1, 5, 6
    index = torch.tensor([[4, 2, 0], [0, 0, 0], [7, 0, 0], [1, 5, 6]])
    weight = torch.tensor([[1.0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])
    return Neighbours(index, index.to(torch.float32) / 10 * weight, weight)


def test_neighbours_degree():
    assert _toy().degree.tolist() == [2.0, 0.0, 1.0, 3.0]


def test_neighbours_take_selects_rows():
    sub = _toy().take(torch.tensor([3, 1, 0]))
    assert sub.index.shape == (3, 3)
    assert _rows(sub) == [[1, 5, 6], [], [4, 2]]
    torch.testing.assert_close(sub.similarity, sub.index.to(torch.float32) / 10 * sub.weight)
    assert sub.degree.tolist() == [3.0, 0.0, 2.0]


def test_neighbours_take_edge_cases():
    toy = _toy()
    empty = toy.take(torch.tensor([1]))
    assert empty.index.shape == (1, 3) and empty.degree.tolist() == [0.0]
    none = toy.take(torch.tensor([], dtype=torch.int64))
    assert none.index.shape == none.similarity.shape == none.weight.shape == (0, 3)
    again = toy.take(torch.tensor([2, 2]))
    assert _rows(again) == [[7], [7]]


def test_take_matches_attaching_the_subset():
    graph = _graph(k=20)
    queries = torch.from_numpy(_random(8, seed=6))
    attach = DenseAttacher(graph, Attachment(0.0, 4))
    pick = torch.tensor([5, 0, 7])
    taken, direct = attach(queries).take(pick), attach(queries[pick])
    assert torch.equal(taken.index, direct.index)
    assert torch.equal(taken.weight, direct.weight)
    torch.testing.assert_close(taken.similarity, direct.similarity)


# ---------------------------------------------------------------- DenseAttacher


def test_dense_epsilon_rule_is_exactly_the_nodes_above_epsilon():
    graph = _graph()
    queries = _random(7, seed=1)
    epsilon = 0.2
    nbrs = DenseAttacher(graph, Attachment(epsilon))(torch.from_numpy(queries))
    assert nbrs.index.shape == (7, graph.k)  # max_neighbours (64) > K: one slot per node
    _check_well_formed(nbrs, queries, graph)
    cos = _cosine(queries, graph)
    assert _edge_set(nbrs) == set(zip(*np.nonzero(cos > epsilon)))
    assert _rows(nbrs) == [[int(n) for n in np.argsort(-cos[r]) if cos[r, n] > epsilon] for r in range(7)]
    assert nbrs.weight.sum() > 0


def test_dense_top_k_rule_keeps_the_most_similar_above_epsilon():
    graph = _graph()
    queries = _random(7, seed=1)
    epsilon, k = 0.5, 3
    nbrs = DenseAttacher(graph, Attachment(epsilon, k))(torch.from_numpy(queries))
    assert nbrs.index.shape == (7, k)
    _check_well_formed(nbrs, queries, graph)
    cos = _cosine(queries, graph)
    expected = [[int(n) for n in np.argsort(-cos[r])[:k] if cos[r, n] > epsilon] for r in range(len(queries))]
    assert _rows(nbrs) == expected
    assert nbrs.degree.max() <= k and nbrs.degree.min() < k  # some rows lose top-k nodes to epsilon


def test_dense_pure_top_k():
    graph = _graph()
    queries = _random(7, seed=1)
    nbrs = DenseAttacher(graph, Attachment(-1.0, 4))(torch.from_numpy(queries))
    _check_well_formed(nbrs, queries, graph)
    cos = _cosine(queries, graph)
    assert _rows(nbrs) == [[int(n) for n in np.argsort(-cos[r])[:4]] for r in range(7)]
    assert nbrs.degree.tolist() == [4.0] * 7


def test_dense_top_k_at_least_k_is_the_epsilon_rule():
    graph = _graph(k=5)
    queries = torch.from_numpy(_random(4, seed=2))
    big = DenseAttacher(graph, Attachment(0.0, 9))(queries)
    plain = DenseAttacher(graph, Attachment(0.0))(queries)
    assert big.index.shape == (4, 5)  # no more slots than nodes
    assert _rows(big) == _rows(plain)
    torch.testing.assert_close(big.similarity, plain.similarity)


def test_dense_caps_at_max_neighbours():
    graph = _graph(k=30)
    queries_np = _random(5, seed=4)
    nbrs = DenseAttacher(graph, Attachment(-1.0), max_neighbours=6)(torch.from_numpy(queries_np))
    assert nbrs.index.shape == (5, 6)
    assert nbrs.degree.tolist() == [6.0] * 5
    _check_well_formed(nbrs, queries_np, graph)
    cos = _cosine(queries_np, graph)
    assert _rows(nbrs) == [[int(n) for n in np.argsort(-cos[r])[:6]] for r in range(5)]


def test_dense_nothing_above_epsilon_gives_no_edges():
    graph = CompressedGraph.from_members(np.eye(3, dtype=np.float32), np.zeros(3))
    nbrs = DenseAttacher(graph, Attachment(0.5, 2))(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0]]))
    assert nbrs.index.shape == (2, 2)
    assert _rows(nbrs) == [[], [0]]
    assert nbrs.degree.tolist() == [0.0, 1.0]
    assert nbrs.weight.tolist() == [[0.0, 0.0], [1.0, 0.0]]


def test_dense_ignores_gradients_and_scale():
    graph = _graph()
    queries = torch.from_numpy(_random(3, seed=7))
    attach = DenseAttacher(graph, Attachment(0.1, 5))
    plain = attach(queries)
    scaled = attach((queries * 7.0).requires_grad_())
    assert torch.equal(plain.index, scaled.index) and torch.equal(plain.weight, scaled.weight)
    assert not scaled.similarity.requires_grad


# ---------------------------------------------------------------- IndexAttacher


def _same_neighbours(a: Neighbours, b: Neighbours) -> None:
    """Same edges, in the same (decreasing similarity) order, with the same similarities."""
    assert a.index.shape[0] == b.index.shape[0]
    assert _rows(a) == _rows(b)
    for r, nodes in enumerate(_rows(a)):
        torch.testing.assert_close(a.similarity[r, :len(nodes)], b.similarity[r, :len(nodes)], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.degree, b.degree)


@pytest.mark.parametrize("attachment", [Attachment(-1.0, 4), Attachment(0.15, 3), Attachment(0.2), Attachment(-1.0)])
def test_index_matches_dense(attachment):
    graph = _graph(k=30)
    queries_np = _random(9, seed=3)
    queries = torch.from_numpy(queries_np)
    index = IndexAttacher(graph, attachment, max_neighbours=8)(queries)
    dense = DenseAttacher(graph, attachment, max_neighbours=8)(queries)
    assert index.index.shape == dense.index.shape == (9, attachment.slots(8))
    _check_well_formed(index, queries_np, graph)
    _same_neighbours(index, dense)
    assert index.weight.sum() > 0


def test_index_matches_dense_with_more_slots_than_nodes():
    """faiss pads missing hits with -1; those are no edges, just as the dense attacher has none."""
    graph = _graph(k=5)
    queries_np = _random(4, seed=2)
    queries = torch.from_numpy(queries_np)
    attachment = Attachment(0.0, 9)
    index = IndexAttacher(graph, attachment)(queries)
    assert index.index.shape == (4, 9)
    _check_well_formed(index, queries_np, graph)
    _same_neighbours(index, DenseAttacher(graph, attachment)(queries))


def test_index_caps_at_max_neighbours():
    graph = _graph(k=30)
    nbrs = IndexAttacher(graph, Attachment(-1.0), max_neighbours=6)(torch.from_numpy(_random(5, seed=4)))
    assert nbrs.index.shape == (5, 6)
    assert nbrs.degree.tolist() == [6.0] * 5


def test_index_exclude_self_drops_the_query_itself():
    emb = _random(10, seed=5)
    graph = CompressedGraph.from_members(emb, np.zeros(10))
    queries = torch.from_numpy(emb)
    plain = IndexAttacher(graph, Attachment(-1.0, 3))(queries)
    own = IndexAttacher(graph, Attachment(-1.0, 3), exclude_self=True)(queries)
    assert plain.index[:, 0].tolist() == list(range(10))  # self is the top hit
    assert own.index.shape == (10, 3)
    assert own.degree.tolist() == [3.0] * 10
    assert not torch.any(own.index == torch.arange(10)[:, None])
    _check_well_formed(own, emb, graph)
    cos = _cosine(emb, graph)
    np.fill_diagonal(cos, -np.inf)
    assert _rows(own) == [[int(n) for n in np.argsort(-cos[r])[:3]] for r in range(10)]
    # and it is the same as taking the next slot of a one-wider search
    wider = IndexAttacher(graph, Attachment(-1.0, 4))(queries)
    assert torch.equal(own.index, wider.index[:, 1:])


def test_index_exclude_self_keeps_the_epsilon_rule():
    emb = _random(10, seed=5)
    graph = CompressedGraph.from_members(emb, np.zeros(10))
    own = IndexAttacher(graph, Attachment(0.3), max_neighbours=4, exclude_self=True)(torch.from_numpy(emb))
    assert own.index.shape == (10, 4)
    _check_well_formed(own, emb, graph)
    cos = _cosine(emb, graph)
    np.fill_diagonal(cos, -np.inf)
    assert _rows(own) == [[int(n) for n in np.argsort(-cos[r])[:4] if cos[r, n] > 0.3] for r in range(10)]


def test_index_exclude_self_with_duplicate_embeddings():
    """Identical sequences (common for short histories) tie with the query: still drop the query."""
    emb = _random(6, d=4, seed=0)
    emb[3] = emb[1]
    emb[5] = emb[1]
    graph = CompressedGraph.from_members(emb, np.zeros(6))
    own = IndexAttacher(graph, Attachment(-1.0, 3), exclude_self=True)(torch.from_numpy(emb))
    assert own.degree.tolist() == [3.0] * 6
    assert not torch.any(own.index == torch.arange(6)[:, None])
    for row in (1, 3, 5):  # each duplicate's neighbours: the other two copies first
        assert set(_rows(own)[row][:2]) == {1, 3, 5} - {row}
        torch.testing.assert_close(own.similarity[row, :2], torch.ones(2), atol=1e-5, rtol=0)


def test_index_exclude_self_with_more_duplicates_than_slots():
    """More copies than the search returns: the query itself may not be among the hits at all;
    then the weakest hit goes instead, and every neighbour is still another copy."""
    emb = _random(8, d=4, seed=1)
    copies = [0, 2, 3, 5, 6, 7]
    emb[copies] = emb[0]
    graph = CompressedGraph.from_members(emb, np.zeros(8))
    own = IndexAttacher(graph, Attachment(-1.0, 2), exclude_self=True)(torch.from_numpy(emb))
    assert own.index.shape == (8, 2)
    assert own.degree.tolist() == [2.0] * 8
    assert not torch.any(own.index == torch.arange(8)[:, None])
    for row in copies:
        assert set(_rows(own)[row]) <= set(copies) - {row}
