"""`ecseq artifacts ...` and the two-builders rule, through the real command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

from ecseq.artifacts import ArtifactStore
from ecseq_cli import main
from tests.builds import FAST


def test_list_show_verify(store, capsys):
    assert main(["artifacts", "list", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "* v000001" in out and " ok" in out
    assert main(["artifacts", "show", "--store", str(store)]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["version"] == "v000001" and "feature_spec.json" in manifest["files"]
    assert main(["artifacts", "verify", "v000001", "--store", str(store)]) == 0
    assert "v000001 ok" in capsys.readouterr().out


def test_verify_names_the_problem_and_list_marks_it(store, capsys):
    path = store / "versions" / "v000001" / "encoder.npz"
    path.write_bytes(path.read_bytes()[:-10])
    assert main(["artifacts", "verify", "v000001", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "size" in err and "encoder.npz" in err and "Traceback" not in err
    main(["artifacts", "list", "--store", str(store)])
    assert "REFUSED: size_mismatch" in capsys.readouterr().out


def test_rollback_without_an_older_version_is_refused(store, capsys):
    assert main(["artifacts", "rollback", "--store", str(store)]) == 2
    assert "ecseq: error:" in capsys.readouterr().err
    assert ArtifactStore(store).current() == "v000001"


def test_a_broken_current_is_listed_and_rollback_repairs_it(store, capsys):
    (store / "CURRENT").unlink()
    (store / "CURRENT").mkdir()  # what a bad copy or a stray mkdir leaves
    assert main(["artifacts", "list", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "CURRENT is broken" in out and "  v000001" in out
    assert main(["artifacts", "verify", "--store", str(store)]) == 2
    assert "CURRENT is not a regular file" in capsys.readouterr().err
    assert main(["artifacts", "rollback", "--store", str(store)]) == 0
    assert capsys.readouterr().out == "CURRENT -> v000001 (was a broken CURRENT)\n"
    assert ArtifactStore(store).current() == "v000001"


def test_list_shows_a_manifest_with_odd_metrics(store, capsys):
    from tests.ecseq.artifacts.conftest import read_manifest, write_manifest

    vdir = store / "versions" / "v000001"
    manifest = read_manifest(vdir)
    for metrics in ({"holdout": [1, 2]}, {"holdout": {"candidate": {"ap": "high"}}}, {"holdout": None}):
        manifest["metrics"] = metrics
        write_manifest(vdir, manifest)
        assert main(["artifacts", "list", "--store", str(store)]) == 0
        assert "* v000001" in capsys.readouterr().out


def test_unknown_version_is_named(store, capsys):
    assert main(["artifacts", "show", "v000099", "--store", str(store)]) == 2
    assert "v000099" in capsys.readouterr().err


def _build(store, events_csv, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ecseq_cli", "build", "--store", str(store), "--events",
                             str(events_csv), "--force", *FAST, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_builder_exits_cleanly_while_the_store_is_busy(store, events_csv):
    artifacts = ArtifactStore(store)
    with artifacts.build_lock():
        busy = _build(store, events_csv)
        _, err = busy.communicate(timeout=120)
    assert busy.returncode == 75, err
    assert "busy" in err and "Traceback" not in err
    assert artifacts.versions() == ["v000001"]


def test_a_waiting_builder_runs_once_the_lock_is_released(store, events_csv):
    artifacts = ArtifactStore(store)
    release = threading.Event()

    def hold() -> None:
        with artifacts.build_lock():
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.2)
    waiting = _build(store, events_csv, "--wait")
    time.sleep(3.0)
    assert waiting.poll() is None  # still waiting
    release.set()
    holder.join()
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert artifacts.current() == "v000002"


def test_two_builders_started_together_leave_a_consistent_store(store, events_csv):
    first, second = _build(store, events_csv, "--wait"), _build(store, events_csv, "--wait")
    for proc in (first, second):
        proc.communicate(timeout=180)
        assert proc.returncode == 0
    artifacts = ArtifactStore(store)
    assert artifacts.versions() == ["v000001", "v000002", "v000003"]
    for version in artifacts.versions():
        artifacts.verify(version)
    parents = {artifacts.manifest(v)["parent"] for v in ("v000002", "v000003")}
    assert parents == {"v000001", "v000002"}  # the second build saw the first's publish


def test_list_points_at_the_last_refused_build(store, events_frame, tmp_path, capsys):
    path = tmp_path / "negatives.csv"
    events_frame.assign(label=0.0).to_csv(path, index=False)
    assert main(["build", "--store", str(store), "--events", str(path), *FAST]) == 3
    capsys.readouterr()
    main(["artifacts", "list", "--store", str(store)])
    assert "last refused build:" in capsys.readouterr().out


def test_a_builder_killed_mid_publish_leaves_old_or_new_and_the_next_build_recovers(store, events_csv):
    """SIGKILL as soon as the publish starts staging (or, if it is quicker than the poll, after it)."""
    artifacts = ArtifactStore(store)
    proc = _build(store, events_csv)
    staging, versions = store / ".staging", store / "versions"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (staging.is_dir() and any(staging.iterdir())) or (versions / "v000002").exists():
            break
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    assert artifacts.current() in ("v000001", "v000002")
    assert artifacts.versions() in (["v000001"], ["v000001", "v000002"])
    for version in artifacts.versions():
        artifacts.verify(version)
    assert artifacts.load().version == artifacts.current()
    recovered = _build(store, events_csv)
    _, err = recovered.communicate(timeout=120)
    assert recovered.returncode == 0, err
    assert artifacts.load().version == artifacts.versions()[-1]
    assert not staging.is_dir() or not any(staging.iterdir())  # leftovers swept


def test_builder_with_a_busy_metrics_port_says_which(store, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code = main(["builder", "--store", str(store), "--kafka", "127.0.0.1:1", "--metrics-port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"127.0.0.1:{port}" in err and "Traceback" not in err
