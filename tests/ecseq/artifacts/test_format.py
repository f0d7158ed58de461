"""Format helpers: names, safe npz reading, JSON-safe caller data, manifest checks."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from ecseq.artifacts import FORMAT_VERSION, REASONS, ArtifactError
from ecseq.artifacts.manifest import jsonable
from ecseq.artifacts.names import is_version_name, unsafe_name_problem, version_name
from ecseq.artifacts.reader import read_artifact
from ecseq.artifacts.safe_npz import npz_bytes, read_npz
from tests.ecseq.artifacts.conftest import publish, savez_bytes


def test_version_names():
    assert version_name(1) == "v000001" and version_name(1234567) == "v1234567"
    assert is_version_name("v000042") and is_version_name("v1234567")
    for bad in ("v42", "V000042", "v000042/", "../v000001", "v00004a", "", None, 42):
        assert not is_version_name(bad)


@pytest.mark.parametrize("name", ["../x", "..", ".", "/etc/passwd", "a/b", "a\\b", "x..y", "", "a\x00b", 3])
def test_unsafe_names(name):
    assert unsafe_name_problem(name) is not None


@pytest.mark.parametrize("name", ["encoder.npz", "report.json", "pr_curves.png", ".x"])
def test_plain_names(name):
    assert unsafe_name_problem(name) is None


def test_npz_bytes_round_trips_and_refuses_objects():
    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], dtype=np.int64)}
    back = read_npz(npz_bytes(arrays), "x.npz", "v000001")
    assert back.keys() == arrays.keys()
    for key, array in arrays.items():
        np.testing.assert_array_equal(back[key], array)
        assert back[key].dtype == array.dtype
    with pytest.raises(ValueError, match="object"):
        npz_bytes({"o": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="cannot be stored"):
        npz_bytes({"file": np.zeros(1)})


def _reason(data: bytes) -> str:
    with pytest.raises(ArtifactError) as info:
        read_npz(data, "w.npz", "v000007")
    assert str(info.value).startswith("artifact v000007: ") and "w.npz" in str(info.value)
    assert "\n" not in str(info.value)
    return info.value.reason


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_read_npz_classifies_what_it_refuses():
    npy = io.BytesIO()
    np.save(npy, np.zeros(3, dtype=np.float32))
    assert _reason(pickle.dumps({"weights": [1.0, 2.0]})) == "unsafe_weights"
    assert _reason(pickle.dumps([1, 2], protocol=0)) == "unsafe_weights"
    assert _reason(savez_bytes({"o": np.array([1, "x"], dtype=object)}, allow_pickle=True)) == "unsafe_weights"
    assert _reason(_zip({"w.npy": pickle.dumps([1, 2])})) == "unsafe_weights"
    assert _reason(b"") == "bad_weights"
    assert _reason(b"not a zip at all, just text") == "bad_weights"
    assert _reason(npy.getvalue()) == "bad_weights"  # a bare .npy is not an .npz
    assert _reason(npz_bytes({"a": np.zeros(100, dtype=np.float32)})[:300]) == "bad_weights"  # truncated
    assert _reason(_zip({"w.txt": b"hello"})) == "bad_weights"
    assert _reason(_zip({"w.npy": b"\x93NUMPY garbage"})) == "bad_weights"
    # a header that claims more data than the member holds must not allocate it
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    assert _reason(_zip({"w.npy": header.getvalue()})) == "bad_weights"


def test_jsonable():
    value = {"a": np.float32(0.5), "b": [np.int64(3), (1, 2)], "c": float("inf"), "d": np.array([1.0, np.nan]),
             "e": {"f": True, "g": None, "h": "x"}}
    out = jsonable(value, "metrics")
    assert out == {"a": 0.5, "b": [3, [1, 2]], "c": None, "d": [1.0, None], "e": {"f": True, "g": None, "h": "x"}}
    json.dumps(out, allow_nan=False)
    with pytest.raises(TypeError, match=r"metrics\.k"):
        jsonable({"k": {1, 2}}, "metrics")
    with pytest.raises(TypeError, match="not a string"):
        jsonable({1: 2}, "data")


def test_reason_codes_are_the_documented_ones():
    assert FORMAT_VERSION == 1
    assert REASONS == ("not_found", "bad_current", "missing_manifest", "bad_manifest", "unsupported_format",
                       "version_mismatch", "unsafe_path", "missing_file", "size_mismatch", "checksum_mismatch",
                       "unsafe_weights", "bad_weights", "shape_mismatch", "non_finite", "bad_graph", "golden_mismatch")


def test_read_artifact_reports_stage_timings(store, bundle, golden):
    published = publish(store, bundle, golden)
    timings: dict[str, float] = {}
    manifest, sha, _, _ = read_artifact(published.path, published.version, timings.__setitem__)
    assert manifest["version"] == published.version and sha == published.manifest_sha256
    assert list(timings) == ["manifest_checksums", "weights_parse", "module_build", "scorer", "golden"]
    assert all(t >= 0 for t in timings.values())
    with pytest.raises(ArtifactError) as info:  # the directory name is what the manifest must match
        read_artifact(published.path, "v000002")
    assert info.value.reason == "version_mismatch"
