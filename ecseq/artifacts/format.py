"""The artifact format: what a version directory holds, how it is written and how it is checked.

A version directory holds feature_spec.json, encoder.npz, gnn.npz, graph.npz, golden.npz, any
extra files, and manifest.json (written last) with the sha256 and size of every other file.
Weights are plain .npz archives of numeric arrays: they are written with allow_pickle=False and
read with allow_pickle=False after the zip members' .npy headers have been checked, so no byte
of an artifact is ever unpickled or executed. `read_artifact` runs every check, cheapest first
(the manifest, names, sizes, checksums; only then the weights), and turns each failure into an
ArtifactError with a short reason code.

Modules are first built on torch's meta device from the manifest configs (no memory, no random
init), which gives the exact state_dict keys, shapes and dtypes to check the arrays against;
the checked arrays are then assigned into those modules (load_state_dict(strict=True,
assign=True)), so loading never touches the global torch RNG.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import io
import json
import math
import numbers
import os
import pickletools
import re
import stat
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecseq.encoders.models import BACKBONES, SequenceEncoder, build_encoder
from ecseq.features import FeatureSpec
from ecseq.gnn import LAYERS, RelationGNN
from ecseq.graph import Attachment, CompressedGraph
from ecseq.relation import RelationModel
from ecseq.scoring import Scorer

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FEATURE_SPEC = "feature_spec.json"
ENCODER = "encoder.npz"
GNN = "gnn.npz"
GRAPH = "graph.npz"
GOLDEN = "golden.npz"
REQUIRED_FILES = (FEATURE_SPEC, ENCODER, GNN, GRAPH, GOLDEN)
GOLDEN_TOLERANCE = 1e-5
MAX_MANIFEST_BYTES = 16 << 20

REASONS = ("not_found", "missing_manifest", "bad_manifest", "unsupported_format", "version_mismatch",
           "unsafe_path", "missing_file", "size_mismatch", "checksum_mismatch", "unsafe_weights",
           "bad_weights", "shape_mismatch", "non_finite", "bad_graph", "golden_mismatch")

_VERSION_RE = re.compile(r"v[0-9]{6,}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TORCH_TO_NUMPY = {torch.float32: np.dtype("<f4"), torch.float64: np.dtype("<f8"), torch.float16: np.dtype("<f2"),
                   torch.int64: np.dtype("<i8"), torch.int32: np.dtype("<i4"), torch.uint8: np.dtype("u1"),
                   torch.bool: np.dtype("?")}
_GNN_PARAMS = {name: p for name, p in inspect.signature(RelationGNN.__init__).parameters.items() if name != "self"}


class ArtifactError(Exception):
    """A refused artifact: `reason` is a short code (REASONS), str(exc) one line naming version and file."""

    def __init__(self, reason: str, message: str, version: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.version = version


def _refuse(version: str, reason: str, detail: str) -> ArtifactError:
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


# ---------------------------------------------------------------------------------------------
# Writing


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed .npz of numeric arrays; object arrays are refused (allow_pickle=False)."""
    for key, value in arrays.items():
        if key in ("file", "allow_pickle") or unsafe_name_problem(key) is not None:
            raise ValueError(f"array name {key!r} cannot be stored in an npz")
        if value.dtype.hasobject:
            raise ValueError(f"array {key!r} has an object dtype; weights must be numeric")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


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


# ---------------------------------------------------------------------------------------------
# Reading and checking


@dataclass(frozen=True)
class _Manifest:
    data: dict
    sha256: str
    encoder: SequenceEncoder  # on the meta device: the expected state_dict
    gnn: RelationGNN  # on the meta device
    attachment: Attachment


