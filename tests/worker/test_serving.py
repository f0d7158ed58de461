"""The worker follows the store's CURRENT: verified swaps, refusals that keep the old artifact."""

from __future__ import annotations

from ecseq.artifacts import ArtifactStore
from ecseq_cli import main
from tests.builds import FAST
from worker.metrics import WorkerMetrics
from worker.serving import NONE, REFUSED, SWAPPED, UNCHANGED, ArtifactFollower


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
    assert follower.check() == REFUSED
    assert _swaps(metrics, REFUSED) == 1  # reported once, not every poll

    ArtifactStore(store).rollback("v000002")
    assert follower.check() == SWAPPED and follower.version == "v000002"
    assert _swaps(metrics, SWAPPED) == 2


def test_an_empty_store_serves_nothing(tmp_path):
    follower = ArtifactFollower(ArtifactStore(tmp_path / "empty"), WorkerMetrics())
    assert follower.check() == NONE and follower.scorer is None
