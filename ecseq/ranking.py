"""Ranking-quality metrics for binary scores, in plain numpy (no scikit-learn dependency).

Tied scores are always treated as one threshold: a model must not gain or lose credit from
the arbitrary order of equal scores.
"""

import numpy as np


def _validate(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (y as bool, score as float64) or raise ValueError on malformed input."""
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or score.ndim != 1:
        raise ValueError(f"y and score must be 1-D, got shapes {y.shape} and {score.shape}")
    if len(y) != len(score):
        raise ValueError(f"y and score differ in length: {len(y)} != {len(score)}")
    if len(y) == 0:
        raise ValueError("y and score are empty")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("y must contain only 0 and 1")
    if not np.all(np.isfinite(score)):
        raise ValueError("score contains NaN or infinite values")
    return y.astype(bool), score


def _threshold_counts(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct score, highest first."""
    order = np.argsort(-score, kind="stable")
    sorted_score, sorted_y = score[order], y[order]
    last_of_tie = np.r_[sorted_score[1:] != sorted_score[:-1], True]
    tp = np.cumsum(sorted_y)[last_of_tie]
    fp = np.flatnonzero(last_of_tie) + 1 - tp
    return tp, fp


def _curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall per threshold, highest threshold first; y must hold a positive."""
    tp, fp = _threshold_counts(y, score)
    return tp / (tp + fp), tp / tp[-1]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank sum; ties get average ranks.

    NaN when only one class is present, since the AUC is then undefined.
    """
    y, score = _validate(y, score)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    ends = np.r_[starts[1:], len(score)]
    tie_group = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(score))
    ranks[order] = ((starts + 1 + ends) / 2.0)[tie_group]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) with recall increasing, one point per distinct score.

    A leading (precision 1, recall 0) point anchors the curve, as in scikit-learn. Raises
    ValueError without positives, where recall is undefined.
    """
    y, score = _validate(y, score)
    if not y.any():
        raise ValueError("precision_recall_curve needs at least one positive")
    precision, recall = _curve(y, score)
    return np.r_[1.0, precision], np.r_[0.0, recall]


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Step-wise AP, sum_n (R_n - R_{n-1}) P_n over distinct thresholds; NaN without positives."""
    y, score = _validate(y, score)
    if not y.any():
        return float("nan")
    precision, recall = _curve(y, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_precision(y: np.ndarray, score: np.ndarray, precision: float = 0.9) -> float:
    """Highest recall at any threshold whose precision reaches the target.

    0.0 when no threshold reaches it; NaN without positives, where recall is undefined.
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got {precision}")
    y, score = _validate(y, score)
    if not y.any():
        return float("nan")
    curve_precision, recall = _curve(y, score)
    reached = recall[curve_precision >= precision]
    return float(reached.max()) if reached.size else 0.0


def summarize(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The three headline numbers reported for every model."""
    return {
        "auc": roc_auc(y, score),
        "ap": average_precision(y, score),
        "r_at_p90": recall_at_precision(y, score, 0.9),
    }
