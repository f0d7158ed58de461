"""Compress labelled sequence embeddings into representative nodes (ECSeq, Wu et al. 2024).

Every method clusters in cosine space, because new sequences are later attached to the
representative nodes by cosine similarity.
"""

from collections.abc import Callable

import numpy as np

from ecseq.compression.balanced import balanced_kmeans
from ecseq.compression.kmeans import kmeans
from ecseq.compression.structural import structural
from ecseq.graph import normalise

METHODS: tuple[str, ...] = ("kmeans", "balanced_kmeans", "structural")

_Method = Callable[[np.ndarray, np.ndarray, int, int, int], np.ndarray]

_DISPATCH: dict[str, _Method] = {
    "kmeans": lambda x, labels, k, positive_k, seed: kmeans(x, k, seed),
    "balanced_kmeans": balanced_kmeans,
    "structural": structural,
}


def _validate(embeddings: np.ndarray, labels: np.ndarray, method: str, k: int, positive_k: int) -> None:
    """Fail early with a clear message instead of deep inside faiss."""
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; expected one of {METHODS}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if positive_k < 1:
        raise ValueError(f"positive_k must be >= 1, got {positive_k}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, d), got shape {embeddings.shape}")
    if labels.shape != (embeddings.shape[0],):
        raise ValueError(f"labels must have shape ({embeddings.shape[0]},), got {labels.shape}")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or infinite values")
    if not np.all(np.isin(labels, (0, 1))):
        raise ValueError("labels must be 0 or 1")


def compress(
    embeddings: np.ndarray,
    labels: np.ndarray,
    method: str = "balanced_kmeans",
    k: int = 500,
    positive_k: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Return assign: int64 (N,), cluster id of each row, ids contiguous 0..K_eff-1 (empty clusters dropped).

    With N <= k every row is its own cluster. "balanced_kmeans" and "structural" never put
    both labels in one cluster; see ``balanced.split_budget`` for how k is shared.
    """
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels)
    _validate(embeddings, labels, method, k, positive_k)
    if len(embeddings) <= k:
        return np.arange(len(embeddings), dtype=np.int64)
    return _DISPATCH[method](normalise(embeddings), labels, k, positive_k, seed)
