"""A build's report: report.json plus PNG plots, inside the artifact or, if refused, beside the store.

The files are produced as bytes so the artifact store can write them in the same atomic publish
as the weights (and list their checksums in the manifest).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ecseq.evaluation.plots import (
    plot_cluster_sizes,
    plot_pr_curves,
    plot_score_histograms,
)
from ecseq.graph import CompressedGraph

REPORT = "report.json"
REFUSED_DIR = "refused"


def report_files(report: dict, y: np.ndarray, scores: dict[str, np.ndarray],
                 graph: CompressedGraph) -> dict[str, bytes]:
    """PR curves and score histograms of candidate vs serving vs encoder alone, and node size/purity."""
    curves = {name: (y, score) for name, score in scores.items()}
    with tempfile.TemporaryDirectory(prefix="ecseq-report-") as tmp:
        out = Path(tmp)
        plot_pr_curves(curves, out / "pr_curves.png", title="Held-out precision-recall")
        plot_score_histograms(curves, out / "score_histograms.png", title="Held-out scores")
        plot_cluster_sizes(graph.size, graph.positive_rate, out / "clusters.png",
                           title="Compressed nodes: size and purity")
        return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def report_json(report: dict) -> bytes:
    return json.dumps(report, indent=1).encode()


def write_files(out: Path, report: dict, files: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in {REPORT: report_json(report), **files}.items():
        (out / name).write_bytes(data)


def refused_report_dir(store_root: Path, keep: int) -> Path:
    """A fresh directory for a refused build's report; only the newest `keep` are kept."""
    parent = Path(store_root) / REFUSED_DIR
    parent.mkdir(parents=True, exist_ok=True)
    existing = sorted(parent.iterdir())
    for old in existing[: max(len(existing) - keep + 1, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out = parent / stamp
    n = 1
    while out.exists():
        n += 1
        out = parent / f"{stamp}-{n}"
    return out
