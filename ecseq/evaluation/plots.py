"""Diagnostic figures written straight to PNG files (headless: Agg backend, no display)."""

import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ecseq.ranking import average_precision, precision_recall_curve

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)

PathLike = str | os.PathLike[str]
HISTOGRAM_BINS = 50


def _save(fig: Figure, path: PathLike, title: str) -> None:
    """Write fig as PNG (creating parent folders) and release it, so loops do not leak memory."""
    if title:
        fig.suptitle(title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)


def _require_results(results: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """An empty figure would hide a caller bug, so refuse it."""
    if not results:
        raise ValueError("results is empty: nothing to plot")


def plot_pr_curves(results: dict[str, tuple[np.ndarray, np.ndarray]], path: PathLike, title: str = "") -> None:
    """One precision-recall step curve per method (name -> (y, score)), AP in the legend."""
    _require_results(results)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, (y, score) in results.items():
        precision, recall = precision_recall_curve(y, score)
        ax.step(recall, precision, where="pre", label=f"{name} (AP={average_precision(y, score):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    _save(fig, path, title)


def plot_score_histograms(
    results: dict[str, tuple[np.ndarray, np.ndarray]], path: PathLike, title: str = ""
) -> None:
    """One panel per method: score densities of positives vs negatives on a log scale."""
    _require_results(results)
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4), squeeze=False)
    for ax, (name, (y, score)) in zip(axes[0], results.items()):
        y, score = np.asarray(y).astype(bool), np.asarray(score, dtype=np.float64)
        bins = np.histogram_bin_edges(score, bins=HISTOGRAM_BINS)
        for mask, label, colour in ((~y, "negatives", "tab:blue"), (y, "positives", "tab:red")):
            if mask.any():
                ax.hist(score[mask], bins=bins, density=True, alpha=0.5, color=colour, label=label)
        ax.set_yscale("log")
        ax.set(title=name, xlabel="score", ylabel="density")
        ax.legend()
    _save(fig, path, title)


def plot_cluster_sizes(sizes: np.ndarray, positive_rate: np.ndarray, path: PathLike, title: str = "") -> None:
    """Two panels: how many rows each cluster holds, and how label-pure (max(p, 1 - p)) it is."""
    sizes, positive_rate = np.asarray(sizes), np.asarray(positive_rate, dtype=np.float64)
    if sizes.shape != positive_rate.shape or sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"sizes and positive_rate must be equal-length, non-empty 1-D arrays, "
                         f"got shapes {sizes.shape} and {positive_rate.shape}")
    if np.any(sizes < 1) or np.any((positive_rate < 0) | (positive_rate > 1)):
        raise ValueError("sizes must be >= 1 and positive_rate within [0, 1]")
    fig, (size_ax, purity_ax) = plt.subplots(1, 2, figsize=(10, 4))
    size_bins = np.unique(np.geomspace(1, sizes.max() + 1, HISTOGRAM_BINS).round())
    size_ax.hist(sizes, bins=size_bins, color="tab:gray")
    size_ax.set_xscale("log")
    size_ax.set(title=f"cluster sizes (K={sizes.size})", xlabel="rows per cluster", ylabel="clusters")
    purity = np.maximum(positive_rate, 1.0 - positive_rate)
    purity_ax.hist(purity, bins=np.linspace(0.5, 1.0, 26), color="tab:green")
    purity_ax.set(title="cluster purity", xlabel="max(p, 1 - p)", ylabel="clusters")
    _save(fig, path, title)
