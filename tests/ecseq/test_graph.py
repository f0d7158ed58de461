"""CompressedGraph construction, the attachment rule, the two attachers and edge lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecseq.graph import (
    Attachment,
    CompressedGraph,
    DenseAttacher,
    Edges,
    IndexAttacher,
    normalise,
)


def _random(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _graph(k: int = 12, seed: int = 0) -> CompressedGraph:
    rng = np.random.default_rng(seed)
    return CompressedGraph.from_members(_random(k, seed=seed), rng.integers(0, 2, k))


def _cosine(queries: np.ndarray, graph: CompressedGraph) -> np.ndarray:
    return normalise(queries).astype(np.float64) @ normalise(graph.centroids).astype(np.float64).T


def _edge_set(edges: Edges) -> set[tuple[int, int]]:
    return set(zip(edges.row.tolist(), edges.node.tolist()))


def _check_sorted_and_consistent(edges: Edges, queries: np.ndarray, graph: CompressedGraph) -> None:
    assert edges.size == len(queries)
    assert torch.all(edges.row[1:] >= edges.row[:-1])
    assert edges.row.dtype == edges.node.dtype == torch.int64
    cos = _cosine(queries, graph)
    np.testing.assert_allclose(edges.similarity.numpy(), cos[edges.row.numpy(), edges.node.numpy()], atol=1e-5)


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


# ---------------------------------------------------------------- DenseAttacher


def test_dense_epsilon_rule_is_exactly_the_nodes_above_epsilon():
    graph = _graph()
    queries = _random(7, seed=1)
    epsilon = 0.2
    edges = DenseAttacher(graph, Attachment(epsilon))(torch.from_numpy(queries))
    _check_sorted_and_consistent(edges, queries, graph)
    cos = _cosine(queries, graph)
    assert _edge_set(edges) == set(zip(*np.nonzero(cos > epsilon)))
    assert len(edges.row) > 0


def test_dense_top_k_rule_keeps_the_most_similar_above_epsilon():
    graph = _graph()
    queries = _random(7, seed=1)
    epsilon, k = 0.5, 3
    edges = DenseAttacher(graph, Attachment(epsilon, k))(torch.from_numpy(queries))
    _check_sorted_and_consistent(edges, queries, graph)
    cos = _cosine(queries, graph)
    expected = {(r, int(n)) for r in range(len(queries)) for n in np.argsort(-cos[r])[:k] if cos[r, n] > epsilon}
    assert _edge_set(edges) == expected
    counts = torch.bincount(edges.row, minlength=len(queries))
    assert counts.max() <= k and counts.min() < k  # some rows lose top-k nodes to epsilon


def test_dense_top_k_at_least_k_is_the_epsilon_rule():
    graph = _graph(k=5)
    queries = torch.from_numpy(_random(4, seed=2))
    big = DenseAttacher(graph, Attachment(0.0, 9))(queries)
    plain = DenseAttacher(graph, Attachment(0.0))(queries)
    assert _edge_set(big) == _edge_set(plain)


def test_dense_nothing_above_epsilon_gives_no_edges():
    graph = CompressedGraph.from_members(np.eye(3, dtype=np.float32), np.zeros(3))
    edges = DenseAttacher(graph, Attachment(0.5, 2))(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0]]))
    assert edges.size == 2
    assert edges.row.tolist() == [1] and edges.node.tolist() == [0]
    assert edges.degree.tolist() == [0.0, 1.0]


# ---------------------------------------------------------------- IndexAttacher


def _same_edges(a: Edges, b: Edges) -> None:
    assert a.size == b.size
    assert _edge_set(a) == _edge_set(b)
    order_a = torch.argsort(a.row * 1000 + a.node)
    order_b = torch.argsort(b.row * 1000 + b.node)
    torch.testing.assert_close(a.similarity[order_a], b.similarity[order_b], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attachment", [Attachment(-1.0, 4), Attachment(0.15, 3)])
def test_index_matches_dense_for_top_k(attachment):
    graph = _graph(k=30)
    queries = torch.from_numpy(_random(9, seed=3))
    _same_edges(IndexAttacher(graph, attachment)(queries), DenseAttacher(graph, attachment)(queries))


def test_index_matches_dense_for_epsilon_when_few_pass():
    graph = _graph(k=30)
    queries_np = _random(9, seed=3)
    epsilon = 0.5
    assert (_cosine(queries_np, graph) > epsilon).sum(1).max() < 8
    queries = torch.from_numpy(queries_np)
    index = IndexAttacher(graph, Attachment(epsilon), max_neighbours=8)(queries)
    dense = DenseAttacher(graph, Attachment(epsilon))(queries)
    _same_edges(index, dense)
    assert len(index.row) > 0


def test_index_caps_at_max_neighbours():
    graph = _graph(k=30)
    queries = torch.from_numpy(_random(5, seed=4))
    edges = IndexAttacher(graph, Attachment(-1.0), max_neighbours=6)(queries)
    assert torch.bincount(edges.row, minlength=5).tolist() == [6] * 5


def test_index_exclude_self_drops_the_query_itself():
    emb = _random(10, seed=5)
    graph = CompressedGraph.from_members(emb, np.zeros(10))
    queries = torch.from_numpy(emb)
    plain = IndexAttacher(graph, Attachment(-1.0, 3))(queries)
    own = IndexAttacher(graph, Attachment(-1.0, 3), exclude_self=True)(queries)
    assert [int(plain.node[plain.row == i][0]) for i in range(10)] == list(range(10))  # self is the top hit
    assert torch.bincount(own.row, minlength=10).tolist() == [3] * 10
    assert not torch.any(own.node == own.row)
    cos = _cosine(emb, graph)
    np.fill_diagonal(cos, -np.inf)
    expected = {(r, int(n)) for r in range(10) for n in np.argsort(-cos[r])[:3]}
    assert _edge_set(own) == expected


def test_index_exclude_self_with_duplicate_embeddings():
    """Identical sequences (common for short histories) tie with the query: still drop the query."""
    emb = _random(6, d=4, seed=0)
    emb[3] = emb[1]
    emb[5] = emb[1]
    graph = CompressedGraph.from_members(emb, np.zeros(6))
    own = IndexAttacher(graph, Attachment(-1.0, 3), exclude_self=True)(torch.from_numpy(emb))
    assert torch.bincount(own.row, minlength=6).tolist() == [3] * 6
    assert not torch.any(own.node == own.row)
    for row in (1, 3, 5):  # each duplicate's neighbours: the other two copies first
        nodes = own.node[own.row == row].tolist()
        assert set(nodes[:2]) == {1, 3, 5} - {row}


# ---------------------------------------------------------------- Edges


def _toy_edges() -> Edges:
    # new node 0: nodes 4, 2; new node 1: none; new node 2: 7; new node 3: 1, 5, 6
    row = torch.tensor([0, 0, 2, 3, 3, 3])
    node = torch.tensor([4, 2, 7, 1, 5, 6])
    return Edges(4, row, node, node.to(torch.float32) / 10)


def test_edges_degree_and_from_candidates():
    assert _toy_edges().degree.tolist() == [2.0, 0.0, 1.0, 3.0]
    node = torch.tensor([[3, 1], [0, 2]])
    sim = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    edges = Edges.from_candidates(node, sim, sim > 0.5)
    assert edges.size == 2
    assert edges.row.tolist() == [0, 1, 1] and edges.node.tolist() == [3, 0, 2]
    torch.testing.assert_close(edges.similarity, torch.tensor([0.9, 0.8, 0.7]))


def test_edges_take_renumbers():
    edges = _toy_edges()
    sub = edges.take(torch.tensor([3, 1, 0]))
    assert sub.size == 3
    assert sub.row.tolist() == [0, 0, 0, 2, 2]
    assert sub.node.tolist() == [1, 5, 6, 4, 2]
    torch.testing.assert_close(sub.similarity, sub.node.to(torch.float32) / 10)
    assert sub.degree.tolist() == [3.0, 0.0, 2.0]


def test_edges_take_edge_cases():
    edges = _toy_edges()
    empty = edges.take(torch.tensor([1]))
    assert empty.size == 1 and empty.row.numel() == 0 and empty.node.numel() == 0
    none = edges.take(torch.tensor([], dtype=torch.int64))
    assert none.size == 0 and none.row.numel() == 0
    again = edges.take(torch.tensor([2, 2]))
    assert again.row.tolist() == [0, 1] and again.node.tolist() == [7, 7]


def test_take_matches_attaching_the_subset():
    graph = _graph(k=20)
    queries = torch.from_numpy(_random(8, seed=6))
    attach = DenseAttacher(graph, Attachment(0.0, 4))
    pick = torch.tensor([5, 0, 7])
    taken, direct = attach(queries).take(pick), attach(queries[pick])
    assert taken.row.tolist() == direct.row.tolist()
    assert taken.node.tolist() == direct.node.tolist()
    torch.testing.assert_close(taken.similarity, direct.similarity)
