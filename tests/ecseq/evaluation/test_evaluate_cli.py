"""End to end: `ecseq evaluate` on a small generated event file, all four methods, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecseq.data.synthetic import generate_synthetic
from ecseq.features import FeatureSpec
from ecseq_cli import main

FAST = ["--epochs", "2", "--gnn-epochs", "4", "--k", "40", "--positive-k", "8", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "events.csv"
    generate_synthetic(n_users=250, days=60, n_campaigns=6, seed=3).to_csv(path, index=False)
    return path


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_evaluate_writes_metrics_and_plots(events_csv: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["evaluate", "--events", str(events_csv), "--out", str(out), *FAST]) == 0
    report = _metrics(out)
    assert set(report["dataset"]) >= {"users", "events", "labelled", "positive_rate"}
    assert report["dataset"]["users"] == 250
    assert report["config"]["split"] == "time" and report["config"]["scenario"] == "standard"
    assert list(report["methods"]) == ["encoder", "head", "ecseq", "full_graph"]
    for method in report["methods"].values():
        for key in ("auc", "ap", "r_at_p90", "fit_seconds", "score_seconds_per_event"):
            assert isinstance(method[key], float), key
        assert 0.0 <= method["auc"] <= 1.0 and 0.0 <= method["ap"] <= 1.0
        assert method["score_seconds_per_event"] > 0
    assert report["methods"]["ecseq"]["nodes"] <= 40
    spec = FeatureSpec.load(out / "feature_spec.json")
    assert {"amount", "mcc", "device"} <= set(spec.columns)
    for name in ("pr_curves.png", "score_histograms.png", "clusters.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "ecseq" in table and "full_graph" in table


def test_refresh_scenario_with_repeats_reports_std(events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "refresh"
    args = ["evaluate", "--events", str(events_csv), "--out", str(out), "--scenario", "refresh",
            "--repeats", "2", "--methods", "encoder,ecseq", *FAST]
    assert main(args) == 0
    report = _metrics(out)
    assert list(report["methods"]) == ["encoder", "ecseq"]
    ecseq = report["methods"]["ecseq"]
    assert len(ecseq["runs"]) == 2 and ecseq["std"]["auc"] >= 0.0
    # the encoder saw only the older part of the training window, the graph only the newer one
    for run in report["runs"]:
        assert run["encoder_rows"] + run["fit_rows"] == run["train_rows"]
        assert run["encoder_rows"] > 0 and run["fit_rows"] > 0
    assert report["config"]["scenario"] == "refresh"


def test_split_by_user(events_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "users"
    assert main(["evaluate", "--events", str(events_csv), "--out", str(out), "--split", "user",
                 "--methods", "encoder,head", *FAST]) == 0
    assert _metrics(out)["methods"]["head"]["auc"] > 0.5
