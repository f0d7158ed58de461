"""The names an artifact uses: its files, version names, safe file names, and the reason codes an
ArtifactError carries when an artifact is refused.

A version directory holds feature_spec.json, encoder.npz, gnn.npz, graph.npz, golden.npz, any
extra files, and manifest.json (written last) with the sha256 and size of every other file.
"""

from __future__ import annotations

import os
import re

MANIFEST = "manifest.json"
FEATURE_SPEC = "feature_spec.json"
ENCODER = "encoder.npz"
GNN = "gnn.npz"
GRAPH = "graph.npz"
GOLDEN = "golden.npz"
REQUIRED_FILES = (FEATURE_SPEC, ENCODER, GNN, GRAPH, GOLDEN)

REASONS = ("not_found", "bad_current", "missing_manifest", "bad_manifest", "unsupported_format", "version_mismatch",
           "unsafe_path", "missing_file", "size_mismatch", "checksum_mismatch", "unsafe_weights",
           "bad_weights", "shape_mismatch", "non_finite", "bad_graph", "golden_mismatch")

_VERSION_RE = re.compile(r"v[0-9]{6,}")


class ArtifactError(Exception):
    """A refused artifact: `reason` is a short code (REASONS), str(exc) one line naming version and file."""

    def __init__(self, reason: str, message: str, version: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.version = version


def refuse(version: str, reason: str, detail: str) -> ArtifactError:
    return ArtifactError(reason, f"artifact {version}: {detail}", version)


def version_name(number: int) -> str:
    return f"v{number:06d}"


def is_version_name(name: object) -> bool:
    return isinstance(name, str) and _VERSION_RE.fullmatch(name) is not None


def version_number(name: str) -> int:
    return int(name[1:])


def unsafe_name_problem(name: object) -> str | None:
    """Why `name` may not be a file name inside an artifact directory, or None if it may."""
    if not isinstance(name, str) or not name:
        return "empty or not a string"
    if name.startswith("/") or os.path.isabs(name):
        return "absolute path"
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in seps):
        return "contains a path separator"
    if ".." in name or name == ".":
        return "contains '..'"
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return "contains a control character"
    return None
