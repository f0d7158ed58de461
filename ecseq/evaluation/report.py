"""Turning runs into what a person reads: metrics.json, a printed table and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecseq.evaluation.experiment import RunResult
from ecseq.evaluation.plots import plot_cluster_sizes, plot_pr_curves, plot_score_histograms


def aggregate(runs: list[RunResult]) -> dict[str, dict]:
    """Per method: the mean of every numeric metric over repeats, its std, and each run."""
    out: dict[str, dict] = {}
    for name in runs[0].methods:
        per_run = [run.methods[name].metrics(run.y_test) for run in runs]
        keys = [k for k, v in per_run[0].items() if isinstance(v, (int, float))]
        out[name] = {k: float(np.mean([m[k] for m in per_run])) for k in keys}
        out[name]["std"] = {k: float(np.std([m[k] for m in per_run])) for k in keys}
        out[name]["runs"] = per_run
    return out


def format_table(methods: dict[str, dict]) -> str:
    lines = [f"{'method':<12}{'AUC':>16}{'AP':>16}{'R@P0.9':>16}{'fit s':>9}{'us/event':>10}"]
    for name, m in methods.items():
        cells = [f"{m[k]:.4f}±{m['std'][k]:.4f}" for k in ("auc", "ap", "r_at_p90")]
        lines.append(f"{name:<12}" + "".join(f"{c:>16}" for c in cells)
                     + f"{m['fit_seconds']:>9.1f}{m['score_seconds_per_event'] * 1e6:>10.1f}")
    return "\n".join(lines)


def write_report(out_dir: Path, dataset: dict, config: dict, runs: list[RunResult]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"dataset": dataset, "config": config, "methods": aggregate(runs),
              "runs": [run.info for run in runs]}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    first = runs[0]
    first.feature_spec.save(out_dir / "feature_spec.json")
    curves = {name: (first.y_test, result.scores) for name, result in first.methods.items()}
    plot_pr_curves(curves, out_dir / "pr_curves.png", title=f"Precision-recall, {dataset.get('name', '')}")
    plot_score_histograms(curves, out_dir / "score_histograms.png", title="Test scores")
    ecseq = first.methods.get("ecseq")
    if ecseq is not None and ecseq.graph is not None:
        plot_cluster_sizes(ecseq.graph.size, ecseq.graph.positive_rate, out_dir / "clusters.png",
                           title="Compressed nodes: size and purity")
    return report
