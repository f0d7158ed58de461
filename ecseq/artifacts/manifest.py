"""manifest.json: built from a bundle when publishing, and checked key by key when reading.

The manifest (written last) holds the format version, the model configs and the sha256 and
size of every other file. A read manifest's module configs are checked by building the modules
on torch's meta device (no memory, no random init), which also gives the exact state_dicts the
weights must match.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

import numpy as np
import torch
from torch import nn

from ecseq.artifacts.bundle import ModelBundle
from ecseq.artifacts.names import MANIFEST, REQUIRED_FILES, is_version_name, refuse
from ecseq.encoders.models import BACKBONES, SequenceEncoder, build_encoder
from ecseq.gnn import LAYERS, RelationGNN
from ecseq.graph import Attachment

FORMAT_VERSION = 1
# An artifact is a few MB (weights, centroids, golden windows); these bound what a reader loads.
MAX_FILE_BYTES = 256 << 20
MAX_ARTIFACT_BYTES = 512 << 20

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_GNN_PARAMS = {name: p for name, p in inspect.signature(RelationGNN.__init__).parameters.items() if name != "self"}


def file_entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_manifest(bundle: ModelBundle, version: str, *, parent: str | None, encoder_version: str,
                   data: dict, metrics: dict, files: Mapping[str, bytes], created_at: str | None = None) -> dict:
    relation, graph = bundle.relation, bundle.relation.graph
    return {
        "format_version": FORMAT_VERSION,
        "version": version,
        "parent": parent,
        "encoder_version": encoder_version,
        "created_at": created_at or utc_now(),
        "model": {
            "window": bundle.window,
            "explain_k": bundle.explain_k,
            "encoder": jsonable(dict(bundle.encoder.config), "encoder.config"),
            "gnn": jsonable(dict(relation.gnn.config), "gnn.config"),
            "attachment": {"epsilon": float(relation.attachment.epsilon), "top_k": relation.attachment.top_k,
                           "max_neighbours": int(relation.max_neighbours)},
            "nodes": graph.k,
            "embedding_dim": int(graph.centroids.shape[1]),
            "feature_dim": bundle.feature_spec.dim,
        },
        "data": data,
        "metrics": metrics,
        "files": {name: file_entry(content) for name, content in sorted(files.items())},
    }


def manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def jsonable(value: object, where: str) -> object:
    """A JSON-safe copy of caller data: numpy scalars/arrays become Python values, NaN/inf become
    None (strict JSON has no NaN); anything else that JSON cannot hold is a TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a string")
            out[key] = jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _is_int(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_P = ParamSpec("_P")
_M = TypeVar("_M", bound=nn.Module)


def _meta_build(build: Callable[_P, _M], *args: _P.args, **kwargs: _P.kwargs) -> _M:
    with torch.device("meta"):
        return build(*args, **kwargs)


def check_manifest(m: dict, version: str) -> tuple[SequenceEncoder, RelationGNN, Attachment]:
    """Check a parsed manifest of `version`: format version, then schema, then the version it names.

    -> the encoder and GNN it describes (on the meta device) and its attachment.
    """
    fmt = m.get("format_version")
    if not _is_int(fmt, 0):
        raise refuse(version, "bad_manifest", f"{MANIFEST}: format_version {fmt!r} is not an int")
    if fmt != FORMAT_VERSION:
        raise refuse(version, "unsupported_format",
                     f"format_version {fmt} in {MANIFEST}, this reader supports {FORMAT_VERSION}")
    encoder, gnn, attachment = _check_schema(m, version)
    if m["version"] != version:
        raise refuse(version, "version_mismatch", f"{MANIFEST} says version {m['version']!r}")
    return encoder, gnn, attachment


def _check_schema(m: dict, version: str) -> tuple[SequenceEncoder, RelationGNN, Attachment]:
    """Every key and type the loader relies on; the module configs are checked by building the
    modules on the meta device (free: no memory, no init)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise refuse(version, "bad_manifest", f"{MANIFEST}: {what}")

    for key in ("version", "parent", "encoder_version", "created_at", "model", "data", "metrics", "files"):
        need(key in m, f"missing key {key!r}")
    need(isinstance(m["version"], str), "version is not a string")
    need(m["parent"] is None or is_version_name(m["parent"]), f"parent {m['parent']!r} is not a version name")
    need(is_version_name(m["encoder_version"]), f"encoder_version {m['encoder_version']!r} is not a version name")
    need(isinstance(m["created_at"], str) and _is_time(m["created_at"]),
         f"created_at {str(m['created_at'])[:40]!r} is not an ISO-8601 time")
    need(isinstance(m["data"], dict), "data is not an object")
    need(isinstance(m["metrics"], dict), "metrics is not an object")
    files = m["files"]
    need(isinstance(files, dict), "files is not an object")
    for name, entry in files.items():
        need(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
             and _SHA256_RE.fullmatch(entry["sha256"]) is not None and _is_int(entry.get("size"), 0),
             f"files[{name!r}] needs a hex sha256 and an int size")
        need(entry["size"] <= MAX_FILE_BYTES, f"files[{name!r}] is {entry['size']} bytes, more than {MAX_FILE_BYTES}")
    need(MANIFEST not in files, f"files lists {MANIFEST} itself")
    need(sum(entry["size"] for entry in files.values()) <= MAX_ARTIFACT_BYTES,
         f"files add up to more than {MAX_ARTIFACT_BYTES} bytes")
    for name in REQUIRED_FILES:
        need(name in files, f"files does not list {name}")
    model = m["model"]
    need(isinstance(model, dict), "model is not an object")
    for key in ("window", "explain_k", "encoder", "gnn", "attachment", "nodes", "embedding_dim", "feature_dim"):
        need(key in model, f"model is missing {key!r}")
    for key in ("window", "explain_k", "nodes", "embedding_dim", "feature_dim"):
        need(_is_int(model[key]), f"model.{key} is not a positive int")
    att = model["attachment"]
    need(isinstance(att, dict) and {"epsilon", "top_k", "max_neighbours"} <= set(att), "model.attachment keys")
    need(isinstance(att["epsilon"], (int, float)) and not isinstance(att["epsilon"], bool)
         and math.isfinite(att["epsilon"]), "model.attachment.epsilon is not a number")
    need(att["top_k"] is None or _is_int(att["top_k"]), "model.attachment.top_k is not null or a positive int")
    need(_is_int(att["max_neighbours"]), "model.attachment.max_neighbours is not a positive int")
    try:
        attachment = Attachment(float(att["epsilon"]), att["top_k"])
        attachment.slots(att["max_neighbours"])
    except ValueError as exc:
        need(False, f"model.attachment: {exc}")

    enc = model["encoder"]
    need(isinstance(enc, dict) and enc.get("backbone") in BACKBONES,
         f"model.encoder.backbone must be one of {', '.join(BACKBONES)}")
    need(all(_is_int(v) for k, v in enc.items() if k != "backbone"), "model.encoder values must be positive ints")
    try:
        encoder = _meta_build(build_encoder, enc)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise refuse(version, "bad_manifest", f"{MANIFEST}: model.encoder cannot be built ({exc})") from None

    gnn = model["gnn"]
    need(isinstance(gnn, dict), "model.gnn is not an object")
    unknown = set(gnn) - set(_GNN_PARAMS)
    need(not unknown, f"model.gnn has unknown keys {sorted(unknown)}")
    missing = [k for k, p in _GNN_PARAMS.items() if p.default is inspect.Parameter.empty and k not in gnn]
    need(not missing, f"model.gnn is missing {missing}")
    for key in ("embedding_dim", "node_dim", "hidden"):
        need(key not in gnn or _is_int(gnn[key]), f"model.gnn.{key} is not a positive int")
    for key in ("residual", "use_label_rate"):
        need(key not in gnn or isinstance(gnn[key], bool), f"model.gnn.{key} is not a bool")
    need(gnn.get("layer", "sage_mean") in LAYERS, f"model.gnn.layer must be one of {', '.join(LAYERS)}")
    try:
        relation_gnn = _meta_build(RelationGNN, **gnn)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise refuse(version, "bad_manifest", f"{MANIFEST}: model.gnn cannot be built ({exc})") from None
    return encoder, relation_gnn, attachment


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
