"""read_artifact: every check of a version directory, cheapest first, then its bundle and scorer.

The checks run in order: the directory and manifest, file names, sizes and checksums; only then
the weights (safe npz reading, keys, shapes, dtypes, finiteness), the graph, and last the golden
scores. Each failure is an ArtifactError with a short reason code. The checked arrays are
assigned into the manifest's meta-device modules (load_state_dict(strict=True, assign=True)), so
loading never touches the global torch RNG.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ecseq.artifacts.bundle import ModelBundle
from ecseq.artifacts.manifest import check_manifest
from ecseq.artifacts.names import (
    ENCODER,
    FEATURE_SPEC,
    GNN,
    GOLDEN,
    GRAPH,
    MANIFEST,
    refuse,
    unsafe_name_problem,
)
from ecseq.artifacts.safe_json import parse_json
from ecseq.artifacts.safe_npz import read_npz
from ecseq.encoders.models import SequenceEncoder
from ecseq.features import FeatureSpec
from ecseq.gnn import RelationGNN, RelationModel
from ecseq.graph import Attachment, CompressedGraph
from ecseq.scoring import Scorer
from ecseq.stages import OnStage, StageClock

GOLDEN_TOLERANCE = 1e-5
MAX_MANIFEST_BYTES = 1 << 20

_TORCH_TO_NUMPY = {torch.float32: np.dtype("<f4"), torch.float64: np.dtype("<f8"), torch.float16: np.dtype("<f2"),
                   torch.int64: np.dtype("<i8"), torch.int32: np.dtype("<i4"), torch.uint8: np.dtype("u1"),
                   torch.bool: np.dtype("?")}


@dataclass(frozen=True)
class _Manifest:
    data: dict
    sha256: str
    encoder: SequenceEncoder  # on the meta device: the expected state_dict
    gnn: RelationGNN  # on the meta device
    attachment: Attachment


def _open_dir(path: Path, version: str) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise refuse(version, "not_found", f"no such version directory {path}") from None
    if stat.S_ISLNK(st.st_mode):
        raise refuse(version, "unsafe_path", f"version directory {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise refuse(version, "not_found", f"{path} is not a directory")
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise refuse(version, "not_found", f"no such version directory {path}") from None


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


class NotARegularFile(OSError):
    """A directory, fifo, socket or device where a file was expected."""


def read_regular_file(path: str | os.PathLike, limit: int, dir_fd: int | None = None) -> bytes:
    """At most `limit` + 1 bytes of a regular file (so a caller sees one that is larger than it may
    be), never through a symlink (OSError ELOOP) nor blocking on a fifo (NotARegularFile)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # checked before fdopen, which refuses a directory itself
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit + 1)


