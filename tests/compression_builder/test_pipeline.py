"""`ecseq train-encoder` and `ecseq build` from files, end to end through the real store."""

from __future__ import annotations

import json

import numpy as np
import torch

from ecseq.artifacts import ArtifactStore
from ecseq_cli import main
from tests.builds import FAST

PLOTS = ("pr_curves.png", "score_histograms.png", "clusters.png")


def test_train_encoder_publishes_a_complete_verified_first_artifact(trained_store):
    store = ArtifactStore(trained_store)
    assert store.versions() == ["v000001"] and store.current() == "v000001"
    loaded = store.load()
    manifest = loaded.manifest
    assert manifest["parent"] is None and manifest["encoder_version"] == "v000001"
    assert {"report.json", *PLOTS} <= set(manifest["files"])
    report = json.loads((loaded.path / "report.json").read_text())
    assert report["result"] == "published" and report["encoder"]["fresh"]
    assert set(report["metrics"]) == {"candidate", "encoder"}  # nothing served before
    assert 0.0 <= report["metrics"]["candidate"]["zero_neighbour_rate"] <= 1.0
    assert 0.0 < report["metrics"]["candidate"]["best_similarity"]["median"] <= 1.0
    assert report["data"]["fit"]["to"] <= report["data"]["holdout"]["from"]  # newest labels held out
    for part in ("fit", "val", "holdout"):
        assert report["data"][part]["rows"] > 0
    assert manifest["data"]["labelled"] == report["data"]["labelled"]


def test_build_reuses_the_encoder_and_compares_against_serving(store, events_csv, capsys):
    code = main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "published v000002" in out
    artifacts = ArtifactStore(store)
    assert artifacts.current() == "v000002"
    new = artifacts.load()
    assert new.manifest["parent"] == "v000001" and new.manifest["encoder_version"] == "v000001"
    report = json.loads((new.path / "report.json").read_text())
    assert report["metrics"]["serving"]["version"] == "v000001"
    assert report["serving"]["saw_holdout"] is False  # same file, same split: v000001 never fitted the holdout
    old = artifacts.load("v000001")
    np.testing.assert_array_equal(  # same frozen encoder, byte for byte
        old.bundle.encoder.state_dict()["head.weight"].numpy(), new.bundle.encoder.state_dict()["head.weight"].numpy())


def test_window_without_positives_is_refused_with_a_reason(store, events_frame, tmp_path, capsys):
    path = tmp_path / "negatives.csv"
    events_frame.assign(label=events_frame["label"].where(events_frame["label"] != 1, 0.0)).to_csv(path, index=False)
    code = main(["build", "--store", str(store), "--events", str(path), *FAST])
    out = capsys.readouterr().out
    assert code == 3
    assert "refused: no_positives" in out
    assert ArtifactStore(store).versions() == ["v000001"]
    reports = list((store / "refused").glob("*/report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["result"] == "refused" and "no_positives" in report["refused"]


def test_bad_rows_are_skipped_counted_and_reported(store, events_frame, tmp_path, capsys):
    frame = events_frame.astype({"amount": object}).copy()
    frame.loc[0:9, "amount"] = "lots"
    frame.loc[10:14, "label"] = 3
    path = tmp_path / "dirty.csv"
    frame.to_csv(path, index=False)
    code = main(["build", "--store", str(store), "--events", str(path), "--force", *FAST])
    capsys.readouterr()
    assert code == 0
    report = json.loads((ArtifactStore(store).load().path / "report.json").read_text())
    assert report["data"]["skipped"]["events"] == {"bad_type": 10, "bad_label": 5}
    assert report["data"]["events"] == len(frame) - 15


def test_build_on_an_empty_store_says_to_train_first(tmp_path, events_csv, capsys):
    code = main(["build", "--store", str(tmp_path / "empty"), "--events", str(events_csv), *FAST])
    assert code == 2
    assert "run `ecseq train-encoder` first" in capsys.readouterr().err


def test_build_with_a_wrong_path_says_which(store, tmp_path, capsys):
    code = main(["build", "--store", str(store), "--events", str(tmp_path / "nope.csv"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "nope.csv" in err and "Traceback" not in err


def test_build_with_a_broken_serving_artifact_fails_cleanly(store, events_csv, capsys):
    gnn = store / "versions" / "v000001" / "gnn.npz"
    data = bytearray(gnn.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gnn.write_bytes(bytes(data))
    code = main(["build", "--store", str(store), "--events", str(events_csv), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "checksum" in err and "train-encoder" in err


def test_refused_reports_are_pruned_to_keep(store, events_frame, tmp_path, capsys):
    path = tmp_path / "negatives.csv"
    events_frame.assign(label=0.0).to_csv(path, index=False)
    for _ in range(4):
        main(["build", "--store", str(store), "--events", str(path), "--keep", "2", *FAST])
    capsys.readouterr()
    assert len(list((store / "refused").iterdir())) == 2


def test_retraining_the_encoder_is_gated_against_serving_through_its_own_encoder(store, events_csv, events_frame,
                                                                                  tmp_path, capsys):
    code = main(["train-encoder", "--events", str(events_csv), "--store", str(store), "--epochs", "2", "--seed", "1",
                 "--force", *FAST])
    capsys.readouterr()
    assert code == 0
    loaded = ArtifactStore(store).load()
    assert loaded.version == "v000002"
    assert loaded.manifest["parent"] == "v000001" and loaded.manifest["encoder_version"] == "v000002"
    report = json.loads((loaded.path / "report.json").read_text())
    assert report["metrics"]["serving"]["version"] == "v000001"  # scored through v000001's own encoder
    assert report["metrics"]["serving"]["auc"] > 0.5

    fewer = tmp_path / "fewer.csv"
    events_frame.drop(columns=["device"]).to_csv(fewer, index=False)
    code = main(["train-encoder", "--events", str(fewer), "--store", str(store), "--epochs", "1", *FAST])
    capsys.readouterr()
    report = json.loads((ArtifactStore(store).load().path / "report.json").read_text())
    assert code == 0 and "serving" not in report["metrics"]
    assert "no column(s) device" in report["serving"]["problem"]


def test_rebuilds_are_reproducible(store, events_csv, capsys):
    """Same data, same seed, same model, whatever the process did before (the service is long-lived)."""
    for i in range(2):
        torch.rand(7 + i)  # other work in the process moves the global RNG, by different amounts
        assert main(["build", "--store", str(store), "--events", str(events_csv), "--force", *FAST]) == 0
    capsys.readouterr()
    artifacts = ArtifactStore(store)
    first, second = (artifacts.load(v) for v in ("v000002", "v000003"))
    for name in ("gnn.npz", "graph.npz"):
        assert first.manifest["files"][name]["sha256"] == second.manifest["files"][name]["sha256"]
    assert first.manifest["metrics"]["holdout"]["candidate"] == second.manifest["metrics"]["holdout"]["candidate"]
