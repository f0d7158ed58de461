"""ArtifactStore: publish/load round trip, CURRENT, numbering, pruning, rollback, locks."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import time

import numpy as np
import pytest
import torch

from ecseq.artifacts import (
    ArtifactError,
    ArtifactStore,
    LoadedArtifact,
    ModelBundle,
    StoreBusy,
)
from ecseq.encoders.models import TransformerEncoder
from tests.ecseq.artifacts.conftest import (
    WINDOW,
    edit_npz,
    make_bundle,
    make_spec,
    make_windows,
    message,
    publish,
)


def _scores_match(a, b, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(a.score, b.score, atol=atol, rtol=0)
    np.testing.assert_allclose(a.encoder_score, b.encoder_score, atol=atol, rtol=0)
    np.testing.assert_array_equal(a.neighbours, b.neighbours)
    np.testing.assert_array_equal(a.top_nodes, b.top_nodes)
    np.testing.assert_allclose(a.top_similarity, b.top_similarity, atol=atol, rtol=0)
    np.testing.assert_allclose(a.top_contribution, b.top_contribution, atol=atol, rtol=0)


def test_round_trip_scores_and_explains_like_the_bundle(store, bundle, golden):
    published = publish(store, bundle, golden)
    loaded = store.load()
    assert isinstance(loaded, LoadedArtifact)
    assert loaded.version == published.version == "v000001"
    fresh = torch.from_numpy(make_windows(bundle.feature_spec, 40, seed=11))
    want = bundle.scorer().score_windows(fresh)
    got = loaded.scorer.score_windows(fresh)
    _scores_match(got, want)
    assert not np.allclose(got.score, got.encoder_score, atol=1e-3)  # the GNN really contributes
    for mine, theirs in zip(got.explanations(loaded.bundle.relation.graph), want.explanations(bundle.relation.graph)):
        assert len(mine) == len(theirs) == 3
        for a, b in zip(mine, theirs):
            assert (a["node"], a["size"], a["positive_rate"]) == (b["node"], b["size"], b["positive_rate"])
            assert a["similarity"] == pytest.approx(b["similarity"], abs=1e-6)
            assert a["contribution"] == pytest.approx(b["contribution"], abs=1e-6)
    assert loaded.bundle.feature_spec == bundle.feature_spec
    assert loaded.bundle.window == WINDOW and loaded.bundle.explain_k == bundle.explain_k
    assert loaded.bundle.relation.attachment == bundle.relation.attachment
    np.testing.assert_array_equal(loaded.bundle.relation.graph.size, bundle.relation.graph.size)


def test_loading_leaves_the_torch_rng_alone(store, bundle, golden):
    publish(store, bundle, golden)
    state = torch.random.get_rng_state()
    store.load()
    assert torch.equal(state, torch.random.get_rng_state())


def test_manifest_fields_and_file_hashes(store, bundle, golden):
    published = publish(store, bundle, golden, data={"rows": np.int64(7), "window": ["2024-01-01", "2024-02-01"]},
                        metrics={"ap": np.float32(0.25), "undefined": float("nan")},
                        extra_files={"report.json": b'{"ok": true}', "pr_curves.png": b"\x89PNG fake"})
    vdir = store.root / "versions" / published.version
    assert published.path == vdir and published.path.is_absolute()
    raw = (vdir / "manifest.json").read_bytes()
    assert published.manifest_sha256 == hashlib.sha256(raw).hexdigest()
    m = json.loads(raw)
    assert m["format_version"] == 1 and m["version"] == "v000001"
    assert m["parent"] is None and m["encoder_version"] == "v000001"  # None: a new encoder, its own version
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", m["created_at"])
    assert m["data"] == {"rows": 7, "window": ["2024-01-01", "2024-02-01"]}
    assert m["metrics"] == {"ap": 0.25, "undefined": None}  # strict JSON: NaN becomes null
    model = m["model"]
    assert model["window"] == WINDOW and model["explain_k"] == 3
    assert model["encoder"] == bundle.encoder.config and model["gnn"] == bundle.relation.gnn.config
    assert model["attachment"] == {"epsilon": -1.0, "top_k": 3, "max_neighbours": 64}
    assert model["nodes"] == bundle.relation.graph.k and model["embedding_dim"] == 8
    assert model["feature_dim"] == bundle.feature_spec.dim
    on_disk = sorted(p.name for p in vdir.iterdir() if p.name != "manifest.json")
    assert sorted(m["files"]) == on_disk == sorted(["feature_spec.json", "encoder.npz", "gnn.npz", "graph.npz",
                                                    "golden.npz", "report.json", "pr_curves.png"])
    for name, entry in m["files"].items():
        data = (vdir / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert (vdir / "pr_curves.png").read_bytes() == b"\x89PNG fake"
    loaded = store.load()
    assert loaded.manifest == m and loaded.manifest_sha256 == published.manifest_sha256
    assert store.manifest(published.version) == m
    assert loaded.announcement() == published.announcement() == {
        "version": "v000001", "path": str(vdir), "manifest_sha256": published.manifest_sha256}


def test_weights_are_plain_npz_of_the_state_dicts(store, bundle, golden):
    vdir = publish(store, bundle, golden).path
    with np.load(vdir / "encoder.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(bundle.encoder.state_dict())
        for key, tensor in bundle.encoder.state_dict().items():
            np.testing.assert_array_equal(npz[key], tensor.numpy())
    with np.load(vdir / "graph.npz", allow_pickle=False) as npz:
        assert {k: npz[k].dtype for k in npz.files} == {"centroids": np.float32, "positive_rate": np.float32,
                                                        "size": np.int64}
    with np.load(vdir / "golden.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["windows"], golden)
        np.testing.assert_allclose(npz["score"], bundle.scorer().score_windows(torch.from_numpy(golden)).score,
                                   atol=1e-7)


def test_parent_and_encoder_version_are_recorded(store, bundle, golden):
    first = publish(store, bundle, golden)
    second = publish(store, bundle, golden, parent=first.version, encoder_version=first.version)
    m = store.manifest(second.version)
    assert (m["parent"], m["encoder_version"]) == ("v000001", "v000001")
    with pytest.raises(ValueError, match="parent"):
        publish(store, bundle, golden, parent="latest")


def test_current_numbering_and_make_current(store, bundle, golden):
    assert store.current() is None and store.versions() == []
    a = publish(store, bundle, golden)
    assert (store.root / "CURRENT").read_text() == "v000001\n"
    b = publish(store, bundle, golden, make_current=False)
    assert (a.version, b.version) == ("v000001", "v000002")
    assert store.current() == "v000001" and store.load().version == "v000001"
    assert store.load("v000002").version == "v000002"
    loaded = store.set_current("v000002")
    assert loaded.version == store.current() == "v000002"
    assert not (store.root / "CURRENT.tmp").exists()


def test_versions_ignores_junk_and_numbering_continues_past_max(store, bundle, golden):
    publish(store, bundle, golden)
    for junk in ("tmp", "v12", "v000003.old", ".v000009"):
        (store.root / "versions" / junk).mkdir()
    (store.root / "versions" / "v000010").write_text("a file, not a version dir")
    assert store.versions() == ["v000001"]
    os.rename(store.root / "versions" / "v000001", store.root / "versions" / "v000004")
    (store.root / "CURRENT").write_text("v000004\n")
    assert publish(store, bundle, golden).version == "v000005"


def test_pruning_keeps_newest_and_current(tmp_path, bundle, golden):
    store = ArtifactStore(tmp_path / "s", keep=2)
    names = [publish(store, bundle, golden).version for _ in range(4)]
    assert names == ["v000001", "v000002", "v000003", "v000004"]  # monotone
    assert store.versions() == ["v000003", "v000004"]
    assert not (tmp_path / "s" / "versions" / "v000001").exists()
    assert os.listdir(tmp_path / "s" / ".staging") == []
    store.rollback("v000003")
    publish(store, bundle, golden, make_current=False)  # v5
    publish(store, bundle, golden, make_current=False)  # v6: v4 goes, current v3 stays
    assert store.current() == "v000003"
    assert store.versions() == ["v000003", "v000005", "v000006"]
    assert publish(store, bundle, golden).version == "v000007"  # current moves on: v3 may go now
    assert store.versions() == ["v000006", "v000007"]


def test_rollback_to_previous_skips_a_broken_version(store, bundle, golden):
    for _ in range(3):
        publish(store, bundle, golden)
    edit_npz(store.root / "versions" / "v000002", "gnn.npz", lambda a: a["out.weight"].__imul__(2.0))
    loaded = store.rollback()
    assert loaded.version == store.current() == "v000001"
    with pytest.raises(ArtifactError) as info:
        store.rollback()
    assert info.value.reason == "not_found" and store.current() == "v000001"
    assert store.rollback("v000003").version == store.current() == "v000003"


def test_rollback_without_current(store):
    with pytest.raises(ArtifactError) as info:
        store.rollback()
    assert info.value.reason == "not_found"
    with pytest.raises(ArtifactError) as info:
        store.load()
    assert info.value.reason == "not_found" and "CURRENT" in str(info.value)


def test_other_backbones_and_layers_round_trip(store, golden):
    spec = make_spec()
    torch.manual_seed(3)
    encoder = TransformerEncoder(spec.dim, hidden=8, layers=1, heads=2, max_len=WINDOW)
    fresh = torch.from_numpy(make_windows(spec, 10, seed=12))
    for b in (make_bundle(encoder=encoder, layer="gat"), make_bundle(seed=4, layer="sage_max")):
        published = publish(store, b, golden)
        loaded = store.load()
        assert loaded.version == published.version
        assert loaded.manifest["model"]["encoder"] == b.encoder.config
        _scores_match(loaded.scorer.score_windows(fresh), b.scorer().score_windows(fresh))


def test_publish_refuses_bad_input(store, bundle, golden):
    with pytest.raises(ValueError, match="dense"):
        ModelBundle(bundle.feature_spec, WINDOW, bundle.encoder,
                    type(bundle.relation)(bundle.relation.graph, bundle.relation.gnn, bundle.relation.attachment,
                                          dense=False))
    with pytest.raises(ValueError, match="golden"):
        publish(store, bundle, golden[:, :-1])
    with pytest.raises(ValueError, match="golden"):
        publish(store, bundle, golden[:0])
    for name in ("../x", "sub/report.json", "/etc/passwd", ".hidden", "gnn.npz", "manifest.json"):
        with pytest.raises(ValueError, match="extra file"):
            publish(store, bundle, golden, extra_files={name: b"x"})
    with pytest.raises(TypeError, match="not JSON"):
        publish(store, bundle, golden, metrics={"when": object()})
    assert store.versions() == [] and store.current() is None
    assert os.listdir(store.root / ".staging") == []


def test_publish_refuses_a_model_that_would_not_load(store, bundle, golden):
    good = publish(store, bundle, golden)
    broken = make_bundle()
    with torch.no_grad():
        broken.relation.gnn.out.weight[0, 0] = float("nan")
    with pytest.raises(ArtifactError) as info:
        publish(store, broken, golden)
    assert info.value.reason == "non_finite"
    assert store.versions() == [good.version] and store.current() == good.version
    assert os.listdir(store.root / ".staging") == []


def test_publish_cleans_staging_leftovers(store, bundle, golden):
    leftover = store.root / ".staging" / "v000001.99999"
    leftover.mkdir()
    (leftover / "encoder.npz").write_bytes(b"half")
    (store.root / ".staging" / "v000007.deleting.4242").mkdir()
    publish(store, bundle, golden)
    assert os.listdir(store.root / ".staging") == []
    assert store.versions() == ["v000001"]


def test_readers_do_not_need_the_store_lock(store, bundle, golden):
    publish(store, bundle, golden)
    fd = os.open(store.root / ".store.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert store.load().version == "v000001"
        assert store.verify("v000001").version == "v000001"
        assert store.versions() == ["v000001"] and store.current() == "v000001"
    finally:
        os.close(fd)


def test_log_lines_name_the_version(store, bundle, golden, caplog):
    caplog.set_level(logging.INFO, logger="ecseq.artifacts")
    publish(store, bundle, golden)
    publish(store, bundle, golden, make_current=False)
    store.set_current("v000002")
    (store.root / "versions" / "v000001" / "gnn.npz").write_bytes(b"junk")
    with pytest.raises(ArtifactError):
        store.load("v000001")
    lines = [r.getMessage() for r in caplog.records if r.name == "ecseq.artifacts"]
    assert any(line.startswith("published v000001") for line in lines)
    assert any("CURRENT v000001 -> v000002" in line for line in lines)
    assert any(line.startswith("refused v000001") and "size_mismatch" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_build_lock_in_process(store):
    with store.build_lock():
        assert (store.root / ".build.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(StoreBusy, match=rf"pid {os.getpid()}\) holds .*\.build\.lock"), store.build_lock():
            pass
    with store.build_lock():  # released
        pass


def test_build_lock_across_processes(store, zygote):
    pid = zygote.spawn(cmd="hold", root=str(store.root), seconds=1.0)
    zygote.wait(message(pid, "held"))
    with pytest.raises(StoreBusy) as info, store.build_lock():
        pass
    assert f"pid {pid}" in str(info.value) and str(store.root / ".build.lock") in str(info.value)
    started = time.monotonic()
    with store.build_lock(wait=True):
        waited = time.monotonic() - started
        assert (store.root / ".build.lock").read_text().strip() == str(os.getpid())
    assert waited > 0.3  # it blocked until the child let go
    zygote.wait(message(pid, "done"))