def _read(dfd: int, name: str, version: str, limit: int) -> bytes:
    """`read_regular_file` of a file in the version directory, any problem a refusal."""
    try:
        return read_regular_file(name, limit, dir_fd=dfd)
    except FileNotFoundError:
        raise refuse(version, "missing_file", f"{name} is missing") from None
    except NotARegularFile:
        raise refuse(version, "unsafe_path", f"{name} is not a regular file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse(version, "unsafe_path", f"{name} is a symlink") from None
        raise refuse(version, "missing_file", f"{name} cannot be read ({exc.strerror})") from None


def _read_manifest(dfd: int, version: str) -> tuple[dict, str]:
    st = _lstat(dfd, MANIFEST)
    if st is None:
        raise refuse(version, "missing_manifest", f"{MANIFEST} is missing")
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise refuse(version, "unsafe_path", f"{MANIFEST} is not a regular file")
    raw = _read(dfd, MANIFEST, version, MAX_MANIFEST_BYTES)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise refuse(version, "bad_manifest", f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        parsed = parse_json(raw)
    except ValueError as exc:
        raise refuse(version, "bad_manifest", f"{MANIFEST} is not JSON within limits ({exc})") from None
    if not isinstance(parsed, dict):
        raise refuse(version, "bad_manifest", f"{MANIFEST} is not a JSON object")
    return parsed, hashlib.sha256(raw).hexdigest()


def _load_manifest(dfd: int, version: str) -> _Manifest:
    m, sha = _read_manifest(dfd, version)
    encoder, gnn, attachment = check_manifest(m, version)
    return _Manifest(m, sha, encoder, gnn, attachment)


def read_manifest(path: Path, version: str) -> tuple[dict, str]:
    """The manifest of the version directory at `path`, checked as far as the manifest goes."""
    dfd = _open_dir(path, version)
    try:
        loaded = _load_manifest(dfd, version)
        return loaded.data, loaded.sha256
    finally:
        os.close(dfd)


def _read_files(dfd: int, files: dict, version: str) -> dict[str, bytes]:
    """Names, presence, sizes, then checksums of every listed file; returns their bytes."""
    for name in files:
        problem = unsafe_name_problem(name)
        if problem is not None:
            raise refuse(version, "unsafe_path", f"file name {name!r} in {MANIFEST}: {problem}")
    stats = {name: _lstat(dfd, name) for name in files}
    for name, st in stats.items():
        if st is not None and (stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode)):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise refuse(version, "unsafe_path", f"{name} is {kind}")
    missing = sorted(name for name, st in stats.items() if st is None)
    if missing:
        raise refuse(version, "missing_file", f"{', '.join(missing)} missing")
    for name, st in stats.items():
        assert st is not None  # the missing ones were refused just above
        if st.st_size != files[name]["size"]:
            raise refuse(version, "size_mismatch", f"size mismatch in {name} (expected {files[name]['size']} "
                                                   f"bytes, found {st.st_size})")
    contents = {}
    for name, entry in files.items():
        data = _read(dfd, name, version, entry["size"])
        if len(data) != entry["size"]:
            raise refuse(version, "size_mismatch", f"size mismatch in {name} (expected {entry['size']} bytes, "
                                                   f"read {len(data)})")
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"]:
            raise refuse(version, "checksum_mismatch", f"checksum mismatch in {name} (expected "
                                                       f"{entry['sha256'][:12]}…, got {got[:12]}…)")
        contents[name] = data
    return contents


def _check_state(arrays: dict[str, np.ndarray], module: nn.Module, name: str, version: str) -> None:
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise refuse(version, "shape_mismatch", f"{name} keys differ from the module (missing {missing}, "
                                                f"unexpected {extra})")
    for key, tensor in expected.items():
        array, want = arrays[key], _TORCH_TO_NUMPY.get(tensor.dtype)
        if array.shape != tuple(tensor.shape) or want is None or array.dtype != want:
            raise refuse(version, "shape_mismatch", f"{name}[{key}] is {array.dtype}{list(array.shape)}, the "
                                                    f"module needs {want}{list(tensor.shape)}")


def _check_array(arrays: dict, key: str, shape: tuple, dtype: np.dtype, name: str, version: str) -> np.ndarray:
    array = arrays[key]
    if array.shape != shape or array.dtype != dtype:
        raise refuse(version, "shape_mismatch", f"{name}[{key}] is {array.dtype}{list(array.shape)}, expected "
                                                f"{np.dtype(dtype)}{list(shape)}")
    return array


def _check_keys(arrays: dict, keys: set, name: str, version: str) -> None:
    if set(arrays) != keys:
        raise refuse(version, "shape_mismatch", f"{name} has arrays {sorted(arrays)}, expected {sorted(keys)}")


_M = TypeVar("_M", bound=nn.Module)


def _assign(module: _M, arrays: dict[str, np.ndarray], name: str, version: str) -> _M:
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise refuse(version, "shape_mismatch", f"{name} leaves module tensors unset: {left}")
    return module.eval()


def read_artifact(path: Path, version: str, on_stage: OnStage | None = None
                  ) -> tuple[dict, str, ModelBundle, Scorer]:
    """Check the version directory at `path` completely and build its bundle and scorer.

    -> (manifest, manifest sha256, bundle, scorer). Any failure is an ArtifactError. `on_stage`,
    if given, is told the seconds spent in each stage.
    """
    lap = StageClock(on_stage).lap

    dfd = _open_dir(Path(path), version)
    try:
        manifest = _load_manifest(dfd, version)
        contents = _read_files(dfd, manifest.data["files"], version)
    finally:
        os.close(dfd)
    lap("manifest_checksums")

    m = manifest.data
    model = m["model"]
    arrays = {name: read_npz(contents[name], name, version) for name in (ENCODER, GNN, GRAPH, GOLDEN)}
    try:
        parse_json(contents[FEATURE_SPEC])  # within limits, before the spec's own parse
        spec = FeatureSpec.from_json(contents[FEATURE_SPEC].decode("utf-8"))
        spec_dim = spec.dim
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise refuse(version, "bad_weights", f"{FEATURE_SPEC} is unreadable ({type(exc).__name__}: {exc})") from None

    enc, gnn = manifest.encoder, manifest.gnn
    _check_state(arrays[ENCODER], enc, ENCODER, version)
    _check_state(arrays[GNN], gnn, GNN, version)
    k, d, feature_dim = model["nodes"], model["embedding_dim"], model["feature_dim"]
    dims = {"feature_spec.json dim": spec_dim, "model.feature_dim": feature_dim,
            "encoder input_dim": enc.config["input_dim"]}
    if len(set(dims.values())) != 1:
        raise refuse(version, "shape_mismatch", f"feature dims disagree: {dims}")
    dims = {"model.embedding_dim": d, "encoder hidden": enc.embedding_dim,
            "gnn embedding_dim": gnn.config["embedding_dim"]}
    if len(set(dims.values())) != 1:
        raise refuse(version, "shape_mismatch", f"embedding dims disagree: {dims}")
    node_dim = d + int(gnn.config["use_label_rate"])
    if gnn.config["node_dim"] != node_dim:
        raise refuse(version, "shape_mismatch", f"gnn node_dim {gnn.config['node_dim']} != {node_dim} "
                                                "(embedding dim + label rate)")
    graph_arrays = arrays[GRAPH]
    _check_keys(graph_arrays, {"centroids", "positive_rate", "size"}, GRAPH, version)
    centroids = _check_array(graph_arrays, "centroids", (k, d), np.dtype("<f4"), GRAPH, version)
    positive_rate = _check_array(graph_arrays, "positive_rate", (k,), np.dtype("<f4"), GRAPH, version)
    size = _check_array(graph_arrays, "size", (k,), np.dtype("<i8"), GRAPH, version)
    golden = arrays[GOLDEN]
    _check_keys(golden, {"windows", "score", "encoder_score"}, GOLDEN, version)
    n = golden["windows"].shape[0] if golden["windows"].ndim == 3 else -1
    if n < 1:
        raise refuse(version, "shape_mismatch", f"{GOLDEN}[windows] is {list(golden['windows'].shape)}, "
                                                f"expected [n, {model['window']}, {feature_dim}]")
    windows = _check_array(golden, "windows", (n, model["window"], feature_dim), np.dtype("<f4"), GOLDEN, version)
    expected_score = _check_array(golden, "score", (n,), np.dtype("<f4"), GOLDEN, version)
    expected_encoder = _check_array(golden, "encoder_score", (n,), np.dtype("<f4"), GOLDEN, version)

    for name in (ENCODER, GNN, GRAPH, GOLDEN):
        for key, array in arrays[name].items():
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise refuse(version, "non_finite", f"{name}[{key}] holds NaN or inf")
    if not ((positive_rate >= 0) & (positive_rate <= 1)).all():
        raise refuse(version, "bad_graph", f"{GRAPH}[positive_rate] outside [0, 1]")
    if not (size >= 1).all():
        raise refuse(version, "bad_graph", f"{GRAPH}[size] has nodes with fewer than 1 member")
    lap("weights_parse")

    encoder = _assign(enc, arrays[ENCODER], ENCODER, version)
    relation_gnn = _assign(gnn, arrays[GNN], GNN, version)
    relation = RelationModel(CompressedGraph(centroids, positive_rate, size), relation_gnn, manifest.attachment,
                             dense=True, max_neighbours=model["attachment"]["max_neighbours"])
    bundle = ModelBundle(spec, model["window"], encoder, relation, model["explain_k"])
    lap("module_build")

    scorer = bundle.scorer()
    lap("scorer")

    with torch.inference_mode():
        batch = scorer.score_windows(torch.from_numpy(windows))
    for label, got, want in (("score", batch.score, expected_score),
                             ("encoder_score", batch.encoder_score, expected_encoder)):
        diff = np.abs(np.asarray(got, dtype=np.float64) - want)
        if not np.isfinite(diff).all() or diff.max() > GOLDEN_TOLERANCE:
            worst = int(np.argmax(np.where(np.isfinite(diff), diff, np.inf)))
            raise refuse(version, "golden_mismatch",
                         f"golden {label} differs in {GOLDEN} (window {worst}: expected {want[worst]:.7f}, "
                         f"got {float(got[worst]):.7f}; tolerance {GOLDEN_TOLERANCE:g})")
    lap("golden")
    return m, manifest.sha256, bundle, scorer
