"""A running worker against broken artifacts and a broken CURRENT: each is refused with its reason
and counted once, the old version keeps scoring, /ready stays true, memory stays bounded, and
`ecseq artifacts rollback` repairs a broken CURRENT."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ecseq_cli import main
from kafka_io.topics import produce_json
from tests.ecseq.artifacts.conftest import read_manifest, write_manifest
from tests.ecseq.artifacts.test_faults import BAD_CURRENTS, FAULTS

from .conftest import event_records
from .test_stream import _metric, _wait_for

# broken versions: weights that would unpickle or inflate, JSON that would recurse or never end
ATTACKS = ("npz_bomb", "npz_header_claims_more", "compressed_npz", "raw_pickle", "object_array", "manifest_deep",
           "manifest_huge_int", "manifest_nan", "manifest_created_at", "manifest_oversized", "spec_deep",
           "flipped_byte", "missing_file", "version_mismatch")


def _copy_of_v1(store: Path, number: int) -> Path:
    """A good version v00000N: v000001's files under a new name (its manifest says so)."""
    vdir = store / "versions" / f"v{number:06d}"
    shutil.copytree(store / "versions" / "v000001", vdir)
    manifest = read_manifest(vdir)
    manifest["version"] = vdir.name
    write_manifest(vdir, manifest)
    return vdir


def _point_current_at(store: Path, version: str) -> None:
    current = store / "CURRENT"
    if current.is_dir() and not current.is_symlink():
        current.rmdir()
    else:
        current.unlink()
    current.write_text(f"{version}\n")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _refused(worker) -> float:
    return _metric(worker, "ecseq_worker_swaps_total", result="refused")


def _until_refused(worker, count: float, what: str) -> None:
    deadline = time.monotonic() + 20
    while _refused(worker) < count:
        assert time.monotonic() < deadline, f"{what} was not refused (refused {_refused(worker)}, want {count})"
        assert worker.proc.poll() is None, worker.log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)


def test_every_attack_is_refused_while_the_old_version_serves(deployment, store, events_frame, tmp_path):
    records = event_records(events_frame.sort_values("ts", kind="stable").head(600).reset_index(drop=True))
    events = deployment.topic("events")
    with deployment.worker() as worker:
        produce_json(deployment.bootstrap, events, records[:100])
        _wait_for(deployment.bootstrap, deployment.topic("scores"), 100)
        rss_before = _peak_rss_mb(worker.proc.pid)
        refused, sent = 0, 100
        for number, attack in enumerate(ATTACKS, start=2):
            vdir = _copy_of_v1(store, number)
            FAULTS[attack][0](vdir, tmp_path / "unpickled")
            _point_current_at(store, vdir.name)
            refused += 1
            _until_refused(worker, refused, attack)
            produce_json(deployment.bootstrap, events, records[sent:sent + 20])
            sent += 20
        for attack in sorted(BAD_CURRENTS):
            (store / "CURRENT").unlink()
            BAD_CURRENTS[attack](store / "CURRENT")
            refused += 1
            _until_refused(worker, refused, f"a CURRENT that is {attack}")
            _point_current_at(store, "v000001")  # each attack starts from a good CURRENT: the next one is new
            produce_json(deployment.bootstrap, events, records[sent:sent + 20])
            sent += 20
        time.sleep(3)  # three more checks: nothing refused is verified or counted again
        assert _refused(worker) == refused
        assert worker.get("/ready")[0] == 200
        assert not (tmp_path / "unpickled").exists()  # no payload ran
        peak = _peak_rss_mb(worker.proc.pid)

        (store / "CURRENT").unlink()
        (store / "CURRENT").mkdir()
        assert main(["artifacts", "rollback", "--store", str(store)]) == 0  # repairs it: newest that verifies
        scores = _wait_for(deployment.bootstrap, deployment.topic("scores"), sent)
        assert worker.get("/ready")[0] == 200 and worker.proc.poll() is None
    assert {r.json()["artifact_version"] for r in scores} == {"v000001"}
    assert {r.json()["event_id"] for r in scores} == {v["event_id"] for _, v in records[:sent]}
    print(f"\nartifact attacks: {refused} refused ({len(ATTACKS)} versions, {len(BAD_CURRENTS)} CURRENTs); "
          f"worker peak RSS {rss_before:.0f} MB before, {peak:.0f} MB after")
    assert peak - rss_before < 256, f"peak RSS grew {peak - rss_before:.0f} MB under the attacks"
