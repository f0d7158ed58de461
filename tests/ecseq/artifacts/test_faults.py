"""Broken artifacts are refused with their exact reason and never replace a good CURRENT; a
publisher killed at any instant leaves a store whose every visible version loads."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import statistics
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ecseq.artifacts import ArtifactError, ArtifactStore
from tests.ecseq.artifacts.conftest import (
    edit_npz,
    load_npz,
    message,
    publish,
    read_manifest,
    rewrite,
    savez_bytes,
    write_manifest,
)

REPORT = b'{"ap": 0.5, "note": "extra file"}'


class Payload:
    """Unpickling this calls open(marker, "w"): if any loader unpickles it, the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _flip(vdir: Path, name: str) -> None:
    data = bytearray((vdir / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite(vdir, name, bytes(data), rehash=False)


def _truncate(vdir: Path, name: str, rehash: bool) -> None:
    data = (vdir / name).read_bytes()
    rewrite(vdir, name, data[: len(data) // 2], rehash=rehash)


def _manifest(edit):
    def apply(vdir: Path, _marker: Path) -> None:
        manifest = read_manifest(vdir)
        edit(manifest)
        write_manifest(vdir, manifest)
    return apply


def _npz(name: str, edit):
    return lambda vdir, _marker: edit_npz(vdir, name, edit)


def _set(key: str, index, value):
    def edit(arrays):
        arrays[key][index] = value
    return edit


def _replace(key: str, make):
    def edit(arrays):
        arrays[key] = make(arrays[key])
    return edit


def _drop_last_node(arrays):
    for key in ("centroids", "positive_rate", "size"):
        arrays[key] = arrays[key][:-1]


def _list_file(name: str, source: str):
    def apply(vdir: Path, _marker: Path) -> None:
        data = Path(source).read_bytes() if source.startswith("/") else (vdir / source).read_bytes()
        manifest = read_manifest(vdir)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        write_manifest(vdir, manifest)
    return apply


def _outside_file(vdir: Path, _marker: Path) -> None:
    """The file is placed one level up, where a "../x" entry would find it with the right hash."""
    (vdir.parent / "x").write_bytes(REPORT)
    _list_file("../x", "report.json")(vdir, _marker)


def _symlink_out(vdir: Path, _marker: Path) -> None:
    outside = vdir.parent.parent / "outside.json"
    outside.write_bytes(REPORT)  # same bytes, so size and checksum would pass through the link
    (vdir / "report.json").unlink()
    (vdir / "report.json").symlink_to(outside)


def _spec_one_more_category(vdir: Path, _marker: Path) -> None:
    spec = json.loads((vdir / "feature_spec.json").read_text())
    spec["categorical"][0]["vocabulary"].append("zz")
    rewrite(vdir, "feature_spec.json", json.dumps(spec).encode())


def _raw_pickle(vdir: Path, marker: Path) -> None:
    rewrite(vdir, "encoder.npz", pickle.dumps({"lstm.weight_ih_l0": Payload(marker)}))


def _object_array(vdir: Path, marker: Path) -> None:
    arrays = load_npz(vdir / "gnn.npz")
    arrays["out.weight"] = np.array([Payload(marker)], dtype=object)
    rewrite(vdir, "gnn.npz", savez_bytes(arrays, allow_pickle=True))


def _pickle_member(vdir: Path, marker: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, array in load_npz(vdir / "graph.npz").items():
            inner = io.BytesIO()
            np.save(inner, array)
            zf.writestr(f"{key}.npy", inner.getvalue())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile warns about the duplicate name
            zf.writestr("centroids.npy", pickle.dumps(Payload(marker)))  # a second member of the same name
    rewrite(vdir, "graph.npz", buf.getvalue())


def _pickle_member_only(vdir: Path, marker: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("windows.npy", pickle.dumps(Payload(marker)))
    rewrite(vdir, "golden.npz", buf.getvalue())


def _manifest_text(vdir: Path, old: str, new: str) -> None:
    """Edit the manifest as text, for what json.dumps would never write."""
    text = (vdir / "manifest.json").read_text()
    assert old in text
    (vdir / "manifest.json").write_text(text.replace(old, new, 1))


def _savez_compressed(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _npz_bomb(arrays: dict) -> bytes:
    """A deflated member whose 1 GB of zeros compresses to ~1 MB: refused without inflating it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            inner = io.BytesIO()
            np.save(inner, array)
            zf.writestr(f"{key}.npy", inner.getvalue())
        with zf.open("bomb.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (1 << 28,)})
            chunk = bytes(1 << 20)
            for _ in range(1 << 10):
                member.write(chunk)
    return buf.getvalue()


def _npz_claims_more(vdir: Path, _marker: Path) -> None:
    """A stored member whose .npy header says 10^12 floats: numpy would try to allocate them."""
    arrays = load_npz(vdir / "gnn.npz")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, array in arrays.items():
            inner = io.BytesIO()
            if key == "out.bias":
                np.lib.format.write_array_header_1_0(inner, {"descr": "<f4", "fortran_order": False,
                                                             "shape": (10 ** 12,)})
                inner.write(array.tobytes())
            else:
                np.save(inner, array)
            zf.writestr(f"{key}.npy", inner.getvalue())
    rewrite(vdir, "gnn.npz", buf.getvalue())


FAULTS = {
    "truncated": (lambda v, m: _truncate(v, "encoder.npz", rehash=False), "size_mismatch"),
    "grown": (lambda v, m: rewrite(v, "graph.npz", (v / "graph.npz").read_bytes() + b"\0", rehash=False),
              "size_mismatch"),
    "truncated_rehashed": (lambda v, m: _truncate(v, "encoder.npz", rehash=True), "bad_weights"),
    "flipped_byte": (lambda v, m: _flip(v, "gnn.npz"), "checksum_mismatch"),
    "flipped_extra_file": (lambda v, m: _flip(v, "report.json"), "checksum_mismatch"),
    "flipped_feature_spec": (lambda v, m: _flip(v, "feature_spec.json"), "checksum_mismatch"),
    "unhashed_pickle": (lambda v, m: rewrite(v, "encoder.npz", pickle.dumps(Payload(m)), rehash=False),
                        "size_mismatch"),
    "wrong_shape": (_npz("gnn.npz", _replace("out.weight", lambda a: np.zeros((1, a.shape[1] + 1), a.dtype))),
                    "shape_mismatch"),
    "missing_key": (_npz("encoder.npz", lambda a: a.pop("head.bias")), "shape_mismatch"),
    "extra_key": (_npz("gnn.npz", lambda a: a.update({"layer.extra": np.zeros(3, np.float32)})), "shape_mismatch"),
    "wrong_dtype": (_npz("encoder.npz", _replace("head.weight", lambda a: a.astype(np.float64))), "shape_mismatch"),
    "big_endian": (_npz("encoder.npz", _replace("head.weight", lambda a: a.astype(">f4"))), "shape_mismatch"),
    "graph_dim": (_npz("graph.npz", _replace("centroids", lambda a: np.hstack([a, a[:, :1]]))), "shape_mismatch"),
    "node_count": (_npz("graph.npz", _drop_last_node), "shape_mismatch"),
    "spec_dim": (_spec_one_more_category, "shape_mismatch"),
    "golden_window": (_npz("golden.npz", _replace("windows", lambda a: np.ascontiguousarray(a[:, 1:]))),
                      "shape_mismatch"),
    "nan_weights": (_npz("encoder.npz", _set("lstm.weight_hh_l0", (0, 0), np.nan)), "non_finite"),
    "inf_graph": (_npz("graph.npz", _set("centroids", (0, 0), np.inf)), "non_finite"),
    "rate_above_one": (_npz("graph.npz", _set("positive_rate", 0, 1.5)), "bad_graph"),
    "empty_node": (_npz("graph.npz", _set("size", 0, 0)), "bad_graph"),
    "missing_manifest": (lambda v, m: (v / "manifest.json").unlink(), "missing_manifest"),
    "manifest_not_json": (lambda v, m: (v / "manifest.json").write_text('{"format_version": 1,'), "bad_manifest"),
    "manifest_not_object": (lambda v, m: (v / "manifest.json").write_text("[1]"), "bad_manifest"),
    "manifest_missing_key": (_manifest(lambda m: m.pop("files")), "bad_manifest"),
    "manifest_unlisted_weights": (_manifest(lambda m: m["files"].pop("gnn.npz")), "bad_manifest"),
    "manifest_bad_hash": (_manifest(lambda m: m["files"]["gnn.npz"].update(sha256="xyz")), "bad_manifest"),
    "manifest_bad_backbone": (_manifest(lambda m: m["model"]["encoder"].update(backbone="rnn")), "bad_manifest"),
    "manifest_bad_gnn": (_manifest(lambda m: m["model"]["gnn"].update(dropout=0.5)), "bad_manifest"),
    "manifest_string_window": (_manifest(lambda m: m["model"].update(window="6")), "bad_manifest"),
    "format_as_string": (_manifest(lambda m: m.update(format_version="1")), "bad_manifest"),
    "unknown_format": (_manifest(lambda m: m.update(format_version=2)), "unsupported_format"),
    "version_mismatch": (_manifest(lambda m: m.update(version="v000001")), "version_mismatch"),
    "dotdot_name": (_outside_file, "unsafe_path"),
    "absolute_name": (_list_file("/etc/hostname" if Path("/etc/hostname").exists() else "/etc/passwd",
                                 "report.json"), "unsafe_path"),
    "separator_name": (_list_file("sub/report.json", "report.json"), "unsafe_path"),
    "symlink_outside": (_symlink_out, "unsafe_path"),
    "missing_file": (lambda v, m: (v / "graph.npz").unlink(), "missing_file"),
    "missing_extra_file": (lambda v, m: (v / "report.json").unlink(), "missing_file"),
    "golden_score": (_npz("golden.npz", _set("score", 3, np.float32(0.0))), "golden_mismatch"),
    "golden_encoder_score": (_npz("golden.npz", _replace("encoder_score", lambda a: a + np.float32(1e-3))),
                             "golden_mismatch"),
    "tampered_weights": (_npz("gnn.npz", _replace("out.bias", lambda a: a + np.float32(0.01))), "golden_mismatch"),
    "raw_pickle": (_raw_pickle, "unsafe_weights"),
    "object_array": (_object_array, "unsafe_weights"),
    "duplicate_member": (_pickle_member, "bad_weights"),  # a pickle as a duplicate member: refused unread
    "pickle_member_only": (_pickle_member_only, "unsafe_weights"),
    "not_a_zip": (lambda v, m: rewrite(v, "gnn.npz", os.urandom(64).replace(b"\x80", b"\x00")), "bad_weights"),
    "spec_garbage": (lambda v, m: rewrite(v, "feature_spec.json", b'{"numeric": 3}'), "bad_weights"),
    "spec_deep": (lambda v, m: rewrite(v, "feature_spec.json", b"[" * 50_000 + b"]" * 50_000), "bad_weights"),
    "spec_huge_number": (lambda v, m: rewrite(v, "feature_spec.json", b'{"numeric": ' + b"9" * 10_000 + b"}"),
                         "bad_weights"),
    "manifest_deep": (lambda v, m: (v / "manifest.json").write_bytes(b"[" * 50_000 + b"]" * 50_000),
                      "bad_manifest"),
    "manifest_nested_data": (_manifest(lambda m: m["data"].update(x=json.loads("[" * 100 + "]" * 100))),
                             "bad_manifest"),
    "manifest_huge_int": (lambda v, m: _manifest_text(v, '"data": {', '"data": {"n": ' + "7" * 5000 + ", "),
                          "bad_manifest"),
    "manifest_infinity": (lambda v, m: _manifest_text(v, '"data": {', '"data": {"x": 1e999, '), "bad_manifest"),
    "manifest_nan": (lambda v, m: _manifest_text(v, '"data": {', '"data": {"x": NaN, '), "bad_manifest"),
    "manifest_created_at": (_manifest(lambda m: m.update(created_at="yesterday")), "bad_manifest"),
    "manifest_huge_file_size": (_manifest(lambda m: m["files"]["report.json"].update(size=1 << 40)),
                                "bad_manifest"),
    "manifest_oversized": (lambda v, m: _manifest_text(v, '"data": {', '"data": {"pad": "' + "x" * (2 << 20) + '", '),
                           "bad_manifest"),
    "compressed_npz": (lambda v, m: rewrite(v, "graph.npz", _savez_compressed(load_npz(v / "graph.npz"))),
                       "bad_weights"),
    "npz_bomb": (lambda v, m: rewrite(v, "golden.npz", _npz_bomb(load_npz(v / "golden.npz"))), "bad_weights"),
    "npz_header_claims_more": (_npz_claims_more, "bad_weights"),
}


@pytest.fixture
def victim(store, bundle, golden):
    """v000001 good and CURRENT; v000002 good too, not current, about to be broken."""
    publish(store, bundle, golden, extra_files={"report.json": REPORT})
    publish(store, bundle, golden, make_current=False, extra_files={"report.json": REPORT})
    return store, store.root / "versions" / "v000002"


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_is_refused_with_its_reason(victim, fault, tmp_path):
    store, vdir = victim
    assert store.verify("v000002").version == "v000002"  # it was fine before the fault
    marker = tmp_path / "pwned"
    break_it, reason = FAULTS[fault]
    break_it(vdir, marker)
    with pytest.raises(ArtifactError) as info:
        store.load("v000002")
    assert info.value.reason == reason, str(info.value)
    message = str(info.value)
    assert message.startswith("artifact v000002: ") and "\n" not in message
    with pytest.raises(ArtifactError) as info:
        store.set_current("v000002")
    assert info.value.reason == reason
    assert (store.root / "CURRENT").read_text() == "v000001\n"
    assert store.load().version == "v000001"
    assert not marker.exists()


def test_refusal_messages_name_the_file(victim):
    store, vdir = victim
    expected = read_manifest(vdir)["files"]["gnn.npz"]["sha256"]
    _flip(vdir, "gnn.npz")
    got = hashlib.sha256((vdir / "gnn.npz").read_bytes()).hexdigest()
    with pytest.raises(ArtifactError, match=rf"^artifact v000002: checksum mismatch in gnn\.npz \(expected "
                                            rf"{expected[:12]}…, got {got[:12]}…\)$"):
        store.load("v000002")


def test_the_pickle_payloads_are_live(tmp_path):
    """The payloads above would really run if unpickled: so the refusals test something."""
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()
    probe.unlink()
    data = savez_bytes({"w": np.array([Payload(probe)], dtype=object)}, allow_pickle=True)
    with np.load(io.BytesIO(data), allow_pickle=True) as npz:
        npz["w"]
    assert probe.exists()


def test_unknown_versions_are_not_found(store, bundle, golden):
    publish(store, bundle, golden)
    for name in ("v000099", "../v000001", "v1", "", "CURRENT"):
        with pytest.raises(ArtifactError) as info:
            store.load(name)
        assert info.value.reason == "not_found"
    with pytest.raises(ArtifactError) as info:
        store.set_current("v000099")
    assert info.value.reason == "not_found" and store.current() == "v000001"
    with pytest.raises(ArtifactError) as info:
        store.manifest("v000099")
    assert info.value.reason == "not_found"


def test_copied_directory_is_a_version_mismatch(store, bundle, golden):
    publish(store, bundle, golden)
    shutil.copytree(store.root / "versions" / "v000001", store.root / "versions" / "v000050")
    with pytest.raises(ArtifactError) as info:
        store.load("v000050")
    assert info.value.reason == "version_mismatch"
    with pytest.raises(ArtifactError) as info:
        store.manifest("v000050")
    assert info.value.reason == "version_mismatch"


def test_symlinked_version_directory_is_refused(store, bundle, golden):
    publish(store, bundle, golden)
    (store.root / "versions" / "v000002").symlink_to(store.root / "versions" / "v000001")
    assert store.versions() == ["v000001"]
    with pytest.raises(ArtifactError) as info:
        store.load("v000002")
    assert info.value.reason == "unsafe_path"


def _current_symlink_out(current: Path) -> None:
    outside = current.parent.parent / "elsewhere"
    outside.write_text("v000001\n")  # a good name, but CURRENT must be the store's own file
    current.symlink_to(outside)


BAD_CURRENTS = {
    "garbage": lambda current: current.write_text("../../etc\n"),
    "empty": lambda current: current.write_bytes(b""),
    "binary": lambda current: current.write_bytes(os.urandom(32)),
    "directory": lambda current: current.mkdir(),
    "symlink": _current_symlink_out,
    "fifo": lambda current: os.mkfifo(current),
    "huge": lambda current: current.write_bytes(b"v000001" + b" " * (64 << 20)),  # the name, then 64 MB
    "long_name": lambda current: current.write_text("v" + "1" * 100 + "\n"),
}


@pytest.mark.parametrize("attack", sorted(BAD_CURRENTS))
def test_a_broken_current_is_refused_and_rollback_repairs_it(store, bundle, golden, attack):
    publish(store, bundle, golden)
    publish(store, bundle, golden)
    current = store.root / "CURRENT"
    current.unlink()
    BAD_CURRENTS[attack](current)
    with pytest.raises(ArtifactError) as info:
        store.load()
    assert info.value.reason == "bad_current" and "CURRENT" in str(info.value)
    assert store.rollback().version == "v000002"  # the newest that verifies
    assert store.load().version == "v000002"


def test_publishing_repairs_a_garbage_current(store, bundle, golden):
    publish(store, bundle, golden)
    (store.root / "CURRENT").write_text("../../etc\n")
    assert publish(store, bundle, golden).version == "v000002"
    assert store.load().version == "v000002"


# -- processes -------------------------------------------------------------------------------------


def _check_store(store: ArtifactStore) -> str | None:
    """CURRENT absent or loadable, and every visible version verifies."""
    current = store.current()
    if current is not None:
        assert store.load().version == current
    for version in store.versions():
        assert store.verify(version).version == version
    return current


def test_sigkill_during_publish(tmp_path, bundle, golden, zygote):
    store = ArtifactStore(tmp_path / "s", keep=3)
    staging = store.root / ".staging"
    newest = int(publish(store, bundle, golden, extra_files={"report.json": REPORT}).version[1:])
    kills, period, interrupted = 15, None, 0
    for i in range(kills):
        pid = zygote.spawn(cmd="loop", root=str(store.root), keep=3)
        try:
            zygote.wait(message(pid, "ready"))
            published = [zygote.wait(message(pid, "published"))]
            if period is None:  # the first child also measures how long one publish takes
                published += [zygote.wait(message(pid, "published")) for _ in range(4)]
                period = statistics.median(m["seconds"] for m in published)
            # the child is now at the start of its next publish: kill it a fraction of the way in
            time.sleep((i + 0.5) / kills * period)
        finally:
            zygote.kill(pid)
        leftovers = os.listdir(staging)
        interrupted += bool(leftovers)
        current = _check_store(store)
        versions = store.versions()
        assert versions and int(versions[-1][1:]) > newest  # the child got somewhere
        assert current is not None and int(current[1:]) >= newest
        parent = publish(store, bundle, golden, extra_files={"report.json": REPORT})
        newest = int(parent.version[1:])
        assert newest > int(versions[-1][1:]) and store.current() == parent.version
        assert os.listdir(staging) == []  # the dead child's half-written directory is gone
        assert len(store.versions()) <= 3
    _check_store(store)
    print(f"one publish took {period * 1e3:.1f} ms; {interrupted}/{kills} kills left staging debris")
    assert interrupted >= 1  # some kills really landed inside a publish (typically most of them)


def test_two_processes_publish_concurrently(tmp_path, bundle, golden, zygote):
    store = ArtifactStore(tmp_path / "s", keep=20)
    publish(store, bundle, golden)
    pids = [zygote.spawn(cmd="loop", root=str(store.root), keep=20, count=5) for _ in range(2)]
    made = []
    try:
        for pid in pids:
            made += [zygote.wait(message(pid, "published"))["published"] for _ in range(5)]
            zygote.wait(message(pid, "done"))
    finally:
        for pid in pids:
            zygote.kill(pid)  # normally already gone
    assert len(set(made)) == 10
    assert store.versions() == ["v000001", *sorted(made)] == [f"v{n:06d}" for n in range(1, 12)]
    assert store.current() == "v000011"
    _check_store(store)
    assert os.listdir(store.root / ".staging") == []
