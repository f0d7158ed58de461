"""The worker follows the store's CURRENT: verified swaps, refusals that keep the old artifact; any
control-topic record is understood or ignored."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecseq.artifacts import ArtifactStore
from ecseq.artifacts.names import is_version_name
from ecseq_cli import main
from tests.builds import FAST
from tests.fuzz import fuzz, json_values
from worker.artifact_follower import NONE, REFUSED, SWAPPED, UNCHANGED, ArtifactFollower, announced_version
from worker.metrics import WorkerMetrics


def _swaps(metrics: WorkerMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("ecseq_worker_swaps_total", {"result": result}) or 0.0


def test_follows_current_and_refuses_a_broken_version(store, events_csv, capsys):
    metrics = WorkerMetrics()
    follower = ArtifactFollower(ArtifactStore(store), metrics)
    assert follower.check() == SWAPPED and follower.version == "v000001"
    assert follower.check() == UNCHANGED
    assert metrics.registry.get_sample_value("ecseq_worker_artifact_info", {"version": "v000001"}) == 1.0

    assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST]) == 0
    assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST]) == 0
    capsys.readouterr()
    gnn = store / "versions" / "v000003" / "gnn.npz"
    data = bytearray(gnn.read_bytes())
    data[100] ^= 0x01
    gnn.write_bytes(bytes(data))  # CURRENT (v000003) is now broken on disk

    before = follower.scorer
    assert follower.check() == REFUSED
    assert follower.scorer is before and follower.version == "v000001"  # never half-swapped
    loads = []
    follower.store.load = lambda version=None, load=follower.store.load: loads.append(version) or load(version)
    assert follower.check() == REFUSED
    assert _swaps(metrics, REFUSED) == 1  # reported once, not every poll
    assert loads == []  # ... and not verified again while it is unchanged on disk
    gnn.write_bytes(bytes(data[:-1]))  # changed, still broken: verified again, refused again
    assert follower.check() == REFUSED and loads == ["v000003"] and _swaps(metrics, REFUSED) == 2

    for attack in ("../../etc\n", "", None):  # a broken CURRENT: refused once each, the old version serves
        (store / "CURRENT").unlink()
        if attack is None:
            (store / "CURRENT").mkdir()
        else:
            (store / "CURRENT").write_text(attack)
        assert follower.check() == REFUSED and follower.check() == REFUSED
        assert follower.scorer is before
    assert _swaps(metrics, REFUSED) == 5

    ArtifactStore(store).rollback("v000002")
    assert follower.check() == SWAPPED and follower.version == "v000002"
    assert _swaps(metrics, SWAPPED) == 2


def test_an_empty_store_serves_nothing(tmp_path):
    follower = ArtifactFollower(ArtifactStore(tmp_path / "empty"), WorkerMetrics())
    assert follower.check() == NONE and follower.scorer is None


@pytest.mark.parametrize(("raw", "version"), [
    (b'{"version": "v000007", "path": "/store/versions/v000007", "manifest_sha256": "ab"}', "v000007"),
    (None, None), (b"", None), (b"\xff", None), (b"[1]", None), (b'"v000007"', None),
    (b"[" * 3000 + b"]" * 3000, None), (b'{"version": ' + b"[" * 1500 + b"]" * 1500 + b"}", None),
    (b'{"version": null}', None), (b'{"version": 7}', None), (b'{"version": "v7"}', None),
    (b'{"version": "../v000007"}', None), (b'{"version": "v000007\\u0000"}', None),
    (b'{"version": "v000007", "pad": "' + b"x" * 5000 + b'"}', None),
])
def test_an_announcement_is_understood_or_ignored_never_raised(raw, version):
    assert announced_version(raw) == version


@pytest.mark.fuzz
@fuzz(500)
@given(st.binary(max_size=200) | st.none() | json_values.map(lambda v: json.dumps({"version": v}).encode()))
def test_any_control_topic_record_gives_a_version_name_or_none(raw):
    version = announced_version(raw)
    assert version is None or is_version_name(version)
