"""Fuzz: a real published version, damaged anywhere (with or without its manifest entry updated so
the deeper checks are reached), loads or is refused with an ArtifactError, never anything else."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecseq.artifacts import REASONS, ArtifactError, ArtifactStore
from tests.ecseq.artifacts.conftest import publish
from tests.fuzz import fuzz

pytestmark = pytest.mark.fuzz
FILES = ("manifest.json", "feature_spec.json", "encoder.npz", "gnn.npz", "graph.npz", "golden.npz")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, bundle, golden):
    store = ArtifactStore(tmp_path_factory.mktemp("fuzz") / "store")
    publish(store, bundle, golden)
    return store.path("v000001")


@fuzz(60)
@given(data=st.data())
def test_a_damaged_version_is_refused_or_loads(pristine, tmp_path_factory, data):
    store = ArtifactStore(tmp_path_factory.mktemp("case") / "store")
    vdir = store.path("v000001")
    shutil.copytree(pristine, vdir)
    name = data.draw(st.sampled_from(FILES))
    body = bytearray((vdir / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if action == "flip" and at < len(body):
            body[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del body[at:at + data.draw(st.integers(1, 64))]
        elif action == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        else:
            body[at:at + 64] = bytes(len(body[at:at + 64]))
    (vdir / name).write_bytes(bytes(body))
    if name != "manifest.json" and data.draw(st.booleans()):  # rehashed: size and checksum pass
        manifest = json.loads((vdir / "manifest.json").read_text())
        manifest["files"][name] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        (vdir / "manifest.json").write_text(json.dumps(manifest))
    try:
        loaded = store.verify("v000001")
    except ArtifactError as exc:
        assert exc.reason in REASONS
        return
    assert loaded.version == "v000001"
