import math

import numpy as np
import pytest

from ecseq.ranking import (
    average_precision,
    precision_recall_curve,
    recall_at_precision,
    roc_auc,
    summarize,
)

# scikit-learn's documented example: AUC 0.75, AP 0.8333.
Y = np.array([0, 0, 1, 1])
SCORE = np.array([0.1, 0.4, 0.35, 0.8])
# A tie between a positive and a negative at 0.5.
Y_TIED = np.array([1, 0, 1, 0])
SCORE_TIED = np.array([0.5, 0.5, 0.9, 0.1])


def _pairwise_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Definition of the AUC: P(positive outranks negative), ties counting one half."""
    diff = score[y == 1][:, None] - score[y == 0][None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def _threshold_ap(y: np.ndarray, score: np.ndarray) -> float:
    """AP by looping over distinct thresholds, highest first."""
    ap, previous_recall = 0.0, 0.0
    for threshold in np.unique(score)[::-1]:
        predicted = score >= threshold
        recall = (y & predicted).sum() / y.sum()
        ap += (recall - previous_recall) * (y & predicted).sum() / predicted.sum()
        previous_recall = recall
    return ap


def test_hand_computed_example():
    assert roc_auc(Y, SCORE) == pytest.approx(0.75)
    assert average_precision(Y, SCORE) == pytest.approx(5 / 6)
    precision, recall = precision_recall_curve(Y, SCORE)
    np.testing.assert_allclose(precision, [1, 1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1, 1])
    assert recall_at_precision(Y, SCORE, 0.9) == 0.5
    assert recall_at_precision(Y, SCORE, 0.6) == 1.0


def test_ties_form_one_threshold():
    assert roc_auc(Y_TIED, SCORE_TIED) == pytest.approx(3.5 / 4)
    precision, recall = precision_recall_curve(Y_TIED, SCORE_TIED)
    np.testing.assert_allclose(precision, [1, 1, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0, 0.5, 1, 1])
    assert average_precision(Y_TIED, SCORE_TIED) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # Reordering tied rows must not change anything.
    assert average_precision(Y_TIED[[1, 0, 2, 3]], SCORE_TIED[[1, 0, 2, 3]]) == pytest.approx(5 / 6)


def test_constant_score_is_uninformative():
    y = np.array([1, 0, 0, 0, 1])
    score = np.full(5, 0.3)
    assert roc_auc(y, score) == 0.5
    assert average_precision(y, score) == pytest.approx(0.4)
    assert recall_at_precision(y, score) == 0.0


def test_matches_definitions_on_heavily_tied_random_data():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    score = rng.integers(0, 12, 400).astype(float) + 2.0 * y
    assert roc_auc(y, score) == pytest.approx(_pairwise_auc(y, score))
    assert average_precision(y, score) == pytest.approx(_threshold_ap(y, score))


def test_perfect_and_inverted_scores():
    y = np.array([0] * 90 + [1] * 10)
    score = np.linspace(0, 1, 100)
    assert summarize(y, score) == {"auc": 1.0, "ap": 1.0, "r_at_p90": 1.0}
    inverted = summarize(y, -score)
    assert inverted["auc"] == 0.0
    assert inverted["ap"] == pytest.approx(np.mean(np.arange(1, 11) / np.arange(91, 101)))
    assert inverted["r_at_p90"] == 0.0


def test_random_scores_sit_at_chance():
    rng = np.random.default_rng(1)
    y = rng.random(200_000) < 0.1
    result = summarize(y, rng.random(200_000))
    assert result["auc"] == pytest.approx(0.5, abs=0.01)
    assert result["ap"] == pytest.approx(y.mean(), abs=0.01)
    assert result["r_at_p90"] < 0.001


def test_recall_at_precision_is_zero_when_target_never_reached():
    y = np.array([0, 1, 0, 1])
    score = np.array([0.9, 0.8, 0.7, 0.6])  # precision peaks at 0.5
    assert recall_at_precision(y, score, 0.9) == 0.0
    assert recall_at_precision(y, score, 0.5) == 1.0


def test_recall_at_precision_takes_highest_qualifying_recall():
    # Precision dips below 0.9 at rank 2, then recovers: the later, larger recall counts.
    y = np.array([1, 0] + [1] * 18)
    score = -np.arange(20.0)
    assert recall_at_precision(y, score, 0.9) == 1.0


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_auc_is_nan(label):
    assert math.isnan(roc_auc(np.full(5, label), np.arange(5.0)))


def test_no_positives():
    y, score = np.zeros(4), np.arange(4.0)
    assert math.isnan(average_precision(y, score))
    assert math.isnan(recall_at_precision(y, score))
    with pytest.raises(ValueError, match="at least one positive"):
        precision_recall_curve(y, score)


def test_only_positives():
    y, score = np.ones(4), np.arange(4.0)
    assert average_precision(y, score) == 1.0
    assert recall_at_precision(y, score) == 1.0


def test_accepts_bool_and_float_labels():
    assert roc_auc(Y.astype(bool), SCORE) == roc_auc(Y.astype(float), SCORE) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("y", "score", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 2], [0.1, 0.2], "only 0 and 1"),
        ([0, 1], [0.1, np.nan], "NaN or infinite"),
        ([], [], "empty"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
@pytest.mark.parametrize("metric", [roc_auc, average_precision, recall_at_precision, precision_recall_curve, summarize])
def test_rejects_malformed_input(metric, y, score, message):
    with pytest.raises(ValueError, match=message):
        metric(np.asarray(y), np.asarray(score))


@pytest.mark.parametrize("target", [0.0, 1.5])
def test_rejects_precision_target_outside_unit_interval(target):
    with pytest.raises(ValueError, match="precision must be in"):
        recall_at_precision(Y, SCORE, target)
