"""LogisticHead: the retrained logistic-regression baseline on frozen embeddings."""

from __future__ import annotations

import numpy as np

from ecseq.evaluation.head import LogisticHead
from ecseq.ranking import roc_auc


def _separable(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label = side of a hyperplane, with a margin; features on very different scales."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)) * np.array([1.0, 100.0, 0.01, 1.0, 5.0])
    w = np.array([1.0, 0.01, 100.0, -1.0, 0.0])
    s = x @ w
    keep = np.abs(s) > 0.3
    return x[keep].astype(np.float32), (s[keep] > 0).astype(np.int64)


def test_separates_a_linearly_separable_problem():
    x, y = _separable()
    head = LogisticHead.fit(x, y)
    assert head.weight.shape == (5,)
    logits = head.logits(x)
    assert logits.shape == (len(y),) and np.all(np.isfinite(logits))
    assert roc_auc(y, logits) > 0.999
    x_new, y_new = _separable(100, seed=1)
    assert roc_auc(y_new, head.logits(x_new)) > 0.99
    assert abs(head.weight[4]) < abs(head.weight[0])  # the irrelevant feature gets little weight


def test_is_deterministic():
    x, y = _separable()
    a, b = LogisticHead.fit(x, y), LogisticHead.fit(x, y)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert a.bias == b.bias
    np.testing.assert_array_equal(a.logits(x), b.logits(x))


def test_constant_feature_does_not_break_fit():
    x, y = _separable()
    x = np.hstack([x, np.full((len(x), 1), 3.0, dtype=np.float32)])
    head = LogisticHead.fit(x, y)
    assert np.all(np.isfinite(head.weight)) and np.isfinite(head.bias)
    assert roc_auc(y, head.logits(x)) > 0.999
