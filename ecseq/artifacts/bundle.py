"""ModelBundle, what an artifact holds in memory, and the model files it is written as."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ecseq.artifacts.names import ENCODER, FEATURE_SPEC, GNN, GOLDEN, GRAPH
from ecseq.artifacts.safe_npz import npz_bytes
from ecseq.encoders.models import SequenceEncoder
from ecseq.features import FeatureSpec
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.scoring import Scorer


@dataclass(frozen=True)
class ModelBundle:
    """What an artifact holds, in memory."""

    feature_spec: FeatureSpec
    window: int  # L, events per sequence window
    encoder: SequenceEncoder
    relation: RelationModel
    explain_k: int = 3

    def __post_init__(self) -> None:
        if not self.relation.dense:
            raise ValueError("only compressed-graph (dense) relation models can be stored as artifacts; "
                             "a full-graph model keeps every training sequence as a node")
        for name in ("window", "explain_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))  # numpy ints become plain ints (JSON)

    def scorer(self) -> Scorer:
        return Scorer(self.encoder, self.relation, self.explain_k)


def state_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def check_bundle(bundle: ModelBundle) -> None:
    """Cheap consistency checks before anything is written; ValueError names the problem."""
    graph = bundle.relation.graph
    if not isinstance(bundle.feature_spec, FeatureSpec):
        raise TypeError("bundle.feature_spec must be a FeatureSpec")
    if not isinstance(bundle.encoder, SequenceEncoder):
        raise TypeError("bundle.encoder must be a SequenceEncoder")
    if not isinstance(bundle.relation.gnn, RelationGNN):
        raise TypeError("bundle.relation.gnn must be a RelationGNN")
    for name, value, dtype, ndim in (("centroids", graph.centroids, np.float32, 2),
                                     ("positive_rate", graph.positive_rate, np.float32, 1),
                                     ("size", graph.size, np.int64, 1)):
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim:
            raise ValueError(f"graph.{name} must be a {ndim}-d {np.dtype(dtype).name} array")
    if bundle.encoder.config["input_dim"] != bundle.feature_spec.dim:
        raise ValueError(f"encoder input_dim {bundle.encoder.config['input_dim']} != feature_spec.dim "
                         f"{bundle.feature_spec.dim}")


def golden_windows(bundle: ModelBundle, golden: object) -> np.ndarray:
    windows = np.ascontiguousarray(np.asarray(golden, dtype=np.float32))
    want = (bundle.window, bundle.feature_spec.dim)
    if windows.ndim != 3 or windows.shape[0] < 1 or windows.shape[1:] != want:
        raise ValueError(f"golden must be (n >= 1, {want[0]}, {want[1]}) featurised windows, got {windows.shape}")
    if not np.isfinite(windows).all():
        raise ValueError("golden windows must be finite")
    return windows


def bundle_files(bundle: ModelBundle, golden: np.ndarray) -> dict[str, bytes]:
    """The model files of an artifact (everything but extra files and the manifest)."""
    graph = bundle.relation.graph
    with torch.inference_mode():
        batch = bundle.scorer().score_windows(torch.from_numpy(golden))
    return {
        FEATURE_SPEC: bundle.feature_spec.to_json().encode("utf-8"),
        ENCODER: npz_bytes(state_arrays(bundle.encoder)),
        GNN: npz_bytes(state_arrays(bundle.relation.gnn)),
        GRAPH: npz_bytes({"centroids": graph.centroids, "positive_rate": graph.positive_rate, "size": graph.size}),
        GOLDEN: npz_bytes({"windows": golden, "score": np.asarray(batch.score, dtype=np.float32),
                           "encoder_score": np.asarray(batch.encoder_score, dtype=np.float32)}),
    }
