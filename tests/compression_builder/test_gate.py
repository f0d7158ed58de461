import pytest

from compression_builder.gate import (
    HOLDOUT_ONE_CLASS,
    NO_POSITIVES,
    TOO_FEW_POSITIVES,
    TOO_FEW_SAMPLES,
    WORSE_THAN_ENCODER,
    WORSE_THAN_SERVING,
    GateConfig,
    check_data,
    check_quality,
)


def test_data_checks_name_every_problem():
    config = GateConfig(min_labelled=100, min_positives=5)
    assert check_data(1000, 50, {0, 1}, config) == []
    assert check_data(50, 0, {0}, config) == [TOO_FEW_SAMPLES, NO_POSITIVES, HOLDOUT_ONE_CLASS]
    assert check_data(1000, 3, {0, 1}, config) == [TOO_FEW_POSITIVES]


def test_quality_compares_against_encoder_and_serving_with_tolerance():
    config = GateConfig(metric="ap", tolerance=0.01)
    assert check_quality({"ap": 0.50}, {"ap": 0.505}, {"ap": 0.509}, config) == []
    assert check_quality({"ap": 0.50}, {"ap": 0.52}, None, config) == [WORSE_THAN_ENCODER]
    assert check_quality({"ap": 0.50}, {"ap": 0.40}, {"ap": 0.60}, config) == [WORSE_THAN_SERVING]
    assert check_quality({"auc": 0.7, "ap": 0.1}, {"auc": 0.6, "ap": 0.9}, None, GateConfig(metric="auc")) == []


def test_gate_config_rejects_unknown_metric_and_negative_tolerance():
    with pytest.raises(ValueError, match="unknown gate metric"):
        GateConfig(metric="f1")
    with pytest.raises(ValueError, match="tolerance"):
        GateConfig(tolerance=-0.1)
