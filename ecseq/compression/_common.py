"""Helpers shared by the compression methods: seeded faiss k-means on unit-length rows."""

import faiss
import numpy as np

KMEANS_ITERATIONS = 20


def spherical_kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster unit-length rows into at most k groups; with n <= k every row is its own cluster."""
    n, dim = x.shape
    if n <= k:
        return np.arange(n, dtype=np.int64)
    # k-means++ seeding keeps well-separated groups from being left without a centroid (random
    # seeding often strands one) for ~15% more CPU. min_points_per_centroid=1 silences faiss'
    # "too few training points" warning, which fires routinely for small classes.
    km = faiss.Kmeans(
        dim,
        k,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
        min_points_per_centroid=1,
    )
    km.train(x)
    _, nearest = km.index.search(x, 1)
    return nearest[:, 0].astype(np.int64)


def relabel(assign: np.ndarray) -> np.ndarray:
    """Map cluster ids onto 0..K_eff-1 so that empty clusters leave no gaps."""
    _, contiguous = np.unique(assign, return_inverse=True)
    return contiguous.astype(np.int64)
