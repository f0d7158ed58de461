"""Versioned, verified model artifacts: the format (`bundle`, `manifest`, `safe_npz`, `reader`) and
the crash-safe store (`store`).

An artifact is an immutable directory with everything a worker needs to score: feature spec,
encoder and GNN weights, the compressed graph, golden inputs with their expected scores, and a
manifest that hashes every file. Weights never go through pickle. docs/builder.md describes the
layout and the hot swap.
"""

from ecseq.artifacts.bundle import ModelBundle
from ecseq.artifacts.manifest import FORMAT_VERSION
from ecseq.artifacts.names import REASONS, ArtifactError
from ecseq.artifacts.store import ArtifactStore, LoadedArtifact, Published, StoreBusy

__all__ = ["FORMAT_VERSION", "REASONS", "ArtifactError", "ArtifactStore", "LoadedArtifact", "ModelBundle",
           "Published", "StoreBusy"]