def _is_int(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _open_dir(path: Path, version: str) -> int:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _refuse(version, "not_found", f"no such version directory {path}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(version, "unsafe_path", f"version directory {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(version, "not_found", f"{path} is not a directory")
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise _refuse(version, "not_found", f"no such version directory {path}") from None


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return None


def _read(dfd: int, name: str, version: str) -> bytes:
    """Read a regular file in the directory, never following a symlink nor blocking on a fifo."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except FileNotFoundError:
        raise _refuse(version, "missing_file", f"{name} is missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(version, "unsafe_path", f"{name} is a symlink") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise _refuse(version, "unsafe_path", f"{name} is not a regular file")
        return fh.read()


def _read_manifest(dfd: int, version: str) -> tuple[dict, str]:
    st = _lstat(dfd, MANIFEST)
    if st is None:
        raise _refuse(version, "missing_manifest", f"{MANIFEST} is missing")
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise _refuse(version, "unsafe_path", f"{MANIFEST} is not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise _refuse(version, "bad_manifest", f"{MANIFEST} is {st.st_size} bytes")
    raw = _read(dfd, MANIFEST, version)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(version, "bad_manifest", f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise _refuse(version, "bad_manifest", f"{MANIFEST} is not a JSON object")
    return parsed, hashlib.sha256(raw).hexdigest()


def _meta_build(build, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(*args, **kwargs)


def _check_schema(m: dict, version: str) -> tuple[SequenceEncoder, RelationGNN, Attachment]:
    """Every key and type the loader relies on; the module configs are checked by building the
    modules on the meta device (free: no memory, no init)."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise _refuse(version, "bad_manifest", f"{MANIFEST}: {what}")

    for key in ("version", "parent", "encoder_version", "created_at", "model", "data", "metrics", "files"):
        need(key in m, f"missing key {key!r}")
    need(isinstance(m["version"], str), "version is not a string")
    need(m["parent"] is None or is_version_name(m["parent"]), f"parent {m['parent']!r} is not a version name")
    need(is_version_name(m["encoder_version"]), f"encoder_version {m['encoder_version']!r} is not a version name")
    need(isinstance(m["created_at"], str), "created_at is not a string")
    need(isinstance(m["data"], dict), "data is not an object")
    need(isinstance(m["metrics"], dict), "metrics is not an object")
    files = m["files"]
    need(isinstance(files, dict), "files is not an object")
    for name, entry in files.items():
        need(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
             and _SHA256_RE.fullmatch(entry["sha256"]) is not None and _is_int(entry.get("size"), 0),
             f"files[{name!r}] needs a hex sha256 and an int size")
    need(MANIFEST not in files, f"files lists {MANIFEST} itself")
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
        raise _refuse(version, "bad_manifest", f"{MANIFEST}: model.encoder cannot be built ({exc})") from None

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
        raise _refuse(version, "bad_manifest", f"{MANIFEST}: model.gnn cannot be built ({exc})") from None
    return encoder, relation_gnn, attachment


def _load_manifest(dfd: int, version: str) -> _Manifest:
    m, sha = _read_manifest(dfd, version)
    fmt = m.get("format_version")
    if not _is_int(fmt, 0):
        raise _refuse(version, "bad_manifest", f"{MANIFEST}: format_version {fmt!r} is not an int")
    if fmt != FORMAT_VERSION:
        raise _refuse(version, "unsupported_format",
                      f"format_version {fmt} in {MANIFEST}, this reader supports {FORMAT_VERSION}")
    encoder, gnn, attachment = _check_schema(m, version)
    if m["version"] != version:
        raise _refuse(version, "version_mismatch", f"{MANIFEST} says version {m['version']!r}")
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
            raise _refuse(version, "unsafe_path", f"file name {name!r} in {MANIFEST}: {problem}")
    stats = {name: _lstat(dfd, name) for name in files}
    for name, st in stats.items():
        if st is not None and (stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode)):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise _refuse(version, "unsafe_path", f"{name} is {kind}")
    missing = sorted(name for name, st in stats.items() if st is None)
    if missing:
        raise _refuse(version, "missing_file", f"{', '.join(missing)} missing")
    for name, st in stats.items():
        if st.st_size != files[name]["size"]:
            raise _refuse(version, "size_mismatch", f"size mismatch in {name} (expected {files[name]['size']} "
                                                    f"bytes, found {st.st_size})")
    contents = {}
    for name, entry in files.items():
        data = _read(dfd, name, version)
        if len(data) != entry["size"]:
            raise _refuse(version, "size_mismatch", f"size mismatch in {name} (expected {entry['size']} bytes, "
                                                    f"read {len(data)})")
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"]:
            raise _refuse(version, "checksum_mismatch", f"checksum mismatch in {name} (expected "
                                                        f"{entry['sha256'][:12]}…, got {got[:12]}…)")
        contents[name] = data
    return contents


def _is_pickle(data: bytes) -> bool:
    """Whether `data` decodes as a pickle stream (opcodes are only decoded, never run)."""
    if data[:1] == b"\x80":
        return True
    try:
        ops = [op.name for op, _, _ in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - anything genops chokes on is not a pickle
        return False
    return bool(ops) and ops[-1] == "STOP"


def read_npz(data: bytes, name: str, version: str) -> dict[str, np.ndarray]:
    """Numeric arrays from .npz bytes. Every member's .npy header is checked before numpy reads it:
    a pickle (as the file or as a member) or an object dtype is `unsafe_weights`; anything else
    numpy cannot read is `bad_weights`."""
    if not data.startswith(b"PK\x03\x04"):
        if _is_pickle(data):
            raise _refuse(version, "unsafe_weights", f"{name} is a pickle payload, refused unread")
        raise _refuse(version, "bad_weights", f"{name} is not an npz (zip) archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise _refuse(version, "bad_weights", f"{name} has duplicate members")
            for info in infos:
                member = info.filename
                if not member.endswith(".npy") or unsafe_name_problem(member) is not None:
                    raise _refuse(version, "bad_weights", f"{name} has an unexpected member {member!r}")
                with zf.open(info) as fh:
                    head = fh.read(16 + 65536)
                if not head.startswith(np.lib.format.MAGIC_PREFIX):
                    if _is_pickle(head):
                        raise _refuse(version, "unsafe_weights", f"{name}: member {member} is a pickle payload")
                    raise _refuse(version, "bad_weights", f"{name}: member {member} is not a .npy array")
                fp = io.BytesIO(head)
                major_minor = np.lib.format.read_magic(fp)
                if major_minor == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif major_minor == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise _refuse(version, "bad_weights", f"{name}: member {member} has .npy version {major_minor}")
                if dtype.hasobject:
                    raise _refuse(version, "unsafe_weights", f"{name}: member {member} is an object array "
                                                             "(pickled objects), refused unread")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise _refuse(version, "bad_weights", f"{name}: member {member} is shorter than its header")
    except ArtifactError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, SyntaxError,
            NotImplementedError) as exc:
        raise _refuse(version, "bad_weights", f"{name} is unreadable ({type(exc).__name__}: {exc})") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise _refuse(version, "unsafe_weights", f"{name}: {exc}") from None
        raise _refuse(version, "bad_weights", f"{name} is unreadable ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _refuse(version, "bad_weights", f"{name} is unreadable ({type(exc).__name__}: {exc})") from None


def _check_state(arrays: dict[str, np.ndarray], module: nn.Module, name: str, version: str) -> None:
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise _refuse(version, "shape_mismatch", f"{name} keys differ from the module (missing {missing}, "
                                                 f"unexpected {extra})")
    for key, tensor in expected.items():
        array, want = arrays[key], _TORCH_TO_NUMPY.get(tensor.dtype)
        if array.shape != tuple(tensor.shape) or want is None or array.dtype != want:
            raise _refuse(version, "shape_mismatch", f"{name}[{key}] is {array.dtype}{list(array.shape)}, the "
                                                     f"module needs {want}{list(tensor.shape)}")


def _check_array(arrays: dict, key: str, shape: tuple, dtype: np.dtype, name: str, version: str) -> np.ndarray:
    array = arrays[key]
    if array.shape != shape or array.dtype != dtype:
        raise _refuse(version, "shape_mismatch", f"{name}[{key}] is {array.dtype}{list(array.shape)}, expected "
                                                 f"{np.dtype(dtype)}{list(shape)}")
    return array


def _check_keys(arrays: dict, keys: set, name: str, version: str) -> None:
    if set(arrays) != keys:
        raise _refuse(version, "shape_mismatch", f"{name} has arrays {sorted(arrays)}, expected {sorted(keys)}")


def _assign(module: nn.Module, arrays: dict[str, np.ndarray], name: str, version: str) -> nn.Module:
    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True, assign=True)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise _refuse(version, "shape_mismatch", f"{name} leaves module tensors unset: {left}")
    return module.eval()


def read_artifact(path: Path, version: str, timings: dict[str, float] | None = None
                  ) -> tuple[dict, str, ModelBundle, Scorer]:
    """Check the version directory at `path` completely and build its bundle and scorer.

    -> (manifest, manifest sha256, bundle, scorer). Any failure is an ArtifactError. `timings`,
    if given, receives the seconds spent in each stage.
    """
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        if timings is not None:
            timings[stage] = now - clock[0]
        clock[0] = now

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
        spec = FeatureSpec.from_json(contents[FEATURE_SPEC].decode("utf-8"))
        spec_dim = spec.dim
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _refuse(version, "bad_weights", f"{FEATURE_SPEC} is unreadable ({type(exc).__name__}: {exc})") from None

    enc, gnn = manifest.encoder, manifest.gnn
    _check_state(arrays[ENCODER], enc, ENCODER, version)
    _check_state(arrays[GNN], gnn, GNN, version)
    k, d, feature_dim = model["nodes"], model["embedding_dim"], model["feature_dim"]
    dims = {"feature_spec.json dim": spec_dim, "model.feature_dim": feature_dim,
            "encoder input_dim": enc.config["input_dim"]}
    if len(set(dims.values())) != 1:
        raise _refuse(version, "shape_mismatch", f"feature dims disagree: {dims}")
    dims = {"model.embedding_dim": d, "encoder hidden": enc.embedding_dim,
            "gnn embedding_dim": gnn.config["embedding_dim"]}
    if len(set(dims.values())) != 1:
        raise _refuse(version, "shape_mismatch", f"embedding dims disagree: {dims}")
    node_dim = d + int(gnn.config["use_label_rate"])
    if gnn.config["node_dim"] != node_dim:
        raise _refuse(version, "shape_mismatch", f"gnn node_dim {gnn.config['node_dim']} != {node_dim} "
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
        raise _refuse(version, "shape_mismatch", f"{GOLDEN}[windows] is {list(golden['windows'].shape)}, "
                                                 f"expected [n, {model['window']}, {feature_dim}]")
    windows = _check_array(golden, "windows", (n, model["window"], feature_dim), np.dtype("<f4"), GOLDEN, version)
    expected_score = _check_array(golden, "score", (n,), np.dtype("<f4"), GOLDEN, version)
    expected_encoder = _check_array(golden, "encoder_score", (n,), np.dtype("<f4"), GOLDEN, version)

    for name in (ENCODER, GNN, GRAPH, GOLDEN):
        for key, array in arrays[name].items():
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                raise _refuse(version, "non_finite", f"{name}[{key}] holds NaN or inf")
    if not ((positive_rate >= 0) & (positive_rate <= 1)).all():
        raise _refuse(version, "bad_graph", f"{GRAPH}[positive_rate] outside [0, 1]")
    if not (size >= 1).all():
        raise _refuse(version, "bad_graph", f"{GRAPH}[size] has nodes with fewer than 1 member")
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
            raise _refuse(version, "golden_mismatch",
                          f"golden {label} differs in {GOLDEN} (window {worst}: expected {want[worst]:.7f}, "
                          f"got {float(got[worst]):.7f}; tolerance {GOLDEN_TOLERANCE:g})")
    lap("golden")
    return m, manifest.sha256, bundle, scorer
