import numpy as np
import pytest
import scipy.sparse as sp

from ecseq.compression import METHODS, compress
from ecseq.compression.balanced import split_budget
from ecseq.compression.structural import knn_graph, low_pass
from ecseq.graph import normalise

DIM = 32


def _blobs(n_blobs: int, per_blob: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random directions; returns (embeddings, blob id)."""
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_blobs, DIM)))
    blob = np.repeat(np.arange(n_blobs), per_blob)
    x = centres[blob] + spread * rng.standard_normal((len(blob), DIM)) / np.sqrt(DIM)
    return x.astype(np.float32), blob


def _purity(assign: np.ndarray, truth: np.ndarray) -> float:
    """Share of rows that belong to the majority truth group of their cluster."""
    counts = np.zeros((assign.max() + 1, truth.max() + 1))
    np.add.at(counts, (assign, truth), 1)
    return float(counts.max(axis=1).sum() / len(assign))


def _mixed_clusters(assign: np.ndarray, labels: np.ndarray) -> int:
    positives = np.bincount(assign, weights=labels)
    sizes = np.bincount(assign)
    return int(np.sum((positives > 0) & (positives < sizes)))


@pytest.fixture(scope="module")
def random_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, DIM)).astype(np.float32)
    return x, (rng.random(3000) < 0.1).astype(np.int64)


@pytest.mark.parametrize("method", METHODS)
def test_returns_contiguous_int64_ids_per_row(method, random_data):
    x, y = random_data
    assign = compress(x, y, method=method, k=50, positive_k=10)
    assert assign.dtype == np.int64
    assert assign.shape == (len(x),)
    assert np.array_equal(np.unique(assign), np.arange(assign.max() + 1))
    assert assign.max() + 1 <= 50


@pytest.mark.parametrize("method", METHODS)
def test_is_deterministic_for_a_seed(method, random_data):
    x, y = random_data
    first = compress(x, y, method=method, k=40, positive_k=8, seed=3)
    assert np.array_equal(first, compress(x, y, method=method, k=40, positive_k=8, seed=3))


@pytest.mark.parametrize("method", METHODS)
def test_at_most_k_rows_become_singletons(method):
    x, _ = _blobs(2, 10, 0.1)
    assign = compress(x, np.r_[np.ones(5), np.zeros(15)], method=method, k=20)
    assert np.array_equal(assign, np.arange(20))


@pytest.mark.parametrize("method", ["balanced_kmeans", "structural"])
def test_balanced_methods_never_mix_classes(method, random_data):
    x, y = random_data
    assign = compress(x, y, method=method, k=50, positive_k=10)
    assert _mixed_clusters(assign, y) == 0
    assert len(np.unique(assign[y == 1])) == 10
    assert len(np.unique(assign[y == 0])) == 40


@pytest.mark.parametrize("method", ["balanced_kmeans", "structural"])
def test_few_positives_share_one_pure_cluster(method, random_data):
    x, _ = random_data
    y = np.zeros(len(x), dtype=np.int64)
    y[[5, 500, 2500]] = 1
    assign = compress(x, y, method=method, k=50, positive_k=100)
    assert _mixed_clusters(assign, y) == 0
    assert len(np.unique(assign[y == 1])) == 1
    assert assign.max() + 1 == 50


@pytest.mark.parametrize("method", ["balanced_kmeans", "structural"])
@pytest.mark.parametrize("label", [0, 1])
def test_single_class_input_is_clustered(method, label, random_data):
    x, _ = random_data
    assign = compress(x, np.full(len(x), label), method=method, k=50, positive_k=100)
    assert np.array_equal(np.unique(assign), np.arange(50))


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "k", "positive_k", "expected"),
    [
        (1000, 9000, 500, 100, (100, 400)),  # the paper's split
        (50, 9000, 500, 100, (10, 490)),  # few positives: at least 5 per cluster
        (3, 9000, 500, 100, (1, 499)),
        (0, 9000, 500, 100, (0, 500)),  # absent class gets nothing
        (9000, 0, 500, 100, (500, 0)),
        (1000, 9000, 50, 100, (49, 1)),  # positive_k above k still leaves negatives a cluster
        (1000, 9000, 1, 100, (1, 1)),
    ],
)
def test_split_budget(n_pos, n_neg, k, positive_k, expected):
    assert split_budget(n_pos, n_neg, k, positive_k) == expected


@pytest.mark.parametrize("method", METHODS)
def test_recovers_well_separated_blobs(method):
    # Over-cluster 2x, as ECSeq does (K far above the number of natural groups): then no
    # cluster may straddle two blobs.
    x, blob = _blobs(20, 150, 0.3)
    labels = (blob < 4).astype(np.int64)  # blobs 0-3 positive
    assign = compress(x, labels, method=method, k=40, positive_k=8)
    assert _purity(assign, blob) > 0.99


def test_clusters_follow_knn_graph_more_after_smoothing(random_data):
    x, y = random_data
    graph = knn_graph(normalise(x)).tocoo()

    def edge_agreement(method: str) -> float:
        assign = compress(x, y, method=method, k=60, positive_k=10)
        return float(np.mean(assign[graph.row] == assign[graph.col]))

    assert edge_agreement("structural") > 1.2 * edge_agreement("balanced_kmeans")


def test_knn_graph_is_sparse_symmetric_without_self_loops(random_data):
    x, _ = random_data
    graph = knn_graph(normalise(x), k_nn=10)
    assert sp.issparse(graph)
    assert (graph != graph.T).nnz == 0
    assert graph.diagonal().sum() == 0
    degrees = np.diff(graph.indptr)
    assert degrees.min() >= 10
    assert graph.nnz <= 2 * 10 * len(x)


def test_low_pass_smooths_within_components_only():
    x, blob = _blobs(2, 200, 1.0)
    x = normalise(x)
    graph = knn_graph(x, k_nn=10)
    assert not graph[blob == 0][:, blob == 1].nnz  # far-apart blobs stay disconnected
    smoothed = low_pass(x, graph, steps=3)
    for b in (0, 1):
        raw_spread = np.linalg.norm(x[blob == b] - x[blob == b].mean(axis=0), axis=1).mean()
        new_spread = np.linalg.norm(smoothed[blob == b] - smoothed[blob == b].mean(axis=0), axis=1).mean()
        assert new_spread < 0.7 * raw_spread
        np.testing.assert_allclose(smoothed[blob == b].mean(axis=0), x[blob == b].mean(axis=0), atol=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "spectral"}, "unknown compression method"),
        ({"k": 0}, "k must be >= 1"),
        ({"positive_k": 0}, "positive_k must be >= 1"),
    ],
)
def test_rejects_bad_parameters(kwargs, message):
    x, _ = _blobs(2, 10, 0.1)
    with pytest.raises(ValueError, match=message):
        compress(x, np.zeros(20), **kwargs)


def test_rejects_bad_inputs():
    x, _ = _blobs(2, 10, 0.1)
    with pytest.raises(ValueError, match="labels must have shape"):
        compress(x, np.zeros(19))
    with pytest.raises(ValueError, match="2-D"):
        compress(x[0], np.zeros(1))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        compress(x, np.full(20, 2))
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        compress(bad, np.zeros(20))
