"""Structure-aware compression: smooth embeddings over their kNN graph, then cluster by class.

Following AGC (Zhang et al., IJCAI 2019), a low-pass graph filter X' = (I - L_sym / 2)^t X
pulls each embedding towards its neighbours, so clusters follow the relation graph rather
than raw feature noise. The graph is sparse (about k_nn edges per row); no N x N matrix is
ever formed. The smoothing step count is fixed because AGC's adaptive choice needs one
clustering per candidate step, which would multiply the cost.
"""

import math

import faiss
import numpy as np
import scipy.sparse as sp

from ecseq.compression.balanced import balanced_kmeans
from ecseq.graph import normalise

K_NN = 10
SMOOTHING_STEPS = 3
# Exact search is quadratic (about 8 s for 100k rows on 2 cores); above this size an IVF index
# gives near neighbours, which is all a smoothing filter needs, in well under 2 s.
EXACT_SEARCH_MAX_ROWS = 20_000
IVF_PROBES = 8


def _neighbour_index(x: np.ndarray, seed: int) -> faiss.Index:
    """Inner-product index over unit rows: exact for small inputs, IVF for large ones."""
    n, dim = x.shape
    if n <= EXACT_SEARCH_MAX_ROWS:
        index: faiss.Index = faiss.IndexFlatIP(dim)
    else:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, round(math.sqrt(n)), faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = IVF_PROBES
    index.add(x)
    return index


def knn_graph(x: np.ndarray, k_nn: int = K_NN, seed: int = 0) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency linking each unit row to its k_nn most cosine-similar rows."""
    n = len(x)
    _, neighbours = _neighbour_index(x, seed).search(x, min(k_nn + 1, n))
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    cols = neighbours.ravel()
    keep = (cols >= 0) & (cols != rows)  # IVF pads missing hits with -1; drop self-matches
    directed = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])), shape=(n, n))
    return directed.maximum(directed.T).tocsr()


def low_pass(x: np.ndarray, adjacency: sp.csr_matrix, steps: int = SMOOTHING_STEPS) -> np.ndarray:
    """Apply (I - L_sym / 2)^steps to x, with self-loops so isolated rows keep their features.

    With S = D^-1/2 (A + I) D^-1/2 the filter is (I + S) / 2, applied as sparse products.
    """
    looped = adjacency + sp.identity(adjacency.shape[0], dtype=np.float32, format="csr")
    inv_sqrt_degree = 1.0 / np.sqrt(np.asarray(looped.sum(axis=1)).ravel())
    scaling = sp.diags(inv_sqrt_degree.astype(np.float32))
    filt = (0.5 * (sp.identity(looped.shape[0], dtype=np.float32) + scaling @ looped @ scaling)).tocsr()
    smoothed = x
    for _ in range(steps):
        smoothed = filt @ smoothed
    return np.asarray(smoothed, dtype=np.float32)


def structural(x: np.ndarray, labels: np.ndarray, k: int, positive_k: int, seed: int) -> np.ndarray:
    """Class-balanced k-means on graph-smoothed embeddings, so clusters stay label-pure."""
    smoothed = low_pass(x, knn_graph(x, seed=seed))
    return balanced_kmeans(normalise(smoothed), labels, k, positive_k, seed)
