"""Plain spherical k-means: the label-blind baseline."""

import numpy as np

from ecseq.compression._common import relabel, spherical_kmeans


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster unit-length rows into k groups, ignoring labels."""
    return relabel(spherical_kmeans(x, k, seed))
