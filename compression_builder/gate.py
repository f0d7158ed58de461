"""The quality gate: a rebuilt graph is published only if held-out data says it is not worse.

Two kinds of refusal: the window's data cannot support a build at all (checked before any
training, so a bad window costs nothing), or the candidate scores worse on the most recent
held-out labels than the encoder alone or the artifact now serving, beyond a tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compression_builder.settings import GATE_METRICS

# Refusal reasons; the same words label the builder's metrics and appear in report.json.
NO_POSITIVES = "no_positives"
TOO_FEW_POSITIVES = "too_few_positives"
TOO_FEW_SAMPLES = "too_few_samples"
HOLDOUT_ONE_CLASS = "holdout_one_class"
WORSE_THAN_ENCODER = "worse_than_encoder"
WORSE_THAN_SERVING = "worse_than_serving"


@dataclass(frozen=True)
class GateConfig:
    metric: str = "ap"
    tolerance: float = 0.005  # candidate may trail a reference by this much (noise of a small holdout)
    min_labelled: int = 200  # labelled sequences in the window
    min_positives: int = 10  # positives in the part the graph is built from

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(f"unknown gate metric {self.metric!r}; choose from {', '.join(GATE_METRICS)}")
        if not (math.isfinite(self.tolerance) and 0 <= self.tolerance <= 1):
            raise ValueError(f"gate tolerance must be a number from 0 to 1, got {self.tolerance}")


def check_data(labelled: int, fit_positives: int, holdout_labels: set[int], config: GateConfig) -> list[str]:
    """Reasons the window cannot be built from; empty if it can."""
    reasons = []
    if labelled < config.min_labelled:
        reasons.append(TOO_FEW_SAMPLES)
    if fit_positives == 0:
        reasons.append(NO_POSITIVES)
    elif fit_positives < config.min_positives:
        reasons.append(TOO_FEW_POSITIVES)
    if holdout_labels != {0, 1}:
        reasons.append(HOLDOUT_ONE_CLASS)
    return reasons


def check_quality(candidate: dict, encoder: dict, serving: dict | None, config: GateConfig) -> list[str]:
    """Reasons to refuse the candidate after evaluation; empty to publish."""
    reasons = []
    floor = candidate[config.metric] + config.tolerance
    if floor < encoder[config.metric]:
        reasons.append(WORSE_THAN_ENCODER)
    if serving is not None and floor < serving[config.metric]:
        reasons.append(WORSE_THAN_SERVING)
    return reasons
