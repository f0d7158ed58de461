"""Class-balanced k-means (the ECSeq default): positives and negatives are clustered apart.

Positives are rare, so plain k-means would bury them inside negative clusters; giving each
class its own cluster budget keeps every representative node label-pure.
"""

import numpy as np

from ecseq.compression._common import relabel, spherical_kmeans

MIN_POSITIVES_PER_CLUSTER = 5


def split_budget(n_pos: int, n_neg: int, k: int, positive_k: int) -> tuple[int, int]:
    """Return (positive clusters, negative clusters) for a total budget of k.

    Positives get min(positive_k, n_pos // MIN_POSITIVES_PER_CLUSTER) clusters, at least one,
    so a handful of positives is not shattered into singletons; negatives get the rest of k,
    keeping the graph size at k. An absent class gets no clusters. Each present class gets at
    least one cluster, so with both classes present and k == 1 the result has two clusters.
    """
    if n_pos == 0:
        return 0, k
    cap = max(1, n_pos // MIN_POSITIVES_PER_CLUSTER)
    if n_neg == 0:
        return min(k, cap), 0
    k_pos = min(positive_k, cap, max(1, k - 1))
    return k_pos, max(1, k - k_pos)


def balanced_kmeans(x: np.ndarray, labels: np.ndarray, k: int, positive_k: int, seed: int) -> np.ndarray:
    """Cluster each class separately; positive ids come first, negative ids follow."""
    positive = labels.astype(bool)
    k_pos, k_neg = split_budget(int(positive.sum()), int((~positive).sum()), k, positive_k)
    assign = np.empty(len(x), dtype=np.int64)
    pos_assign = relabel(spherical_kmeans(x[positive], k_pos, seed))
    assign[positive] = pos_assign
    n_pos_clusters = int(pos_assign.max()) + 1 if pos_assign.size else 0
    assign[~positive] = n_pos_clusters + relabel(spherical_kmeans(x[~positive], k_neg, seed))
    return assign
